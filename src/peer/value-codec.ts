/**
 * A compact, self-describing binary encoding for the values peers send each other: the payload
 * of a peer frame (frame.ts) and of a write-ahead record (wal.ts).
 *
 * Intuition: each value is one tag byte and its body (layout in value-tags.ts), written in one
 * walk into a reused scratch buffer; small integers, strings and containers carry their size in
 * the tag (as MessagePack). Decoding walks twice: value-check.ts proves the payload canonical and
 * within DecodeLimits building nothing, then the value is built with only duplicate keys to find.
 *
 * Round-trips as JSON would, and also -0, NaN, ±Infinity, bigints up to BIGINT_BITS_MAX bits and
 * Buffers (any Uint8Array decodes as a Buffer). As JSON.stringify: undefined, function and symbol
 * fields are left out (such elements become null), `toJSON` is used, lone surrogates become U+FFFD.
 *
 * Invariants: `decodeValue` never throws; it refuses, as a value, what `encode` would not write,
 * and what it accepts re-encodes to the same bytes. `__proto__` or `constructor` is an own data
 * field, never the prototype. Decoded Buffers view the payload unless `copyBuffers` is set.
 */

import * as tags from './value-tags.ts';
import { DECODE_LIMITS_DEFAULT, checkPayload, type DecodeLimits, type ValueDecodeFailure } from './value-check.ts';

export { BIGINT_BITS_MAX, VALUE_DEPTH_MAX } from './value-tags.ts';
export { DECODE_LIMITS_DEFAULT, type DecodeLimits, type ValueDecodeFailure, type ValueDecodeReason } from './value-check.ts';

const {
  FIXINT_MAX, FIXSTR, FIXSTR_BYTES_MAX, FIXARRAY, FIXOBJECT, FIXCOUNT_MAX, TAG_NULL, TAG_FALSE, TAG_TRUE, TAG_INT32,
  TAG_FLOAT64, TAG_STRING, TAG_BYTES, TAG_ARRAY, TAG_OBJECT, TAG_BIGINT_U64, TAG_BIGINT_NEGATIVE_U64, TAG_BIGINT_ANY,
  NEGATIVE_FIXINT, NEGATIVE_FIXINT_MIN, VALUE_DEPTH_MAX, BIGINT_BITS_MAX,
} = tags;

const U64_MAX = (1n << 64n) - 1n;
const U32_MASK = 0xffffffffn;

/** A scratch buffer above this size is dropped after use rather than kept for the next value. */
const SCRATCH_BYTES_KEPT_MAX = 4 * 1024 * 1024;
const SCRATCH_BYTES_INITIAL = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// Encoder

/**
 * Writes values into one growable scratch buffer that is reused from value to value; `encode`
 * hands out a fresh copy, so the scratch can be overwritten by the next call.
 */
export class ValueEncoder {
  private bytes: Buffer = Buffer.allocUnsafe(SCRATCH_BYTES_INITIAL);
  private position = 0;
  private busy = false;

  /**
   * Encodes `value` and returns a new Buffer: `reserveBytes` bytes left for the caller (a frame
   * header, say; their content is unspecified) followed by the encoding. Throws a RangeError,
   * as JSON.stringify does on a cycle, if `value` nests deeper than VALUE_DEPTH_MAX or holds a
   * bigint over BIGINT_BITS_MAX bits: a programmer's error, which no decoder would accept.
   */
  encode(value: unknown, reserveBytes = 0): Buffer {
    // A toJSON that itself encodes would clobber the scratch: give it an encoder of its own.
    if (this.busy) return new ValueEncoder().encode(value, reserveBytes);
    this.busy = true;
    try {
      this.position = 0;
      this.writeValue(value, 0);
      const out = Buffer.allocUnsafe(reserveBytes + this.position);
      this.bytes.copy(out, reserveBytes, 0, this.position);
      return out;
    } finally {
      this.busy = false;
      if (this.bytes.length > SCRATCH_BYTES_KEPT_MAX) this.bytes = Buffer.allocUnsafe(SCRATCH_BYTES_INITIAL);
    }
  }

  private ensure(byteCount: number): void {
    const needed = this.position + byteCount;
    if (needed <= this.bytes.length) return;
    const grown = Buffer.allocUnsafe(Math.max(needed, this.bytes.length * 2));
    this.bytes.copy(grown, 0, 0, this.position);
    this.bytes = grown;
  }

  private writeByte(byte: number): void {
    this.ensure(1);
    this.bytes[this.position++] = byte;
  }

