/**
 * The memcached backend: one replica's entries kept in one memcached, spoken to over memcached's
 * binary protocol on one pipelined connection, by a lean client of our own (below).
 *
 * Intuition: each Entry is a single memcached value (see codec.ts), so get/set/delete map one to
 * one onto memcached commands (a set as add or replace, so that a refused one leaves the key as it
 * was: see storeOpcode) and memcached's own cas and flags are never used. Requests made in
 * one tick of the event loop leave in one socket write, and replies are matched in order (memcached
 * answers one connection's requests in order; the opaque field double-checks it). Nothing that
 * failed is ever retried (a retried write could apply twice after a lost reply); an add or replace
 * that memcached answered "exists" or "not found" changed nothing, and is sent again as the other.
 *
 * Why not memjs (the client the tests and users speak to us with): memjs writes every request
 * with its own socket write — one syscall per op, a third of a controller's CPU under load — and
 * arms a timer per request. Here one sweep timer per connection bounds every request.
 *
 * Invariants:
 * - Every method settles within about `opTimeoutMs` of being written (plus queueing behind
 *   `inFlightMax` requests); every failure is a StoreError: BACKEND_DOWN (cannot connect,
 *   connection lost), BACKEND_TIMEOUT (no answer in time) or BACKEND_FAILED (memcached refused,
 *   e.g. value too large).
 * - After a connection failure or timeout the connection is dropped, every request on it is
 *   rejected at once, and the next call connects afresh, so a restarted memcached is picked up.
 * - `health().epoch` is memcached's pid and start time, so it changes when memcached restarts.
 * - Epoch fence: once an epoch is known, every new connection first asks memcached's stats; if the
 *   epoch changed (memcached restarted empty), nothing is served from it — every call fails with
 *   BACKEND_RESET until `acknowledgeReset()` — so no read is ever answered from an emptied replica
 *   before the controller knows.
 */

import net from 'node:net';
import { performance } from 'node:perf_hooks';
import {
  decodeEntry,
  encodedEntryBytes,
  encodeEntryInto,
  keyFromMemcachedKey,
  memcachedExptimeSeconds,
  memcachedKey,
} from './codec.ts';
import { clockMs } from '../clock.ts';
import {
  BINARY_STATUS, HEADER_BYTES, OPCODE, REQUEST_MAGIC, RESPONSE_MAGIC, bodyBytesAt, readHeader, setOpaque, setOpcode, writeHeader,
} from '../protocol/binary-header.ts';
import { refused, type Refusal } from '../protocol/refusals.ts';
import { PauseWatch } from '../pause-watch.ts';
import { slabClassSizes, type SlabClass, type SlabState } from './slab-room.ts';
import { StoreError, type BackendHealth, type Entry, type KeyedPair, type KeyPresence, type KVBackend } from './types.ts';

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

