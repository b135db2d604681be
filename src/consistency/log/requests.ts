/**
 * The client requests this node has taken and not answered: each one's op and deadline, the
 * order of each client connection's (*session's*) requests (./session-order.ts), and the term in
 * which each of our writes was sent toward a log. It answers a request exactly once — applied,
 * served, refused, timed out, lost with a leader — and keeps a session's reads in order with its
 * writes: a read is served after the session's earlier writes are applied here and before its
 * later ones are.
 *
 * Owns: the pending requests, the sessions, the writes' send terms.
 * Invariants: a reply settles its request in its session; an apply effect carries a requestId at
 * most once, only at the request's origin; `writeTerms` is in send order, so its terms never decrease.
 */

import type { Reply } from '../../protocol/types.ts';
import { refused, type Refusal } from '../../protocol/refusals.ts';
import { isWrite, type Op } from '../../store/types.ts';
import type { RequestId } from '../types.ts';
import type { LogCore } from './core.ts';
import { SessionOrder } from './session-order.ts';
import type { LogEntry, LogMessage } from './types.ts';

interface Pending {
  op: Op;
  deadlineMs: number;
  /** A write that left this node toward a log and may take effect (false: held here, or its sent copy is lost). */
  sent: boolean;
  /** A write a state transfer may hold although this node never saw its entry: never sent again. */
  unsure?: true;
  /** A linearizable read's index, once known, while the read is held behind its session's write. */
  readIndex?: number;
  /** A sent write: when, and our commit index when it first went to this term's leader (see `forwardsFrom`). */
  sentMs?: number;
  sentAtCommit?: number;
  /** A forwarded write: its stream and number among this term's forwards (./forward-order.ts). */
  forwarded?: ForwardPosition;
}

interface ForwardPosition {
  stream: number;
  seq: number;
}

type ForwardedPending = Pending & { forwarded: ForwardPosition };

function isForwarded(pending: Pending): pending is ForwardedPending {
  return pending.forwarded !== undefined;
}

/** The answer to a write whose apply failed on this replica, when it is not applied again here. */
export const APPLY_FAILED = refused('backend', 'write outcome unknown (the replica failed while applying it)');
/** The answer to a read that a state transfer passed a later write of its connection (see installTransfer). */
const TRANSFERRED_PAST_READ = refused('not_caught_up', 'replica replaced by a state transfer; retry');
const TRANSFERRED_PAST_WRITE = refused('result_unknown', 'replica replaced by a state transfer');
/** The answer to a write committed at or before a start-over: every replica lost it since (see refuseErasedWrite). */
const ERASED_WRITE = refused('result_unknown', 'every replica lost its data after the write committed');

/** What the requests ask of the rest of the machine. */
export interface RequestsHooks {
  /** Why a read cannot be served now (no live leader, replica not caught up), or null. */
  cannotServeRead(): Refusal | null;
  /** A linearizable read with its read index now waits for the replica to apply it. */
  awaitApply(requestId: RequestId, readIndex: number): void;
}

