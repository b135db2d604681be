/**
 * How an `Entry` and its key are laid out in memcached.
 *
 * Intuition: memcached's own flags, expiry and cas cannot carry the controller's metadata (its cas
 * values differ per replica), so each entry is one memcached value: a fixed header followed by the
 * value bytes. Keys are byte strings (latin1, one char per byte); memcached keys are safest as
 * printable ASCII without spaces, so other bytes are percent-encoded, and a key whose encoding
 * would exceed memcached's 250 bytes is replaced by a hash with the original key kept in the
 * header.
 *
 * Header, big-endian, version 1:
 *   0  u8[2] magic "mK"       2  u8 format version      3  u8 bits (1 = tombstone, 2 = key kept,
 *   4  u32 flags              8  f64 expiresAtMs           4 = resetCas, 8 = counter)
 *   16 u64 cas                24 (if key kept) u8 key length, then the key bytes;
 *   then (if resetCas) u64 resetCas; (if counter) u64 base, and for incs then decs a u8 count of
 *   (u8 node, u128 total) pairs (./counter.ts); then the value bytes.
 *
 * Invariants: `decodeEntry(encodeEntry(e, k))` gives back `e` (and `k` when kept); a value without
 * the magic or with an unknown version decodes to null, never throws; `memcachedKey` is injective
 * and its result is 1..250 printable ASCII characters without '%' collisions.
 */

import { createHash } from 'node:crypto';
import type { Entry } from './types.ts';
import { COUNTER_NODES_MAX, type CounterState, type NodeTotals } from './counter.ts';

const MAGIC_0 = 0x6d; // 'm'
const MAGIC_1 = 0x4b; // 'K'
const FORMAT_VERSION = 1;
const BIT_TOMBSTONE = 1;
const BIT_KEY_KEPT = 2;
const BIT_RESET_CAS = 4;
const BIT_COUNTER = 8;
/** Bytes of one (node, total) pair of a counter. */
const TOTAL_BYTES = 17;
/** Bytes of the fixed header before the optional key and the value. */
export const HEADER_BYTES = 24;

/** memcached's longest key, in bytes. */
export const MEMCACHED_KEY_BYTES_MAX = 250;
/** Prefix of a hashed key; '%' followed by '#' never appears in a percent-encoded key. */
const HASHED_PREFIX = '%#';

/** Seconds memcached keeps an item past its expiry, so every replica judges expiry itself. */
export const EXPIRY_SLACK_SECONDS = 60;
/** memcached reads exptimes up to 30 days as relative. */
const RELATIVE_EXPTIME_SECONDS_MAX = 60 * 60 * 24 * 30;
const U32_MAX = 0xffffffff;

function isPlainKeyByte(byte: number): boolean {
  return byte >= 0x21 && byte <= 0x7e && byte !== 0x25; // printable, no space, not '%'
}

/** The memcached key for one of our keys, and whether the original must be kept in the value. */
export function memcachedKey(key: string): { key: string; hashed: boolean } {
  let plain = true;
  for (let index = 0; index < key.length; index += 1) {
    if (!isPlainKeyByte(key.charCodeAt(index))) {
      plain = false;
      break;
    }
  }
  if (plain && key.length <= MEMCACHED_KEY_BYTES_MAX && key.length > 0) {
    return { key, hashed: false };
  }
  const encoded = percentEncode(key);
  if (encoded.length <= MEMCACHED_KEY_BYTES_MAX && encoded.length > 0) {
    return { key: encoded, hashed: false };
  }
  const digest = createHash('sha256').update(Buffer.from(key, 'latin1')).digest('base64url');
  return { key: HASHED_PREFIX + digest, hashed: true };
}

function percentEncode(key: string): string {
  let out = '';
  for (let index = 0; index < key.length; index += 1) {
    const byte = key.charCodeAt(index) & 0xff;
    out += isPlainKeyByte(byte) ? key[index] : '%' + byte.toString(16).toUpperCase().padStart(2, '0');
  }
  return out;
}

/**
 * Our key back from a memcached key (as listed by `lru_crawler metadump`); null for a hashed key
 * (the original is in the value) or a key that is not one of ours.
 */
export function keyFromMemcachedKey(memcached: string): string | null {
  if (memcached.startsWith(HASHED_PREFIX)) return null;
  let out = '';
  for (let index = 0; index < memcached.length; index += 1) {
    const char = memcached[index];
    if (char !== '%') {
      out += char;
      continue;
    }
    const hex = memcached.slice(index + 1, index + 3);
    if (!/^[0-9A-F]{2}$/.test(hex)) return null;
    out += String.fromCharCode(parseInt(hex, 16));
    index += 2;
  }
  return out;
}

/** Bytes of the memcached value holding `entry` (and `keptKey`). */
export function encodedEntryBytes(entry: Entry, keptKey: string | null): number {
  return HEADER_BYTES + (keptKey === null ? 0 : 1 + keptKey.length) + counterBytes(entry) + entry.value.length;
}

function counterBytes(entry: Entry): number {
  const reset = entry.resetCas === undefined ? 0 : 8;
  const counter = entry.counter;
  return counter === undefined ? reset : reset + 10 + TOTAL_BYTES * (counter.incs.length + counter.decs.length);
}

function writeTotals(out: Buffer, at: number, totals: NodeTotals): number {
  out[at] = totals.length;
  let offset = at + 1;
  for (const [node, total] of totals) {
    out[offset] = node;
    out.writeBigUInt64BE(total >> 64n, offset + 1);
    out.writeBigUInt64BE(total & 0xffffffffffffffffn, offset + 9);
    offset += TOTAL_BYTES;
  }
  return offset;
}

