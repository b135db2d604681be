/** What eventual mode asks of one entry or a batch of them: pure helpers of ./machine.ts and its parts. */

import type { KeyedEntry } from '../types.ts';
import type { Entry } from '../../store/types.ts';

/**
 * Whether merging `entry` over the indexed version may leave a state other than either: counter
 * metadata on a version the index does not hold, or an older version (over a counter here).
 */
export function mayRejoin(entry: Entry, indexed: bigint | undefined): boolean {
  const counted = entry.counter !== undefined || entry.resetCas !== undefined;
  if (indexed === undefined) return counted;
  return entry.cas < indexed || (entry.cas !== indexed && counted);
}

/** A tombstone, or an entry that expires: the kinds collection waits on every peer to hold. */
export function mayDie(entry: Entry): boolean {
  return entry.tombstone === true || entry.expiresAtMs !== 0;
}

/**
 * The greatest version among `entries` up to `latest` (0 when none): the clock merges it once,
 * which is the same as merging each in turn (merging keeps the later clock), without unpacking
 * every one.
 */
export function newestVersion(entries: readonly KeyedEntry[], latest: bigint): bigint {
  let newest = 0n;
  for (const [, entry] of entries) if (entry.cas > newest && entry.cas <= latest) newest = entry.cas;
  return newest;
}

/** A tombstone at `cas`, counting from the reset at `resetCas` when that is older. */
export function tombstoneEntry(cas: bigint, resetCas = cas): Entry {
  const entry: Entry = { value: Buffer.alloc(0), flags: 0, expiresAtMs: 0, cas, tombstone: true };
  return resetCas === cas ? entry : { ...entry, resetCas };
}

