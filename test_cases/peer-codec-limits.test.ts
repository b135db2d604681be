/**
 * What a hostile or broken peer can make a controller spend: payloads past the value codec's
 * limits (heap budget, depth, counts, bigint size, lengths past the payload) are refused before
 * anything is built, non-canonical and duplicate-key payloads are refused, `__proto__` stays a
 * field, and the frame cap can be changed on a live decoder. Every frame case runs as one chunk,
 * byte by byte and split at every boundary where that is cheap; a seeded fuzz test pushes random
 * and mutated encodings through FrameDecoder in random chunks.
 */

import { crc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { defaultPeerFrameBytesMax } from '../src/config.ts';
import {
  FRAME_BYTES_MAX_DEFAULT,
  FRAME_BYTES_MAX_UNAUTHENTICATED,
  FRAME_HEADER_BYTES,
  FRAME_VERSION,
  FrameDecoder,
  encodeFrame,
  type FrameDecodeResult,
  type FrameDecoderOptions,
} from '../src/peer/frame.ts';
import {
  BIGINT_BITS_MAX,
  DECODE_LIMITS_DEFAULT,
  VALUE_DEPTH_MAX,
  decodeValue,
  encodeValue,
  type ValueDecodeReason,
} from '../src/peer/value-codec.ts';
import { mulberry32, type Random } from '../src/runtime/random.ts';
import { chunkings } from './support/chunks.ts';
import { itemAt } from '../src/runtime/item-at.ts';

/** A valid header (right version, length and checksum) around an arbitrary payload. */
function frameAround(payload: Buffer): Buffer {
  const header = Buffer.alloc(FRAME_HEADER_BYTES);
  header.write('MCKV', 0, 'latin1');
  header.writeUInt8(FRAME_VERSION, 4);
  header.writeUInt32BE(payload.length, 5);
  header.writeUInt32BE(crc32(payload), 9);
  return Buffer.concat([header, payload]);
}

/** Feeds `chunks` to a fresh decoder; gathers every message and the first error. */
function feed(chunks: Buffer[], options: FrameDecoderOptions = {}): FrameDecodeResult {
  const decoder = new FrameDecoder(options);
  const messages: unknown[] = [];
  for (const chunk of chunks) {
    const result = decoder.push(chunk);
    messages.push(...result.messages);
    if (result.error !== null) return { messages, error: result.error };
  }
  return { messages, error: null };
}

/** The reason a payload is refused, decoded alone and as a frame in every chunking. */
function refusalOf(payload: Buffer, options: { everyChunking: boolean } = { everyChunking: true }): ValueDecodeReason {
  const decoded = decodeValue(payload);
  if (decoded.ok) throw new Error('payload was accepted');
  const frame = frameAround(payload);
  const ways = options.everyChunking ? chunkings(frame) : [{ name: 'whole', chunks: [frame] }];
  for (const { name, chunks } of ways) {
    const result = feed(chunks, { frameBytesMax: frame.length });
    expect(result.messages, name).toEqual([]);
    expect(result.error, name).toEqual({ kind: 'bad_payload', reason: decoded.reason, detail: decoded.detail });
  }
  return decoded.reason;
}

/** A long-form array (tag 0xc7) of `count` copies of `item`. */
function arrayOf(count: number, item: Buffer): Buffer {
  const payload = Buffer.alloc(5 + count * item.length);
  payload[0] = 0xc7;
  payload.writeUInt32LE(count, 1);
  for (let index = 0; index < count; index++) item.copy(payload, 5 + index * item.length);
  return payload;
}

const MiB = 1024 * 1024;

/** 4 MiB payloads whose decoded form would be many times their size. */
function bombs(): Array<{ name: string; payload: Buffer }> {
  const objectBytes = 11; // {"kNNNNNNN": null}: every object of a key set of its own
  const count = Math.floor((4 * MiB - 5) / objectBytes);
  const distinctKeyObjects = arrayOf(count, Buffer.from([0xb1, 0x88, ...Buffer.from('k0000000'), 0xc0]));
  for (let index = 0; index < count; index++) distinctKeyObjects.write(String(index).padStart(7, '0'), 5 + index * objectBytes + 3, 'latin1');
  const emptyObjects = arrayOf(MiB / 2 - 5, Buffer.from([0xb0]));
  return [
    { name: 'empty objects in 8 arrays under collectionItemsMax', payload: Buffer.concat([Buffer.from([0xa8]), ...new Array<Buffer>(8).fill(emptyObjects)]) },
    { name: 'empty arrays', payload: arrayOf(4 * MiB - 5, Buffer.from([0xa0])) },
    { name: 'empty objects', payload: arrayOf(4 * MiB - 5, Buffer.from([0xb0])) },
    { name: 'arrays of one zero', payload: arrayOf(Math.floor((4 * MiB - 5) / 2), Buffer.from([0xa1, 0x00])) },
    { name: 'pairs of zeros', payload: arrayOf(Math.floor((4 * MiB - 5) / 3), Buffer.from([0xa2, 0x00, 0x00])) },
    { name: 'empty buffers', payload: arrayOf(Math.floor((4 * MiB - 5) / 5), Buffer.from([0xc6, 0, 0, 0, 0])) },
    { name: 'objects with distinct keys', payload: distinctKeyObjects },
    { name: 'nested empties', payload: arrayOf(Math.floor((4 * MiB - 5) / 4), Buffer.from([0xa3, 0xa0, 0xb0, 0xa0])) },
  ];
}

describe('value codec bombs', () => {
  it('refuses 4 MiB payloads of small collections, as a frame too, before building them', () => {
    for (const { name, payload } of bombs()) {
      const decoded = decodeValue(payload);
      expect(decoded.ok, name).toBe(false);
      if (!decoded.ok) expect(['over_heap_budget', 'collection_too_large'], name).toContain(decoded.reason);
      const frame = frameAround(payload);
      const result = new FrameDecoder({ frameBytesMax: 8 * MiB }).push(frame);
      expect(result.error?.kind, name).toBe('bad_payload');
    }
    expect(decodeValue(arrayOf(MiB - 5, Buffer.from([0xb0])))).toMatchObject({ ok: false, reason: 'over_heap_budget' });
  });

  it('keeps heap growth within a few MiB of the payload while refusing many bombs (no global.gc)', () => {
    const payloads = bombs().map(({ payload }) => payload);
    const frames = payloads.map(frameAround);
    const before = process.memoryUsage().heapUsed;
    for (let round = 0; round < 3; round++) {
      for (const payload of payloads) expect(decodeValue(payload).ok).toBe(false);
      for (const frame of frames) expect(new FrameDecoder({ frameBytesMax: 8 * MiB }).push(frame).error?.kind).toBe('bad_payload');
    }
    const grownBytes = process.memoryUsage().heapUsed - before;
    // Before the check pass, one empty-objects bomb alone built ~256 MiB.
    expect(grownBytes).toBeLessThan(4 * MiB + 4 * MiB);
  });

  it('refuses a small bomb the same way in every chunking', () => {
    const tight = { ...DECODE_LIMITS_DEFAULT, heapBytesAllowance: 0 };
    const payload = arrayOf(200, Buffer.from([0xb0]));
    expect(decodeValue(payload, { limits: tight })).toMatchObject({ ok: false, reason: 'over_heap_budget' });
    for (const { name, chunks } of chunkings(frameAround(payload))) {
      expect(feed(chunks, { decodeLimits: { heapBytesAllowance: 0 } }).error, name).toMatchObject({ kind: 'bad_payload', reason: 'over_heap_budget' });
    }
  });

  it('accepts the densest messages mckv sends with room to spare under the heap budget', () => {
    const random = mulberry32(7);
    const twoCharKey = (index: number): string => String.fromCharCode(33 + (index % 90), 33 + Math.floor(index / 90) % 90);
    const messages = [
      { kind: 'ae_buckets', round: 1, groups: Array.from({ length: 64 }, (_, index) => index), buckets: Array.from({ length: 50_000 }, (_, index) => [index % 128, Math.floor(random() * 2 ** 31)]) },
      { kind: 'push_ack', batch: 3, versions: Array.from({ length: 50_000 }, (_, index) => [twoCharKey(index), BigInt(index) << 20n]) },
      { kind: 'ae_want', round: 2, keys: Array.from({ length: 8000 }, (_, index) => twoCharKey(index)) },
      { kind: 'ae_groups', round: 3, groups: Array.from({ length: 100_000 }, (_, index) => index % 100) },
      { kind: 'push', batch: 1, entries: Array.from({ length: 20_000 }, (_, index) => [`k${index}`, { value: Buffer.alloc(0), flags: 0, expiresAtMs: 0, cas: BigInt(index) }]) },
    ];
    // Two thirds of the default budget per byte, and no allowance: every shape fits.
    const heapBytesPerPayloadByteMax = (DECODE_LIMITS_DEFAULT.heapBytesPerPayloadByteMax * 2) / 3;
    const tighter = { ...DECODE_LIMITS_DEFAULT, heapBytesPerPayloadByteMax, heapBytesAllowance: 0 };
    for (const message of messages) {
      const decoded = decodeValue(encodeValue(message), { limits: tighter });
      expect(decoded, message.kind).toEqual({ ok: true, value: message });
    }
  });
});

describe('value codec limits', () => {
  function nested(depth: number): Buffer {
    return Buffer.concat([Buffer.alloc(depth, 0xa1), Buffer.from([0xc0])]);
  }

  it('refuses nesting past depthMax, from a 1 MiB depth bomb down to one level over', () => {
    expect(decodeValue(nested(VALUE_DEPTH_MAX)).ok).toBe(true);
    expect(refusalOf(nested(VALUE_DEPTH_MAX + 1))).toBe('too_deep');
    expect(refusalOf(Buffer.alloc(MiB, 0xa1), { everyChunking: false })).toBe('too_deep');
    const objects = Buffer.alloc(2 * 100_000);
    for (let index = 0; index < 100_000; index++) objects.set([0xb1, 0x80], 2 * index);
    expect(refusalOf(objects, { everyChunking: false })).toBe('too_deep');
    expect(decodeValue(nested(4), { limits: { ...DECODE_LIMITS_DEFAULT, depthMax: 3 } })).toMatchObject({ reason: 'too_deep' });
  });

  it('refuses bigints over BIGINT_BITS_MAX bits, and will not encode them', () => {
    expect(BIGINT_BITS_MAX).toBe(128);
    for (const value of [2n ** 64n, 2n ** 128n - 1n, -(2n ** 128n - 1n)]) {
      expect(decodeValue(encodeValue(value))).toEqual({ ok: true, value });
    }
    for (const value of [2n ** 128n, -(2n ** 521n)]) expect(() => encodeValue(value)).toThrow(RangeError);
    const huge = Buffer.alloc(6 + 66, 0xff); // 2^528 - 1, as the encoder of an earlier release wrote it
    huge.set([0xcb, 0x00], 0);
    huge.writeUInt32LE(66, 2);
    expect(refusalOf(huge)).toBe('bigint_too_large');
    const bits129 = Buffer.from([0xcb, 0x01, 17, 0, 0, 0, 0x01, ...Buffer.alloc(16)]);
    expect(refusalOf(bits129)).toBe('bigint_too_large');
    const megabyte = Buffer.alloc(6 + MiB, 0x7f);
    megabyte.set([0xcb, 0x00], 0);
    megabyte.writeUInt32LE(MiB, 2);
    expect(refusalOf(megabyte, { everyChunking: false })).toBe('bigint_too_large');
    expect(decodeValue(encodeValue(2n ** 63n), { limits: { ...DECODE_LIMITS_DEFAULT, bigintBitsMax: 63 } })).toMatchObject({ reason: 'bigint_too_large' });
  });

  it('refuses every length or count larger than the payload before allocating', () => {
    for (const tag of [0xc5, 0xc6, 0xc7, 0xc8]) {
      for (const size of [0xffffffff, 0x80000000, 1000, 32]) {
        const payload = Buffer.from([tag, 0, 0, 0, 0, 0x61, 0x61, 0x61]);
        payload.writeUInt32LE(size, 1);
        expect(refusalOf(payload), `tag ${tag} size ${size}`).toBe('length_exceeds_payload');
      }
    }
    const bigint = Buffer.from([0xcb, 0x00, 0xff, 0xff, 0xff, 0xff, 0x01]);
    expect(refusalOf(bigint)).toBe('length_exceeds_payload');
    expect(refusalOf(Buffer.from([0x9f, 0x61]))).toBe('length_exceeds_payload');
    expect(refusalOf(Buffer.from([0xaf, 0x01]))).toBe('length_exceeds_payload');
    expect(refusalOf(Buffer.from([0xbf, 0x80, 0x01]))).toBe('length_exceeds_payload');
  });

  it('refuses collections over collectionItemsMax and payloads over totalItemsMax', () => {
    const limits = { ...DECODE_LIMITS_DEFAULT, collectionItemsMax: 100, totalItemsMax: 1000 };
    expect(decodeValue(encodeValue(new Array(100).fill(0)), { limits }).ok).toBe(true);
    expect(decodeValue(encodeValue(new Array(101).fill(0)), { limits })).toMatchObject({ reason: 'collection_too_large' });
    expect(decodeValue(encodeValue(Object.fromEntries(Array.from({ length: 101 }, (_, index) => [`k${index}`, 0]))), { limits })).toMatchObject({ reason: 'collection_too_large' });
    const wide = Array.from({ length: 10 }, () => new Array(99).fill(0));
    expect(decodeValue(encodeValue(wide), { limits })).toMatchObject({ ok: false, reason: 'too_many_items' });
    for (const { name, chunks } of chunkings(encodeFrame(new Array(101).fill(0)))) {
      expect(feed(chunks, { decodeLimits: { collectionItemsMax: 100 } }).error, name).toMatchObject({ reason: 'collection_too_large' });
    }
  });
});

describe('value codec object keys', () => {
  /** {"<key>": <value>, ...} written by hand, so keys may repeat. */
  function objectPayload(fields: Array<[string, Buffer]>): Buffer {
    const parts: Buffer[] = [Buffer.from([0xb0 | fields.length])];
    for (const [key, value] of fields) parts.push(Buffer.from([0x80 | Buffer.byteLength(key)]), Buffer.from(key), value);
    return Buffer.concat(parts);
  }

  it('keeps __proto__ and constructor plain own fields and pollutes nothing', () => {
    const payload = objectPayload([
      ['__proto__', encodeValue({ polluted: true })],
      ['constructor', encodeValue({ prototype: { polluted: true } })],
      ['a', encodeValue(1)],
    ]);
    for (const { name, chunks } of chunkings(frameAround(payload))) {
      const { messages, error } = feed(chunks);
      expect(error, name).toBeNull();
      const decoded = messages[0] as Record<string, unknown>;
      expect(Object.getPrototypeOf(decoded)).toBe(Object.prototype);
      expect(Object.keys(decoded)).toEqual(['__proto__', 'constructor', 'a']);
      expect(Object.getOwnPropertyDescriptor(decoded, '__proto__')?.value).toEqual({ polluted: true });
      expect((decoded as { polluted?: unknown }).polluted).toBeUndefined();
      expect(({} as { polluted?: unknown }).polluted).toBeUndefined();
      expect(encodeValue(decoded).equals(payload)).toBe(true);
    }
  });

  it('refuses duplicate keys, __proto__ included', () => {
    expect(refusalOf(objectPayload([['a', encodeValue(1)], ['a', encodeValue(2)]]))).toBe('duplicate_key');
    expect(refusalOf(objectPayload([['__proto__', encodeValue({})], ['__proto__', encodeValue(null)]]))).toBe('duplicate_key');
    expect(refusalOf(objectPayload([['0', encodeValue(1)], ['0', encodeValue(2)]]))).toBe('not_canonical');
  });

  it('refuses array-index keys out of the order JavaScript enumerates them', () => {
    expect(decodeValue(objectPayload([['1', encodeValue(1)], ['2', encodeValue(2)], ['b', encodeValue(3)]])).ok).toBe(true);
    expect(refusalOf(objectPayload([['b', encodeValue(1)], ['1', encodeValue(2)]]))).toBe('not_canonical');
    expect(refusalOf(objectPayload([['2', encodeValue(1)], ['1', encodeValue(2)]]))).toBe('not_canonical');
    expect(decodeValue(objectPayload([['b', encodeValue(1)], ['01', encodeValue(2)], ['4294967295', encodeValue(3)]])).ok).toBe(true);
  });

  it('refuses keys that are not strings', () => {
    expect(refusalOf(Buffer.from([0xb1, 0x05, 0x05]))).toBe('key_not_string');
  });
});

describe('value codec canonical form', () => {
  it('refuses every encoding ValueEncoder would not write', () => {
    const cases: Array<[string, Buffer]> = [
      ['int32 holding a fixint', Buffer.from([0xc3, 5, 0, 0, 0])],
      ['float64 holding an int32', Buffer.from([0xc4, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f])],
      ['long string of 3 bytes', Buffer.from([0xc5, 3, 0, 0, 0, 0x61, 0x62, 0x63])],
      ['long array of 1', Buffer.from([0xc7, 1, 0, 0, 0, 0xc0])],
      ['long object of 0', Buffer.from([0xc8, 0, 0, 0, 0])],
      ['negative zero bigint', Buffer.from([0xca, 0, 0, 0, 0, 0, 0, 0, 0])],
      ['any-size bigint that fits 64 bits', Buffer.from([0xcb, 0, 1, 0, 0, 0, 7])],
      ['any-size bigint with a leading zero', Buffer.from([0xcb, 0, 10, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1])],
    ];
    for (const [name, payload] of cases) expect(refusalOf(payload), name).toBe('not_canonical');
    expect(refusalOf(Buffer.from([0x82, 0xc3, 0x28]))).toBe('bad_utf8');
    expect(refusalOf(Buffer.from([0x83, 0xed, 0xa0, 0x80]))).toBe('bad_utf8'); // a surrogate
    expect(refusalOf(Buffer.from([0xcb, 0x02, 9, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]))).toBe('bad_bigint');
    expect(refusalOf(Buffer.from([0x01, 0x02]))).toBe('trailing_bytes');
    expect(refusalOf(Buffer.from([0xd0]))).toBe('unknown_tag');
    expect(refusalOf(Buffer.alloc(0))).toBe('truncated');
  });
});

describe('FrameDecoder cap', () => {
  it('defaults to what the config gives for the default value_bytes_max', () => {
    expect(FRAME_BYTES_MAX_DEFAULT).toBe(defaultPeerFrameBytesMax(1024 * 1024));
    expect(new FrameDecoder().frameBytesMax).toBe(FRAME_BYTES_MAX_DEFAULT);
  });

  it('refuses a frame over the cap from its header, with no body buffered', () => {
    const frame = encodeFrame('x'.repeat(2000));
    for (const { name, chunks } of chunkings(frame)) {
      const decoder = new FrameDecoder({ frameBytesMax: FRAME_BYTES_MAX_UNAUTHENTICATED });
      let error = null;
      for (const chunk of chunks) {
        error = decoder.push(chunk).error;
        if (error !== null) break;
      }
      expect(error, name).toEqual({ kind: 'oversized', frameBytes: frame.length, frameBytesMax: 1024 });
      expect(decoder.pendingBytes, name).toBe(0);
    }
  });

  it('lets a caller judge a hello under a small cap, then raise the cap for the frames behind it', () => {
    const hello = { kind: 'hello', from: 'n2', to: 'n1', version: FRAME_VERSION };
    const push = { kind: 'push', entries: [['k', { value: 'v'.repeat(FRAME_BYTES_MAX_UNAUTHENTICATED) }]] };
    const stream = Buffer.concat([encodeFrame(hello), encodeFrame(push), encodeFrame(7)]);
    expect(encodeFrame(push).length).toBeGreaterThan(FRAME_BYTES_MAX_UNAUTHENTICATED);
    for (const { name, chunks } of chunkings(stream)) {
      const decoder = new FrameDecoder({ frameBytesMax: FRAME_BYTES_MAX_UNAUTHENTICATED });
      const messages: unknown[] = [];
      for (const chunk of chunks) {
        const authenticated = messages.length > 0;
        const result = decoder.push(chunk, { messagesMax: authenticated ? Infinity : 1 });
        expect(result.error, name).toBeNull();
        messages.push(...result.messages);
        if (!authenticated && messages.length > 0) {
          decoder.setFrameBytesMax(FRAME_BYTES_MAX_DEFAULT);
          const rest = decoder.push(Buffer.alloc(0));
          expect(rest.error, name).toBeNull();
          messages.push(...rest.messages);
        }
      }
      expect(messages, name).toEqual([hello, push, 7]);
    }
  });

  it('fails a frame whose body is awaited once the cap is lowered below it', () => {
    const frame = encodeFrame('y'.repeat(3000));
    const decoder = new FrameDecoder();
    expect(decoder.push(frame.subarray(0, 100)).error).toBeNull();
    decoder.setFrameBytesMax(2000);
    expect(decoder.push(frame.subarray(100)).error).toEqual({ kind: 'oversized', frameBytes: frame.length, frameBytesMax: 2000 });
    expect(decoder.pendingBytes).toBe(0);
  });

  it('takes only a whole cap of at least a header', () => {
    const decoder = new FrameDecoder();
    for (const bad of [0, FRAME_HEADER_BYTES - 1, 1.5, Number.NaN]) expect(() => decoder.setFrameBytesMax(bad)).toThrow(RangeError);
    expect(() => new FrameDecoder({ frameBytesMax: 5 })).toThrow(RangeError);
    expect(decoder.frameBytesMax).toBe(FRAME_BYTES_MAX_DEFAULT);
  });
});

// ---------------------------------------------------------------------------------------------
// Seeded fuzz: whatever bytes arrive, FrameDecoder returns values or a typed error, never throws.

/** A generated value of at most `budget.nodes` nodes, nested at most 5 deep. */
function randomValue(random: Random, depth: number, budget = { nodes: 60 }): unknown {
  const roll = random();
  budget.nodes--;
  if (depth > 4 || budget.nodes <= 0 || roll < 0.45) {
    const scalars = [null, true, false, 0, 127, -32, -33, 128, 70_000, -(2 ** 31), 2 ** 31, 1.5, -0, Number.NaN, Infinity, '', 'ab', 'é', 'x'.repeat(40), 5n, 2n ** 64n, -(2n ** 100n), Buffer.from([1, 2])];
    return scalars[Math.floor(random() * scalars.length)];
  }
  const size = itemAt([0, 1, 2, 15, 16, 17], Math.floor(random() * 6));
  if (roll < 0.75) return Array.from({ length: size }, () => randomValue(random, depth + 1, budget));
  const keys = ['kind', '0', '3', '__proto__', 'constructor', 'k'.repeat(33), 'ключ'];
  const out: Record<string, unknown> = {};
  for (let index = 0; index < size; index++) {
    const key = itemAt(keys, index % keys.length) + (index >= keys.length ? index : '');
    const value = randomValue(random, depth + 1, budget);
    Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true });
  }
  return out;
}

