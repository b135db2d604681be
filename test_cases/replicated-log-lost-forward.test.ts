/**
 * A follower's forward lost on a connection that was reset (the peer network resends nothing):
 * the leader logs an origin's forwards only in the order they were sent, so a later forward shows
 * the gap (`forward_gap`) and the follower sends the lost write and every one after it again, in
 * a new stream; with nothing after it, the follower asks after three heartbeats without any of its
 * writes applied (an empty forward numbered after its last one shows the leader the gap). A
 * pipelining session's writes are applied in the order sent, and a copy that did arrive is logged
 * once.
 */

import { describe, expect, it } from 'vitest';
import type { LogMessage } from '../src/consistency/replicated-log.ts';
import { asRequestId, type PeerId } from '../src/consistency/types.ts';
import type { Op } from '../src/store/types.ts';
import { electedCluster, FAILURE_TIMEOUT_MS, followers, set, type Cluster } from './support/log-cluster.ts';

/** A write taken by `follower` (of client connection `session`) whose first forward is lost on the way; its request id. */
function writeLosingItsForward(cluster: Cluster, follower: PeerId, op: Op, session: number): number {
  let lost = false;
  cluster.lose = (message) => {
    if (lost || message.kind !== 'forward') return false;
    lost = true;
    return true;
  };
  return cluster.requests(follower, [op], session).requestIds[0] ?? -1;
}

const forwardsOf = (cluster: Cluster, requestId: number): number =>
  cluster.trace.filter((line) => line.includes(' forward ') && line.split(' forward ')[1]?.split(',').some((part) => part.startsWith(`${requestId}:`))).length;

const appliedAt = (cluster: Cluster, id: PeerId, requestId: number): boolean => cluster.outcome(id, requestId)?.kind === 'apply';

/** The log index at which `node` holds the entry of `origin`'s request `requestId`. */
function indexOf(cluster: Cluster, node: PeerId, origin: PeerId, requestId: number): number | undefined {
  const log = cluster.node(node).machine.inspect();
  for (let index = log.snapshotIndex + 1; index <= log.lastIndex; index += 1) {
    const entry = log.entryAt(index);
    if (entry?.origin === origin && entry.requestId === requestId) return index;
  }
  return undefined;
}

/**
 * A follower's write whose forward is lost, then a later write of `laterSession` sent behind it:
 * the cluster run `runMs` after, with the two request ids.
 */
function lostThenLater(mode: 'sequential' | 'linearizability', lost: [Op, number], later: [Op, number], runMs: number) {
  const cluster = electedCluster(mode);
  const [follower] = followers(cluster);
  const leader = cluster.leader();
  const first = writeLosingItsForward(cluster, follower, lost[0], lost[1]);
  cluster.deliver();
  const second = cluster.requests(follower, [later[0]], later[1]).requestIds[0] ?? -1;
  cluster.run(runMs);
  return { cluster, follower, leader, first, second };
}

const gapsTo = (cluster: Cluster, follower: PeerId): number => cluster.trace.filter((line) => line.endsWith(`->${follower} forward_gap`) || line.includes(`->${follower} forward_gap `)).length;

