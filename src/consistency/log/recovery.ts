/**
 * Recovery of a node whose records may be incomplete (`wal_sync = write` after the machine lost
 * power, or a lost disk), as in Viewstamped Replication Revisited §4.3: until it has learnt from a
 * majority of its peers the current term and its leader, and holds that leader's log up to where
 * it stood then, it neither votes nor campaigns nor acknowledges, so a vote or an entry it forgot
 * can never count twice. Safe while one machine at a time loses its unsynced records; see
 * docs/failures.md#the-write-ahead-file. When more lose them together nobody can be elected while
 * they recover, so they give up and continue, electing the most complete log any node reported.
 * Records are known complete in the boot that wrote them (`bootId`, persisted with the hard state
 * once recovered).
 *
 * Owns: the round (nonce, replies), the target (leader, term, index). The machine gates messages
 * through `admits` and asks `active` before serving, voting or campaigning.
 */

import type { PeerId } from '../types.ts';
import type { LogCore } from './core.ts';
import { reaches, type LogEnd } from './entry-log.ts';
import type { LogMessage } from './types.ts';

/**
 * How long a recovering node waits, every peer answering but too few of them sound, before it
 * continues with what the nodes hold: long enough for a leader that was stepping down or being
 * elected to show.
 */
const GIVE_UP_FAILURE_TIMEOUTS = 2;

/** How long a node that gave up votes only for the most complete log reported (a few elections' time). */
const VOTE_FLOOR_FAILURE_TIMEOUTS = 20;

type RecoverReply = Extract<LogMessage, { kind: 'recover_reply' }>;

/** The leader whose log a recovering node copies, and how far. */
interface Target {
  leader: PeerId;
  term: number;
  index: number;
}

export class Recovery {
  private nonce = 0;
  private readonly replies = new Map<PeerId, RecoverReply>();
  private target: Target | null = null;
  private nextAskMs = Number.NEGATIVE_INFINITY;
  /** The greatest index this node acknowledged to the target's leader in its term. */
  private matched = 0;
  /** When the target's leader was last heard from leading (see `admits`), or the target chosen. */
  private heardMs = Number.NEGATIVE_INFINITY;
  /**
   * It gave up recovering (too few peers sound, see `decide`): until it knows a leader, it answers
   * as if still recovering, so the others give up as well rather than wait on it.
   */
  private unsettled = false;
  /** Since when every peer has answered with too few of them sound and none leading. */
  private stuckSinceMs: number | null = null;
  /** Since when a majority with this node has answered holding nothing (see `newCluster`). */
  private emptySinceMs: number | null = null;

  constructor(
    private readonly core: LogCore,
    private readonly roles: { follow(term: number, leader: PeerId | null): void },
  ) {}

  /** Recovering: the node's records may miss what it once acknowledged (the core's `recordsComplete`). */
  get active(): boolean {
    return !this.core.recordsComplete;
  }

  /** Starts recovery at boot when the records are not known complete. */
  start(fresh: boolean): void {
    if (!this.active) return;
    if (fresh) {
      this.core.note('info', 'no records (a new node, or one that lost its data_dir): recovering from the peers unless the cluster is new', {});
    } else {
      this.core.note('warn', 'records may be incomplete (written without fsync before this boot): recovering from the peers', {
        term: this.core.term, lastIndex: this.core.log.lastIndex(),
      });
    }
    if (this.core.peers.length === 0) this.finish('a single node: nothing to recover from');
    else this.ask();
  }

  /**
   * Whether a peer message may be acted on while recovering: before a target is known, only the
   * recovery exchange (a stale term could make it acknowledge a deposed leader); then everything
   * but votes (its log may lack entries it once acknowledged).
   */
  admits(message: LogMessage): boolean {
    if (!this.active || message.kind === 'recover' || message.kind === 'recover_reply') return true;
    if (this.target === null) return false;
    return message.kind !== 'vote' && message.kind !== 'pre_vote';
  }

