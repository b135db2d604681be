/**
 * The memcached binary protocol: a streaming request decoder and a response encoder.
 *
 * Intuition: every request is a 24-byte header (magic 0x80) followed by `bodyLength` bytes of
 * extras, key and value. The decoder waits for a whole header, checks it against the opcode's
 * shape, then waits for the body (or counts a refused oversized body down without keeping it).
 * Each decoded item carries the few header fields the response needs (`BinaryHeader`).
 *
 * Invariants:
 * - Items do not depend on how the bytes were split into chunks.
 * - At most one header and one body within the limits are buffered; an oversized store body is
 *   swallowed (status 3, as memcached), other impossible shapes close the connection (status 4,
 *   as memcached's handle_binary_protocol_error), a wrong magic closes it silently.
 * - Quiet opcodes answer only what memcached answers: getq/getkq/gatq nothing on a miss, the other
 *   quiet opcodes nothing on success; errors are always sent.
 * - With a login required, nothing but SASL (list mechanisms, PLAIN auth and step) and version is
 *   served until SASL succeeds; any other opcode is answered "Auth failure." and the connection
 *   closed before its body is read, as memcached -S does. flush, when turned off, is answered
 *   "Auth failure." as memcached -F does.
 * - cas as memcached 1.6 uses it: a request's header cas makes set/add/replace a cas, and makes
 *   append/prepend, incr/decr and delete conditional (`casUnique`); a response carries the item's
 *   cas after set/add/replace/cas/append/prepend, incr/decr and touch (and a hit's), else 0.
 */

import { DEFAULT_LIMITS } from './types.ts';
import type { Command, DecoderOptions, Item, ProtocolLimits, Reply } from './types.ts';
import { BINARY_SASL, BINARY_STATUS_MESSAGES, TEXT_ERRORS, keyHasForbiddenByte } from './errors.ts';
import {
  BINARY_STATUS, HEADER_BYTES, OPCODE, REQUEST_MAGIC, RESPONSE_MAGIC, casAt, readHeader, writeHeader, type BinaryStatus, type PacketHeader,
} from './binary-header.ts';
import { parsePlain, type Login } from './auth.ts';
import { refusalBinary, type Refusal } from './refusals.ts';

export { HEADER_BYTES, OPCODE, REQUEST_MAGIC, RESPONSE_MAGIC } from './binary-header.ts';

/** What the response to a request needs from its header. */
export interface BinaryHeader {
  opcode: number;
  opaque: number;
  /** A quiet opcode: no response on success (on a miss, for the get family). */
  quiet: boolean;
  /** The response carries the key (getk, getkq, gatk, gatkq). */
  withKey: boolean;
}

/** One decoded request packet. */
export type BinaryDecoded =
  | { kind: 'command'; header: BinaryHeader; command: Command }
  /** Malformed input: answer with `status` and `message`, then close if `close`. `header` is null on a bad magic. */
  | { kind: 'invalid'; header: BinaryHeader | null; status: BinaryStatus; message: string; close: boolean }
  /** A SASL request the decoder settled itself: answer with `status` and `body`. */
  | { kind: 'answered'; header: BinaryHeader; status: BinaryStatus; body: string };

/** The raw request header fields. */
/** A request's header (its `status` is the vbucket, unused). */
type RequestHeader = PacketHeader & { cas: bigint };

type DecoderState =
  | { kind: 'header' }
  | { kind: 'body'; request: RequestHeader }
  | { kind: 'swallow'; bytesLeft: number }
  | { kind: 'closed' };

/** The shape each opcode's body must have. `key`: 'required' | 'none' | 'optional'. */
interface OpcodeShape {
  extras: readonly number[];
  key: 'required' | 'none' | 'optional';
  value: boolean;
}

