/**
 * A state transfer read key by key: the sender's applies go on while it reads its replica, so
 * each key is as of some point up to the sender's applied index when the read ended
 * (`fetchedThrough`), not one point for all. The receiver replays the entries after the transfer's
 * index, skipping what its keys hold, serves no read until it applied `fetchedThrough` (two keys
 * could show two points of the log), and answers its own writes up to there as the transfer's.
 * Driven here by hand, through one machine; the simulations fetch key by key too
 * (support/log-sim/controller.ts).
 */

import { describe, expect, it } from 'vitest';
import type { LogMessage } from '../src/consistency/log/types.ts';
import { asRequestId, type Effect } from '../src/consistency/types.ts';
import { Replica } from '../src/store/replica.ts';
import { MemoryBackend } from '../src/store/memory.ts';
import type { Entry, Op } from '../src/store/types.ts';
import { NOW, setOp } from './support/replica-kit.ts';
import { FAILURE_TIMEOUT_MS, N1, N2, N3, Node, chunksSent, fetchToken, heartbeat, installed, snapshot, startedOverLeader, value } from './support/transfer-kit.ts';

const set = (key: string): Op => ({ kind: 'store', verb: 'set', key, flags: 0, expiresAtMs: 0, value: Buffer.from('v'), casUnique: 0n });

const replyTo = (effects: Effect<LogMessage>[], requestId: number): unknown =>
  effects.find((effect) => effect.kind === 'reply' && effect.requestId === asRequestId(requestId));

/** A caught-up follower at 10 whose own set of `mine` waits; then a transfer at 11 read through 13. */
function followerInstallingAhead(): Node {
  const follower = new Node(N2, [{ ...(snapshot(2, N1) as object), replicaTrusted: true, replicaEmptied: false }]);
  follower.receive(0, N1, heartbeat(1, 0));
  expect(follower.machine.inspect().caughtUp).toBe(true);
  follower.step(1, { kind: 'request', requestId: asRequestId(1), session: 1, op: set('mine') });
  follower.step(0, { kind: 'flush' });
  const chunk: LogMessage = {
    kind: 'transfer_chunk', term: 2, replicaEpoch: 0, transferId: 3, index: 11, indexTerm: 2, fetchedThrough: 13,
    chunkNumber: 0, chunkCount: 1, entries: [value('mine', 12n), value('other', 13n)],
  };
  expect(installed(follower.receive(5, N1, chunk))).toBe(true);
  return follower;
}