  /** An admitted message: what only a leader sends, from the target's leader in its term, shows it still leads (see `tick`). */
  heard(from: PeerId, message: LogMessage): void {
    const target = this.target;
    if (!this.active || target === null || from !== target.leader || message.term !== target.term) return;
    if (message.kind === 'append' || message.kind === 'ping' || message.kind === 'transfer_chunk') this.heardMs = this.core.nowMs;
  }

  /** A peer asks (any state): tell it our term, whether we lead, how far our log goes. */
  onRecover(from: PeerId, message: Extract<LogMessage, { kind: 'recover' }>, onPeerRestarted: () => void): void {
    const core = this.core;
    if (!this.active && core.role === 'leader') onPeerRestarted();
    const recovering = this.active || this.unsettled;
    core.send(from, {
      kind: 'recover_reply', term: core.term, nonce: message.nonce, recovering,
      leads: !recovering && core.role === 'leader', lastIndex: core.log.lastIndex(), lastTerm: core.log.lastTerm(),
    });
  }

  onRecoverReply(from: PeerId, message: RecoverReply): void {
    if (!this.active || message.nonce !== this.nonce) return;
    this.replies.set(from, message);
    if (this.target === null) this.decide();
  }

  /** An append of `term` was accepted up to `matchIndex`. */
  noteMatched(term: number, matchIndex: number): void {
    if (this.active && this.target !== null && term === this.target.term) this.matched = Math.max(this.matched, matchIndex);
  }

  /** After each step: done once the log holds the target leader's up to its index. */
  afterStep(): void {
    if (this.unsettled && this.core.leader !== null) {
      this.unsettled = false;
      this.core.voteFloor = null;
    }
    if (!this.active) return;
    const core = this.core;
    const target = this.target;
    if (target !== null && core.term === target.term && core.leader === target.leader) {
      if (this.matched >= target.index) this.finish('holds the leader\'s log');
      return;
    }
    if (target !== null) this.target = null; // the term moved on: ask again (at the next tick)
  }

  /**
   * At each tick: ask the peers again when due. Only a tick does: any step moves the clock, and a
   * dropped peer message must cause nothing.
   */
  tick(): void {
    if (!this.active) return;
    // A target leader silent for a failure timeout may have stepped down: a lone sound one whose
    // followers both lost their records can never be elected again while they wait for it.
    if (this.target !== null && this.core.nowMs - this.heardMs >= this.core.failureTimeoutMs) this.target = null;
    if (this.target === null && this.core.nowMs >= this.nextAskMs) this.ask();
  }

  private ask(): void {
    this.nonce += 1;
    this.replies.clear();
    this.target = null;
    this.matched = 0;
    this.nextAskMs = this.core.nowMs + this.core.heartbeatIntervalMs * 2;
    for (const peer of this.core.peers) this.core.send(peer, { kind: 'recover', term: this.core.term, nonce: this.nonce });
  }

  /**
   * A majority of peers that are not recovering, and among them the leader of the greatest term:
   * follow it until our log holds its log as it stood. With fewer sound peers but every peer
   * answering, every node that could lead is among them (a recovering node leads nothing, and no
   * one can be elected without a sound majority), so a sound leader of the greatest term is still
   * the leader. Otherwise more than one machine lost its records and no leader can be elected
   * while they recover: continue with what the nodes hold, and say so (at once when every peer is
   * recovering; after `GIVE_UP_FAILURE_TIMEOUTS` when some are sound, in case a leader shows).
   * Continuing, it votes and campaigns only with a log that reaches the most complete one any node
   * reported (a sound node's, usually), so the two that lost records cannot elect one of theirs over it.
   */
  private decide(): void {
    const core = this.core;
    const replies = [...this.replies];
    const everyPeer = replies.length === core.peers.length;
    if (this.newCluster(replies.map(([, reply]) => reply), everyPeer)) return this.finish('no node holds a log yet: a new cluster');
    const sound = replies.filter(([, reply]) => !reply.recovering);
    if (sound.length >= core.majority || (everyPeer && sound.length > 0)) {
      const term = Math.max(core.term, ...sound.map(([, reply]) => reply.term));
      const leaderEntry = sound.find(([, reply]) => reply.leads && reply.term === term);
      if (leaderEntry !== undefined) return this.copyFrom(leaderEntry[0], term, leaderEntry[1].lastIndex);
    }
    if (!everyPeer) return; // a round under way, or a peer down: wait
    if (sound.length >= core.majority) {
      this.stuckSinceMs = null;
      return;
    }
    this.stuckSinceMs ??= core.nowMs;
    const waitMs = sound.length === 0 ? 0 : core.failureTimeoutMs * GIVE_UP_FAILURE_TIMEOUTS;
    if (core.nowMs - this.stuckSinceMs >= waitMs) this.giveUp(replies.map(([, reply]) => reply), sound.length === 0);
  }

