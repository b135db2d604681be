/**
 * The replicated log's state machine (see ../replicated-log.ts for the protocol): step, the
 * role's handling of each event, and the invariants checked after every step.
 */

import assert from 'node:assert';
import type { Reply } from '../../protocol/types.ts';
import { refusalText, refused, type Refusal } from '../../protocol/refusals.ts';
import { isWrite, type Op } from '../../store/types.ts';
import type { Effect, Event, MachineStatus, PeerId, RequestId } from '../types.ts';
import type { LogInspection, ReplicatedLog, ReplicatedLogOptions } from '../replicated-log.ts';
import { Compaction } from './compaction.ts';
import { LogCore, proposalKey } from './core.ts';
import { ProgressTracker } from './progress.ts';
import { ReadIndex } from './read-index.ts';
import { Replication } from './replication.ts';
import { SessionOrder } from './session-order.ts';
import { StateTransfer } from './transfer.ts';
import { logMessageProblem } from './validate.ts';
import { restoredRecord } from './restore.ts';
import {
  batchCount,
  opBytes,
  type ForwardedRequest,
  type LogEntry,
  type LogMessage,
} from './types.ts';

interface Pending {
  op: Op;
  deadlineMs: number;
  /** A linearizable read's index, once known, while the read is held behind its session's write. */
  readIndex?: number;
}

/** The answer to a write whose apply failed on this replica, when it is not applied again here. */
const APPLY_FAILED = refused('backend', 'write outcome unknown (the replica failed while applying it)');
/** The answer to a read that a state transfer passed a later write of its connection (see installTransfer). */
const TRANSFERRED_PAST_READ = refused('not_caught_up', 'replica replaced by a state transfer; retry');
const TRANSFERRED_PAST_WRITE = refused('result_unknown', 'replica replaced by a state transfer');
/** What a forward to a node that does not lead (or lacks a quorum) is told. */
const NOT_THE_LEADER = { reason: 'no_quorum', detail: 'not the leader' } as const;
/** Bound of the refused-forward memory (a duplicate arriving after this many refusals is unlikely). */
const refusedForwardsMax = 4096;
/**
 * A message may move this node's term at most this far at once: terms grow by one per election,
 * so a larger jump comes from a broken or hostile peer, never from a real cluster's history.
 */
const TERM_JUMP_MAX = 1_000_000;

export class ReplicatedLogMachine extends LogCore implements ReplicatedLog {
  // Elections and the requests' bookkeeping.
  private electionDeadlineMs = 0;
  /** The random part of the election timeout, drawn at its last reset (a ping reuses it). */
  private electionJitterMs = 0;
  private votes = new Set<PeerId>();
  private readonly refuseStore: (op: Op, version: bigint) => Refusal | null;
  /** Forwards refused by the store (→ why), so a duplicate is refused too (never logged). */
  private readonly refusedForwards = new Map<string, Refusal>();

  // Requests. The three buffers fill during a turn and are sent (or appended) on `flush`.
  private readonly pending = new Map<RequestId, Pending>();
  /**
   * Each client connection's writes not yet applied here and its reads not yet served, in
   * arrival order, so that a pipelining client's reads see exactly its earlier writes.
   */
  private readonly sessions = new SessionOrder();
  private proposalsThisStep: LogEntry[] = [];
  private forwardsThisStep: ForwardedRequest[] = [];
  private readsThisStep: RequestId[] = [];
  /**
   * Our writes sent toward a log (forwarded, or proposed as leader) → the term they were sent in,
   * in send order (so terms never decrease along the map). Once an entry of a later term is
   * committed, a write of an earlier term that is not in the log by then never will be.
   */
  private readonly writeTerms = new Map<RequestId, number>();

  // Leader state.
  private readonly progress: ProgressTracker;
  private readonly reads: ReadIndex;
  private heartbeatDueMs = 0;
  private readonly replication: Replication;

  // State transfer.
  private readonly compaction: Compaction;
  private readonly transfer: StateTransfer;

  // Replica repair and compaction.

  private readonly leaderOfTerm = new Map<number, PeerId>();

