/**
 * The replicated log's state machine (the protocol: ../replicated-log.ts): `step` takes an event,
 * hands it to the part it concerns — a client's request to ./admission.ts, a peer message (once
 * checked) to ./roles.ts, which applies Raft's term rule, dispatches by role (stepLeader,
 * stepFollower, stepCandidate, as etcd-io/raft does) and changes role — then applies what is
 * committed and checks the invariants. Each concern lives in its own part, which owns its state:
 * ./roles.ts, ./admission.ts, ./election.ts, ./replication.ts with ./progress.ts, ./read-index.ts,
 * ./lease.ts, ./requests.ts, ./turn.ts (the turn's buffers and forwards), ./transfer.ts,
 * ./transfer-send.ts, ./compaction.ts, ./replica.ts, ./restart.ts, ./recovery.ts; the state they share is ./core.ts's,
 * which this class extends.
 *
 * Invariants (asserted after every step): applied ≤ committed ≤ last index; applied ≥ the
 * snapshot index; a leader knows it leads; one leader per term (./election.ts). By construction the
 * commit index never goes back (it only grows: learnCommit, advanceCommit, installTransfer).
 */

import assert from 'node:assert';
import type { Op } from '../../store/types.ts';
import type { Effect, Event, LocalRead, MachineStatus, PeerId, RequestId } from '../types.ts';
import type { LogInspection, ReplicatedLog, ReplicatedLogOptions } from '../replicated-log.ts';
import { RequestAdmission } from './admission.ts';
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
import { Roles } from './roles.ts';
import { StateTransfer } from './transfer.ts';
import { TransferSender } from './transfer-send.ts';
import { Turn } from './turn.ts';
import { logMessageProblem } from './validate.ts';
import type { LogMessage } from './types.ts';

/**
 * A message may move this node's term at most this far at once: terms grow by one per election,
 * so a larger jump comes from a broken or hostile peer, never from a real cluster's history.
 */