const SHAPES: ReadonlyMap<number, OpcodeShape> = new Map(
  [
    [[OPCODE.get, OPCODE.getq, OPCODE.getk, OPCODE.getkq, OPCODE.delete, OPCODE.deleteq], { extras: [0], key: 'required', value: false }],
    [[OPCODE.set, OPCODE.setq, OPCODE.add, OPCODE.addq, OPCODE.replace, OPCODE.replaceq], { extras: [8], key: 'required', value: true }],
    [[OPCODE.append, OPCODE.appendq, OPCODE.prepend, OPCODE.prependq], { extras: [0], key: 'required', value: true }],
    [[OPCODE.increment, OPCODE.incrementq, OPCODE.decrement, OPCODE.decrementq], { extras: [20], key: 'required', value: false }],
    [[OPCODE.touch, OPCODE.gat, OPCODE.gatq, OPCODE.gatk, OPCODE.gatkq], { extras: [4], key: 'required', value: false }],
    [[OPCODE.quit, OPCODE.quitq, OPCODE.noop, OPCODE.version], { extras: [0], key: 'none', value: false }],
    [[OPCODE.flush, OPCODE.flushq], { extras: [0, 4], key: 'none', value: false }],
    [[OPCODE.verbosity], { extras: [4], key: 'none', value: false }],
    [[OPCODE.stat], { extras: [0], key: 'optional', value: false }],
  ].flatMap(([opcodes, shape]) => (opcodes as number[]).map((opcode) => [opcode, shape as OpcodeShape] as const)),
);

const QUIET_OPCODES: ReadonlySet<number> = new Set([
  OPCODE.getq, OPCODE.getkq, OPCODE.setq, OPCODE.addq, OPCODE.replaceq, OPCODE.deleteq, OPCODE.incrementq,
  OPCODE.decrementq, OPCODE.quitq, OPCODE.flushq, OPCODE.appendq, OPCODE.prependq, OPCODE.gatq, OPCODE.gatkq,
]);
const WITH_KEY_OPCODES: ReadonlySet<number> = new Set([OPCODE.getk, OPCODE.getkq, OPCODE.gatk, OPCODE.gatkq]);
const GET_FAMILY: ReadonlySet<number> = new Set([
  OPCODE.get, OPCODE.getq, OPCODE.getk, OPCODE.getkq, OPCODE.gat, OPCODE.gatq, OPCODE.gatk, OPCODE.gatkq,
]);
const STORE_WITH_EXTRAS: ReadonlySet<number> = new Set([
  OPCODE.set, OPCODE.setq, OPCODE.add, OPCODE.addq, OPCODE.replace, OPCODE.replaceq,
]);
const SASL_OPCODES: ReadonlySet<number> = new Set([OPCODE.saslListMechs, OPCODE.saslAuth, OPCODE.saslStep]);
/** Longest SASL mechanism name (memcached's MAX_SASL_MECH_LEN). */
const SASL_MECHANISM_BYTES_MAX = 32;
/** Longest SASL auth or step data: a PLAIN message of a user and a password. */
const SASL_DATA_BYTES_MAX = 1024;
/** Expiration extras value that makes incr/decr fail on a missing key instead of creating it. */
const ARITH_NO_CREATE = 0xffffffff;

function responseHeaderOf(request: RequestHeader): BinaryHeader {
  return {
    opcode: request.opcode,
    opaque: request.opaque,
    quiet: QUIET_OPCODES.has(request.opcode),
    withKey: WITH_KEY_OPCODES.has(request.opcode),
  };
}

function invalidOf(header: BinaryHeader | null, status: BinaryStatus, close: boolean): BinaryDecoded {
  return { kind: 'invalid', header, status, message: BINARY_STATUS_MESSAGES[status] ?? '', close };
}

/**
 * Streaming decoder of binary protocol requests. Feed it chunks with `push`; it returns the items
 * completed by that chunk, in order. Pushed chunks are not kept: bodies are copied out.
 */
export class BinaryRequestDecoder {
  private readonly limits: ProtocolLimits;
  private readonly flushAllEnabled: boolean;
  private readonly login: Login | null;
  /** False until SASL succeeds, when a login is required. */
  private loggedIn: boolean;
  /** A PLAIN auth came without its message: the next step carries it. */
  private saslStarted = false;
  private state: DecoderState = { kind: 'header' };
  private parts: Buffer[] = [];
  private partsBytes = 0;