  constructor(options: ReplicatedLogOptions) {
    super(options);
    this.refuseStore = options.refuseStore ?? (() => null);
    this.progress = new ProgressTracker({ majority: this.majority, failureTimeoutMs: this.failureTimeoutMs });
    this.reads = new ReadIndex(this, this.progress, {
      isPending: (requestId) => this.pending.has(requestId),
      refuse: (requestId, refusal) => this.refuseRequest(requestId, refusal),
      serve: (requestId) => this.serveNow(requestId),
      holdBehindWrite: (requestId, readIndex) => {
        const pending = this.pending.get(requestId);
        if (pending === undefined || !this.sessions.isHeld(requestId)) return false;
        pending.readIndex = readIndex;
        return true;
      },
    });
    this.compaction = new Compaction(this, this.progress);
    this.transfer = new StateTransfer(this, this.progress, this.compaction, {
      refuseReadsBeforeUnsettledWrites: () => {
        for (const read of this.sessions.takeReadsBeforeUnsettledWrites()) this.refuseRequest(read, TRANSFERRED_PAST_READ);
      },
      answerTransferredWrite: (requestId, index) => this.answerTransferredWrite(requestId, index),
    });
    this.replication = new Replication(
      this,
      this.progress,
      this.reads,
      {
        leaderOf: (term) => (this.role === 'leader' ? this.self : this.leaderOfTerm.get(term)),
        follow: (term, leader) => {
          if (this.role !== 'follower' || this.leader !== leader) this.becomeFollower(term, leader);
        },
        resetElectionTimer: () => this.resetElectionTimer(),
        extendElectionTimer: () => this.extendElectionTimer(),
      },
      (to, minIndex) => this.transfer.start(to, minIndex),
    );
    this.restore(options.persisted);
    this.start();
  }

  // ---------------------------------------------------------------- restart

  /**
   * Rebuilds the durable state from the records, skipping what it cannot use (see
   * ./log/restore.ts): a record that fails its schema, entries that do not continue the log.
   */
  private restore(records: readonly unknown[]): void {
    const limits = { nodes: this.messageLimits.nodes, op: this.messageLimits.op };
    let skipped = 0;
    let opsDropped = 0;
    let firstProblem: string | null = null;
    for (const raw of records) {
      const restored = restoredRecord(raw, limits);
      if ('problem' in restored) {
        skipped += 1;
        firstProblem ??= restored.problem;
        continue;
      }
      opsDropped += restored.opsDropped;
      const record = restored.record;
      switch (record.kind) {
        case 'hard':
          this.term = record.term;
          this.votedFor = record.votedFor;
          this.incarnation = record.incarnation;
          this.leaderReplicaEpoch = record.leaderReplicaEpoch ?? 0;
          break;
        case 'entries':
          for (const entry of record.entries) {
            if (!this.restoreEntry(entry)) skipped += 1;
          }
          break;
        case 'truncate':
          if (record.fromIndex <= this.log.snapshotIndex) skipped += 1;
          else if (record.fromIndex <= this.log.lastIndex()) this.log.truncateFrom(record.fromIndex);
          break;
        case 'replica':
          this.replicaTrusted = record.trusted;
          this.replicaEmptiedPersisted = record.emptied === true;
          break;
        case 'snapshot':
          this.replicaTrusted = record.replicaTrusted === true;
          this.replicaEmptiedPersisted = record.replicaEmptied === true;
          this.term = record.term;
          this.votedFor = record.votedFor;
          this.incarnation = record.incarnation;
          this.leaderReplicaEpoch = record.leaderReplicaEpoch ?? 0;
          this.log.resetTo(record.snapshotIndex, record.snapshotTerm);
          for (const entry of record.entries) {
            if (!this.restoreEntry(entry)) skipped += 1;
          }
          break;
        default: {
          const never: never = record;
          assert.fail(`unknown persisted record ${JSON.stringify(never)}`);
        }
      }
    }
    if (skipped > 0 || opsDropped > 0) {
      this.note('warn', 'persisted records held what this node cannot use', { skipped, firstProblem, opsMadeNoOps: opsDropped });
    }
    for (const entry of this.log.entries) this.rememberProposal(entry);
    this.commitIndex = this.log.snapshotIndex;
    this.appliedIndex = this.log.snapshotIndex;
  }

  /** Puts a persisted entry in the log where it continues it (maybe cutting a suffix); false: skipped. */
  private restoreEntry(entry: LogEntry): boolean {
    const log = this.log;
    if (entry.index <= log.snapshotIndex || entry.index > log.lastIndex() + 1) return false;
    const termBefore = log.termAt(entry.index - 1);
    if (termBefore === null || entry.term < termBefore) return false;
    if (entry.index <= log.lastIndex()) log.truncateFrom(entry.index);
    log.append([entry]);
    return true;
  }

  /**
   * A new incarnation. Its replica may hold applies its log would repeat: if replays are
   * idempotent and the replica is trusted, replay from the snapshot onto it; else rebuild it.
   */
  private start(): void {
    this.incarnation += 1;
    this.persistHardState();
    if (this.replicaSkipsApplied && (this.replicaTrusted || this.log.snapshotIndex === 0)) {
      this.caughtUp = false;
      this.catchUpIndex = null;
      this.replayUntilIndex = this.log.lastIndex();
      this.note('info', 'replaying the log onto the kept replica', { fromIndex: this.log.snapshotIndex + 1, lastIndex: this.log.lastIndex() });
    } else {
      this.rebuildReplica(this.replicaEmptiedPersisted);
    }
    this.resetElectionTimer();
  }