/** A KVBackend kept in a memcached server. */
export class MemcachedBackend implements KVBackend {
  readonly kind = 'memcache' as const;
  readonly #host: string;
  readonly #port: number;
  readonly #opTimeoutMs: number;
  readonly #connectTimeoutMs: number;
  readonly #inFlightMax: number;
  #connection: BinaryConnection | null = null;
  /** The new connection's epoch check, while it runs. */
  #verifying: Promise<BinaryConnection> | null = null;
  #lastEpoch = '';
  /** Set when a new connection found a new epoch; cleared by acknowledgeReset. */
  #resetEpoch: string | null = null;
  /** What `stats settings` says, read once per epoch. */
  #settings: { epoch: string; evictsWhenFull: boolean; slab: SlabSettings; itemBytesMax: number | undefined } | null = null;
  /** flush_all commands this object sent (see BackendHealth.flushes). */
  #flushesSent = 0;
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
    const raw = await this.#call('get', key, encodeRequest(OPCODE.get, target.key, null, null));
    if (raw === null) return undefined;
    const decoded = decodeEntry(raw);
    if (decoded === null) return undefined; // not written by mckv: reads as absent
    if (target.hashed && decoded.keptKey !== key) return undefined; // a digest collision
    return decoded.entry;
  }

  /**
   * Stores `entry` as memcached's add when the key is known not to be held, else as its replace,
   * either sent again as the other when memcached held the key otherwise (see `storeOpcode`):
   * refusing them for want of memory, memcached keeps what the key held.
   */
  async set(key: string, entry: Entry, present?: KeyPresence): Promise<void> {
    await this.#call('set', key, setFrame(key, entry, present));
  }

  /** The sets leave in one socket write (pipelined), and one promise waits for all of them. */
  setMany(entries: readonly KeyedPair[], present?: readonly KeyPresence[]): Promise<void> {
    const frames = entries.map(([key, entry], index) => setFrame(key, entry, present?.[index]));
    const first = entries[0]?.[0] ?? null;
    const what = entries.length === 1 ? first : `${first} and ${entries.length - 1} more`;
    return this.#run('set', what, (connection) => connection.requestAll(frames));
  }

  async delete(key: string): Promise<void> {
    const target = memcachedKey(key);
    await this.#call('delete', key, encodeRequest(OPCODE.delete, target.key, null, null));
  }

  async flush(): Promise<void> {
    this.#flushesSent += 1;
    await this.#run('flush_all', null, (connection) => connection.request(encodeRequest(OPCODE.flush, '', null, null)));
  }

  /** Expects `epoch` (e.g. remembered from before a restart of the controller): a different one is a reset. */
  expectEpoch(epoch: string): void {
    if (this.#lastEpoch === '') this.#lastEpoch = epoch;
  }

  acknowledgeReset(): void {
    if (this.#resetEpoch === null) return;
    this.#lastEpoch = this.#resetEpoch;
    this.#resetEpoch = null;
  }

  async health(): Promise<BackendHealth> {
    if (this.#resetEpoch !== null) {
      return { ok: true, detail: `memcached ${this.address} restarted empty; rebuilding`, epoch: this.#resetEpoch };
    }
    try {
      const stats = await this.#run('stats', null, (connection) => connection.stats());
      const epoch = epochOf(stats);
      if (this.#lastEpoch !== '' && epoch !== this.#lastEpoch) {
        this.#resetEpoch = epoch;
        return { ok: true, detail: `memcached ${this.address} restarted empty; rebuilding`, epoch };
      }
      this.#lastEpoch = epoch;
      const detail =
        `memcached ${stats.version ?? '?'} at ${this.address}, pid ${stats.pid}, ` +
        `${stats.curr_items ?? '?'} items, ${stats.bytes ?? '?'} bytes`;
      const usedBytes = Number(stats.bytes);
      const limitBytes = Number(stats.limit_maxbytes);
      const memory: BackendHealth['memory'] = Number.isFinite(usedBytes) && limitBytes > 0 ? { usedBytes, limitBytes } : undefined;
      const evictions = Number(stats.evictions);
      const flushes = Number(stats.cmd_flush);
      if (this.#settings?.epoch !== epoch) {
        const settings = await this.#run('stats settings', null, (connection) => connection.stats('settings'));
        const itemBytesMax = Number(settings.item_size_max);
        this.#settings = {
          epoch,
          evictsWhenFull: settings.evictions === 'on',
          slab: { growthFactor: Number(settings.growth_factor), chunkMaxBytes: Number(settings.slab_chunk_max), minChunkBytes: Number(settings.chunk_size) },
          itemBytesMax: Number.isSafeInteger(itemBytesMax) && itemBytesMax > 0 ? itemBytesMax : undefined,
        };
      }
      const { evictsWhenFull, slab, itemBytesMax } = this.#settings;
      if (memory !== undefined) {
        memory.itemBytesMax = itemBytesMax;
        const slabs = await this.#run('stats slabs', null, (connection) => connection.stats('slabs'));
        memory.slabs = slabStateOf(stats, slabs, slab) ?? undefined;
      }
      return {
        ok: true,
        detail,
        epoch: this.#lastEpoch,
        memory,
        evictions: Number.isFinite(evictions) ? evictions : undefined,
        evictsWhenFull,
        flushes: Number.isFinite(flushes) ? { total: flushes, ours: this.#flushesSent } : undefined,
      };
    } catch (error) {
      const resetEpoch = this.#resetEpoch;
      if (resetEpoch !== null) {
        // The new connection's epoch check found the restart.
        return { ok: true, detail: `memcached ${this.address} restarted empty; rebuilding`, epoch: resetEpoch };
      }
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
      const raw = await this.#run('get (metadump)', null, (connection) => connection.request(encodeRequest(OPCODE.get, listed, null, null)));
      const decoded = raw === null ? null : decodeEntry(raw);
      if (decoded !== null && decoded.keptKey !== null) keys.push(decoded.keptKey);
    }
    return keys;
  }

  async close(): Promise<void> {
    this.#closed = true;
    const connection = this.#connection;
    this.#connection = null;
    connection?.fail(new ConnectionFailure('BACKEND_DOWN', 'backend closed'));
  }

  /** Sends one encoded request about `key`; on the common path (connection open) without a closure. */
  #call(verb: string, key: string, frame: Buffer): Promise<Buffer | null> {
    const connection = this.#closed || this.#resetEpoch !== null ? null : this.#connection;
    if (connection === null || connection.failed) return this.#run(verb, key, (opened) => opened.request(frame));
    return connection.request(frame).catch((cause: unknown) => {
      throw this.#describe(cause, describeCall(verb, key));
    });
  }

  /** Runs `call` on an open, verified connection; failures are worded with the verb and key. */
  #run<T>(verb: string, key: string | null, call: (connection: BinaryConnection) => Promise<T>): Promise<T> {
    const what = describeCall(verb, key);
    if (this.#closed) return Promise.reject(this.#closedError(what));
    if (this.#resetEpoch !== null) {
      return Promise.reject(new StoreError('BACKEND_RESET', `memcached ${this.address} restarted empty; the replica is being rebuilt (${what})`));
    }
    const connection = this.#open();
    const result = connection instanceof Promise ? connection.then(call) : call(connection);
    return result.catch((cause: unknown) => {
      throw this.#describe(cause, what);
    });
  }

  #closedError(what: string): StoreError {
    return new StoreError('BACKEND_DOWN', `memcached ${this.address}: backend closed (${what})`);
  }

  /** The connection's failure, worded with what was asked. */
  #describe(cause: unknown, what: string): StoreError {
    if (!(cause instanceof ConnectionFailure)) {
      return cause instanceof StoreError ? cause : new StoreError('BACKEND_DOWN', `memcached ${this.address}: ${errorMessage(cause)} (${what})`, { cause });
    }
    switch (cause.code) {
      case 'BACKEND_FAILED':
        return new StoreError('BACKEND_FAILED', `memcached ${this.address} refused ${what}: ${cause.message}`, {
          cause,
          untouched: cause.untouched,
          refusal: cause.untouched ? refusalOf(cause.status) : undefined,
        });
      case 'BACKEND_TIMEOUT':
        return new StoreError('BACKEND_TIMEOUT', `memcached ${this.address} did not answer ${what} within ${this.#opTimeoutMs} ms`, { cause });
      case 'BACKEND_DOWN':
        return new StoreError('BACKEND_DOWN', `memcached ${this.address} unreachable (${what}): ${cause.message}`, { cause });
      case 'BACKEND_RESET':
        return new StoreError('BACKEND_RESET', `memcached ${this.address} ${cause.message}; the replica is being rebuilt (${what})`, { cause });
      default: {
        const unreachable: never = cause.code;
        return unreachable;
      }
    }
  }

  /** The live connection, or a fresh one after a failure (checked against the known epoch first). */
  #open(): BinaryConnection | Promise<BinaryConnection> {
    const current = this.#connection;
    if (current !== null && !current.failed) return this.#verifying ?? current;
    const connection = new BinaryConnection({
      host: this.#host,
      port: this.#port,
      opTimeoutMs: this.#opTimeoutMs,
      connectTimeoutMs: this.#connectTimeoutMs,
      inFlightMax: this.#inFlightMax,
    });
    this.#connection = connection;
    const expected = this.#lastEpoch;
    if (expected === '') {
      this.#verifying = null;
      return connection;
    }
    const verifying = connection.stats().then((stats) => {
      const epoch = epochOf(stats);
      if (epoch !== expected) {
        this.#resetEpoch = epoch;
        const failure = new ConnectionFailure('BACKEND_RESET', `restarted empty (epoch ${expected} → ${epoch})`);
        connection.fail(failure);
        throw failure;
      }
      if (this.#verifying === verifying) this.#verifying = null;
      return connection;
    });
    verifying.catch(() => {
      if (this.#verifying === verifying) this.#verifying = null;
    });
    this.#verifying = verifying;
    return verifying;
  }
}

