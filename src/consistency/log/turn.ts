/**
 * A turn's outgoing work and the leader's intake of forwarded writes. During a turn, a leader's
 * writes (its clients' and those forwarded to it) become proposals, and a follower's writes and
 * linearizable reads are buffered; the controller's `flush` (or, at the latest, the next tick)
 * appends and sends them, one message per peer: one append per follower, one forward and one
 * read-index request to the leader, one heartbeat round confirming every read of the turn. So a
 * burst of requests costs one round trip, not one per request. A follower that knows no live
 * leader keeps its buffers until it does (an election), or until their requests' deadlines.
 *
 * Owns: the three buffers, the memory of forwards the store refused, the order of forwards
 * (./forward-order.ts: this node's numbering as an origin, and its intake as a leader).
 * Invariants: a forwarded request enters the log at most once, and never after its origin was told
 * it was refused; only a forward of the leader's current term enters its log, and an origin's
 * forwards enter it in the order they were sent; a write is sent again to another term's leader
 * only once no earlier copy can ever commit (Requests.answerLostWrites), and to the same leader
 * only when a copy may have been lost on a reset connection, with every write sent after it, in a
 * new stream (Requests.forwardsFrom, Turn.probeForwards).
 */

import { itemAt } from '../../runtime/item-at.ts';
import { refusalText, refused, type Refusal } from '../../protocol/refusals.ts';
import type { Op } from '../../store/types.ts';
import type { PeerId, RequestId } from '../types.ts';
import type { LogCore } from './core.ts';
import { ForwardIntake, ForwardNumbering } from './forward-order.ts';
import { ProposalMap } from './proposal-map.ts';
import type { CompactedForwards } from './compacted-forwards.ts';
import type { ProgressTracker } from './progress.ts';
import type { ReadIndex } from './read-index.ts';
import type { Replication } from './replication.ts';
import type { Requests } from './requests.ts';
import { batchCount, opBytes, type ForwardedRequest, type LogEntry, type LogMessage } from './types.ts';

/**
 * How long none of our writes may be applied before the leader is asked about one still missing
 * from our log (see probeForwards), in heartbeat intervals.
 */
const UNCONFIRMED_QUIET_HEARTBEATS = 3;

/** What a forward to a node that does not lead (or lacks a quorum) is told. */
const NOT_THE_LEADER = { reason: 'no_quorum', detail: 'not the leader' } as const;
/** What a write sent again is told when the leader may have compacted a first copy away and forgotten it. */
const COMPACTED_PAST = refused('outcome_unknown', 'sent again after a lost connection; the leader cannot tell whether its first copy was logged');
/** Bound of the refused-forward memory (a duplicate arriving after this many refusals is unlikely). */
const refusedForwardsMax = 4096;

/** The parts a turn's flush hands its work to. */
export interface TurnParts {
  progress: ProgressTracker;
  /** Forwards compacted lately: a duplicate of one must not enter the log again. */
  compacted: CompactedForwards;
  requests: Requests;
  reads: ReadIndex;
  replication: Replication;
}

export class Turn {
  /** The leader's proposals of this turn, not in the log yet. */
  private proposed: LogEntry[] = [];
  /** Our writes to forward to the leader at the flush. */
  private forwarded: ForwardedRequest[] = [];
  /** Our linearizable reads to ask the leader's read index for at the flush. */
  private readAsks: RequestId[] = [];
  /** Forwards refused by the store (→ why), so a duplicate is refused too (never logged). */
  private readonly refusedForwards = new ProposalMap<Refusal>();
  /** As an origin: the numbers our forwards carry. As a leader: where each origin's forwards stand. */
  private readonly numbering = new ForwardNumbering();
  private readonly intake = new ForwardIntake();
  /** When probeForwards last asked the leader. */
  private probedAtMs = Number.NEGATIVE_INFINITY;

  private readonly progress: ProgressTracker;
  private readonly compacted: CompactedForwards;
  private readonly requests: Requests;
  private readonly reads: ReadIndex;
  private readonly replication: Replication;

