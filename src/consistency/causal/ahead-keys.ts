/**
 * Keys that hold a peer's write beyond the visible vector. memcached may refuse part of a merge
 * for want of memory: the merge is then undone in the vector (./merging.ts's onRefused), but the
 * keys it and the merges after it did write keep their new values. Read, one of them would show a
 * write without what it depends on (the fault runner caught a key merged from a batch read beside
 * an older key of an earlier batch memcached had refused). So until the vector covers them again
 * (the senders send those batches again), those keys are not shown: every request whose outcome
 * shows one of them is refused (`not_caught_up`), snapshots for peers leave them out, and a plain
 * set, whose outcome shows nothing, makes the key ours again.
 *
 * Owns: key → per sender (node index), the end (`to`) of the latest batch whose undone merge wrote it.
 * Invariants: a key is held only while the vector peers are told has not reached all its ends.
 */

import type { Op } from '../../store/types.ts';
import { opKeys } from '../../store/types.ts';
import { refused, type Refusal } from '../../protocol/refusals.ts';
import { componentOf, type VersionVector } from './messages.ts';

export class AheadKeys {
  private readonly ahead = new Map<string, Map<number, bigint>>();

  get size(): number {
    return this.ahead.size;
  }

  /** The keys held now. */
  keys(): ReadonlySet<string> {
    return new Set(this.ahead.keys());
  }

  /** Whether `key` holds a write beyond the vector. */
  has(key: string): boolean {
    return this.ahead.has(key);
  }

  /** A merge of `sender`'s batch ending at `to` wrote `keys` (or may have) and was undone in the vector. */
  note(keys: readonly string[], sender: number, to: bigint): void {
    for (const key of keys) {
      const ends = this.ahead.get(key) ?? new Map<number, bigint>();
      if ((ends.get(sender) ?? -1n) < to) ends.set(sender, to);
      this.ahead.set(key, ends);
    }
  }

  /** Forgets the keys whose writes the vector `told` covers again. */
  prune(told: VersionVector): void {
    for (const [key, ends] of this.ahead) {
      if ([...ends].every(([sender, to]) => to <= componentOf(told, sender))) this.ahead.delete(key);
    }
  }

  /** Why `op` is refused now: it would show a key held here (a plain set or flush_all shows none). */
  refusal(op: Op): Refusal | null {
    if (this.ahead.size === 0) return null;
    if (op.kind === 'flush_all' || (op.kind === 'store' && op.verb === 'set' && (op.casUnique ?? 0n) === 0n)) return null;
    const keys = opKeys(op) ?? [];
    if (!keys.some((key) => this.ahead.has(key))) return null;
    return refused('not_caught_up', 'memcached refused part of a merge for want of memory; this key waits until it is merged again');
  }

  /** A write of ours to `keys` (null: every key) replaced what they held. */
  written(keys: readonly string[] | null): void {
    if (keys === null) this.ahead.clear();
    else for (const key of keys) this.ahead.delete(key);
  }

  /** The replica was emptied. */
  clear(): void {
    this.ahead.clear();
  }
}