  constructor(limits: ProtocolLimits = DEFAULT_LIMITS, options: DecoderOptions = {}) {
    this.limits = limits;
    this.flushAllEnabled = options.flushAllEnabled ?? true;
    this.login = options.login ?? null;
    this.loggedIn = this.login === null;
  }

  /** Bytes held between chunks. */
  get bufferedBytes(): number {
    return this.partsBytes;
  }

  /** True once the stream could not be resynchronised; all further input is ignored. */
  get closed(): boolean {
    return this.state.kind === 'closed';
  }

  /** Decodes what `chunk` completes. */
  push(chunk: Buffer): BinaryDecoded[] {
    const out: BinaryDecoded[] = [];
    let rest = chunk;
    while (this.state.kind !== 'closed' && (rest.length > 0 || this.readyWithoutInput())) {
      rest = this.step(rest, out);
    }
    return out;
  }

  /** A body of zero bytes completes as soon as its header does. */
  private readyWithoutInput(): boolean {
    return this.state.kind === 'body' && this.state.request.bodyBytes === 0;
  }

  private step(chunk: Buffer, out: BinaryDecoded[]): Buffer {
    const state = this.state;
    switch (state.kind) {
      case 'header': {
        const { whole, rest } = this.gather(chunk, HEADER_BYTES);
        if (whole !== null) this.onHeader(whole, out);
        return rest;
      }
      case 'body': {
        const { whole, rest } = this.gather(chunk, state.request.bodyBytes);
        if (whole !== null) {
          this.state = { kind: 'header' };
          out.push(this.decodeBody(state.request, whole));
        }
        return rest;
      }
      case 'swallow': {
        const taken = Math.min(state.bytesLeft, chunk.length);
        state.bytesLeft -= taken;
        if (state.bytesLeft === 0) this.state = { kind: 'header' };
        return chunk.subarray(taken);
      }
      case 'closed':
        return chunk.subarray(chunk.length);
      default: {
        const unreachable: never = state;
        return unreachable;
      }
    }
  }

  /** Collects `bytesWanted` bytes across chunks; `whole` is null until they are all here. */
  private gather(chunk: Buffer, bytesWanted: number): { whole: Buffer | null; rest: Buffer } {
    const taken = Math.min(bytesWanted - this.partsBytes, chunk.length);
    const piece = chunk.subarray(0, taken);
    const rest = chunk.subarray(taken);
    if (this.partsBytes + taken < bytesWanted) {
      this.parts.push(Buffer.from(piece));
      this.partsBytes += taken;
      return { whole: null, rest };
    }
    const whole = Buffer.concat([...this.parts, piece], bytesWanted);
    this.parts = [];
    this.partsBytes = 0;
    return { whole, rest };
  }

  private onHeader(bytes: Buffer, out: BinaryDecoded[]): void {
    if (bytes[0] !== REQUEST_MAGIC) {
      this.state = { kind: 'closed' };
      out.push({ kind: 'invalid', header: null, status: BINARY_STATUS.invalidArguments, message: '', close: true });
      return;
    }
    const request: RequestHeader = { ...readHeader(bytes), cas: casAt(bytes, 0) };
    const header = responseHeaderOf(request);
    if (this.login !== null) {
      if (!this.loggedIn && !SASL_OPCODES.has(request.opcode) && request.opcode !== OPCODE.version) {
        this.state = { kind: 'closed' };
        out.push(invalidOf(header, BINARY_STATUS.authError, true));
        return;
      }
      if (SASL_OPCODES.has(request.opcode)) {
        this.onSaslHeader(request, header, out);
        return;
      }
    }
    const shape = SHAPES.get(request.opcode);
    if (shape === undefined) {
      // memcached swallows the body of an unknown command and carries on.
      this.state = request.bodyBytes > 0 ? { kind: 'swallow', bytesLeft: request.bodyBytes } : { kind: 'header' };
      out.push(invalidOf(header, BINARY_STATUS.unknownCommand, false));
      return;
    }
    const verdict = this.checkShape(request, shape);
    if (verdict === 'too_large') {
      this.state = { kind: 'swallow', bytesLeft: request.bodyBytes };
      out.push(invalidOf(header, BINARY_STATUS.valueTooLarge, false));
    } else if (verdict === 'bad') {
      this.state = { kind: 'closed' };
      out.push(invalidOf(header, BINARY_STATUS.invalidArguments, true));
    } else {
      this.state = { kind: 'body', request };
    }
  }

