/**
 * The memcached text protocol: a streaming request decoder and a reply encoder. The decoder is a
 * small state machine (command line, data block of known length, refused data block, closed) that
 * keeps only the bytes it still needs; malformed input becomes an `invalid` item carrying the exact
 * reply memcached 1.6.18 would give. `noreply`, logins, and where it differs from memcached on
 * purpose: docs/design.md, "The text protocol decoder".
 *
 * Invariants:
 * - Decoding a byte sequence yields the same items however it is split into chunks.
 * - Buffered bytes stay bounded: a command line is refused once it passes its limit (with or without
 *   a newline), a data block is buffered only when its announced length is within valueBytesMax,
 *   and a refused data block is counted down, never stored.
 * - With a login required, nothing but memcached -Y's login `set` is served until one succeeds.
 */

import { DEFAULT_LIMITS } from './types.ts';
import type { ArithVerb, Command, DecoderOptions, Item, ProtocolLimits, Reply, StoreVerb } from './types.ts';
import { TEXT_ERRORS, keyHasForbiddenByte } from './errors.ts';
import type { Login } from './auth.ts';
import { refusalText } from './refusals.ts';

/** One decoded request: a command to execute, or malformed input with the reply it gets. */
export type TextDecoded =
  | { kind: 'command'; command: Command }
  /** `close`: the connection cannot be resynchronised; write the reply, then close. */
  | { kind: 'invalid'; reply: Reply; close: boolean }
  /** A login the decoder settled itself (memcached -Y): its reply. */
  | { kind: 'answered'; reply: Reply };

type StoreCommand = Extract<Command, { kind: 'store' }>;

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
const INT32_MIN = -2147483648;
const INT32_MAX = 2147483647;
const UINT32_MAX = 4294967295;
const UINT64_MAX = 18446744073709551615n;
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
      this.take(Buffer.alloc(0));
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
    const end = lineWithCr.length > 0 && lineWithCr[lineWithCr.length - 1] === CARRIAGE_RETURN ? lineWithCr.length - 1 : lineWithCr.length;
    const tokens = lineWithCr.toString('latin1', 0, end).split(' ').filter((token) => token.length > 0);
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
    const end = lineWithCr.length > 0 && lineWithCr[lineWithCr.length - 1] === CARRIAGE_RETURN
      ? lineWithCr.length - 1
      : lineWithCr.length;
    const key = singleGetKey(lineWithCr, end);
    if (key !== null && !isBadKey(key, this.limits)) {
      out.push({ kind: 'command', command: { kind: 'get', keys: [key], cas: false } });
      return;
    }
    const tokens = lineWithCr.toString('latin1', 0, end).split(' ').filter((token) => token.length > 0);
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

/** What one command line asks for. */
type LineResult =
  | { kind: 'decoded'; item: TextDecoded }
  /** A storage command whose data block follows. */
  | { kind: 'data'; command: StoreCommand; valueBytes: number }
  /** A storage command whose data block is over the limit: refuse it and swallow the block. */
  | { kind: 'too_large'; valueBytes: number; noreply: boolean };

function decoded(command: Command): LineResult {
  return { kind: 'decoded', item: { kind: 'command', command } };
}

function refused(item: TextDecoded): LineResult {
  return { kind: 'decoded', item };
}

function invalid(reply: Reply, close = false): TextDecoded {
  return { kind: 'invalid', reply, close };
}

function answered(reply: Reply): TextDecoded {
  return { kind: 'answered', reply };
}

const UNKNOWN: TextDecoded = invalid({ kind: 'error' });

/** An error reply that a `noreply` on its line silences, as memcached does. */
function silenceable(noreply: boolean, message: string): TextDecoded {
  return invalid(noreply ? { kind: 'none' } : { kind: 'client_error', message });
}

/** memcached's set_noreply_maybe: the last token is exactly `noreply`. */
function endsWithNoreply(tokens: string[]): boolean {
  return tokens.length > 1 && tokens[tokens.length - 1] === 'noreply';
}

function isBadKey(key: string, limits: ProtocolLimits): boolean {
  return key.length > limits.keyBytesMax || keyHasForbiddenByte(key);
}

