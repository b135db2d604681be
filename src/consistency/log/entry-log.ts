/**
 * The in-memory log: an array of entries after a snapshot point, indexed with an offset so that
 * compaction drops a prefix without renumbering.
 *
 * With `tracksKeys` (read leases) it also knows the last entry touching each key, so a lease
 * read waits only for the entries of its own keys.
 *
 * Invariants: `entries[i].index === snapshotIndex + 1 + i`; terms never decrease along the log;
 * every lookup is O(1); `bytes` is the sum of the entries' `opBytes`, and `#ends` their running
 * sums (so `floorWithin` is a binary search, cheap enough for every step); with `tracksKeys`, no
 * entry after the snapshot touches a key at an index above `lastIndexTouching` of it.
 */

import assert from 'node:assert';
import { itemAt } from '../../runtime/item-at.ts';
import { opKeys } from '../../store/types.ts';
import { opBytes, type LogEntry } from './types.ts';

/** Log entries after `snapshotIndex`, whose entry had term `snapshotTerm`. */
export class EntryLog {
  snapshotIndex = 0;
  snapshotTerm = 0;
  entries: LogEntry[] = [];
  /** What the entries after the snapshot hold, in `opBytes` (values, keys, an allowance each). */
  #bytes = 0;
  /**
   * `#ends[i]`: the bytes of every entry appended so far up to `entries[i]`, compacted ones
   * included; `#endsBase`, the same before `entries[0]`. So what a prefix holds is one lookup.
   */
  #ends: number[] = [];
  #endsBase = 0;
  /** With tracksKeys: the last index of an entry touching each key (maybe a compacted one). */
  readonly #lastTouch = new Map<string, number>();
  /** With tracksKeys: the last index of a flush_all (it touches every key). */
  #lastFlushIndex = 0;

  constructor(private readonly tracksKeys = false) {}

  /**
   * The last index of an entry touching any of `keys` (with tracksKeys), or a lower one if every
   * such entry is at or before the snapshot: everything after it leaves those keys as they are.
   */
  lastIndexTouching(keys: readonly string[]): number {
    assert(this.tracksKeys, 'the log does not track keys');
    let index = this.#lastFlushIndex;
    for (const key of keys) index = Math.max(index, this.#lastTouch.get(key) ?? 0);
    return index;
  }

  #touch(entry: LogEntry): void {
    if (entry.op === null) return;
    const keys = opKeys(entry.op);
    if (keys === null) this.#lastFlushIndex = entry.index;
    else for (const key of keys) this.#lastTouch.set(key, entry.index);
  }

