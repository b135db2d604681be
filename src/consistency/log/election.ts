/**
 * Elections (Raft §5.2 with pre-vote and check-quorum's lease, as etcd-io/raft): the randomized
 * election timer, the votes a (pre-)candidate collects, the answers to pre-vote and vote requests,
 * and which node led each recent term. A pre-vote changes no term, so a node returning from a
 * partition cannot disrupt a working cluster; a vote is refused while this node knows a live
 * leader. The role changes themselves (becomeLeader, becomeFollower, …) are ./roles.ts's.
 *
 * Owns: the timer (deadline and its last random draw), the votes, the leaders of recent terms.
 * Invariants: one leader per term as seen by this node (asserted); a vote at most once per term
 * (votedFor is persisted before the reply leaves). The timer is the only user of `random()`.
 */

import assert from 'node:assert';
import type { PeerId } from '../types.ts';
import type { LogCore } from './core.ts';
import { reaches } from './entry-log.ts';
import type { LogMessage } from './types.ts';

/** The role changes an election's answers lead to. */
export interface ElectionRoles {
  becomeFollower(term: number, leader: PeerId | null): void;
  becomeCandidate(): void;
  becomeLeader(): void;
}

export class Election {
  private deadlineMs = 0;
  /** The random part of the election timeout, drawn at its last reset (a ping reuses it). */
  private jitterMs = 0;
  private votes = new Set<PeerId>();
  /** The peers that refused the last vote this node asked for. */
  private refusals = new Set<PeerId>();
  /** Whether `hurry` moved the election closer since the leader was last seen connected. */
  private hurried = false;
  /** The follower a stopping leader named to campaign first (see Roles.onLeave), while hurried. */
  private successor: PeerId | null = null;
  private readonly leaderOfTerm = new Map<number, PeerId>();

  constructor(
    private readonly core: LogCore,
    private readonly roles: ElectionRoles,
  ) {}

  resetTimer(): void {
    const core = this.core;
    this.jitterMs = Math.floor(core.random() * core.failureTimeoutMs);
    this.deadlineMs = core.nowMs + core.failureTimeoutMs + this.jitterMs;
  }

  /** Pushes the election back as a reset would, with the last draw: a ping draws no randomness. */
  extendTimer(): void {
    this.deadlineMs = Math.max(this.deadlineMs, this.core.nowMs + this.core.failureTimeoutMs + this.jitterMs);
  }

  isDue(): boolean {
    return this.core.nowMs >= this.deadlineMs;
  }

  /** This node did not run for `pausedMs`: the leader's silence over it does not count. */
  excusePause(pausedMs: number): void {
    this.deadlineMs += pausedMs;
  }

  /** Does this node lead, or know a leader it heard from within the failure timeout and is connected to? */
  inLease(): boolean {
    const core = this.core;
    if (core.role === 'leader') return true;
    return core.leader !== null && !core.isGone(core.leader) && core.nowMs - core.lastLeaderContactMs < core.failureTimeoutMs;
  }

  /**
   * Our leader's connections are all closed and a redial failed (see LogCore.cutPeers,
   * PeerView.cut): its process most likely exited, so the election comes within about a tenth of
   * a second instead of a failure timeout, once per loss (until `calm`). The followers go in
   * turn, by node id, a heartbeat interval apart (plus up to half of one drawn at random): two
   * that ran together would split the vote and wait a whole timeout. Each staggers from when it
   * learnt of the loss, and two that learnt it apart can still run together: a candidacy that
   * splits the vote then tries again after the same stagger (`onVoteReply`), counted from the
   * refusals both receive at about the same moment. Safety never rests on when an election starts
   * (Raft); a new leader honours read leases from its election (./lease.ts). `successor`: the
   * follower our leader named as it stopped (Roles.onLeave), which goes first.
   */
  hurry(successor: PeerId | null = null): void {
    if (this.hurried) return;
    this.hurried = true;
    this.successor = successor;
    this.comeSoon();
  }

  /**
   * Brings the election to within this node's turn among the nodes still connected (see `hurry`):
   * the successor a stopping leader named goes first, at the next tick (as Raft's leadership
   * transfer), and every other a turn later.
   */
  private comeSoon(): void {
    const core = this.core;
    if (this.successor === core.self) {
      this.deadlineMs = Math.min(this.deadlineMs, core.nowMs);
      return;
    }
    const gone = (peer: PeerId): boolean => peer === core.leader || core.isGone(peer);
    const live = [core.self, ...core.peers.filter((peer) => !gone(peer) && peer !== this.successor)].sort();
    const turn = live.indexOf(core.self) + (this.successor !== null && !gone(this.successor) ? 1 : 0);
    const delayMs = turn * core.heartbeatIntervalMs + Math.floor(core.random() * (core.heartbeatIntervalMs / 2));
    this.deadlineMs = Math.min(this.deadlineMs, core.nowMs + delayMs);
  }

