/**
 * The Replica's plain data and pure helpers: what its key index keeps per key, what its value cache
 * reports, and the entries and replies built from entries (a tombstone, a get's reply). No state and
 * no I/O: ./replica-core.ts and ./replica.ts share them, and the status page reads IndexRecord.
 *
 * Invariants:
 * - A get's reply lists only live entries (see isLive), in the order of the keys asked for.
 * - A tombstone is an empty, flagless entry that never expires, carrying the delete's cas.
 */

import type { Item, Reply } from '../protocol/types.ts';
import { refused } from '../protocol/refusals.ts';
import { isLive } from './apply.ts';
import type { Entry } from './types.ts';

/** What the index remembers of one key (./key-index.ts keeps it in arrays; this is a copy). */
export interface IndexRecord {
  cas: bigint;
  expiresAtMs: number;
  tombstone: boolean;
  /** The backend is known to hold exactly this version (the write that set it succeeded). */
  settled: boolean;
  /** The entry carries counter metadata (./counter.ts): a merge must read it. */
  counted: boolean;
  /**
   * Listed at start and not read since: the backend holds the key (or did when listed), in a
   * version not known here (`cas` -1, unsettled). Its first read settles it.
   */
  listed: boolean;
}

/** What the value cache holds, for `stats` and tests. */
export interface CacheUsage {
  entries: number;
  bytes: number;
  bytesMax: number;
  hits: number;
  misses: number;
}

/** An entry merges by ./counter.ts rather than by greater cas. */
export function isCounted(entry: Entry): boolean {
  return entry.counter !== undefined || entry.resetCas !== undefined;
}

const EMPTY = Buffer.alloc(0);
/**
 * The reply to a replayed op that the replica already holds. Usually nobody waits for it; a client
 * whose write's apply failed (it took effect after all) does, and learns just that.
 */
export const ALREADY_APPLIED: Reply = refused('backend', 'write applied before the replica failed; its result is lost');

/**
 * `entry` without its value: what a read of every key for its versions keeps (a replica's worth of
 * values would be held only to be dropped).
 */
export function withoutValue(entry: Entry): Entry {
  return { ...entry, value: EMPTY };
}

/** The tombstone a delete leaves (with tombstones on): reads as absent, carries the delete's cas. */
export function tombstoneEntry(cas: bigint): Entry {
  return { value: EMPTY, flags: 0, expiresAtMs: 0, cas, tombstone: true };
}

/** The item a get or gat replies with for `key`. */
export function toItem(key: string, entry: Entry): Item {
  return { key, flags: entry.flags, value: entry.value, cas: entry.cas };
}

/** The reply to a get: the live entries, in key order. */
export function valuesReply(keys: readonly string[], entries: ReadonlyArray<Entry | undefined>, nowMs: number): Reply {
  const items: Item[] = [];
  for (let position = 0; position < keys.length; position += 1) {
    const key = keys[position];
    const entry = entries[position];
    if (key !== undefined && isLive(entry, nowMs)) items.push(toItem(key, entry));
  }
  return { kind: 'values', items };
}
