/**
 * The forwarded writes a node compacted out of its log lately: what lets a state transfer tell a
 * lagging node which of its own writes the transferred state already holds, and a leader refuse
 * to log again a forward the network duplicated after its entry was compacted.
 *
 * Intuition: a node forwards a client's write to the leader and then falls behind (paused, cut
 * off). The leader commits the write and compacts past it; the node comes back to a state
 * transfer that holds the write, while its entry never reached the node. Without word from the
 * leader, the node's client would wait for its request timeout. So the leader lists, with the
 * transfer, the node's writes at or before the transfer's index: those still in its log, and
 * those it compacted lately, kept here.
 *
 * Invariants:
 * - A record is kept for `keepMs` after its compaction: the request timeout, past which its origin
 *   has answered its client anyway. Never more than `max` records: the oldest go first.
 * - Records are in compaction order, so in index order: `committedThrough` reads them newest first.
 * - Every forward compacted at an index above `forgottenThrough` is still recorded here.
 */

import { itemAt } from '../../runtime/item-at.ts';
import type { PeerId, RequestId } from '../types.ts';
import { ProposalMap } from './proposal-map.ts';
import type { CommittedForward, LogEntry } from './types.ts';

interface Compacted extends CommittedForward {
  origin: PeerId;
  compactedAtMs: number;
}

export class CompactedForwards {
  /** Oldest first. Trimmed only when a compaction or a transfer reads it: rare enough to splice. */
  #records: Compacted[] = [];
  /** The records' request identities. */
  readonly #keys = new ProposalMap<true>();
  /** At least the greatest index of a forward compacted and not recorded (or no longer): see `forgottenThrough`. */
  #forgottenThrough = 0;

  constructor(
    private readonly keepMs: number,
    private readonly max: number,
  ) {}

  /** Keeps the forwarded writes among `dropped` (entries just compacted away, oldest first). */
  note(dropped: readonly LogEntry[], self: PeerId, nowMs: number): void {
    // Only the newest `max` are kept (see prune): the others are not looked at. (A compaction of
    // 700,000 entries spent 0.6 s noting every forward among them, to keep the newest `max`.)
    const newest: LogEntry[] = [];
    let at = dropped.length - 1;
    for (; at >= 0 && newest.length < this.max; at -= 1) {
      const entry = itemAt(dropped, at);
      if (entry.requestId !== null && entry.origin !== self) newest.push(entry);
    }
    if (at >= 0) this.#forgottenThrough = Math.max(this.#forgottenThrough, itemAt(dropped, at).index);
    for (let at = newest.length - 1; at >= 0; at -= 1) {
      const { origin, incarnation, requestId, index } = itemAt(newest, at);
      if (requestId === null) continue;
      this.#records.push({ origin, incarnation, requestId, index, compactedAtMs: nowMs });
      this.#keys.set(origin, incarnation, requestId, true);
    }
    this.prune(nowMs);
  }

  /** `origin`'s writes compacted at or before `index`, newest first, at most `limit`. */
  committedThrough(origin: PeerId, index: number, nowMs: number, limit: number): CommittedForward[] {
    this.prune(nowMs);
    const found: CommittedForward[] = [];
    for (let at = this.#records.length - 1; at >= 0 && found.length < limit; at -= 1) {
      const record = itemAt(this.#records, at);
      if (record.origin !== origin || record.index > index) continue;
      found.push({ incarnation: record.incarnation, requestId: record.requestId, index: record.index });
    }
    return found;
  }

  /** Whether `origin`'s write `requestId` of its run `incarnation` was compacted lately. */
  has(origin: PeerId, incarnation: number, requestId: RequestId, nowMs: number): boolean {
    if (this.#keys.size === 0) return false;
    this.prune(nowMs);
    return this.#keys.has(origin, incarnation, requestId);
  }

  /**
   * No forward compacted at an index above this was forgotten: one that is neither in the log nor
   * recorded here, and could only have been logged above this index, was never logged.
   */
  forgottenThrough(nowMs: number): number {
    this.prune(nowMs);
    return this.#forgottenThrough;
  }

  /** Records kept now (for tests and inspection). */
  get size(): number {
    return this.#records.length;
  }

  /** Drops the records past `keepMs`, then the oldest beyond `max`. */
  private prune(nowMs: number): void {
    const first = this.#records[0];
    if (first !== undefined && first.compactedAtMs + this.keepMs >= nowMs && this.#records.length <= this.max) return;
    const fresh = this.#records.findIndex((record) => record.compactedAtMs + this.keepMs >= nowMs);
    const stale = fresh === -1 ? this.#records.length : fresh;
    const gone = this.#records.splice(0, Math.max(stale, this.#records.length - this.max));
    for (const record of gone) {
      this.#keys.delete(record.origin, record.incarnation, record.requestId);
      this.#forgottenThrough = Math.max(this.#forgottenThrough, record.index);
    }
  }
}