/** Maps tokens to a command, following memcached 1.6.18's process_command_ascii. */
function parseTokens(tokens: string[], limits: ProtocolLimits, flushAllEnabled: boolean): LineResult {
  const name = tokens[0];
  if (name === undefined || name.length < 2) return refused(UNKNOWN);
  switch (name) {
    case 'get':
    case 'gets':
    case 'gat':
    case 'gats':
      return parseGet(tokens, limits);
    case 'set':
    case 'add':
    case 'replace':
    case 'append':
    case 'prepend':
    case 'cas':
      return parseStore(name, tokens, limits);
    case 'incr':
    case 'decr':
      return parseArith(name, tokens, limits);
    case 'delete':
      return parseDelete(tokens, limits);
    case 'touch':
      return parseTouch(tokens, limits);
    case 'flush_all':
      return parseFlushAll(tokens, flushAllEnabled);
    case 'verbosity':
      return parseVerbosity(tokens);
    case 'version':
      return decoded({ kind: 'version' });
    case 'quit':
      return decoded({ kind: 'quit' });
    case 'stats':
      return decoded({ kind: 'stats', group: tokens.slice(1).join(' ') });
    case 'show':
      return decoded(tokens[1] === 'json' ? { kind: 'show', json: true } : { kind: 'show' });
    case 'causal_token':
      return tokens.length === 1 ? decoded({ kind: 'causal_token' }) : refused(UNKNOWN);
    case 'causal_wait':
      return parseCausalWait(tokens);
    default:
      return refused(UNKNOWN);
  }
}

/** Most characters of a causal token, and the longest wait a client may ask for. */
const CAUSAL_TOKEN_CHARS_MAX = 256;
const CAUSAL_WAIT_MS_MAX = 60_000;
const CAUSAL_WAIT_MS_DEFAULT = 5_000;

/** `causal_wait TOKEN [TIMEOUT_MS]`: the token is judged by the mode; here only its size. */
function parseCausalWait(tokens: string[]): LineResult {
  const token = tokens[1];
  if (token === undefined || tokens.length > 3) return refused(UNKNOWN);
  if (token.length > CAUSAL_TOKEN_CHARS_MAX) return refused(invalid({ kind: 'client_error', message: 'bad causal token' }));
  const timeoutMs = tokens.length === 3 ? Number(tokens[2]) : CAUSAL_WAIT_MS_DEFAULT;
  if (!/^\d{1,6}$/.test(tokens[2] ?? '0') || timeoutMs > CAUSAL_WAIT_MS_MAX) {
    return refused(invalid({ kind: 'client_error', message: `bad timeout (ms, at most ${CAUSAL_WAIT_MS_MAX})` }));
  }
  return decoded({ kind: 'causal_wait', token, timeoutMs });
}

function parseGet(tokens: string[], limits: ProtocolLimits): LineResult {
  if (tokens.length < 2) return refused(UNKNOWN);
  const name = tokens[0];
  const touches = name === 'gat' || name === 'gats';
  const cas = name === 'gets' || name === 'gats';
  const exptime = touches ? parseInt32(tokens[1]) : 0;
  if (exptime === null) return refused(invalid({ kind: 'client_error', message: TEXT_ERRORS.invalidExptime }));
  const keys = tokens.slice(touches ? 2 : 1);
  if (keys.length > limits.keysPerGetMax) {
    return refused(invalid({ kind: 'client_error', message: TEXT_ERRORS.tooManyKeys }));
  }
  if (keys.some((key) => isBadKey(key, limits))) {
    return refused(invalid({ kind: 'client_error', message: TEXT_ERRORS.badCommandLineFormat }));
  }
  return decoded(touches ? { kind: 'gat', keys, cas, exptime } : { kind: 'get', keys, cas });
}

function parseStore(verb: StoreVerb, tokens: string[], limits: ProtocolLimits): LineResult {
  const expected = verb === 'cas' ? 6 : 5;
  if (tokens.length !== expected && tokens.length !== expected + 1) return refused(UNKNOWN);
  const noreply = endsWithNoreply(tokens);
  const bad = refused(silenceable(noreply, TEXT_ERRORS.badCommandLineFormat));
  const key = tokens[1];
  if (key === undefined || isBadKey(key, limits)) return bad;
  const flags = parseUint32(tokens[2]);
  const exptime = parseInt32(tokens[3]);
  const valueBytes = parseInt32(tokens[4]);
  if (flags === null || exptime === null || valueBytes === null) return bad;
  const casUnique = verb === 'cas' ? parseUint64(tokens[5]) : 0n;
  if (casUnique === null || valueBytes < 0 || valueBytes > INT32_MAX - 2) return bad;
  if (valueBytes > limits.valueBytesMax) return { kind: 'too_large', valueBytes, noreply };
  const value = Buffer.alloc(0);
  return { kind: 'data', valueBytes, command: { kind: 'store', verb, key, flags, exptime, value, casUnique, noreply } };
}