  constructor(
    private readonly core: LogCore,
    parts: TurnParts,
  ) {
    ({ progress: this.progress, compacted: this.compacted, requests: this.requests } = parts);
    ({ reads: this.reads, replication: this.replication } = parts);
  }

  /** Why the store refuses a write of ours proposed now (the leader's), or null. */
  storeRefusal(op: Op): Refusal | null {
    return this.core.memory.refusal(op, BigInt(this.nextEntryIndex()));
  }

  /** The leader proposes its client's write. */
  propose(requestId: RequestId, op: Op): void {
    const core = this.core;
    this.proposed.push(this.newEntry(op, core.self, core.incarnation, requestId));
  }

  /** A new leader's no-op, the first entry of its term; returns its index. */
  proposeNoOp(): number {
    const core = this.core;
    const entry = this.newEntry(null, core.self, core.incarnation, null);
    this.proposed.push(entry);
    return entry.index;
  }

  /** A follower's write, forwarded to the leader at the flush. */
  forward(requestId: RequestId, op: Op): void {
    this.forwarded.push({ requestId, op });
  }

  /**
   * Writes of ours lost with a leader (Requests.answerLostWrites): forwarded again, ahead of those
   * held; a leader proposes them at its flush, after this turn's proposals.
   */
  resend(lost: readonly ForwardedRequest[]): void {
    this.forwarded = [...lost, ...this.forwarded];
  }

  /**
   * A forward of this term may have been lost with a reset connection and nothing after it shows
   * the leader the gap (Requests.awaitsUnconfirmed): an empty forward numbered after our last
   * one asks, at most once per quiet period. A leader that lacks some writes before it reports
   * the gap (onForwardGap sends them again); one that has them all takes it as nothing.
   */
  probeForwards(leader: PeerId): void {
    const core = this.core;
    const quietMs = core.heartbeatIntervalMs * UNCONFIRMED_QUIET_HEARTBEATS;
    if (core.nowMs - this.probedAtMs < quietMs || !this.requests.awaitsUnconfirmed(quietMs)) return;
    this.probedAtMs = core.nowMs;
    const { stream, seq } = this.numbering.take(core.term, 0);
    core.send(leader, { kind: 'forward', term: core.term, incarnation: core.incarnation, stream, seq, requests: [] });
  }

  /**
   * The leader dropped a forward of ours past a gap (./forward-order.ts): every write of the
   * stream from the gap on goes again, in a new stream. A report about an older stream, another
   * term or our previous run is stale (we sent again since).
   */
  onForwardGap(from: PeerId, message: Extract<LogMessage, { kind: 'forward_gap' }>): void {
    const core = this.core;
    if (from !== core.leader || message.term !== core.term || message.incarnation !== core.incarnation) return;
    if (!this.numbering.isCurrent(message.term, message.stream)) return;
    const { writes, sentAtCommit } = this.requests.forwardsFrom(message.stream, message.expected);
    this.numbering.restart(core.term);
    this.sendForwards(from, writes, sentAtCommit);
    if (writes.length > 0) core.note('info', 'writes forwarded again: the leader lost an earlier one', { count: writes.length, leader: from });
  }

  /** A follower's linearizable read: the leader is asked for its read index at the flush. */
  askReadIndex(requestId: RequestId): void {
    this.readAsks.push(requestId);
  }

  /** The linearizable reads waiting here for a leader are refused (they changed nothing). */
  refuseWaitingReads(refusal: Refusal): void {
    for (const requestId of this.readAsks) this.requests.refuse(requestId, refusal);
    this.readAsks = [];
  }

  /** Proposals not yet in the log never will be: ours go to the next leader, others' are dropped. */
  leadershipLost(): void {
    const core = this.core;
    for (const entry of this.proposed) {
      core.forgetProposal(entry);
      if (entry.op !== null && entry.origin === core.self && entry.requestId !== null) {
        this.forwarded.push({ requestId: entry.requestId, op: entry.op });
      }
    }
    this.proposed = [];
  }

  private newEntry(op: Op | null, origin: PeerId, incarnation: number, requestId: RequestId | null): LogEntry {
    return { term: this.core.term, index: this.nextEntryIndex(), nowMs: this.core.nowMs, op, origin, incarnation, requestId };
  }

