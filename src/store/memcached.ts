/**
 * The memcached backend: one replica's entries kept in one memcached, spoken to through memjs
 * (binary protocol, one pipelined connection).
 *
 * Intuition: each Entry is a single memcached value (see codec.ts), so get/set/delete map one to
 * one onto memcached commands and memcached's own cas and flags are never used. memjs is tuned to
 * never retry (a retried write could apply twice after a lost reply) and every call is bounded by
 * our own timer, because memjs can leave a request pending forever when the server closes the
 * connection quietly.
 *
 * Invariants:
 * - Every method settles within `opTimeoutMs` (plus queueing behind `inFlightMax` requests); every
 *   failure is a StoreError: BACKEND_DOWN (cannot connect, connection lost), BACKEND_TIMEOUT (no
 *   answer in time) or BACKEND_FAILED (memcached refused, e.g. value too large).
 * - After a connection failure or timeout the memjs client is dropped, its pending requests are
 *   rejected at once, and the next call connects afresh, so a restarted memcached is picked up.
 * - `health().epoch` is memcached's pid and start time, so it changes when memcached restarts.
 */

import net from 'node:net';
import memjs from 'memjs';
import {
  decodeEntry,
  encodeEntry,
  keyFromMemcachedKey,
  memcachedExptimeSeconds,
  memcachedKey,
} from './codec.ts';
import { StoreError, type BackendHealth, type Entry, type KVBackend } from './types.ts';

/** Where memcached is and how long to wait for it. */
export interface MemcachedBackendOptions {
  host: string;
  port: number;
  /** Longest wait for one reply, in ms (default 1000). */
  opTimeoutMs?: number;
  /** Longest wait to connect, in ms (default 1000). */
  connectTimeoutMs?: number;
  /** Most requests outstanding on the connection; later calls queue (default 1024). */
  inFlightMax?: number;
}

type Client = memjs.Client<Buffer, Buffer | null>;

/** One memjs client and the calls waiting on it, dropped together when the connection fails. */
interface Connection {
  client: Client;
  pending: Set<(error: StoreError) => void>;
}

const SILENT_LOGGER = { log: (): void => {} };

/** A KVBackend kept in a memcached server. */
export class MemcachedBackend implements KVBackend {
  readonly kind = 'memcache' as const;
  readonly #host: string;
  readonly #port: number;
  readonly #opTimeoutMs: number;
  readonly #connectTimeoutMs: number;
  readonly #inFlightMax: number;
  #connection: Connection | null = null;
  #inFlight = 0;
  readonly #waiting: Array<() => void> = [];
  #lastEpoch = '';
  #closed = false;

  constructor(options: MemcachedBackendOptions) {
    this.#host = options.host;
    this.#port = options.port;
    this.#opTimeoutMs = options.opTimeoutMs ?? 1000;
    this.#connectTimeoutMs = options.connectTimeoutMs ?? 1000;
    this.#inFlightMax = options.inFlightMax ?? 1024;
  }

  /** "host:port", for messages. */
  get address(): string {
    return `${this.#host}:${this.#port}`;
  }

  async get(key: string): Promise<Entry | undefined> {
    const target = memcachedKey(key);
    const raw = await this.#run(`get ${describeKey(key)}`, (client) => client.get(target.key));
    if (raw.value === null) return undefined;
    const decoded = decodeEntry(raw.value);
    if (decoded === null) return undefined; // not written by mckv: reads as absent
    if (target.hashed && decoded.keptKey !== key) return undefined; // a digest collision
    return decoded.entry;
  }

  async set(key: string, entry: Entry): Promise<void> {
    const target = memcachedKey(key);
    const value = encodeEntry(entry, target.hashed ? key : null);
    const expires = memcachedExptimeSeconds(entry.expiresAtMs);
    await this.#run(`set ${describeKey(key)}`, (client) => client.set(target.key, value, { expires }));
  }

  async delete(key: string): Promise<void> {
    const target = memcachedKey(key);
    await this.#run(`delete ${describeKey(key)}`, (client) => client.delete(target.key));
  }

  async flush(): Promise<void> {
    await this.#run('flush_all', (client) => client.flush());
  }

