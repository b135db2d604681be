/**
 * Writes (and linearizable reads) across a leader change, on the scenario network of
 * support/log-cluster.ts: a write or linearizable read that finds no leader waits for one (a read
 * asked of a leader that died is asked of the next); a write sent to a leader that died is sent again to the next one
 * once it is certain the first copy can never commit (and only if that keeps its connection's
 * order); a write no leader took by its deadline, or held by a node that hears from no majority,
 * is answered "no quorum" and never logged after.
 */

import { describe, expect, it } from 'vitest';
import { refused } from '../src/protocol/refusals.ts';
import { itemAt } from '../src/runtime/item-at.ts';
import type { Effect } from '../src/consistency/types.ts';
import type { LogMessage } from '../src/consistency/replicated-log.ts';
import { electedCluster, FAILURE_TIMEOUT_MS, followers, get, IDS, incr, set, type Cluster } from './support/log-cluster.ts';

/** A write's request timeout in the scenario network (four failure timeouts). */
const REQUEST_TIMEOUT_MS = 4 * FAILURE_TIMEOUT_MS;

/** Every effect that names `requestId` at `id` (an apply, read or reply). */
function outcomes(cluster: Cluster, id: Parameters<Cluster['node']>[0], requestId: number): Effect<LogMessage>[] {
  return cluster.node(id).effects.filter(
    (effect) => (effect.kind === 'apply' || effect.kind === 'read' || effect.kind === 'reply') && effect.requestId === requestId,
  );
}