  private writeTagU32(tag: number, count: number): void {
    this.ensure(5);
    this.bytes[this.position] = tag;
    this.bytes.writeUInt32LE(count, this.position + 1);
    this.position += 5;
  }

  private writeValue(value: unknown, depth: number): void {
    const type = typeof value;
    switch (type) {
      case 'string':
        return this.writeString(value as string);
      case 'number':
        return this.writeNumber(value as number);
      case 'boolean':
        return this.writeByte(value === true ? TAG_TRUE : TAG_FALSE);
      case 'bigint':
        return this.writeBigint(value as bigint);
      case 'object':
        return value === null ? this.writeByte(TAG_NULL) : this.writeObject(value as object, depth);
      case 'undefined':
      case 'function':
      case 'symbol':
        return this.writeByte(TAG_NULL);
      default: {
        const unreachable: never = type;
        return unreachable;
      }
    }
  }

  private writeNumber(value: number): void {
    if (Number.isInteger(value) && !(value === 0 && 1 / value < 0)) {
      if (value >= 0 && value <= FIXINT_MAX) return this.writeByte(value);
      if (value < 0 && value >= NEGATIVE_FIXINT_MIN) return this.writeByte(value & 0xff);
      if ((value | 0) === value) {
        this.ensure(5);
        this.bytes[this.position] = TAG_INT32;
        this.bytes.writeInt32LE(value, this.position + 1);
        this.position += 5;
        return;
      }
    }
    this.ensure(9);
    this.bytes[this.position] = TAG_FLOAT64;
    this.bytes.writeDoubleLE(value, this.position + 1);
    this.position += 9;
  }

  private writeString(value: string): void {
    const length = value.length;
    if (length <= FIXSTR_BYTES_MAX && this.writeShortAscii(value, length)) return;
    // UTF-8 takes at most 3 bytes per UTF-16 code unit.
    this.ensure(5 + 3 * length);
    const start = this.position;
    const written = this.bytes.write(value, start + 5, 'utf8');
    if (written <= FIXSTR_BYTES_MAX) {
      this.bytes[start] = FIXSTR | written;
      this.bytes.copyWithin(start + 1, start + 5, start + 5 + written);
      this.position = start + 1 + written;
      return;
    }
    this.bytes[start] = TAG_STRING;
    this.bytes.writeUInt32LE(written, start + 1);
    this.position = start + 5 + written;
  }

  /** Writes a short all-ASCII string byte by byte (cheaper than Buffer.write); false if not ASCII. */
  private writeShortAscii(value: string, length: number): boolean {
    this.ensure(1 + length);
    const bytes = this.bytes;
    const start = this.position + 1;
    for (let index = 0; index < length; index++) {
      const code = value.charCodeAt(index);
      if (code > 0x7f) return false;
      bytes[start + index] = code;
    }
    bytes[this.position] = FIXSTR | length;
    this.position = start + length;
    return true;
  }

  private writeBigint(value: bigint): void {
    if (value >= 0n && value <= U64_MAX) return this.writeU64(TAG_BIGINT_U64, value);
    if (value < 0n && -value <= U64_MAX) return this.writeU64(TAG_BIGINT_NEGATIVE_U64, -value);
    const negative = value < 0n;
    let hex = (negative ? -value : value).toString(16);
    if (hex.length > BIGINT_BITS_MAX / 4) throw new RangeError(`bigint over ${BIGINT_BITS_MAX} bits`);
    if (hex.length % 2 === 1) hex = `0${hex}`;
    const byteCount = hex.length / 2;
    this.ensure(6 + byteCount);
    this.bytes[this.position] = TAG_BIGINT_ANY;
    this.bytes[this.position + 1] = negative ? 1 : 0;
    this.bytes.writeUInt32LE(byteCount, this.position + 2);
    this.bytes.write(hex, this.position + 6, 'hex');
    this.position += 6 + byteCount;
  }

  private writeU64(tag: number, magnitude: bigint): void {
    this.ensure(9);
    this.bytes[this.position] = tag;
    this.bytes.writeUInt32LE(Number(magnitude & U32_MASK), this.position + 1);
    this.bytes.writeUInt32LE(Number(magnitude >> 32n), this.position + 5);
    this.position += 9;
  }

