/**
 * The first of the value decoder's two passes: it walks a payload building nothing and refuses
 * it unless it is one value, written exactly as ValueEncoder writes it, within DecodeLimits.
 *
 * Intuition: a payload's bytes say what the decoded value will cost before any of it exists. An
 * empty object is one byte on the wire and ~64 bytes of heap, so a 6 MiB frame could otherwise
 * build ~400 MiB. This pass adds up an estimate of that heap (HEAP_BYTES) and refuses it past a
 * budget proportional to the payload, as well as past a depth, counts and a bigint size.
 *
 * Invariants:
 * - Builds nothing: refusing a payload costs time, not memory. Every length is checked against
 *   the bytes left, and every limit, before it is stepped over.
 * - What passes is canonical, so it re-encodes to the very bytes it came from: the short form
 *   wherever it fits, integers never as floats, valid UTF-8, array-index keys first and ascending
 *   (as JavaScript enumerates them). Duplicate keys are left to the builder, which has the strings.
 */

import { isUtf8 } from 'node:buffer';
import * as tags from './value-tags.ts';

/** Limits on one decoded payload. Start from DECODE_LIMITS_DEFAULT and override what you need. */
export interface DecodeLimits {
  /** Deepest nesting: a top-level scalar is depth 0, a top-level array's elements depth 1. */
  depthMax: number;
  /** Most elements in one array, or fields in one object. */
  collectionItemsMax: number;
  /** Most values in one payload (the top-level value, every element and every field). */
  totalItemsMax: number;
  /** Largest bigint magnitude, in bits. */
  bigintBitsMax: number;
  /** Estimated heap bytes the decoded value may take per payload byte, beyond the allowance. */
  heapBytesPerPayloadByteMax: number;
  /** Estimated heap bytes any payload may take, however short. */
  heapBytesAllowance: number;
}

/**
 * Defaults. The heap budget (16 bytes per payload byte, and 64 KiB) leaves room for every message
 * mckv sends (~10 at worst: [key, version] pairs) while refusing a payload of small containers.
 */
export const DECODE_LIMITS_DEFAULT: Readonly<DecodeLimits> = Object.freeze({
  depthMax: tags.VALUE_DEPTH_MAX,
  collectionItemsMax: 1024 * 1024,
  totalItemsMax: 4 * 1024 * 1024,
  bigintBitsMax: tags.BIGINT_BITS_MAX,
  heapBytesPerPayloadByteMax: 16,
  heapBytesAllowance: 64 * 1024,
});

/**
 * Estimated V8 heap bytes (64-bit, as Node ships it) of what the decoder builds, measured with
 * process.memoryUsage. Strings of 0 or 1 character are V8's shared constants; smis cost nothing.
 */
export const HEAP_BYTES = Object.freeze({
  arraySlot: 8,
  array: 32,
  arrayElements: 16,
  /** 56 of its own and a share of a hidden class, which each object of a new key set costs. */
  object: 120,
  /** A field's share of the object's properties and hidden class, beyond its key's bytes. */
  field: 48,
  string: 16,
  float: 16,
  bigint: 16,
  bigintWord: 8,
  buffer: 96,
});

/** Why a payload is refused. */
export type ValueDecodeReason =
  | 'truncated'
  | 'length_exceeds_payload'
  | 'trailing_bytes'
  | 'unknown_tag'
  | 'too_deep'
  | 'collection_too_large'
  | 'too_many_items'
  | 'bigint_too_large'
  | 'bad_bigint'
  | 'over_heap_budget'
  | 'not_canonical'
  | 'bad_utf8'
  | 'key_not_string'
  | 'duplicate_key';

/** A refused payload: the reason, the byte offset it was found at, and a line for logs. */
export interface ValueDecodeFailure {
  ok: false;
  reason: ValueDecodeReason;
  at: number;
  detail: string;
}

/** One pass over one payload; `failure` is set once a check returned false. */
class Check {
  position = 0;
  items = 1;
  heapBytes = 0;
  failure: ValueDecodeFailure | null = null;
  readonly heapBytesMax: number;