/** Bytes of a memcached slab page when nothing tells (memcached's default). */
const SLAB_PAGE_BYTES_DEFAULT = 1024 * 1024;

/** What `stats settings` says of memcached's size classes (growth_factor, slab_chunk_max, chunk_size). */
export interface SlabSettings {
  growthFactor: number;
  chunkMaxBytes: number;
  minChunkBytes: number;
}

/**
 * memcached's slab state from its general stats and `stats slabs` (per class "N:chunk_size",
 * "N:free_chunks", "N:total_pages"; "total_malloced"); null when something needed is missing.
 */
export function slabStateOf(stats: Record<string, string>, slabs: Record<string, string>, settings: SlabSettings): SlabState | null {
  const limitBytes = Number(stats.limit_maxbytes);
  const globalPool = Number(stats.slab_global_page_pool ?? 0);
  const mallocedBytes = Number(slabs.total_malloced);
  const { growthFactor, chunkMaxBytes, minChunkBytes } = settings;
  if (![limitBytes, globalPool, mallocedBytes, growthFactor, chunkMaxBytes, minChunkBytes].every(Number.isFinite) || !(growthFactor > 1)) return null;
  const classes: SlabClass[] = [];
  let pages = 0;
  for (const [name, value] of Object.entries(slabs)) {
    const match = /^(\d+):chunk_size$/.exec(name);
    if (match === null) continue;
    const id = Number(match[1]);
    const freeChunks = Number(slabs[`${id}:free_chunks`]);
    const chunkBytes = Number(value);
    if (!Number.isFinite(freeChunks) || !(chunkBytes > 0)) return null;
    classes.push({ id, chunkBytes, freeChunks });
    pages += Number(slabs[`${id}:total_pages`] ?? 0);
  }
  // Pages are of one size; infer it from what was malloced for them (memcached does not list it).
  const pageBytes = pages + globalPool > 0 && mallocedBytes > 0 ? Math.round(mallocedBytes / (pages + globalPool)) : SLAB_PAGE_BYTES_DEFAULT;
  const freePages = Math.max(0, Math.floor((limitBytes - mallocedBytes) / pageBytes)) + globalPool;
  const table = slabClassSizes(minChunkBytes, growthFactor, chunkMaxBytes);
  const classSizes = classes.every((slab) => table[slab.id - 1] === slab.chunkBytes) ? table : null;
  return { pageBytes, freePages, chunkMaxBytes, classes, classSizes };
}