/** The totals at `at`, and the offset after them; null if they do not fit or are not ascending. */
function readTotals(raw: Buffer, at: number): { totals: Array<[number, bigint]>; end: number } | null {
  const count = raw[at];
  if (count === undefined || count > COUNTER_NODES_MAX || at + 1 + count * TOTAL_BYTES > raw.length) return null;
  const totals: Array<[number, bigint]> = [];
  let offset = at + 1;
  let previousNode = -1;
  for (let index = 0; index < count; index += 1) {
    const node = raw[offset];
    if (node === undefined || node <= previousNode) return null;
    previousNode = node;
    totals.push([node, (raw.readBigUInt64BE(offset + 1) << 64n) | raw.readBigUInt64BE(offset + 9)]);
    offset += TOTAL_BYTES;
  }
  return { totals, end: offset };
}

/** Writes the memcached value holding `entry` into `out` at `offset`; returns the offset after it. */
export function encodeEntryInto(out: Buffer, offset: number, entry: Entry, keptKey: string | null): number {
  out[offset] = MAGIC_0;
  out[offset + 1] = MAGIC_1;
  out[offset + 2] = FORMAT_VERSION;
  out[offset + 3] =
    (entry.tombstone === true ? BIT_TOMBSTONE : 0) |
    (keptKey === null ? 0 : BIT_KEY_KEPT) |
    (entry.resetCas === undefined ? 0 : BIT_RESET_CAS) |
    (entry.counter === undefined ? 0 : BIT_COUNTER);
  out.writeUInt32BE(entry.flags >>> 0, offset + 4);
  out.writeDoubleBE(entry.expiresAtMs, offset + 8);
  out.writeBigUInt64BE(entry.cas, offset + 16);
  let at = offset + HEADER_BYTES;
  if (keptKey !== null) {
    out[at] = keptKey.length;
    out.write(keptKey, at + 1, 'latin1');
    at += 1 + keptKey.length;
  }
  if (entry.resetCas !== undefined) {
    out.writeBigUInt64BE(entry.resetCas, at);
    at += 8;
  }
  if (entry.counter !== undefined) {
    out.writeBigUInt64BE(entry.counter.base, at);
    at = writeTotals(out, writeTotals(out, at + 8, entry.counter.incs), entry.counter.decs);
  }
  return at + entry.value.copy(out, at);
}

/** One memcached value holding `entry` (and `keptKey`, for a hashed key). */
export function encodeEntry(entry: Entry, keptKey: string | null): Buffer {
  const out = Buffer.allocUnsafe(encodedEntryBytes(entry, keptKey));
  encodeEntryInto(out, 0, entry, keptKey);
  return out;
}

/** The entry in a memcached value, and the key kept in it if any; null if it is not ours. */
export function decodeEntry(raw: Buffer): { entry: Entry; keptKey: string | null } | null {
  const bits = raw[3];
  if (raw.length < HEADER_BYTES || bits === undefined) return null;
  if (raw[0] !== MAGIC_0 || raw[1] !== MAGIC_1 || raw[2] !== FORMAT_VERSION) return null;
  let offset = HEADER_BYTES;
  let keptKey: string | null = null;
  if ((bits & BIT_KEY_KEPT) !== 0) {
    const length = raw[offset];
    if (length === undefined || offset + 1 + length > raw.length) return null;
    keptKey = raw.toString('latin1', offset + 1, offset + 1 + length);
    offset += 1 + length;
  }
  let resetCas: bigint | undefined;
  if ((bits & BIT_RESET_CAS) !== 0) {
    if (offset + 8 > raw.length) return null;
    resetCas = raw.readBigUInt64BE(offset);
    offset += 8;
  }
  let counter: CounterState | undefined;
  if ((bits & BIT_COUNTER) !== 0) {
    if (offset + 8 > raw.length) return null;
    const base = raw.readBigUInt64BE(offset);
    const incs = readTotals(raw, offset + 8);
    const decs = incs === null ? null : readTotals(raw, incs.end);
    if (incs === null || decs === null) return null;
    counter = { base, incs: incs.totals, decs: decs.totals };
    offset = decs.end;
  }
  const entry: Entry = {
    // Copy: memjs hands out slices of its receive buffer.
    value: Buffer.from(raw.subarray(offset)),
    flags: raw.readUInt32BE(4),
    expiresAtMs: raw.readDoubleBE(8),
    cas: raw.readBigUInt64BE(16),
  };
  if ((bits & BIT_TOMBSTONE) !== 0) entry.tombstone = true;
  if (resetCas !== undefined) entry.resetCas = resetCas;
  if (counter !== undefined) entry.counter = counter;
  return { entry, keptKey };
}

/**
 * memcached's exptime for an entry, `nowMs` being now by this controller's clock: with some slack,
 * so that memory is reclaimed but replicas still judge expiry themselves. In seconds from now up to
 * 30 days ahead, which memcached counts on its own clock: an absolute time is read against the wall
 * clock as memcached read it at its start, which a step of the system clock since then has moved
 * away from ours (an hour ahead, and memcached dropped at once what should live ten minutes).
 * Beyond 30 days, absolute Unix seconds (all memcached takes there); 0 (never) when the expiry is
 * 0 or beyond what the 32-bit field holds.
 */
export function memcachedExptimeSeconds(expiresAtMs: number, nowMs: number): number {
  if (expiresAtMs === 0) return 0;
  const fromNowSeconds = Math.ceil((expiresAtMs - nowMs) / 1000) + EXPIRY_SLACK_SECONDS;
  if (fromNowSeconds <= RELATIVE_EXPTIME_SECONDS_MAX) return Math.max(1, fromNowSeconds);
  const absoluteSeconds = Math.ceil(expiresAtMs / 1000) + EXPIRY_SLACK_SECONDS;
  return absoluteSeconds > U32_MAX ? 0 : absoluteSeconds;
}
