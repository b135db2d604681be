/**
 * A fenced read (causal mode's) is not answered with what a refusal it raced may undo. memcached
 * answers in order: a merge it refuses for want of memory is answered before a later merge of
 * the same pipeline and before a read queued behind that one, but the refusal reaches the mode
 * only as an event on the controller's queue, after the read's answer is in hand. The read then
 * could show a later merge's key beside an earlier one the refusal undoes. The effect runner
 * refuses such a read (`not_caught_up`), and answers a write whose result shows its key
 * `result_unknown`; effects without a fence, and fenced ones no refusal overtook, are answered.
 */

import { describe, expect, it } from 'vitest';
import type { Reply } from '../src/protocol/types.ts';
import { StoreError, type Op } from '../src/store/types.ts';
import { runner } from './support/effect-runner-kit.ts';

const get: Op = { kind: 'get', keys: ['k2'] };
const incr: Op = { kind: 'arith', verb: 'incr', key: 'k2', delta: 1n, initial: null, expiresAtMs: 0 };
const value: Reply = { kind: 'values', items: [{ key: 'k2', flags: 0, value: Buffer.from('later merge'), cas: 7n }] } as unknown as Reply;
const outOfMemory = new StoreError('BACKEND_FAILED', 'SERVER_ERROR out of memory storing object', { untouched: true });

describe('a fenced read or write, answered after a refusal the mode has not stepped', () => {
  it('a read and a write issued before memcached refused an earlier merge are not answered with what they saw', async () => {
    const node = runner();
    // An earlier merge, then a read and an incr of a key a later merge wrote, all at fence 0.
    node.carryOut(() => ({ kind: 'put', entries: [['k1', { value: Buffer.from('v'), flags: 0, expiresAtMs: 0, cas: 5n }]], how: 'merge', token: 9 }));
    const read = node.carryOut((requestId) => ({ kind: 'read', requestId, op: get, nowMs: 0, fence: 0 }));
    const write = node.carryOut((requestId) => ({ kind: 'apply', op: incr, cas: 8n, nowMs: 0, requestId, token: null, fence: 0 }));
    const unfenced = node.carryOut((requestId) => ({ kind: 'read', requestId, op: get, nowMs: 0 }));
    // memcached answers in order: the merge refused, then the read and the incr.
    node.puts[0]?.reject(outOfMemory);
    node.reads[0]?.resolve(value);
    node.applies[0]?.resolve({ kind: 'number', value: 2n } as unknown as Reply);
    node.reads[1]?.resolve(value);
    expect(await read).toMatchObject({ kind: 'refused', reason: 'not_caught_up' });
    expect(await write).toMatchObject({ kind: 'refused', reason: 'result_unknown' });
    expect(await unfenced).toBe(value);
    // The mode hears of it with the serial its next effects carry as their fence.
    expect(node.events).toEqual([expect.objectContaining({ kind: 'refused', keys: ['k1'], token: 9, serial: 1 })]);
  });

  it('a read fenced at the refusal the mode stepped is answered', async () => {
    const node = runner();
    node.carryOut(() => ({ kind: 'put', entries: [['k1', { value: Buffer.from('v'), flags: 0, expiresAtMs: 0, cas: 5n }]], how: 'merge', token: 9 }));
    node.puts[0]?.reject(outOfMemory);
    await Promise.resolve();
    const read = node.carryOut((requestId) => ({ kind: 'read', requestId, op: get, nowMs: 0, fence: 1 }));
    node.reads[0]?.resolve(value);
    expect(await read).toBe(value);
  });
});
