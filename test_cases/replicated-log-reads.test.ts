/**
 * Scenario tests of the replicated log on the network of support/log-cluster.ts, as clients see
 * it: reads (a linearizable read index, sequential local reads), the order of one pipelining
 * connection's reads and writes, refusals, and writes the leader refuses when its memcached has
 * no room for them.
 */

import { afterEach, describe, expect, it, vi } from 'vitest';
import { asPeerId, asRequestId, type Effect, type PeerId } from '../src/consistency/types.ts';
import type { LogMessage, LogMode } from '../src/consistency/replicated-log.ts';
import { refused } from '../src/protocol/refusals.ts';
import { itemAt } from '../src/runtime/item-at.ts';
import { exactly } from './support/must.ts';
import { MemoryGuard, type BackendMemory } from '../src/store/memory-guard.ts';
import { Cluster, electedCluster, FAILURE_TIMEOUT_MS, followers, get, IDS, set } from './support/log-cluster.ts';

describe('reads', () => {
  it('linearizability: a follower read waits for a majority-confirmed read index', () => {
    const cluster = electedCluster();
    const leader = cluster.leader();
    const follower = followers(cluster)[0];
    for (const id of IDS) expect(cluster.node(id).machine.readsLocally?.(cluster.nowMs, 1)).toBe(false);
    const write = cluster.request(leader, set('r', 'v1'));
    cluster.deliver();
    expect(cluster.outcome(leader, write.requestId)).toMatchObject({ kind: 'apply', cas: 2n });
    const { requestId, effects } = cluster.request(follower, get('r'));
    expect(effects).toEqual([expect.objectContaining({ kind: 'send', to: leader, message: expect.objectContaining({ kind: 'read_index' }) })]);
    cluster.deliver();
    expect(cluster.outcome(follower, requestId)).toMatchObject({ kind: 'read', requestId });
    expect(cluster.node(follower).replica.get('r')?.value.toString()).toBe('v1');
    const confirm = cluster.node(leader).effects.filter((effect) => effect.kind === 'send' && effect.message.kind === 'read_index_reply');
    expect(confirm).toEqual([expect.objectContaining({ message: expect.objectContaining({ readIndex: 2 }) })]);
  });

  it('linearizability: the leader answers a follower\'s read index at once, with no heartbeat round', () => {
    const cluster = electedCluster();
    const leader = cluster.leader();
    const [asker] = followers(cluster);
    const write = cluster.request(leader, set('r', 'v1'));
    cluster.deliver();
    expect(cluster.outcome(leader, write.requestId)).toMatchObject({ kind: 'apply', cas: 2n });
    const { requestId, effects } = cluster.request(asker, get('r'));
    const ask = itemAt(effects as Array<Extract<Effect<LogMessage>, { kind: 'send' }>>, 0);
    const answer = [
      ...cluster.step(leader, { kind: 'message', nowMs: cluster.nowMs, from: asker, message: ask.message }),
      ...cluster.step(leader, { kind: 'flush', nowMs: cluster.nowMs }),
    ].filter((effect): effect is Extract<Effect<LogMessage>, { kind: 'send' }> => effect.kind === 'send');
    // With three nodes the asker and the leader are a majority: one answer, no append to anyone.
    expect(answer).toEqual([
      expect.objectContaining({ to: asker, message: expect.objectContaining({ kind: 'read_index_reply', readIndex: 2 }) }),
    ]);
    cluster.step(asker, { kind: 'message', nowMs: cluster.nowMs, from: leader, message: itemAt(answer, 0).message });
    expect(cluster.outcome(asker, requestId)).toMatchObject({ kind: 'read', requestId });
    expect(cluster.node(asker).replica.get('r')?.value.toString()).toBe('v1');
  });

  it('linearizability: a read index answered in a term the asker has left is not used; its reads are refused', () => {
    const cluster = electedCluster();
    const leader = cluster.leader();
    const [asker] = followers(cluster);
    const { requestId, effects } = cluster.request(asker, get('r'));
    const ask = itemAt(effects as Array<Extract<Effect<LogMessage>, { kind: 'send' }>>, 0);
    const answer = cluster
      .step(leader, { kind: 'message', nowMs: cluster.nowMs, from: asker, message: ask.message })
      .find((effect): effect is Extract<Effect<LogMessage>, { kind: 'send' }> => effect.kind === 'send' && effect.message.kind === 'read_index_reply');
    expect(answer?.message).toMatchObject({ readIndex: expect.any(Number) });
    // Before the answer arrives the asker moves to a later term, with the same leader (re-elected):
    // it may have voted in between, so the earlier term's answer proves nothing about a majority.
    const last = [...cluster.node(leader).effects].reverse().find((effect) => effect.kind === 'send' && effect.to === asker && effect.message.kind === 'append');
    const sent = (last as Extract<Effect<LogMessage>, { kind: 'send' }>).message as Extract<LogMessage, { kind: 'append' }>;
    const lastIndex = sent.prevIndex + sent.entries.length;
    const lastTerm = sent.entries.at(-1)?.term ?? sent.prevTerm;
    const term = sent.term + 1;
    cluster.step(asker, {
      kind: 'message', nowMs: cluster.nowMs, from: leader,
      message: { kind: 'append', term, prevIndex: lastIndex, prevTerm: lastTerm, entries: [], commitIndex: sent.commitIndex, durableIndex: lastIndex, round: 0, seq: 1, quiet: false },
    });
    expect(cluster.node(asker).machine.status()).toMatchObject({ term, role: 'follower' });
    cluster.step(asker, { kind: 'message', nowMs: cluster.nowMs, from: leader, message: answer?.message as LogMessage });
    expect(cluster.outcome(asker, requestId)).toMatchObject({ kind: 'reply', reply: { kind: 'refused', reason: 'no_quorum' } });
  });

  it('linearizability: an answer meant for the same batch id of an earlier run of the asker is ignored', () => {
    const cluster = electedCluster();
    const leader = cluster.leader();
    const [asker] = followers(cluster);
    const { requestId, effects } = cluster.request(asker, get('r'));
    const ask = itemAt(effects as Array<Extract<Effect<LogMessage>, { kind: 'send' }>>, 0).message as Extract<LogMessage, { kind: 'read_index' }>;
    const stale = { kind: 'read_index_reply', term: ask.term, incarnation: ask.incarnation - 1, batchId: ask.batchId, readIndex: 0 } as const;
    cluster.step(asker, { kind: 'message', nowMs: cluster.nowMs, from: leader, message: stale });
    expect(cluster.outcome(asker, requestId)).toBeUndefined();
    cluster.deliver();
    expect(cluster.outcome(asker, requestId)).toMatchObject({ kind: 'read', requestId });
  });

  it('linearizability: a node cut off from the others refuses reads rather than serve stale data', () => {
    const cluster = electedCluster();
    const follower = followers(cluster)[0];
    cluster.down.add(follower);
    for (let ms = 10; ms <= 400; ms += 10) cluster.step(follower, { kind: 'tick', nowMs: cluster.nowMs + ms, peersUp: [] });
    cluster.nowMs += 400;
    const { requestId } = cluster.request(follower, get('r'));
    expect(cluster.outcome(follower, requestId)).toMatchObject({ kind: 'reply', reply: { kind: 'refused', reason: 'no_quorum' } });
  });

  it('sequential: reads are served locally at once while a leader is known, refused after', () => {
    const cluster = electedCluster('sequential');
    const follower = followers(cluster)[0];
    // What the controller asks before serving a get without stepping it agrees with the step.
    expect(cluster.node(follower).machine.readsLocally?.(cluster.nowMs, 1)).toBe(true);
    const served = cluster.request(follower, get('x'));
    expect(served.effects).toEqual([expect.objectContaining({ kind: 'read', requestId: served.requestId })]);
    cluster.down.add(follower);
    cluster.nowMs += FAILURE_TIMEOUT_MS;
    expect(cluster.node(follower).machine.readsLocally?.(cluster.nowMs, 1)).toBe(false);
    const refused = cluster.request(follower, get('x'));
    expect(refused.effects.filter((effect) => effect.kind !== 'note')).toEqual([
      expect.objectContaining({ kind: 'reply', reply: expect.objectContaining({ kind: 'refused' }) }),
    ]);
  });
});

