/**
 * The roles (as etcd-io/raft's raft.go): what a leader, a follower and a (pre-)candidate each do
 * with a peer message, a tick, a turn's flush, a client's write and a read index, and the role
 * changes themselves (becomePreCandidate, becomeCandidate, becomeLeader, becomeFollower). The
 * machine hands every input to `handlers()`, the one place that dispatches by role; Election,
 * Replication and Recovery ask for role changes through the hooks the machine gives them.
 *
 * Owns: the handler tables. Role, leader, term and vote are the core's (./core.ts).
 * Invariants: a message of a higher term makes this node a follower of that term, its vote
 * cleared and persisted, before the message is acted on; a leader knows it leads.
 */

import assert from 'node:assert';
import { refusalText, refused, type Refusal } from '../../protocol/refusals.ts';
import type { Op } from '../../store/types.ts';
import type { PeerId, RequestId } from '../types.ts';
import type { LogCore } from './core.ts';
import type { Election } from './election.ts';
import type { ReadLeases } from './lease.ts';
import type { ProgressTracker } from './progress.ts';
import type { ReadIndex } from './read-index.ts';
import type { Recovery } from './recovery.ts';
import type { Replication } from './replication.ts';
import type { Requests } from './requests.ts';
import type { StateTransfer } from './transfer.ts';
import type { Turn } from './turn.ts';
import type { LogMessage } from './types.ts';

/** What a role does with each input; a (pre-)candidate takes requests as a follower does. */
export interface RoleHandlers {
  /** A peer message, after the term rule (stepLeader, stepFollower, stepCandidate). */
  step(from: PeerId, message: LogMessage): void;
  tick(): void;
  /** Appends and sends (leader), or forwards and asks (others), the turn's work. */
  flush(): void;
  /** A client's write: a leader proposes it (unless the store refuses it); any other role forwards it. */
  takeWrite(requestId: RequestId, session: number, op: Op): void;
  /** A read index: the leader confirms its own with a round; any other role asks the leader's. */
  startLinearizableRead(requestId: RequestId): void;
}

/** The parts the roles step and change. */
export interface RoleParts {
  election: Election;
  progress: ProgressTracker;
  requests: Requests;
  reads: ReadIndex;
  replication: Replication;
  transfer: StateTransfer;
  turn: Turn;
  recovery: Recovery;
  /** Read leases, or null when off. */
  leases: ReadLeases | null;
}

export class Roles {
  private readonly election: Election;
  private readonly progress: ProgressTracker;
  private readonly requests: Requests;
  private readonly reads: ReadIndex;
  private readonly replication: Replication;
  private readonly transfer: StateTransfer;
  private readonly turn: Turn;
  private readonly recovery: Recovery;
  private readonly leases: ReadLeases | null;

  /** What each role does with each input (etcd-io/raft's r.step and r.tick, switched with the role). */
  private readonly asLeader: RoleHandlers = {
    step: (from, message) => this.stepLeader(from, message),
    tick: () => this.tickAsLeader(),
    flush: () => this.turn.flushAsLeader(),
    takeWrite: (requestId, session, op) => {
      const refusal = this.turn.storeRefusal(op);
      if (refusal !== null) return this.requests.reply(requestId, refusal);
      this.requests.add(requestId, session, op, 'write');
      this.turn.propose(requestId, op);
    },
    startLinearizableRead: (requestId) => this.reads.awaitRoundForLocal(requestId),
  };
  private readonly asFollower: RoleHandlers = {
    step: (from, message) => this.stepFollower(from, message),
    tick: () => {
      this.replication.sendOwedAck();
      this.tickElection();
      const leader = this.core.leader;
      if (leader !== null && this.knowsLiveLeader()) this.turn.probeForwards(leader);
    },
    flush: () => {
      if (this.turn.flushAsFollower(this.knowsLiveLeader())) this.replication.sendOwedAck();
    },
    takeWrite: (requestId, session, op) => {
      this.requests.add(requestId, session, op, 'write');
      this.turn.forward(requestId, op);
    },
    startLinearizableRead: (requestId) => this.turn.askReadIndex(requestId),
  };
  private readonly asCandidate: RoleHandlers = { ...this.asFollower, step: (from, message) => this.stepCandidate(from, message) };

