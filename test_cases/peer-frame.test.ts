/**
 * Peer frame codec: every case runs as one chunk, byte by byte, and split at every boundary;
 * corrupt input is a typed error value, and an oversized length is refused from the header alone.
 */

import { describe, expect, it } from 'vitest';
import {
  FRAME_HEADER_BYTES,
  FrameDecoder,
  describeFrameError,
  encodeFrame,
  type FrameDecodeResult,
} from '../src/peer/frame.ts';

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
    expect(frame.readUInt8(4)).toBe(1);
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
    frame[frame.length - 2] ^= 0x01;
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
    frame.writeUInt8(2, 4);
    expect(decodeChunks([frame]).error).toEqual({ kind: 'bad_version', version: 2 });
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

  it('reports bad JSON behind a valid checksum', async () => {
    const { crc32 } = await import('node:zlib');
    const payload = Buffer.from('{"unterminated":');
    const header = Buffer.alloc(FRAME_HEADER_BYTES);
    header.write('MCKV', 0, 'latin1');
    header.writeUInt8(1, 4);
    header.writeUInt32BE(payload.length, 5);
    header.writeUInt32BE(crc32(payload), 9);
    expect(decodeChunks([header, payload]).error?.kind).toBe('bad_json');
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
  });
});