  /**
   * Continues as a node whose records are complete, in a term above every one reported, answering
   * as recovering until it knows a leader (so the others give up too), and voting until then only
   * for a log that reaches the most complete one reported (`LogCore.voteFloor`), for at most
   * `VOTE_FLOOR_FAILURE_TIMEOUTS` in case the node holding that log never comes back.
   */
  private giveUp(replies: readonly RecoverReply[], everyPeerRecovering: boolean): void {
    const core = this.core;
    const term = Math.max(core.term, ...replies.map((reply) => reply.term));
    if (term > core.term) this.roles.follow(term, null);
    this.unsettled = true;
    const best = replies.reduce((most: LogEnd, reply) => {
      const end = { index: reply.lastIndex, term: reply.lastTerm };
      return reaches(end, most) ? end : most;
    }, { index: core.log.lastIndex(), term: core.log.lastTerm() });
    core.voteFloor = { ...best, untilMs: core.nowMs + core.failureTimeoutMs * VOTE_FLOOR_FAILURE_TIMEOUTS };
    this.finish(everyPeerRecovering
      ? 'every peer is recovering too: continuing with what the nodes hold'
      : 'too few peers are sound to elect a leader, and none leads: continuing with what the nodes hold', 'warn');
  }

  /**
   * Whether the cluster is new: this node holds nothing, no peer that answered holds anything or
   * saw a term, and either every peer answered so, or a majority with this node did for
   * GIVE_UP_FAILURE_TIMEOUTS (a node down when a new cluster starts; and time for an answer from
   * one that ran to arrive). A cluster that ran had a majority holding its log and its terms, so
   * with one node at a time losing its records, some peer of a majority says so.
   */
  private newCluster(replies: readonly RecoverReply[], everyPeer: boolean): boolean {
    const empty = replies.every((reply) => reply.term === 0 && reply.lastIndex === 0);
    if (!this.holdsNothing() || !empty || replies.length + 1 < this.core.majority) {
      this.emptySinceMs = null;
      return false;
    }
    if (everyPeer) return true;
    this.emptySinceMs ??= this.core.nowMs;
    return this.core.nowMs - this.emptySinceMs >= this.core.failureTimeoutMs * GIVE_UP_FAILURE_TIMEOUTS;
  }

  /** Nothing at all: no term, no entry, no snapshot (a new node, or one that lost its files). */
  private holdsNothing(): boolean {
    return this.core.term === 0 && this.core.log.lastIndex() === 0;
  }

  private copyFrom(leader: PeerId, term: number, index: number): void {
    const core = this.core;
    this.roles.follow(term, leader);
    if (core.votedFor === null) {
      // We may have voted in this term before we lost the record of it: vote for no one else.
      core.votedFor = leader;
      core.persistHardState();
    }
    this.target = { leader, term, index };
    this.heardMs = core.nowMs;
    core.note('info', 'recovering: copying the leader\'s log', { leader, term, index });
  }

  private finish(why: string, level: 'info' | 'warn' = 'info'): void {
    this.target = null;
    this.replies.clear();
    this.core.recordsComplete = true;
    this.core.persistHardState();
    this.core.note(level, `recovered: ${why}`, { term: this.core.term, lastIndex: this.core.log.lastIndex() });
  }
}
