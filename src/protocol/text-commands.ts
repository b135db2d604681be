/**
 * What a memcached text protocol command line means: its tokens mapped to the `Command` it asks for,
 * or to an `invalid` item carrying the exact reply memcached 1.6.18 gives, following its
 * process_command_ascii. The streaming decoder (./text.ts) frames lines and data blocks and hands
 * each line's tokens here; a storage line tells it how long a data block to read or swallow.
 *
 * Invariants:
 * - On the commands that take `noreply` (storage, incr/decr, delete, touch, flush_all, verbosity), a
 *   trailing `noreply` silences the reply to a malformed line, as memcached's set_noreply_maybe; a
 *   wrong number of tokens gets `ERROR` regardless.
 * - Numbers are read in the ranges of their fields (flags uint32, exptime and lengths int32, cas and
 *   deltas uint64); anything outside is refused, never wrapped.
 */

import type { ArithVerb, Command, ProtocolLimits, Reply, StoreVerb } from './types.ts';
import { TEXT_ERRORS, keyHasForbiddenByte } from './errors.ts';

/** One decoded request: a command to execute, or malformed input with the reply it gets. */
export type TextDecoded =
  | { kind: 'command'; command: Command }
  /** `close`: the connection cannot be resynchronised; write the reply, then close. */
  | { kind: 'invalid'; reply: Reply; close: boolean }
  /** A login the decoder settled itself (memcached -Y): its reply. */
  | { kind: 'answered'; reply: Reply };

export type StoreCommand = Extract<Command, { kind: 'store' }>;

const INT32_MIN = -2147483648;
const INT32_MAX = 2147483647;
const UINT32_MAX = 4294967295;
const UINT64_MAX = 18446744073709551615n;

/** What one command line asks for. */
export type LineResult =
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

export function invalid(reply: Reply, close = false): TextDecoded {
  return { kind: 'invalid', reply, close };
}

const UNKNOWN: TextDecoded = invalid({ kind: 'error' });

/** An error reply that a `noreply` on its line silences, as memcached does. */
export function silenceable(noreply: boolean, message: string): TextDecoded {
  return invalid(noreply ? { kind: 'none' } : { kind: 'client_error', message });
}

/** memcached's set_noreply_maybe: the last token is exactly `noreply`. */
function endsWithNoreply(tokens: string[]): boolean {
  return tokens.length > 1 && tokens[tokens.length - 1] === 'noreply';
}

export function isBadKey(key: string, limits: ProtocolLimits): boolean {
  return key.length > limits.keyBytesMax || keyHasForbiddenByte(key);
}

/** Maps tokens to a command, following memcached 1.6.18's process_command_ascii. */
export function parseTokens(tokens: string[], limits: ProtocolLimits, flushAllEnabled: boolean): LineResult {
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
