/**
 * A linearizable read under a read lease (`keysOnly`) runs ahead of store effects that wait for
 * the disk only when none of them changes its keys. A `put` is one piece of a replica being
 * rebuilt by a state transfer: the other pieces may still be on their way, so while one waits a
 * read of any key waits too (the replica is as of the transfer's index only once all are in).
 */

import { describe, expect, it } from 'vitest';
import type { Effect } from '../src/consistency/types.ts';
import { keysHeldBy } from '../src/consistency/changed-keys.ts';
import type { Op } from '../src/store/types.ts';
import { heldWriteAhead, runner } from './support/effect-runner-kit.ts';

const entry = { value: Buffer.from('v'), flags: 0, expiresAtMs: 0, cas: 5n };
const setK1: Op = { kind: 'store', verb: 'set', key: 'k1', flags: 0, expiresAtMs: 0, value: Buffer.from('v'), casUnique: 0n };
const persist: Effect<unknown> = { kind: 'persist', record: { kind: 'entries', entries: [] }, compact: false };

describe('reads that run ahead of effects waiting for the disk', () => {
  it('a put holds every key; an apply only its own', () => {
    expect(keysHeldBy({ kind: 'put', entries: [['k1', entry]], how: 'overwrite', token: null })).toBeNull();
    expect(keysHeldBy({ kind: 'apply', op: setK1, cas: 5n, nowMs: 0, requestId: null, token: null })).toEqual(['k1']);
    expect(keysHeldBy({ kind: 'reset' } as Effect<unknown>)).toBeNull();
  });

  it('a read of another key runs ahead of a held apply, not of a held put', async () => {
    const wal = heldWriteAhead();
    const node = runner(wal);
    node.effects.carryOut(persist);
    node.effects.carryOut({ kind: 'apply', op: setK1, cas: 5n, nowMs: 0, requestId: null, token: null });
    void node.carryOut((requestId) => ({ kind: 'read', requestId, op: { kind: 'get', keys: ['k2'] }, nowMs: 0, keysOnly: true }));
    expect(node.reads).toHaveLength(1);
    node.effects.carryOut({ kind: 'put', entries: [['k1', entry]], how: 'overwrite', token: null });
    void node.carryOut((requestId) => ({ kind: 'read', requestId, op: { kind: 'get', keys: ['k2'] }, nowMs: 0, keysOnly: true }));
    expect(node.reads).toHaveLength(1);
    expect(node.puts).toHaveLength(0);
    node.effects.durability.writeAppended();
    wal.finish();
    await Promise.resolve();
    expect(node.puts).toHaveLength(1);
    expect(node.reads).toHaveLength(2);
  });
});