describe('a pipelining connection (one session, requests in flight together)', () => {
  /** Where the apply or read of each request falls among a node's effects. */
  const positions = (cluster: Cluster, id: PeerId, requestIds: number[]): number[] =>
    requestIds.map((requestId) =>
      cluster.node(id).effects.findIndex((effect) => (effect.kind === 'apply' || effect.kind === 'read') && effect.requestId === requestId));

  it.each<LogMode>(['sequential', 'linearizability'])('%s: each read is carried out after the writes sent before it and before the ones sent after it', (mode) => {
    const cluster = electedCluster(mode);
    const follower = followers(cluster)[0];
    const pipelined = cluster.requests(follower, [get('p'), set('p', '1'), get('p'), get('q'), set('p', '2'), get('p')], 7);
    // A read behind a write of its own session waits for it; another session's read does not.
    const [firstRead, write1, read1, read2, write2, read3] = exactly(pipelined.requestIds, 6);
    if (mode === 'sequential') expect(cluster.outcome(follower, firstRead)).toMatchObject({ kind: 'read' });
    for (const held of [read1, read2, read3]) expect(cluster.outcome(follower, held)).toBeUndefined();
    const other = cluster.requests(follower, [get('p')], 8);
    if (mode === 'sequential') expect(cluster.outcome(follower, itemAt(other.requestIds, 0))).toMatchObject({ kind: 'read' });
    cluster.deliver();
    cluster.run(100);
    const at = positions(cluster, follower, pipelined.requestIds);
    for (const position of at) expect(position).toBeGreaterThanOrEqual(0);
    const [atFirstRead, atWrite1, atRead1, atRead2, atWrite2, atRead3] = exactly(at, 6);
    expect(atFirstRead).toBeLessThan(atWrite1);
    expect(atWrite1).toBeLessThan(atRead1);
    expect(atWrite1).toBeLessThan(atRead2);
    expect(Math.max(atRead1, atRead2)).toBeLessThan(atWrite2);
    expect(atWrite2).toBeLessThan(atRead3);
    expect(cluster.node(follower).machine.status().queueDepth).toBe(0);
    void write1;
    void write2;
  });

  it('linearizability: a read sent before a write is served before that write is applied, read index or not', () => {
    const cluster = electedCluster('linearizability');
    const follower = followers(cluster)[0];
    // The read's read-index request to the leader is lost; the write still commits.
    cluster.lose = (message) => message.kind === 'read_index' || message.kind === 'read_index_reply';
    const { requestIds } = cluster.requests(follower, [get('r'), set('r', 'after')], 9);
    cluster.deliver();
    cluster.run(50);
    const [atRead, atWrite] = exactly(positions(cluster, follower, requestIds), 2);
    expect(atRead).toBeGreaterThanOrEqual(0);
    expect(atRead).toBeLessThan(atWrite);
  });

  it('a read held behind a write that is refused goes on at once (here: refused too), not when its own time runs out', () => {
    const cluster = electedCluster('sequential');
    const [cutOff, other] = followers(cluster);
    cluster.down.add(cluster.leader());
    cluster.down.add(other);
    // The write goes to the leader, now gone (it may take effect: "timeout" at its deadline); the
    // read comes while the leader still counts as live, so it is taken and held behind the write.
    const write = cluster.requests(cutOff, [set('s', '1')], 10);
    cluster.run(200);
    const read = cluster.requests(cutOff, [get('s')], 10);
    const [writeId, readId] = [itemAt(write.requestIds, 0), itemAt(read.requestIds, 0)];
    let writeAtMs = -1;
    let readAtMs = -1;
    for (let ms = 10; ms <= 4 * FAILURE_TIMEOUT_MS && readAtMs < 0; ms += 10) {
      cluster.run(10);
      if (writeAtMs < 0 && cluster.outcome(cutOff, writeId) !== undefined) writeAtMs = ms;
      if (cluster.outcome(cutOff, readId) !== undefined) readAtMs = ms;
    }
    expect(cluster.outcome(cutOff, writeId)).toMatchObject({ kind: 'reply', reply: { kind: 'refused', reason: 'timeout' } });
    expect(cluster.outcome(cutOff, readId)).toMatchObject({ kind: 'reply', reply: refused('no_quorum', 'no leader reachable') });
    // Answered with the write, 200 ms before its own time ran out.
    expect(writeAtMs).toBeGreaterThan(0);
    expect(readAtMs).toBe(writeAtMs);
    expect(cluster.node(cutOff).machine.status().queueDepth).toBe(0);
  });
});

