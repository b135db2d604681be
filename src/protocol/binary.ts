/**
 * The memcached binary protocol for clients: the streaming request decoder, and the module the
 * server imports the codec from (opcode meanings: ./binary-commands.ts; responses:
 * ./binary-response.ts; the packet header: ./binary-header.ts).
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
 * - With a login required, nothing but SASL (list mechanisms, PLAIN auth and step) and version is
 *   served until SASL succeeds; any other opcode is answered "Auth failure." and the connection
 *   closed before its body is read, as memcached -S does. flush, when turned off, is answered
 *   "Auth failure." as memcached -F does.
 */

import { DEFAULT_LIMITS } from './types.ts';
import type { Command, DecoderOptions, ProtocolLimits } from './types.ts';
import { BINARY_SASL, BINARY_STATUS_MESSAGES, keyHasForbiddenByte } from './errors.ts';
import { BINARY_STATUS, HEADER_BYTES, OPCODE, REQUEST_MAGIC, casAt, readHeader, type BinaryStatus } from './binary-header.ts';
import {
  SHAPES, commandOf, responseHeaderOf, type BinaryHeader, type OpcodeShape, type RequestHeader,
} from './binary-commands.ts';
import { parsePlain, type Login } from './auth.ts';

export { HEADER_BYTES, OPCODE, REQUEST_MAGIC, RESPONSE_MAGIC } from './binary-header.ts';
export type { BinaryHeader } from './binary-commands.ts';
export { encodeBinaryError, encodeBinaryPacket, encodeBinaryReply, encodeBinaryReplyParts } from './binary-response.ts';

/** One decoded request packet. */
export type BinaryDecoded =
  | { kind: 'command'; header: BinaryHeader; command: Command }
  /** Malformed input: answer with `status` and `message`, then close if `close`. `header` is null on a bad magic. */
  | { kind: 'invalid'; header: BinaryHeader | null; status: BinaryStatus; message: string; close: boolean }
  /** A SASL request the decoder settled itself: answer with `status` and `body`. */
  | { kind: 'answered'; header: BinaryHeader; status: BinaryStatus; body: string };

type DecoderState =
  | { kind: 'header' }
  | { kind: 'body'; request: RequestHeader }
  | { kind: 'swallow'; bytesLeft: number }
  | { kind: 'closed' };

const SASL_OPCODES: ReadonlySet<number> = new Set([OPCODE.saslListMechs, OPCODE.saslAuth, OPCODE.saslStep]);
/** Longest SASL mechanism name (memcached's MAX_SASL_MECH_LEN). */
const SASL_MECHANISM_BYTES_MAX = 32;
/** Longest SASL auth or step data: a PLAIN message of a user and a password. */
const SASL_DATA_BYTES_MAX = 1024;

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
