/**
 * A controller that stops (SIGTERM) says `leave` to its peers (src/consistency/log/roles.ts's
 * onLeave): its leader stops waiting for its read lease at once, and a leader of the next term
 * elected after a leader that left needs not wait out that one's lease. Where another leader
 * could have granted the stopped node's next process a lease, its lease is honoured as before.
 * Three machines with read leases over a hand-driven network (./support/lease-trio.ts).
 */

import { describe, expect, it } from 'vitest';
import type { PeerId } from '../src/consistency/types.ts';
import { leaseGuardMs } from '../src/consistency/log/lease.ts';
import type { Op } from '../src/store/types.ts';
import { IDS, LEASES, Trio } from './support/lease-trio.ts';

const set = (key: string, value: string): Op => ({ kind: 'store', verb: 'set', key, flags: 0, expiresAtMs: 0, value: Buffer.from(value), casUnique: 0n });
const GUARD_MS = leaseGuardMs(LEASES);

/** Steps `id` through a stop: its `leave` reaches every peer, then it is gone. */
function stop(trio: Trio, id: PeerId): void {
  const before = trio.queue.length;
  trio.step(id, { kind: 'stopping' });
  const sent = trio.queue.splice(before);
  expect(sent.map((message) => message.message.kind)).toEqual(IDS.filter((peer) => peer !== id).map(() => 'leave'));
  for (const { from, to, message } of sent) trio.deliver(from, to, message);
  trio.cut.add(id);
}

/** Runs until a node other than `old` leads; returns how long that took, ms. */
function awaitNewLeader(trio: Trio, old: PeerId, withinMs: number): number {
  const startMs = trio.nowMs;
  while (trio.nowMs - startMs < withinMs) {
    trio.run(10);
    if (IDS.some((id) => id !== old && !trio.cut.has(id) && trio.machine(id).inspect().role === 'leader')) return trio.nowMs - startMs;
  }
  throw new Error(`no new leader within ${withinMs} ms`);
}

/** Three machines with read leases and a leader elected. */
function elected(): { trio: Trio; leader: PeerId } {
  const trio = new Trio();
  trio.run(1_000);
  return { trio, leader: trio.leader() };
}

/** Whether a write taken by the leader now is applied there within `withinMs`. */
function writeAppliedWithin(trio: Trio, withinMs: number): boolean {
  const requestId = trio.request(trio.leader(), set('k', 'v'));
  trio.run(withinMs);
  return trio.replies.get(requestId)?.kind === 'apply';
}

describe('a controller that stops says it leaves', () => {
  it('a follower that left holds back no write: its leader commits without it at once', () => {
    const { trio, leader } = elected();
    stop(trio, IDS.find((id) => id !== leader) as PeerId);
    // A holder cut off without a word holds the write a guard (see read-leases.test.ts).
    expect(writeAppliedWithin(trio, 20)).toBe(true);
  });

  it("a leader that left: its followers elect another at once, which commits without waiting out the old leader's lease", () => {
    const { trio, leader: old } = elected();
    stop(trio, old);
    // No failure timeout (300 ms) waited: the followers go in turn, a heartbeat (50 ms) apart.
    expect(awaitNewLeader(trio, old, 1_000)).toBeLessThan(150);
    expect(writeAppliedWithin(trio, 30)).toBe(true);
  });

  it('a leader that leaves names the follower holding the most of its log, which campaigns first and leads', () => {
    const { trio, leader: old } = elected();
    // The follower first in node-id order (which would go first) misses the last writes.
    const [first, second] = IDS.filter((id) => id !== old) as [PeerId, PeerId];
    trio.cutLinks.add(`${old}>${first}`);
    trio.request(old, set('k', 'v'));
    trio.run(20);
    trio.cutLinks.clear();
    const before = trio.queue.length;
    trio.step(old, { kind: 'stopping' });
    const leaves = trio.queue.splice(before);
    expect(leaves.map((sent) => sent.message)).toEqual([first, second].map(() => ({ kind: 'leave', term: trio.machine(old).inspect().term, next: second })));
    for (const { from, to, message } of leaves) trio.step(to, { kind: 'message', from, message });
    trio.cut.add(old);
    expect(awaitNewLeader(trio, old, 1_000)).toBeLessThanOrEqual(30);
    expect(trio.leader()).toBe(second);
  });

  it("a leader's leave that arrives after the next leader's election ends the wait for its lease there", () => {
    const { trio, leader: old } = elected();
    const before = trio.queue.length;
    trio.step(old, { kind: 'stopping' });
    const leaves = trio.queue.splice(before);
    trio.cut.add(old);
    awaitNewLeader(trio, old, 2_000);
    const leader = trio.leader();
    const requestId = trio.request(leader, set('k', 'v'));
    trio.run(30);
    expect(trio.replies.has(requestId)).toBe(false);
    const leave = leaves.find((sent) => sent.to === leader);
    expect(leave?.message.kind).toBe('leave');
    if (leave !== undefined) trio.step(leader, { kind: 'message', from: old, message: leave.message });
    trio.run(20);
    expect(trio.replies.get(requestId)?.kind).toBe('apply');
  });

  it('a leave changes no term: a candidate that stops does not unseat the leader', () => {
    const { trio, leader } = elected();
    const { term } = trio.machine(leader).inspect();
    const candidate = IDS.find((id) => id !== leader) as PeerId;
    trio.step(leader, { kind: 'message', from: candidate, message: { kind: 'leave', term: term + 3 } });
    expect(trio.machine(leader).inspect()).toMatchObject({ role: 'leader', term });
  });

  it('a follower that left in an earlier term is honoured by the next leader for a full guard', () => {
    const { trio, leader: old } = elected();
    const leaving = IDS.find((id) => id !== old) as PeerId;
    stop(trio, leaving);
    // The leader of that term might have granted a restarted process of it a lease: the next
    // leader (after the old one loses its quorum and comes back) must honour it as any peer.
    const other = IDS.find((id) => id !== old && id !== leaving) as PeerId;
    trio.cutLinks.add(`${old}>${other}`).add(`${other}>${old}`);
    trio.run(400);
    trio.cutLinks.clear();
    awaitNewLeader(trio, '' as PeerId, 2_000);
    const leader = trio.leader();
    const electedAt = trio.machine(leader).inspect().commitIndex;
    trio.run(GUARD_MS - 40);
    expect(trio.machine(leader).inspect().commitIndex).toBe(electedAt);
    trio.run(80);
    expect(trio.machine(leader).inspect().commitIndex).toBeGreaterThan(electedAt);
  });
});