  constructor(
    private readonly core: LogCore,
    parts: RoleParts,
  ) {
    this.election = parts.election;
    this.progress = parts.progress;
    this.requests = parts.requests;
    this.reads = parts.reads;
    this.replication = parts.replication;
    this.transfer = parts.transfer;
    this.turn = parts.turn;
    this.recovery = parts.recovery;
    this.leases = parts.leases;
  }

  /** The current role's handlers: the one place that dispatches by role. */
  handlers(): RoleHandlers {
    const role = this.core.role;
    switch (role) {
      case 'leader':
        return this.asLeader;
      case 'follower':
        return this.asFollower;
      case 'pre_candidate':
      case 'candidate':
        return this.asCandidate;
      default: {
        const never: never = role;
        assert.fail(`unknown role ${JSON.stringify(never)}`);
      }
    }
  }

  /**
   * A peer message, checked and admitted by recovery: the term rule, then the role's step. A
   * `leave` changes no term (a candidate that stops must not unseat a leader, as its vote request
   * could not), so it is taken first.
   */
  step(from: PeerId, message: LogMessage): void {
    if (message.kind === 'leave') return this.onLeave(from, message);
    if (!this.acceptTerm(from, message)) return;
    this.handlers().step(from, message);
  }

  /** A leader with a recent quorum, or a follower that heard from its leader recently (as of `atMs`). */
  knowsLiveLeader(atMs = this.core.nowMs): boolean {
    const core = this.core;
    if (core.role === 'leader') return this.progress.hasQuorum(atMs);
    return (
      core.role === 'follower' &&
      core.leader !== null &&
      atMs - core.lastLeaderContactMs < core.failureTimeoutMs
    );
  }

  // ---------------------------------------------------------------- messages

  /** A leader takes its followers' acks and pongs, puts forwarded writes in its log and answers read-index requests. */
  private stepLeader(from: PeerId, message: LogMessage): void {
    switch (message.kind) {
      case 'append_reply':
        return this.replication.onAppendReply(from, message);
      case 'pong':
        return this.replication.onPong(from, message);
      case 'forward':
        return this.turn.onForward(from, message);
      case 'read_index':
        return this.reads.onReadIndex(from, message);
      case 'vote_reply':
      case 'held':
        return;
      default:
        return this.stepAnyRole(from, message);
    }
  }

  /** A follower refuses forwards and read-index requests (it leads nothing) and ignores what only a leader or candidate uses. */
  private stepFollower(from: PeerId, message: LogMessage): void {
    switch (message.kind) {
      case 'forward':
        return this.turn.refuseForward(from, message);
      case 'read_index':
        return this.reads.refuseReadIndex(from, message);
      case 'held':
        return this.replication.holds?.onHeld(from, message);
      case 'append_reply':
      case 'pong':
      case 'vote_reply':
        return;
      default:
        return this.stepAnyRole(from, message);
    }
  }

  /** A (pre-)candidate counts votes (a pre-candidate its pre-votes, see Election); otherwise it answers as a follower. */
  private stepCandidate(from: PeerId, message: LogMessage): void {
    if (message.kind === 'vote_reply') return this.election.onVoteReply(from, message);
    return this.stepFollower(from, message);
  }

  /** What every role answers the same way (each handler minds the role where it matters). */
  private stepAnyRole(from: PeerId, message: Exclude<LogMessage, { kind: 'append_reply' | 'held' | 'pong' | 'forward' | 'read_index' | 'vote_reply' }>): void {
    switch (message.kind) {
      case 'pre_vote':
        return this.election.onPreVote(from, message);
      case 'pre_vote_reply':
        return this.election.onPreVoteReply(from, message);
      case 'vote':
        return this.election.onVote(from, message);
      case 'append':
        return this.replication.onAppend(from, message);
      case 'ping':
        return this.replication.onPing(from, message);
      case 'forward_refused':
        return this.requests.onForwardRefused(message);
      case 'forward_gap':
        return this.turn.onForwardGap(from, message);
      case 'read_index_reply':
        return this.reads.onReadIndexReply(message);
      case 'transfer_request':
        return this.transfer.onTransferRequest(from, message);
      case 'transfer_chunk':
        return this.transfer.onTransferChunk(from, message);
      case 'transfer_ack':
        return this.transfer.sender.onTransferAck(from, message);
      case 'recover':
        return this.recovery.onRecover(from, message, () => this.progress.peerRestarted(from));
      case 'recover_reply':
        return this.recovery.onRecoverReply(from, message);
      case 'leave':
        return; // taken before the term rule (see `step`)
      default: {
        const never: never = message;
        assert.fail(`unknown message ${JSON.stringify(never)}`);
      }
    }
  }

