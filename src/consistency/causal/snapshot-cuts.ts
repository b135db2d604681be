/**
 * A snapshot for a peer, read without holding up this node's writes. A snapshot must be one cut
 * of the replica (causal replays are plain: a key read late could show a write without what it
 * depends on, read early), and one read of the whole replica behind a barrier held every write
 * here for as long as it ran: seconds, over millions of keys. Instead the replica is read page by
 * page, each key as of some point during the read, while the keys every write effect names are
 * noted; then only those keys are read again, page by page while many, and last in one read
 * ordered with the calls on them. Every key not written since its last read holds what it held at
 * that last read's issue: together, the replica as of it, which is when the machine names what
 * the snapshot covers (`to`, `deps`). Only the writes of keys read again wait, for that read only.
 *
 * Owns: per read in flight (its fetch token), the keys written since it was issued. A flush
 * (every key written) ends the rounds: the last read is of every key, behind a barrier.
 * Invariants: every store effect of a step that issued a read, or any later step, is noted
 * against it (a write issued in the same step before the read counts too: more is read again,
 * never less).
 */

import type { Effect, KeyedEntry } from '../types.ts';
import { changedKeys } from '../changed-keys.ts';
import type { CausalMessage } from './messages.ts';

/** What a snapshot's reads hold so far, in key order, and the keys the read in flight reads again (sorted). */
export interface CutRead {
  entries: KeyedEntry[];
  keys: string[];
}

/** Most rounds of reading again page by page before the last read, whatever it holds up. */
export const CUT_PAGED_ROUNDS_MAX = 3;

export class SnapshotCuts {
  /** A read in flight (its fetch token) → the keys written since it was issued; null: every key. */
  private readonly written = new Map<number, Set<string> | null>();

  /** A read of a snapshot was issued as fetch `token`: writes count against it from this step on. */
  begin(token: number): void {
    this.written.set(token, new Set());
  }

  /** Notes against every read in flight the keys `effects` write. */
  noteWrites(effects: ReadonlyArray<Effect<CausalMessage>>): void {
    if (this.written.size === 0) return;
    for (const effect of effects) {
      const keys = changedKeys(effect);
      if (keys === undefined) continue;
      for (const [token, written] of this.written) {
        if (written === null) continue;
        if (keys === null) this.written.set(token, null);
        else for (const key of keys) written.add(key);
      }
    }
  }

  /** Read `token` returned: the keys written since it was issued, sorted (null: every key; undefined: not a read of ours). */
  finish(token: number): string[] | null | undefined {
    const written = this.written.get(token);
    this.written.delete(token);
    return written === null || written === undefined ? written : [...written].sort();
  }

  /** The replica was emptied: the reads in flight are dropped. */
  clear(): void {
    this.written.clear();
  }
}

/**
 * `read`'s entries, but those of its `keys` replaced by `again` (read since: a key absent from it is
 * gone). All three are in key order, and so is the result.
 */
export function spliceRead(read: CutRead, again: readonly KeyedEntry[]): KeyedEntry[] {
  const { entries, keys } = read;
  // Nothing written while it was read (the common case): a whole replica's worth is not copied.
  if (keys.length === 0 && again.length === 0) return entries;
  const result: KeyedEntry[] = [];
  let k = 0;
  let a = 0;
  for (const pair of entries) {
    const key = pair[0];
    while (k < keys.length && (keys[k] as string) < key) k += 1;
    if (keys[k] === key) continue;
    for (let next = again[a]; next !== undefined && next[0] < key; next = again[a]) {
      result.push(next);
      a += 1;
    }
    result.push(pair);
  }
  for (; a < again.length; a += 1) result.push(again[a] as KeyedEntry);
  return result;
}
