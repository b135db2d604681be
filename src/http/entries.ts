/**
 * The status page's listing of stored entries: a page of keys in byte order after a cursor (the
 * last key of the previous page), with each entry's size, flags and expiry.
 *
 * The replica's index is a hash map, so a page is the `limit` smallest live keys above the cursor,
 * found in one pass over the index (O(keys) per page, no sorted copy kept); sizes and flags come
 * from one bounded read of those keys. Keys are client bytes (latin1 strings): `displayKey` makes
 * them printable, and the HTML around them escapes them.
 */

import { itemAt } from '../runtime/item-at.ts';
import type { IndexRecord } from '../store/replica.ts';
import type { StatusSource } from './source.ts';

/** Most entries on one page. */
export const ENTRIES_PER_PAGE_MAX = 100;
/** A page waits this long for sizes and flags before it is shown without them. */
const FETCH_TIMEOUT_MS = 2000;

export interface EntryRow {
  key: string;
  /** Bytes of the value; null when the read failed or timed out. */
  sizeBytes: number | null;
  flags: number | null;
  /** Absolute expiry, ms since the epoch; 0 = never. */
  expiresAtMs: number;
}

export interface EntriesPage {
  rows: EntryRow[];
  /** Keys the replica holds (tombstones included). */
  keyCount: number;
  /** The cursor of the next page, or null on the last one. */
  next: string | null;
  /** Why sizes are missing, if they are. */
  readError: string | null;
}

/**
 * The `limit` smallest keys greater than `after` (null: from the first) of live records, in byte
 * order, and whether more follow.
 */
export function keysAfter(
  index: Iterable<readonly [string, Readonly<IndexRecord>]>,
  options: { after: string | null; limit: number; nowMs: number },
): { keys: string[]; more: boolean } {
  const { after, limit, nowMs } = options;
  // Sorted, at most limit + 1 long: the extra one tells whether another page follows.
  const smallest: string[] = [];
  for (const [key, record] of index) {
    if (after !== null && key <= after) continue;
    if (record.tombstone || (record.expiresAtMs !== 0 && record.expiresAtMs <= nowMs)) continue;
    const largest = smallest.at(-1);
    if (smallest.length > limit && largest !== undefined && key >= largest) continue;
    smallest.splice(insertionPoint(smallest, key), 0, key);
    if (smallest.length > limit + 1) smallest.pop();
  }
  const more = smallest.length > limit;
  return { keys: smallest.slice(0, limit), more };
}

function insertionPoint(sorted: readonly string[], key: string): number {
  let low = 0;
  let high = sorted.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (itemAt(sorted, middle) < key) low = middle + 1;
    else high = middle;
  }
  return low;
}

/** One page of entries after `after`. */
export async function entriesPage(
  source: StatusSource, options: { after: string | null; limit: number; nowMs: number },
): Promise<EntriesPage> {
  const { keys, more } = keysAfter(source.indexEntries(), options);
  let readError: string | null = null;
  const byKey = new Map<string, { sizeBytes: number; flags: number; expiresAtMs: number }>();
  if (keys.length > 0) {
    try {
      for (const [key, entry] of await withTimeout(source.fetch(keys), FETCH_TIMEOUT_MS)) {
        if (!entry.tombstone) byKey.set(key, { sizeBytes: entry.value.length, flags: entry.flags, expiresAtMs: entry.expiresAtMs });
      }
    } catch (error) {
      readError = error instanceof Error ? error.message : String(error);
    }
  }
  const rows = keys.map((key): EntryRow => {
    const stored = byKey.get(key);
    return { key, sizeBytes: stored?.sizeBytes ?? null, flags: stored?.flags ?? null, expiresAtMs: stored?.expiresAtMs ?? 0 };
  });
  return { rows, keyCount: source.keyCount(), next: more ? (keys.at(-1) ?? null) : null, readError };
}

/**
 * A key as printable text: its bytes as UTF-8 when they are valid UTF-8 with no control
 * characters, else printable ASCII as it is and every other byte as `\xNN` (a backslash as `\\`).
 */
export function displayKey(key: string): string {
  const bytes = Buffer.from(key, 'latin1');
  const utf8 = bytes.toString('utf8');
  if (Buffer.from(utf8, 'utf8').equals(bytes) && ![...utf8].some(isControlOrBackslash)) return utf8;
  let text = '';
  for (const byte of bytes) {
    if (byte === 0x5c) text += '\\\\';
    else if (byte >= 0x20 && byte < 0x7f) text += String.fromCharCode(byte);
    else text += `\\x${byte.toString(16).padStart(2, '0')}`;
  }
  return text;
}

function isControlOrBackslash(char: string): boolean {
  const code = char.codePointAt(0) ?? 0;
  return code < 0x20 || (code >= 0x7f && code <= 0x9f) || char === '\\';
}

function withTimeout<T>(promise: Promise<T>, timeoutMs: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no answer from the replica within ${timeoutMs} ms`)), timeoutMs);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error instanceof Error ? error : new Error(String(error)));
      },
    );
  });
}