/** memcached's identity: its pid and start time. A restarted memcached has a new one. */
function epochOf(stats: Record<string, string>): string {
  return `${stats.pid}@${Number(stats.time) - Number(stats.uptime)}`;
}

// ---------------------------------------------------------------------------------------------
// A lean binary-protocol client: one socket, requests written in batches, replies in order.

const SET_EXTRAS_BYTES = 8;
/** An add or replace that found the key otherwise than expected is sent again as the other, this often at most, then as a set. */
const STORE_SWITCHES_MAX = 2;
/** Largest reply body accepted (memcached's item size limit is far below). */
const BODY_BYTES_MAX = 256 * 1024 * 1024;

function isUntouched(error: Error): boolean {
  return error instanceof ConnectionFailure && error.untouched;
}

/** A connection-level failure; the backend rewords it with what was asked. */
class ConnectionFailure extends Error {
  override readonly name = 'ConnectionFailure';
  constructor(
    readonly code: StoreError['code'],
    message: string,
    /** See StoreError.untouched. */
    readonly untouched = false,
    /** memcached's status, for a refusal. */
    readonly status: number | null = null,
  ) {
    super(message);
  }
}

/** One request on the wire (or waiting for a slot), settled by its reply or the connection's failure. */
interface Pending {
  opaque: number;
  opcode: number;
  frame: Buffer;
  /** When it was written, ms (monotonic); 0 while it waits for a slot. */
  writtenAtMs: number;
  resolve: (value: Buffer | null) => void;
  reject: (error: Error) => void;
  /** For stats: the pairs gathered so far. */
  stats: Record<string, string> | null;
  resolveStats: ((stats: Record<string, string>) => void) | null;
  /** How often an add or replace was sent again as the other (see STORE_SWITCHES_MAX). */
  switches?: number;
}