  /** SASL's shapes: list takes nothing; auth and step a mechanism name as key and a short value. */
  private onSaslHeader(request: RequestHeader, header: BinaryHeader, out: BinaryDecoded[]): void {
    const { keyBytes, extrasBytes, bodyBytes } = request;
    const valid = request.opcode === OPCODE.saslListMechs
      ? bodyBytes === 0
      : extrasBytes === 0 && keyBytes > 0 && keyBytes <= SASL_MECHANISM_BYTES_MAX && bodyBytes >= keyBytes
        && bodyBytes - keyBytes <= SASL_DATA_BYTES_MAX;
    if (!valid) {
      this.state = { kind: 'closed' };
      out.push(invalidOf(header, BINARY_STATUS.invalidArguments, true));
      return;
    }
    this.state = { kind: 'body', request };
  }

  /** memcached's answer to a SASL request with PLAIN as the one mechanism; a success logs in. */
  private saslAnswer(request: RequestHeader, header: BinaryHeader, body: Buffer): BinaryDecoded {
    const answer = (status: BinaryStatus, text: string): BinaryDecoded => ({ kind: 'answered', header, status, body: text });
    const failure = answer(BINARY_STATUS.authError, BINARY_STATUS_MESSAGES[BINARY_STATUS.authError] ?? '');
    if (request.opcode === OPCODE.saslListMechs) return answer(BINARY_STATUS.ok, BINARY_SASL.mechanisms);
    const mechanism = body.toString('latin1', 0, request.keyBytes);
    const message = body.subarray(request.keyBytes);
    const started = this.saslStarted;
    this.saslStarted = false;
    if (mechanism !== BINARY_SASL.mechanisms || (request.opcode === OPCODE.saslStep && !started)) return failure;
    if (request.opcode === OPCODE.saslAuth && message.length === 0) {
      this.saslStarted = true;
      return answer(BINARY_STATUS.authContinue, '');
    }
    const plain = parsePlain(message);
    if (plain === null || this.login === null || !this.login.verify(plain.user, plain.password)) return failure;
    this.loggedIn = true;
    return answer(BINARY_STATUS.ok, BINARY_SASL.authenticated);
  }

  private checkShape(request: RequestHeader, shape: OpcodeShape): 'ok' | 'bad' | 'too_large' {
    const { keyBytes, extrasBytes, bodyBytes } = request;
    const keyOk = shape.key === 'required' ? keyBytes > 0 : shape.key === 'none' ? keyBytes === 0 : true;
    const valueBytes = bodyBytes - keyBytes - extrasBytes;
    if (!keyOk || !shape.extras.includes(extrasBytes) || valueBytes < 0 || keyBytes > this.limits.keyBytesMax) {
      return 'bad';
    }
    if (!shape.value) return valueBytes === 0 ? 'ok' : 'bad';
    return valueBytes > this.limits.valueBytesMax ? 'too_large' : 'ok';
  }

