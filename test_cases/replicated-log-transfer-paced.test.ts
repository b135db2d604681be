/**
 * A state transfer's read paced by its receivers: the sender asks for the next slice of its
 * replica only while what it read and has not sent is under a window, sends chunks as they are cut
 * (the count and the fetched-through index on those sent once the read is done), lets go of what
 * every receiver stored, and gives up a read nobody takes. Held whole until acked, a replica of 3.9
 * million keys took 1.7-2.8 GB of a leader's heap. Driven by hand through one machine.
 */

import { describe, expect, it } from 'vitest';
import { SEND_WINDOW_BYTES as WINDOW_BYTES } from '../src/consistency/send-window.ts';
import type { LogMessage } from '../src/consistency/log/types.ts';
import type { Effect, KeyedEntry } from '../src/consistency/types.ts';
import { FAILURE_TIMEOUT_MS, N2, N3, askedLeader, chunksSent, fetchToken, transferAsk, type Node } from './support/transfer-kit.ts';

type Chunk = Extract<LogMessage, { kind: 'transfer_chunk' }>;

const kib = Buffer.alloc(1024, 7);
/** About 20 MiB of replica, five windows. */
const replica: KeyedEntry[] = Array.from({ length: 20_000 }, (_, i) => [`key:${String(i).padStart(5, '0')}`, { value: kib, flags: 0, expiresAtMs: 0, cas: BigInt(i + 1) }]);
/** Entries per slice: about 1 MiB. */
const SLICE = 1_000;

const asksMore = (effects: Effect<LogMessage>[], token: number): boolean =>
  effects.some((effect) => effect.kind === 'fetch_more' && effect.token === token && effect.stop !== true);
const stops = (effects: Effect<LogMessage>[], token: number): boolean =>
  effects.some((effect) => effect.kind === 'fetch_more' && effect.token === token && effect.stop === true);
const ack = (token: number, received: number): LogMessage => ({ kind: 'transfer_ack', term: 2, transferId: token, received });

/** Plays the effect runner for a leader's paced read: hands it a slice each time it asks, none otherwise. */
class PacedReader {
  read = 0;
  asked = true;
  readonly sent = new Map<string, Chunk[]>([[N2, []], [N3, []]]);

  constructor(readonly leader: Node, readonly token: number) {}

  /** Takes what `effects` sent and whether they ask for more. */
  take(effects: Effect<LogMessage>[]): Effect<LogMessage>[] {
    for (const effect of effects) {
      if (effect.kind === 'send' && effect.message.kind === 'transfer_chunk') this.sent.get(effect.to)?.push(effect.message);
    }
    if (asksMore(effects, this.token)) this.asked = true;
    return effects;
  }

  /** Hands over slices for as long as the leader asks (at most `limit`). */
  feed(limit = 100): void {
    for (let slices = 0; this.asked && slices < limit; slices += 1) {
      this.asked = false;
      const entries = replica.slice(this.read, this.read + SLICE);
      this.read += entries.length;
      const more = this.read < replica.length ? { more: true as const } : {};
      this.take(this.leader.step(1, { kind: 'fetched', token: this.token, entries, ...more }));
    }
  }

  /** `peer` acks every chunk it was sent, the slices asked for meanwhile handed over, until it holds the whole transfer. */
  drain(peer: typeof N2): Chunk[] {
    const sent = this.sent.get(peer) ?? [];
    for (let guard = 0; guard < 2_000 && !(sent.length > 0 && sent.at(-1)?.chunkCount === sent.length); guard += 1) {
      this.take(this.leader.receive(1, peer, ack(this.token, sent.length)));
      this.feed(1);
    }
    return sent;
  }
}

const chunkBytes = (chunks: readonly Chunk[]): number => chunks.reduce((sum, each) => sum + each.entries.length * 1024, 0);

