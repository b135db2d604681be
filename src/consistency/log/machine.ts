/**
 * The replicated log's state machine (the protocol: ../replicated-log.ts): `step` takes an event,
 * applies Raft's term rule, dispatches by role (stepLeader, stepFollower, stepCandidate, as
 * etcd-io/raft does), changes role (becomeLeader, becomeFollower, …), then applies what is
 * committed and checks the invariants. Each concern lives in its own part, which owns its state:
 * ./election.ts, ./replication.ts with ./progress.ts, ./read-index.ts, ./lease.ts, ./requests.ts,
 * ./turn.ts (the turn's buffers and forwards), ./transfer.ts, ./compaction.ts, ./replica.ts, ./restart.ts,
 * ./recovery.ts;
 * the state they share is ./core.ts's, which this class extends.
 *
 * Invariants (asserted after every step): applied ≤ committed ≤ last index; applied ≥ the
 * snapshot index; a leader knows it leads; one leader per term (./election.ts). By construction the
 * commit index never goes back (it only grows: learnCommit, advanceCommit, installTransfer).
 */

import assert from 'node:assert';
import { refusalText, refused, type Refusal } from '../../protocol/refusals.ts';
import { isWrite, opKeys, type Op } from '../../store/types.ts';
import type { Effect, Event, LocalRead, MachineStatus, PeerId, RequestId } from '../types.ts';
import type { LogInspection, ReplicatedLog, ReplicatedLogOptions } from '../replicated-log.ts';
import { Compaction } from './compaction.ts';
import { LogCore } from './core.ts';
import { Election } from './election.ts';
import { ReadLeases } from './lease.ts';
import { ProgressTracker } from './progress.ts';
import { ReadIndex } from './read-index.ts';
import { Replication } from './replication.ts';
import { ReplicaRepair } from './replica.ts';
import { Recovery } from './recovery.ts';
import { Requests } from './requests.ts';
import { restoreDurableState } from './restart.ts';
import { StateTransfer } from './transfer.ts';
import { Turn } from './turn.ts';
import { logMessageProblem } from './validate.ts';
import type { LogMessage } from './types.ts';

/**
 * A message may move this node's term at most this far at once: terms grow by one per election,
 * so a larger jump comes from a broken or hostile peer, never from a real cluster's history.
 */
const TERM_JUMP_MAX = 1_000_000;
/** How long, in failure timeouts, a node just started waits before it judges its peers unreachable. */
const START_GRACE_FAILURE_TIMEOUTS = 2;

/** What a role does with each input; a (pre-)candidate takes requests as a follower does. */
interface RoleHandlers {
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

export class ReplicatedLogMachine extends LogCore implements ReplicatedLog {
  // The concerns, each owning its state (see their headers).
  private readonly election: Election;
  private readonly requests: Requests;
  private readonly progress: ProgressTracker;
  private readonly reads: ReadIndex;
  private readonly replication: Replication;
  private readonly compaction: Compaction;
  private readonly transfer: StateTransfer;
  private readonly turn: Turn;
  private readonly repair: ReplicaRepair;
  private readonly recovery: Recovery;
  /** Read leases (./lease.ts), or null when off. */
  private readonly leases: ReadLeases | null;
  /** Linearizable reads this process started under a lease (for tests and the simulator). */
  private leaseReads = 0;
  /**
   * Whether the failure detector, at the last tick, heard from enough peers to make a majority
   * with this node: then a write waits for an election; else it is refused at once (a node cut
   * off should not keep its clients waiting for a leader it cannot have). Peers are not judged
   * before this node has run for two failure timeouts: a node just started has heard from nobody
   * yet, and its peer connections take a while to come up on a loaded machine (0.4 s seen).
   */
  private reachesMajority = true;
  private readonly startedAtMs: number;

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
    tick: () => this.tickElection(),
    flush: () => this.turn.flushAsFollower(this.knowsLiveLeader()),
    takeWrite: (requestId, session, op) => {
      this.requests.add(requestId, session, op, 'write');
      this.turn.forward(requestId, op);
    },
    startLinearizableRead: (requestId) => this.turn.askReadIndex(requestId),
  };
  private readonly asCandidate: RoleHandlers = { ...this.asFollower, step: (from, message) => this.stepCandidate(from, message) };

