/**
 * The encoding half of the peer value codec (import it from value-codec.ts): ValueEncoder, and
 * the one shared instance behind encodeValue and encodeValueAfter.
 *
 * Intuition: a value is written in one walk into a growable scratch buffer that is reused from
 * value to value, and only the finished bytes are copied out; small integers, strings and
 * containers carry their size in the tag (as MessagePack; layout in value-tags.ts). An object's
 * field count is known only at its end, so its tag is patched in last.
 *
 * Invariants: the bytes are in the one canonical form value-check.ts requires. A value no decoder
 * would accept (nested deeper than VALUE_DEPTH_MAX, a bigint over BIGINT_BITS_MAX bits) is a
 * RangeError, not bytes. The scratch is the encoder's alone while it writes: a nested encode (from
 * a toJSON) gets an encoder of its own.
 */

import * as tags from './value-tags.ts';

const {
  FIXINT_MAX, FIXSTR, FIXSTR_BYTES_MAX, FIXARRAY, FIXOBJECT, FIXCOUNT_MAX, TAG_NULL, TAG_FALSE, TAG_TRUE, TAG_INT32,
  TAG_FLOAT64, TAG_STRING, TAG_BYTES, TAG_ARRAY, TAG_OBJECT, TAG_BIGINT_U64, TAG_BIGINT_NEGATIVE_U64, TAG_BIGINT_ANY,
  NEGATIVE_FIXINT_MIN, VALUE_DEPTH_MAX, BIGINT_BITS_MAX,
} = tags;

const U64_MAX = (1n << 64n) - 1n;
const U32_MASK = 0xffffffffn;

/** A scratch buffer above this size is dropped after use rather than kept for the next value. */
const SCRATCH_BYTES_KEPT_MAX = 4 * 1024 * 1024;
const SCRATCH_BYTES_INITIAL = 64 * 1024;

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

/** Encodes one value into a new Buffer (value-codec.ts's header says what round-trips). */
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