  /**
   * Raft's term rule: a higher term makes this node a follower of that term; pre-votes change no
   * term; a vote request is ignored while this node knows a live leader (check-quorum's lease),
   * so a node returning from a partition cannot disrupt a working cluster. Returns false to drop.
   */
  private acceptTerm(from: PeerId, message: LogMessage): boolean {
    if (message.kind === 'pre_vote' || message.kind === 'pre_vote_reply') return true;
    if (message.term <= this.core.term) return true;
    if (message.kind === 'vote' && this.election.inLease()) return false;
    const leader = message.kind === 'append' || message.kind === 'ping' ? from : null;
    this.becomeFollower(message.term, leader);
    return true;
  }

  /**
   * This controller is stopping: its clients are gone and it serves nothing more. It tells its
   * peers (`leave`), so that none waits out a read lease it no longer holds or uses.
   */
  leave(): void {
    const core = this.core;
    // A leader names its successor: the follower holding the most of its log campaigns first.
    const next = core.role === 'leader' ? this.progress.mostCaughtUp(core.nowMs) : undefined;
    core.note('info', 'leaving: this controller is stopping', { role: core.role, next: next ?? null, peers: core.peers });
    for (const peer of core.peers) core.sendBeforeDurable(peer, { kind: 'leave', term: core.term, ...(next === undefined ? {} : { next }) });
  }

  /**
   * A peer is stopping (its `leave`, of any term): it serves no read, holds no read lease
   * and sends nothing more (until a new process of it speaks, see LogMachine.onMessage). A leader
   * stops waiting for its lease at once where no other leader can have granted its process one
   * (see `leaseSurrendered`); a follower whose leader left elects another without waiting, the
   * successor it named at once, the other in its turn (Election.hurry).
   */
  private onLeave(from: PeerId, message: Extract<LogMessage, { kind: 'leave' }>): void {
    const core = this.core;
    const led = this.election.leaderOf(message.term) === from;
    core.departed.set(from, { term: message.term, led });
    core.note('info', 'a peer is stopping', { peer: from, led, peers: core.peers });
    if (core.role === 'leader') {
      if (this.leaseSurrendered(from)) this.replication.forgetLease(from);
    } else if (core.leader === from && message.term === core.term) {
      this.election.hurry(message.next ?? null);
    }
  }

  /**
   * Whether a leader need not honour `peer`'s read lease, the peer having left: in our term (it
   * followed us, or stood against us, and nobody else grants in our term), or, having led the term
   * just before ours, nobody else could grant its process a lease in its own term or ours before
   * us. A restarted process of it remembers a term at least that one (it refuses older leaders'
   * grants) and holds a lease only from a leader that grants it again. Any older departure:
   * honoured as any peer.
   */
  private leaseSurrendered(peer: PeerId): boolean {
    const departed = this.core.departed.get(peer);
    if (departed === undefined || this.leases === null) return false;
    return departed.term === this.core.term || (departed.led && departed.term === this.core.term - 1);
  }

  // ---------------------------------------------------------------- ticks

  /** A follower or (pre-)candidate that heard from no leader for an election timeout starts one. */
  private tickElection(): void {
    const core = this.core;
    if (core.role === 'follower' && core.leader !== null) {
      if (core.isGone(core.leader)) this.election.hurry();
      else this.election.calm();
    }
    if (!this.election.isDue() || this.recovery.active) return;
    // After a recovery that gave up, only a log reaching the most complete one reported may lead.
    if (this.election.ownLogReachesFloor()) this.becomePreCandidate();
    else this.election.resetTimer();
  }