function parseArith(verb: ArithVerb, tokens: string[], limits: ProtocolLimits): LineResult {
  if (tokens.length !== 3 && tokens.length !== 4) return refused(UNKNOWN);
  const noreply = endsWithNoreply(tokens);
  const key = tokens[1];
  if (key === undefined || isBadKey(key, limits)) return refused(silenceable(noreply, TEXT_ERRORS.badCommandLineFormat));
  const delta = parseUint64(tokens[2]);
  if (delta === null) return refused(silenceable(noreply, TEXT_ERRORS.invalidDelta));
  return decoded({ kind: 'arith', verb, key, delta, initial: null, exptime: 0, noreply });
}

/** `delete <key> [0] [noreply]`: the legacy hold time is accepted only when it is exactly 0. */
function parseDelete(tokens: string[], limits: ProtocolLimits): LineResult {
  if (tokens.length < 2 || tokens.length > 4) return refused(UNKNOWN);
  const noreply = endsWithNoreply(tokens);
  if (tokens.length > 2) {
    const holdIsZero = tokens[2] === '0';
    const valid = (tokens.length === 3 && (holdIsZero || noreply)) || (tokens.length === 4 && holdIsZero && noreply);
    if (!valid) return refused(silenceable(noreply, TEXT_ERRORS.badDeleteFormat));
  }
  const key = tokens[1];
  if (key === undefined || isBadKey(key, limits)) return refused(silenceable(noreply, TEXT_ERRORS.badCommandLineFormat));
  return decoded({ kind: 'delete', key, noreply });
}

function parseTouch(tokens: string[], limits: ProtocolLimits): LineResult {
  if (tokens.length !== 3 && tokens.length !== 4) return refused(UNKNOWN);
  const noreply = endsWithNoreply(tokens);
  const key = tokens[1];
  if (key === undefined || isBadKey(key, limits)) return refused(silenceable(noreply, TEXT_ERRORS.badCommandLineFormat));
  const exptime = parseInt32(tokens[2]);
  if (exptime === null) return refused(silenceable(noreply, TEXT_ERRORS.invalidExptime));
  return decoded({ kind: 'touch', key, exptime, noreply });
}

/**
 * `flush_all [delay] [noreply]`; like memcached, a third token that is not noreply is ignored, and
 * when flush_all is off (memcached -F) it is refused before its delay is read.
 */
function parseFlushAll(tokens: string[], flushAllEnabled: boolean): LineResult {
  if (tokens.length > 3) return refused(UNKNOWN);
  const noreply = endsWithNoreply(tokens);
  if (!flushAllEnabled) return refused(silenceable(noreply, TEXT_ERRORS.flushAllNotAllowed));
  if (tokens.length === (noreply ? 2 : 1)) return decoded({ kind: 'flush_all', delaySeconds: 0, noreply });
  const delaySeconds = parseInt32(tokens[1]);
  if (delaySeconds === null) return refused(silenceable(noreply, TEXT_ERRORS.invalidExptime));
  return decoded({ kind: 'flush_all', delaySeconds, noreply });
}

function parseVerbosity(tokens: string[]): LineResult {
  if (tokens.length !== 2 && tokens.length !== 3) return refused(UNKNOWN);
  const noreply = endsWithNoreply(tokens);
  const level = parseUint32(tokens[1]);
  if (level === null) return refused(silenceable(noreply, TEXT_ERRORS.badCommandLineFormat));
  return decoded({ kind: 'verbosity', level, noreply });
}

const UNSIGNED_DIGITS = /^\+?[0-9]+$/;
const SIGNED_DIGITS = /^[+-]?[0-9]+$/;

/** A decimal in [0, 2^32-1] (an optional `+`, as strtoul allows), else null. */
export function parseUint32(token: string | undefined): number | null {
  if (token === undefined || !UNSIGNED_DIGITS.test(token)) return null;
  const value = Number(token);
  return value <= UINT32_MAX ? value : null;
}

/** A decimal in [-2^31, 2^31-1], else null. */
export function parseInt32(token: string | undefined): number | null {
  if (token === undefined || !SIGNED_DIGITS.test(token)) return null;
  const value = Number(token);
  return value >= INT32_MIN && value <= INT32_MAX ? value : null;
}

/** A decimal in [0, 2^64-1], else null. */
export function parseUint64(token: string | undefined): bigint | null {
  if (token === undefined || !UNSIGNED_DIGITS.test(token)) return null;
  const value = BigInt(token);
  return value <= UINT64_MAX ? value : null;
}

const END = Buffer.from('END\r\n');

function line(text: string): Buffer {
  return Buffer.from(`${text}\r\n`, 'latin1');
}

/** True when the command asked for no reply. */
function isSilenced(command: Command): boolean {
  return 'noreply' in command && command.noreply;
}

