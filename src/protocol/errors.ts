/**
 * The one table of client-visible error strings, and memcached's message for each binary status.
 *
 * Intuition: memcached clients match on exact reply strings, so every message a decoder or the
 * server writes comes from here, spelled as memcached 1.6.18 spells it (checked by
 * test_cases/protocol-differential.test.ts against a real memcached).
 * Invariant: text messages carry no CRLF; the encoders add the `CLIENT_ERROR `/`SERVER_ERROR ` prefix.
 * The cluster's own refusals are rendered by ./refusals.ts; the status codes are in ./binary-header.ts.
 */

import { BINARY_STATUS } from './binary-header.ts';

/** Messages after `CLIENT_ERROR ` / `SERVER_ERROR ` in the text protocol. */
export const TEXT_ERRORS = Object.freeze({
  badCommandLineFormat: 'bad command line format',
  badDeleteFormat: 'bad command line format.  Usage: delete <key> [noreply]',
  invalidExptime: 'invalid exptime argument',
  invalidDelta: 'invalid numeric delta argument',
  badDataChunk: 'bad data chunk',
  nonNumeric: 'cannot increment or decrement non-numeric value',
  objectTooLarge: 'object too large for cache',
  outOfMemory: 'out of memory storing object',
  /** mckv only: memcached closes such a connection without a word. */
  lineTooLong: 'line too long',
  /** mckv only: memcached has no limit on keys per get. */
  tooManyKeys: 'too many keys',
  /** flush_all while it is turned off (memcached's -F). */
  flushAllNotAllowed: 'flush_all not allowed',
  /** Anything but a login on a connection that has not logged in (memcached's -Y). */
  unauthenticated: 'unauthenticated',
  /** A login's data block does not end in CRLF. */
  badCommandLineTermination: 'bad command line termination',
  /** A login's data block is not `user password`. */
  badAuthenticationTokenFormat: 'bad authentication token format',
  /** A login whose user and password match no line of the auth file. */
  authenticationFailure: 'authentication failure',
});

/** The status codes live with the header layout; re-exported for the encoders that map errors to them. */
export { BINARY_STATUS, type BinaryStatus } from './binary-header.ts';

/** The body of a successful SASL authentication, and the one mechanism offered. */
export const BINARY_SASL = Object.freeze({ authenticated: 'Authenticated', mechanisms: 'PLAIN' });

/** The body memcached 1.6 sends with each binary error status. */
export const BINARY_STATUS_MESSAGES: Readonly<Record<number, string>> = Object.freeze({
  [BINARY_STATUS.keyNotFound]: 'Not found',
  [BINARY_STATUS.keyExists]: 'Data exists for key.',
  [BINARY_STATUS.valueTooLarge]: 'Too large.',
  [BINARY_STATUS.invalidArguments]: 'Invalid arguments',
  [BINARY_STATUS.notStored]: 'Not stored.',
  [BINARY_STATUS.nonNumeric]: 'Non-numeric server-side value for incr or decr',
  [BINARY_STATUS.authError]: 'Auth failure.',
  [BINARY_STATUS.authContinue]: '',
  [BINARY_STATUS.unknownCommand]: 'Unknown command',
  [BINARY_STATUS.outOfMemory]: 'Out of memory',
  [BINARY_STATUS.notSupported]: 'Not supported',
  [BINARY_STATUS.internalError]: 'Internal error',
  [BINARY_STATUS.busy]: 'Busy',
  [BINARY_STATUS.temporaryFailure]: 'Temporary failure',
});

/** True when a key byte is a control character or a space (memcached's protocol.txt forbids them). */
export function isForbiddenKeyByte(byte: number): boolean {
  return byte <= 0x20 || byte === 0x7f;
}

/** True when the key (latin1, one char per byte) holds a forbidden byte. */
export function keyHasForbiddenByte(key: string): boolean {
  for (let index = 0; index < key.length; index++) {
    if (isForbiddenKeyByte(key.charCodeAt(index))) return true;
  }
  return false;
}
