/**
 * A follower's forward lost on a connection that was reset (the peer network resends nothing):
 * the follower sends the write again to the same leader in the same term, once a write it sent
 * later was applied (so the leader, which logs a connection's forwards in order, never got the
 * first) or after three heartbeats without any of its writes applied; never past a later write of
 * the same session already sent; and a copy that did arrive is logged once.
 */

import { describe, expect, it } from 'vitest';
import type { LogMessage } from '../src/consistency/replicated-log.ts';
import { asRequestId, type PeerId } from '../src/consistency/types.ts';
import type { Op } from '../src/store/types.ts';
import { electedCluster, followers, set, type Cluster } from './support/log-cluster.ts';

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

describe('a forward lost on a reset connection', () => {
  it('is sent again once a write the follower sent after it was applied', () => {
    const cluster = electedCluster('sequential');
    const [follower] = followers(cluster);
    const first = writeLosingItsForward(cluster, follower, set('a', '1'), 1);
    cluster.deliver();
    const second = cluster.requests(follower, [set('b', '2')], 2).requestIds[0] ?? -1;
    cluster.run(20);
    expect(appliedAt(cluster, follower, second)).toBe(true);
    cluster.run(20);
    expect(appliedAt(cluster, follower, first)).toBe(true);
    expect(forwardsOf(cluster, first)).toBe(1); // the lost copy never reached the trace
    expect(cluster.node(follower).replica.get('a')?.value.toString()).toBe('1');
  });

  it('alone, is sent again after three heartbeats in which none of the follower\'s writes was applied', () => {
    const cluster = electedCluster('linearizability');
    const [follower] = followers(cluster);
    const write = writeLosingItsForward(cluster, follower, set('a', '1'), 1);
    cluster.run(100);
    expect(cluster.outcome(follower, write)).toBeUndefined();
    cluster.run(100);
    expect(appliedAt(cluster, follower, write)).toBe(true);
    for (const id of cluster.nodes.keys()) expect(cluster.node(id).replica.get('a')?.value.toString()).toBe('1');
  });

  it('is not sent again past a later write of its session already sent: the later one stays last', () => {
    const cluster = electedCluster('sequential');
    const [follower] = followers(cluster);
    const first = writeLosingItsForward(cluster, follower, set('k', 'early'), 7);
    cluster.deliver();
    const later = cluster.requests(follower, [set('k', 'late')], 7).requestIds[0] ?? -1;
    cluster.run(600);
    expect(appliedAt(cluster, follower, later)).toBe(true);
    expect(forwardsOf(cluster, first)).toBe(0);
    for (const id of cluster.nodes.keys()) expect(cluster.node(id).replica.get('k')?.value.toString()).toBe('late');
  });

  it('a copy that did arrive, its entry slow to reach the follower, is logged once', () => {
    const cluster = electedCluster('sequential');
    const [follower] = followers(cluster);
    const leader = cluster.leader();
    // The forward arrives; the leader's messages to the follower are lost for a while.
    let cut = false;
    cluster.lose = (message: LogMessage, to) => cut && to === follower && message.kind !== 'forward';
    const write = cluster.request(follower, set('a', '1')).requestId;
    cut = true;
    cluster.run(200);
    expect(forwardsOf(cluster, write)).toBeGreaterThan(1);
    cut = false;
    cluster.run(200);
    expect(appliedAt(cluster, follower, write)).toBe(true);
    // One entry carries it, however many copies the leader got.
    const indices = new Set(cluster.trace.filter((line) => line.startsWith(`${leader}->`)).flatMap((line) => [...line.matchAll(/(\d+):store/g)].map((match) => match[1])));
    expect(indices.size).toBe(1);
  });

  it('a copy sent again is dropped once the leader compacted past the commit index it was first sent at', () => {
    const cluster = electedCluster('sequential', 6);
    const leader = cluster.leader();
    const [follower] = followers(cluster);
    for (let n = 0; n < 20; n += 1) {
      cluster.request(leader, set(`k${n}`, String(n)));
      cluster.run(20);
    }
    const { term, snapshotIndex, lastIndex } = cluster.node(leader).machine.inspect();
    expect(snapshotIndex).toBeGreaterThan(2);
    const again = (requestId: number, since: number): void => {
      cluster.step(leader, { kind: 'message', nowMs: cluster.nowMs, from: follower, message: {
        kind: 'forward', term, incarnation: 1, requests: [{ requestId: asRequestId(requestId), op: set('late', String(requestId)) }], again: since,
      } });
      cluster.step(leader, { kind: 'flush', nowMs: cluster.nowMs });
    };
    // The first copy, if logged, may have been compacted away: not logged (it could be twice).
    again(900, snapshotIndex - 1);
    expect(cluster.node(leader).machine.inspect().lastIndex).toBe(lastIndex);
    // Sent at or after the snapshot: a first copy would still be in the log, so this one is logged, once.
    again(901, snapshotIndex);
    again(901, snapshotIndex);
    expect(cluster.node(leader).machine.inspect().lastIndex).toBe(lastIndex + 1);
  });
});
