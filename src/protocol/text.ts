/**
 * The memcached text protocol for clients: the streaming request decoder, and the module the server
 * imports the codec from (what a command line means: ./text-commands.ts; replies: ./text-reply.ts).
 * The decoder is a small state machine (command line, data block of known length, refused data
 * block, closed) that keeps only the bytes it still needs; malformed input becomes an `invalid` item
 * carrying the exact reply memcached 1.6.18 would give. `noreply`, logins, and where it differs from
 * memcached on purpose: docs/design.md, "The text protocol decoder".
 *
 * Invariants:
 * - Decoding a byte sequence yields the same items however it is split into chunks.
 * - Buffered bytes stay bounded: a command line is refused once it passes its limit (with or without
 *   a newline), a data block is buffered only when its announced length is within valueBytesMax,
 *   and a refused data block is counted down, never stored.
 * - With a login required, nothing but memcached -Y's login `set` is served until one succeeds.
 */

import { DEFAULT_LIMITS } from './types.ts';
import type { DecoderOptions, ProtocolLimits, Reply } from './types.ts';
import { TEXT_ERRORS } from './errors.ts';
import type { Login } from './auth.ts';
import { invalid, isBadKey, parseTokens, parseUint32, silenceable, type StoreCommand, type TextDecoded } from './text-commands.ts';

export type { TextDecoded } from './text-commands.ts';
export { parseInt32, parseUint32, parseUint64 } from './text-commands.ts';
export { FLAT_REPLY_BYTES_MAX, encodeTextInvalid, encodeTextReply, encodeTextReplyParts } from './text-reply.ts';

type DecoderState =
  | { kind: 'line' }
  | { kind: 'data'; command: StoreCommand; bytesNeeded: number }
  /** The data block of a login `set`: `user password` and CRLF. */
  | { kind: 'login_data'; bytesNeeded: number }
  | { kind: 'swallow'; bytesLeft: number }
  | { kind: 'closed' };

const NEWLINE = 0x0a;
const CARRIAGE_RETURN = 0x0d;
const SPACE = 0x20;
const GET_G = 0x67;
const GET_E = 0x65;
const GET_T = 0x74;
const GET_LINE_PREFIXES = ['get ', 'gets ', 'gat ', 'gats '];
/** An empty remainder of a chunk, shared (no view allocated per chunk). */
const NOTHING = Buffer.alloc(0);
/** Room for `gats <exptime> ` in front of the keys of a get line. */
const GET_LINE_HEADROOM_BYTES = 32;

/**
 * Streaming decoder of text protocol requests. Feed it chunks with `push`; it returns the items
 * completed by that chunk, in order. Pushed chunks are not kept: values are copied out.
 */
export class TextRequestDecoder {
  private readonly limits: ProtocolLimits;
  private readonly getLineBytesMax: number;
  private readonly flushAllEnabled: boolean;
  private readonly login: Login | null;
  /** False until a login succeeds, when a login is required. */
  private loggedIn: boolean;
  private state: DecoderState = { kind: 'line' };
  /** Bytes of the current line (or data block) received so far, in arrival order. */
  private parts: Buffer[] = [];
  private partsBytes = 0;
  /** The first bytes of the kept part (enough to tell a get line), so long lines are never re-joined. */
  private partsHead = '';

  constructor(limits: ProtocolLimits = DEFAULT_LIMITS, options: DecoderOptions = {}) {
    this.limits = limits;
    this.flushAllEnabled = options.flushAllEnabled ?? true;
    this.login = options.login ?? null;
    this.loggedIn = this.login === null;
    // memcached lets multigets exceed its line limit; bound them by what a legal get can hold.
    this.getLineBytesMax = Math.max(
      limits.lineBytesMax,
      GET_LINE_HEADROOM_BYTES + limits.keysPerGetMax * (limits.keyBytesMax + 1),
    );
  }

  /** Bytes held between chunks (a partial line or data block). */
  get bufferedBytes(): number {
    return this.partsBytes;
  }

  /** True once the decoder met input it cannot resynchronise after; it then ignores all input. */
  get closed(): boolean {
    return this.state.kind === 'closed';
  }

  /** Decodes what `chunk` completes. */
  push(chunk: Buffer): TextDecoded[] {
    const out: TextDecoded[] = [];
    let rest = chunk;
    while (rest.length > 0 && this.state.kind !== 'closed') {
      rest = this.step(rest, out);
    }
    return out;
  }

