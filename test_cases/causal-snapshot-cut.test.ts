/**
 * A causal snapshot read without holding up the node's writes (src/consistency/causal/snapshot-cuts.ts):
 * the replica is read page by page while writes go on, then the keys written meanwhile are read
 * again (page by page while more than snapshotCutKeysMax, last in one ordered read), and the
 * snapshot covers what was visible when that last read was issued. Driven by hand through one
 * machine (n1 of n1, n2, n3), every replica read answered by the test.
 */

import { describe, expect, it } from 'vitest';
import { createCausal } from '../src/consistency/causal.ts';
import type { CausalMessage } from '../src/consistency/causal/messages.ts';
import { spliceRead } from '../src/consistency/causal/snapshot-cuts.ts';
import type { CausalTuning } from '../src/consistency/causal/tuning.ts';
import { HLC_ZERO, packVersion, tickHlc } from '../src/consistency/hlc.ts';
import { asPeerId, asRequestId, type Effect, type Event, type KeyedEntry } from '../src/consistency/types.ts';
import type { Op } from '../src/store/types.ts';

const [N1, N2, N3] = [asPeerId('n1'), asPeerId('n2'), asPeerId('n3')] as const;
const PEERS = [N2, N3];

type Fetch = Extract<Effect<CausalMessage>, { kind: 'fetch' }>;
type Batch = Extract<CausalMessage, { kind: 'batch' }>;

const entry = (value: string, cas: bigint): KeyedEntry[1] => ({ value: Buffer.from(value), flags: 0, expiresAtMs: 0, cas });
const set = (key: string, value: string): Op => ({ kind: 'store', verb: 'set', key, flags: 0, expiresAtMs: 0, value: Buffer.from(value), casUnique: 0n });

/** n1, loaded over a replica holding `a` and `b`, the snapshot read (paged) both peers need issued and not answered. */
function loaded(tuning: Partial<CausalTuning> = {}) {
  const machine = createCausal({
    self: N1, peers: PEERS, random: () => 0.5, heartbeatIntervalMs: 100, failureTimeoutMs: 1000, persisted: [], nowMs: 0,
  }, tuning);
  let nowMs = 0;
  let requestId = 0;
  const step = (event: Event<CausalMessage>): Array<Effect<CausalMessage>> => machine.step(event) as Array<Effect<CausalMessage>>;
  const fetches = (effects: Array<Effect<CausalMessage>>): Fetch[] => effects.flatMap((effect) => (effect.kind === 'fetch' ? [effect] : []));
  const batchesTo = (peer: typeof N2, effects: Array<Effect<CausalMessage>>): Batch[] =>
    effects.flatMap((effect) => (effect.kind === 'send' && effect.to === peer && effect.message.kind === 'batch' ? [effect.message] : []));
  let lastWrite: Array<Effect<CausalMessage>> = [];
  /** A client's write at n1: its version (its step's effects: `lastWrite`). */
  const write = (op: Op): bigint => {
    nowMs += 1;
    lastWrite = step({ kind: 'request', nowMs, requestId: asRequestId((requestId += 1)), session: 1, op });
    const apply = lastWrite.find((effect) => effect.kind === 'apply');
    if (apply?.kind !== 'apply') throw new Error('the write was not applied at once');
    return apply.cas;
  };
  const answer = (fetch: Fetch | undefined, entries: KeyedEntry[]): Array<Effect<CausalMessage>> => {
    if (fetch === undefined) throw new Error('no such fetch');
    nowMs += 1;
    return step({ kind: 'fetched', nowMs, token: fetch.token, entries });
  };
  const [rebuild] = fetches(step({ kind: 'tick', nowMs, peersUp: [...PEERS] }));
  const held: KeyedEntry[] = [['a', entry('a0', 1n)], ['b', entry('b0', 2n)]];
  const [read, ...others] = fetches(answer(rebuild, held));
  if (others.length > 0) throw new Error('a snapshot read per peer');
  return { step, write, answer, fetches, batchesTo, read, held, now: () => nowMs, lastWrite: () => lastWrite };
}