  constructor(options: ReplicatedLogOptions) {
    super(options);
    this.startedAtMs = options.nowMs;
    this.leases = this.readLeases === null ? null : new ReadLeases(this, this.readLeases);
    this.election = new Election(this, {
      becomeFollower: (term, leader) => this.becomeFollower(term, leader),
      becomeCandidate: () => this.becomeCandidate(),
      becomeLeader: () => this.becomeLeader(),
    });
    this.progress = new ProgressTracker({ majority: this.majority, failureTimeoutMs: this.failureTimeoutMs });
    this.requests = new Requests(this, {
      cannotServeRead: () => this.cannotServe(null),
      awaitApply: (requestId, readIndex) => this.reads.awaitApply(requestId, readIndex),
    });
    this.reads = new ReadIndex(this, this.progress, this.requests);
    this.compaction = new Compaction(this, this.progress);
    this.transfer = new StateTransfer(this, this.progress, this.compaction, this.requests);
    this.replication = new Replication(
      this,
      this.progress,
      this.reads,
      {
        leaderOf: (term) => this.election.leaderOf(term),
        follow: (term, leader) => {
          if (this.role !== 'follower' || this.leader !== leader) this.becomeFollower(term, leader);
        },
        resetElectionTimer: () => this.election.resetTimer(),
        extendElectionTimer: () => this.election.extendTimer(),
        accepted: (term, matchIndex) => this.recovery.noteMatched(term, matchIndex),
      },
      (to, minIndex) => this.transfer.start(to, minIndex),
      this.leases,
    );
    const parts = {
      progress: this.progress,
      compacted: this.compaction.compactedForwards,
      requests: this.requests,
      reads: this.reads,
      replication: this.replication,
    };
    this.turn = new Turn(this, parts);
    this.repair = new ReplicaRepair(this, this.requests, this.compaction, this.transfer);
    restoreDurableState(this, options.persisted);
    // With fsync every record is on disk; without, only if written in this boot (or there are none
    // yet); never after the node lost its files.
    const complete = this.bootId === null || this.recordedBootId === this.bootId || options.newNode === true;
    this.recordsComplete = complete && options.rejoin !== true;
    this.recovery = new Recovery(this, { follow: (term, leader) => this.becomeFollower(term, leader) });
    this.start();
  }

  // ---------------------------------------------------------------- restart

  /**
   * A new incarnation: its replica is kept, replayed onto or rebuilt (see ./replica.ts). Its
   * number goes to disk in a snapshot record, which is always fsynced, before anything of this
   * incarnation leaves: with `wal_sync = write` a plain record could be lost with the power, and
   * the next boot would take the same number again, so a peer would take its requests for the
   * lost incarnation's (a duplicate dropped, or another request's reply).
   */
  private start(): void {
    this.incarnation += 1;
    this.persistWhole();
    this.repair.restart();
    this.election.resetTimer();
    this.recovery.start();
  }

  // ---------------------------------------------------------------- step

  step(event: Event<LogMessage>): Effect<LogMessage>[] {
    assert(event.nowMs >= this.nowMs - 1e9, 'time went far back');
    this.nowMs = Math.max(this.nowMs, event.nowMs);
    switch (event.kind) {
      case 'request':
        this.onRequest(event.requestId, event.session, event.op);
        break;
      case 'message':
        this.onMessage(event.from, event.message);
        break;
      case 'tick':
        if (event.pausedMs !== undefined && event.pausedMs > 0) this.excusePause(event.pausedMs);
        this.memory.peersUp(event.peersUp);
        this.notePeersUp(event.peersUp);
        this.onTick();
        // Fallback: a controller that never flushes still sends within a tick.
        this.flushOutgoing();
        break;
      case 'clock_jump':
        if (this.leases?.forget() === true) this.note('warn', 'read lease dropped: the wall clock ran ahead of the monotonic clock (machine suspended, or clock stepped)', { aheadMs: event.aheadMs });
        break;
      case 'fetched':
        if (!this.compaction.onFetched(event.token)) this.transfer.onFetched(event.token, event.entries);
        break;
      case 'applied':
        this.transfer.onApplied(event.token);
        break;
      case 'backend_reset':
        this.repair.onBackendReset(event);
        break;
      case 'refused':
        // Never sent here: a refused write makes this replica suspect, and the reset replays.
        assert.fail('a replicated log is told of refused writes by a backend_reset');
        break;
      case 'flush':
        this.flushOutgoing();
        break;
      case 'memory_polled':
      case 'memory_report':
        this.memory.step(event);
        break;
      default: {
        const never: never = event;
        assert.fail(`unknown event ${JSON.stringify(never)}`);
      }
    }
    this.afterStep();
    this.checkInvariants();
    return this.takeEffects();
  }