  private decodeBody(request: RequestHeader, body: Buffer): BinaryDecoded {
    const header = responseHeaderOf(request);
    if (SASL_OPCODES.has(request.opcode)) return this.saslAnswer(request, header, body);
    const isFlush = request.opcode === OPCODE.flush || request.opcode === OPCODE.flushq;
    if (isFlush && !this.flushAllEnabled) return invalidOf(header, BINARY_STATUS.authError, false);
    const extras = body.subarray(0, request.extrasBytes);
    const key = body.toString('latin1', request.extrasBytes, request.extrasBytes + request.keyBytes);
    // A stat's key names a group ("detail on"), not an item: no rule on its bytes.
    if (request.opcode !== OPCODE.stat && keyHasForbiddenByte(key)) return invalidOf(header, BINARY_STATUS.invalidArguments, false);
    const value = body.subarray(request.extrasBytes + request.keyBytes);
    const command = commandOf({ request, extras, key, value });
    return { kind: 'command', header, command };
  }
}

interface PacketParts {
  request: RequestHeader;
  extras: Buffer;
  key: string;
  value: Buffer;
}

/** Maps a well-shaped packet to its command. */
function commandOf(packet: PacketParts): Command {
  const { request, extras, key, value } = packet;
  const opcode = request.opcode;
  if (GET_FAMILY.has(opcode)) {
    const cas = true;
    if (opcode === OPCODE.get || opcode === OPCODE.getq || opcode === OPCODE.getk || opcode === OPCODE.getkq) {
      return { kind: 'get', keys: [key], cas };
    }
    return { kind: 'gat', keys: [key], cas, exptime: extras.readInt32BE(0) };
  }
  if (STORE_WITH_EXTRAS.has(opcode)) return storeCommandOf(packet);
  switch (opcode) {
    case OPCODE.append: case OPCODE.appendq: case OPCODE.prepend: case OPCODE.prependq: {
      const verb = opcode === OPCODE.append || opcode === OPCODE.appendq ? 'append' : 'prepend';
      return { kind: 'store', verb, key, flags: 0, exptime: 0, value, casUnique: request.cas, noreply: false };
    }
    case OPCODE.delete: case OPCODE.deleteq:
      return { kind: 'delete', key, noreply: false, casUnique: request.cas };
    case OPCODE.increment: case OPCODE.incrementq: case OPCODE.decrement: case OPCODE.decrementq: {
      const verb = opcode === OPCODE.increment || opcode === OPCODE.incrementq ? 'incr' : 'decr';
      const expiration = extras.readUInt32BE(16);
      const initial = expiration === ARITH_NO_CREATE ? null : extras.readBigUInt64BE(8);
      const exptime = expiration === ARITH_NO_CREATE ? 0 : extras.readInt32BE(16);
      return {
        kind: 'arith', verb, key, delta: extras.readBigUInt64BE(0), initial, exptime, noreply: false, casUnique: request.cas,
      };
    }
    case OPCODE.touch:
      return { kind: 'touch', key, exptime: extras.readInt32BE(0), noreply: false };
    case OPCODE.flush: case OPCODE.flushq:
      return { kind: 'flush_all', delaySeconds: extras.length === 4 ? extras.readInt32BE(0) : 0, noreply: false };
    case OPCODE.verbosity:
      return { kind: 'verbosity', level: extras.readUInt32BE(0), noreply: false };
    case OPCODE.stat:
      return { kind: 'stats', group: key };
    case OPCODE.version:
      return { kind: 'version' };
    case OPCODE.noop:
      return { kind: 'noop' };
    default:
      // quit, quitq: the only shaped opcodes left.
      return { kind: 'quit' };
  }
}

/** set/add/replace; a non-zero cas in the header makes any of them a cas (as memcached does). */
function storeCommandOf({ request, extras, key, value }: PacketParts): Command {
  const opcode = request.opcode;
  const baseVerb = opcode === OPCODE.set || opcode === OPCODE.setq ? 'set'
    : opcode === OPCODE.add || opcode === OPCODE.addq ? 'add' : 'replace';
  const verb = request.cas !== 0n ? 'cas' : baseVerb;
  return {
    kind: 'store', verb, key, flags: extras.readUInt32BE(0), exptime: extras.readInt32BE(4), value,
    casUnique: request.cas, noreply: false,
  };
}

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
