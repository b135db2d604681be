/**
 * Linearizable reads by read index (Raft §6.4; etcd-io/raft's read_only.go). A read is served
 * once this replica has applied the leader's commit index as of the read's arrival (its *read
 * index*), taken while a majority still followed that leader. The leader confirms its own with a
 * heartbeat *round* started after the read arrived; a follower asks the leader in one batch per
 * turn, and with three nodes the leader answers at once (see onReadIndex).
 *
 * Owns: the round counter and the reads waiting on rounds (leader), the batches asked of the
 * leader (follower), and the reads whose read index is known, waiting for the replica to apply it.
 * Invariant: `awaitingApply` is sorted by read index; a round is confirmed only by acks of a
 * majority (this node included) to that round or a later one.
 */

import { itemAt } from '../../runtime/item-at.ts';
import { refused, type Refusal } from '../../protocol/refusals.ts';
import type { PeerId, RequestId } from '../types.ts';
import type { LogCore } from './core.ts';
import type { ProgressTracker } from './progress.ts';
import type { LogMessage } from './types.ts';

/** A follower's read-index request, as the leader answers it. */
interface RemoteReadBatch {
  from: PeerId;
  incarnation: number;
  batchId: number;
}

/** Reads (local request ids and remote batches) waiting for a majority to ack `round`. */
interface RoundWaiter {
  round: number;
  readIndex: number;
  localReads: RequestId[];
  remoteBatches: RemoteReadBatch[];
}

/** What the read index needs of the requests' bookkeeping. */
export interface ReadRequests {
  isPending(requestId: RequestId): boolean;
  refuse(requestId: RequestId, refusal: Refusal): void;
  /** Serves a pending read from the replica as it stands after the effects issued so far. */
  serve(requestId: RequestId): void;
  /** Still behind its session's write: keeps its read index for when that write is applied (true). */
  holdBehindWrite(requestId: RequestId, readIndex: number): boolean;
}

export class ReadIndex {
  /** The leader's last heartbeat round (rides on every append). */
  round = 0;
  private roundRequested = false;
  private roundWaiters: RoundWaiter[] = [];
  /** The index of this term's first entry (the leader's no-op): every read must see it. */
  private termStartIndex = 0;
  private readBatchId = 0;
  /** Our read-index requests awaiting the leader's answer: the term each was asked in, and its reads. */
  private readonly readBatches = new Map<number, { term: number; requestIds: RequestId[] }>();
  /** Reads with a read index, waiting for applied ≥ readIndex; sorted by readIndex. */
  private awaitingApply: Array<{ requestId: RequestId; readIndex: number }> = [];

  constructor(
    private readonly core: LogCore,
    private readonly progress: ProgressTracker,
    private readonly requests: ReadRequests,
  ) {}

  /** A new leader: rounds start over; its term's reads must see `termStartIndex`. */
  startTerm(termStartIndex: number): void {
    this.round = 0;
    this.roundWaiters = [];
    this.termStartIndex = termStartIndex;
  }

  /** Everything we know committed, and this term's first entry. */
  committedNow(): number {
    return Math.max(this.core.commitIndex, this.termStartIndex);
  }

  /** Whether this term's first entry is known committed (the leader's own lease needs it). */
  termStarted(): boolean {
    return this.termStartIndex <= this.core.commitIndex;
  }

  /**
   * What a read arriving now must see: everything committed, and this term's first entry. A
   * follower commits only what we told it is committed (see appendEntries), or, when followers
   * share holds, what both followers hold (./follower-holds.ts): at most what we sent both.
   * So no write was answered beyond this index.
   */
  readIndexNow(): number {
    const heldByFollowers = this.core.followersShareHolds ? this.progress.sentToAllFloor() : 0;
    return Math.max(this.committedNow(), heldByFollowers);
  }

  /** The leader's own read: confirmed by the next round. */
  awaitRoundForLocal(requestId: RequestId): void {
    this.awaitRound(this.readIndexNow(), { localRead: requestId });
  }

  /** Confirm leadership with a heartbeat round started after the read arrived. */
  private awaitRound(readIndex: number, who: { localRead: RequestId } | RemoteReadBatch): void {
    const round = this.round + 1;
    let waiter = this.roundWaiters[this.roundWaiters.length - 1];
    if (waiter === undefined || waiter.round !== round) {
      waiter = { round, readIndex, localReads: [], remoteBatches: [] };
      this.roundWaiters.push(waiter);
    }
    waiter.readIndex = Math.max(waiter.readIndex, readIndex);
    if ('localRead' in who) waiter.localReads.push(who.localRead);
    else waiter.remoteBatches.push(who);
    this.roundRequested = true;
  }

  /** At a flush: starts the round the turn's reads asked for, if any (true). */
  startRoundIfRequested(): boolean {
    if (!this.roundRequested) return false;
    this.round += 1;
    this.roundRequested = false;
    return true;
  }