  /**
   * Whether the replica, after writes to it failed with an unknown outcome, can be repaired by
   * replaying the log from the snapshot: replays are idempotent, and the replica held every change
   * up to the snapshot (trusted, not being rebuilt) when they failed.
   */
  private canReplayOntoReplica(): boolean {
    if (!this.replicaSkipsApplied || !this.replicaValid || this.replicaEmptied) return false;
    return this.log.snapshotIndex === 0 || (this.replicaTrusted && this.transfer.putsPending.size === 0);
  }

  /**
   * Replays the log from the snapshot onto the kept replica, skipping what it holds, as a
   * restarted node does: each failed write took effect whole or not at all, so this repairs it
   * without a peer (no transfer: when every replica's writes timed out at once, as when every
   * memcached stalled, there is none to ask). Not serving until the replay is done.
   */
  private replayOntoReplica(awaiting: readonly RequestId[]): void {
    // Our writes whose apply failed are committed: the replay applies them again and answers.
    const waiting = new Set(awaiting);
    for (const entry of this.log.entries) {
      if (entry.op === null || entry.requestId === null || entry.origin !== this.self || entry.incarnation !== this.incarnation) continue;
      if (entry.index > this.commitIndex || !waiting.delete(entry.requestId)) continue;
      const deadlineMs = this.nowMs + this.tuning.requestTimeoutFailureTimeouts * this.failureTimeoutMs;
      this.pending.set(entry.requestId, { op: entry.op, deadlineMs });
    }
    for (const requestId of waiting) this.reply(requestId, APPLY_FAILED);
    this.compaction.forget();
    this.appliedIndex = this.log.snapshotIndex;
    this.replayUntilIndex = this.log.lastIndex();
    this.caughtUp = false;
    this.catchUpIndex = this.role === 'leader' ? this.commitIndex : null;
    this.note('warn', 'writes to the replica failed (outcome unknown): replaying the log onto it', { fromIndex: this.log.snapshotIndex + 1, commitIndex: this.commitIndex });
  }