describe('a causal snapshot for a peer', () => {
  it('is read page by page while writes go on, then the keys written meanwhile are read again: it covers them', () => {
    const { write, answer, fetches, batchesTo, read, held } = loaded();
    // One read for both peers: the replica is read, and held, once (with the values it ships).
    expect(read).toMatchObject({ keys: null, paged: true });
    expect(read?.versionsOnly).toBeUndefined();
    const written = write(set('b', 'b1'));
    // The pages read b before that write reached it.
    const [cut, ...others] = fetches(answer(read, held));
    expect(others).toEqual([]);
    expect(cut?.keys).toEqual(['b']);
    expect(cut?.paged).toBeUndefined();
    expect(cut?.versionsOnly).toBeUndefined();
    const sent = answer(cut, [['b', entry('b1', written)]]);
    for (const peer of PEERS) {
      const [snapshot] = batchesTo(peer, sent);
      expect(snapshot).toMatchObject({ snapshot: true, to: written });
      expect(snapshot?.entries.map(([key, { value }]) => [key, value.toString()])).toEqual([['a', 'a0'], ['b', 'b1']]);
    }
  });

  it('reads many keys written meanwhile again page by page first, and the keys written during that read last', () => {
    const { write, answer, fetches, batchesTo, read, held } = loaded({ snapshotCutKeysMax: 2 });
    write(set('b', 'b1'));
    write(set('c', 'c1'));
    const bc = write(set('a', 'a1'));
    const [again] = fetches(answer(read, held));
    expect(again).toMatchObject({ keys: ['a', 'b', 'c'], paged: true });
    const d = write(set('d', 'd1'));
    const [cut] = fetches(answer(again, [['a', entry('a1', bc)], ['b', entry('b1', bc - 2n)], ['c', entry('c1', bc - 1n)]]));
    expect(cut).toMatchObject({ keys: ['d'] });
    expect(cut?.paged).toBeUndefined();
    const [snapshot] = batchesTo(N2, answer(cut, [['d', entry('d1', d)]]));
    expect(snapshot?.to).toBe(d);
    expect(snapshot?.entries.map(([key, { value }]) => [key, value.toString()])).toEqual([['a', 'a1'], ['b', 'b1'], ['c', 'c1'], ['d', 'd1']]);
  });

  it('after a flush while it was read, is read last as every key at one point', () => {
    const { write, answer, fetches, batchesTo, read, held } = loaded();
    write({ kind: 'flush_all', delayMs: 0 });
    const [cut] = fetches(answer(read, held));
    expect(cut).toMatchObject({ keys: null });
    expect(cut?.paged).toBeUndefined();
    const [snapshot] = batchesTo(N2, answer(cut, [['a', entry('', 9n)]]));
    expect(snapshot?.entries.map(([key]) => key)).toEqual(['a']);
  });

  it('is followed in the chain by the writes made after its cut, and only by those', () => {
    const { step, write, answer, fetches, batchesTo, read, held, now, lastWrite } = loaded();
    const during = write(set('b', 'b1'));
    // The write is read back for the chain too (the dirty fetch): the snapshot covers that batch.
    const [before] = fetches(lastWrite());
    expect(before?.keys).toEqual(['b']);
    const [cut] = fetches(answer(read, held));
    answer(before, [['b', entry('b1', during)]]);
    const after = write(set('e', 'e1'));
    const [dirty] = fetches(step({ kind: 'flush', nowMs: now() + 1000 }));
    expect(dirty?.keys).toEqual(['e']);
    answer(dirty, [['e', entry('e1', after)]]);
    const sent = batchesTo(N2, answer(cut, [['b', entry('b1', during)]]));
    expect(sent.map(({ snapshot, prev, to }) => ({ snapshot, prev, to }))).toEqual([
      { snapshot: true, prev: 0n, to: during },
      { snapshot: false, prev: during, to: after },
    ]);
    expect(sent[0]?.entries.map(([key]) => key)).toEqual(['a', 'b']);
  });
});

describe('a causal snapshot asked for again while it is read', () => {
  it('is read afresh once that read is in, not once per ask beside it, and another peer joins that read', () => {
    const { step, answer, fetches, batchesTo, read, held } = loaded();
    // n2 restarted: every batch of our window it could not use asks for a snapshot.
    const asks = [1, 2, 3].flatMap((to) =>
      step({ kind: 'message', nowMs: 10, from: N2, message: { kind: 'batch_ack', to: BigInt(to), visible: [0n, 0n, 0n], resync: true } }));
    expect(fetches(asks)).toEqual([]);
    expect(asks.filter((effect) => effect.kind === 'note')).toHaveLength(1);
    // The read goes on to its cut for n3; n2's is read afresh, once.
    const [cut, fresh, ...others] = fetches(answer(read, held));
    expect(others).toEqual([]);
    expect(cut).toMatchObject({ keys: [] });
    expect(cut?.paged).toBeUndefined();
    expect(fresh).toMatchObject({ keys: null, paged: true });
    expect(fresh?.token).not.toBe(read?.token);
    expect(batchesTo(N3, answer(cut, [])).map((batch) => batch.snapshot)).toEqual([true]);
    // n3 asks too while n2's read runs: it joins that read rather than start one of its own.
    const joined = step({ kind: 'message', nowMs: 20, from: N3, message: { kind: 'batch_ack', to: 1n, visible: [0n, 0n, 0n], resync: true } });
    expect(fetches([...joined, ...step({ kind: 'tick', nowMs: 30, peersUp: [...PEERS] })])).toEqual([]);
    const [both, ...more] = fetches(answer(fresh, held));
    expect(more).toEqual([]);
    const sent = answer(both, []);
    expect(batchesTo(N2, sent).map((batch) => batch.snapshot)).toEqual([true]);
    expect(batchesTo(N3, sent).map((batch) => batch.snapshot)).toEqual([true]);
  });
});

