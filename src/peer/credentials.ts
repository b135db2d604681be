/**
 * What a controller proves its peer identity with, read from disk once at start-up: the shared
 * cluster secret and, with peer TLS, the CA and this node's certificate and key.
 *
 * A file that is missing, too short or readable by group or others is an operating error the
 * operator must fix: a `PeerCredentialsError` whose message is one line naming the file and the fix
 * (main.ts prints it and exits 1). A controller never runs with a secret others can read.
 */

import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import { CLUSTER_SECRET_BYTES_MIN } from './handshake.ts';

export class PeerCredentialsError extends Error {
  override readonly name = 'PeerCredentialsError';
  readonly code: 'secret_missing' | 'secret_short' | 'secret_exposed' | 'tls_unreadable' | 'tls_invalid';

  constructor(message: string, options: { code: PeerCredentialsError['code']; cause?: unknown }) {
    super(message, { cause: options.cause });
    this.code = options.code;
  }
}

/** PEM contents for mutual TLS on the peer port. */
export interface PeerTls {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

/**
 * The cluster secret: the file's bytes without surrounding whitespace (an editor's final newline
 * does not change it). Throws PeerCredentialsError.
 */
export function readClusterSecret(file: string): Buffer {
  let mode: number;
  let text: Buffer;
  try {
    mode = statSync(file).mode;
    text = readFileSync(file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? String(error);
    throw new PeerCredentialsError(
      `cannot read the cluster secret file ${file} (${code}): ./startup.sh creates one, or: umask 077; head -c 32 /dev/urandom | base64 > ${file}`,
      { code: 'secret_missing', cause: error },
    );
  }
  if ((mode & 0o077) !== 0) {
    throw new PeerCredentialsError(
      `the cluster secret file ${file} is readable by group or others (mode ${(mode & 0o777).toString(8).padStart(3, '0')}): chmod 600 ${file}`,
      { code: 'secret_exposed' },
    );
  }
  const secret = trimAsciiWhitespace(text);
  if (secret.length < CLUSTER_SECRET_BYTES_MIN) {
    throw new PeerCredentialsError(
      `the cluster secret file ${file} holds ${secret.length} bytes, fewer than ${CLUSTER_SECRET_BYTES_MIN}: remove it and ./startup.sh creates one, or: head -c 32 /dev/urandom | base64 > ${file}`,
      { code: 'secret_short' },
    );
  }
  return secret;
}

/**
 * Reads the CA and this node's certificate and key (PEM), and checks each parses and the key is the
 * certificate's, so a bad file is named at start rather than by OpenSSL at the first handshake.
 * Throws PeerCredentialsError.
 */
export function readPeerTls(files: { caFile: string; certFile: string; keyFile: string }): PeerTls {
  const read = (file: string, what: string): Buffer => {
    try {
      return readFileSync(file);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? String(error);
      throw new PeerCredentialsError(`cannot read the peer TLS ${what} ${file} (${code})`, { code: 'tls_unreadable', cause: error });
    }
  };
  const tls = { ca: read(files.caFile, 'CA'), cert: read(files.certFile, 'certificate'), key: read(files.keyFile, 'key') };
  const check = (what: string, parse: () => unknown): void => {
    try {
      parse();
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      throw new PeerCredentialsError(`the peer TLS ${what} is not usable: ${reason}`, { code: 'tls_invalid', cause: error });
    }
  };
  check(`CA ${files.caFile}`, () => new X509Certificate(tls.ca));
  check(`certificate ${files.certFile}`, () => new X509Certificate(tls.cert));
  check(`key ${files.keyFile}`, () => createPrivateKey(tls.key));
  check(`certificate ${files.certFile} with key ${files.keyFile}`, () => createSecureContext(tls));
  return tls;
}

function trimAsciiWhitespace(bytes: Buffer): Buffer {
  const isSpace = (byte: number | undefined): boolean => byte === 0x20 || byte === 0x09 || byte === 0x0a || byte === 0x0d;
  let start = 0;
  let end = bytes.length;
  while (start < end && isSpace(bytes[start])) start++;
  while (end > start && isSpace(bytes[end - 1])) end--;
  return bytes.subarray(start, end);
}
