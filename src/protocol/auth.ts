/**
 * Client logins, as memcached checks them: an auth file of `user:password` lines (memcached's -Y),
 * used by the text protocol's login `set` and by the binary protocol's SASL PLAIN.
 *
 * Intuition: the file is read once, at start; a file that cannot be read or holds a malformed
 * line stops the start with one line naming it. Checking a login is synchronous, so a decoder can
 * decide at once whether the bytes after a login belong to a logged-in connection.
 *
 * Invariants: a password is never compared byte by byte as it arrives: both sides are hashed and
 * the digests compared in constant time, and an unknown user costs the same comparison; no
 * password ever reaches a log or an error message.
 */

import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';

/** Checks a user's password; what the decoders are given. */
export interface Login {
  verify(user: string, password: string): boolean;
}

/** The auth file could not be read, or a line of it is not `user:password`. */
export class AuthFileError extends Error {
  override readonly name = 'AuthFileError';
  readonly code: 'AUTH_FILE_UNREADABLE' | 'AUTH_FILE_MALFORMED';

  constructor(message: string, code: AuthFileError['code'], options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text, 'latin1').digest();
}

/** The logins of one auth file. */
export class Credentials implements Login {
  private readonly digests: ReadonlyMap<string, Buffer>;
  /** Compared against when the user is unknown, so that costs what a wrong password costs. */
  private readonly nobody = digest('\u0000mckv no such user\u0000');

  constructor(entries: ReadonlyArray<{ user: string; password: string }>) {
    this.digests = new Map(entries.map(({ user, password }) => [user, digest(password)]));
  }

  get users(): number {
    return this.digests.size;
  }

  verify(user: string, password: string): boolean {
    const expected = this.digests.get(user);
    const matches = timingSafeEqual(expected ?? this.nobody, digest(password));
    return matches && expected !== undefined;
  }
}

/**
 * Parses an auth file's text: one `user:password` per line (split at the first colon, CRLF or LF
 * endings, blank lines skipped), as memcached's authfile.c reads it. Throws AuthFileError.
 */
export function parseAuthFile(text: string, file: string): Credentials {
  const entries: Array<{ user: string; password: string }> = [];
  const lines = text.split('\n');
  for (const [index, raw] of lines.entries()) {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (line.length === 0) continue;
    const colon = line.indexOf(':');
    if (colon <= 0 || /[\s]/.test(line)) {
      throw new AuthFileError(`auth file ${file}: line ${index + 1} is not user:password`, 'AUTH_FILE_MALFORMED');
    }
    entries.push({ user: line.slice(0, colon), password: line.slice(colon + 1) });
  }
  if (entries.length === 0) throw new AuthFileError(`auth file ${file}: no user:password line`, 'AUTH_FILE_MALFORMED');
  return new Credentials(entries);
}

/** Reads and parses the auth file once. Throws AuthFileError with a one-line message. */
export function loadAuthFile(file: string): Credentials {
  let text: string;
  try {
    text = readFileSync(file, 'latin1');
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code ?? 'unreadable';
    throw new AuthFileError(`auth file ${file} cannot be read (${reason})`, 'AUTH_FILE_UNREADABLE', { cause: error });
  }
  return parseAuthFile(text, file);
}

/**
 * A SASL PLAIN message (RFC 4616): `authzid NUL authcid NUL password`; the authorization identity
 * must be empty or the user's own. Null when the message has another shape.
 */
export function parsePlain(message: Buffer): { user: string; password: string } | null {
  const first = message.indexOf(0);
  const second = first === -1 ? -1 : message.indexOf(0, first + 1);
  if (second === -1 || message.indexOf(0, second + 1) !== -1) return null;
  const authzid = message.toString('latin1', 0, first);
  const user = message.toString('latin1', first + 1, second);
  const password = message.toString('latin1', second + 1);
  if (user.length === 0 || (authzid.length > 0 && authzid !== user)) return null;
  return { user, password };
}