describe('refusals', () => {
  it('a write pending beyond the bound gets a refusal', () => {
    const cluster = electedCluster();
    const [follower, other] = followers(cluster);
    cluster.down.add(cluster.leader());
    cluster.down.add(other);
    const { requestId } = cluster.request(follower, set('a', '1'));
    cluster.run(4 * FAILURE_TIMEOUT_MS + 20);
    expect(cluster.outcome(follower, requestId)).toMatchObject({ kind: 'reply', reply: { kind: 'refused' } });
    expect(cluster.node(follower).machine.status().queueDepth).toBe(0);
  });

  it('a leader refuses a forward of an older term, so a write enters the log only in the term it was sent', () => {
    const cluster = electedCluster();
    const leader = cluster.leader();
    const follower = followers(cluster)[0];
    const term = cluster.node(leader).machine.status().term;
    const stale: LogMessage = { kind: 'forward', term: term - 1, incarnation: 1, stream: 0, seq: 1, requests: [{ requestId: asRequestId(5), op: set('s', '1') }] };
    const effects = cluster.step(leader, { kind: 'message', nowMs: cluster.nowMs, from: follower, message: stale });
    expect(effects).toContainEqual(expect.objectContaining({ kind: 'send', message: expect.objectContaining({ kind: 'forward_refused' }) }));
  });

});