interface BinaryConnectionOptions {
  host: string;
  port: number;
  opTimeoutMs: number;
  connectTimeoutMs: number;
  inFlightMax: number;
}

/** One pipelined connection to memcached. Once failed it stays failed; the backend opens another. */
class BinaryConnection {
  failed = false;
  readonly #options: BinaryConnectionOptions;
  readonly #socket: net.Socket;
  /** Written, awaiting replies, in write order; `#head` is the oldest. */
  #inFlight: Pending[] = [];
  #head = 0;
  /** Waiting for a slot (more than inFlightMax on the wire). */
  #backlog: Pending[] = [];
  #backlogHead = 0;
  /** Frames to write at the end of this tick. */
  #outgoing: Buffer[] = [];
  #flushScheduled = false;
  #received: Buffer | null = null;
  #nextOpaque = 1;
  #connected = false;
  readonly #sweepTimer: NodeJS.Timeout;
  /** When memcached last answered anything, or the oldest request left, whichever is later. */
  #progressAtMs = performance.now();
  /** Tells when the sweep timer ran late because this process was not running. */
  readonly #pauses: PauseWatch;
  #verdictPending = false;

  constructor(options: BinaryConnectionOptions) {
    this.#options = options;
    const socket = net.connect({ host: options.host, port: options.port });
    this.#socket = socket;
    socket.setNoDelay(true);
    socket.setTimeout(options.connectTimeoutMs, () => {
      if (!this.#connected) this.fail(new ConnectionFailure('BACKEND_DOWN', `connect timed out after ${options.connectTimeoutMs} ms`));
    });
    socket.on('connect', () => {
      this.#connected = true;
      socket.setTimeout(0);
      socket.setKeepAlive(true, 30_000);
    });
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('error', (error) => this.fail(new ConnectionFailure('BACKEND_DOWN', errorMessage(error))));
    socket.on('close', () => this.fail(new ConnectionFailure('BACKEND_DOWN', 'connection closed')));
    const sweepMs = Math.max(5, Math.floor(options.opTimeoutMs / 4));
    this.#pauses = new PauseWatch({ intervalMs: sweepMs, nowMs: performance.now() });
    this.#sweepTimer = setInterval(() => this.#sweep(), sweepMs);
    this.#sweepTimer.unref();
  }

  /** Sends one request (a frame from encodeRequest); resolves with the reply's value (null for key not found). */
  request(frame: Buffer): Promise<Buffer | null> {
    return new Promise<Buffer | null>((resolve, reject) => {
      this.#submit({ opaque: 0, opcode: frame[1], frame, writtenAtMs: 0, resolve, reject, stats: null, resolveStats: null });
    });
  }

  /** Sends every frame; resolves once all are answered, rejecting with the first failure. */
  requestAll(frames: readonly Buffer[]): Promise<void> {
    if (frames.length === 0) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      let unanswered = frames.length;
      // Settled once every frame is answered: the batch left every key untouched only if each
      // refusal in it did, so the failure kept is the first that did not, else the first.
      let failure: Error | null = null;
      const answered = (): void => {
        unanswered -= 1;
        if (unanswered > 0) return;
        if (failure === null) resolve();
        else reject(failure);
      };
      const failed = (error: Error): void => {
        if (failure === null || (isUntouched(failure) && !isUntouched(error))) failure = error;
        answered();
      };
      for (const frame of frames) {
        this.#submit({ opaque: 0, opcode: frame[1], frame, writtenAtMs: 0, resolve: answered, reject: failed, stats: null, resolveStats: null });
      }
    });
  }

  /** memcached's stats: the general ones, or a group's (`settings`, `slabs`, …). */
  stats(group = ''): Promise<Record<string, string>> {
    return new Promise<Record<string, string>>((resolveStats, reject) => {
      const frame = encodeRequest(OPCODE.stat, group, null, null);
      const pending: Pending = { opaque: 0, opcode: OPCODE.stat, frame, writtenAtMs: 0, resolve: ignoreValue, reject, stats: {}, resolveStats };
      this.#submit(pending);
    });
  }

  /** Fails every request and closes the socket. */
  fail(error: ConnectionFailure): void {
    if (this.failed) return;
    this.failed = true;
    clearInterval(this.#sweepTimer);
    this.#socket.destroy();
    const everyone = [...this.#inFlight.slice(this.#head), ...this.#backlog.slice(this.#backlogHead)];
    this.#inFlight = [];
    this.#backlog = [];
    this.#head = 0;
    this.#backlogHead = 0;
    this.#outgoing = [];
    for (const pending of everyone) pending.reject(error);
  }

  #submit(pending: Pending): void {
    if (this.failed) {
      pending.reject(new ConnectionFailure('BACKEND_DOWN', 'connection closed'));
      return;
    }
    pending.opaque = this.#nextOpaque;
    this.#nextOpaque = (this.#nextOpaque + 1) >>> 0;
    setOpaque(pending.frame, pending.opaque);
    if (this.#inFlight.length - this.#head >= this.#options.inFlightMax) this.#backlog.push(pending);
    else this.#write(pending);
  }

  #write(pending: Pending): void {
    pending.writtenAtMs = performance.now();
    this.#inFlight.push(pending);
    this.#outgoing.push(pending.frame);
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(() => this.#flush());
    }
  }

  /** Writes every frame of this tick in one socket write. */
  #flush(): void {
    this.#flushScheduled = false;
    if (this.failed || this.#outgoing.length === 0) return;
    const frames = this.#outgoing;
    this.#outgoing = [];
    this.#socket.write(frames.length === 1 ? frames[0] : Buffer.concat(frames));
  }

  #onData(chunk: Buffer): void {
    let buffer = this.#received === null ? chunk : Buffer.concat([this.#received, chunk]);
    let offset = 0;
    while (!this.failed && buffer.length - offset >= HEADER_BYTES) {
      if (buffer[offset] !== RESPONSE_MAGIC) {
        this.fail(new ConnectionFailure('BACKEND_DOWN', 'garbled reply (bad magic)'));
        return;
      }
      const bodyBytes = bodyBytesAt(buffer, offset);
      if (bodyBytes > BODY_BYTES_MAX) {
        this.fail(new ConnectionFailure('BACKEND_DOWN', `garbled reply (body of ${bodyBytes} bytes)`));
        return;
      }
      if (buffer.length - offset < HEADER_BYTES + bodyBytes) break;
      this.#onReply(buffer, offset);
      offset += HEADER_BYTES + bodyBytes;
    }
    if (this.failed) return;
    if (offset === buffer.length) buffer = EMPTY;
    this.#received = buffer.length === 0 ? null : buffer.subarray(offset);
  }

  /** Settles the oldest request with the reply at `offset` (a complete one). */
  #onReply(buffer: Buffer, offset: number): void {
    this.#progressAtMs = performance.now();
    const pending = this.#inFlight[this.#head];
    const { opaque, keyBytes, extrasBytes, status, bodyBytes } = readHeader(buffer, offset);
    if (pending === undefined || pending.opaque !== opaque) {
      this.fail(new ConnectionFailure('BACKEND_DOWN', 'reply out of order'));
      return;
    }
    const bodyStart = offset + HEADER_BYTES;
    const bodyEnd = bodyStart + bodyBytes;
    const valueStart = bodyStart + extrasBytes + keyBytes;
    if (pending.stats !== null && status === BINARY_STATUS.ok && keyBytes > 0) {
      // One stat per packet; the list ends with an empty key.
      pending.stats[buffer.toString('latin1', bodyStart + extrasBytes, valueStart)] = buffer.toString('latin1', valueStart, bodyEnd);
      return;
    }
    this.#retire();
    const retryAs = status === BINARY_STATUS.ok ? null : storeRetry(pending, status);
    if (retryAs !== null) {
      // memcached held the key otherwise than the replica thought (an item expired, another
      // client wrote it): the same write, as the other command.
      setOpcode(pending.frame, retryAs);
      pending.opcode = retryAs;
      pending.switches = (pending.switches ?? 0) + 1;
      this.#submit(pending);
    } else if (status === BINARY_STATUS.ok) {
      if (pending.resolveStats !== null && pending.stats !== null) pending.resolveStats(pending.stats);
      else pending.resolve(pending.opcode === OPCODE.get ? buffer.subarray(valueStart, bodyEnd) : null);
    } else if (status === BINARY_STATUS.keyNotFound && (pending.opcode === OPCODE.get || pending.opcode === OPCODE.delete)) {
      pending.resolve(null);
    } else {
      const message = buffer.toString('latin1', valueStart, bodyEnd);
      // Refusing a set, memcached unlinks the key's old item; refusing anything else, it changes nothing.
      const untouched = pending.opcode !== OPCODE.set;
      pending.reject(new ConnectionFailure('BACKEND_FAILED', `status ${status}${message === '' ? '' : ` (${message})`}`, untouched, status));
    }
  }

  /** Removes the oldest in-flight request and lets one waiting request take its slot. */
  #retire(): void {
    this.#head += 1;
    if (this.#head === this.#inFlight.length) {
      this.#inFlight = [];
      this.#head = 0;
    } else if (this.#head > 1024 && this.#head * 2 > this.#inFlight.length) {
      this.#inFlight = this.#inFlight.slice(this.#head);
      this.#head = 0;
    }
    if (this.#backlogHead < this.#backlog.length) {
      const next = this.#backlog[this.#backlogHead];
      this.#backlogHead += 1;
      if (this.#backlogHead === this.#backlog.length) {
        this.#backlog = [];
        this.#backlogHead = 0;
      }
      this.#write(next);
    }
  }

  /**
   * The connection is stuck when memcached has answered nothing for `opTimeoutMs` since the oldest
   * request left: it answers in order, so a deep pipeline whose replies keep coming is slow, not
   * stuck. Time this process itself was not running does not count, and the verdict waits until
   * the replies already in the socket have been read (the check phase runs after the poll phase).
   */
  #sweep(): void {
    const nowMs = performance.now();
    this.#progressAtMs += this.#pauses.observe(nowMs);
    if (this.#verdictPending || !this.#overdue(nowMs)) return;
    this.#verdictPending = true;
    setImmediate(() => {
      this.#verdictPending = false;
      if (!this.failed && this.#overdue(performance.now())) {
        this.fail(new ConnectionFailure('BACKEND_TIMEOUT', `no answer within ${this.#options.opTimeoutMs} ms`));
      }
    });
  }

  #overdue(nowMs: number): boolean {
    const oldest = this.#inFlight[this.#head];
    if (oldest === undefined) return false;
    return nowMs - Math.max(oldest.writtenAtMs, this.#progressAtMs) > this.#options.opTimeoutMs;
  }
}