export class Requests {
  private readonly pending = new Map<RequestId, Pending>();
  /**
   * Each client connection's writes not yet applied here and its reads not yet served, in
   * arrival order, so that a pipelining client's reads see exactly its earlier writes.
   */
  private readonly sessions = new SessionOrder();
  /**
   * Our writes sent toward a log (forwarded, or proposed as leader) → the term they were sent in,
   * in send order (so terms never decrease along the map). Once an entry of a later term is
   * committed, a write of an earlier term that is not in the log by then never will be.
   */
  private readonly writeTerms = new Map<RequestId, number>();
  /**
   * Linearizable reads ready to be served but behind an earlier read of their session still
   * waiting: served right after it, so a connection's later read never shows an older state than
   * its earlier one (memcached executes a connection's commands in order).
   */
  private readonly readyBehindRead = new Set<RequestId>();
  /** When one of our writes was last applied. */
  private appliedAtMs = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly core: LogCore,
    private readonly hooks: RequestsHooks,
  ) {}

  get size(): number {
    return this.pending.size;
  }

  isPending(requestId: RequestId): boolean {
    return this.pending.has(requestId);
  }

  hasUnsettledWrite(session: number): boolean {
    return this.sessions.hasUnsettledWrite(session);
  }

  /** Whether `session` has any request not yet settled here (a read, too). */
  hasUnsettled(session: number): boolean {
    return this.sessions.hasUnsettled(session);
  }

  /** Takes a request: a write, a read held behind its session's write, or a read. */
  add(requestId: RequestId, session: number, op: Op, kind: 'write' | 'held' | 'read'): void {
    const deadlineMs = this.core.nowMs + this.core.requestTimeoutMs();
    this.pending.set(requestId, { op, deadlineMs, sent: false });
    this.sessions.add(session, requestId, kind);
  }

  /** Still behind its session's write: keeps its read index for when that write is applied (true). */
  holdBehindWrite(requestId: RequestId, readIndex: number): boolean {
    const pending = this.pending.get(requestId);
    if (pending === undefined || !this.sessions.isHeld(requestId)) return false;
    pending.readIndex = readIndex;
    return true;
  }

  reply(requestId: RequestId, reply: Reply): void {
    this.core.out.push({ kind: 'reply', requestId, reply });
    this.settle(requestId);
  }

  refuse(requestId: RequestId, refusal: Refusal): void {
    this.writeTerms.delete(requestId);
    if (!this.pending.delete(requestId)) return;
    this.core.noteRefusal(refusal);
    this.reply(requestId, refusal);
  }

  /** Serves a pending read from the replica as it stands after the effects issued so far. */
  serve(requestId: RequestId): void {
    const pending = this.pending.get(requestId);
    if (pending === undefined) return;
    if (this.core.mode === 'linearizability' && this.sessions.hasEarlierRead(requestId)) {
      this.readyBehindRead.add(requestId);
      return;
    }
    this.pending.delete(requestId);
    // With read leases a linearizable read needs only its keys' applies (the lease rule is per key).
    if (this.core.readLeases !== null) this.core.out.push({ kind: 'read', requestId, op: pending.op, nowMs: this.core.nowMs, keysOnly: true });
    else this.core.out.push({ kind: 'read', requestId, op: pending.op, nowMs: this.core.nowMs });
    this.settle(requestId);
  }

  /**
   * A request of a session is settled; the reads it held go on: a sequential read is served at
   * once (right after the write it waited for, in the effects' order), a linearizable one once
   * its read index is applied too.
   */
  private settle(requestId: RequestId): void {
    this.readyBehindRead.delete(requestId);
    const session = this.sessions.sessionOf(requestId);
    const released = this.sessions.settle(requestId);
    // The reads that were ready behind this one go now, in order, up to one still waiting.
    if (session !== undefined && this.readyBehindRead.size > 0) {
      for (const read of this.sessions.frontReads(session)) {
        if (!this.readyBehindRead.has(read)) break;
        this.serve(read);
      }
    }
    for (const read of released) {
      if (this.core.mode === 'linearizability') {
        const readIndex = this.pending.get(read)?.readIndex;
        if (readIndex !== undefined) this.hooks.awaitApply(read, readIndex);
        continue;
      }
      const refusal = this.hooks.cannotServeRead();
      if (refusal !== null) {
        this.refuse(read, refusal);
        continue;
      }
      this.serve(read);
    }
  }

  /** The committed entry about to be applied: its request, if it is ours and pending here. */
  takeApplied(entry: LogEntry): RequestId | null {
    const core = this.core;
    let requestId: RequestId | null = null;
    if (entry.origin === core.self && entry.incarnation === core.incarnation && entry.requestId !== null) {
      const pending = this.pending.get(entry.requestId);
      if (pending !== undefined) {
        requestId = entry.requestId;
        this.appliedAtMs = core.nowMs;
      }
      this.writeTerms.delete(entry.requestId);
    }
    // The reads its connection sent before it must not see it: served now, if not yet. (A
    // linearizable one may not have its read index: every write that completed before it was
    // sent is in the log before this one, sent after it.)
    if (requestId !== null) for (const read of this.sessions.takeReadsBefore(requestId)) this.serve(read);
    return requestId;
  }

  /** Its apply effect was issued (with its requestId): the client is answered by the store. */
  applied(requestId: RequestId): void {
    this.pending.delete(requestId);
    this.settle(requestId);
  }

  /** Our writes whose apply failed: those committed wait for the replay to apply them again; the rest are answered. */
  awaitReplay(awaiting: readonly RequestId[]): void {
    for (const { op, requestId } of this.committedOf(awaiting)) {
      this.pending.set(requestId, { op, deadlineMs: this.core.nowMs + this.core.requestTimeoutMs(), sent: true });
    }
  }

  /**
   * Our writes whose apply failed, the replica now rebuilt (its backend restarted empty): each
   * committed one is, so a plain set is STORED and a flush_all OK whatever the replica held; the
   * others' results depended on what it held, and cannot be told.
   */
  answerLostApplies(awaiting: readonly RequestId[]): void {
    for (const { op, index, requestId } of this.committedOf(awaiting)) {
      if (op.kind === 'store' && op.verb === 'set') this.reply(requestId, { kind: 'stored', cas: BigInt(index) });
      else if (op.kind === 'flush_all') this.reply(requestId, { kind: 'ok' });
      else this.reply(requestId, APPLY_FAILED);
    }
  }

  /** The committed entries in our log of `awaiting` (this incarnation's requests); the others are answered APPLY_FAILED. */
  private committedOf(awaiting: readonly RequestId[]): Array<{ op: Op; index: number; requestId: RequestId }> {
    const core = this.core;
    const waiting = new Set(awaiting);
    const found: Array<{ op: Op; index: number; requestId: RequestId }> = [];
    for (const { op, requestId, index, origin, incarnation } of core.log.entries) {
      if (op === null || requestId === null || origin !== core.self || incarnation !== core.incarnation) continue;
      if (index <= core.commitIndex && waiting.delete(requestId)) found.push({ op, index, requestId });
    }
    for (const requestId of waiting) this.reply(requestId, APPLY_FAILED);
    return found;
  }

  /** This node did not run for `pausedMs`: no request's wait over it counts. */
  excusePause(pausedMs: number): void {
    for (const pending of this.pending.values()) pending.deadlineMs += pausedMs;
  }

  /**
   * Answers the requests past their deadline. A write never sent (held for a leader, or sent again
   * after its first copy was lost) certainly changed nothing: "no quorum"; one sent may yet commit.
   */
  expire(): void {
    for (const [requestId, pending] of this.pending) {
      if (pending.deadlineMs > this.core.nowMs) break;
      this.pending.delete(requestId);
      this.writeTerms.delete(requestId);
      const refusal = !isWrite(pending.op)
        ? refused('timeout', 'read, no quorum answered in time')
        : pending.sent
          ? refused('timeout', 'write outcome unknown, no quorum answered in time')
          : refused('no_quorum', 'no leader took the write in time');
      this.core.noteRefusal(refusal);
      this.reply(requestId, refusal);
    }
  }

  /** Refuses every write held here, never sent (or sent again after a loss): none changed anything. */
  refuseHeldWrites(refusal: Refusal): void {
    for (const [requestId, pending] of this.pending) if (!pending.sent && isWrite(pending.op)) this.refuse(requestId, refusal);
  }

  /** True while `requestId` is a write held here, not sent toward a log (or sent again after a loss). */
  isHeld(requestId: RequestId): boolean {
    return this.pending.get(requestId)?.sent === false;
  }

  noteWriteSent(requestId: RequestId): void {
    const pending = this.pending.get(requestId);
    if (pending !== undefined) {
      pending.sent = true;
      pending.sentAtCommit = this.core.commitIndex;
    }
    this.noteSentAgain(requestId);
  }

  private noteSentAgain(requestId: RequestId): void {
    this.writeTerms.delete(requestId);
    this.writeTerms.set(requestId, this.core.term);
    const pending = this.pending.get(requestId);
    if (pending !== undefined) pending.sentMs = this.core.nowMs;
  }

  /** A forwarded write's place in this term's forwards (see ./forward-order.ts). */
  noteForwardNumber(requestId: RequestId, stream: number, seq: number): void {
    const pending = this.pending.get(requestId);
    if (pending !== undefined) pending.forwarded = { stream, seq };
  }

  /**
   * The leader took our forwards of `stream` before number `expected` and no later one: each
   * forwarded write of this term from there on still missing (see `missingForward`), to send
   * again, in order, in a new stream. Each is marked sent now. `sentAtCommit` is the least commit
   * index at which one was first sent in this term (the forward's `again`).
   */
  forwardsFrom(stream: number, expected: number): { writes: Array<{ requestId: RequestId; op: Op }>; sentAtCommit: number } {
    const core = this.core;
    const again: Array<{ requestId: RequestId; op: Op }> = [];
    let sentAtCommit = core.commitIndex;
    for (const [requestId, term] of this.writeTerms) {
      const pending = this.missingForward(requestId, term);
      if (pending === null) continue;
      // In send order: the writes before the gap's are those the leader took.
      if (again.length === 0 && !(pending.forwarded.stream === stream && pending.forwarded.seq >= expected)) continue;
      again.push({ requestId, op: pending.op });
      sentAtCommit = Math.min(sentAtCommit, pending.sentAtCommit ?? 0);
    }
    for (const { requestId } of again) this.noteSentAgain(requestId);
    return { writes: again, sentAtCommit };
  }

  /**
   * Whether a write we forwarded in this term may have been lost with a reset connection, nothing
   * after it showing the leader the gap: none of ours applied for `quietMs`, and one not in our
   * log left that long ago (Turn.probeForwards asks the leader).
   */
  awaitsUnconfirmed(quietMs: number): boolean {
    const core = this.core;
    if (core.nowMs - this.appliedAtMs < quietMs) return false;
    for (const [requestId, term] of this.writeTerms) {
      const pending = this.missingForward(requestId, term);
      // In send order: the first such write is the oldest.
      if (pending !== null) return core.nowMs - (pending.sentMs ?? core.nowMs) >= quietMs;
    }
    return false;
  }

  /**
   * A write we forwarded in this term (`term`: the one it was sent in) that is pending, not in our
   * log, and not held by a state transfer we installed (`unsure`: never sent again; the writes
   * after it may go on without it, as it may never have been logged); else null.
   */
  private missingForward(requestId: RequestId, term: number): ForwardedPending | null {
    const core = this.core;
    const pending = this.pending.get(requestId);
    if (term !== core.term || pending === undefined || !isForwarded(pending) || !pending.sent || pending.unsure === true) return null;
    return core.proposals.get(core.self, core.incarnation, requestId) === undefined ? pending : null;
  }

  /**
   * A forward refused. By the store (memory full, an item too large): final, answered now. By a
   * node that does not lead or lost its quorum (`no_quorum`): that node did not log it, but a
   * copy the network duplicated might have entered its log earlier in the term, so the write
   * stays sent in its term until `answerLostWrites` can tell it will never commit, and sends it
   * again then. Leadership changes thus delay a write instead of refusing it.
   */
  onForwardRefused(message: Extract<LogMessage, { kind: 'forward_refused' }>): void {
    if (message.incarnation !== this.core.incarnation || message.reason === 'no_quorum') return;
    for (const requestId of message.requestIds) {
      this.writeTerms.delete(requestId);
      if (this.pending.delete(requestId)) this.reply(requestId, refused(message.reason, message.detail));
    }
  }

  /**
   * A committed entry of term T fixes the log up to it, and an entry of an earlier term can only
   * sit before it (terms never decrease along the log); a forward enters a log only in the term
   * it was sent in. So our writes sent in a term < T that are not in the log up to the commit
   * index will never be applied anywhere: each is handed to `resend` (in send order), to go to
   * the leader again as if new, when that keeps its session's order and no state transfer passed
   * it (see markUnsure). Order is kept when no later write of its session was settled first and
   * every later write of its session is lost with it, or (`aheadOfHeld`: `resend` puts them ahead
   * of writes held here) not sent yet. Otherwise its client hears "outcome unknown" now. (A
   * leader's proposals of the turn have their indices already: it resends only behind them, so
   * only when no later write of the session is held.)
   */
  answerLostWrites(resend: (lost: readonly { requestId: RequestId; op: Op }[]) => void, aheadOfHeld: boolean): void {
    if (this.writeTerms.size === 0) return;
    const core = this.core;
    const commitTerm = core.log.termAt(core.commitIndex) ?? 0;
    const lost = new Set<RequestId>();
    for (const [requestId, term] of this.writeTerms) {
      if (term >= commitTerm) break;
      this.writeTerms.delete(requestId);
      if (!this.pending.has(requestId)) continue;
      const index = core.proposals.get(core.self, core.incarnation, requestId);
      if (index !== undefined && index <= core.commitIndex) continue;
      lost.add(requestId);
    }
    const again: { requestId: RequestId; op: Op }[] = [];
    for (const requestId of lost) {
      const pending = this.pending.get(requestId);
      if (pending === undefined) continue;
      const keepsOrder =
        !this.sessions.isOvertaken(requestId) &&
        this.sessions.writesAfter(requestId).every((later) => lost.has(later) || (aheadOfHeld && this.isHeld(later)));
      if (pending.unsure === true || !keepsOrder) {
        this.refuse(requestId, refused('outcome_unknown', 'the leader changed before it committed; retry'));
        continue;
      }
      pending.sent = false;
      again.push({ requestId, op: pending.op });
    }
    if (again.length > 0) resend(again);
  }

  /**
   * A state transfer is installed: it may hold our sent writes without this node ever seeing
   * their entries (answered through the transfer's list, which is bounded), so none of them is
   * ever sent again.
   */
  markUnsure(): void {
    for (const requestId of this.writeTerms.keys()) {
      const pending = this.pending.get(requestId);
      if (pending !== undefined) pending.unsure = true;
    }
  }

  /** A state transfer passed our sessions' unapplied writes: the reads sent before them are refused. */
  refuseReadsBeforeUnsettledWrites(): void {
    for (const read of this.sessions.takeReadsBeforeUnsettledWrites()) this.refuse(read, TRANSFERRED_PAST_READ);
  }

  /**
   * A write of ours that a state transfer holds (committed at `index`) but that was never applied
   * here: its client is answered now. Only a plain set's and a flush's replies do not depend on
   * the state before them; any other write's result is unknown here, and the reply says so.
   */
  answerTransferredWrite(requestId: RequestId, index: number): void {
    const pending = this.pending.get(requestId);
    if (pending === undefined || !isWrite(pending.op)) return;
    this.writeTerms.delete(requestId);
    this.pending.delete(requestId);
    const { op } = pending;
    if (op.kind === 'store' && op.verb === 'set') return this.reply(requestId, { kind: 'stored', cas: BigInt(index) });
    if (op.kind === 'flush_all') return this.reply(requestId, { kind: 'ok' });
    this.core.noteRefusal(TRANSFERRED_PAST_WRITE);
    this.reply(requestId, TRANSFERRED_PAST_WRITE);
  }

  /**
   * A write of ours committed at or before the start-over a transferred state descends from, never
   * applied here: it took effect on some replica, but every replica lost it before the start-over,
   * so its client must not hear that it is stored.
   */
  refuseErasedWrite(requestId: RequestId): void {
    const pending = this.pending.get(requestId);
    if (pending === undefined || !isWrite(pending.op)) return;
    this.refuse(requestId, ERASED_WRITE);
  }
}