  constructor(
    readonly payload: Buffer,
    readonly limits: DecodeLimits,
  ) {
    this.heapBytesMax = limits.heapBytesAllowance + limits.heapBytesPerPayloadByteMax * payload.length;
  }

  get remaining(): number {
    return this.payload.length - this.position;
  }

  fail(reason: ValueDecodeReason, detail: string, at = this.position): false {
    this.failure = { ok: false, reason, at, detail: `${detail} at byte ${at}` };
    return false;
  }

  need(byteCount: number): boolean {
    return this.remaining >= byteCount || this.fail('truncated', `${byteCount} bytes expected but the payload ended`);
  }

  /** The next byte, moved past; null, failed as truncated, at the end of the payload. */
  byte(): number | null {
    const byte = this.payload[this.position];
    if (byte === undefined) {
      this.need(1); // at the end: fails as truncated
      return null;
    }
    this.position++;
    return byte;
  }

  charge(heapBytes: number): boolean {
    this.heapBytes += heapBytes;
    if (this.heapBytes <= this.heapBytesMax) return true;
    return this.fail('over_heap_budget', `decoded value would take over ${this.heapBytesMax} bytes of heap`);
  }

  /** Reads a u32 length after a tag; the caller checks what it may be. */
  u32(): number | null {
    if (!this.need(4)) return null;
    this.position += 4;
    return this.payload.readUInt32LE(this.position - 4);
  }
}

/** Checks that `payload` holds exactly one canonical encoded value within `limits`; null if so. */
export function checkPayload(payload: Buffer, limits: DecodeLimits): ValueDecodeFailure | null {
  const check = new Check(payload, limits);
  if (checkValue(check, 0) && check.remaining !== 0) check.fail('trailing_bytes', `${check.remaining} trailing bytes after the value`);
  return check.failure;
}

function checkValue(check: Check, depth: number): boolean {
  const tag = check.byte();
  if (tag === null) return false;
  if (tag <= tags.FIXINT_MAX || tag >= tags.NEGATIVE_FIXINT) return true;
  if (tag < tags.FIXARRAY) return checkString(check, tag & 0x1f);
  if (tag < tags.FIXOBJECT) return checkArray(check, tag & 0x0f, depth);
  if (tag < tags.TAG_NULL) return checkObject(check, tag & 0x0f, depth);
  return checkTagged(check, tag, depth);
}

function checkTagged(check: Check, tag: number, depth: number): boolean {
  switch (tag) {
    case tags.TAG_NULL:
    case tags.TAG_FALSE:
    case tags.TAG_TRUE:
      return true;
    case tags.TAG_INT32:
      return checkInt32(check);
    case tags.TAG_FLOAT64:
      return checkFloat64(check);
    case tags.TAG_STRING:
      return checkSized(check, tags.FIXSTR_BYTES_MAX, (length) => checkString(check, length));
    case tags.TAG_BYTES:
      return checkBytes(check);
    case tags.TAG_ARRAY:
      return checkSized(check, tags.FIXCOUNT_MAX, (count) => checkArray(check, count, depth));
    case tags.TAG_OBJECT:
      return checkSized(check, tags.FIXCOUNT_MAX, (count) => checkObject(check, count, depth));
    case tags.TAG_BIGINT_U64:
      return checkU64(check, false);
    case tags.TAG_BIGINT_NEGATIVE_U64:
      return checkU64(check, true);
    case tags.TAG_BIGINT_ANY:
      return checkBigint(check);
    default:
      return check.fail('unknown_tag', `unknown tag 0x${tag.toString(16)}`, check.position - 1);
  }
}

/** A u32 length or count after a long-form tag: the short form must not have been able to hold it. */
function checkSized(check: Check, shortMax: number, then: (size: number) => boolean): boolean {
  const size = check.u32();
  if (size === null) return false;
  if (size <= shortMax) return check.fail('not_canonical', `long form for a size of ${size}`, check.position - 5);
  return then(size);
}

