/**
 * The short-lived text connection that lists memcached's keys (`lru_crawler metadump all`): the
 * binary protocol has no such command, and the replica's key index is rebuilt from it at start.
 */

import net from 'node:net';
import { errorMessage } from './memcached-connection.ts';
import { StoreError } from './types.ts';

/**
 * The memcached keys listed by `lru_crawler metadump all`, decoded from its URI encoding. Retries
 * a few times while the crawler is busy.
 */
export async function metadump(options: { host: string; port: number; timeoutMs: number }): Promise<string[]> {
  const attemptsMax = 10;
  for (let attempt = 1; ; attempt += 1) {
    const lines = await metadumpOnce(options);
    if (lines !== 'busy') return lines;
    if (attempt >= attemptsMax) {
      throw new StoreError('BACKEND_FAILED', `memcached ${options.host}:${options.port}: lru crawler stays busy`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50 * attempt));
  }
}

function metadumpOnce(options: { host: string; port: number; timeoutMs: number }): Promise<string[] | 'busy'> {
  const address = `${options.host}:${options.port}`;
  return new Promise((resolve, reject) => {
    const socket = net.connect(options.port, options.host);
    let text = '';
    const finish = (result: string[] | 'busy' | StoreError): void => {
      clearTimeout(timer);
      socket.destroy();
      if (result instanceof StoreError) reject(result);
      else resolve(result);
    };
    const timer = setTimeout(
      () => finish(new StoreError('BACKEND_TIMEOUT', `memcached ${address}: metadump took over ${options.timeoutMs} ms`)),
      options.timeoutMs,
    );
    socket.on('error', (cause) =>
      finish(new StoreError('BACKEND_DOWN', `memcached ${address} unreachable (metadump): ${errorMessage(cause)}`, { cause })),
    );
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1');
      if (text.startsWith('BUSY')) finish('busy');
      else if (text.startsWith('ERROR') || text.startsWith('CLIENT_ERROR') || text.startsWith('SERVER_ERROR')) {
        finish(new StoreError('BACKEND_FAILED', `memcached ${address} refused metadump: ${text.trim()}`));
      } else if (text === 'END\r\n' || text.endsWith('\nEND\r\n')) finish(parseMetadump(text));
    });
    socket.write('lru_crawler metadump all\r\n');
  });
}

/** The keys of a metadump, each as its bytes (a latin1 string), as memcached holds it. */
export function parseMetadump(text: string): string[] {
  const keys: string[] = [];
  // Lines end in "\n"; only the closing END has "\r\n".
  for (const line of text.split(/\r?\n/)) {
    const key = /^key=(\S+)/.exec(line)?.[1];
    if (key !== undefined) keys.push(uriDecodeBytes(key));
  }
  return keys;
}

/**
 * memcached's URI encoding undone byte by byte: `%XX` is the byte XX. Not decodeURIComponent, which
 * reads the bytes as UTF-8 and throws on a key that is not (one another client wrote into this
 * memcached, say); a `%` without two hex digits after it stays as it is.
 */
function uriDecodeBytes(encoded: string): string {
  if (!encoded.includes('%')) return encoded;
  return encoded.replace(/%([0-9A-Fa-f]{2})/g, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)));
}