function mutate(random: Random, payload: Buffer): Buffer {
  const out = Buffer.from(payload);
  const kind = Math.floor(random() * 4);
  if (kind === 3 && out.length > 1) return out.subarray(0, Math.floor(random() * out.length)); // truncated
  const flips = 1 + Math.floor(random() * 3);
  for (let flip = 0; flip < flips && out.length > 0; flip++) {
    const at = Math.floor(random() * out.length);
    out[at] = kind === 0
      ? out.readUInt8(at) ^ (1 << Math.floor(random() * 8))
      : kind === 1 ? Math.floor(random() * 256) : itemAt([0x00, 0x7f, 0x80, 0xff, 0xc7, 0xcb], Math.floor(random() * 6));
  }
  return out;
}

const REASONS: readonly ValueDecodeReason[] = [
  'truncated', 'length_exceeds_payload', 'trailing_bytes', 'unknown_tag', 'too_deep', 'collection_too_large', 'too_many_items',
  'bigint_too_large', 'bad_bigint', 'over_heap_budget', 'not_canonical', 'bad_utf8', 'key_not_string', 'duplicate_key',
];

function holdsNaN(value: unknown): boolean {
  if (typeof value === 'number') return Number.isNaN(value);
  if (typeof value !== 'object' || value === null || Buffer.isBuffer(value)) return false;
  return Object.values(value).some(holdsNaN);
}

