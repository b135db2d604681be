/**
 * A compact, self-describing binary encoding for the values peers send each other: the payload
 * of a peer frame (version 2, see frame.ts).
 *
 * Intuition: the tagged-JSON payload of version 1 spent its time walking the value twice,
 * base64-encoding every memcached value and parsing text back. Here every value is one tag byte
 * followed by its body, written in one walk into a reused, growable scratch buffer and read back
 * in one walk; Buffers travel as raw bytes. Small integers, short strings and small containers
 * carry their size in the tag byte itself (as MessagePack does), so a heartbeat stays small.
 *
 * Layout (multi-byte numbers little-endian, lengths u32):
 *
 *   0x00-0x7f  integer 0..127                  0xc0  null
 *   0x80-0x9f  string of 0..31 utf8 bytes      0xc1  false          0xc2  true
 *   0xa0-0xaf  array of 0..15 values           0xc3  int32          0xc4  float64
 *   0xb0-0xbf  object of 0..15 fields          0xc5  string: u32 byte length, utf8 bytes
 *   0xe0-0xff  integer -32..-1                 0xc6  bytes: u32 length, raw bytes (a Buffer)
 *                                              0xc7  array: u32 count, values
 *                                              0xc8  object: u32 count, (string key, value)*
 *                                              0xc9  bigint 0..2^64-1: u64
 *                                              0xca  bigint -(2^64-1)..-1: u64 magnitude
 *                                              0xcb  any bigint: sign byte (0 or 1), u32 length,
 *                                                    magnitude big-endian (length >= 1)
 *
 * What round-trips, and how it differs from JSON:
 * - null, booleans, strings, numbers (every float64 exactly, including -0, NaN and ±Infinity,
 *   which JSON would turn into 0 or null), bigints of any size and sign, Buffers and other
 *   Uint8Arrays (decoded as Buffers), arrays and plain objects.
 * - As JSON.stringify does: object fields whose value is undefined, a function or a symbol are
 *   left out; such array elements become null; an object with a `toJSON` method (a Date) is
 *   encoded as what `toJSON()` returns; other objects (Map, class instances) as their own
 *   enumerable fields. A top-level undefined encodes as null.
 * - Strings are written as UTF-8, so a lone surrogate becomes U+FFFD (JSON would keep it).
 *
 * Invariants:
 * - `decodeValue` never throws: malformed input is `{ ok: false, detail }`.
 * - Every length and count is checked against the bytes left before anything is allocated, and
 *   nesting deeper than `VALUE_DEPTH_MAX` is refused, so a malformed payload can neither make
 *   the decoder allocate much more than the payload's own size nor recurse without bound.
 * - A payload decodes only if exactly one value fills it (no trailing bytes).
 * - Decoded Buffers are views into the payload (no copy) unless `copyBuffers` is set: the
 *   caller must not reuse the payload's memory while the value lives.
 */

/** Deepest nesting accepted: a top-level scalar is depth 0, the fields of a top-level object 1. */
export const VALUE_DEPTH_MAX = 64;

const FIXINT_MAX = 0x7f;
const FIXSTR = 0x80;
const FIXSTR_BYTES_MAX = 31;
const FIXARRAY = 0xa0;
const FIXOBJECT = 0xb0;
const FIXCOUNT_MAX = 15;
const TAG_NULL = 0xc0;
const TAG_FALSE = 0xc1;
const TAG_TRUE = 0xc2;
const TAG_INT32 = 0xc3;
const TAG_FLOAT64 = 0xc4;
const TAG_STRING = 0xc5;
const TAG_BYTES = 0xc6;
const TAG_ARRAY = 0xc7;
const TAG_OBJECT = 0xc8;
const TAG_BIGINT_U64 = 0xc9;
const TAG_BIGINT_NEGATIVE_U64 = 0xca;
const TAG_BIGINT_ANY = 0xcb;
const NEGATIVE_FIXINT = 0xe0;
const NEGATIVE_FIXINT_MIN = -32;

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
   * as JSON.stringify does on a cycle, if `value` nests deeper than VALUE_DEPTH_MAX: that is a
   * programmer's error, not input.
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
// Decoder

/** The outcome of decoding: the value, or why the payload is not one valid encoded value. */
export type ValueDecodeResult = { ok: true; value: unknown } | { ok: false; detail: string };

