/**
 * Client requests handed to the mode and not answered yet: each gets an id, and is answered once,
 * by the mode's reply, a store failure, a timeout or the controller stopping.
 *
 * A request is answered through a promise only if its reply did not come while `handle` still
 * ran (a read the replica served at once): that one is returned directly. The table is kept in
 * issue order, so the sweep for overdue requests stops at the first one not due.
 */

import { asRequestId, type RequestId } from '../consistency/types.ts';
import type { Reply } from '../protocol/types.ts';

/** A request the mode never answered is failed after this long, so no client hangs forever. */
export const requestTimeoutMs = 15_000;

/**
 * A request the mode has not answered yet. `resolve` is null while `handle` still runs: a reply
 * given meanwhile is kept in `reply` and returned directly.
 */
type PendingRequest = { resolve: ((reply: Reply) => void) | null; reply: Reply | null; deadlineMs: number; session: number };

export class PendingRequests {
  private readonly pending = new Map<RequestId, PendingRequest>();
  /** Per client connection, how many of its requests are unanswered (absent: none). */
  private readonly unansweredBySession = new Map<number, number>();
  private nextRequestId = 1;

  /** `answered`: told of every reply given, to count it. */
  constructor(private readonly answered: (reply: Reply) => void) {}

  /** A new request of client connection `session`; `reply()` is its answer, once given. */
  open(session: number, nowMs: number): { requestId: RequestId; reply: () => Reply | Promise<Reply> } {
    const requestId = asRequestId(this.nextRequestId++);
    const pending: PendingRequest = { resolve: null, reply: null, deadlineMs: nowMs + requestTimeoutMs, session };
    this.pending.set(requestId, pending);
    this.unansweredBySession.set(session, (this.unansweredBySession.get(session) ?? 0) + 1);
    const reply = (): Reply | Promise<Reply> => {
      if (pending.reply !== null) return pending.reply;
      return new Promise<Reply>((resolve) => {
        pending.resolve = resolve;
      });
    };
    return { requestId, reply };
  }

  /** The client connection a request came on, while it is unanswered. */
  sessionOf(requestId: RequestId): number | undefined {
    return this.pending.get(requestId)?.session;
  }

  /** Whether a request of client connection `session` is unanswered. */
  holdsAnyOf(session: number): boolean {
    return this.unansweredBySession.has(session);
  }

  /** Answers a request; a request already answered (or never made) is ignored. */
  resolve(requestId: RequestId, reply: Reply): void {
    const pending = this.pending.get(requestId);
    if (!pending) return;
    this.pending.delete(requestId);
    const left = (this.unansweredBySession.get(pending.session) ?? 1) - 1;
    if (left > 0) this.unansweredBySession.set(pending.session, left);
    else this.unansweredBySession.delete(pending.session);
    this.answered(reply);
    if (pending.resolve === null) pending.reply = reply;
    else pending.resolve(reply);
  }

  /** Answers every request due by `nowMs` with `reply()`. Map order is issue order: stops at the first not due. */
  answerOverdue(nowMs: number, reply: () => Reply): void {
    for (const [requestId, pending] of this.pending) {
      if (pending.deadlineMs > nowMs) break;
      this.resolve(requestId, reply());
    }
  }

  /** Answers every request still waiting with `reply()`. */
  answerAll(reply: () => Reply): void {
    for (const [requestId] of this.pending) this.resolve(requestId, reply());
  }
}