  private writeObject(value: object, depth: number): void {
    if (value instanceof Uint8Array) return this.writeBytes(value);
    if (depth >= VALUE_DEPTH_MAX) throw new RangeError(`value nested deeper than ${VALUE_DEPTH_MAX}`);
    const toJSON = (value as { toJSON?: unknown }).toJSON;
    if (typeof toJSON !== 'function') return this.writeContainer(value, depth);
    // As JSON.stringify: toJSON is called once, and what it returns is written as it is.
    const json: unknown = toJSON.call(value);
    if (typeof json !== 'object' || json === null || json instanceof Uint8Array) return this.writeValue(json, depth);
    this.writeContainer(json, depth);
  }

  private writeContainer(value: object, depth: number): void {
    if (Array.isArray(value)) this.writeArray(value, depth + 1);
    else this.writeFields(value as Record<string, unknown>, depth + 1);
  }

  private writeBytes(value: Uint8Array): void {
    this.writeTagU32(TAG_BYTES, value.length);
    this.ensure(value.length);
    this.bytes.set(value, this.position);
    this.position += value.length;
  }

  private writeArray(value: unknown[], depth: number): void {
    const length = value.length;
    if (length <= FIXCOUNT_MAX) this.writeByte(FIXARRAY | length);
    else this.writeTagU32(TAG_ARRAY, length);
    for (let index = 0; index < length; index++) this.writeValue(value[index], depth);
  }

  /**
   * Writes own enumerable fields, skipping those JSON would skip. The count is known only at the
   * end: a one-byte fixobject tag is patched in, or, past 15 fields, the body moves 4 bytes on.
   */
  private writeFields(value: Record<string, unknown>, depth: number): void {
    this.ensure(1);
    const start = this.position++;
    let count = 0;
    for (const key in value) {
      if (!Object.prototype.hasOwnProperty.call(value, key)) continue;
      const field = value[key];
      const type = typeof field;
      if (type === 'undefined' || type === 'function' || type === 'symbol') continue;
      this.writeString(key);
      this.writeValue(field, depth);
      count++;
    }
    if (count <= FIXCOUNT_MAX) {
      this.bytes[start] = FIXOBJECT | count;
      return;
    }
    this.ensure(4);
    this.bytes.copyWithin(start + 5, start + 1, this.position);
    this.bytes[start] = TAG_OBJECT;
    this.bytes.writeUInt32LE(count, start + 1);
    this.position += 4;
  }
}

const sharedEncoder = new ValueEncoder();

/** Encodes one value into a new Buffer (see the file header for what round-trips). */
export function encodeValue(value: unknown): Buffer {
  return sharedEncoder.encode(value);
}

/**
 * Encodes one value into a new Buffer that starts with `reserveBytes` bytes left for the caller
 * (e.g. a frame header), so header and payload need one allocation and no second copy.
 */
export function encodeValueAfter(reserveBytes: number, value: unknown): Buffer {
  return sharedEncoder.encode(value, reserveBytes);
}


// ---------------------------------------------------------------------------------------------
// Decoder: builds what value-check.ts has proven canonical and within limits.

/** The outcome of decoding: the value, or why the payload was refused. */
export type ValueDecodeResult = { ok: true; value: unknown } | ValueDecodeFailure;

export interface ValueDecodeOptions {
  /**
   * Copy each decoded Buffer out of the payload instead of returning a view into it. Set it when
   * the payload's memory is reused, or is a large socket chunk a small long-lived value should
   * not pin. Default false.
   */
  copyBuffers?: boolean;
  /** Default DECODE_LIMITS_DEFAULT. */
  limits?: Readonly<DecodeLimits>;
}

/** Returned by the readers below in place of a value once a duplicate key turned up. */
const DUPLICATE: unique symbol = Symbol('duplicate key');
type Read = unknown;

/** One pass over one checked payload. */
class Reader {
  position = 0;

  constructor(
    readonly payload: Buffer,
    readonly copyBuffers: boolean,
  ) {}
}

/**
 * Decodes a payload that holds exactly one encoded value. Never throws. Buffers in the result
 * are views into `payload` unless `options.copyBuffers` is set (see ValueDecodeOptions).
 */
export function decodeValue(payload: Buffer, options: ValueDecodeOptions = {}): ValueDecodeResult {
  const refused = checkPayload(payload, options.limits ?? DECODE_LIMITS_DEFAULT);
  if (refused !== null) return refused;
  const reader = new Reader(payload, options.copyBuffers ?? false);
  const value = readValue(reader);
  if (value === DUPLICATE) {
    const at = reader.position;
    return { ok: false, reason: 'duplicate_key', at, detail: `duplicate object key before byte ${at}` };
  }
  return { ok: true, value };
}