export interface ValueDecodeOptions {
  /**
   * Copy each decoded Buffer out of the payload instead of returning a view into it. Set it when
   * the payload's memory is reused, or is a large socket chunk a small long-lived value should
   * not pin. Default false.
   */
  copyBuffers?: boolean;
}

/** Returned by the readers below in place of a value once the payload proved malformed. */
const MALFORMED: unique symbol = Symbol('malformed');
type Read = unknown;

/** One pass over one payload. `detail` says why, once a reader has returned MALFORMED. */
class Reader {
  position = 0;
  detail = '';

  constructor(
    readonly payload: Buffer,
    readonly copyBuffers: boolean,
  ) {}

  fail(detail: string): typeof MALFORMED {
    this.detail = `${detail} at byte ${this.position}`;
    return MALFORMED;
  }

  get remaining(): number {
    return this.payload.length - this.position;
  }
}

/**
 * Decodes a payload that holds exactly one encoded value. Never throws. Buffers in the result
 * are views into `payload` unless `options.copyBuffers` is set (see ValueDecodeOptions).
 */
export function decodeValue(payload: Buffer, options: ValueDecodeOptions = {}): ValueDecodeResult {
  const reader = new Reader(payload, options.copyBuffers ?? false);
  const value = readValue(reader, 0);
  if (value === MALFORMED) return { ok: false, detail: reader.detail };
  if (reader.remaining !== 0) return { ok: false, detail: `${reader.remaining} trailing bytes after the value` };
  return { ok: true, value };
}

function readValue(reader: Reader, depth: number): Read {
  if (reader.remaining < 1) return reader.fail('value expected but the payload ended');
  const tag = reader.payload[reader.position++];
  if (tag <= FIXINT_MAX) return tag;
  if (tag >= NEGATIVE_FIXINT) return tag - 0x100;
  if (tag < FIXARRAY) return readUtf8(reader, tag & 0x1f);
  if (tag < FIXOBJECT) return readArray(reader, tag & 0x0f, depth);
  if (tag < TAG_NULL) return readFields(reader, tag & 0x0f, depth);
  return readTagged(reader, tag, depth);
}

function readTagged(reader: Reader, tag: number, depth: number): Read {
  switch (tag) {
    case TAG_NULL:
      return null;
    case TAG_FALSE:
      return false;
    case TAG_TRUE:
      return true;
    case TAG_INT32:
      return readFixed(reader, 4) === MALFORMED ? MALFORMED : reader.payload.readInt32LE(reader.position - 4);
    case TAG_FLOAT64:
      return readFixed(reader, 8) === MALFORMED ? MALFORMED : reader.payload.readDoubleLE(reader.position - 8);
    case TAG_STRING:
      return readSized(reader, 1, (length) => readUtf8(reader, length));
    case TAG_BYTES:
      return readSized(reader, 1, (length) => readBytes(reader, length));
    case TAG_ARRAY:
      return readSized(reader, 1, (count) => readArray(reader, count, depth));
    case TAG_OBJECT:
      return readSized(reader, 2, (count) => readFields(reader, count, depth));
    case TAG_BIGINT_U64:
      return readU64(reader, false);
    case TAG_BIGINT_NEGATIVE_U64:
      return readU64(reader, true);
    case TAG_BIGINT_ANY:
      return readBigint(reader);
    default:
      reader.position--;
      return reader.fail(`unknown tag 0x${tag.toString(16)}`);
  }
}

/** Checks that `byteCount` bytes remain and steps over them. */
function readFixed(reader: Reader, byteCount: number): typeof MALFORMED | number {
  if (reader.remaining < byteCount) return reader.fail(`${byteCount} bytes expected but the payload ended`);
  reader.position += byteCount;
  return byteCount;
}

/**
 * Reads a u32 length or count and hands it on, after checking that the rest of the payload can
 * hold that many items of at least `itemBytesMin` bytes each.
 */
function readSized(reader: Reader, itemBytesMin: number, then: (size: number) => Read): Read {
  if (readFixed(reader, 4) === MALFORMED) return MALFORMED;
  const size = reader.payload.readUInt32LE(reader.position - 4);
  if (size * itemBytesMin > reader.remaining) {
    return reader.fail(`length ${size} exceeds the ${reader.remaining} bytes left`);
  }
  return then(size);
}

