/**
 * A state transfer of a replica larger than a peer connection queues (its send queue holds 16 MiB,
 * and drops beyond): the sender keeps at most TRANSFER_WINDOW_BYTES of chunks unacked, sends on as
 * the receiver acks what it holds, serves one transfer per peer while it progresses, and gives up a
 * stalled one when the receiver asks again; peers asking at once share one read (./replicated-log-transfer-paced.test.ts
 * has the read paced by the receivers). Driven by hand
 * through one machine on each side.
 */

import { describe, expect, it } from 'vitest';
import { SEND_WINDOW_BYTES as TRANSFER_WINDOW_BYTES } from '../src/consistency/send-window.ts';
import { keyedEntryBytes, type LogMessage } from '../src/consistency/log/types.ts';
import type { Effect, KeyedEntry } from '../src/consistency/types.ts';
import { FAILURE_TIMEOUT_MS, N1, N2, N3, Node, askedLeader, chunk, chunksSent, fetchToken, heartbeat, snapshot, transferAsk as ask } from './support/transfer-kit.ts';

type Chunk = Extract<LogMessage, { kind: 'transfer_chunk' }>;

const kib = Buffer.alloc(1024, 7);
/** About 20 MiB of replica: more than a peer connection's send queue holds. */
const replica: KeyedEntry[] = Array.from({ length: 20_000 }, (_, i) => [`key:${String(i).padStart(5, '0')}`, { value: kib, flags: 0, expiresAtMs: 0, cas: BigInt(i + 1) }]);

const chunkBytes = (sent: readonly Chunk[]): number =>
  sent.reduce((sum, each) => sum + each.entries.reduce((bytes, entry) => bytes + keyedEntryBytes(entry), 0), 0);

/** `askedLeader`, its read in: the chunks it lets it send first. */
function servingLeader(): { leader: Node; token: number; first: Chunk[] } {
  const { leader, token } = askedLeader(N2);
  return { leader, token, first: chunksSent(leader.step(1, { kind: 'fetched', token, entries: replica })) };
}