function checkInt32(check: Check): boolean {
  if (!check.need(4)) return false;
  const value = check.payload.readInt32LE(check.position);
  check.position += 4;
  if (value >= tags.NEGATIVE_FIXINT_MIN && value <= tags.FIXINT_MAX) {
    return check.fail('not_canonical', `int32 ${value} that fits a one-byte integer`, check.position - 5);
  }
  return true;
}

function checkFloat64(check: Check): boolean {
  if (!check.need(8)) return false;
  const value = check.payload.readDoubleLE(check.position);
  check.position += 8;
  if ((value | 0) === value && !Object.is(value, -0)) {
    return check.fail('not_canonical', `float64 ${value} that is an int32`, check.position - 9);
  }
  return check.charge(HEAP_BYTES.float);
}

/** A key's string is charged its bytes only: HEAP_BYTES.field covers the rest, and keys repeat. */
function checkString(check: Check, byteCount: number, role: 'value' | 'key' = 'value'): boolean {
  if (byteCount > check.remaining) {
    return check.fail('length_exceeds_payload', `string of ${byteCount} bytes exceeds the ${check.remaining} bytes left`);
  }
  const { payload } = check;
  const start = check.position;
  const end = start + byteCount;
  check.position = end;
  let index = start;
  while (index < end && (payload[index] ?? 0x80) <= 0x7f) index++; // what is not ASCII gets the full UTF-8 check
  if (index < end && !isUtf8(payload.subarray(index, end))) return check.fail('bad_utf8', 'string is not valid UTF-8', start);
  return byteCount <= 1 || check.charge((role === 'key' ? 0 : HEAP_BYTES.string) + byteCount);
}

function checkBytes(check: Check): boolean {
  const byteCount = check.u32();
  if (byteCount === null) return false;
  if (byteCount > check.remaining) {
    return check.fail('length_exceeds_payload', `bytes of length ${byteCount} exceeds the ${check.remaining} bytes left`);
  }
  check.position += byteCount;
  return check.charge(HEAP_BYTES.buffer);
}

/** Checks what every collection must meet before its items are looked at. */
function checkCollection(check: Check, kind: 'array' | 'object', count: number, depth: number): boolean {
  const { limits } = check;
  if (depth >= limits.depthMax) return check.fail('too_deep', `nesting deeper than ${limits.depthMax}`);
  // An element takes at least one byte, a field two (a key and a value).
  if (count * (kind === 'array' ? 1 : 2) > check.remaining) {
    return check.fail('length_exceeds_payload', `collection of ${count} items exceeds the ${check.remaining} bytes left`);
  }
  if (count > limits.collectionItemsMax) {
    return check.fail('collection_too_large', `collection of ${count} items, over ${limits.collectionItemsMax}`);
  }
  check.items += count;
  if (check.items > limits.totalItemsMax) return check.fail('too_many_items', `more than ${limits.totalItemsMax} values`);
  if (kind === 'object') return check.charge(HEAP_BYTES.object + HEAP_BYTES.field * count);
  return check.charge(HEAP_BYTES.array + (count > 0 ? HEAP_BYTES.arrayElements : 0) + HEAP_BYTES.arraySlot * count);
}

function checkArray(check: Check, count: number, depth: number): boolean {
  if (!checkCollection(check, 'array', count, depth)) return false;
  for (let index = 0; index < count; index++) if (!checkValue(check, depth + 1)) return false;
  return true;
}

/**
 * JavaScript enumerates array-index keys ("0", "17") first and ascending, whatever order they
 * were set in: a payload listing them otherwise could not re-encode as it is.
 */