describe('room in the store', () => {
  const outOfMemory = { kind: 'reply', reply: { kind: 'refused', reason: 'out_of_memory' } };
  /** A memcached of 1000 bytes: a 1000-byte value finds no room, a 1-byte one does. */
  const memcached = (usedBytes: number): BackendMemory => ({ usedBytes, limitBytes: 1000 });
  const big = 'x'.repeat(1000);

  afterEach(() => {
    vi.restoreAllMocks();
  });

  /** Which node's memory guard was asked for which key, in order (each guard named by the poll that fed it). */
  function watchGuards(cluster: Cluster): { asked: () => Array<[PeerId, string]>; poll: (memory: BackendMemory) => void } {
    const polled = vi.spyOn(MemoryGuard.prototype, 'polled');
    const refusal = vi.spyOn(MemoryGuard.prototype, 'refusal');
    const guards = new Map<unknown, PeerId>();
    const poll = (memory: BackendMemory): void => {
      for (const id of IDS) {
        const before = polled.mock.contexts.length;
        cluster.step(id, { kind: 'memory_polled', nowMs: cluster.nowMs, memory, stored: new Map() });
        for (const guard of polled.mock.contexts.slice(before)) guards.set(guard, id);
      }
    };
    const asked = (): Array<[PeerId, string]> => refusal.mock.calls.map(([op], call) => [
      guards.get(refusal.mock.contexts[call]) ?? asPeerId('unpolled'),
      op.kind === 'store' ? op.key : op.kind,
    ]);
    return { asked, poll };
  }

  it('the leader asks for every write, its own clients\' and forwarded ones; a refused write is answered at its origin and logged nowhere', () => {
    const cluster = electedCluster('sequential');
    const leader = cluster.leader();
    const follower = followers(cluster)[0];
    const { asked, poll } = watchGuards(cluster);
    poll(memcached(0));
    const atFollower = cluster.request(follower, set('big1', big));
    const atLeader = cluster.request(leader, set('big2', big));
    const fits = cluster.request(follower, set('small', 'x'));
    cluster.run(100);
    expect(asked()).toEqual([[leader, 'big2'], [leader, 'big1'], [leader, 'small']]);
    expect(cluster.outcome(follower, atFollower.requestId)).toMatchObject(outOfMemory);
    expect(cluster.outcome(leader, atLeader.requestId)).toMatchObject(outOfMemory);
    expect(cluster.outcome(follower, fits.requestId)).toMatchObject({ kind: 'apply' });
    for (const id of IDS) {
      expect([...cluster.node(id).replica.keys()]).toEqual(['small']);
      expect(cluster.node(id).machine.status().committed).toBe('2'); // the leader's no-op and "small"
    }
  });

  it('a duplicate of a refused forward is refused too, even once there is room', () => {
    const cluster = electedCluster('sequential');
    const leader = cluster.leader();
    const follower = followers(cluster)[0];
    cluster.polled(memcached(1000));
    const { requestId, effects } = cluster.request(follower, set('k', 'v'));
    const forward = effects.find((effect) => effect.kind === 'send') as Extract<Effect<LogMessage>, { kind: 'send' }>;
    cluster.run(50);
    expect(cluster.outcome(follower, requestId)).toMatchObject(outOfMemory);
    cluster.polled(memcached(0));
    cluster.step(leader, { kind: 'message', nowMs: cluster.nowMs, from: follower, message: forward.message });
    cluster.run(100);
    expect(cluster.node(leader).machine.status().committed).toBe('1');
    expect(cluster.node(leader).replica.has('k')).toBe(false);
  });
});
