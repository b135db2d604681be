/**
 * The memcached binary protocol's responses: pure encoders from a request's `BinaryHeader`, its
 * `Command` and the `Reply` to Buffers. The decoder that produces the header is ./binary.ts.
 *
 * Invariants:
 * - Quiet opcodes answer only what memcached answers: getq/getkq/gatq nothing on a miss, the other
 *   quiet opcodes nothing on success; errors are always sent.
 * - A response carries the item's cas after set/add/replace/cas/append/prepend, incr/decr and touch
 *   (and a hit's), else 0.
 * - A hit's large value is never copied: `encodeBinaryReplyParts` hands the item's Buffer on.
 */

import type { Command, Item, Reply } from './types.ts';
import { BINARY_STATUS_MESSAGES, TEXT_ERRORS } from './errors.ts';
import { BINARY_STATUS, HEADER_BYTES, OPCODE, RESPONSE_MAGIC, writeHeader } from './binary-header.ts';
import { GET_FAMILY, type BinaryHeader } from './binary-commands.ts';
import { refusalBinary, type Refusal } from './refusals.ts';

interface ResponseParts {
  status: number;
  extras?: Buffer;
  key?: string;
  value?: Buffer;
  cas?: bigint;
}

/** A response packet's header, extras and key: everything before a value of `valueBytes`. */
function encodePacketHead(header: BinaryHeader, parts: ResponseParts, valueBytes: number): Buffer {
  const extras = parts.extras ?? Buffer.alloc(0);
  const key = Buffer.from(parts.key ?? '', 'latin1');
  const head = Buffer.allocUnsafe(HEADER_BYTES);
  writeHeader(head, {
    magic: RESPONSE_MAGIC, opcode: header.opcode, keyBytes: key.length, extrasBytes: extras.length, status: parts.status,
    bodyBytes: extras.length + key.length + valueBytes, opaque: header.opaque, cas: parts.cas ?? 0n,
  });
  return Buffer.concat([head, extras, key]);
}

/** One response packet. */
export function encodeBinaryPacket(header: BinaryHeader, parts: ResponseParts): Buffer {
  const value = parts.value ?? Buffer.alloc(0);
  return Buffer.concat([encodePacketHead(header, parts, value.length), value]);
}

/** An error response: the status and memcached's message as the body (the key too for getk). */
export function encodeBinaryError(header: BinaryHeader, status: number, message?: string): Buffer {
  const text = message ?? BINARY_STATUS_MESSAGES[status] ?? '';
  return encodeBinaryPacket(header, { status, value: Buffer.from(text, 'latin1') });
}

function itemParts(header: BinaryHeader, item: Item): ResponseParts {
  const flags = Buffer.alloc(4);
  flags.writeUInt32BE(item.flags >>> 0, 0);
  const key = header.withKey ? item.key : undefined;
  return { status: BINARY_STATUS.ok, extras: flags, key, value: item.value, cas: item.cas };
}

function encodeItem(header: BinaryHeader, item: Item): Buffer {
  return encodeBinaryPacket(header, itemParts(header, item));
}

function encodeMiss(header: BinaryHeader, command: Command): Buffer {
  if (header.quiet && GET_FAMILY.has(header.opcode)) return Buffer.alloc(0);
  if (header.withKey && (command.kind === 'get' || command.kind === 'gat')) {
    return encodeBinaryPacket(header, { status: BINARY_STATUS.keyNotFound, key: command.keys[0] });
  }
  return encodeBinaryError(header, BINARY_STATUS.keyNotFound);
}

/** A success that a quiet opcode leaves unanswered. */
function encodeSuccess(header: BinaryHeader, parts: ResponseParts = { status: BINARY_STATUS.ok }): Buffer {
  if (header.quiet) return Buffer.alloc(0);
  return encodeBinaryPacket(header, parts);
}

/** NOT_STORED means "exists" for add and "not found" for replace in the binary protocol. */
function notStoredStatus(header: BinaryHeader): number {
  const opcode = header.opcode;
  if (opcode === OPCODE.add || opcode === OPCODE.addq) return BINARY_STATUS.keyExists;
  if (opcode === OPCODE.replace || opcode === OPCODE.replaceq) return BINARY_STATUS.keyNotFound;
  return BINARY_STATUS.notStored;
}

function encodeClientError(header: BinaryHeader, message: string): Buffer {
  if (message === TEXT_ERRORS.nonNumeric) return encodeBinaryError(header, BINARY_STATUS.nonNumeric);
  return encodeBinaryError(header, BINARY_STATUS.invalidArguments, message);
}