  /** Reads whose round a majority acked now wait only for the replica. */
  confirmRounds(): void {
    if (this.roundWaiters.length === 0) return;
    const confirmed = this.progress.confirmedRound(this.round);
    for (let waiter = this.roundWaiters[0]; waiter !== undefined && waiter.round <= confirmed; waiter = this.roundWaiters[0]) {
      this.roundWaiters.shift();
      for (const requestId of waiter.localReads) this.awaitApply(requestId, waiter.readIndex);
      for (const batch of waiter.remoteBatches) this.answerReadIndex(batch, waiter.readIndex);
    }
  }

  awaitApply(requestId: RequestId, readIndex: number): void {
    if (!this.requests.isPending(requestId)) return;
    const queue = this.awaitingApply;
    let at = queue.length;
    while (at > 0 && itemAt(queue, at - 1).readIndex > readIndex) at -= 1;
    queue.splice(at, 0, { requestId, readIndex });
  }

  /** A leader stepping down: its followers' read batches are refused; its own reads are handed back, to ask the next leader. */
  stepDown(): RequestId[] {
    const localReads: RequestId[] = [];
    for (const waiter of this.roundWaiters) {
      localReads.push(...waiter.localReads);
      for (const batch of waiter.remoteBatches) this.answerReadIndex(batch, null);
    }
    this.roundWaiters = [];
    return localReads;
  }

  /** Reads asked of a leader that is gone will never be answered: they are handed back, to ask the next one. */
  takeAsked(): RequestId[] {
    const reads: RequestId[] = [];
    for (const { requestIds } of this.readBatches.values()) for (const requestId of requestIds) reads.push(requestId);
    this.readBatches.clear();
    return reads;
  }

  /** A follower's flush: one read-index request to the leader for the turn's reads. */
  ask(leader: PeerId, reads: RequestId[]): void {
    const core = this.core;
    this.readBatchId += 1;
    this.readBatches.set(this.readBatchId, { term: core.term, requestIds: reads });
    core.send(leader, { kind: 'read_index', term: core.term, incarnation: core.incarnation, batchId: this.readBatchId });
  }

  /**
   * A follower asks for our read index. A read index must be taken while a majority still follows
   * us, so that no other leader can have committed a write we do not have (Raft §6.4). With three
   * nodes we answer at once: the asker's request, sent after its reads arrived, is its
   * acknowledgement, and it takes our answer only if its term has not moved by the time the answer
   * arrives (onReadIndexReply) — so it voted for no one else before we read our commit index, and
   * with us it is a majority no other candidate could win. With more nodes, a heartbeat round.
   * Stepped by the leader only (./roles.ts's stepLeader).
   */
  onReadIndex(from: PeerId, message: Extract<LogMessage, { kind: 'read_index' }>): void {
    const batch = { from, incarnation: message.incarnation, batchId: message.batchId };
    if (!this.progress.hasQuorum(this.core.nowMs)) this.answerReadIndex(batch, null);
    else if (this.core.majority === 2) this.answerReadIndex(batch, this.readIndexNow());
    else this.awaitRound(this.readIndexNow(), batch);
  }

  /** A node that does not lead refuses a read-index request (its reads are refused there). */
  refuseReadIndex(from: PeerId, message: Extract<LogMessage, { kind: 'read_index' }>): void {
    this.answerReadIndex({ from, incarnation: message.incarnation, batchId: message.batchId }, null);
  }

  private answerReadIndex(batch: RemoteReadBatch, readIndex: number | null): void {
    this.core.send(batch.from, { kind: 'read_index_reply', term: this.core.term, incarnation: batch.incarnation, batchId: batch.batchId, readIndex });
  }

  /**
   * Our read batch got its read index (null: refused). Only an answer to this run's request, from
   * the leader of the term it was asked in, while we are still in that term (see onReadIndex);
   * otherwise its reads are refused, as reads that changed nothing.
   */
  onReadIndexReply(message: Extract<LogMessage, { kind: 'read_index_reply' }>): void {
    if (message.incarnation !== this.core.incarnation) return;
    const batch = this.readBatches.get(message.batchId);
    if (batch === undefined) return;
    this.readBatches.delete(message.batchId);
    const confirmed = message.readIndex !== null && message.term === batch.term && this.core.term === batch.term;
    for (const requestId of batch.requestIds) {
      if (confirmed) this.awaitApply(requestId, message.readIndex as number);
      else this.requests.refuse(requestId, refused('no_quorum', 'leader could not confirm the read'));
    }
  }

  /** Serves the reads whose read index the replica has applied, in read-index order. */
  serveReads(): void {
    const queue = this.awaitingApply;
    let served = 0;
    for (let next = queue[served]; next !== undefined && next.readIndex <= this.core.appliedIndex; next = queue[served]) {
      // A replica being replayed or rebuilt may hold keys ahead of its applied index: not yet.
      if (!this.core.replicaValid || !this.core.caughtUp) break;
      const { requestId, readIndex } = next;
      // Still behind its session's write: it goes on when that write is applied (settleSession).
      if (!this.requests.holdBehindWrite(requestId, readIndex)) this.requests.serve(requestId);
      served += 1;
    }
    if (served > 0) queue.splice(0, served);
  }
}