describe('FrameDecoder fuzz (seeded)', () => {
  it('decodes random and mutated encodings in random chunks to re-encodable values or typed errors', () => {
    const random = mulberry32(0xf022);
    const counts = { accepted: 0, refused: 0 };
    for (let trial = 0; trial < 4000; trial++) {
      const valid = encodeValue(randomValue(random, 0));
      const roll = random();
      const payload = roll < 0.15
        ? Buffer.from(Array.from({ length: Math.floor(random() * 30) }, () => Math.floor(random() * 256)))
        : roll < 0.3 ? valid : mutate(random, valid);
      const frame = frameAround(payload);
      const cuts = Array.from({ length: Math.floor(random() * 4) }, () => Math.floor(random() * frame.length)).sort((a, b) => a - b);
      const chunks = trial % 50 === 0
        ? itemAt(chunkings(frame), 1).chunks
        : [0, ...cuts].map((cut, index, all) => frame.subarray(cut, all[index + 1] ?? frame.length));
      const result = feed(chunks);
      const decoded = decodeValue(payload);
      if (decoded.ok) {
        counts.accepted++;
        expect(result).toEqual({ messages: [decoded.value], error: null });
        const again = encodeValue(decoded.value);
        // NaN payload bits are the one thing JavaScript may not keep.
        if (!again.equals(payload)) expect(holdsNaN(decoded.value)).toBe(true);
        expect(decodeValue(again)).toEqual(decoded);
      } else {
        counts.refused++;
        expect(REASONS).toContain(decoded.reason);
        expect(result).toEqual({ messages: [], error: { kind: 'bad_payload', reason: decoded.reason, detail: decoded.detail } });
      }
    }
    expect(counts.accepted).toBeGreaterThan(1000);
    expect(counts.refused).toBeGreaterThan(1000);
  });
});