/** The binary store request of `key` (its memcached key, and our key kept in the value if hashed). */
function setFrame(key: string, entry: Entry, present: KeyPresence): Buffer {
  const target = memcachedKey(key);
  return encodeSetRequest(storeOpcode(present), target.key, entry, target.hashed ? key : null);
}

/**
 * The command that stores an entry: add for a key memcached does not hold, else replace (a wrong
 * guess costs one more round trip: see storeRetry). Never a plain set, though all three write the
 * same item: they differ in what a refusal leaves. memcached drops the key's old item when it
 * cannot store a set ("to avoid stale data"), and leaves it when it refuses an add or a replace;
 * so a replica whose write memcached refused for want of memory still holds what it held, and
 * replaying its log onto it repairs it once memory is freed.
 */
function storeOpcode(present: KeyPresence): number {
  return present === false ? OPCODE.add : OPCODE.replace;
}

/** The refusal memcached's binary `status` for a store says, if it says what happened. */
function refusalOf(status: number | null): Refusal | undefined {
  if (status === BINARY_STATUS.outOfMemory) return refused('out_of_memory');
  if (status === BINARY_STATUS.valueTooLarge) return refused('too_large');
  return undefined;
}

/** The command to send a store again as, when memcached answered `status` because the key was (not) there; else null. */
function storeRetry(pending: Pending, status: number): number | null {
  const mismatch =
    (pending.opcode === OPCODE.replace && status === BINARY_STATUS.keyNotFound) || (pending.opcode === OPCODE.add && status === BINARY_STATUS.keyExists);
  if (!mismatch) return null;
  if ((pending.switches ?? 0) >= STORE_SWITCHES_MAX) return OPCODE.set;
  return pending.opcode === OPCODE.replace ? OPCODE.add : OPCODE.replace;
}