  async health(): Promise<BackendHealth> {
    try {
      const stats = await this.#run('stats', (client) => statsOf(client));
      const startedSeconds = Number(stats.time) - Number(stats.uptime);
      this.#lastEpoch = `${stats.pid}@${startedSeconds}`;
      const detail =
        `memcached ${stats.version ?? '?'} at ${this.address}, pid ${stats.pid}, ` +
        `${stats.curr_items ?? '?'} items, ${stats.bytes ?? '?'} bytes`;
      return { ok: true, detail, epoch: this.#lastEpoch };
    } catch (error) {
      // Keep the last known epoch while down, so only a real restart looks like a change.
      return { ok: false, detail: errorMessage(error), epoch: this.#lastEpoch };
    }
  }

  /**
   * Every key of ours stored in memcached, from `lru_crawler metadump all` (text protocol, a
   * separate short-lived connection). Used to rebuild a Replica's key index at start.
   */
  async keys(): Promise<string[]> {
    const memcachedKeys = await metadump({
      host: this.#host,
      port: this.#port,
      timeoutMs: Math.max(this.#opTimeoutMs * 10, 5000),
    });
    const keys: string[] = [];
    for (const listed of memcachedKeys) {
      const key = keyFromMemcachedKey(listed);
      if (key !== null) {
        keys.push(key);
        continue;
      }
      const raw = await this.#run('get (metadump)', (client) => client.get(listed));
      const decoded = raw.value === null ? null : decodeEntry(raw.value);
      if (decoded !== null && decoded.keptKey !== null) keys.push(decoded.keptKey);
    }
    return keys;
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#drop(new StoreError('BACKEND_DOWN', `memcached ${this.address}: backend closed`));
  }

  #connect(): Connection {
    if (this.#connection !== null) return this.#connection;
    const client = memjs.Client.create<Buffer, Buffer | null>(this.address, {
      // memjs counts attempts: 1 means a single try, never a retry that could apply a write twice.
      retries: 1,
      failover: false,
      // memjs's own timer is a backstop behind ours.
      timeout: (this.#opTimeoutMs * 2) / 1000,
      conntimeout: this.#connectTimeoutMs / 1000,
      keepAlive: true,
      keepAliveDelay: 30,
      logger: SILENT_LOGGER,
    });
    this.#connection = { client, pending: new Set() };
    return this.#connection;
  }

  /** Drops the connection and fails every call still waiting on it. */
  #drop(error: StoreError, only?: Connection): void {
    const connection = this.#connection;
    if (connection === null || (only !== undefined && only !== connection)) return;
    this.#connection = null;
    connection.client.close();
    for (const reject of connection.pending) reject(error);
    connection.pending.clear();
  }

  async #run<T>(what: string, call: (client: Client) => Promise<T>): Promise<T> {
    if (this.#closed) {
      throw new StoreError('BACKEND_DOWN', `memcached ${this.address}: backend closed (${what})`);
    }
    await this.#acquire();
    try {
      if (this.#closed) {
        throw new StoreError('BACKEND_DOWN', `memcached ${this.address}: backend closed (${what})`);
      }
      return await this.#callBounded(what, call);
    } finally {
      this.#release();
    }
  }

  #callBounded<T>(what: string, call: (client: Client) => Promise<T>): Promise<T> {
    const connection = this.#connect();
    return new Promise<T>((resolve, reject) => {
      const settle = (error: StoreError | null, value?: T): void => {
        if (!connection.pending.delete(fail)) return; // settled already
        clearTimeout(timer);
        if (error === null) resolve(value as T);
        else reject(error);
      };
      const fail = (error: StoreError): void => settle(error);
      connection.pending.add(fail);
      const timer = setTimeout(() => {
        const error = new StoreError(
          'BACKEND_TIMEOUT',
          `memcached ${this.address} did not answer ${what} within ${this.#opTimeoutMs} ms`,
        );
        settle(error);
        this.#drop(error, connection);
      }, this.#opTimeoutMs);
      Promise.resolve(connection.client).then(call).then(
        (value) => settle(null, value),
        (cause: unknown) => {
          const error = this.#toStoreError(what, cause);
          settle(error);
          if (error.code !== 'BACKEND_FAILED') this.#drop(error, connection);
        },
      );
    });
  }

  #toStoreError(what: string, cause: unknown): StoreError {
    const message = errorMessage(cause);
    // memjs reports a memcached status (e.g. "Value too large") as "MemJS SET: …".
    if (message.startsWith('MemJS ')) {
      return new StoreError('BACKEND_FAILED', `memcached ${this.address} refused ${what}: ${message}`, {
        cause,
      });
    }
    if (message.includes('timed out')) {
      return new StoreError('BACKEND_TIMEOUT', `memcached ${this.address} timed out on ${what}: ${message}`, {
        cause,
      });
    }
    return new StoreError('BACKEND_DOWN', `memcached ${this.address} unreachable (${what}): ${message}`, {
      cause,
    });
  }

  async #acquire(): Promise<void> {
    if (this.#inFlight < this.#inFlightMax) {
      this.#inFlight += 1;
      return;
    }
    await new Promise<void>((resolve) => this.#waiting.push(resolve));
  }

  #release(): void {
    const next = this.#waiting.shift();
    if (next !== undefined) next(); // the slot passes straight to the next caller
    else this.#inFlight -= 1;
  }
}

function errorMessage(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as NodeJS.ErrnoException).code;
    return code !== undefined && !error.message.includes(code) ? `${code} ${error.message}` : error.message;
  }
  return String(error);
}

/** A key for messages: printable, truncated. */
function describeKey(key: string): string {
  const shown = JSON.stringify(key.length > 40 ? `${key.slice(0, 40)}…` : key);
  return `key ${shown}`;
}

function statsOf(client: Client): Promise<Record<string, string>> {
  return new Promise((resolve, reject) => {
    client.stats((error, _server, stats) => {
      if (error !== null) reject(error);
      else if (stats === null) reject(new Error('empty stats reply'));
      else resolve(stats);
    });
  });
}

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

function parseMetadump(text: string): string[] {
  const keys: string[] = [];
  // Lines end in "\n"; only the closing END has "\r\n".
  for (const line of text.split(/\r?\n/)) {
    const match = /^key=(\S+)/.exec(line);
    if (match === null) continue;
    // metadump URI-encodes keys; our keys are ASCII, so decodeURIComponent is exact.
    keys.push(decodeURIComponent(match[1]));
  }
  return keys;
}
