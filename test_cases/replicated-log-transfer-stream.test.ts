/**
 * A state transfer's receiver holds no chunk: it resets its replica at the first one, puts each as
 * it comes and acks it once stored, so a replica larger than its memory passes through. The
 * replica is trusted only once the transfer is installed and every put completed; one given up
 * midway (the backend reset under it) is never installed from the chunks that follow, and the
 * node asks for another. Driven by hand through one machine.
 */

import { describe, expect, it } from 'vitest';
import type { LogMessage } from '../src/consistency/log/types.ts';
import type { Effect } from '../src/consistency/types.ts';
import { FAILURE_TIMEOUT_MS, N1, N2, N3, Node, chunk, heartbeat, snapshot, value } from './support/transfer-kit.ts';

type Chunk = Extract<LogMessage, { kind: 'transfer_chunk' }>;

const threeChunks = (chunkNumber: number): LogMessage => ({
  ...(chunk(10, 0) as Chunk), chunkNumber, chunkCount: 3, entries: [value(`k${chunkNumber}`, 5n)],
});
const kinds = (effects: Effect<LogMessage>[]): string[] =>
  effects.flatMap((effect) => (effect.kind === 'reset' || effect.kind === 'put' ? [effect.kind] : []));
const putToken = (effects: Effect<LogMessage>[]): number => {
  const put = effects.find((effect) => effect.kind === 'put');
  if (put === undefined) throw new Error('no put');
  if (put.token === null) throw new Error('a put without a token');
  return put.token;
};
const trustedRecords = (node: Node): unknown[] =>
  node.records.filter((record) => (record as { kind: string }).kind === 'replica' && (record as { trusted: boolean }).trusted);
const asks = (effects: Effect<LogMessage>[]): number =>
  effects.filter((effect) => effect.kind === 'send' && effect.message.kind === 'transfer_request').length;

/** A follower of N1 in term 2 that lost its replica (snapshot at 10). */
function emptiedFollower(): Node {
  const follower = new Node(N2, [snapshot(2, N1)]);
  follower.receive(0, N1, heartbeat(1, 0));
  return follower;
}

describe('a state transfer received as it comes', () => {
  it('resets the replica at the first chunk and puts each chunk on arrival; trusted only once installed and every put completed', () => {
    const follower = emptiedFollower();
    const first = follower.receive(5, N1, threeChunks(0));
    expect(kinds(first)).toEqual(['reset', 'put']);
    const tokens = [putToken(first)];
    follower.step(1, { kind: 'applied', token: tokens[0] ?? 0 });
    expect(trustedRecords(follower)).toEqual([]);
    expect(follower.machine.inspect().replicaValid).toBe(false);
    // Out of order is fine: the chunks hold distinct keys, and the reset came before them all.
    for (const chunkNumber of [2, 1]) {
      const effects = follower.receive(5, N1, threeChunks(chunkNumber));
      expect(kinds(effects)).toEqual(['put']);
      tokens.push(putToken(effects));
    }
    expect(follower.machine.inspect()).toMatchObject({ replicaValid: true, appliedIndex: 10 });
    follower.step(1, { kind: 'applied', token: tokens[1] ?? 0 });
    expect(trustedRecords(follower)).toEqual([]);
    follower.step(1, { kind: 'applied', token: tokens[2] ?? 0 });
    expect(trustedRecords(follower)).toHaveLength(1);
  });

  it('installs a transfer whose count comes only with its last chunks once every chunk is in, and drops chunks that contradict it', () => {
    const follower = emptiedFollower();
    const early = (chunkNumber: number): LogMessage => {
      const { chunkCount: _count, ...rest } = threeChunks(chunkNumber) as Chunk;
      return rest;
    };
    const told = (chunkNumber: number, chunkCount = 3): LogMessage =>
      ({ ...(threeChunks(chunkNumber) as Chunk), chunkCount, fetchedThrough: 12 });
    expect(kinds(follower.receive(5, N1, early(0)))).toEqual(['reset', 'put']);
    expect(kinds(follower.receive(5, N1, early(1)))).toEqual(['put']);
    // A count below a chunk already in, or a chunk past the count: the sender contradicts itself.
    expect(kinds(follower.receive(5, N1, told(2, 1)))).toEqual([]);
    expect(follower.machine.inspect().replicaValid).toBe(false);
    expect(kinds(follower.receive(5, N1, told(2)))).toEqual(['put']);
    expect(follower.machine.inspect()).toMatchObject({ replicaValid: true, appliedIndex: 10, caughtUp: false });
  });

  it('a transfer given up midway (its backend reset) is not installed from the chunks that follow; another is asked for', () => {
    const follower = emptiedFollower();
    follower.receive(5, N1, threeChunks(0));
    follower.step(1, { kind: 'backend_reset', emptied: true });
    // The rest arrives: chunk 0's put was lost with the backend, so these make no replica.
    follower.receive(5, N1, threeChunks(1));
    follower.receive(5, N1, threeChunks(2));
    expect(follower.machine.inspect().replicaValid).toBe(false);
    const later = follower.step(FAILURE_TIMEOUT_MS + 1, { kind: 'tick', peersUp: [N1, N3] });
    expect(asks(later)).toBe(1);
  });

  it('a restart midway trusts nothing of the replica: it asks for a transfer again', () => {
    const follower = emptiedFollower();
    follower.step(1, { kind: 'applied', token: putToken(follower.receive(5, N1, threeChunks(0))) });
    follower.restart();
    follower.receive(5, N1, heartbeat(2, 0));
    expect(follower.machine.inspect().replicaValid).toBe(false);
    expect(asks(follower.step(FAILURE_TIMEOUT_MS + 1, { kind: 'tick', peersUp: [N1, N3] }))).toBe(1);
  });
});
