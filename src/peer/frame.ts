/**
 * Peer frames: how one controller's message travels to another over a TCP byte stream. A frame is
 * a 13-byte header, then the payload (the message in value-codec.ts's binary encoding); why the
 * header and the checksum: docs/design.md, "Peer frames".
 *
 *   magic "MCKV" (4 bytes) | version (1 byte) | payload length (u32 BE) | crc32 of payload (u32 BE)
 *
 * Invariants:
 * - `FrameDecoder.push` never throws on malformed input; it returns a typed `FrameError`, and stays
 *   failed after one: the caller drops the connection.
 * - It never waits for more than one header plus `frameBytesMax` (a cap that can change on a live
 *   decoder) bytes of a frame; a payload is decoded within the value codec's DecodeLimits.
 * - Decoding is independent of how the byte stream is split into chunks.
 * - A decoded message's Buffers never share memory with a socket chunk.
 */

import zlib from 'node:zlib';
import { DECODE_LIMITS_DEFAULT, decodeValue, encodeValueAfter, type DecodeLimits, type ValueDecodeReason } from './value-codec.ts';

// Not a named import: on a Node.js without zlib.crc32 (before 20.15) that would fail while
// linking, before main.ts's version check could say so.
const { crc32 } = zlib;

/** "MCKV" as a big-endian u32. */
export const FRAME_MAGIC = 0x4d434b56;
/** 2: binary value-codec payload (1 was tagged JSON). */
export const FRAME_VERSION = 2;
export const FRAME_HEADER_BYTES = 13;
/**
 * Upper bound on one frame, header included, when none is given: what config.ts's
 * defaultPeerFrameBytesMax gives for the default value_bytes_max of 1 MiB (a 4 MiB batch, two
 * values and 64 KiB). The controller passes the configured `peerFrameBytesMax` instead.
 */
export const FRAME_BYTES_MAX_DEFAULT = 4 * 1024 * 1024 + 2 * 1024 * 1024 + 64 * 1024;
/** A cap for a connection whose peer has not yet said who it is: a hello fits with room. */
export const FRAME_BYTES_MAX_UNAUTHENTICATED = 1024;

/** Why a byte stream is not a valid sequence of frames. The connection must be dropped. */
export type FrameError =
  | { kind: 'bad_magic' }
  | { kind: 'bad_version'; version: number }
  | { kind: 'oversized'; frameBytes: number; frameBytesMax: number }
  | { kind: 'checksum_mismatch'; expected: number; actual: number }
  | { kind: 'bad_payload'; reason: ValueDecodeReason; detail: string };

/** What one `push` yields: the messages completed by this chunk, and an error if the stream broke. */
export interface FrameDecodeResult {
  messages: unknown[];
  error: FrameError | null;
}

