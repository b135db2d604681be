/**
 * A causal node takes its peers' snapshots one at a time, and only once its start-up fetch is in
 * (src/consistency/causal/merging.ts, `onBatchPart`), and leaves out of each what the vector it
 * tells its peers already covers (`notHeld`). A controller restarted over a memcached of 3.9
 * million keys took both peers' whole replicas at once, beside reading its own back, and spent
 * minutes collecting garbage near its heap's limit. Driven by hand through one machine (n1 of n1,
 * n2, n3), every replica read answered empty.
 */

import { describe, expect, it } from 'vitest';
import { createCausal } from '../src/consistency/causal.ts';
import type { CausalMessage } from '../src/consistency/causal/messages.ts';
import { asRequestId, type Effect, type Event, type KeyedEntry } from '../src/consistency/types.ts';
import type { Op } from '../src/store/types.ts';
import { N1, N2, N3, version, type Batch } from './support/causal-node.ts';

type Put = Extract<Effect<CausalMessage>, { kind: 'put' }>;

const set = (key: string): Op => ({ kind: 'store', verb: 'set', key, flags: 0, expiresAtMs: 0, value: Buffer.from(key), casUnique: 0n });
const entry = (key: string, cas: bigint): KeyedEntry => [key, { value: Buffer.from(key), flags: 0, expiresAtMs: 0, cas }];

/** n1 started over an empty replica, its peers up; what it sends each peer and puts is recorded. */
function started() {
  const machine = createCausal({
    self: N1, peers: [N2, N3], random: () => 0.5, heartbeatIntervalMs: 100, failureTimeoutMs: 1000, persisted: [], nowMs: 1000,
  });
  let nowMs = 1100;
  const puts: Put[] = [];
  const sent = new Map<string, CausalMessage[]>([[N2, []], [N3, []]]);
  const step = (event: Event<CausalMessage>): void => {
    for (const effect of machine.step(event) as Array<Effect<CausalMessage>>) {
      if (effect.kind === 'fetch') step({ kind: 'fetched', nowMs, token: effect.token, entries: [] });
      if (effect.kind === 'put') puts.push(effect);
      if (effect.kind === 'send') sent.get(effect.to)?.push(effect.message);
    }
  };
  step({ kind: 'tick', nowMs, peersUp: [N2, N3] });
  /** A client's set at n1: its version. */
  const write = (key: string): bigint => {
    const effects = machine.step({ kind: 'request', nowMs, requestId: asRequestId(1), session: 1, op: set(key) }) as Array<Effect<CausalMessage>>;
    const apply = effects.find((effect) => effect.kind === 'apply');
    if (apply?.kind !== 'apply') throw new Error('the write was not applied at once');
    return apply.cas;
  };
  const snapshot = (to: bigint, deps: bigint[], parts: KeyedEntry[][], needs?: bigint[]) => (part: number): Batch => {
    const message: Batch = { kind: 'batch', snapshot: true, base: 0n, prev: 0n, to, deps, part, parts: parts.length, entries: parts[part] ?? [] };
    if (needs !== undefined) message.needs = needs;
    return message;
  };
  const send = (from: typeof N2, message: Batch): void => step({ kind: 'message', nowMs, from, message });
  const partAcks = (peer: typeof N2): unknown[] =>
    (sent.get(peer) ?? []).flatMap((message) => (message.kind === 'part_ack' ? [message.received] : []));
  const acks = (peer: typeof N2): unknown[] =>
    (sent.get(peer) ?? []).flatMap((message) => (message.kind === 'batch_ack' && !message.resync ? [message.to] : []));
  const merged = (): string[][] => puts.map((put) => put.entries.map(([key]) => key));
  const advance = (ms: number): void => {
    nowMs += ms;
  };
  /** A tick with `peersUp` as the failure detector holds them. */
  const tick = (peersUp: Array<typeof N2>): void => step({ kind: 'tick', nowMs, peersUp });
  return { step, write, snapshot, send, partAcks, acks, puts, merged, advance, tick };
}

describe('a causal node still reading its replica back at start', () => {
  it('takes no part of a snapshot until that read is in', () => {
    const machine = createCausal({
      self: N1, peers: [N2, N3], random: () => 0.5, heartbeatIntervalMs: 100, failureTimeoutMs: 1000, persisted: [], nowMs: 1000,
    });
    const step = (event: Event<CausalMessage>): Array<Effect<CausalMessage>> => machine.step(event) as Array<Effect<CausalMessage>>;
    const partAcks = (effects: Array<Effect<CausalMessage>>): unknown[] =>
      effects.flatMap((effect) => (effect.kind === 'send' && effect.message.kind === 'part_ack' ? [effect.message.received] : []));
    const [rebuild] = step({ kind: 'tick', nowMs: 1100, peersUp: [N2, N3] }).filter((effect) => effect.kind === 'fetch');
    const to = version(1, 1050);
    const part: Batch = { kind: 'batch', snapshot: true, base: 0n, prev: 0n, to, deps: [0n, to, 0n], part: 0, parts: 2, entries: [entry('a', to)] };
    expect(partAcks(step({ kind: 'message', nowMs: 1100, from: N2, message: part }))).toEqual([]);
    if (rebuild?.kind !== 'fetch') throw new Error('no start-up fetch');
    // Every key, for the versions only: a replica's worth of values would be held for nothing.
    expect(rebuild).toMatchObject({ keys: null, versionsOnly: true });
    step({ kind: 'fetched', nowMs: 1100, token: rebuild.token, entries: [] });
    expect(partAcks(step({ kind: 'message', nowMs: 1100, from: N2, message: part }))).toEqual([1]);
  });
});