/** Whether a values reply for this command carries cas tokens (gets, gats). */
function wantsCas(command: Command): boolean {
  return (command.kind === 'get' || command.kind === 'gat') && command.cas;
}

/** Value replies up to this many bytes are encoded as one Buffer; larger ones part by part. */
export const FLAT_REPLY_BYTES_MAX = 64 * 1024;
const CRLF = Buffer.from('\r\n');

/** The `VALUE` header line of each item (keys are latin1: one byte per char) and the reply's size. */
function valueHeaders(items: Item[], withCas: boolean): { headers: string[]; bytes: number } {
  const headers: string[] = [];
  let bytes = END.length;
  for (const item of items) {
    const header = withCas
      ? `VALUE ${item.key} ${item.flags} ${item.value.length} ${item.cas}\r\n`
      : `VALUE ${item.key} ${item.flags} ${item.value.length}\r\n`;
    headers.push(header);
    bytes += header.length + item.value.length + 2;
  }
  return { headers, bytes };
}

function encodeValues(items: Item[], headers: string[], bytes: number): Buffer {
  const reply = Buffer.allocUnsafe(bytes);
  let offset = 0;
  for (let index = 0; index < items.length; index += 1) {
    const item = items[index];
    const header = headers[index];
    if (item === undefined || header === undefined) throw new Error(`values reply: no item or header ${index}`);
    offset += reply.write(header, offset, 'latin1');
    offset += item.value.copy(reply, offset);
    reply[offset] = CARRIAGE_RETURN;
    reply[offset + 1] = NEWLINE;
    offset += 2;
  }
  END.copy(reply, offset);
  return reply;
}

/**
 * A values reply as parts to write in order: one Buffer when small, else each item's header line,
 * its value Buffer itself (never copied) and CRLF, then END.
 */
function valuesParts(items: Item[], withCas: boolean): Buffer[] {
  const { headers, bytes } = valueHeaders(items, withCas);
  if (bytes <= FLAT_REPLY_BYTES_MAX) return [encodeValues(items, headers, bytes)];
  const parts: Buffer[] = [];
  for (let index = 0; index < items.length; index += 1) {
    const item = items[index];
    const header = headers[index];
    if (item === undefined || header === undefined) throw new Error(`values reply: no item or header ${index}`);
    parts.push(Buffer.from(header, 'latin1'), item.value, CRLF);
  }
  parts.push(END);
  return parts;
}

/**
 * `encodeTextReply` as parts to write in order, so that a reply of many large values is never
 * copied into one Buffer: the server writes it value by value, minding the client's reading pace.
 */
export function encodeTextReplyParts(command: Command, reply: Reply): Buffer[] {
  if (reply.kind === 'values' && !isSilenced(command)) return valuesParts(reply.items, wantsCas(command));
  const bytes = encodeTextReply(command, reply);
  return bytes.length === 0 ? [] : [bytes];
}

/**
 * Encodes `reply` to `command` as memcached's text protocol does. A command sent with `noreply`
 * gets no bytes at all, errors included (as in memcached); `quit` and `none` are empty.
 */
export function encodeTextReply(command: Command, reply: Reply): Buffer {
  if (isSilenced(command) || command.kind === 'quit') return Buffer.alloc(0);
  switch (reply.kind) {
    case 'stored': return line('STORED');
    case 'not_stored': return line('NOT_STORED');
    case 'exists': return line('EXISTS');
    case 'not_found': return line('NOT_FOUND');
    case 'deleted': return line('DELETED');
    case 'touched': return line('TOUCHED');
    case 'ok': return line('OK');
    case 'values': {
      const { headers, bytes } = valueHeaders(reply.items, wantsCas(command));
      return encodeValues(reply.items, headers, bytes);
    }
    case 'number': return line(reply.value.toString());
    case 'version': return line(`VERSION ${reply.version}`);
    case 'stats': return Buffer.concat([...reply.stats.map(([name, value]) => line(`STAT ${name} ${value}`)), END]);
    case 'reset': return line('RESET');
    case 'text': return Buffer.concat([...reply.lines.map(line), END]);
    case 'error': return line('ERROR');
    case 'client_error': return line(`CLIENT_ERROR ${reply.message}`);
    case 'refused': return line(`SERVER_ERROR ${refusalText(reply)}`);
    case 'none': return Buffer.alloc(0);
    default: {
      const unreachable: never = reply;
      return unreachable;
    }
  }
}

/** Encodes a reply that no command produced (a decoder's `invalid` item). */
export function encodeTextInvalid(reply: Reply): Buffer {
  return encodeTextReply({ kind: 'version' }, reply);
}