/** A one-line description of a frame error, for logs. */
export function describeFrameError(error: FrameError): string {
  switch (error.kind) {
    case 'bad_magic':
      return 'bad magic (not an mckv peer frame)';
    case 'bad_version':
      return `unsupported frame version ${error.version} (expected ${FRAME_VERSION})`;
    case 'oversized':
      return `frame of ${error.frameBytes} bytes exceeds frameBytesMax ${error.frameBytesMax}`;
    case 'checksum_mismatch':
      return `checksum mismatch (header ${error.expected}, payload ${error.actual})`;
    case 'bad_payload':
      return `payload is not a valid encoded value: ${error.detail}`;
    default: {
      const unreachable: never = error;
      return unreachable;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Encoder

/**
 * Encodes one message value as a complete frame, in a new Buffer the caller may keep (it is
 * never reused). Throws a RangeError only for a value nested deeper than VALUE_DEPTH_MAX or a
 * bigint over BIGINT_BITS_MAX bits, a programmer's error (as JSON.stringify throws on a cycle).
 */
export function encodeFrame(message: unknown): Buffer {
  const frame = encodeValueAfter(FRAME_HEADER_BYTES, message);
  const payload = frame.subarray(FRAME_HEADER_BYTES);
  const payloadBytes = payload.length;
  frame.writeUInt32BE(FRAME_MAGIC, 0);
  frame.writeUInt8(FRAME_VERSION, 4);
  frame.writeUInt32BE(payloadBytes, 5);
  frame.writeUInt32BE(crc32(payload), 9);
  return frame;
}

// ---------------------------------------------------------------------------------------------
// Streaming decoder

export interface FrameDecoderOptions {
  /** Largest frame accepted, header included. Default FRAME_BYTES_MAX_DEFAULT. */
  frameBytesMax?: number;
  /** Limits on each payload, over DECODE_LIMITS_DEFAULT. */
  decodeLimits?: Partial<DecodeLimits>;
}

export interface FramePushOptions {
  /**
   * Decode at most this many messages; the bytes after them stay buffered, unread, until the
   * next push (an empty chunk will do). Lets a caller judge a hello, and raise the cap, before
   * the frames behind it are held to the cap. Default: no limit.
   */
  messagesMax?: number;
}

/**
 * Turns a byte stream into messages. Chunks are kept as a list (not concatenated on every push),
 * so a stream delivered byte by byte still decodes in linear time.
 */
export class FrameDecoder {
  private frameBytesMaxNow: number;
  private readonly decodeLimits: Readonly<DecodeLimits>;
  private chunks: Buffer[] = [];
  /** Offset of the first unread byte in chunks[0]. */
  private chunkOffset = 0;
  private bufferedBytes = 0;
  /** Payload length from a header already consumed, or null while waiting for a header. */
  private pendingPayloadBytes: number | null = null;
  private pendingChecksum = 0;
  private failure: FrameError | null = null;

  constructor(options: FrameDecoderOptions = {}) {
    this.frameBytesMaxNow = FRAME_BYTES_MAX_DEFAULT;
    this.setFrameBytesMax(options.frameBytesMax ?? FRAME_BYTES_MAX_DEFAULT);
    this.decodeLimits = options.decodeLimits === undefined ? DECODE_LIMITS_DEFAULT : { ...DECODE_LIMITS_DEFAULT, ...options.decodeLimits };
  }

  /** Largest frame accepted, header included. */
  get frameBytesMax(): number {
    return this.frameBytesMaxNow;
  }

  /**
   * Changes the cap for every frame whose header has not been read yet, and for one whose body
   * is still awaited: if that frame is now over the cap, the next push fails with `oversized`.
   * Throws a RangeError for a cap that is not an integer of at least a header (a programmer's
   * error).
   */
  setFrameBytesMax(frameBytesMax: number): void {
    if (!Number.isSafeInteger(frameBytesMax) || frameBytesMax < FRAME_HEADER_BYTES) {
      throw new RangeError(`frameBytesMax ${frameBytesMax} is not an integer >= ${FRAME_HEADER_BYTES}`);
    }
    this.frameBytesMaxNow = frameBytesMax;
  }

  /** Bytes held, waiting for the rest of a frame. */
  get pendingBytes(): number {
    return this.bufferedBytes;
  }

  /** Feeds a chunk; returns the messages it completed and, if the stream is broken, why. */
  push(chunk: Buffer, options: FramePushOptions = {}): FrameDecodeResult {
    const messages: unknown[] = [];
    if (this.failure !== null) return { messages, error: this.failure };
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.bufferedBytes += chunk.length;
    }
    if (this.pendingPayloadBytes !== null) this.checkFrameBytes(this.pendingPayloadBytes);
    const messagesMax = options.messagesMax ?? Infinity;
    while (this.failure === null && messages.length < messagesMax) {
      const step = this.pendingPayloadBytes === null ? this.readHeader() : this.readPayload();
      if (step === 'wait') break;
      if (step !== 'header') messages.push(step.message);
    }
    if (this.failure !== null) this.release();
    return { messages, error: this.failure };
  }

  /** Consumes a header if one is complete. Checks the magic as soon as its bytes arrive. */
  private readHeader(): 'wait' | 'header' {
    const magicBytesSeen = Math.min(4, this.bufferedBytes);
    for (let index = 0; index < magicBytesSeen; index++) {
      if (this.peekByte(index) !== ((FRAME_MAGIC >>> (8 * (3 - index))) & 0xff)) {
        return this.fail({ kind: 'bad_magic' });
      }
    }
    if (this.bufferedBytes < FRAME_HEADER_BYTES) return 'wait';
    const header = this.take(FRAME_HEADER_BYTES);
    const version = header.readUInt8(4);
    if (version !== FRAME_VERSION) return this.fail({ kind: 'bad_version', version });
    const payloadBytes = header.readUInt32BE(5);
    if (!this.checkFrameBytes(payloadBytes)) return 'wait';
    this.pendingPayloadBytes = payloadBytes;
    this.pendingChecksum = header.readUInt32BE(9);
    return 'header';
  }

  /** False, and failed, if a frame of this payload is over the cap. */
  private checkFrameBytes(payloadBytes: number): boolean {
    const frameBytes = FRAME_HEADER_BYTES + payloadBytes;
    if (frameBytes <= this.frameBytesMaxNow) return true;
    this.fail({ kind: 'oversized', frameBytes, frameBytesMax: this.frameBytesMaxNow });
    return false;
  }

  private readPayload(): 'wait' | { message: unknown } {
    const payloadBytes = this.pendingPayloadBytes ?? 0;
    if (this.bufferedBytes < payloadBytes) return 'wait';
    const first = this.chunks[0];
    const sharesChunk = first !== undefined && first.length - this.chunkOffset >= payloadBytes;
    const payload = this.take(payloadBytes);
    this.pendingPayloadBytes = null;
    const actual = crc32(payload);
    if (actual !== this.pendingChecksum) {
      return this.fail({ kind: 'checksum_mismatch', expected: this.pendingChecksum, actual });
    }
    const decoded = decodeValue(payload, { copyBuffers: sharesChunk, limits: this.decodeLimits });
    if (!decoded.ok) return this.fail({ kind: 'bad_payload', reason: decoded.reason, detail: decoded.detail });
    return { message: decoded.value };
  }

  private fail(error: FrameError): 'wait' {
    this.failure = error;
    return 'wait';
  }

  private release(): void {
    this.chunks = [];
    this.chunkOffset = 0;
    this.bufferedBytes = 0;
  }

  private peekByte(index: number): number {
    let position = this.chunkOffset + index;
    for (const chunk of this.chunks) {
      const byte = chunk[position];
      if (byte !== undefined) return byte;
      position -= chunk.length;
    }
    throw new Error(`peekByte(${index}) beyond ${this.bufferedBytes} buffered bytes`);
  }

  /** Removes and returns the first `byteCount` buffered bytes (the caller checked they exist). */
  private take(byteCount: number): Buffer {
    const first = this.chunks[0];
    if (first !== undefined && first.length - this.chunkOffset >= byteCount) {
      const out = first.subarray(this.chunkOffset, this.chunkOffset + byteCount);
      this.advance(byteCount);
      return out;
    }
    const out = Buffer.allocUnsafe(byteCount);
    let written = 0;
    while (written < byteCount) {
      const chunk = this.chunks[0];
      if (chunk === undefined) throw new Error(`take(${byteCount}) beyond ${this.bufferedBytes + written} buffered bytes`);
      const available = chunk.length - this.chunkOffset;
      const copied = Math.min(available, byteCount - written);
      chunk.copy(out, written, this.chunkOffset, this.chunkOffset + copied);
      written += copied;
      this.advance(copied);
    }
    return out;
  }

  private advance(byteCount: number): void {
    this.bufferedBytes -= byteCount;
    this.chunkOffset += byteCount;
    let first = this.chunks[0];
    while (first !== undefined && this.chunkOffset >= first.length) {
      this.chunkOffset -= first.length;
      this.chunks.shift();
      first = this.chunks[0];
    }
  }
}