describe('a state transfer read as its receivers take it', () => {
  it('reads on only while little of what it read is unsent, sends chunks as they are cut, and the last ones say how many', () => {
    const { leader, token } = askedLeader(N2);
    const reader = new PacedReader(leader, token);
    reader.feed();
    // No acks: it read a window it sent and about a window more, then waits.
    expect(reader.asked).toBe(false);
    expect(reader.read * 1024).toBeGreaterThan(WINDOW_BYTES);
    expect(reader.read * 1024).toBeLessThanOrEqual(2 * WINDOW_BYTES + 2 * SLICE * 1024);
    const early = [...(reader.sent.get(N2) ?? [])];
    expect(early.length).toBeGreaterThan(1);
    expect(chunkBytes(early)).toBeLessThanOrEqual(WINDOW_BYTES);
    expect(early.every((chunk) => chunk.chunkCount === undefined && chunk.fetchedThrough === undefined)).toBe(true);
    // The receiver stores what it gets: the read goes on to its end.
    const sent = reader.drain(N2);
    const count = sent.at(-1)?.chunkCount ?? 0;
    expect(reader.read).toBe(replica.length);
    expect(sent.map((chunk) => chunk.chunkNumber)).toEqual(Array.from({ length: count }, (_, i) => i));
    expect(sent.flatMap((chunk) => chunk.entries.map(([key]) => key))).toEqual(replica.map(([key]) => key));
    const told = sent.filter((chunk) => chunk.chunkCount !== undefined);
    expect(told.length).toBeGreaterThan(0);
    expect(told.every((chunk) => chunk.chunkCount === count && (chunk.fetchedThrough ?? 0) >= 10)).toBe(true);
    expect(sent.slice(0, sent.length - told.length).every((chunk) => chunk.chunkCount === undefined)).toBe(true);
  });

  it('notes the read with every key it read, and the transfer sent once its last chunk left', () => {
    const { leader, token } = askedLeader(N2);
    const reader = new PacedReader(leader, token);
    const notes: Effect<LogMessage>[] = [];
    const take = reader.take.bind(reader);
    reader.take = (effects) => {
      notes.push(...effects.filter((effect) => effect.kind === 'note' && effect.message.startsWith('state transfer')));
      return take(effects);
    };
    reader.feed();
    const sent = reader.drain(N2);
    expect(notes).toEqual([
      // Every key read is counted, also those of chunks acked and let go before the read was done.
      expect.objectContaining({ message: 'state transfer read', meta: expect.objectContaining({ index: 10, chunks: sent.length, keys: replica.length }) }),
      expect.objectContaining({ message: 'state transfer sent', meta: expect.objectContaining({ peer: N2, index: 10, chunks: sent.length }) }),
    ]);
  });

  it('gives up a read whose receiver stopped acking a failure timeout, stopping the fetch, and not before', () => {
    const { leader, token } = askedLeader(N2);
    const reader = new PacedReader(leader, token);
    reader.feed();
    expect(stops(leader.step(FAILURE_TIMEOUT_MS / 2, { kind: 'tick', peersUp: [N2, N3] }), token)).toBe(false);
    expect(stops(leader.step(FAILURE_TIMEOUT_MS, { kind: 'tick', peersUp: [N2, N3] }), token)).toBe(true);
    // A slice still on its way is dropped; the next ask starts a read of its own.
    expect(chunksSent(leader.step(1, { kind: 'fetched', token, entries: replica.slice(0, SLICE), more: true }))).toEqual([]);
    expect(fetchToken(leader.receive(1, N2, transferAsk))).not.toBeNull();
  });

  it('waits without a deadline for its own read while the receiver owes no ack', () => {
    const { leader, token } = askedLeader(N2);
    // The listing of millions of keys takes seconds: nothing sent yet, nothing owed.
    expect(stops(leader.step(10 * FAILURE_TIMEOUT_MS, { kind: 'tick', peersUp: [N2, N3] }), token)).toBe(false);
    const reader = new PacedReader(leader, token);
    reader.feed(1);
    // Every chunk sent so far acked, and the read slow: still served.
    reader.take(leader.receive(1, N2, ack(token, reader.sent.get(N2)?.length ?? 0)));
    expect(stops(leader.step(10 * FAILURE_TIMEOUT_MS, { kind: 'tick', peersUp: [N2, N3] }), token)).toBe(false);
    expect(fetchToken(leader.receive(1, N2, transferAsk))).toBeNull();
  });

  it('shares its read with a peer that asks before any chunk was let go, and reads another once one was', () => {
    const { leader, token } = askedLeader(N2);
    const reader = new PacedReader(leader, token);
    reader.feed(2);
    // N3 asks: nothing let go yet, so it shares the read, sent from the first chunk.
    expect(fetchToken(reader.take(leader.receive(1, N3, transferAsk)))).toBeNull();
    expect(reader.sent.get(N3)?.[0]?.chunkNumber).toBe(0);
    // Both take it whole, the read paced by the slower; each gets every key.
    reader.feed();
    for (let guard = 0; guard < 2_000 && reader.read < replica.length; guard += 1) {
      for (const peer of [N2, N3]) reader.take(leader.receive(1, peer, ack(token, reader.sent.get(peer)?.length ?? 0)));
      reader.feed(1);
    }
    const keys = replica.map(([key]) => key);
    for (const peer of [N2, N3]) expect(reader.drain(peer).flatMap((chunk) => chunk.entries.map(([key]) => key))).toEqual(keys);
  });

  it('reads anew for a peer that asks once a chunk of the read under way was let go', () => {
    const { leader, token } = askedLeader(N2);
    const reader = new PacedReader(leader, token);
    reader.feed(2);
    reader.take(leader.receive(1, N2, ack(token, 2)));
    const own = fetchToken(leader.receive(1, N3, transferAsk));
    expect(own).not.toBeNull();
    expect(own).not.toBe(token);
  });
});