  /** Consumes a prefix of `chunk` in the current state; returns what is left. */
  private step(chunk: Buffer, out: TextDecoded[]): Buffer {
    const state = this.state;
    switch (state.kind) {
      case 'line':
        return this.stepLine(chunk, out);
      case 'data':
        return this.stepData(state, chunk, out);
      case 'login_data':
        return this.stepLoginData(state, chunk, out);
      case 'swallow': {
        const taken = Math.min(state.bytesLeft, chunk.length);
        state.bytesLeft -= taken;
        if (state.bytesLeft === 0) this.state = { kind: 'line' };
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

  private stepLine(chunk: Buffer, out: TextDecoded[]): Buffer {
    const newlineAt = chunk.indexOf(NEWLINE);
    const lineBytes = this.partsBytes + (newlineAt === -1 ? chunk.length : newlineAt);
    if (lineBytes > this.limits.lineBytesMax && lineBytes > this.lineLimitBytes(chunk)) {
      this.take(NOTHING);
      this.state = { kind: 'closed' };
      out.push(invalid({ kind: 'client_error', message: TEXT_ERRORS.lineTooLong }, true));
      return chunk.subarray(chunk.length);
    }
    if (newlineAt === -1) {
      this.keep(chunk);
      return chunk.subarray(chunk.length);
    }
    // A line is decoded at once and not kept: a view of the chunk serves when nothing was kept.
    const line = this.parts.length === 0 ? chunk.subarray(0, newlineAt) : this.take(chunk.subarray(0, newlineAt));
    if (this.loggedIn) this.decodeLine(line, out);
    else this.decodeLoginLine(line, out);
    // The commonest end of a chunk: nothing after its last line (no view to allocate).
    return newlineAt + 1 === chunk.length ? NOTHING : chunk.subarray(newlineAt + 1);
  }

  private stepData(state: Extract<DecoderState, { kind: 'data' }>, chunk: Buffer, out: TextDecoded[]): Buffer {
    const taken = Math.min(state.bytesNeeded - this.partsBytes, chunk.length);
    const piece = chunk.subarray(0, taken);
    if (this.partsBytes + taken < state.bytesNeeded) {
      this.keep(piece);
      return chunk.subarray(taken);
    }
    const block = this.take(piece);
    this.state = { kind: 'line' };
    const valueBytes = block.length - 2;
    if (block[valueBytes] !== CARRIAGE_RETURN || block[valueBytes + 1] !== NEWLINE) {
      out.push(silenceable(state.command.noreply, TEXT_ERRORS.badDataChunk));
    } else {
      out.push({ kind: 'command', command: { ...state.command, value: block.subarray(0, valueBytes) } });
    }
    return chunk.subarray(taken);
  }

  /**
   * A line before login: only `set <key> <flags> <exptime> <bytes> ...` is read (memcached -Y
   * checks nothing but the verb and the length); anything else is refused, noreply or not.
   */
  private decodeLoginLine(lineWithCr: Buffer, out: TextDecoded[]): void {
    const tokens = lineTokens(lineWithCr, lineEnd(lineWithCr));
    const dataBytes = tokens.length >= 5 && tokens[0] === 'set' ? parseUint32(tokens[4]) : null;
    if (dataBytes === null) {
      out.push(answered({ kind: 'client_error', message: TEXT_ERRORS.unauthenticated }));
    } else if (dataBytes > this.limits.lineBytesMax) {
      this.state = { kind: 'swallow', bytesLeft: dataBytes + 2 };
      out.push(answered({ kind: 'client_error', message: TEXT_ERRORS.authenticationFailure }));
    } else {
      this.state = { kind: 'login_data', bytesNeeded: dataBytes + 2 };
    }
  }

  private stepLoginData(state: Extract<DecoderState, { kind: 'login_data' }>, chunk: Buffer, out: TextDecoded[]): Buffer {
    const taken = Math.min(state.bytesNeeded - this.partsBytes, chunk.length);
    const piece = chunk.subarray(0, taken);
    if (this.partsBytes + taken < state.bytesNeeded) {
      this.keep(piece);
      return chunk.subarray(taken);
    }
    const block = this.take(piece);
    this.state = { kind: 'line' };
    out.push(answered(this.loginReply(block)));
    return chunk.subarray(taken);
  }

  /** memcached's reply to a login's data block; a success logs the connection in. */
  private loginReply(block: Buffer): Reply {
    const dataBytes = block.length - 2;
    if (block[dataBytes] !== CARRIAGE_RETURN || block[dataBytes + 1] !== NEWLINE) {
      return { kind: 'client_error', message: TEXT_ERRORS.badCommandLineTermination };
    }
    const tokens = block.toString('latin1', 0, dataBytes).split(' ').filter((token) => token.length > 0);
    const user = tokens[0];
    const password = tokens[1];
    if (user === undefined || password === undefined) return { kind: 'client_error', message: TEXT_ERRORS.badAuthenticationTokenFormat };
    if (this.login === null || !this.login.verify(user, password)) {
      return { kind: 'client_error', message: TEXT_ERRORS.authenticationFailure };
    }
    this.loggedIn = true;
    return { kind: 'stored' };
  }

  /** The longest line allowed, judged on the line's first bytes (a get line may be longer). */
  private lineLimitBytes(chunk: Buffer): number {
    if (this.limits.lineBytesMax >= this.getLineBytesMax) return this.limits.lineBytesMax;
    const head = this.partsHead + chunk.toString('latin1', 0, Math.max(0, 5 - this.partsHead.length));
    const isGet = GET_LINE_PREFIXES.some((prefix) => head.startsWith(prefix));
    return isGet ? this.getLineBytesMax : this.limits.lineBytesMax;
  }

  private keep(piece: Buffer): void {
    if (piece.length === 0) return;
    // Copy: the caller may reuse its chunk, and a small piece must not pin a large one.
    this.parts.push(Buffer.from(piece));
    this.partsBytes += piece.length;
    if (this.partsHead.length < 5) this.partsHead += piece.toString('latin1', 0, 5 - this.partsHead.length);
  }

  /** Returns the kept bytes followed by `last`, as one fresh Buffer, and forgets them. */
  private take(last: Buffer): Buffer {
    const whole = Buffer.concat([...this.parts, last], this.partsBytes + last.length);
    this.parts = [];
    this.partsBytes = 0;
    this.partsHead = '';
    return whole;
  }

  /** Decodes one command line (without its newline) into `out`. Storage commands switch to the data state. */
  private decodeLine(lineWithCr: Buffer, out: TextDecoded[]): void {
    const end = lineEnd(lineWithCr);
    const key = singleGetKey(lineWithCr, end);
    if (key !== null && !isBadKey(key, this.limits)) {
      out.push({ kind: 'command', command: { kind: 'get', keys: [key], cas: false } });
      return;
    }
    const tokens = lineTokens(lineWithCr, end);
    const result = parseTokens(tokens, this.limits, this.flushAllEnabled);
    switch (result.kind) {
      case 'decoded':
        out.push(result.item);
        return;
      case 'data':
        this.state = { kind: 'data', command: result.command, bytesNeeded: result.valueBytes + 2 };
        return;
      case 'too_large':
        this.state = { kind: 'swallow', bytesLeft: result.valueBytes + 2 };
        out.push(invalid(result.noreply ? { kind: 'none' } : { kind: 'refused', reason: 'too_large' }));
        return;
      default: {
        const unreachable: never = result;
        return unreachable;
      }
    }
  }
}

/** Where a command line's text ends: before its carriage return, if it has one. */
function lineEnd(lineWithCr: Buffer): number {
  return lineWithCr.length > 0 && lineWithCr[lineWithCr.length - 1] === CARRIAGE_RETURN ? lineWithCr.length - 1 : lineWithCr.length;
}

/** A command line's tokens, split on spaces as memcached splits them (runs of spaces are one). */
function lineTokens(lineWithCr: Buffer, end: number): string[] {
  return lineWithCr.toString('latin1', 0, end).split(' ').filter((token) => token.length > 0);
}

/**
 * The key of the commonest line, `get KEY` (one space, one key, nothing after), read without
 * splitting the line into tokens; null for any other line, which then takes the general path.
 */
function singleGetKey(line: Buffer, end: number): string | null {
  if (end < 5 || line[0] !== GET_G || line[1] !== GET_E || line[2] !== GET_T || line[3] !== SPACE) return null;
  const space = line.indexOf(SPACE, 4);
  if (space !== -1 && space < end) return null;
  return line.toString('latin1', 4, end);
}

function answered(reply: Reply): TextDecoded {
  return { kind: 'answered', reply };
}