function checkObject(check: Check, count: number, depth: number): boolean {
  if (!checkCollection(check, 'object', count, depth)) return false;
  let lastIndex = -1;
  let named = false;
  for (let field = 0; field < count; field++) {
    const at = check.position;
    const key = checkKey(check);
    if (key === KEY_REFUSED) return false;
    if (key === KEY_NAMED) named = true;
    else if (named || key <= lastIndex) return check.fail('not_canonical', `key "${key}" out of enumeration order`, at);
    else lastIndex = key;
    if (!checkValue(check, depth + 1)) return false;
  }
  return true;
}

const KEY_REFUSED = -2;
const KEY_NAMED = -1;

/** Checks a key; returns the array index it spells, KEY_NAMED for any other string, or KEY_REFUSED. */
function checkKey(check: Check): number {
  const at = check.position;
  const tag = check.byte();
  if (tag === null) return KEY_REFUSED;
  let byteCount: number | null = tag - tags.FIXSTR;
  if (tag === tags.TAG_STRING) {
    byteCount = check.u32();
    if (byteCount === null) return KEY_REFUSED;
    if (byteCount <= tags.FIXSTR_BYTES_MAX) {
      check.fail('not_canonical', `long form for a size of ${byteCount}`, at);
      return KEY_REFUSED;
    }
  } else if (byteCount < 0 || byteCount > tags.FIXSTR_BYTES_MAX) {
    check.fail('key_not_string', 'object key is not a string', at);
    return KEY_REFUSED;
  }
  const start = check.position;
  if (!checkString(check, byteCount, 'key')) return KEY_REFUSED;
  return arrayIndexOf(check.payload, start, byteCount) ?? KEY_NAMED;
}

/** The array index the key bytes spell ("0" to "4294967294", no leading zero), or null. */
function arrayIndexOf(payload: Buffer, start: number, byteCount: number): number | null {
  if (byteCount === 0 || byteCount > 10 || (byteCount > 1 && payload[start] === 0x30)) return null;
  let index = 0;
  for (let offset = start; offset < start + byteCount; offset++) {
    const byte = payload[offset];
    if (byte === undefined || byte < 0x30 || byte > 0x39) return null;
    index = index * 10 + (byte - 0x30);
  }
  return index <= 0xfffffffe ? index : null;
}

function checkU64(check: Check, negative: boolean): boolean {
  if (!check.need(8)) return false;
  const low = check.payload.readUInt32LE(check.position);
  const high = check.payload.readUInt32LE(check.position + 4);
  check.position += 8;
  const bits = high !== 0 ? 64 - Math.clz32(high) : 32 - Math.clz32(low);
  if (negative && bits === 0) return check.fail('not_canonical', 'negative zero bigint', check.position - 9);
  if (bits > check.limits.bigintBitsMax) return check.fail('bigint_too_large', `bigint of ${bits} bits, over ${check.limits.bigintBitsMax}`);
  return check.charge(HEAP_BYTES.bigint + HEAP_BYTES.bigintWord);
}

function checkBigint(check: Check): boolean {
  const at = check.position - 1;
  const sign = check.byte();
  if (sign === null) return false;
  if (sign > 1) return check.fail('bad_bigint', `bigint sign byte ${sign}`, check.position - 1);
  const byteCount = check.u32();
  if (byteCount === null) return false;
  if (byteCount === 0) return check.fail('bad_bigint', 'bigint of 0 bytes', at);
  if (byteCount > check.remaining) {
    return check.fail('length_exceeds_payload', `bigint of ${byteCount} bytes exceeds the ${check.remaining} bytes left`);
  }
  const first = check.payload[check.position];
  if (first === undefined || first === 0 || byteCount <= 8) return check.fail('not_canonical', 'bigint that fits 64 bits or has a leading zero byte', at);
  const bits = 8 * (byteCount - 1) + 32 - Math.clz32(first);
  if (bits > check.limits.bigintBitsMax) return check.fail('bigint_too_large', `bigint of ${bits} bits, over ${check.limits.bigintBitsMax}`, at);
  check.position += byteCount;
  return check.charge(HEAP_BYTES.bigint + HEAP_BYTES.bigintWord * Math.ceil(byteCount / 8));
}