  /** The index the next proposal of this step takes (and the version its write is stored under). */
  nextEntryIndex(): number {
    return this.core.log.lastIndex() + 1 + this.proposed.length;
  }

  /** A forward reaching a node that does not lead (or lacks a quorum, or in another term). */
  refuseForward(from: PeerId, message: Extract<LogMessage, { kind: 'forward' }>): void {
    const requestIds = message.requests.map((request) => request.requestId);
    this.core.send(from, { kind: 'forward_refused', term: this.core.term, incarnation: message.incarnation, requestIds, ...NOT_THE_LEADER });
  }

  /**
   * The leader puts forwarded writes in its log, once each and in their origin's order (a forward
   * past a gap is dropped and the gap reported: ./forward-order.ts), unless the store refuses them.
   */
  onForward(from: PeerId, message: Extract<LogMessage, { kind: 'forward' }>): void {
    const core = this.core;
    // Only a forward of this term may enter the log: the origin's fast answer on a leader change
    // relies on a write forwarded in term t appearing, if ever, as an entry of term t.
    if (!this.progress.hasQuorum(core.nowMs) || message.term !== core.term) return this.refuseForward(from, message);
    const { incarnation, term, stream, seq } = message;
    const position = { incarnation, term, stream, seq, count: message.requests.length };
    const admission = this.intake.admit(from, position, core.nowMs, core.heartbeatIntervalMs);
    if (admission.kind === 'gap' && admission.report) core.send(from, { kind: 'forward_gap', term, incarnation, stream, expected: admission.expected });
    if (admission.kind !== 'take') return;
    const refusals = new Map<string, { refusal: Refusal; requestIds: RequestId[] }>();
    // Sent again: a copy that did arrive was logged in this term above `again`, so it is still in
    // the log or among the compacted forwards remembered, unless those forgot one above `again`.
    // Then whether it was logged cannot be told, so it is not logged again; its client hears so.
    const compactedPast = message.again !== undefined && message.again < this.compacted.forgottenThrough(core.nowMs);
    for (let at = admission.skip; at < message.requests.length; at += 1) {
      // The network may duplicate a forward: an op must enter the log once (also after its entry
      // was compacted: compacted forwards are remembered for a request timeout, up to a bound),
      // and never after its origin was told it was refused.
      const request = itemAt(message.requests, at);
      const { requestId } = request;
      if (core.proposals.has(from, incarnation, requestId)) continue;
      if (this.compacted.has(from, incarnation, requestId, core.nowMs)) continue;
      const refusal = this.refusedForwards.get(from, incarnation, requestId)
        ?? (compactedPast ? COMPACTED_PAST : core.memory.refusal(request.op, BigInt(this.nextEntryIndex())));
      if (refusal !== null) {
        if (this.refusedForwards.size >= refusedForwardsMax) this.refusedForwards.clear();
        this.refusedForwards.set(from, incarnation, requestId, refusal);
        const text = refusalText(refusal);
        const group = refusals.get(text) ?? { refusal, requestIds: [] };
        group.requestIds.push(requestId);
        refusals.set(text, group);
        continue;
      }
      const entry = this.newEntry(request.op, from, incarnation, requestId);
      this.proposed.push(entry);
      core.proposals.set(from, incarnation, requestId, entry.index);
    }
    for (const { refusal, requestIds } of refusals.values()) {
      const { reason, detail } = refusal;
      const said = detail === undefined ? { reason } : { reason, detail };
      core.send(from, { kind: 'forward_refused', term: core.term, incarnation, requestIds, ...said });
    }
  }