describe('a causal node sent two snapshots at once', () => {
  it("takes the second only once the first is merged, without what the first brought", () => {
    const { step, write, snapshot, send, partAcks, acks, puts, merged } = started();
    const [n2To, n3Early, n3Late] = [version(1, 1050), version(2, 1040), version(2, 1060)];
    const ours = write('d');
    const fromN2 = snapshot(n2To, [0n, n2To, n3Early], [[entry('a', n2To)], [entry('b', n3Early)]]);
    // n3's replica: what n2's snapshot brought (b, a), a later write of n3's (c) and ours (d, held here).
    const fromN3 = snapshot(n3Late, [0n, n2To, n3Late], [[entry('a', n2To), entry('b', n3Early)], [entry('c', n3Late), entry('d', ours)]]);
    send(N2, fromN2(0));
    send(N3, fromN3(0));
    send(N3, fromN3(1));
    expect(partAcks(N3)).toEqual([]);
    send(N2, fromN2(1));
    expect(merged()).toEqual([['a', 'b']]);
    // Sent again (its sender's probe) while memcached still takes the first: still not taken.
    send(N3, fromN3(0));
    expect(partAcks(N3)).toEqual([]);
    step({ kind: 'applied', nowMs: 1100, token: puts[0]?.token as number });
    expect(acks(N2)).toEqual([n2To]);
    send(N3, fromN3(0));
    send(N3, fromN3(1));
    expect(partAcks(N3)).toEqual([1, 2]);
    expect(merged()).toEqual([['a', 'b'], ['c']]);
    step({ kind: 'applied', nowMs: 1100, token: puts[1]?.token as number });
    expect(acks(N3)).toEqual([n3Late]);
  });

  it('waits for the first while its sender is up, however long its next part takes', () => {
    // With every controller restarted at once, each reading millions of keys, seconds went by
    // between parts, the second snapshot was taken beside the first, and both came whole.
    const { step, snapshot, send, partAcks, puts, merged, advance, tick } = started();
    const [n2To, n3To] = [version(1, 1050), version(2, 1060)];
    const n2Snapshot = snapshot(n2To, [0n, n2To, 0n], [[entry('a', n2To)], [entry('b', n2To)]]);
    const n3Snapshot = snapshot(n3To, [0n, n2To, n3To], [[entry('b', n2To), entry('c', n3To)]]);
    send(N2, n2Snapshot(0));
    for (let second = 0; second < 10; second += 1) {
      advance(1000);
      tick([N2, N3]);
      send(N3, n3Snapshot(0));
    }
    expect(merged()).toEqual([]);
    send(N2, n2Snapshot(1));
    expect(merged()).toEqual([['a', 'b']]);
    step({ kind: 'applied', nowMs: 1100, token: puts[0]?.token as number });
    // Then without b, which the first brought.
    send(N3, n3Snapshot(0));
    expect(merged()).toEqual([['a', 'b'], ['c']]);
    expect(partAcks(N2)).toEqual([1, 2]);
  });

  it('takes the second once the first has had no part for resyncAfterMs and its sender is down', () => {
    const { snapshot, send, partAcks, merged, advance, tick } = started();
    const [n2To, n3To] = [version(1, 1050), version(2, 1060)];
    send(N2, snapshot(n2To, [0n, n2To, 0n], [[entry('a', n2To)], [entry('b', n2To)]])(0));
    advance(1000);
    tick([N3]);
    send(N3, snapshot(n3To, [0n, 0n, n3To], [[entry('c', n3To)]])(0));
    expect(merged()).toEqual([]);
    advance(4000);
    send(N3, snapshot(n3To, [0n, 0n, n3To], [[entry('c', n3To)]])(0));
    expect(merged()).toEqual([['c']]);
    expect(partAcks(N2)).toEqual([1]);
  });

  it("takes the second while the first waits for that sender's writes, and merges them together", () => {
    const { snapshot, send, merged } = started();
    const [n2To, n3To] = [version(1, 1050), version(2, 1060)];
    // n2's snapshot was read while its replica was rebuilt: it needs n3's writes up to n3To.
    send(N2, snapshot(n2To, [0n, n2To, 0n], [[entry('a', n2To)], [entry('b', n2To)]], [0n, 0n, n3To])(0));
    send(N2, snapshot(n2To, [0n, n2To, 0n], [[entry('a', n2To)], [entry('b', n2To)]], [0n, 0n, n3To])(1));
    expect(merged()).toEqual([]);
    send(N3, snapshot(n3To, [0n, 0n, n3To], [[entry('c', n3To)], [entry('e', n3To)]])(0));
    send(N3, snapshot(n3To, [0n, 0n, n3To], [[entry('c', n3To)], [entry('e', n3To)]])(1));
    expect(merged().flat().sort()).toEqual(['a', 'b', 'c', 'e']);
  });
});