function readUtf8(reader: Reader, byteCount: number): Read {
  if (reader.remaining < byteCount) return reader.fail(`string of ${byteCount} bytes exceeds the payload`);
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
    if (payload[index] > 0x7f) return payload.toString('utf8', start, end);
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
      return char(bytes[at]);
    case 2:
      return char(bytes[at], bytes[at + 1]);
    case 3:
      return char(bytes[at], bytes[at + 1], bytes[at + 2]);
    case 4:
      return char(bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]);
    case 5:
      return char(bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3], bytes[at + 4]);
    case 6:
      return char(bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3], bytes[at + 4], bytes[at + 5]);
    case 7:
      return char(bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3], bytes[at + 4], bytes[at + 5], bytes[at + 6]);
    default:
      return char(bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3], bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]);
  }
}

function readBytes(reader: Reader, byteCount: number): Read {
  const start = reader.position;
  reader.position += byteCount;
  const view = reader.payload.subarray(start, start + byteCount);
  return reader.copyBuffers ? Buffer.from(view) : view;
}

function readArray(reader: Reader, count: number, depth: number): Read {
  if (depth >= VALUE_DEPTH_MAX) return reader.fail(`nesting deeper than ${VALUE_DEPTH_MAX}`);
  if (count > reader.remaining) return reader.fail(`array of ${count} exceeds the ${reader.remaining} bytes left`);
  const out: unknown[] = new Array(count);
  for (let index = 0; index < count; index++) {
    const element = readValue(reader, depth + 1);
    if (element === MALFORMED) return MALFORMED;
    out[index] = element;
  }
  return out;
}

function readFields(reader: Reader, count: number, depth: number): Read {
  if (depth >= VALUE_DEPTH_MAX) return reader.fail(`nesting deeper than ${VALUE_DEPTH_MAX}`);
  const out: Record<string, unknown> = {};
  for (let index = 0; index < count; index++) {
    const key = readKey(reader, depth + 1);
    if (key === MALFORMED) return MALFORMED;
    const field = readValue(reader, depth + 1);
    if (field === MALFORMED) return MALFORMED;
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

function readKey(reader: Reader, depth: number): string | typeof MALFORMED {
  const { payload, position } = reader;
  const tag = position < payload.length ? payload[position] : TAG_NULL;
  const byteCount = tag - FIXSTR;
  if (byteCount < 0 || byteCount > KEY_CACHED_BYTES_MAX || reader.remaining < 1 + byteCount) {
    const key = readValue(reader, depth);
    if (key === MALFORMED || typeof key === 'string') return key;
    return reader.fail('object key is not a string');
  }
  const start = position + 1;
  reader.position = start + byteCount;
  let hash = byteCount;
  for (let index = start; index < start + byteCount; index++) hash = (Math.imul(hash, 31) + payload[index]) | 0;
  const slot = (hash ^ (hash >>> 12)) & (KEY_CACHE_SLOTS - 1);
  if (keyCacheLengths[slot] === byteCount && cachedBytesEqual(slot, payload, start, byteCount)) return keyCacheStrings[slot];
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

function readU64(reader: Reader, negative: boolean): Read {
  if (readFixed(reader, 8) === MALFORMED) return MALFORMED;
  const low = reader.payload.readUInt32LE(reader.position - 8);
  const high = reader.payload.readUInt32LE(reader.position - 4);
  const magnitude = high === 0 ? BigInt(low) : (BigInt(high) << 32n) | BigInt(low);
  return negative ? -magnitude : magnitude;
}

function readBigint(reader: Reader): Read {
  if (readFixed(reader, 1) === MALFORMED) return MALFORMED;
  const sign = reader.payload[reader.position - 1];
  if (sign > 1) return reader.fail(`bigint sign byte ${sign}`);
  return readSized(reader, 1, (byteCount) => {
    if (byteCount === 0) return reader.fail('bigint of 0 bytes');
    const start = reader.position;
    reader.position += byteCount;
    const magnitude = BigInt(`0x${reader.payload.toString('hex', start, start + byteCount)}`);
    return sign === 1 ? -magnitude : magnitude;
  });
}