describe('a state transfer read key by key', () => {
  it('the receiver serves no read until it applied the index the read went through, and answers its own write as the transfer\'s', () => {
    const follower = followerInstallingAhead();
    expect(follower.machine.inspect()).toMatchObject({ appliedIndex: 11, caughtUp: false });
    const early = follower.step(1, { kind: 'request', requestId: asRequestId(2), session: 2, op: { kind: 'get', keys: ['other'] } });
    expect(replyTo(early, 2)).toMatchObject({ reply: { kind: 'refused', reason: 'not_caught_up' } });
    // Entries 12 (our set) and 13 arrive committed: 12's apply may be skipped (its key holds it),
    // so the machine answers it, as for a write the transfer holds.
    const entry = (index: number, op: Op, origin: typeof N1, requestId: number | null): unknown => ({
      term: 2, index, nowMs: follower.nowMs, op, origin, incarnation: 2, requestId: requestId === null ? null : asRequestId(requestId),
    });
    const append = {
      ...(heartbeat(3, 0) as object), prevIndex: 11, prevTerm: 2, commitIndex: 13, durableIndex: 13,
      entries: [entry(12, set('mine'), N2, 1), entry(13, set('other'), N3, 7)],
    } as LogMessage;
    const effects = follower.receive(1, N1, append);
    expect(replyTo(effects, 1)).toMatchObject({ reply: { kind: 'stored', cas: 12n } });
    const applies = effects.filter((effect) => effect.kind === 'apply');
    expect(applies.map((apply) => apply.kind === 'apply' && [apply.cas, apply.requestId])).toEqual([[12n, null], [13n, null]]);
    expect(follower.machine.inspect()).toMatchObject({ appliedIndex: 13, caughtUp: true });
    const served = follower.step(1, { kind: 'request', requestId: asRequestId(3), session: 2, op: { kind: 'get', keys: ['other'] } });
    expect(served).toContainEqual(expect.objectContaining({ kind: 'read', requestId: asRequestId(3) }));
  });

  it('a transfer the receiver serves until then says its keys may be as far ahead', () => {
    const follower = followerInstallingAhead();
    const asked = follower.receive(1, N3, { kind: 'transfer_request', term: 2, minIndex: 11, emptied: true, replicaEpoch: 0 });
    const token = fetchToken(asked);
    expect(token).not.toBeNull();
    const sent = chunksSent(follower.step(1, { kind: 'fetched', token: token as number, entries: [value('mine', 12n), value('other', 13n)] }));
    expect(sent.length).toBe(1);
    expect(sent[0]).toMatchObject({ index: 11, fetchedThrough: 13 });
  });

  it('a restarted leader replaying onto its kept replica sends followers behind its snapshot a transfer, rather than wait for a commit only they can make', () => {
    // Compacted at 10 with entries 11 to 20 of term 1 logged, its replica kept and trusted: it may
    // hold applies up to 20, yet nothing past 10 is known committed until an entry of its term is.
    const entries = Array.from({ length: 10 }, (_, i) => (
      { term: 1, index: 11 + i, nowMs: 0, op: null, origin: N1, incarnation: 1, requestId: null }
    ));
    const leader = new Node(N1, [{ ...(snapshot(1, null, entries) as object), replicaTrusted: true, replicaEmptied: false }]);
    leader.step(2 * FAILURE_TIMEOUT_MS + 1, { kind: 'tick', peersUp: [N2, N3] });
    leader.receive(0, N2, { kind: 'pre_vote_reply', term: 2, granted: true });
    leader.receive(0, N2, { kind: 'vote_reply', term: 2, granted: true });
    expect(leader.machine.inspect()).toMatchObject({ role: 'leader', commitIndex: 10, appliedIndex: 10 });
    // Both followers' logs end before the snapshot: only a transfer brings them up to it.
    leader.receive(5, N2, { kind: 'append_reply', term: 2, success: false, matchIndex: 0, hintIndex: 1, round: 0, seq: 1, commitIndex: 0, lastIndex: 0 });
    // Its next heartbeat to such a follower pushes the transfer.
    const token = fetchToken(leader.step(50, { kind: 'tick', peersUp: [N2, N3] }));
    expect(token).not.toBeNull();
    const sent = chunksSent(leader.step(1, { kind: 'fetched', token: token as number, entries: [value('k', 20n)] }));
    expect(sent.length).toBe(1);
    expect(sent[0]).toMatchObject({ index: 10, fetchedThrough: 20 });
  });

  it('the sender names the index it had applied when its read ended', () => {
    const leader = startedOverLeader();
    leader.step(0, { kind: 'applied', token: 1 });
    const asked = leader.receive(5, N2, { kind: 'transfer_request', term: 2, minIndex: 10, emptied: true, replicaEpoch: 1 });
    const fetch = asked.find((effect) => effect.kind === 'fetch');
    expect(fetch).toBeDefined();
    const fetchedAt = leader.machine.inspect().appliedIndex;
    // While the replica is read, a client's write commits and is applied.
    leader.step(1, { kind: 'request', requestId: asRequestId(1), session: 1, op: set('k') });
    leader.step(0, { kind: 'flush' });
    const lastIndex = leader.machine.inspect().lastIndex;
    leader.receive(1, N3, { kind: 'append_reply', term: 2, success: true, matchIndex: lastIndex, hintIndex: 0, round: 0, seq: 0, commitIndex: 10 });
    expect(leader.machine.inspect().appliedIndex).toBe(lastIndex);
    expect(lastIndex).toBeGreaterThan(fetchedAt);
    const sent = chunksSent(leader.step(1, { kind: 'fetched', token: (fetch as { token: number }).token, entries: [value('k', BigInt(lastIndex))] }));
    expect(sent.length).toBe(1);
    expect(sent[0]).toMatchObject({ index: fetchedAt, fetchedThrough: lastIndex });
  });

  it('a read of the replica that takes many failure timeouts is waited for, not started again (it would never end)', () => {
    const leader = startedOverLeader();
    leader.step(0, { kind: 'applied', token: 1 });
    const ask: LogMessage = { kind: 'transfer_request', term: 2, minIndex: 10, emptied: true, replicaEpoch: 1 };
    const fetches = (effects: Effect<LogMessage>[]): number => effects.filter((effect) => effect.kind === 'fetch').length;
    const first = leader.receive(5, N2, ask);
    expect(fetches(first)).toBe(1);
    const token = (first.find((effect) => effect.kind === 'fetch') as { token: number }).token;
    // A million keys: a minute of failure timeouts, the follower asking again after each.
    let again = 0;
    for (let tick = 0; tick < 200; tick += 1) {
      again += fetches(leader.step(300, { kind: 'tick', peersUp: [N2, N3] }));
      again += fetches(leader.receive(0, N2, ask));
    }
    expect(again).toBe(0);
    expect(chunksSent(leader.step(1, { kind: 'fetched', token, entries: [value('k', 5n)] })).length).toBe(1);
  });

  it('a read of the replica asked for in an earlier term is not sent in a later one', () => {
    const leader = startedOverLeader();
    leader.step(0, { kind: 'applied', token: 1 });
    const asked = leader.receive(5, N2, { kind: 'transfer_request', term: 2, minIndex: 10, emptied: true, replicaEpoch: 1 });
    const token = (asked.find((effect) => effect.kind === 'fetch') as { token: number }).token;
    // N3 leads term 3 meanwhile.
    leader.receive(5, N3, { ...(heartbeat(1, 0) as object), term: 3 } as LogMessage);
    expect(leader.machine.inspect()).toMatchObject({ role: 'follower', term: 3 });
    expect(chunksSent(leader.step(1, { kind: 'fetched', token, entries: [value('k', 5n)] }))).toEqual([]);
  });

  it('a chunk whose read ends before its own index is dropped at the edge', () => {
    const follower = new Node(N2, [snapshot(2, N1)]);
    follower.receive(0, N1, heartbeat(1, 0));
    const before = follower.machine.status().invalidPeerMessages;
    const chunk: LogMessage = {
      kind: 'transfer_chunk', term: 2, replicaEpoch: 0, transferId: 3, index: 11, indexTerm: 2, fetchedThrough: 10,
      chunkNumber: 0, chunkCount: 1, entries: [],
    };
    expect(installed(follower.receive(5, N1, chunk))).toBe(false);
    expect(follower.machine.status().invalidPeerMessages).toBe(before + 1);
  });
});

