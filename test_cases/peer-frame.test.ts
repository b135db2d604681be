/**
 * Peer frame codec and the binary value codec of its payload: every frame case runs as one chunk,
 * byte by byte, and split at every boundary; corrupt input (frame or payload) is a typed error
 * value, never an exception; an oversized length is refused from the header alone; a seeded
 * property test round-trips generated values and fuzzes the payload decoder.
 */

import { crc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import {
  FRAME_HEADER_BYTES,
  FRAME_VERSION,
  FrameDecoder,
  describeFrameError,
  encodeFrame,
  type FrameDecodeResult,
} from '../src/peer/frame.ts';
import { VALUE_DEPTH_MAX, ValueEncoder, decodeValue, encodeValue } from '../src/peer/value-codec.ts';
import { mulberry32, type Random } from '../src/runtime/random.ts';
import { itemAt } from '../src/runtime/item-at.ts';

/** Feeds `chunks` in order and gathers every message and the first error. */
function decodeChunks(chunks: Buffer[], frameBytesMax?: number): FrameDecodeResult {
  const decoder = new FrameDecoder({ frameBytesMax });
  const messages: unknown[] = [];
  for (const chunk of chunks) {
    const result = decoder.push(chunk);
    messages.push(...result.messages);
    if (result.error !== null) return { messages, error: result.error };
  }
  return { messages, error: null };
}

/** A valid header (right version, length and checksum) around an arbitrary payload. */
function frameAround(payload: Buffer): Buffer {
  const header = Buffer.alloc(FRAME_HEADER_BYTES);
  header.write('MCKV', 0, 'latin1');
  header.writeUInt8(FRAME_VERSION, 4);
  header.writeUInt32BE(payload.length, 5);
  header.writeUInt32BE(crc32(payload), 9);
  return Buffer.concat([header, payload]);
}

function byteByByte(bytes: Buffer): Buffer[] {
  return Array.from({ length: bytes.length }, (_, index) => bytes.subarray(index, index + 1));
}

/** Every way to cut `bytes` in two (one cut point at a time). */
function everyTwoWaySplit(bytes: Buffer): Buffer[][] {
  return Array.from({ length: bytes.length + 1 }, (_, cut) => [bytes.subarray(0, cut), bytes.subarray(cut)]);
}

const samples: unknown[] = [
  { kind: 'heartbeat', info: { term: 3, role: 'follower' } },
  { kind: 'append', entries: [{ key: 'k', value: Buffer.from([0, 1, 2, 255]), cas: 12345678901234567890n }] },
  [1, 'two', null, true, -0.5, { nested: [Buffer.alloc(0), -7n] }],
  'just a string',
  42,
  null,
  { $b: 'not a buffer', other: 1 },
  { $b: 'looks like a buffer tag but is a string' },
  { $n: '12' },
  { $o: { $b: 'x' } },
  { unicode: 'naïve — 日本語 😀', empty: {} },
];

describe('encodeFrame / FrameDecoder round trip', () => {
  const stream = Buffer.concat(samples.map((sample) => encodeFrame(sample)));

  it('decodes a stream of frames delivered as one chunk', () => {
    expect(decodeChunks([stream])).toEqual({ messages: samples, error: null });
  });

  it('decodes the same stream delivered byte by byte', () => {
    expect(decodeChunks(byteByByte(stream))).toEqual({ messages: samples, error: null });
  });

  it('decodes each frame split at every boundary', () => {
    for (const sample of samples) {
      for (const chunks of everyTwoWaySplit(encodeFrame(sample))) {
        expect(decodeChunks(chunks)).toEqual({ messages: [sample], error: null });
      }
    }
  });

  it('decodes a pair of frames split at every boundary', () => {
    const pair = Buffer.concat([encodeFrame(samples[0]), encodeFrame(samples[1])]);
    for (const chunks of everyTwoWaySplit(pair)) {
      expect(decodeChunks(chunks).messages).toEqual([samples[0], samples[1]]);
    }
  });

  it('round-trips Buffers and bigints as their own types', () => {
    const [message] = decodeChunks([encodeFrame({ value: Buffer.from('héllo'), cas: 2n ** 64n - 1n })]).messages;
    const decoded = message as { value: unknown; cas: unknown };
    expect(Buffer.isBuffer(decoded.value)).toBe(true);
    expect((decoded.value as Buffer).toString()).toBe('héllo');
    expect(decoded.cas).toBe(18446744073709551615n);
  });

  it('encodes a Uint8Array as a Buffer and drops undefined fields as JSON does', () => {
    const [message] = decodeChunks([encodeFrame({ bytes: new Uint8Array([9, 8]), gone: undefined, list: [undefined] })])
      .messages;
    expect(message).toEqual({ bytes: Buffer.from([9, 8]), list: [null] });
  });

  it('writes the documented header', () => {
    const frame = encodeFrame({ a: 1 });
    expect(frame.subarray(0, 4).toString('latin1')).toBe('MCKV');
    expect(frame.readUInt8(4)).toBe(2);
    expect(FRAME_VERSION).toBe(2);
    expect(frame.readUInt32BE(5)).toBe(frame.length - FRAME_HEADER_BYTES);
  });

  it('accepts an empty-payload frame boundary without losing later frames', () => {
    const frames = Buffer.concat([encodeFrame(null), encodeFrame(0), encodeFrame('')]);
    expect(decodeChunks(byteByByte(frames)).messages).toEqual([null, 0, '']);
  });
});

describe('FrameDecoder errors', () => {
  it('rejects a corrupt checksum', () => {
    const frame = encodeFrame({ kind: 'heartbeat' });
    frame.writeUInt8(frame.readUInt8(frame.length - 2) ^ 0x01, frame.length - 2);
    for (const chunks of [[frame], byteByByte(frame)]) {
      const result = decodeChunks(chunks);
      expect(result.messages).toEqual([]);
      expect(result.error?.kind).toBe('checksum_mismatch');
    }
  });

  it('rejects bad magic from the first wrong byte, before a header is complete', () => {
    const decoder = new FrameDecoder();
    expect(decoder.push(Buffer.from('M')).error).toBeNull();
    const result = decoder.push(Buffer.from('X'));
    expect(result.error).toEqual({ kind: 'bad_magic' });
    expect(decoder.pendingBytes).toBe(0);
  });

  it('rejects garbage such as an HTTP request', () => {
    expect(decodeChunks([Buffer.from('GET / HTTP/1.1\r\n\r\n')]).error).toEqual({ kind: 'bad_magic' });
  });

  it('rejects an unknown version', () => {
    const frame = encodeFrame('x');
    frame.writeUInt8(1, 4); // a peer of the tagged-JSON release
    expect(decodeChunks([frame]).error).toEqual({ kind: 'bad_version', version: 1 });
  });

  it('rejects an oversized length from the header alone, before buffering the body', () => {
    const header = encodeFrame('x').subarray(0, FRAME_HEADER_BYTES);
    header.writeUInt32BE(4_000_000_000, 5);
    const decoder = new FrameDecoder({ frameBytesMax: 1024 });
    const result = decoder.push(header);
    expect(result.error).toEqual({ kind: 'oversized', frameBytes: 4_000_000_013, frameBytesMax: 1024 });
    expect(decoder.pendingBytes).toBe(0);
  });

  it('accepts a frame of exactly frameBytesMax and refuses one byte more', () => {
    const frame = encodeFrame('a'.repeat(100));
    expect(decodeChunks([frame], frame.length).messages).toEqual(['a'.repeat(100)]);
    expect(decodeChunks([frame], frame.length - 1).error?.kind).toBe('oversized');
  });

  it('reports a malformed payload behind a valid checksum, in every chunking', () => {
    const payloads = [
      Buffer.from('{"unterminated":'), // a version 1 JSON payload is not a value encoding
      encodeValue({ list: [1, 2, 3] }).subarray(0, 5), // truncated
      Buffer.from([0xc5, 0xff, 0xff, 0xff, 0x7f]), // a 2 GiB string in 5 bytes
      Buffer.alloc(0),
    ];
    for (const payload of payloads) {
      const frame = frameAround(payload);
      for (const chunks of [[frame], byteByByte(frame), ...everyTwoWaySplit(frame)]) {
        const result = decodeChunks(chunks);
        expect(result.messages).toEqual([]);
        expect(result.error?.kind).toBe('bad_payload');
      }
    }
  });

  it('returns frames completed before the error, then stays failed', () => {
    const garbage = Buffer.from('garbage!!!!!!!!!!');
    const decoder = new FrameDecoder();
    const first = decoder.push(Buffer.concat([encodeFrame(1), encodeFrame(2), garbage]));
    expect(first.messages).toEqual([1, 2]);
    expect(first.error?.kind).toBe('bad_magic');
    const later = decoder.push(encodeFrame(3));
    expect(later).toEqual({ messages: [], error: { kind: 'bad_magic' } });
  });

  it('describes every error in one line', () => {
    const text = describeFrameError({ kind: 'oversized', frameBytes: 10, frameBytesMax: 5 });
    expect(text).toContain('frameBytesMax 5');
    expect(describeFrameError({ kind: 'bad_version', version: 9 })).toContain('9');
    expect(describeFrameError({ kind: 'bad_payload', reason: 'unknown_tag', detail: 'unknown tag 0xd0 at byte 3' })).toContain('unknown tag 0xd0');
  });
});

// ---------------------------------------------------------------------------------------------
// The binary value codec on its own.

/** Decodes and insists on success, so a failing case shows the codec's detail. */
function roundTrip(value: unknown): unknown {
  const decoded = decodeValue(encodeValue(value));
  if (!decoded.ok) throw new Error(`decode failed: ${decoded.detail}`);
  return decoded.value;
}

/** What JSON semantics make of a value: undefined/function fields gone, such elements null. */
function normalize(value: unknown): unknown {
  if (Array.isArray(value)) return value.map((element) => (isSkipped(element) ? null : normalize(element)));
  if (typeof value !== 'object' || value === null || value instanceof Uint8Array) return value;
  const out: Record<string, unknown> = {};
  for (const [key, field] of Object.entries(value)) if (!isSkipped(field)) out[key] = normalize(field);
  return out;
}

function isSkipped(value: unknown): boolean {
  return value === undefined || typeof value === 'function' || typeof value === 'symbol';
}

function nestedArrays(depth: number): unknown {
  let value: unknown = 'leaf';
  for (let level = 0; level < depth; level++) value = [value];
  return value;
}

describe('value codec round trips', () => {
  const scalars: unknown[] = [
    null, true, false, 0, 1, 127, 128, 255, 256, -1, -32, -33, -128, 2 ** 31 - 1, -(2 ** 31), 2 ** 31, -(2 ** 31) - 1,
    Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER, 1.5, -0.25, 1e300, 5e-324, Math.PI, 1_722_000_000_123,
    '', 'a', 'x'.repeat(31), 'x'.repeat(32), 'y'.repeat(70_000), 'naïve — 日本語 😀', 'é'.repeat(16), '\u0000\u007f',
  ];

  it('round-trips every scalar kind exactly', () => {
    for (const value of scalars) expect(roundTrip(value)).toEqual(value);
  });

  it('keeps -0, NaN and ±Infinity exactly (JSON would not)', () => {
    expect(Object.is(roundTrip(-0), -0)).toBe(true);
    expect(Object.is(roundTrip(0), 0)).toBe(true);
    expect(roundTrip(Number.NaN)).toBeNaN();
    expect(roundTrip(Infinity)).toBe(Infinity);
    expect(roundTrip(-Infinity)).toBe(-Infinity);
  });

  it('round-trips bigints of every size and sign up to BIGINT_BITS_MAX bits as bigints', () => {
    const bigints = [0n, 1n, -1n, 2n ** 32n, 2n ** 63n, 2n ** 64n - 1n, 2n ** 64n, -(2n ** 64n) + 1n, -(2n ** 64n)];
    bigints.push(2n ** 128n - 1n, -(3n ** 80n), (1_722_000_000_000n << 16n) + 7n, 255n, 256n, -(2n ** 72n));
    for (const value of bigints) expect(roundTrip(value)).toBe(value);
  });

  it('round-trips Buffers, empty and 2 MiB, and turns other Uint8Arrays into Buffers', () => {
    const large = Buffer.alloc(2 * 1024 * 1024);
    for (let index = 0; index < large.length; index++) large[index] = (index * 131) & 0xff;
    for (const bytes of [Buffer.alloc(0), Buffer.from([0, 255]), large]) {
      const decoded = roundTrip(bytes);
      expect(Buffer.isBuffer(decoded)).toBe(true);
      expect((decoded as Buffer).equals(bytes)).toBe(true);
    }
    const view = new Uint8Array(new ArrayBuffer(8), 2, 3).fill(7);
    expect(roundTrip(view)).toEqual(Buffer.from([7, 7, 7]));
  });

  it('round-trips nested structures, large containers and unusual field names', () => {
    const manyFields = Object.fromEntries(Array.from({ length: 40 }, (_, index) => [`field${index}`, index * 1000]));
    const value = {
      kind: 'push',
      entries: [['key:1', { value: Buffer.from('v'), flags: 3, expiresAtMs: 0, cas: 99n, tombstone: true }]],
      manyFields,
      manyElements: Array.from({ length: 300 }, (_, index) => index - 150),
      '': 'empty key',
      'ключ 😀': 'unicode key',
      ['k'.repeat(40)]: 'long key',
      empty: { object: {}, array: [] },
      deep: nestedArrays(VALUE_DEPTH_MAX - 2),
    };
    expect(roundTrip(value)).toEqual(value);
    expect(Object.keys(roundTrip(manyFields) as object)).toEqual(Object.keys(manyFields));
  });

  it('decodes thousands of distinct field names right, however they share key-cache slots', () => {
    const many = Object.fromEntries(Array.from({ length: 6000 }, (_, index) => [`k${index}`, index]));
    const asciiKey = (index: number): string => String.fromCharCode(32 + (index % 95)).repeat(1 + (index % 24)) + index;
    const ascii = Object.fromEntries(Array.from({ length: 300 }, (_, index) => [asciiKey(index), index]));
    for (let pass = 0; pass < 2; pass++) {
      expect(roundTrip(many)).toEqual(many);
      expect(roundTrip(ascii)).toEqual(ascii);
      expect(roundTrip({ 'é': 1, 'e\u0301': 2, ef: 3 })).toEqual({ 'é': 1, 'e\u0301': 2, ef: 3 });
    }
  });

  it('keeps a field named __proto__ a field, as JSON.parse does', () => {
    const value = JSON.parse('{"__proto__": {"polluted": true}, "a": 1}') as Record<string, unknown>;
    const decoded = roundTrip(value) as Record<string, unknown>;
    expect(Object.getPrototypeOf(decoded)).toBe(Object.prototype);
    expect(Object.keys(decoded)).toEqual(['__proto__', 'a']);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('skips undefined, function and symbol fields and uses toJSON, as JSON.stringify does', () => {
    const value = { a: undefined, f: () => 1, s: Symbol('s'), list: [undefined, () => 1], when: new Date(0), kept: 1 };
    expect(roundTrip(value)).toEqual({ list: [null, null], when: '1970-01-01T00:00:00.000Z', kept: 1 });
    expect(roundTrip(undefined)).toBeNull();
    expect(roundTrip({ toJSON: () => ({ replaced: [1n] }) })).toEqual({ replaced: [1n] });
  });

  it('returns Buffers that view the payload unless copyBuffers is set', () => {
    const payload = encodeValue({ value: Buffer.from('abc') });
    const view = (decodeValue(payload) as { ok: true; value: { value: Buffer } }).value.value;
    const copy = (decodeValue(payload, { copyBuffers: true }) as { ok: true; value: { value: Buffer } }).value.value;
    expect(copy).toEqual(view);
    payload.fill(0x78);
    expect(view.toString()).toBe('xxx');
    expect(copy.toString()).toBe('abc');
  });

  it('hands out a fresh Buffer from each encode, so the scratch can be reused', () => {
    const encoder = new ValueEncoder();
    const first = encoder.encode({ a: 'first' });
    const firstCopy = Buffer.from(first);
    encoder.encode({ a: 'second, longer' });
    expect(first).toEqual(firstCopy);
    const withRoom = encoder.encode(7, 3);
    expect(withRoom.length).toBe(4);
    expect(decodeValue(withRoom.subarray(3))).toEqual({ ok: true, value: 7 });
  });

  it('refuses to encode a value nested deeper than VALUE_DEPTH_MAX, and a cycle', () => {
    expect(roundTrip(nestedArrays(VALUE_DEPTH_MAX))).toEqual(nestedArrays(VALUE_DEPTH_MAX));
    expect(() => encodeValue(nestedArrays(VALUE_DEPTH_MAX + 1))).toThrow(RangeError);
    const cycle: Record<string, unknown> = {};
    cycle.self = cycle;
    expect(() => encodeValue(cycle)).toThrow(RangeError);
    expect(roundTrip({ after: 'a refused encode leaves the encoder usable' })).toEqual({ after: 'a refused encode leaves the encoder usable' });
  });

  it('round-trips bigints past 64 bits, Buffers and a field named as a tag of the old JSON form', () => {
    const value = { cas: 2n ** 70n, value: Buffer.from([1, 2]), $b: 'x' };
    expect(roundTrip(value)).toEqual(value);
  });

  it('gives frame-decoded Buffers memory of their own, not a view into the socket chunk', () => {
    const frame = encodeFrame({ value: Buffer.from('held by the store') });
    const decoder = new FrameDecoder();
    const message = itemAt(decoder.push(frame).messages as Array<{ value: Buffer }>, 0);
    expect(message.value.toString()).toBe('held by the store');
    frame.fill(0);
    expect(message.value.toString()).toBe('held by the store');
  });
});

describe('value codec on malformed payloads', () => {
  function expectMalformed(payload: Buffer, detailPart?: string): void {
    const decoded = decodeValue(payload);
    expect(decoded.ok).toBe(false);
    if (!decoded.ok && detailPart !== undefined) expect(decoded.detail).toContain(detailPart);
  }

  it('refuses every truncation of a valid payload', () => {
    const payload = encodeValue({ kind: 'append', entries: [{ op: { value: Buffer.alloc(40, 1), cas: 2n ** 80n } }], n: 1.5, s: 'x'.repeat(40) });
    for (let length = 0; length < payload.length; length++) expectMalformed(payload.subarray(0, length));
  });

  it('refuses trailing bytes, unknown tags, non-string keys and bad bigints', () => {
    expectMalformed(Buffer.from([0x01, 0x02]), 'trailing');
    for (let tag = 0xcc; tag < 0xe0; tag++) expectMalformed(Buffer.from([tag, 0, 0, 0, 0]), 'unknown tag');
    expectMalformed(Buffer.from([0xb1, 0x05, 0x05]), 'key is not a string');
    expectMalformed(Buffer.from([0xcb, 0x02, 0x01, 0, 0, 0, 0x01]), 'sign');
    expectMalformed(Buffer.from([0xcb, 0x00, 0x00, 0, 0, 0]), '0 bytes');
  });

  it('refuses absurd lengths and counts before allocating anything', () => {
    for (const tag of [0xc5, 0xc6, 0xc7, 0xc8]) {
      for (const size of [0xffffffff, 0x7fffffff, 40]) {
        const payload = Buffer.from([tag, 0, 0, 0, 0, 0, 0, 0]);
        payload.writeUInt32LE(size, 1);
        expectMalformed(payload, 'exceeds');
      }
    }
    expectMalformed(Buffer.from([0xcb, 0x00, 0xff, 0xff, 0xff, 0xff, 0x01]), 'exceeds');
    expectMalformed(Buffer.from([0x9f, 0x61]), 'exceeds');
    expectMalformed(Buffer.from([0xaf, 0x01]), 'exceeds');
    expectMalformed(Buffer.from([0xa2, 0x01, 0xc3, 0x01]), 'payload ended');
  });

  it('refuses nesting deeper than VALUE_DEPTH_MAX without recursing further', () => {
    const deepest = Buffer.concat([Buffer.alloc(VALUE_DEPTH_MAX, 0xa1), Buffer.from([0xc0])]);
    expect(decodeValue(deepest).ok).toBe(true);
    expectMalformed(Buffer.concat([Buffer.alloc(VALUE_DEPTH_MAX + 1, 0xa1), Buffer.from([0xc0])]), 'nesting');
    expectMalformed(Buffer.alloc(1_000_000, 0xa1), 'nesting');
    const deepObjects = Buffer.alloc(2 * 100_000);
    for (let index = 0; index < 100_000; index++) deepObjects.set([0xb1, 0x80], 2 * index);
    expectMalformed(deepObjects, 'nesting');
  });

  it('never throws on random bytes or on random corruptions of valid payloads (seeded)', () => {
    const random = mulberry32(20240611);
    const valid = encodeValue({ a: [1, 'two', 3n, Buffer.alloc(10)], b: { c: -5, d: 2.5, e: 'x'.repeat(40) }, f: 2n ** 90n });
    for (let trial = 0; trial < 3000; trial++) {
      const payload = trial % 2 === 0 ? randomBytes(random, 1 + Math.floor(random() * 40)) : corrupt(random, valid);
      const decoded = decodeValue(payload);
      expect(typeof decoded.ok).toBe('boolean');
      if (decoded.ok) expect(decodeValue(encodeValue(decoded.value)).ok).toBe(true);
    }
  });
});

function randomBytes(random: Random, length: number): Buffer {
  return Buffer.from(Array.from({ length }, () => Math.floor(random() * 256)));
}

function corrupt(random: Random, payload: Buffer): Buffer {
  const out = Buffer.from(payload);
  const flips = 1 + Math.floor(random() * 3);
  for (let flip = 0; flip < flips; flip++) out[Math.floor(random() * out.length)] = Math.floor(random() * 256);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Seeded property test: generated values survive codec and frames, however the stream is cut.

function pick<T>(random: Random, choices: readonly T[]): T {
  return itemAt(choices, Math.floor(random() * choices.length));
}

function randomString(random: Random): string {
  const alphabets = ['abcdefghijklmnopqrstuvwxyz:_', 'ÀéïøŒ', '日本語中文', '😀🚀', '\u0000\t\n"\\'];
  const length = pick(random, [0, 1, 4, 12, 31, 32, 33, 200]);
  let out = '';
  for (let index = 0; index < length; index++) out += pick(random, [...pick(random, alphabets)]);
  return out;
}

function randomBigint(random: Random): bigint {
  let magnitude = 0n;
  const words = pick(random, [0, 1, 2, 3, 4]);
  for (let word = 0; word < words; word++) magnitude = (magnitude << 32n) | BigInt(Math.floor(random() * 2 ** 32));
  return random() < 0.3 ? -magnitude : magnitude;
}

function randomNumber(random: Random): number {
  const kinds = [
    () => Math.floor(random() * 256) - 64,
    () => Math.floor((random() - 0.5) * 2 ** 33),
    () => Math.floor(random() * Number.MAX_SAFE_INTEGER),
    () => (random() - 0.5) * 10 ** Math.floor(random() * 40),
    () => pick(random, [-0, Number.NaN, Infinity, -Infinity, 2 ** 31, -(2 ** 31)]),
  ];
  return pick(random, kinds)();
}

function randomScalar(random: Random): unknown {
  const kinds = [
    () => null,
    () => random() < 0.5,
    () => randomNumber(random),
    () => randomString(random),
    () => randomBigint(random),
    () => randomBytes(random, pick(random, [0, 1, 100, 300])),
    () => undefined,
  ];
  return pick(random, kinds)();
}

/** A generated value of at most `budget.nodes` nodes, nested at most 6 deep. */
function randomValue(random: Random, depth: number, budget = { nodes: 120 }): unknown {
  const roll = random();
  budget.nodes--;
  if (depth >= 6 || budget.nodes <= 0 || roll < 0.5) return randomScalar(random);
  const size = pick(random, [0, 1, 3, 15, 16, 20]);
  if (roll < 0.75) return Array.from({ length: size }, () => randomValue(random, depth + 1, budget));
  const out: Record<string, unknown> = {};
  for (let index = 0; index < size; index++) out[random() < 0.8 ? pick(random, ['kind', 'term', 'key', 'value', 'cas', 'entries']) + index : randomString(random)] = randomValue(random, depth + 1, budget);
  return out;
}

describe('value codec property test (seeded)', () => {
  it('round-trips generated values through the codec and through frames cut at random', () => {
    const random = mulberry32(0x6d636b76);
    for (let trial = 0; trial < 400; trial++) {
      const value = randomValue(random, 0);
      const expected = isSkipped(value) ? null : normalize(value);
      expect(roundTrip(value)).toEqual(expected);
      const stream = Buffer.concat([encodeFrame(value), encodeFrame(trial)]);
      const cuts = [0, Math.floor(random() * stream.length), Math.floor(random() * stream.length), stream.length].sort((a, b) => a - b);
      const chunks = cuts.slice(1).map((cut, index) => stream.subarray(cuts[index], cut));
      expect(decodeChunks(chunks)).toEqual({ messages: [expected, trial], error: null });
    }
  });
});
