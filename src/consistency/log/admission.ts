/**
 * Request admission: whether this node takes a client's request, refuses it, or serves it
 * locally, and what a taken one waits for. A read waits behind its connection's unapplied write,
 * is served from the replica (sequential), under a read lease (./lease.ts), or once its read index
 * is applied; a write goes to the role (./roles.ts). A request is refused when the queue is full,
 * or when nothing would answer it: while a majority is reachable, a write or a linearizable read
 * waits for a leader instead of being refused.
 *
 * Owns: whether a majority was reachable at the last tick, and the count of lease reads.
 * Invariant: nothing is served locally that a step would refuse, or while its connection has a
 * write in flight here.
 */

import { refused, type Refusal } from '../../protocol/refusals.ts';
import { isWrite, opKeys, type Op } from '../../store/types.ts';
import type { LocalRead, PeerId, RequestId } from '../types.ts';
import type { LogCore } from './core.ts';
import type { ReadLeases } from './lease.ts';
import type { ProgressTracker } from './progress.ts';
import type { ReadIndex } from './read-index.ts';
import type { Recovery } from './recovery.ts';
import type { Requests } from './requests.ts';
import type { Roles } from './roles.ts';
import type { Turn } from './turn.ts';

/** How long, in failure timeouts, a node just started waits before it judges its peers unreachable. */
const START_GRACE_FAILURE_TIMEOUTS = 2;

/** The parts a request is admitted against and handed to. */
export interface AdmissionParts {
  roles: Roles;
  requests: Requests;
  reads: ReadIndex;
  turn: Turn;
  progress: ProgressTracker;
  recovery: Recovery;
  /** Read leases, or null when off. */
  leases: ReadLeases | null;
}

export class RequestAdmission {
  /**
   * Whether the failure detector, at the last tick, heard from enough peers to make a majority
   * with this node: then a write waits for an election; else it is refused at once (a node cut
   * off should not keep its clients waiting for a leader it cannot have). Peers are not judged
   * before this node has run for two failure timeouts: a node just started has heard from nobody
   * yet, and its peer connections take a while to come up on a loaded machine (0.4 s seen).
   */
  private reachesMajority = true;
  private readonly startedAtMs: number;
  /** Linearizable reads this process started under a lease (for tests and the simulator). */
  private leaseReadCount = 0;

  private readonly roles: Roles;
  private readonly requests: Requests;
  private readonly reads: ReadIndex;
  private readonly turn: Turn;
  private readonly progress: ProgressTracker;
  private readonly recovery: Recovery;
  private readonly leases: ReadLeases | null;

  constructor(
    private readonly core: LogCore,
    parts: AdmissionParts,
  ) {
    this.startedAtMs = core.nowMs;
    this.roles = parts.roles;
    this.requests = parts.requests;
    this.reads = parts.reads;
    this.turn = parts.turn;
    this.progress = parts.progress;
    this.recovery = parts.recovery;
    this.leases = parts.leases;
  }

  /** Linearizable reads this process started under a lease. */
  get leaseReads(): number {
    return this.leaseReadCount;
  }

  onRequest(requestId: RequestId, session: number, op: Op): void {
    const core = this.core;
    const refusal = this.refusalFor(op);
    if (refusal !== null) {
      core.noteRefusal(refusal);
      this.requests.reply(requestId, refusal);
      return;
    }
    if (isWrite(op)) {
      this.roles.handlers().takeWrite(requestId, session, op);
    } else if (this.requests.hasUnsettledWrite(session)) {
      // It must see that write: it is served only once the write is applied here (see
      // Requests.settle). A linearizable one asks for its read index meanwhile.
      this.requests.add(requestId, session, op, 'held');
      if (core.mode === 'linearizability') this.startLinearizableRead(requestId, op);
    } else if (core.mode === 'sequential') {
      core.out.push({ kind: 'read', requestId, op, nowMs: core.nowMs });
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
    if (keys !== null && this.leaseCovers(this.core.nowMs)) {
      this.leaseReadCount += 1;
      this.reads.awaitApply(requestId, this.core.log.lastIndexTouching(keys));
    } else {
      this.roles.handlers().startLinearizableRead(requestId);
    }
  }

  /** Whether this node holds a read lease (as the leader, or granted by it) covering `atMs`. */
  leaseCovers(atMs: number): boolean {
    const leases = this.leases;
    if (leases === null) return false;
    if (this.core.role !== 'leader') return leases.holdsAsFollower(atMs);
    return leases.holdsAsLeader(atMs, this.progress.confirmedSentMs(), this.reads.termStarted());
  }

  /**
   * Sequential reads are local: a get is stepped into a `read` effect alone whenever nothing
   * would refuse it (see `refusalFor`) and its connection has no write in flight here. So is a
   * linearizable one under a read lease, when every apply this node issued reached the replica
   * and none of its keys has an entry here not applied yet; otherwise it needs a step.
   */
  readsLocally(nowMs: number, session: number, read?: LocalRead): boolean {
    const core = this.core;
    if (core.mode === 'linearizability' && this.leases === null) return false;
    const atMs = Math.max(core.nowMs, nowMs);
    // A request of its connection still unanswered here: it must not be answered before it.
    if (this.requests.hasUnsettled(session) || this.refusalFor(null, atMs) !== null) return false;
    if (core.mode === 'sequential') return true;
    if (read === undefined || !read.appliesDone || !core.replicaValid || !this.leaseCovers(atMs)) return false;
    return core.log.lastIndexTouching(read.keys) <= core.appliedIndex;
  }

  /** Why this node cannot take `op` (null: a read) at `atMs`, or null if it can. */
  private refusalFor(op: Op | null, atMs = this.core.nowMs): Refusal | null {
    if (this.requests.size >= this.core.tuning.queueDepthMax) return refused('busy', 'request queue full');
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
  cannotServe(op: Op | null, atMs = this.core.nowMs): Refusal | null {
    const write = op !== null && isWrite(op);
    if (this.recovery.active && !write) return refused('not_caught_up', 'recovering its log from the peers');
    // (A sequential read is served locally or not at all: it does not wait.)
    const waitsForLeader = op !== null && this.reachesMajority && (write || this.core.mode === 'linearizability');
    if (!waitsForLeader && !this.roles.knowsLiveLeader(atMs)) return refused('no_quorum', 'no leader reachable');
    if (!this.core.caughtUp && !write) return refused('not_caught_up', 'replica is rebuilding (read refused)');
    return null;
  }

  /** The failure detector's peers up: with no majority reachable, what waits for a leader is refused. */
  notePeersUp(peersUp: readonly PeerId[]): void {
    const core = this.core;
    if (core.nowMs - this.startedAtMs < START_GRACE_FAILURE_TIMEOUTS * core.failureTimeoutMs) return;
    const reachable = peersUp.filter((peer) => core.peers.includes(peer)).length + 1;
    this.reachesMajority = reachable >= core.majority;
    if (this.reachesMajority) return;
    const refusal = refused('no_quorum', 'no leader reachable');
    this.requests.refuseHeldWrites(refusal);
    this.turn.refuseWaitingReads(refusal);
  }
}
