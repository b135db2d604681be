/**
 * A state transfer's chunk, held compactly while it waits to be sent and acknowledged
 * (./transfer-send.ts). The sender holds the replica it read until each chunk is acked; as
 * entries, that is some five objects a key (the pair, the entry, its cas, its value's buffer
 * view), millions of them on a heap whose full collections then stop the controller for a second
 * or more (long enough for its followers to elect another leader). Packed, a chunk is a handful of
 * objects: its keys, one buffer of its values and typed arrays of the rest; the entries are made
 * again when the chunk is sent.
 *
 * Invariants: `unpackChunk(packChunk(entries))` equals `entries`. An entry with more than a plain
 * value (a tombstone, a counter, a reset version), or whose flags or cas do not fit the typed
 * arrays, is held as it is, as is every entry of its chunk.
 */

import type { Entry } from '../../store/types.ts';
import type { KeyedEntry } from '../types.ts';

/** A chunk held for sending: packed, or its entries as read. */
export type HeldChunk = PackedChunk | readonly KeyedEntry[];

const U64_LIMIT = 1n << 64n;

class PackedChunk {
  constructor(
    readonly keys: readonly string[],
    readonly values: Buffer,
    /** Where each value ends in `values`. */
    readonly valueEnds: Uint32Array,
    readonly flags: Uint32Array,
    readonly expiresAtMs: Float64Array,
    readonly cas: BigUint64Array,
  ) {}
}

function isPlain(entry: Entry): boolean {
  return entry.tombstone === undefined && entry.resetCas === undefined && entry.counter === undefined
    && Number.isInteger(entry.flags) && entry.flags >= 0 && entry.flags <= 0xffff_ffff
    && entry.cas >= 0n && entry.cas < U64_LIMIT;
}

/** `entries` packed, or as they are when one of them does not pack (see the header). */
export function packChunk(entries: readonly KeyedEntry[]): HeldChunk {
  if (entries.length === 0 || !entries.every(([, entry]) => isPlain(entry))) return entries;
  const count = entries.length;
  const keys = new Array<string>(count);
  const valueEnds = new Uint32Array(count);
  const flags = new Uint32Array(count);
  const expiresAtMs = new Float64Array(count);
  const cas = new BigUint64Array(count);
  let end = 0;
  entries.forEach(([key, entry], at) => {
    keys[at] = key;
    end += entry.value.length;
    valueEnds[at] = end;
    flags[at] = entry.flags;
    expiresAtMs[at] = entry.expiresAtMs;
    cas[at] = entry.cas;
  });
  const values = Buffer.concat(entries.map(([, entry]) => entry.value), end);
  return new PackedChunk(keys, values, valueEnds, flags, expiresAtMs, cas);
}

/** The entries of a held chunk (made again, their values views of the chunk's buffer). */
export function unpackChunk(chunk: HeldChunk): KeyedEntry[] {
  if (!(chunk instanceof PackedChunk)) return [...chunk];
  const { keys, values, valueEnds, flags, expiresAtMs, cas } = chunk;
  return keys.map((key, at) => {
    const value = values.subarray(at === 0 ? 0 : valueEnds[at - 1], valueEnds[at]);
    const entry: Entry = { value, flags: flags[at] as number, expiresAtMs: expiresAtMs[at] as number, cas: cas[at] as bigint };
    return [key, entry];
  });
}