  /** Our leader is connected again: a later loss of it may hurry the election again. */
  calm(): void {
    this.hurried = false;
    this.successor = null;
  }

  /** The leader of `term` as this node knows it (itself, in a term it leads), if known. */
  leaderOf(term: number): PeerId | undefined {
    return this.leaderOfTerm.get(term);
  }

  noteLeader(term: number, leader: PeerId): void {
    const known = this.leaderOfTerm.get(term);
    assert(known === undefined || known === leader, `two leaders in term ${term}: ${known} and ${leader}`);
    if (known === undefined) {
      this.leaderOfTerm.set(term, leader);
      if (this.leaderOfTerm.size > 64) this.leaderOfTerm.delete(this.leaderOfTerm.keys().next().value as number);
    }
  }

  /** The votes the last (pre-)election collected. */
  voters(): PeerId[] {
    return [...this.votes];
  }

  /**
   * Asks every peer for its vote (`kind` 'vote') or pre-vote in `term`, with this node's own;
   * true if that alone is a majority (a single node).
   */
  canvass(kind: 'pre_vote' | 'vote', term: number): boolean {
    const core = this.core;
    this.votes = new Set([core.self]);
    this.refusals.clear();
    if (kind === 'vote') core.persistHardState();
    this.resetTimer();
    const message: LogMessage = { kind, term, lastIndex: core.log.lastIndex(), lastTerm: core.log.lastTerm() };
    for (const peer of core.peers) core.send(peer, message);
    return this.votes.size >= core.majority;
  }

  onPreVote(from: PeerId, message: Extract<LogMessage, { kind: 'pre_vote' }>): void {
    const core = this.core;
    const granted =
      message.term > core.term && !this.inLease() && this.logReaches(message.lastIndex, message.lastTerm);
    core.send(from, { kind: 'pre_vote_reply', term: granted ? message.term : core.term, granted });
  }

  onPreVoteReply(from: PeerId, message: Extract<LogMessage, { kind: 'pre_vote_reply' }>): void {
    const core = this.core;
    if (!message.granted && message.term > core.term) {
      this.roles.becomeFollower(message.term, null);
      return;
    }
    if (core.role !== 'pre_candidate' || !message.granted || message.term !== core.term + 1) return;
    this.votes.add(from);
    if (this.votes.size >= core.majority) this.roles.becomeCandidate();
  }

  onVote(from: PeerId, message: Extract<LogMessage, { kind: 'vote' }>): void {
    const core = this.core;
    const granted =
      message.term === core.term &&
      (core.votedFor === null || core.votedFor === from) &&
      this.logReaches(message.lastIndex, message.lastTerm);
    if (granted) {
      core.votedFor = from;
      core.persistHardState();
      this.resetTimer();
      core.note('info', 'vote granted', { to: from, peers: core.peers });
    }
    core.send(from, { kind: 'vote_reply', term: core.term, granted });
  }

  /** Whether our own log reaches the vote floor a recovery that gave up set (no floor: yes). */
  ownLogReachesFloor(): boolean {
    return this.logReaches(this.core.log.lastIndex(), this.core.log.lastTerm());
  }

  /** A candidate's log is at least as complete as ours, and as the vote floor a recovery that gave up set. */
  private logReaches(lastIndex: number, lastTerm: number): boolean {
    const floor = this.core.voteFloor;
    const overFloor = floor === null || this.core.nowMs >= floor.untilMs || reaches({ index: lastIndex, term: lastTerm }, floor);
    return overFloor && this.core.log.isUpToDate(lastIndex, lastTerm);
  }

  /**
   * Counts a vote. A candidacy hurried by its leader's exit (`hurry`) that can no longer win (too
   * many peers refused it or are gone) split the vote: it tries again at its turn, not after a
   * whole election timeout.
   */
  onVoteReply(from: PeerId, message: Extract<LogMessage, { kind: 'vote_reply' }>): void {
    const core = this.core;
    if (core.role !== 'candidate' || message.term !== core.term) return;
    if (!message.granted) {
      this.refusals.add(from);
      const open = core.peers.filter((peer) => !this.votes.has(peer) && !this.refusals.has(peer) && !core.isGone(peer));
      if (this.hurried && this.votes.size + open.length < core.majority) this.comeSoon();
      return;
    }
    this.votes.add(from);
    if (this.votes.size >= core.majority) this.roles.becomeLeader();
  }
}