  flushAsLeader(): void {
    if (this.forwarded.length > 0 || this.readAsks.length > 0) {
      // Became leader within this step, or with writes held for a leader: take them as our own
      // (but not one answered meanwhile: it was told it changed nothing).
      for (const request of this.forwarded) {
        if (!this.requests.isHeld(request.requestId)) continue;
        this.proposed.push(this.newEntry(request.op, this.core.self, this.core.incarnation, request.requestId));
      }
      for (const requestId of this.readAsks) this.reads.awaitRoundForLocal(requestId);
      this.forwarded = [];
      this.readAsks = [];
    }
    const fresh = this.proposed;
    if (fresh.length > 0) {
      this.proposed = [];
      this.core.log.append(fresh);
      for (const entry of fresh) {
        this.core.rememberProposal(entry);
        if (entry.origin === this.core.self && entry.requestId !== null) this.requests.noteWriteSent(entry.requestId);
      }
    }
    if (this.core.peers.length === 0) this.core.commitIndex = this.core.log.lastIndex();
    // One read-confirming round per turn that has reads. (Holding reads back while a round is in
    // flight, to confirm more per round, cost more in waiting than it saved in messages: measured.)
    const heartbeat = this.reads.startRoundIfRequested();
    // With fsync, the appends leave first and we write our own copy while they travel (Raft
    // §10.2.1); they say it is not durable yet (durableIndex), so a follower commits these entries
    // on a later append or our commit notice. Everything after the record (commits, replies, later
    // sends) waits for its fsync. With wal_sync = write our copy is one write into the page cache,
    // made within this turn: the appends wait for it and say it is there, so in sequential mode
    // each follower commits on receipt (see Replication.appendEntries), with no commit notice.
    const writeFirst = this.core.bootId !== null && this.core.mode === 'sequential';
    if (writeFirst && fresh.length > 0) this.core.persist({ kind: 'entries', entries: fresh }, false);
    this.replication.sendAppends(writeFirst ? 0 : fresh.length, heartbeat);
    if (!writeFirst && fresh.length > 0) this.core.persist({ kind: 'entries', entries: fresh }, false);
    this.replication.advanceCommit();
    this.reads.confirmRounds();
  }

  /**
   * Forwards the turn's writes, and asks the read index for its linearizable reads, while a live
   * leader is known (`leaderLive`); otherwise they wait here for one (an election takes a failure
   * timeout or two), until their deadline answers them. Whether anything left for the leader.
   */
  flushAsFollower(leaderLive: boolean): boolean {
    const leader = this.core.leader;
    let sent = false;
    if (this.forwarded.length > 0 && leader !== null && leaderLive) {
      const requests = this.forwarded.filter((request) => this.requests.isHeld(request.requestId));
      this.forwarded = [];
      for (const request of requests) this.requests.noteWriteSent(request.requestId);
      this.sendForwards(leader, requests);
      sent = requests.length > 0;
    } else if (this.forwarded.length > this.core.tuning.queueDepthMax) {
      // Those answered meanwhile go (no more are held than requests pending, at most this bound).
      this.forwarded = this.forwarded.filter((request) => this.requests.isHeld(request.requestId));
    }
    if (this.readAsks.length > 0 && leader !== null && leaderLive) {
      const reads = this.readAsks.filter((requestId) => this.requests.isPending(requestId));
      this.readAsks = [];
      if (reads.length > 0) this.reads.ask(leader, reads);
      sent ||= reads.length > 0;
    } else if (this.readAsks.length > this.core.tuning.queueDepthMax) {
      this.readAsks = this.readAsks.filter((requestId) => this.requests.isPending(requestId));
    }
    return sent;
  }

  /**
   * Forwards `requests` in order, numbered on in our current stream, in as many messages as the
   * byte bound asks for (`again`: see the forward message).
   */
  private sendForwards(leader: PeerId, requests: readonly ForwardedRequest[], again?: number): void {
    const core = this.core;
    const limits = { countMax: core.tuning.queueDepthMax, bytesMax: core.tuning.batchBytesMax };
    let start = 0;
    while (start < requests.length) {
      const count = batchCount((at) => opBytes(itemAt(requests, start + at).op), requests.length - start, limits);
      const batch = requests.slice(start, start + count);
      const { stream, seq } = this.numbering.take(core.term, count);
      batch.forEach(({ requestId }, at) => this.requests.noteForwardNumber(requestId, stream, seq + at));
      const message: LogMessage = { kind: 'forward', term: core.term, incarnation: core.incarnation, stream, seq, requests: batch };
      core.send(leader, again === undefined ? message : { ...message, again });
      start += count;
    }
  }
}