  status(): MachineStatus {
    return {
      mode: this.mode,
      // Shown as its own role: a recovering node takes no part yet (./recovery.ts).
      role: this.recovery.active ? 'recovering' : this.role,
      term: this.term,
      leader: this.leader,
      committed: String(this.commitIndex),
      applied: String(this.appliedIndex),
      queueDepth: this.requests.size,
      invalidPeerMessages: this.droppedCount,
      ...(this.leases === null ? {} : { readLease: this.leaseCovers(this.nowMs) ? 'held' : 'none' }),
    };
  }

  inspect(): LogInspection {
    const log = this.log;
    return {
      role: this.role,
      term: this.term,
      leader: this.leader,
      commitIndex: this.commitIndex,
      appliedIndex: this.appliedIndex,
      snapshotIndex: log.snapshotIndex,
      lastIndex: log.lastIndex(),
      replicaValid: this.replicaValid,
      caughtUp: this.caughtUp,
      lastLeaderContactMs: this.lastLeaderContactMs,
      leaseReads: this.leaseReads,
      recovering: this.recovery.active,
      entryAt: (index) => (index > log.snapshotIndex && index <= log.lastIndex() ? log.entryAt(index) : null),
    };
  }

  private checkInvariants(): void {
    assert(this.appliedIndex <= this.commitIndex, 'applied ≤ committed');
    assert(this.commitIndex <= this.log.lastIndex(), 'committed ≤ last index');
    assert(this.appliedIndex >= this.log.snapshotIndex, 'applied ≥ snapshot index');
    assert(this.role !== 'leader' || this.leader === this.self, 'a leader knows it leads');
  }

  // ---------------------------------------------------------------- client requests

  private onRequest(requestId: RequestId, session: number, op: Op): void {
    const refusal = this.refusalFor(op);
    if (refusal !== null) {
      this.noteRefusal(refusal);
      this.requests.reply(requestId, refusal);
      return;
    }
    if (isWrite(op)) {
      this.roleHandlers().takeWrite(requestId, session, op);
    } else if (this.requests.hasUnsettledWrite(session)) {
      // It must see that write: it is served only once the write is applied here (see
      // Requests.settle). A linearizable one asks for its read index meanwhile.
      this.requests.add(requestId, session, op, 'held');
      if (this.mode === 'linearizability') this.startLinearizableRead(requestId, op);
    } else if (this.mode === 'sequential') {
      this.out.push({ kind: 'read', requestId, op, nowMs: this.nowMs });
    } else {
      this.requests.add(requestId, session, op, 'read');
      this.startLinearizableRead(requestId, op);
    }
  }

  /**
   * A linearizable read: under a lease, it waits only for the entries this node holds for its
   * keys (every write completed before it arrived is among them, see ./lease.ts); otherwise the
   * role gets it a read index.
   */
  private startLinearizableRead(requestId: RequestId, op: Op): void {
    const keys = opKeys(op);
    if (keys !== null && this.leaseCovers(this.nowMs)) {
      this.leaseReads += 1;
      this.reads.awaitApply(requestId, this.log.lastIndexTouching(keys));
    } else {
      this.roleHandlers().startLinearizableRead(requestId);
    }
  }

  /** Whether this node holds a read lease (as the leader, or granted by it) covering `atMs`. */
  private leaseCovers(atMs: number): boolean {
    const leases = this.leases;
    if (leases === null) return false;
    if (this.role !== 'leader') return leases.holdsAsFollower(atMs);
    return leases.holdsAsLeader(atMs, this.progress.confirmedSentMs(), this.reads.readIndexNow() <= this.commitIndex);
  }