  /**
   * Forget what the replica holds: replay the log from 1, or ask for a state transfer. `emptied`:
   * the backend restarted, so it holds nothing (rather than being merely untrusted).
   */
  private rebuildReplica(emptied = false): void {
    this.replicaEmptied ||= emptied;
    this.compaction.forget();
    this.transfer.putsPending.clear();
    this.replayUntilIndex = 0;
    if (this.log.snapshotIndex > 0) this.setReplicaTrusted(false);
    this.caughtUp = false;
    this.catchUpIndex = this.role === 'leader' ? this.commitIndex : null;
    if (this.log.snapshotIndex === 0) {
      this.out.push({ kind: 'reset' });
      this.appliedIndex = 0;
      this.replicaValid = true;
      this.replicaEmptied = false;
    } else {
      // The reset waits for the transfer: if no peer can serve one, the replica is kept.
      this.replicaValid = false;
      this.replicaEpoch += 1;
      this.transfer.want(this.log.snapshotIndex);
    }
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
        this.onTick();
        // Fallback: a controller that never flushes still sends within a tick.
        this.flushOutgoing();
        break;
      case 'fetched':
        if (!this.compaction.onFetched(event.token)) this.transfer.onFetched(event.token, event.entries);
        break;
      case 'applied':
        this.transfer.onApplied(event.token);
        break;
      case 'backend_reset':
        if (event.kept === true && event.emptied !== true && this.canReplayOntoReplica()) {
          this.replayOntoReplica(event.awaiting ?? []);
        } else {
          this.rebuildReplica(event.emptied === true);
          for (const requestId of event.awaiting ?? []) this.reply(requestId, APPLY_FAILED);
        }
        break;
      case 'refused':
        // Never sent here: a refused write makes this replica suspect, and the reset replays.
        assert.fail('a replicated log is told of refused writes by a backend_reset');
        break;
      case 'flush':
        this.flushOutgoing();
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
      role: this.role,
      term: this.term,
      leader: this.leader,
      committed: String(this.commitIndex),
      applied: String(this.appliedIndex),
      queueDepth: this.pending.size,
      invalidPeerMessages: this.droppedCount,
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
      this.reply(requestId, refusal);
      return;
    }
    const deadlineMs = this.nowMs + this.tuning.requestTimeoutFailureTimeouts * this.failureTimeoutMs;
    if (isWrite(op)) {
      const refusal = this.role === 'leader' ? this.refuseStore(op, BigInt(this.nextEntryIndex())) : null;
      if (refusal !== null) {
        this.reply(requestId, refusal);
        return;
      }
      this.pending.set(requestId, { op, deadlineMs });
      this.sessions.add(session, requestId, 'write');
      if (this.role === 'leader') this.proposalsThisStep.push(this.newEntry(op, this.self, this.incarnation, requestId));
      else this.forwardsThisStep.push({ requestId, op });
    } else if (this.sessions.hasUnsettledWrite(session)) {
      // It must see that write: it is served only once the write is applied here (see
      // settleSession). A linearizable one asks for its read index meanwhile.
      this.pending.set(requestId, { op, deadlineMs });
      this.sessions.add(session, requestId, 'held');
      if (this.mode === 'linearizability') this.startLinearizableRead(requestId);
    } else if (this.mode === 'sequential') {
      this.out.push({ kind: 'read', requestId, op, nowMs: this.nowMs });
    } else {
      this.pending.set(requestId, { op, deadlineMs });
      this.sessions.add(session, requestId, 'read');
      this.startLinearizableRead(requestId);
    }
  }

  /** A read index: the leader confirms its own with a round; a follower asks the leader's. */
  private startLinearizableRead(requestId: RequestId): void {
    if (this.role === 'leader') this.reads.awaitRoundForLocal(requestId);
    else this.readsThisStep.push(requestId);
  }

  /**
   * A request of a session is settled; the reads it held go on: a sequential read is served at
   * once (right after the write it waited for, in the effects' order), a linearizable one once
   * its read index is applied too.
   */
  private settleSession(requestId: RequestId): void {
    for (const read of this.sessions.settle(requestId)) {
      if (this.mode === 'linearizability') {
        const readIndex = this.pending.get(read)?.readIndex;
        if (readIndex !== undefined) this.reads.awaitApply(read, readIndex);
        continue;
      }
      const refusal = this.cannotServe(null);
      if (refusal !== null) {
        this.refuseRequest(read, refusal);
        continue;
      }
      this.serveNow(read);
    }
  }

  /** Serves a pending read from the replica as it stands after the effects issued so far. */
  private serveNow(requestId: RequestId): void {
    const pending = this.pending.get(requestId);
    if (pending === undefined) return;
    this.pending.delete(requestId);
    this.out.push({ kind: 'read', requestId, op: pending.op, nowMs: this.nowMs });
    this.settleSession(requestId);
  }

  /**
   * Sequential reads are local: a get is stepped into a `read` effect alone whenever nothing
   * would refuse it (see `refusalFor`) and its connection has no write in flight here.
   * Linearizable reads always need a round.
   */
  readsLocally(nowMs: number, session: number): boolean {
    return (
      this.mode === 'sequential' &&
      !this.sessions.hasUnsettledWrite(session) &&
      this.refusalFor(null, Math.max(this.nowMs, nowMs)) === null
    );
  }

  /** Why this node cannot take `op` (null: a read) at `atMs`, or null if it can. */
  private refusalFor(op: Op | null, atMs = this.nowMs): Refusal | null {
    if (this.pending.size >= this.tuning.queueDepthMax) return refused('busy', 'request queue full');
    return this.cannotServe(op, atMs);
  }

  /** Why this node cannot serve `op` (null: a read) now, a request already taken included. */
  private cannotServe(op: Op | null, atMs = this.nowMs): Refusal | null {
    if (!this.knowsLiveLeader(atMs)) return refused('no_quorum', 'no leader reachable');
    if (!this.caughtUp) return refused('not_caught_up', `replica is rebuilding (${op !== null && isWrite(op) ? 'write' : 'read'} refused)`);
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

  private reply(requestId: RequestId, reply: Reply): void {
    this.out.push({ kind: 'reply', requestId, reply });
    this.settleSession(requestId);
  }

  private newEntry(op: Op | null, origin: PeerId, incarnation: number, requestId: RequestId | null): LogEntry {
    return { term: this.term, index: this.nextEntryIndex(), nowMs: this.nowMs, op, origin, incarnation, requestId };
  }

  /** The index the next proposal of this step takes (and the version its write is stored under). */
  private nextEntryIndex(): number {
    return this.log.lastIndex() + 1 + this.proposalsThisStep.length;
  }

  /**
   * This node was not running for `pausedMs` (its tick came late): nobody's silence over that time
   * counts — not the leader's, not a follower's acks, not a request's wait — so a stall of the whole
   * machine starts no election and times out no request. Safe: reads never lean on a time lease
   * (a read index is confirmed by a round of acks sent after it), so only liveness timers move.
   */
  private excusePause(pausedMs: number): void {
    const forward = (atMs: number): number => Math.max(atMs, Math.min(this.nowMs, atMs + pausedMs));
    this.electionDeadlineMs += pausedMs;
    this.lastLeaderContactMs = forward(this.lastLeaderContactMs);
    this.progress.excusePause(forward, pausedMs);
    for (const pending of this.pending.values()) pending.deadlineMs += pausedMs;
  }

  private expirePending(): void {
    for (const [requestId, pending] of this.pending) {
      if (pending.deadlineMs > this.nowMs) break;
      this.pending.delete(requestId);
      this.writeTerms.delete(requestId);
      const what = isWrite(pending.op) ? 'write outcome unknown' : 'read';
      const refusal = refused('timeout', `${what}, no quorum answered in time`);
      this.noteRefusal(refusal);
      this.reply(requestId, refusal);
    }
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
    if (!this.acceptTerm(from, message)) return;
    switch (message.kind) {
      case 'pre_vote':
        return this.onPreVote(from, message);
      case 'pre_vote_reply':
        return this.onPreVoteReply(from, message);
      case 'vote':
        return this.onVote(from, message);
      case 'vote_reply':
        return this.onVoteReply(from, message);
      case 'append':
        return this.replication.onAppend(from, message);
      case 'append_reply':
        return this.replication.onAppendReply(from, message);
      case 'ping':
        return this.replication.onPing(from, message);
      case 'pong':
        return this.replication.onPong(from, message);
      case 'forward':
        return this.onForward(from, message);
      case 'forward_refused':
        return this.onForwardRefused(message);
      case 'read_index':
        return this.reads.onReadIndex(from, message);
      case 'read_index_reply':
        return this.reads.onReadIndexReply(message);
      case 'transfer_request':
        return this.transfer.onTransferRequest(from, message);
      case 'transfer_chunk':
        return this.transfer.onTransferChunk(from, message);
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
    if (message.kind === 'vote' && this.inLease()) return false;
    const leader = message.kind === 'append' || message.kind === 'ping' ? from : null;
    this.becomeFollower(message.term, leader);
    return true;
  }

  private inLease(): boolean {
    if (this.role === 'leader') return true;
    return this.leader !== null && this.nowMs - this.lastLeaderContactMs < this.failureTimeoutMs;
  }

  // ---------------------------------------------------------------- elections

  private resetElectionTimer(): void {
    this.electionJitterMs = Math.floor(this.random() * this.failureTimeoutMs);
    this.electionDeadlineMs = this.nowMs + this.failureTimeoutMs + this.electionJitterMs;
  }

  /** Pushes the election back as a reset would, with the last draw: a ping draws no randomness. */
  private extendElectionTimer(): void {
    this.electionDeadlineMs = Math.max(this.electionDeadlineMs, this.nowMs + this.failureTimeoutMs + this.electionJitterMs);
  }

  private onTick(): void {
    this.expirePending();
    this.transfer.requestIfDue();
    if (this.role === 'leader') return this.tickAsLeader();
    if (this.nowMs >= this.electionDeadlineMs) this.becomePreCandidate();
  }

  private tickAsLeader(): void {
    if (!this.progress.hasQuorum(this.nowMs)) {
      this.becomeFollower(this.term, null);
      this.resetElectionTimer();
      return;
    }
    if (this.nowMs >= this.heartbeatDueMs) {
      this.heartbeatDueMs = this.nowMs + this.heartbeatIntervalMs;
      this.replication.heartbeat();
    }
    this.transfer.startOverIfEveryReplicaLost();
  }

  private becomePreCandidate(): void {
    this.leaveLeadership(refused('no_quorum', 'leader lost'));
    this.abandonInFlight();
    this.note('info', 'election started: no leader heard from', { term: this.term + 1, peers: this.peers });
    this.role = 'pre_candidate';
    this.leader = null;
    this.votes = new Set([this.self]);
    this.resetElectionTimer();
    const message: LogMessage = {
      kind: 'pre_vote',
      term: this.term + 1,
      lastIndex: this.log.lastIndex(),
      lastTerm: this.log.lastTerm(),
    };
    for (const peer of this.peers) this.send(peer, message);
    if (this.votes.size >= this.majority) this.becomeCandidate();
  }

  private becomeCandidate(): void {
    this.role = 'candidate';
    this.term += 1;
    this.votedFor = this.self;
    this.leader = null;
    this.votes = new Set([this.self]);
    this.persistHardState();
    this.resetElectionTimer();
    const message: LogMessage = {
      kind: 'vote',
      term: this.term,
      lastIndex: this.log.lastIndex(),
      lastTerm: this.log.lastTerm(),
    };
    for (const peer of this.peers) this.send(peer, message);
    if (this.votes.size >= this.majority) this.becomeLeader();
  }

  private becomeLeader(): void {
    this.noteLeader(this.term, this.self);
    this.note('info', 'became leader', { leader: this.self, peers: this.peers, votes: [...this.votes] });
    this.role = 'leader';
    this.leader = this.self;
    this.progress.reset(this.peers, this.log.lastIndex(), this.nowMs);
    this.transfer.askedMs.clear();
    this.heartbeatDueMs = this.nowMs;
    this.proposalsThisStep.push(this.newEntry(null, this.self, this.incarnation, null));
    const termStartIndex = this.proposalsThisStep[this.proposalsThisStep.length - 1].index;
    this.reads.startTerm(termStartIndex);
    if (this.catchUpIndex === null) this.catchUpIndex = termStartIndex;
    this.refuseForwardsAndReads(refused('no_quorum', 'leader changed'));
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
    if (leader !== this.leader) this.refuseForwardsAndReads(refused('no_quorum', 'leader changed'));
    const changed = leader !== null && leader !== this.leader;
    this.leader = leader;
    if (leader !== null) this.noteLeader(term, leader);
    if (changed) this.note('info', 'became follower', { leader, peers: this.peers });
  }

  /** A leader stepping down refuses the reads it was confirming; writes may still commit. */
  private leaveLeadership(refusal: Refusal): void {
    if (this.role !== 'leader') return;
    this.note('warn', 'stepped down', { why: refusalText(refusal), peers: this.peers, acked: this.progress.ackedPeers(this.nowMs) });
    this.reads.stepDown(refusal);
    this.progress.clear();
    this.leader = null;
    // Proposals not yet in the log never will be: ours go to the next leader, others' are dropped.
    for (const entry of this.proposalsThisStep) {
      this.forgetProposal(entry);
      if (entry.op !== null && entry.origin === this.self && entry.requestId !== null) {
        this.forwardsThisStep.push({ requestId: entry.requestId, op: entry.op });
      }
    }
    this.proposalsThisStep = [];
  }

  /**
   * The leader went silent for a whole election timeout: nothing sent to it will be answered
   * soon. Reads are refused (they changed nothing); writes get "outcome unknown" (they may still
   * commit), so clients retry now rather than after the request timeout.
   */
  private abandonInFlight(): void {
    this.refuseForwardsAndReads(refused('no_quorum', 'leader lost'));
    for (const requestId of [...this.writeTerms.keys()]) {
      this.refuseRequest(requestId, refused('outcome_unknown', 'leader lost before it committed; retry'));
    }
  }

  /** Reads asked of a leader that is gone will never be answered: refuse them now. */
  private refuseForwardsAndReads(refusal: Refusal): void {
    this.reads.refuseAsked(refusal);
  }

  /**
   * A write of ours that a state transfer holds (committed at `index`) but that was never applied
   * here: its client is answered now. Only a plain set's and a flush's replies do not depend on
   * the state before them; any other write's result is unknown here, and the reply says so.
   */
  private answerTransferredWrite(requestId: RequestId, index: number): void {
    const pending = this.pending.get(requestId);
    if (pending === undefined || !isWrite(pending.op)) return;
    this.writeTerms.delete(requestId);
    this.pending.delete(requestId);
    const { op } = pending;
    if (op.kind === 'store' && op.verb === 'set') return this.reply(requestId, { kind: 'stored', cas: BigInt(index) });
    if (op.kind === 'flush_all') return this.reply(requestId, { kind: 'ok' });
    this.noteRefusal(TRANSFERRED_PAST_WRITE);
    this.reply(requestId, TRANSFERRED_PAST_WRITE);
  }

  private refuseRequest(requestId: RequestId, refusal: Refusal): void {
    this.writeTerms.delete(requestId);
    if (!this.pending.delete(requestId)) return;
    this.noteRefusal(refusal);
    this.reply(requestId, refusal);
  }

  private noteLeader(term: number, leader: PeerId): void {
    const known = this.leaderOfTerm.get(term);
    assert(known === undefined || known === leader, `two leaders in term ${term}: ${known} and ${leader}`);
    if (known === undefined) {
      this.leaderOfTerm.set(term, leader);
      if (this.leaderOfTerm.size > 64) this.leaderOfTerm.delete(this.leaderOfTerm.keys().next().value as number);
    }
  }

  private onPreVote(from: PeerId, message: Extract<LogMessage, { kind: 'pre_vote' }>): void {
    const granted =
      message.term > this.term && !this.inLease() && this.log.isUpToDate(message.lastIndex, message.lastTerm);
    this.send(from, { kind: 'pre_vote_reply', term: granted ? message.term : this.term, granted });
  }

  private onPreVoteReply(from: PeerId, message: Extract<LogMessage, { kind: 'pre_vote_reply' }>): void {
    if (!message.granted && message.term > this.term) {
      this.becomeFollower(message.term, null);
      return;
    }
    if (this.role !== 'pre_candidate' || !message.granted || message.term !== this.term + 1) return;
    this.votes.add(from);
    if (this.votes.size >= this.majority) this.becomeCandidate();
  }

  private onVote(from: PeerId, message: Extract<LogMessage, { kind: 'vote' }>): void {
    const granted =
      message.term === this.term &&
      (this.votedFor === null || this.votedFor === from) &&
      this.log.isUpToDate(message.lastIndex, message.lastTerm);
    if (granted) {
      this.votedFor = from;
      this.persistHardState();
      this.resetElectionTimer();
      this.note('info', 'vote granted', { to: from, peers: this.peers });
    }
    this.send(from, { kind: 'vote_reply', term: this.term, granted });
  }

  private onVoteReply(from: PeerId, message: Extract<LogMessage, { kind: 'vote_reply' }>): void {
    if (this.role !== 'candidate' || message.term !== this.term || !message.granted) return;
    this.votes.add(from);
    if (this.votes.size >= this.majority) this.becomeLeader();
  }

  private onForward(from: PeerId, message: Extract<LogMessage, { kind: 'forward' }>): void {
    // Only a forward of this term may enter the log: the origin's fast answer on a leader change
    // relies on a write forwarded in term t appearing, if ever, as an entry of term t.
    if (this.role !== 'leader' || !this.progress.hasQuorum(this.nowMs) || message.term !== this.term) {
      const requestIds = message.requests.map((request) => request.requestId);
      this.send(from, { kind: 'forward_refused', term: this.term, incarnation: message.incarnation, requestIds, ...NOT_THE_LEADER });
      return;
    }
    const refusals = new Map<string, { refusal: Refusal; requestIds: RequestId[] }>();
    for (const request of message.requests) {
      // The network may duplicate a forward: an op must enter the log once, and never after its
      // origin was told it was refused.
      const key = proposalKey(from, message.incarnation, request.requestId);
      if (this.proposals.has(key)) continue;
      const refusal = this.refusedForwards.get(key) ?? this.refuseStore(request.op, BigInt(this.nextEntryIndex()));
      if (refusal !== null) {
        if (this.refusedForwards.size >= refusedForwardsMax) this.refusedForwards.clear();
        this.refusedForwards.set(key, refusal);
        const text = refusalText(refusal);
        const group = refusals.get(text) ?? { refusal, requestIds: [] };
        group.requestIds.push(request.requestId);
        refusals.set(text, group);
        continue;
      }
      const entry = this.newEntry(request.op, from, message.incarnation, request.requestId);
      this.proposalsThisStep.push(entry);
      this.proposals.set(key, entry.index);
    }
    for (const { refusal, requestIds } of refusals.values()) {
      const { reason, detail } = refusal;
      const said = detail === undefined ? { reason } : { reason, detail };
      this.send(from, { kind: 'forward_refused', term: this.term, incarnation: message.incarnation, requestIds, ...said });
    }
  }

  private onForwardRefused(message: Extract<LogMessage, { kind: 'forward_refused' }>): void {
    if (message.incarnation !== this.incarnation) return;
    for (const requestId of message.requestIds) {
      this.writeTerms.delete(requestId);
      if (this.pending.delete(requestId)) this.reply(requestId, refused(message.reason, message.detail));
    }
  }

  // ---------------------------------------------------------------- reads (read index)

  // ---------------------------------------------------------------- end of step

  /** After every event: apply what is committed, serve reads that may go, compact. */
  private afterStep(): void {
    this.applyCommitted();
    this.answerLostWrites();
    this.reads.serveReads();
    this.compaction.compactIfDue();
  }

  /**
   * On `flush` (the end of a turn) or a tick: append what the turn proposed and send it, one
   * message per peer: one append per follower, one forward and one read-index request to the
   * leader, one heartbeat round confirming every read of the turn.
   */
  private flushOutgoing(): void {
    if (this.role === 'leader') this.flushAsLeader();
    else this.flushAsFollower();
  }

  private flushAsLeader(): void {
    if (this.forwardsThisStep.length > 0 || this.readsThisStep.length > 0) {
      // Became leader within this step: take them as our own.
      for (const request of this.forwardsThisStep) {
        this.proposalsThisStep.push(this.newEntry(request.op, this.self, this.incarnation, request.requestId));
      }
      for (const requestId of this.readsThisStep) this.reads.awaitRoundForLocal(requestId);
      this.forwardsThisStep = [];
      this.readsThisStep = [];
    }
    const fresh = this.proposalsThisStep;
    if (fresh.length > 0) {
      this.proposalsThisStep = [];
      this.log.append(fresh);
      for (const entry of fresh) {
        this.rememberProposal(entry);
        if (entry.origin === this.self && entry.requestId !== null) this.noteWriteSent(entry.requestId);
      }
    }
    if (this.peers.length === 0) this.commitIndex = this.log.lastIndex();
    // One read-confirming round per turn that has reads. (Holding reads back while a round is in
    // flight, to confirm more per round, cost more in waiting than it saved in messages: measured.)
    const heartbeat = this.reads.startRoundIfRequested();
    // The appends leave first and we write our own copy while they travel (Raft §10.2.1); they
    // say it is not durable yet (durableIndex), so a follower commits these entries on a later
    // append (or our commit notice). Everything after the record (commits, replies, later sends)
    // waits for its fsync. (Writing our copy before sending, so that the follower that originated
    // a write could commit it on receipt, measured the same: a hop saved, an fsync waited for.)
    this.replication.sendAppends(fresh.length, heartbeat);
    if (fresh.length > 0) this.persist({ kind: 'entries', entries: fresh }, false);
    this.replication.advanceCommit();
    this.reads.confirmRounds();
  }

  private flushAsFollower(): void {
    const leader = this.leader;
    if (this.forwardsThisStep.length > 0) {
      const requests = this.forwardsThisStep;
      this.forwardsThisStep = [];
      if (leader === null) for (const request of requests) this.refuseRequest(request.requestId, refused('no_quorum', 'no leader'));
      else {
        for (const request of requests) this.noteWriteSent(request.requestId);
        this.sendForwards(leader, requests);
      }
    }
    if (this.readsThisStep.length > 0) {
      const reads = this.readsThisStep;
      this.readsThisStep = [];
      if (leader === null) for (const requestId of reads) this.refuseRequest(requestId, refused('no_quorum', 'no leader'));
      else {
        this.reads.ask(leader, reads);
      }
    }
  }

  /** Forwards `requests` in order, in as many messages as the byte bound asks for. */
  private sendForwards(leader: PeerId, requests: readonly ForwardedRequest[]): void {
    const limits = { countMax: this.tuning.queueDepthMax, bytesMax: this.tuning.batchBytesMax };
    let start = 0;
    while (start < requests.length) {
      const count = batchCount((at) => opBytes(requests[start + at].op), requests.length - start, limits);
      this.send(leader, { kind: 'forward', term: this.term, incarnation: this.incarnation, requests: requests.slice(start, start + count) });
      start += count;
    }
  }

  private noteWriteSent(requestId: RequestId): void {
    this.writeTerms.delete(requestId);
    this.writeTerms.set(requestId, this.term);
  }

  /**
   * A committed entry of term T fixes the log up to it, and an entry of an earlier term can only
   * sit before it (terms never decrease along the log). So our writes sent in a term < T that are
   * not in the log up to the commit index will never be applied: answer them now, so the client
   * retries at once instead of waiting for the request timeout.
   */
  private answerLostWrites(): void {
    if (this.writeTerms.size === 0) return;
    const commitTerm = this.log.termAt(this.commitIndex) ?? 0;
    for (const [requestId, term] of this.writeTerms) {
      if (term >= commitTerm) break;
      this.writeTerms.delete(requestId);
      if (!this.pending.has(requestId)) continue;
      const index = this.proposals.get(proposalKey(this.self, this.incarnation, requestId));
      if (index !== undefined && index <= this.commitIndex) continue;
      this.refuseRequest(requestId, refused('outcome_unknown', 'the leader changed before it committed; retry'));
    }
  }

  private applyCommitted(): void {
    if (!this.replicaValid) return;
    while (this.appliedIndex < this.commitIndex) {
      this.appliedIndex += 1;
      const entry = this.log.entryAt(this.appliedIndex);
      if (entry.op === null) continue;
      let requestId: RequestId | null = null;
      if (entry.origin === this.self && entry.incarnation === this.incarnation && entry.requestId !== null) {
        if (this.pending.has(entry.requestId)) requestId = entry.requestId;
        this.writeTerms.delete(entry.requestId);
      }
      // The reads its connection sent before it must not see it: served now, if not yet. (A
      // linearizable one may not have its read index: every write that completed before it was
      // sent is in the log before this one, sent after it.)
      if (requestId !== null) for (const read of this.sessions.takeReadsBefore(requestId)) this.serveNow(read);
      if (this.replicaSkipsApplied) this.compaction.touch(entry.op);
      this.out.push({ kind: 'apply', op: entry.op, cas: BigInt(entry.index), nowMs: entry.nowMs, requestId, token: null });
      if (requestId !== null) {
        this.pending.delete(requestId);
        this.settleSession(requestId);
      }
    }
    if (!this.caughtUp && this.catchUpIndex !== null && this.appliedIndex >= this.catchUpIndex) {
      this.caughtUp = true;
      this.note('info', 'replay done: caught up, serving', { appliedIndex: this.appliedIndex, leader: this.leader, peers: this.peers });
    }
  }

  // ---------------------------------------------------------------- state transfer

  // ---------------------------------------------------------------- persistence and sending

}
