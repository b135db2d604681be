/**
 * The order of each client connection (a *session*) at one node of the replicated log: what lets
 * a pipelining client have its reads and writes in flight together and still see them take
 * effect in the order it sent them, as memcached executes one connection's commands.
 *
 * Intuition: a session's requests are kept here, in arrival order, from the moment the machine
 * takes them until they are settled: a write until it is applied to this node's replica (or
 * answered without being applied), a read until it is served. A read that arrives behind an
 * unsettled write of its session is *held*: it must see that write, so it is served only once
 * the write is settled (a linearizable one may get its read index meanwhile). A read that has
 * started (a linearizable read waiting for its read index) must not see the session's later
 * writes, so the machine serves it, at the latest, right before the first of them is applied here
 * (`takeReadsBefore`).
 *
 * Invariants:
 * - A held read always has an unsettled write of its session before it.
 * - Every tracked request belongs to exactly one session queue; an empty queue is dropped.
 * - The structure only tracks; what "start" and "serve" mean is the machine's (no effects here).
 */

import type { RequestId } from '../types.ts';

/** `held`: a read waiting for an earlier write of its session; `read`: a read that has started. */
type ItemKind = 'write' | 'held' | 'read';

interface Item {
  requestId: RequestId;
  kind: ItemKind;
  /** A write whose session had a later write settled before it (it may no longer go after that one). */
  overtaken?: true;
}

const NONE: readonly RequestId[] = Object.freeze([]);

/** Each session's unsettled requests at this node, in arrival order. */
export class SessionOrder {
  readonly #queues = new Map<number, Item[]>();
  readonly #sessionOf = new Map<RequestId, number>();

  /** Requests tracked, all sessions together. */
  get size(): number {
    return this.#sessionOf.size;
  }

  /** True when `session` has a write not yet settled: a read arriving now must be held. */
  hasUnsettledWrite(session: number): boolean {
    const queue = this.#queues.get(session);
    return queue !== undefined && queue.some((item) => item.kind === 'write');
  }

  /** True when `session` has any request not yet settled: a read arriving now is not served at once. */
  hasUnsettled(session: number): boolean {
    return this.#queues.has(session);
  }

  /** True when read `requestId`'s session has an earlier read not yet served: it must be served first. */
  hasEarlierRead(requestId: RequestId): boolean {
    const queue = this.#queueOf(requestId);
    if (queue === undefined) return false;
    for (const item of queue) {
      if (item.requestId === requestId) return false;
      if (item.kind !== 'write') return true;
    }
    return false;
  }

  /** The reads at the front of `session`'s queue, in order, up to its first write. */
  frontReads(session: number): RequestId[] {
    const front: RequestId[] = [];
    for (const item of this.#queues.get(session) ?? []) {
      if (item.kind === 'write') break;
      front.push(item.requestId);
    }
    return front;
  }

  /** The session of a tracked request. */
  sessionOf(requestId: RequestId): number | undefined {
    return this.#sessionOf.get(requestId);
  }

  /** True when `requestId` is a read held behind an unsettled write of its session. */
  isHeld(requestId: RequestId): boolean {
    const queue = this.#queueOf(requestId);
    return queue !== undefined && queue.some((item) => item.requestId === requestId && item.kind === 'held');
  }

  /** Tracks a request the machine took for `session`, after everything the session sent before. */
  add(session: number, requestId: RequestId, kind: ItemKind): void {
    const queue = this.#queues.get(session);
    if (queue === undefined) this.#queues.set(session, [{ requestId, kind }]);
    else queue.push({ requestId, kind });
    this.#sessionOf.set(requestId, session);
  }

  /**
   * The reads (held or started) that arrived in the session of write `requestId` before it, in
   * order, no longer tracked: the machine serves them now, before the write is applied.
   */
  takeReadsBefore(requestId: RequestId): readonly RequestId[] {
    const queue = this.#queueOf(requestId);
    if (queue === undefined) return NONE;
    // Usually nothing but writes comes before it (a bulk load's queue holds hundreds): no copy.
    let at = 0;
    let readsBefore = false;
    for (let item = queue[at]; item !== undefined && item.requestId !== requestId; item = queue[++at]) {
      if (item.kind !== 'write') readsBefore = true;
    }
    if (!readsBefore) return NONE;
    const reads: RequestId[] = [];
    const kept: Item[] = [];
    for (const [position, item] of queue.entries()) {
      if (position < at && item.kind !== 'write') {
        reads.push(item.requestId);
        this.#sessionOf.delete(item.requestId);
      } else {
        kept.push(item);
      }
    }
    this.#queues.set(this.#sessionOf.get(requestId) as number, kept);
    return reads;
  }

  /**
   * Every read (held or started) that arrived before an unsettled write of its session, in
   * order, no longer tracked: the replica is about to jump past writes it did not apply one by
   * one (a state transfer), and such a read could no longer be served without seeing them.
   */
  takeReadsBeforeUnsettledWrites(): RequestId[] {
    const reads: RequestId[] = [];
    for (const [session, queue] of this.#queues) {
      let lastWrite = queue.length - 1;
      while (lastWrite >= 0 && queue[lastWrite]?.kind !== 'write') lastWrite -= 1;
      if (lastWrite < 0) continue;
      const kept = queue.filter((item, at) => item.kind === 'write' || at > lastWrite);
      for (const item of queue.slice(0, lastWrite)) {
        if (item.kind === 'write') continue;
        reads.push(item.requestId);
        this.#sessionOf.delete(item.requestId);
      }
      this.#queues.set(session, kept);
    }
    return reads;
  }

  /**
   * `requestId` is settled (applied, served or answered): it stops being tracked. Returns the
   * held reads that may start now — those before the session's first unsettled write — which
   * are tracked from now on as started reads.
   */
  settle(requestId: RequestId): RequestId[] {
    const session = this.#sessionOf.get(requestId);
    if (session === undefined) return [];
    this.#sessionOf.delete(requestId);
    const queue = this.#queues.get(session) as Item[];
    const at = queue.findIndex((item) => item.requestId === requestId);
    for (let before = 0; queue[at]?.kind === 'write' && before < at; before += 1) {
      const item = queue[before] as Item;
      if (item.kind === 'write') item.overtaken = true;
    }
    queue.splice(at, 1);
    if (queue.length === 0) {
      this.#queues.delete(session);
      return [];
    }
    const released: RequestId[] = [];
    for (const item of queue) {
      if (item.kind === 'write') break;
      if (item.kind === 'held') {
        item.kind = 'read';
        released.push(item.requestId);
      }
    }
    return released;
  }

  /** True when a write `requestId`'s session sent after it was settled first. */
  isOvertaken(requestId: RequestId): boolean {
    return this.#queueOf(requestId)?.find((item) => item.requestId === requestId)?.overtaken === true;
  }

  /** The writes `requestId`'s session sent after it and has not settled, in order. */
  writesAfter(requestId: RequestId): RequestId[] {
    const queue = this.#queueOf(requestId) ?? [];
    const at = queue.findIndex((item) => item.requestId === requestId);
    return at === -1 ? [] : queue.slice(at + 1).filter((item) => item.kind === 'write').map((item) => item.requestId);
  }

  #queueOf(requestId: RequestId): Item[] | undefined {
    const session = this.#sessionOf.get(requestId);
    return session === undefined ? undefined : this.#queues.get(session);
  }
}