/** The in-memory backend, each read taking a millisecond, as memcached's round trip might. */
class SlowReadBackend extends MemoryBackend {
  override async get(key: string): Promise<Entry | undefined> {
    await new Promise((resolve) => setTimeout(resolve, 1));
    return super.get(key);
  }
}

describe('Replica.fetch(null)', () => {
  const KEYS = 3000;

  async function fetchBesideAnApply(replay: 'plain' | 'skip-applied', paged = false): Promise<{ order: string[]; lastCas: bigint | undefined }> {
    // No value cache: every key is read from the backend (about 50 ms for all of them).
    const replica = new Replica(new SlowReadBackend(), { tombstones: false, replay, cacheBytesMax: 0 });
    // As at a controller's start: the index then knows every key the backend holds.
    await replica.loadIndex();
    for (let index = 0; index < KEYS; index += 1) await replica.apply(setOp(`k${String(index).padStart(5, '0')}`, 'old'), { cas: BigInt(index + 1), nowMs: NOW });
    const order: string[] = [];
    const all = replica.fetch(null, { paged }).then((entries) => {
      order.push('fetch');
      return entries;
    });
    const last = `k${String(KEYS - 1).padStart(5, '0')}`;
    const applied = replica.apply(setOp(last, 'new'), { cas: 10_000n, nowMs: NOW }).then(() => order.push('apply'));
    const [entries] = await Promise.all([all, applied]);
    expect(entries.length).toBe(KEYS);
    return { order, lastCas: new Map(entries).get(last)?.cas };
  }

  it('with skip-applied, reads a page of keys at a time: an apply issued after it is not held up, and a key read later shows it', async () => {
    const { order, lastCas } = await fetchBesideAnApply('skip-applied');
    expect(order).toEqual(['apply', 'fetch']);
    expect(lastCas).toBe(10_000n);
  });

  it('paged without skip-applied (a causal snapshot read, which makes its own cut), reads a page at a time too', async () => {
    const { order, lastCas } = await fetchBesideAnApply('plain', true);
    expect(order).toEqual(['apply', 'fetch']);
    expect(lastCas).toBe(10_000n);
  });

  it('without, reads every key at one point: the apply waits for it', async () => {
    const { order, lastCas } = await fetchBesideAnApply('plain');
    expect(order).toEqual(['fetch', 'apply']);
    expect(lastCas).toBe(BigInt(KEYS));
  });
});