describe('a causal node receiving a snapshot in parts', () => {
  it('does not ask its sender to start over while parts keep coming, though a batch after it waits', () => {
    const { step } = loaded();
    const snapshotTo = packVersion(tickHlc(HLC_ZERO, 5), 1);
    const chainTo = packVersion(tickHlc(HLC_ZERO, 6), 1);
    const part = (index: number): CausalMessage => ({
      kind: 'batch', snapshot: true, base: 0n, prev: 0n, to: snapshotTo, deps: [0n, snapshotTo, 0n], part: index, parts: 3,
      entries: [[`s${index}`, entry('s', snapshotTo)]],
    });
    const chain: CausalMessage = { kind: 'batch', snapshot: false, base: 0n, prev: snapshotTo, to: chainTo, deps: [0n, chainTo, 0n], part: 0, parts: 1, entries: [] };
    const asks = (effects: Array<Effect<CausalMessage>>): number =>
      effects.filter((effect) => effect.kind === 'send' && effect.message.kind === 'batch_ack' && effect.message.resync).length;
    step({ kind: 'message', nowMs: 10, from: N2, message: part(0) });
    step({ kind: 'message', nowMs: 10, from: N2, message: chain });
    step({ kind: 'message', nowMs: 3000, from: N2, message: part(1) });
    expect(asks(step({ kind: 'tick', nowMs: 5000, peersUp: [...PEERS] }))).toBe(0);
    // No part for resyncAfterMs: the batch's sender is asked for its whole replica.
    expect(asks(step({ kind: 'tick', nowMs: 7500, peersUp: [...PEERS] }))).toBe(1);
  });

  it("does not ask for a snapshot for a batch waiting on another node's writes while that node's snapshot comes", () => {
    const { step } = loaded();
    const theirs = packVersion(tickHlc(HLC_ZERO, 5), 2);
    const n2To = packVersion(tickHlc(HLC_ZERO, 6), 1);
    // n2's batch depends on a write of n3 this node lacks; n3's snapshot, which brings it, is on its way.
    const waiting: CausalMessage = { kind: 'batch', snapshot: false, base: 0n, prev: 0n, to: n2To, deps: [0n, n2To, theirs], part: 0, parts: 1, entries: [] };
    const part = (index: number): CausalMessage => ({
      kind: 'batch', snapshot: true, base: 0n, prev: 0n, to: theirs, deps: [0n, 0n, theirs], part: index, parts: 3,
      entries: [[`t${index}`, entry('t', theirs)]],
    });
    const asks = (effects: Array<Effect<CausalMessage>>): number =>
      effects.filter((effect) => effect.kind === 'send' && effect.message.kind === 'batch_ack' && effect.message.resync).length;
    step({ kind: 'message', nowMs: 10, from: N2, message: waiting });
    step({ kind: 'message', nowMs: 10, from: N3, message: part(0) });
    step({ kind: 'message', nowMs: 3000, from: N3, message: part(1) });
    expect(asks(step({ kind: 'tick', nowMs: 5000, peersUp: [...PEERS] }))).toBe(0);
  });
});

describe('spliceRead', () => {
  it('replaces the keys read again, drops those gone since, adds those new, in key order', () => {
    const read = { entries: [['a', entry('a0', 1n)], ['c', entry('c0', 1n)], ['e', entry('e0', 1n)]] as KeyedEntry[], keys: ['b', 'c', 'e', 'f'] };
    const again: KeyedEntry[] = [['b', entry('b1', 2n)], ['c', entry('c1', 2n)], ['f', entry('f1', 2n)]];
    expect(spliceRead(read, again).map(([key, { value }]) => `${key}=${value.toString()}`)).toEqual(['a=a0', 'b=b1', 'c=c1', 'f=f1']);
    expect(spliceRead({ entries: read.entries, keys: [] }, [])).toEqual(read.entries);
  });
});