describe('a forward lost on a reset connection', () => {
  it('a later forward shows the gap: the leader drops it and says so, and both go again, applied in the order sent', () => {
    const { cluster, follower, leader, first, second } = lostThenLater('sequential', [set('a', '1'), 1], [set('b', '2'), 2], 40);
    expect(appliedAt(cluster, follower, first)).toBe(true);
    expect(appliedAt(cluster, follower, second)).toBe(true);
    expect(gapsTo(cluster, follower)).toBe(1);
    expect(forwardsOf(cluster, first)).toBe(1); // the lost copy never reached the trace
    expect(forwardsOf(cluster, second)).toBe(2); // dropped past the gap, then sent again behind the first
    expect(indexOf(cluster, leader, follower, first)).toBeLessThan(indexOf(cluster, leader, follower, second) ?? 0);
    expect(cluster.node(follower).replica.get('a')?.value.toString()).toBe('1');
  });

  it('alone, is sent again once the follower asks, three heartbeats in which none of its writes was applied later', () => {
    const cluster = electedCluster('linearizability');
    const [follower] = followers(cluster);
    const write = writeLosingItsForward(cluster, follower, set('a', '1'), 1);
    cluster.run(100);
    expect(cluster.outcome(follower, write)).toBeUndefined();
    cluster.run(100);
    expect(appliedAt(cluster, follower, write)).toBe(true);
    for (const id of cluster.nodes.keys()) expect(cluster.node(id).replica.get('a')?.value.toString()).toBe('1');
  });

  for (const mode of ['sequential', 'linearizability'] as const) {
    it(`${mode}: a pipelining session's lost write and its later one already sent are both applied, in the order sent`, () => {
      const { cluster, follower, leader, first, second: later } = lostThenLater(mode, [set('k', 'early'), 7], [set('k', 'late'), 7], 60);
      expect(appliedAt(cluster, follower, first)).toBe(true);
      expect(appliedAt(cluster, follower, later)).toBe(true);
      expect(indexOf(cluster, leader, follower, first)).toBeLessThan(indexOf(cluster, leader, follower, later) ?? 0);
      for (const id of cluster.nodes.keys()) expect(cluster.node(id).replica.get('k')?.value.toString()).toBe('late');
    });
  }

  it('a gap report that is lost is made again by a forward past the gap, at most once a heartbeat interval', () => {
    const cluster = electedCluster('sequential');
    const [follower] = followers(cluster);
    const first = writeLosingItsForward(cluster, follower, set('a', '1'), 1);
    cluster.deliver();
    let reportsLost = 1;
    cluster.lose = (message) => message.kind === 'forward_gap' && reportsLost-- > 0;
    const second = cluster.requests(follower, [set('b', '2')], 2).requestIds[0] ?? -1;
    cluster.deliver();
    cluster.run(20);
    const third = cluster.requests(follower, [set('c', '3')], 3).requestIds[0] ?? -1;
    cluster.deliver();
    expect(gapsTo(cluster, follower)).toBe(0); // the first report was lost, the next one waits a heartbeat interval
    expect([first, second, third].some((write) => appliedAt(cluster, follower, write))).toBe(false);
    cluster.run(40);
    const fourth = cluster.requests(follower, [set('d', '4')], 4).requestIds[0] ?? -1;
    cluster.run(40);
    expect(gapsTo(cluster, follower)).toBe(1);
    for (const write of [first, second, third, fourth]) expect(appliedAt(cluster, follower, write)).toBe(true);
    expect(forwardsOf(cluster, first)).toBe(1); // sent again once, on the report (not by the quiet rule too)
  });

  it('a forward that did arrive, its entry slow to reach the follower: the follower asks, and nothing is sent again or logged twice', () => {
    const cluster = electedCluster('sequential');
    const [follower] = followers(cluster);
    const leader = cluster.leader();
    // The forward arrives; the leader's messages to the follower are lost for a while.
    let cut = false;
    cluster.lose = (message: LogMessage, to) => cut && to === follower && message.kind !== 'forward' && message.kind !== 'forward_gap';
    const write = cluster.request(follower, set('a', '1')).requestId;
    cut = true;
    cluster.run(200);
    const probes = cluster.trace.filter((line) => line.startsWith(`${follower}->${leader} forward `) && line.endsWith('forward ')).length;
    expect(probes).toBeGreaterThan(0);
    expect(gapsTo(cluster, follower)).toBe(0);
    cut = false;
    cluster.run(200);
    expect(appliedAt(cluster, follower, write)).toBe(true);
    expect(forwardsOf(cluster, write)).toBe(1);
    // One entry carries it.
    const indices = new Set(cluster.trace.filter((line) => line.startsWith(`${leader}->`)).flatMap((line) => [...line.matchAll(/(\d+):store/g)].map((match) => match[1])));
    expect(indices.size).toBe(1);
  });

  it('a copy sent again is logged once, unless the leader may have compacted a first copy away and forgotten it: then "outcome unknown"', () => {
    const cluster = electedCluster('sequential', 6);
    const leader = cluster.leader();
    const [follower] = followers(cluster);
    for (let n = 0; n < 20; n += 1) {
      cluster.request(follower, set(`k${n}`, String(n)));
      cluster.run(20);
    }
    const { term, snapshotIndex } = cluster.node(leader).machine.inspect();
    expect(snapshotIndex).toBeGreaterThan(2);
    // Each copy comes in a stream of its own, as a follower's resends do.
    let stream = 0;
    const again = (requestId: number, since: number): unknown[] => {
      stream += 1;
      const effects = cluster.step(leader, { kind: 'message', nowMs: cluster.nowMs, from: follower, message: {
        kind: 'forward', term, incarnation: 1, stream, seq: 1, requests: [{ requestId: asRequestId(requestId), op: set('late', String(requestId)) }], again: since,
      } });
      cluster.step(leader, { kind: 'flush', nowMs: cluster.nowMs });
      return effects;
    };
    const lastIndex = (): number => cluster.node(leader).machine.inspect().lastIndex;
    // The forwards compacted lately are remembered: a first copy would be known, so this one is logged, once.
    const before = lastIndex();
    again(900, snapshotIndex - 1);
    again(900, snapshotIndex - 1);
    expect(lastIndex()).toBe(before + 1);
    // A request timeout later they are forgotten: a first copy sent above them could be gone unseen.
    cluster.run(5 * FAILURE_TIMEOUT_MS);
    const now = lastIndex();
    expect(again(901, snapshotIndex - 1)).toContainEqual(expect.objectContaining({
      kind: 'send', to: follower, message: expect.objectContaining({ kind: 'forward_refused', requestIds: [901], reason: 'outcome_unknown' }),
    }));
    expect(lastIndex()).toBe(now);
    // First sent above everything forgotten: logged, once.
    again(902, now);
    again(902, now);
    expect(lastIndex()).toBe(now + 1);
  });
});