  /** After a truncation: only what is left counts (what was compacted is applied everywhere it matters). */
  #retrack(): void {
    if (!this.tracksKeys) return;
    this.#lastTouch.clear();
    this.#lastFlushIndex = 0;
    for (const entry of this.entries) this.#touch(entry);
  }

  lastIndex(): number {
    return this.snapshotIndex + this.entries.length;
  }

  /** Bytes of the entries after the snapshot (`opBytes`), which the log holds in memory. */
  get bytes(): number {
    return this.#bytes;
  }

  lastTerm(): number {
    const last = this.entries[this.entries.length - 1];
    return last === undefined ? this.snapshotTerm : last.term;
  }

  /** The term of the entry at `index`, or null if compacted away or beyond the end. */
  termAt(index: number): number | null {
    if (index === this.snapshotIndex) return this.snapshotTerm;
    if (index < this.snapshotIndex || index > this.lastIndex()) return null;
    return itemAt(this.entries, index - this.snapshotIndex - 1).term;
  }

  entryAt(index: number): LogEntry {
    assert(index > this.snapshotIndex && index <= this.lastIndex(), `no entry at ${index}`);
    return itemAt(this.entries, index - this.snapshotIndex - 1);
  }

  /** Entries `fromIndex..toIndex`, both included (empty if from > to). */
  slice(fromIndex: number, toIndex: number): LogEntry[] {
    assert(fromIndex > this.snapshotIndex, 'slice reaches into the snapshot');
    return this.entries.slice(fromIndex - this.snapshotIndex - 1, toIndex - this.snapshotIndex);
  }

  append(entries: readonly LogEntry[]): void {
    for (const entry of entries) {
      assert.equal(entry.index, this.lastIndex() + 1, 'appended entries must be contiguous');
      assert(entry.term >= this.lastTerm(), 'terms never decrease along the log');
      this.entries.push(entry);
      this.#bytes += opBytes(entry.op);
      this.#ends.push(this.#endsBase + this.#bytes);
      if (this.tracksKeys) this.#touch(entry);
    }
  }

  /** Removes entries from `fromIndex` on and returns them. */
  truncateFrom(fromIndex: number): LogEntry[] {
    assert(fromIndex > this.snapshotIndex, 'cannot truncate into the snapshot');
    const removed = this.entries.splice(fromIndex - this.snapshotIndex - 1);
    this.#ends.length = this.entries.length;
    this.#bytes -= bytesOf(removed);
    if (removed.length > 0) this.#retrack();
    return removed;
  }

  /**
   * The greatest index to compact to so that what is left holds at most `bytesMax` bytes and
   * `countMax` entries (the snapshot index when it already does).
   */
  floorWithin(bytesMax: number, countMax: number): number {
    // Drop at least `dropped` entries: the fewest whose bytes leave at most bytesMax (a binary search).
    let dropped = Math.max(0, this.entries.length - countMax);
    if (this.#bytes - this.#prefixBytes(dropped) > bytesMax) {
      let low = dropped;
      let high = this.entries.length;
      while (low < high) {
        const middle = (low + high) >>> 1;
        if (this.#bytes - this.#prefixBytes(middle) > bytesMax) low = middle + 1;
        else high = middle;
      }
      dropped = low;
    }
    return this.snapshotIndex + dropped;
  }

  /** What the first `count` entries after the snapshot hold. */
  #prefixBytes(count: number): number {
    return count === 0 ? 0 : itemAt(this.#ends, count - 1) - this.#endsBase;
  }

  /** Drops entries up to `index` included (they are in the replica) and returns them. */
  compactTo(index: number): LogEntry[] {
    assert(index >= this.snapshotIndex && index <= this.lastIndex(), `cannot compact to ${index}`);
    if (index === this.snapshotIndex) return [];
    const term = this.termAt(index);
    assert(term !== null);
    const dropped = this.entries.slice(0, index - this.snapshotIndex);
    this.entries = this.entries.slice(index - this.snapshotIndex);
    this.#endsBase = itemAt(this.#ends, dropped.length - 1);
    this.#ends = this.#ends.slice(dropped.length);
    this.#bytes -= bytesOf(dropped);
    this.snapshotIndex = index;
    this.snapshotTerm = term;
    for (const [key, touched] of this.#lastTouch) if (touched <= index) this.#lastTouch.delete(key);
    return dropped;
  }

  /** Discards the whole log: it now starts after `index`, whose term was `term`. */
  resetTo(index: number, term: number): LogEntry[] {
    const dropped = this.entries;
    this.entries = [];
    this.#bytes = 0;
    this.#ends = [];
    this.#endsBase = 0;
    this.snapshotIndex = index;
    this.snapshotTerm = term;
    this.#retrack();
    return dropped;
  }

  /** Is a log ending at (lastIndex, lastTerm) at least as up to date as this one? */
  isUpToDate(lastIndex: number, lastTerm: number): boolean {
    return reaches({ index: lastIndex, term: lastTerm }, { index: this.lastIndex(), term: this.lastTerm() });
  }
}

/** Where a log ends: its last entry's index and term. */
export interface LogEnd {
  index: number;
  term: number;
}

/** Whether a log ending at `end` is at least as up to date as one ending at `other` (Raft §5.4.1). */
export function reaches(end: LogEnd, other: LogEnd): boolean {
  return end.term > other.term || (end.term === other.term && end.index >= other.index);
}

function bytesOf(entries: readonly LogEntry[]): number {
  let bytes = 0;
  for (const entry of entries) bytes += opBytes(entry.op);
  return bytes;
}
