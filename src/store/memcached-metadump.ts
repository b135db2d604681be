/**
 * The short-lived text connection that lists memcached's keys (`lru_crawler metadump`): the binary
 * protocol has no such command, and the replica's key index is rebuilt from it at start.
 *
 * Two walks: `hash`, memcached's hash table (1.6.9 and later), which lists every item held
 * throughout, once; and `lrus` (`metadump all`), its LRUs, which misses items its maintainer moves
 * from one LRU to another meanwhile (thousands of 300,000 right after they were read).
 */

import net from 'node:net';
import { errorMessage } from './memcached-connection.ts';
import { StoreError } from './types.ts';

/**
 * The memcached keys listed by `lru_crawler metadump`, decoded from its URI encoding; null when
 * memcached cannot walk that way (`hash` before 1.6.9). Retries a few times while the crawler is
 * busy. Fails once it lists more than `keysMax`.
 */
export async function metadump(options: MetadumpOptions): Promise<string[] | null> {
  const attemptsMax = 10;
  for (let attempt = 1; ; attempt += 1) {
    const lines = await metadumpOnce(options);
    if (lines === 'unknown walk') return null;
    if (lines !== 'busy') return lines;
    if (attempt >= attemptsMax) {
      throw new StoreError('BACKEND_FAILED', `memcached ${options.host}:${options.port}: lru crawler stays busy`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50 * attempt));
  }
}

/** Where memcached is, how it walks its items, how long it may send nothing, and the most keys taken. */
interface MetadumpOptions {
  host: string;
  port: number;
  walk: 'hash' | 'lrus';
  timeoutMs: number;
  keysMax?: number;
}

/** Longest metadump line taken: a key line is under 1 KiB; more is not memcached's metadump. */
const LINE_BYTES_MAX = 64 * 1024;

/**
 * One metadump, read line by line as it arrives (a dump of millions of keys is hundreds of MB: kept
 * as one string and searched for its end at every chunk, it took time quadratic in its size, 16 s
 * for 600,000 keys, past the timeout).
 */
function metadumpOnce(options: MetadumpOptions): Promise<string[] | 'busy' | 'unknown walk'> {
  const keysMax = options.keysMax ?? Infinity;
  const address = `${options.host}:${options.port}`;
  return new Promise((resolve, reject) => {
    const socket = net.connect(options.port, options.host);
    const keys: string[] = [];
    let partial = '';
    let firstLine = true;
    let finished = false;
    const finish = (result: string[] | 'busy' | 'unknown walk' | StoreError): void => {
      finished = true;
      clearTimeout(timer);
      socket.destroy();
      if (result instanceof StoreError) reject(result);
      else resolve(result);
    };
    // How long memcached may send nothing: a dump of millions of keys takes seconds, and goes on.
    const timer = setTimeout(
      () => finish(new StoreError('BACKEND_TIMEOUT', `memcached ${address}: metadump sent nothing for ${options.timeoutMs} ms`)),
      options.timeoutMs,
    );
    socket.on('error', (cause) =>
      finish(new StoreError('BACKEND_DOWN', `memcached ${address} unreachable (metadump): ${errorMessage(cause)}`, { cause })),
    );
    // Lines end in "\n"; only the closing END has "\r\n". The first line may say BUSY or refuse.
    const takeLine = (raw: string): void => {
      const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
      if (firstLine) {
        firstLine = false;
        if (line.startsWith('BUSY')) return finish('busy');
        // What a memcached before 1.6.9 says to `metadump hash`: it takes "hash" for a class id.
        if (line.startsWith('BADCLASS') && options.walk === 'hash') return finish('unknown walk');
        if (/^(ERROR|CLIENT_ERROR|SERVER_ERROR|BADCLASS)/.test(line)) {
          return finish(new StoreError('BACKEND_FAILED', `memcached ${address} refused metadump: ${line.slice(0, 200)}`));
        }
      }
      if (line === 'END') return finish(keys);
      const key = /^key=(\S+)/.exec(line)?.[1];
      if (key === undefined) return;
      if (keys.length >= keysMax) return finish(new StoreError('BACKEND_FAILED', `memcached ${address} holds more than ${keysMax} keys`));
      keys.push(uriDecodeBytes(key));
    };
    socket.on('data', (chunk: Buffer) => {
      if (finished) return;
      timer.refresh();
      const lines = (partial + chunk.toString('latin1')).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        takeLine(line);
        if (finished) return;
      }
      if (partial.length > LINE_BYTES_MAX) finish(new StoreError('BACKEND_FAILED', `memcached ${address}: a metadump line over ${LINE_BYTES_MAX} bytes`));
    });
    socket.write(`lru_crawler metadump ${options.walk === 'hash' ? 'hash' : 'all'}\r\n`);
  });
}

/**
 * memcached's URI encoding undone byte by byte: `%XX` is the byte XX. Not decodeURIComponent, which
 * reads the bytes as UTF-8 and throws on a key that is not (one another client wrote into this
 * memcached, say); a `%` without two hex digits after it stays as it is.
 */
function uriDecodeBytes(encoded: string): string {
  let at = encoded.indexOf('%');
  if (at === -1) return encoded;
  // Slices between escapes, not a regular expression's callback per escape: a listing of
  // millions of keys, each with a few escapes (":" is one), spent a tenth of its time there.
  let out = '';
  let from = 0;
  while (at !== -1) {
    const high = hexDigit(encoded.charCodeAt(at + 1));
    const low = hexDigit(encoded.charCodeAt(at + 2));
    if (high >= 0 && low >= 0) {
      out += encoded.slice(from, at) + String.fromCharCode(high * 16 + low);
      from = at + 3;
    }
    at = encoded.indexOf('%', high >= 0 && low >= 0 ? from : at + 1);
  }
  return out + encoded.slice(from);
}

/** The value of a hex digit's character code, or -1 (NaN, past the end, included). */
function hexDigit(code: number): number {
  if (code >= 0x30 && code <= 0x39) return code - 0x30;
  if (code >= 0x41 && code <= 0x46) return code - 0x37;
  if (code >= 0x61 && code <= 0x66) return code - 0x57;
  return -1;
}
