/**
 * What the memcached clients of the load generator put on the wire and read back: the keys and
 * the value (the same for every target), every key's get and set pre-encoded once per run in the
 * text or binary protocol, and a streaming parser for the replies to them.
 *
 * Intuition: encoding up front lets the generator spend its CPU on sockets, not on formatting.
 * The parsers take a buffer and an offset and return one reply, `null` when it is incomplete, or a
 * `fatal` value when the stream cannot be parsed; they never throw. A reply line is bounded.
 */

import type { LoadOptions, ReplyOutcome } from './load-types.ts';
import { BINARY_STATUS, HEADER_BYTES, OPCODE, REQUEST_MAGIC, RESPONSE_MAGIC, readHeader, writeHeader } from '../src/protocol/binary-header.ts';

const REPLY_LINE_BYTES_MAX = 4096;

// ---------------------------------------------------------------------------------------------
// Requests

/** Every key's get and set, pre-encoded; index i is key number i. */
export interface EncodedRequests {
  gets: Buffer[];
  sets: Buffer[];
}

/** The name of key number `index`: the same keys for every target. */
export function keyName(prefix: string, index: number): string {
  return `${prefix}${index}`;
}

function encodeText(key: string, value: Buffer): { get: Buffer; set: Buffer } {
  const get = Buffer.from(`get ${key}\r\n`, 'latin1');
  const set = Buffer.concat([Buffer.from(`set ${key} 0 0 ${value.length}\r\n`, 'latin1'), value, Buffer.from('\r\n')]);
  return { get, set };
}

function binaryHeader(options: { opcode: number; keyBytes: number; extrasBytes: number; bodyBytes: number }): Buffer {
  const header = Buffer.alloc(HEADER_BYTES);
  writeHeader(header, { magic: REQUEST_MAGIC, ...options });
  return header;
}

function encodeBinary(key: string, value: Buffer): { get: Buffer; set: Buffer } {
  const keyBytes = Buffer.from(key, 'latin1');
  const get = Buffer.concat([
    binaryHeader({ opcode: OPCODE.get, keyBytes: keyBytes.length, extrasBytes: 0, bodyBytes: keyBytes.length }),
    keyBytes,
  ]);
  const extras = Buffer.alloc(8); // flags 0, expiry 0
  const setHeader = binaryHeader({
    opcode: OPCODE.set, keyBytes: keyBytes.length, extrasBytes: 8, bodyBytes: 8 + keyBytes.length + value.length,
  });
  return { get, set: Buffer.concat([setHeader, extras, keyBytes, value]) };
}

/** The prefix of every key's name unless a run names another. */
export const KEY_PREFIX_DEFAULT = 'bench:';

/** The value every set writes: `valueBytes` bytes of 'x', the same for every target. */
export function benchValue(valueBytes: number): Buffer {
  return Buffer.alloc(valueBytes, 'x');
}

/** Every key's get and set in the run's protocol, with its key prefix and value size. */
export function encodeRequests(options: LoadOptions): EncodedRequests {
  const value = benchValue(options.valueBytes);
  const prefix = options.keyPrefix ?? KEY_PREFIX_DEFAULT;
  const encoded: EncodedRequests = { gets: [], sets: [] };
  for (let index = 0; index < options.keyCount; index += 1) {
    const pair = options.protocol === 'text' ? encodeText(keyName(prefix, index), value) : encodeBinary(keyName(prefix, index), value);
    encoded.gets.push(pair.get);
    encoded.sets.push(pair.set);
  }
  return encoded;
}

// ---------------------------------------------------------------------------------------------
// Reply parsing

/** One parsed reply, or why the stream cannot be parsed (`fatal`), or `null` if incomplete. */
export type ParsedReply =
  | { kind: 'reply'; outcome: ReplyOutcome; valueBytes: number; message: string; next: number }
  | { kind: 'fatal'; message: string };

const CRLF = Buffer.from('\r\n');

function readLine(buffer: Buffer, offset: number): { line: string; next: number } | null | 'too long' {
  const end = buffer.indexOf(CRLF, offset);
  if (end === -1) return buffer.length - offset > REPLY_LINE_BYTES_MAX ? 'too long' : null;
  return { line: buffer.toString('latin1', offset, end), next: end + 2 };
}

/** Parses one text-protocol reply to a single-key get or a set starting at `offset`. */
export function parseTextReply(buffer: Buffer, offset: number): ParsedReply | null {
  const first = readLine(buffer, offset);
  if (first === null) return null;
  if (first === 'too long') return { kind: 'fatal', message: 'reply line too long' };
  const { line, next } = first;
  if (line === 'END') return { kind: 'reply', outcome: 'miss', valueBytes: 0, message: '', next };
  if (line === 'STORED') return { kind: 'reply', outcome: 'stored', valueBytes: 0, message: '', next };
  if (!line.startsWith('VALUE ')) return { kind: 'reply', outcome: 'error', valueBytes: 0, message: line, next };
  const bytes = Number(line.split(' ')[3]);
  if (!Number.isInteger(bytes) || bytes < 0) return { kind: 'fatal', message: `bad VALUE line: ${line.slice(0, 80)}` };
  const dataEnd = next + bytes;
  if (buffer.length < dataEnd + 2) return null;
  if (buffer[dataEnd] !== 0x0d || buffer[dataEnd + 1] !== 0x0a) return { kind: 'fatal', message: 'value block not ended by CRLF' };
  const last = readLine(buffer, dataEnd + 2);
  if (last === null) return null;
  if (last === 'too long' || last.line !== 'END') return { kind: 'fatal', message: 'VALUE not followed by END' };
  return { kind: 'reply', outcome: 'hit', valueBytes: bytes, message: '', next: last.next };
}

/** Parses one binary-protocol response to GET (0x00) or SET (0x01) starting at `offset`. */
export function parseBinaryReply(buffer: Buffer, offset: number): ParsedReply | null {
  if (buffer.length - offset < HEADER_BYTES) return null;
  const magic = buffer.readUInt8(offset);
  if (magic !== RESPONSE_MAGIC) return { kind: 'fatal', message: `bad response magic 0x${magic.toString(16)}` };
  const { opcode, keyBytes, extrasBytes, status, bodyBytes } = readHeader(buffer, offset);
  const next = offset + HEADER_BYTES + bodyBytes;
  if (buffer.length < next) return null;
  const valueBytes = bodyBytes - keyBytes - extrasBytes;
  if (status === BINARY_STATUS.ok && opcode === OPCODE.get) return { kind: 'reply', outcome: 'hit', valueBytes, message: '', next };
  if (status === BINARY_STATUS.ok && opcode === OPCODE.set) return { kind: 'reply', outcome: 'stored', valueBytes: 0, message: '', next };
  if (status === BINARY_STATUS.keyNotFound && opcode === OPCODE.get) return { kind: 'reply', outcome: 'miss', valueBytes: 0, message: '', next };
  const text = buffer.toString('latin1', offset + HEADER_BYTES + extrasBytes + keyBytes, Math.min(next, offset + 200));
  return { kind: 'reply', outcome: 'error', valueBytes: 0, message: `status 0x${status.toString(16)} opcode 0x${opcode.toString(16)} ${text}`, next };
}