  /**
   * Sequential reads are local: a get is stepped into a `read` effect alone whenever nothing
   * would refuse it (see `refusalFor`) and its connection has no write in flight here. So is a
   * linearizable one under a read lease, when every apply this node issued reached the replica
   * and none of its keys has an entry here not applied yet; otherwise it needs a step.
   */
  readsLocally(nowMs: number, session: number, read?: LocalRead): boolean {
    if (this.mode === 'linearizability' && this.leases === null) return false;
    const atMs = Math.max(this.nowMs, nowMs);
    if (this.requests.hasUnsettledWrite(session) || this.refusalFor(null, atMs) !== null) return false;
    if (this.mode === 'sequential') return true;
    if (read === undefined || !read.appliesDone || !this.replicaValid || !this.leaseCovers(atMs)) return false;
    return this.log.lastIndexTouching(read.keys) <= this.appliedIndex;
  }

  /** Why this node cannot take `op` (null: a read) at `atMs`, or null if it can. */
  private refusalFor(op: Op | null, atMs = this.nowMs): Refusal | null {
    if (this.requests.size >= this.tuning.queueDepthMax) return refused('busy', 'request queue full');
    return this.cannotServe(op, atMs);
  }

  /**
   * Why this node cannot serve `op` (null: a read) now, a request already taken included. A write
   * or a linearizable read is not refused for want of a leader while a majority is reachable: it
   * waits for one (Turn.flushAsFollower), up to its deadline. Nor is a write refused while this
   * node recovers its log or rebuilds its replica: it goes to the leader once recovery names one
   * (it is only a client's request: recovery fences votes and acknowledgements), commits as any
   * other, and is applied here (and answered) in log order once the rebuild reaches it, or
   * answered by the state transfer that passes it.
   */
  private cannotServe(op: Op | null, atMs = this.nowMs): Refusal | null {
    const write = op !== null && isWrite(op);
    if (this.recovery.active && !write) return refused('not_caught_up', 'recovering its log from the peers');
    // (A sequential read is served locally or not at all: it does not wait.)
    const waitsForLeader = op !== null && this.reachesMajority && (write || this.mode === 'linearizability');
    if (!waitsForLeader && !this.knowsLiveLeader(atMs)) return refused('no_quorum', 'no leader reachable');
    if (!this.caughtUp && !write) return refused('not_caught_up', 'replica is rebuilding (read refused)');
    return null;
  }

  /** A leader with a recent quorum, or a follower that heard from its leader recently (as of `atMs`). */
  private knowsLiveLeader(atMs = this.nowMs): boolean {
    if (this.role === 'leader') return this.progress.hasQuorum(atMs);
    return (
      this.role === 'follower' &&
      this.leader !== null &&
      atMs - this.lastLeaderContactMs < this.failureTimeoutMs
    );
  }

  /**
   * This node was not running for `pausedMs` (its tick came late): nobody's silence over that time
   * counts — not the leader's, not a follower's acks, not a request's wait — so a stall of the whole
   * machine starts no election and times out no request. Safe: a read index is confirmed by a round
   * of acks sent after it, and read leases (./lease.ts) are not excused: they ran out meanwhile.
   */
  private excusePause(pausedMs: number): void {
    const forward = (atMs: number): number => Math.max(atMs, Math.min(this.nowMs, atMs + pausedMs));
    this.election.excusePause(pausedMs);
    this.lastLeaderContactMs = forward(this.lastLeaderContactMs);
    this.progress.excusePause(forward, pausedMs);
    this.requests.excusePause(pausedMs);
  }

  /** The failure detector's peers up: with no majority reachable, what waits for a leader is refused. */
  private notePeersUp(peersUp: readonly PeerId[]): void {
    if (this.nowMs - this.startedAtMs < START_GRACE_FAILURE_TIMEOUTS * this.failureTimeoutMs) return;
    const reachable = peersUp.filter((peer) => this.peers.includes(peer)).length + 1;
    this.reachesMajority = reachable >= this.majority;
    if (this.reachesMajority) return;
    const refusal = refused('no_quorum', 'no leader reachable');
    this.requests.refuseHeldWrites(refusal);
    this.turn.refuseWaitingReads(refusal);
  }

  // ---------------------------------------------------------------- messages

