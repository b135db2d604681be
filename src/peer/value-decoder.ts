/**
 * The building half of the peer value decoder (import it from value-codec.ts): decodeValue has
 * value-check.ts prove a payload canonical and within DecodeLimits, then builds the value.
 *
 * Intuition: the check has walked every tag and length already, so the builder only allocates,
 * and makes that cheap where messages repeat: short ASCII strings come from char codes, short
 * field names from a cache that hands back the same string object each time. Duplicate keys are
 * all that is left to find, and the only refusal made here.
 *
 * Invariants: builds only what the check passed, reading only bytes the check proved are there.
 * `__proto__` or `constructor` is an own data field, never the prototype. Decoded Buffers view
 * the payload unless `copyBuffers` is set.
 */

import * as tags from './value-tags.ts';
import { DECODE_LIMITS_DEFAULT, checkPayload, type DecodeLimits, type ValueDecodeFailure } from './value-check.ts';

const {
  FIXINT_MAX, FIXSTR, FIXSTR_BYTES_MAX, FIXARRAY, FIXOBJECT, TAG_NULL, TAG_FALSE, TAG_TRUE, TAG_INT32,
  TAG_FLOAT64, TAG_STRING, TAG_BYTES, TAG_ARRAY, TAG_OBJECT, TAG_BIGINT_U64, TAG_BIGINT_NEGATIVE_U64, NEGATIVE_FIXINT,
} = tags;

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