/** A refusal as a binary status and body, from the one table (refusals.ts). */
function encodeRefusal(header: BinaryHeader, refusal: Refusal): Buffer {
  const { status, body } = refusalBinary(refusal);
  return encodeBinaryError(header, status, body);
}

function encodeValues(header: BinaryHeader, command: Command, items: Item[]): Buffer {
  if (items.length === 0) return encodeMiss(header, command);
  return Buffer.concat(items.map((item) => encodeItem(header, item)));
}

function encodeStats(header: BinaryHeader, stats: Array<[string, string]>): Buffer {
  const packets = stats.map(([name, value]) =>
    encodeBinaryPacket(header, { status: BINARY_STATUS.ok, key: name, value: Buffer.from(value, 'latin1') }));
  packets.push(encodeBinaryPacket(header, { status: BINARY_STATUS.ok }));
  return Buffer.concat(packets);
}

function encodeNumber(header: BinaryHeader, value: bigint, cas: bigint | undefined): Buffer {
  const body = Buffer.alloc(8);
  body.writeBigUInt64BE(BigInt.asUintN(64, value), 0);
  return encodeSuccess(header, { status: BINARY_STATUS.ok, value: body, cas });
}

/** memcached answers a touch with the item's flags as extras (and no value). */
function encodeTouched(header: BinaryHeader, cas: bigint | undefined, flags: number | undefined): Buffer {
  const extras = Buffer.alloc(4);
  extras.writeUInt32BE((flags ?? 0) >>> 0, 0);
  return encodeSuccess(header, { status: BINARY_STATUS.ok, extras, cas });
}

/**
 * Encodes `reply` to the request described by `header` and `command`: memcached's status codes,
 * flags extras and cas for a hit, the new cas after a store, incr/decr or touch, flags extras for
 * a touch, the key for getk, an 8-byte value for incr/decr, one packet per stat plus an empty one,
 * and the quiet rules. `none` is empty.
 */
export function encodeBinaryReply(header: BinaryHeader, command: Command, reply: Reply): Buffer {
  switch (reply.kind) {
    case 'stored':
      return encodeSuccess(header, { status: BINARY_STATUS.ok, cas: reply.cas });
    case 'touched':
      return encodeTouched(header, reply.cas, reply.flags);
    case 'deleted': case 'ok':
      return encodeSuccess(header);
    case 'not_stored': return encodeBinaryError(header, notStoredStatus(header));
    case 'exists': return encodeBinaryError(header, BINARY_STATUS.keyExists);
    case 'not_found': return encodeMiss(header, command);
    case 'values': return encodeValues(header, command, reply.items);
    case 'number': return encodeNumber(header, reply.value, reply.cas);
    case 'version': return encodeSuccess(header, { status: BINARY_STATUS.ok, value: Buffer.from(reply.version, 'latin1') });
    case 'stats': return encodeStats(header, reply.stats);
    case 'reset': return encodeStats(header, []);
    case 'text': return encodeSuccess(header, { status: BINARY_STATUS.ok, value: Buffer.from(reply.lines.join('\n'), 'latin1') });
    // memcached answers a stats group it does not know with "Not found".
    case 'error': return encodeBinaryError(header, command.kind === 'stats' ? BINARY_STATUS.keyNotFound : BINARY_STATUS.unknownCommand);
    case 'client_error': return encodeClientError(header, reply.message);
    case 'refused': return encodeRefusal(header, reply);
    case 'none': return Buffer.alloc(0);
    default: {
      const unreachable: never = reply;
      return unreachable;
    }
  }
}

/** Values up to this many bytes go out in one Buffer with their packet's head; larger ones apart. */
const FLAT_VALUE_BYTES_MAX = 64 * 1024;

/**
 * `encodeBinaryReply` as parts to write in order: a hit's large value is its own part, the
 * item's Buffer itself (never copied), so a run of getq/getkq replies goes out value by value.
 */
export function encodeBinaryReplyParts(header: BinaryHeader, command: Command, reply: Reply): Buffer[] {
  if (reply.kind === 'values' && reply.items.some((item) => item.value.length > FLAT_VALUE_BYTES_MAX)) {
    return reply.items.flatMap((item) => {
      const parts = itemParts(header, item);
      return [encodePacketHead(header, parts, item.value.length), item.value];
    });
  }
  const bytes = encodeBinaryReply(header, command, reply);
  return bytes.length === 0 ? [] : [bytes];
}