describe('state transfer window', () => {
  it('sends a window of chunks at a time, on as the receiver acks, each chunk once and in order', () => {
    const { leader, token, first } = servingLeader();
    const chunkCount = first[0]?.chunkCount ?? 0;
    expect(chunkCount * 256 * 1024).toBeGreaterThan(TRANSFER_WINDOW_BYTES * 3);
    expect(first.length).toBeGreaterThan(1);
    expect(chunkBytes(first)).toBeLessThanOrEqual(TRANSFER_WINDOW_BYTES);
    const sent = [...first];
    while (sent.length < chunkCount) {
      const received = sent.length - 2; // the receiver is two chunks behind
      const more = chunksSent(leader.receive(1, N2, { kind: 'transfer_ack', term: 2, transferId: token, received }));
      expect(more.length).toBeGreaterThan(0);
      sent.push(...more);
      expect(chunkBytes(sent.slice(received))).toBeLessThanOrEqual(TRANSFER_WINDOW_BYTES);
    }
    expect(sent.map((each) => each.chunkNumber)).toEqual(Array.from({ length: chunkCount }, (_, i) => i));
    expect(sent.flatMap((each) => each.entries.map(([key]) => key))).toEqual(replica.map(([key]) => key));
    // Each entry as read (toEqual over 20 MiB of buffers would take minutes).
    const differing = sent.flatMap((each) => each.entries).filter(([key, entry], at) => {
      const [readKey, read] = replica[at] ?? ['', entry];
      const sameFields = entry.flags === read.flags && entry.expiresAtMs === read.expiresAtMs && entry.cas === read.cas;
      return key !== readKey || !entry.value.equals(read.value) || !sameFields;
    });
    expect(differing).toEqual([]);
    // Acks of another transfer, or repeated ones, send nothing.
    expect(chunksSent(leader.receive(1, N2, { kind: 'transfer_ack', term: 2, transferId: token + 1, received: chunkCount }))).toEqual([]);
    expect(chunksSent(leader.receive(1, N2, { kind: 'transfer_ack', term: 2, transferId: token, received: 1 }))).toEqual([]);
  });

  it('serves one transfer per peer while it progresses, and another once it stalled a failure timeout', () => {
    const { leader, token } = servingLeader();
    // Asked again while acks come: no second fetch.
    leader.receive(FAILURE_TIMEOUT_MS / 2, N2, { kind: 'transfer_ack', term: 2, transferId: token, received: 1 });
    expect(fetchToken(leader.receive(FAILURE_TIMEOUT_MS / 2, N2, ask))).toBeNull();
    // No ack for a failure timeout (the receiver restarted, say): its next ask starts a new transfer.
    const again = fetchToken(leader.receive(FAILURE_TIMEOUT_MS, N2, ask));
    expect(again).not.toBeNull();
    // One nobody asks for again is forgotten at a tick: acks of it then send nothing.
    leader.step(0, { kind: 'fetched', token: again ?? 0, entries: replica });
    leader.step(FAILURE_TIMEOUT_MS, { kind: 'tick', peersUp: [N2] });
    expect(chunksSent(leader.receive(1, N2, { kind: 'transfer_ack', term: 2, transferId: again ?? 0, received: 1 }))).toEqual([]);
  });

  it('shares one read among the peers that ask while it is under way, each sent and acked on its own', () => {
    // Two followers whose memcached restarted together: one read of the replica, not one each.
    const { leader, token } = askedLeader(N2);
    expect(fetchToken(leader.receive(1, N3, ask))).toBeNull();
    const fetched = leader.step(1, { kind: 'fetched', token, entries: replica });
    const sentTo = (effects: Effect<LogMessage>[], peer: string): Chunk[] =>
      effects.flatMap((effect) => (effect.kind === 'send' && effect.to === peer && effect.message.kind === 'transfer_chunk' ? [effect.message] : []));
    const toN2 = sentTo(fetched, N2);
    const toN3 = sentTo(fetched, N3);
    expect(toN2.length).toBeGreaterThan(1);
    expect(toN3.map((each) => each.chunkNumber)).toEqual(toN2.map((each) => each.chunkNumber));
    // N3 takes the whole replica first; what N3 acked is still whole for N2.
    const chunkCount = toN2[0]?.chunkCount ?? 0;
    for (let guard = 0; toN3.length < chunkCount && guard < chunkCount; guard += 1) {
      toN3.push(...sentTo(leader.receive(1, N3, { kind: 'transfer_ack', term: 2, transferId: token, received: toN3.length }), N3));
    }
    for (let guard = 0; toN2.length < chunkCount && guard < chunkCount; guard += 1) {
      toN2.push(...sentTo(leader.receive(1, N2, { kind: 'transfer_ack', term: 2, transferId: token, received: toN2.length }), N2));
    }
    const keys = replica.map(([key]) => key);
    expect(toN3.flatMap((each) => each.entries.map(([key]) => key))).toEqual(keys);
    expect(toN2.flatMap((each) => each.entries.map(([key]) => key))).toEqual(keys);
  });

  it('the receiver acks each chunk once its put completed, a repeated one again without putting it twice', () => {
    const follower = new Node(N2, [snapshot(2, N1)]);
    follower.receive(0, N1, heartbeat(1, 0));
    const acks = (effects: Effect<LogMessage>[]): unknown[] =>
      effects.flatMap((effect) => (effect.kind === 'send' && effect.message.kind === 'transfer_ack' ? [effect.message] : []));
    const putTokens = (effects: Effect<LogMessage>[]): number[] =>
      effects.flatMap((effect) => (effect.kind === 'put' && effect.token !== null ? [effect.token] : []));
    const twoChunks = (chunkNumber: number): LogMessage => ({ ...(chunk(10, 0) as Chunk), chunkNumber, chunkCount: 2 });
    const first = follower.receive(5, N1, twoChunks(0));
    expect(acks(first)).toEqual([]);
    const [token0] = putTokens(first);
    expect(acks(follower.step(1, { kind: 'applied', token: token0 ?? 0 }))).toEqual([{ kind: 'transfer_ack', term: 2, transferId: 7, received: 1 }]);
    const again = follower.receive(5, N1, twoChunks(0));
    expect(putTokens(again)).toEqual([]);
    expect(acks(again)).toEqual([{ kind: 'transfer_ack', term: 2, transferId: 7, received: 1 }]);
    const [token1] = putTokens(follower.receive(5, N1, twoChunks(1)));
    expect(acks(follower.step(1, { kind: 'applied', token: token1 ?? 0 }))).toEqual([{ kind: 'transfer_ack', term: 2, transferId: 7, received: 2 }]);
  });
});