  private onMessage(from: PeerId, raw: unknown): void {
    if (!this.peers.includes(from)) return this.dropMessage(from, 'not from a peer of this cluster');
    const problem = logMessageProblem(raw, this.messageLimits);
    if (problem !== null) return this.dropMessage(from, problem);
    const message = raw as LogMessage;
    if (message.kind !== 'pre_vote' && message.term > this.term + TERM_JUMP_MAX) {
      return this.dropMessage(from, `term ${message.term} too far ahead of ${this.term}`);
    }
    if (!this.recovery.admits(message)) return;
    if (!this.acceptTerm(from, message)) return;
    this.roleHandlers().step(from, message);
  }

  /** The current role's handlers: the one place that dispatches by role. */
  private roleHandlers(): RoleHandlers {
    switch (this.role) {
      case 'leader':
        return this.asLeader;
      case 'follower':
        return this.asFollower;
      case 'pre_candidate':
      case 'candidate':
        return this.asCandidate;
      default: {
        const never: never = this.role;
        assert.fail(`unknown role ${JSON.stringify(never)}`);
      }
    }
  }

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
      case 'append_reply':
      case 'pong':
      case 'vote_reply':
        return;
      default:
        return this.stepAnyRole(from, message);
    }
  }

  /** A (pre-)candidate counts votes (a pre-candidate its pre-votes, see Election) and refuses forwards and read-index requests. */
  private stepCandidate(from: PeerId, message: LogMessage): void {
    switch (message.kind) {
      case 'vote_reply':
        return this.election.onVoteReply(from, message);
      case 'forward':
        return this.turn.refuseForward(from, message);
      case 'read_index':
        return this.reads.refuseReadIndex(from, message);
      case 'append_reply':
      case 'pong':
        return;
      default:
        return this.stepAnyRole(from, message);
    }
  }

  /** What every role answers the same way (each handler minds the role where it matters). */
  private stepAnyRole(from: PeerId, message: Exclude<LogMessage, { kind: 'append_reply' | 'pong' | 'forward' | 'read_index' | 'vote_reply' }>): void {
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
      case 'read_index_reply':
        return this.reads.onReadIndexReply(message);
      case 'transfer_request':
        return this.transfer.onTransferRequest(from, message);
      case 'transfer_chunk':
        return this.transfer.onTransferChunk(from, message);
      case 'recover':
        return this.recovery.onRecover(from, message, () => this.progress.peerRestarted(from));
      case 'recover_reply':
        return this.recovery.onRecoverReply(from, message);
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
    if (message.term <= this.term) return true;
    if (message.kind === 'vote' && this.election.inLease()) return false;
    const leader = message.kind === 'append' || message.kind === 'ping' ? from : null;
    this.becomeFollower(message.term, leader);
    return true;
  }

  // ---------------------------------------------------------------- ticks and role changes

  private onTick(): void {
    this.requests.expire();
    this.transfer.requestIfDue();
    this.roleHandlers().tick();
  }

  /** A follower or (pre-)candidate that heard from no leader for an election timeout starts one. */
  private tickElection(): void {
    if (this.election.isDue() && !this.recovery.active) this.becomePreCandidate();
  }

  private tickAsLeader(): void {
    if (!this.progress.hasQuorum(this.nowMs)) {
      this.becomeFollower(this.term, null);
      this.election.resetTimer();
      return;
    }
    this.replication.heartbeatIfDue();
    // A peer's honoured lease may have run out: what waited only for its ack commits now.
    if (this.leases !== null) this.replication.advanceCommit();
    this.transfer.startOverIfEveryReplicaLost();
  }

  private becomePreCandidate(): void {
    this.leaveLeadership(refused('no_quorum', 'leader lost'));
    this.abandonInFlight();
    this.note('info', 'election started: no leader heard from', { term: this.term + 1, peers: this.peers });
    this.role = 'pre_candidate';
    this.leader = null;
    if (this.election.canvass('pre_vote', this.term + 1)) this.becomeCandidate();
  }

  private becomeCandidate(): void {
    this.role = 'candidate';
    this.term += 1;
    this.votedFor = this.self;
    this.leader = null;
    if (this.election.canvass('vote', this.term)) this.becomeLeader();
  }

  private becomeLeader(): void {
    this.election.noteLeader(this.term, this.self);
    this.note('info', 'became leader', { leader: this.self, peers: this.peers, votes: this.election.voters() });
    this.role = 'leader';
    this.leader = this.self;
    // Read leases: any peer may hold one an earlier leader granted; honour each for a full guard.
    const honorUntilMs = this.leases === null ? Number.NEGATIVE_INFINITY : this.nowMs + this.leases.guardMs;
    this.progress.reset(this.peers, this.log.lastIndex(), this.nowMs, honorUntilMs);
    this.transfer.leaderElected();
    this.replication.leaderElected();
    const termStartIndex = this.turn.proposeNoOp();
    this.reads.startTerm(termStartIndex);
    if (this.catchUpIndex === null) this.catchUpIndex = termStartIndex;
    this.askReadsAgain();
  }

  private becomeFollower(term: number, leader: PeerId | null): void {
    this.leaveLeadership(refused('no_quorum', 'leadership lost'));
    // Epochs are the term's leader's own (one leader per term; a restarted node leads only in a
    // later term), so what was seen is forgotten only with the term, not when the leader is lost.
    if (term > this.term) this.leaderReplicaEpoch = 0;
    if (term > this.term) {
      this.term = term;
      this.votedFor = null;
      this.persistHardState();
    }
    this.role = 'follower';
    if (leader !== this.leader) this.askReadsAgain();
    const changed = leader !== null && leader !== this.leader;
    this.leader = leader;
    if (leader !== null) this.election.noteLeader(term, leader);
    if (changed) this.note('info', 'became follower', { leader, peers: this.peers });
  }

  /** A leader stepping down: the reads it was confirming wait for the next leader; writes may still commit. */
  private leaveLeadership(refusal: Refusal): void {
    if (this.role !== 'leader') return;
    this.note('warn', 'stepped down', { why: refusalText(refusal), peers: this.peers, acked: this.progress.ackedPeers(this.nowMs) });
    // Its own reads wait for the next leader; its followers' are refused (they ask again on their own).
    for (const requestId of this.reads.stepDown()) if (this.requests.isPending(requestId)) this.turn.askReadIndex(requestId);
    this.progress.clear();
    this.leader = null;
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

  // ---------------------------------------------------------------- end of step

  /** After every event: apply what is committed, serve reads that may go, compact. */
  private afterStep(): void {
    this.recovery.afterStep();
    this.applyCommitted();
    this.requests.answerLostWrites((lost) => this.resendLostWrites(lost), this.role !== 'leader');
    this.reads.serveReads();
    this.compaction.compactIfDue();
  }

  /** Our writes the last leader lost (no copy can commit now): they go to the current one. */
  private resendLostWrites(lost: readonly { requestId: RequestId; op: Op }[]): void {
    this.note('info', 'writes sent again: the leader they went to lost them', { count: lost.length, leader: this.leader, peers: this.peers });
    this.turn.resend(lost);
  }

  /**
   * On `flush` (the end of a turn) or a tick: append what the turn proposed and send it, one
   * message per peer: one append per follower, one forward and one read-index request to the
   * leader, one heartbeat round confirming every read of the turn.
   */
  private flushOutgoing(): void {
    this.roleHandlers().flush();
  }

  private applyCommitted(): void {
    if (!this.replicaValid) return;
    while (this.appliedIndex < this.commitIndex) {
      this.appliedIndex += 1;
      const entry = this.log.entryAt(this.appliedIndex);
      if (entry.op === null) continue;
      const requestId = this.requests.takeApplied(entry);
      if (this.replicaSkipsApplied) this.compaction.touch(entry.op);
      this.out.push({ kind: 'apply', op: entry.op, cas: BigInt(entry.index), nowMs: entry.nowMs, requestId, token: null });
      if (requestId !== null) this.requests.applied(requestId);
    }
    if (!this.caughtUp && this.catchUpIndex !== null && this.appliedIndex >= this.catchUpIndex) {
      this.caughtUp = true;
      // A recovering node (a new boot) may catch up through a state transfer before its recovery
      // ends: it serves only once recovered, and says so then.
      const serving = this.recovery.active ? 'serving once recovered' : 'serving';
      this.note('info', `replay done: caught up, ${serving}`, { appliedIndex: this.appliedIndex, leader: this.leader, peers: this.peers });
    }
  }

}