describe('writes across a leader change', () => {
  it('a write forwarded to a leader that dies is applied once by the next leader, whichever node leads next', () => {
    for (const which of [0, 1] as const) {
      const cluster = electedCluster();
      const old = cluster.leader();
      cluster.request(old, set('c', '0'));
      cluster.run(50);
      const origin = followers(cluster)[which];
      cluster.down.add(old);
      const { requestId } = cluster.request(origin, incr('c'));
      cluster.run(REQUEST_TIMEOUT_MS - 100);
      expect(outcomes(cluster, origin, requestId)).toEqual([expect.objectContaining({ kind: 'apply' })]);
      for (const id of IDS) if (id !== old) expect(cluster.node(id).replica.get('c')?.value.toString()).toBe('1');
    }
  });

  it('a write taken during an election waits for it, then commits', () => {
    const cluster = electedCluster();
    const old = cluster.leader();
    const [origin] = followers(cluster);
    cluster.down.add(old);
    // Past a failure timeout the old leader no longer counts as live; the election takes longer.
    cluster.run(FAILURE_TIMEOUT_MS + 10);
    expect(cluster.node(origin).machine.status().leader).toBe(old);
    const { requestId, effects } = cluster.request(origin, set('a', '1'));
    // Held, not sent to the leader that is gone.
    expect(effects.filter((effect) => effect.kind === 'send' && effect.message.kind === 'forward')).toEqual([]);
    expect(outcomes(cluster, origin, requestId)).toEqual([]);
    cluster.run(REQUEST_TIMEOUT_MS - 100);
    expect(outcomes(cluster, origin, requestId)).toEqual([expect.objectContaining({ kind: 'apply' })]);
  });

  it('a node cut off holds a write to its deadline, then answers "no quorum" (nothing changed), and never logs it', () => {
    const cluster = electedCluster('sequential');
    const [cutOff, other] = followers(cluster);
    cluster.down.add(cluster.leader());
    cluster.down.add(other);
    cluster.run(FAILURE_TIMEOUT_MS + 10);
    const write = cluster.request(cutOff, set('s', '1'));
    cluster.run(REQUEST_TIMEOUT_MS - 20);
    expect(outcomes(cluster, cutOff, write.requestId)).toEqual([]);
    cluster.run(30);
    expect(outcomes(cluster, cutOff, write.requestId)).toEqual([
      expect.objectContaining({ kind: 'reply', reply: refused('no_quorum', 'no leader took the write in time') }),
    ]);
    // Healed: the answered write is not sent after all.
    cluster.down.clear();
    cluster.run(1_000);
    for (const id of IDS) expect(cluster.node(id).replica.has('s')).toBe(false);
    expect(cluster.node(cutOff).machine.status().queueDepth).toBe(0);
  });

  it('linearizability: a read during an election waits for it; one asked of a leader that dies is asked of the next', () => {
    const cluster = electedCluster();
    const old = cluster.leader();
    const [origin, other] = followers(cluster);
    cluster.request(old, set('r', 'v'));
    cluster.run(50);
    // Asked of the leader, which dies before it answers.
    cluster.lose = (message) => message.kind === 'read_index';
    const asked = cluster.request(origin, get('r'));
    cluster.lose = () => false;
    cluster.down.add(old);
    cluster.run(FAILURE_TIMEOUT_MS + 10);
    // Taken while no live leader is known: held, not asked of the dead one.
    const waiting = cluster.request(other, get('r'));
    expect(waiting.effects.filter((effect) => effect.kind === 'send' && effect.message.kind === 'read_index')).toEqual([]);
    cluster.run(REQUEST_TIMEOUT_MS - 100);
    expect(outcomes(cluster, origin, asked.requestId)).toEqual([expect.objectContaining({ kind: 'read' })]);
    expect(outcomes(cluster, other, waiting.requestId)).toEqual([expect.objectContaining({ kind: 'read' })]);
  });

  it('sequential: a read that finds no live leader is refused at once (served locally or not at all)', () => {
    const cluster = electedCluster('sequential');
    const [origin] = followers(cluster);
    cluster.down.add(cluster.leader());
    cluster.run(FAILURE_TIMEOUT_MS + 10);
    const { requestId } = cluster.request(origin, get('r'));
    expect(outcomes(cluster, origin, requestId)).toEqual([
      expect.objectContaining({ kind: 'reply', reply: refused('no_quorum', 'no leader reachable') }),
    ]);
  });

  it('a node that hears from no majority refuses writes and reads at once, and those it was holding', () => {
    const cluster = electedCluster();
    const [cutOff, other] = followers(cluster);
    cluster.down.add(cluster.leader());
    cluster.down.add(other);
    // Its failure detector still counts the peers up: a write is held for the election.
    cluster.run(FAILURE_TIMEOUT_MS + 10);
    const held = cluster.request(cutOff, set('h', '1'));
    const heldRead = cluster.request(cutOff, get('h'));
    expect(outcomes(cluster, cutOff, held.requestId)).toEqual([]);
    expect(outcomes(cluster, cutOff, heldRead.requestId)).toEqual([]);
    // Then it hears from nobody: what it held, and anything new, is refused (nothing changed).
    cluster.nowMs += 10;
    cluster.step(cutOff, { kind: 'tick', nowMs: cluster.nowMs, peersUp: [] });
    const fresh = cluster.request(cutOff, set('h', '2'));
    const freshRead = cluster.request(cutOff, get('h'));
    for (const requestId of [held.requestId, heldRead.requestId, fresh.requestId, freshRead.requestId]) {
      expect(outcomes(cluster, cutOff, requestId)).toEqual([
        expect.objectContaining({ kind: 'reply', reply: refused('no_quorum', 'no leader reachable') }),
      ]);
    }
  });

  it('lost writes of one connection are sent again in their order', () => {
    const cluster = electedCluster();
    const old = cluster.leader();
    const [origin] = followers(cluster);
    let dropping = true;
    cluster.lose = (message) => dropping && message.kind === 'forward';
    const first = cluster.requests(origin, [set('p', 'first')], 6);
    cluster.deliver();
    const second = cluster.requests(origin, [set('p', 'second')], 6);
    cluster.deliver();
    dropping = false;
    cluster.down.add(old);
    cluster.run(REQUEST_TIMEOUT_MS - 100);
    const [firstApply] = outcomes(cluster, origin, itemAt(first.requestIds, 0));
    const [secondApply] = outcomes(cluster, origin, itemAt(second.requestIds, 0));
    expect(firstApply).toMatchObject({ kind: 'apply' });
    expect(secondApply).toMatchObject({ kind: 'apply' });
    if (firstApply?.kind !== 'apply' || secondApply?.kind !== 'apply') return;
    expect(firstApply.cas).toBeLessThan(secondApply.cas);
    for (const id of IDS) if (id !== old) expect(cluster.node(id).replica.get('p')?.value.toString()).toBe('second');
  });

  it('a write lost with its leader is not sent again once a later write of its connection took effect under the next: its client hears "outcome unknown"', () => {
    const cluster = electedCluster();
    const old = cluster.leader();
    const [origin, other] = followers(cluster);
    let dropNext = true;
    cluster.lose = (message) => {
      if (!dropNext || message.kind !== 'forward') return false;
      dropNext = false;
      return true;
    };
    const first = cluster.requests(origin, [set('o', 'first')], 7);
    cluster.deliver();
    cluster.down.add(old);
    // The origin hears the next leader's pings but none of its appends until the second write went:
    // so it learns that the first is lost (an entry of the new term committed) only after.
    // The other follower leads next (the origin's campaigns go unheard).
    let appendsCut = true;
    cluster.lose = (message, to) =>
      (appendsCut && to === origin && message.kind === 'append') || (to === other && (message.kind === 'pre_vote' || message.kind === 'vote'));
    const knowsNewLeader = (): boolean => ![null, old].includes(cluster.node(origin).machine.status().leader);
    for (let waited = 0; waited < REQUEST_TIMEOUT_MS / 2 && !knowsNewLeader(); waited += 10) cluster.run(10);
    const second = cluster.requests(origin, [set('o', 'second')], 7);
    cluster.deliver();
    appendsCut = false;
    cluster.run(200);
    expect(outcomes(cluster, origin, itemAt(second.requestIds, 0))).toEqual([expect.objectContaining({ kind: 'apply' })]);
    cluster.run(REQUEST_TIMEOUT_MS - 500);
    expect(outcomes(cluster, origin, itemAt(first.requestIds, 0))).toEqual([
      expect.objectContaining({ kind: 'reply', reply: expect.objectContaining({ kind: 'refused', reason: 'outcome_unknown' }) }),
    ]);
    for (const id of IDS) if (id !== old) expect(cluster.node(id).replica.get('o')?.value.toString()).toBe('second');
  });
});