const TERM_JUMP_MAX = 1_000_000;

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
  /** What each role does, and the role changes. */
  private readonly roles: Roles;
  /** Whether a request is taken, refused or served locally. */
  private readonly admission: RequestAdmission;
  /** Read leases (./lease.ts), or null when off. */
  private readonly leases: ReadLeases | null;

  /** See ReplicatedLogOptions.incarnationFloor. */
  private readonly incarnationFloor: number;

  constructor(options: ReplicatedLogOptions) {
    super(options);
    this.incarnationFloor = options.incarnationFloor ?? 0;
    this.leases = this.readLeases === null ? null : new ReadLeases(this, this.readLeases);
    this.election = new Election(this, {
      becomeFollower: (term, leader) => this.roles.becomeFollower(term, leader),
      becomeCandidate: () => this.roles.becomeCandidate(),
      becomeLeader: () => this.roles.becomeLeader(),
    });
    this.progress = new ProgressTracker({ majority: this.majority, failureTimeoutMs: this.failureTimeoutMs });
    this.requests = new Requests(this, {
      cannotServeRead: () => this.admission.cannotServe(null),
      awaitApply: (requestId, readIndex) => this.reads.awaitApply(requestId, readIndex),
    });
    this.reads = new ReadIndex(this, this.progress, this.requests);
    this.compaction = new Compaction(this, this.progress, () => this.transfer.sender.sendingFloor());
    const sender = new TransferSender(this, this.progress, this.compaction);
    this.transfer = new StateTransfer(this, this.progress, this.compaction, this.requests, sender, () => this.repair.forget(true));
    this.replication = new Replication(
      this,
      this.progress,
      this.reads,
      {
        leaderOf: (term) => this.election.leaderOf(term),
        follow: (term, leader) => {
          if (this.role !== 'follower' || this.leader !== leader) this.roles.becomeFollower(term, leader);
        },
        resetElectionTimer: () => this.election.resetTimer(),
        extendElectionTimer: () => this.election.extendTimer(),
        accepted: (term, matchIndex) => this.recovery.noteMatched(term, matchIndex),
      },
      (to, minIndex) => this.transfer.sender.start(to, minIndex),
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
    // With fsync every record is on disk; without, only if written in this boot; never after the
    // node lost its files. No record at all is not known complete either: a new node, or one that
    // lost its data_dir (it asks its peers first, and goes on at once if the cluster is new).
    const fresh = options.persisted.length === 0;
    const complete = !fresh && !this.recordedRecovering && (this.bootId === null || this.recordedBootId === this.bootId);
    this.recordsComplete = complete && options.rejoin !== true;
    this.recovery = new Recovery(this, { follow: (term, leader) => this.roles.becomeFollower(term, leader) });
    this.roles = new Roles(this, {
      election: this.election,
      progress: this.progress,
      requests: this.requests,
      reads: this.reads,
      replication: this.replication,
      transfer: this.transfer,
      turn: this.turn,
      recovery: this.recovery,
      leases: this.leases,
    });
    this.admission = new RequestAdmission(this, {
      roles: this.roles,
      requests: this.requests,
      reads: this.reads,
      turn: this.turn,
      progress: this.progress,
      recovery: this.recovery,
      leases: this.leases,
    });
    this.start(fresh);
  }

  // ---------------------------------------------------------------- restart

  /**
   * A new incarnation: its replica is kept, replayed onto or rebuilt (see ./replica.ts). Its
   * number goes to disk in a snapshot record, which is always fsynced, before anything of this
   * incarnation leaves: with `wal_sync = write` a plain record could be lost with the power, and
   * the next boot would take the same number again, so a peer would take its requests for the
   * lost incarnation's (a duplicate dropped, or another request's reply).
   */
  private start(fresh: boolean): void {
    this.incarnation = Math.max(this.incarnation + 1, this.incarnationFloor);
    this.persistWhole();
    this.repair.restart();
    this.election.resetTimer();
    this.recovery.start(fresh);
  }

  // ---------------------------------------------------------------- step

  step(event: Event<LogMessage>): Effect<LogMessage>[] {
    assert(event.nowMs >= this.nowMs - 1e9, 'time went far back');
    this.nowMs = Math.max(this.nowMs, event.nowMs);
    switch (event.kind) {
      case 'request':
        this.admission.onRequest(event.requestId, event.session, event.op);
        break;
      case 'message':
        this.onMessage(event.from, event.message);
        break;
      case 'tick':
        if (event.pausedMs !== undefined && event.pausedMs > 0) this.excusePause(event.pausedMs);
        this.memory.peersUp(event.peersUp);
        this.admission.notePeersUp(event.peersUp);
        this.cutPeers.clear();
        for (const peer of event.peersCut ?? []) this.cutPeers.add(peer);
        this.onTick();
        // Fallback: a controller that never flushes still sends within a tick.
        this.flushOutgoing();
        break;
      case 'clock_jump':
        if (this.leases?.forget() === true) this.note('warn', 'read lease dropped: the wall clock ran ahead of the monotonic clock (machine suspended, or clock stepped)', { aheadMs: event.aheadMs });
        break;
      case 'fetched':
        this.transfer.sender.onFetched(event.token, event.entries, event.more === true);
        break;
      case 'applied':
        if (!this.compaction.onSettled(event.token)) this.transfer.onApplied(event.token);
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
      case 'stopping':
        this.roles.leave();
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
      caughtUp: this.caughtUp && this.replicaValid && !this.recovery.active,
      ...(this.leases === null ? {} : { readLease: this.admission.leaseCovers(this.nowMs) ? 'held' : 'none' }),
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
      leaseReads: this.admission.leaseReads,
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

  /** Whether a get may be served without a step, from the replica (see RequestAdmission.readsLocally). */
  readsLocally(nowMs: number, session: number, read?: LocalRead): boolean {
    return this.admission.readsLocally(nowMs, session, read);
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
    this.recovery.heard(from, message);
    this.cutPeers.delete(from); // it is connected after all
    if (message.kind !== 'leave') this.departed.delete(from); // it is back: a new process, most likely
    this.roles.step(from, message);
  }

  // ---------------------------------------------------------------- ticks

  private onTick(): void {
    this.recovery.tick();
    this.requests.expire();
    this.transfer.requestIfDue();
    this.transfer.sender.dropStalled();
    this.roles.handlers().tick();
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
    this.roles.handlers().flush();
  }

  private applyCommitted(): void {
    if (!this.replicaValid) return;
    while (this.appliedIndex < this.commitIndex) {
      this.appliedIndex += 1;
      const entry = this.log.entryAt(this.appliedIndex);
      if (entry.op === null) continue;
      let requestId = this.requests.takeApplied(entry);
      if (requestId !== null && entry.index <= this.transferAheadThrough) {
        // Its key may already hold it or a later change (a transfer read key by key): the apply may be skipped.
        this.requests.answerTransferredWrite(requestId, entry.index);
        requestId = null;
      }
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