  private tickAsLeader(): void {
    const core = this.core;
    if (!this.progress.hasQuorum(core.nowMs)) {
      this.becomeFollower(core.term, null);
      this.election.resetTimer();
      return;
    }
    this.replication.heartbeatIfDue();
    // A peer's honoured lease may have run out: what waited only for its ack commits now.
    if (this.leases !== null) this.replication.advanceCommit();
    this.transfer.startOverIfEveryReplicaLost();
  }

  // ---------------------------------------------------------------- role changes

  private becomePreCandidate(): void {
    const core = this.core;
    this.leaveLeadership(refused('no_quorum', 'leader lost'));
    this.abandonInFlight();
    core.note('info', 'election started: no leader heard from', { term: core.term + 1, peers: core.peers });
    core.role = 'pre_candidate';
    core.leader = null;
    if (this.election.canvass('pre_vote', core.term + 1)) this.becomeCandidate();
  }

  becomeCandidate(): void {
    const core = this.core;
    core.role = 'candidate';
    core.enterTerm(core.term + 1, core.self);
    core.leader = null;
    if (this.election.canvass('vote', core.term)) this.becomeLeader();
  }

  becomeLeader(): void {
    const core = this.core;
    this.election.noteLeader(core.term, core.self);
    core.note('info', 'became leader', { leader: core.self, peers: core.peers, votes: this.election.voters() });
    core.role = 'leader';
    core.leader = core.self;
    // Read leases: any peer may hold one an earlier leader granted; honour each for a full guard.
    const honorUntilMs = this.leases === null ? Number.NEGATIVE_INFINITY : core.nowMs + this.leases.guardMs;
    this.progress.reset(core.peers, core.log.lastIndex(), core.nowMs, honorUntilMs);
    // …but the leader of the last term, if it left (see leaseSurrendered), holds none.
    for (const peer of core.departed.keys()) if (this.leaseSurrendered(peer)) this.replication.forgetLease(peer);
    this.transfer.leaderElected();
    this.replication.leaderElected();
    const termStartIndex = this.turn.proposeNoOp();
    this.reads.startTerm(termStartIndex);
    if (core.catchUpIndex === null) core.catchUpIndex = termStartIndex;
    this.askReadsAgain();
  }

  becomeFollower(term: number, leader: PeerId | null): void {
    const core = this.core;
    this.leaveLeadership(refused('no_quorum', 'leadership lost'));
    // What was seen of a leader is forgotten with its term (see enterTerm), not when it is lost.
    if (term > core.term) {
      core.enterTerm(term, null);
      core.persistHardState();
    }
    core.role = 'follower';
    if (leader !== core.leader) this.askReadsAgain();
    const changed = leader !== null && leader !== core.leader;
    core.leader = leader;
    if (leader !== null) this.election.noteLeader(term, leader);
    if (changed) core.note('info', 'became follower', { leader, peers: core.peers });
  }

  /** A leader stepping down: the reads it was confirming wait for the next leader; writes may still commit. */
  private leaveLeadership(refusal: Refusal): void {
    const core = this.core;
    if (core.role !== 'leader') return;
    core.note('warn', 'stepped down', { why: refusalText(refusal), peers: core.peers, acked: this.progress.ackedPeers(core.nowMs) });
    // Its own reads wait for the next leader; its followers' are refused (they ask again on their own).
    for (const requestId of this.reads.stepDown()) if (this.requests.isPending(requestId)) this.turn.askReadIndex(requestId);
    this.progress.clear();
    core.leader = null;
    this.turn.leadershipLost();
  }

  /**
   * The leader went silent for a whole election timeout: nothing sent to it will be answered
   * soon. Its reads are asked again of the next leader. Writes wait: once the next leader
   * commits, those it did not take are sent to it (Requests.answerLostWrites).
   */
  private abandonInFlight(): void {
    this.askReadsAgain();
  }

  /** Reads asked of a leader that is gone will never be answered: they wait to ask the next one. */
  private askReadsAgain(): void {
    for (const requestId of this.reads.takeAsked()) if (this.requests.isPending(requestId)) this.turn.askReadIndex(requestId);
  }
}
