/**
 * A leader whose connections all closed (its process exited: the kernel closes them at once and
 * refuses redials) is replaced within about a heartbeat interval, not a failure timeout; a leader
 * that is only silent (paused, or cut off with its connections open) still gets the full timeout,
 * and a follower that still hears its leader refuses to elect another (src/consistency/log/
 * election.ts, `hurry`). Three machines with read leases (heartbeat 50 ms, failure timeout 300 ms).
 */

import { describe, expect, it } from 'vitest';
import type { PeerId } from '../src/consistency/types.ts';
import { IDS, Trio } from './support/lease-trio.ts';

/** Runs 10 ms at a time until a node other than `old` leads, at most `limitMs`; how long it took, or null. */
function msUntilNewLeader(trio: Trio, old: PeerId, limitMs: number): number | null {
  for (let ms = 10; ms <= limitMs; ms += 10) {
    trio.run(10);
    const leader = IDS.find((id) => id !== old && !trio.cut.has(id) && trio.machine(id).inspect().role === 'leader');
    if (leader !== undefined) return ms;
  }
  return null;
}

function settled(): { trio: Trio; leader: PeerId; followers: PeerId[] } {
  const trio = new Trio();
  trio.run(1_000);
  const leader = trio.leader();
  return { trio, leader, followers: IDS.filter((id) => id !== leader) };
}

describe('failover after a leader exits', () => {
  it('elects a new leader within about a heartbeat interval once the leader\'s connections are closed', () => {
    const { trio, leader } = settled();
    trio.cut.add(leader);
    trio.peersCutBy = (id) => (id === leader ? [] : [leader]);
    const tookMs = msUntilNewLeader(trio, leader, 1_000);
    expect(tookMs).not.toBeNull();
    expect(tookMs as number).toBeLessThanOrEqual(120); // a heartbeat interval, a tick, a pre-vote and a vote
  });

  it('waits the failure timeout for a leader that is only silent, its connections open', () => {
    const { trio, leader } = settled();
    trio.cut.add(leader);
    expect(msUntilNewLeader(trio, leader, 250)).toBeNull();
    const tookMs = msUntilNewLeader(trio, leader, 1_000);
    expect(tookMs).not.toBeNull();
  });

  it('hurries again after a leader that came back is lost once more in the same term', () => {
    const { trio, leader } = settled();
    const term = trio.machine(leader).inspect().term;
    // First both followers see the leader's connections closed for one tick (redialled at once).
    trio.peersCutBy = (id) => (id === leader ? [] : [leader]);
    trio.run(10);
    trio.peersCutBy = () => [];
    trio.run(200);
    expect(trio.leader()).toBe(leader);
    expect(trio.machine(leader).inspect().term).toBe(term);
    // Then the leader exits: both followers hurry, in the same term as before.
    trio.cut.add(leader);
    trio.peersCutBy = (id) => (id === leader ? [] : [leader]);
    const tookMs = msUntilNewLeader(trio, leader, 1_000);
    expect(tookMs).not.toBeNull();
    expect(tookMs as number).toBeLessThanOrEqual(120);
  });

  it('does not replace a leader the other follower still hears', () => {
    const { trio, leader, followers } = settled();
    const [cutOff, other] = followers as [PeerId, PeerId];
    trio.cutLinks.add(`${leader}>${cutOff}`).add(`${cutOff}>${leader}`);
    trio.peersCutBy = (id) => (id === cutOff ? [leader] : []);
    trio.run(250); // under the failure timeout: only the closed connections could start an election
    expect(trio.machine(leader).inspect().role).toBe('leader');
    expect(trio.machine(other).inspect().leader).toBe(leader);
    expect(trio.machine(other).inspect().term).toBe(trio.machine(leader).inspect().term);
  });
});

describe('failover when both followers hurry at once', () => {
  // Each follower hurries from when it learns its leader's connections closed, staggered by node
  // id; learning at different times can line their elections up, and the vote splits. A split
  // candidacy tries again after the short stagger, not after a whole election timeout.
  it('elects a new leader within two heartbeat intervals of the later one learning of the loss, however far apart', () => {
    for (let offsetMs = 0; offsetMs <= 100; offsetMs += 10) {
      const { trio, leader, followers } = settled();
      const [first, second] = followers as [PeerId, PeerId];
      const cutAtMs = trio.nowMs;
      trio.cut.add(leader);
      // The follower that goes second by id learns of the loss `offsetMs` earlier.
      trio.peersCutBy = (id) => (id === second || (id === first && trio.nowMs >= cutAtMs + offsetMs) ? [leader] : []);
      const tookMs = msUntilNewLeader(trio, leader, 1_000);
      expect(tookMs, `learnt ${offsetMs} ms apart`).not.toBeNull();
      expect(tookMs as number, `learnt ${offsetMs} ms apart`).toBeLessThanOrEqual(offsetMs + 100); // a split vote waited a whole timeout: 480 ms at 60 ms apart
    }
  });
});