/**
 * The byte at `position`, which value-check.ts proved is there; past the payload (a disagreement
 * between the check and this decoder) it throws, as Buffer's own readers do.
 */
function byteAt(payload: Buffer, position: number): number {
  const byte = payload[position];
  if (byte === undefined) throw new RangeError(`value decoder read byte ${position} of a ${payload.length}-byte payload`);
  return byte;
}

function readValue(reader: Reader): Read {
  const tag = byteAt(reader.payload, reader.position++);
  if (tag <= FIXINT_MAX) return tag;
  if (tag >= NEGATIVE_FIXINT) return tag - 0x100;
  if (tag < FIXARRAY) return readUtf8(reader, tag & 0x1f);
  if (tag < FIXOBJECT) return readArray(reader, tag & 0x0f);
  if (tag < TAG_NULL) return readFields(reader, tag & 0x0f);
  return readTagged(reader, tag);
}

function readTagged(reader: Reader, tag: number): Read {
  const { payload } = reader;
  switch (tag) {
    case TAG_NULL:
      return null;
    case TAG_FALSE:
      return false;
    case TAG_TRUE:
      return true;
    case TAG_INT32:
      return payload.readInt32LE((reader.position += 4) - 4);
    case TAG_FLOAT64:
      return payload.readDoubleLE((reader.position += 8) - 8);
    case TAG_STRING:
      return readUtf8(reader, readU32(reader));
    case TAG_BYTES:
      return readBytes(reader, readU32(reader));
    case TAG_ARRAY:
      return readArray(reader, readU32(reader));
    case TAG_OBJECT:
      return readFields(reader, readU32(reader));
    case TAG_BIGINT_U64:
      return readU64(reader);
    case TAG_BIGINT_NEGATIVE_U64:
      return -readU64(reader);
    default:
      return readBigint(reader);
  }
}

function readU32(reader: Reader): number {
  return reader.payload.readUInt32LE((reader.position += 4) - 4);
}

function readUtf8(reader: Reader, byteCount: number): string {
  const { payload } = reader;
  const start = reader.position;
  reader.position += byteCount;
  return byteCount <= FIXSTR_BYTES_MAX ? shortUtf8(payload, start, byteCount) : payload.toString('utf8', start, start + byteCount);
}

/**
 * Short strings are most often ASCII keys: String.fromCharCode with the bytes as arguments beats
 * Buffer.toString's fixed call cost several times over (measured: ~15 ns against ~55 ns).
 */
function shortUtf8(payload: Buffer, start: number, byteCount: number): string {
  const end = start + byteCount;
  for (let index = start; index < end; index++) {
    if (byteAt(payload, index) > 0x7f) return payload.toString('utf8', start, end);
  }
  if (byteCount <= 8) return asciiUpTo8(payload, start, byteCount);
  let out = asciiUpTo8(payload, start, 8);
  for (let offset = 8; offset < byteCount; offset += 8) out += asciiUpTo8(payload, start + offset, Math.min(8, byteCount - offset));
  return out;
}

function asciiUpTo8(bytes: Buffer, at: number, byteCount: number): string {
  const char = String.fromCharCode;
  switch (byteCount) {
    case 0:
      return '';
    case 1:
      return char(byteAt(bytes, at));
    case 2:
      return char(byteAt(bytes, at), byteAt(bytes, at + 1));
    case 3:
      return char(byteAt(bytes, at), byteAt(bytes, at + 1), byteAt(bytes, at + 2));
    case 4:
      return char(byteAt(bytes, at), byteAt(bytes, at + 1), byteAt(bytes, at + 2), byteAt(bytes, at + 3));
    case 5:
      return char(byteAt(bytes, at), byteAt(bytes, at + 1), byteAt(bytes, at + 2), byteAt(bytes, at + 3), byteAt(bytes, at + 4));
    case 6:
      return char(byteAt(bytes, at), byteAt(bytes, at + 1), byteAt(bytes, at + 2),
        byteAt(bytes, at + 3), byteAt(bytes, at + 4), byteAt(bytes, at + 5));
    case 7:
      return char(byteAt(bytes, at), byteAt(bytes, at + 1), byteAt(bytes, at + 2), byteAt(bytes, at + 3),
        byteAt(bytes, at + 4), byteAt(bytes, at + 5), byteAt(bytes, at + 6));
    default:
      return char(byteAt(bytes, at), byteAt(bytes, at + 1), byteAt(bytes, at + 2), byteAt(bytes, at + 3),
        byteAt(bytes, at + 4), byteAt(bytes, at + 5), byteAt(bytes, at + 6), byteAt(bytes, at + 7));
  }
}