const EMPTY = Buffer.alloc(0);
const ignoreValue = (): void => {};

/** One binary-protocol request frame. Keys are latin1 (one byte per char; ours are ASCII). */
/** A request frame; the connection fills in the opaque when it sends it. */
function encodeRequest(opcode: number, key: string, extras: Buffer | null, value: Buffer | null): Buffer {
  const extrasBytes = extras === null ? 0 : extras.length;
  const valueBytes = value === null ? 0 : value.length;
  const frame = requestHeader(opcode, key, extrasBytes, valueBytes);
  let offset = HEADER_BYTES;
  if (extras !== null) offset += extras.copy(frame, offset);
  offset += frame.write(key, offset, 'latin1');
  if (value !== null) value.copy(frame, offset);
  return frame;
}

/** A store (set, add or replace: `opcode`) of `entry` under `memcachedKeyText`, encoded straight into the frame (one copy of the value). */
function encodeSetRequest(opcode: number, memcachedKeyText: string, entry: Entry, keptKey: string | null): Buffer {
  const frame = requestHeader(opcode, memcachedKeyText, SET_EXTRAS_BYTES, encodedEntryBytes(entry, keptKey));
  frame.writeUInt32BE(0, HEADER_BYTES); // memcached flags: unused, ours are in the value
  frame.writeUInt32BE(memcachedExptimeSeconds(entry.expiresAtMs, clockMs()), HEADER_BYTES + 4);
  const keyAt = HEADER_BYTES + SET_EXTRAS_BYTES;
  frame.write(memcachedKeyText, keyAt, 'latin1');
  encodeEntryInto(frame, keyAt + memcachedKeyText.length, entry, keptKey);
  return frame;
}

/** A frame with its request header written and room for the body. */
function requestHeader(opcode: number, key: string, extrasBytes: number, valueBytes: number): Buffer {
  const bodyBytes = extrasBytes + key.length + valueBytes;
  const frame = Buffer.allocUnsafe(HEADER_BYTES + bodyBytes);
  // vbucket 0, cas unused; the opaque is set when the frame is sent.
  writeHeader(frame, { magic: REQUEST_MAGIC, opcode, keyBytes: key.length, extrasBytes, bodyBytes });
  return frame;
}

/** "set key" for messages; built only when a call fails. */
function describeCall(verb: string, key: string | null): string {
  return key === null ? verb : `${verb} ${describeKey(key)}`;
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