function readBytes(reader: Reader, byteCount: number): Buffer {
  const start = reader.position;
  reader.position += byteCount;
  const view = reader.payload.subarray(start, start + byteCount);
  return reader.copyBuffers ? Buffer.from(view) : view;
}

function readArray(reader: Reader, count: number): Read {
  const out: unknown[] = new Array(count);
  for (let index = 0; index < count; index++) {
    const element = readValue(reader);
    if (element === DUPLICATE) return DUPLICATE;
    out[index] = element;
  }
  return out;
}

const hasOwn = Object.prototype.hasOwnProperty;

function readFields(reader: Reader, count: number): Read {
  const out: Record<string, unknown> = {};
  for (let index = 0; index < count; index++) {
    const key = readKey(reader);
    const field = readValue(reader);
    if (field === DUPLICATE || hasOwn.call(out, key)) return DUPLICATE;
    // A field named __proto__ must stay a field (as JSON.parse makes it), not set the prototype.
    if (key === '__proto__') Object.defineProperty(out, key, { value: field, enumerable: true, writable: true, configurable: true });
    else out[key] = field;
  }
  return out;
}

/**
 * Field names repeat from message to message, so short ones come from a small cache indexed by
 * a hash of their bytes: the same string object each time, which V8 turns into a property key
 * once, where a freshly built string would be looked up in the string table on every store
 * (measured: a heartbeat decodes ~1.5x faster). Each slot keeps the bytes it was built from, in
 * one preallocated slab, so a collision only costs a rebuild, never a wrong key, and a stream of
 * distinct keys (a digest keyed by memcached keys) costs a copy of a few bytes each, no allocation.
 */
const KEY_CACHE_SLOTS = 4096;
const KEY_CACHED_BYTES_MAX = 24;
/** Slot i's key bytes live at i * KEY_CACHED_BYTES_MAX; a length of 0xff marks an empty slot. */
const keyCacheBytes = Buffer.alloc(KEY_CACHE_SLOTS * KEY_CACHED_BYTES_MAX);
const keyCacheLengths = new Uint8Array(KEY_CACHE_SLOTS).fill(0xff);
const keyCacheStrings: string[] = new Array<string>(KEY_CACHE_SLOTS).fill('');

/** Reads a key value-check.ts proved to be a string. */
function readKey(reader: Reader): string {
  const { payload, position } = reader;
  const byteCount = byteAt(payload, position) - FIXSTR;
  if (byteCount < 0 || byteCount > KEY_CACHED_BYTES_MAX) return readValue(reader) as string;
  const start = position + 1;
  reader.position = start + byteCount;
  let hash = byteCount;
  for (let index = start; index < start + byteCount; index++) hash = (Math.imul(hash, 31) + byteAt(payload, index)) | 0;
  const slot = (hash ^ (hash >>> 12)) & (KEY_CACHE_SLOTS - 1);
  const cached = keyCacheStrings[slot];
  if (cached !== undefined && keyCacheLengths[slot] === byteCount && cachedBytesEqual(slot, payload, start, byteCount)) return cached;
  const key = shortUtf8(payload, start, byteCount);
  payload.copy(keyCacheBytes, slot * KEY_CACHED_BYTES_MAX, start, start + byteCount);
  keyCacheLengths[slot] = byteCount;
  keyCacheStrings[slot] = key;
  return key;
}

function cachedBytesEqual(slot: number, payload: Buffer, start: number, byteCount: number): boolean {
  const cachedStart = slot * KEY_CACHED_BYTES_MAX;
  for (let index = 0; index < byteCount; index++) {
    if (keyCacheBytes[cachedStart + index] !== payload[start + index]) return false;
  }
  return true;
}

function readU64(reader: Reader): bigint {
  const low = readU32(reader);
  const high = readU32(reader);
  return high === 0 ? BigInt(low) : (BigInt(high) << 32n) | BigInt(low);
}

function readBigint(reader: Reader): bigint {
  const sign = byteAt(reader.payload, reader.position++);
  const byteCount = readU32(reader);
  const start = reader.position;
  reader.position += byteCount;
  const magnitude = BigInt(`0x${reader.payload.toString('hex', start, start + byteCount)}`);
  return sign === 1 ? -magnitude : magnitude;
}
