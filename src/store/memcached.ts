/**
 * The memcached backend: one replica's entries kept in one memcached, spoken to over memcached's
 * binary protocol on one pipelined connection, by a lean client of our own (./memcached-connection.ts;
 * its request frames: ./memcached-frames.ts). Each Entry is one memcached value (codec.ts), and
 * nothing that failed is ever retried. The mapping onto memcached's commands, and why not memjs:
 * docs/design.md, "The memcached backend".
 *
 * Invariants:
 * - Every method settles within about `opTimeoutMs` of being written (plus queueing behind
 *   `inFlightMax` requests); every failure is a StoreError (BACKEND_DOWN, BACKEND_TIMEOUT, BACKEND_FAILED).
 * - After a connection failure or timeout every request on it is rejected at once, and the next
 *   call connects afresh, so a restarted memcached is picked up.
 * - A store sent quietly (`setQuiet`) is done unless `onQuietFailure` is called with its failure
 *   (memcached refused it, or its connection failed before anything vouched for it); `settle`
 *   waits until every store sent quietly so far is vouched for or reported.
 * - Epoch fence: once `health().epoch` (memcached's pid and start time) has changed, every call fails
 *   with BACKEND_RESET until `acknowledgeReset()`, so no read is answered from an emptied replica.
 */

import { decodeEntry, keyFromMemcachedKey, memcachedKey } from './codec.ts';
import { OPCODE } from '../protocol/binary-header.ts';
import { BinaryConnection, ConnectionFailure, errorMessage } from './memcached-connection.ts';
import { metadump } from './memcached-metadump.ts';
import { encodeRequest, refusalOf, setFrame } from './memcached-frames.ts';
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

/** Set frames setMany encodes per turn (about 10 ms of work here). */
const SET_MANY_SLICE = 8192;
/** LRU key listings taken at most before one finds nothing new (see `keys`). */
const KEY_LISTINGS_MAX = 5;

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
  /** Whether memcached held no item when `#resetEpoch` was found (see acknowledgeReset). */
  #resetEmpty = false;
  /** What `stats settings` says, read once per epoch. */
  #settings: { epoch: string; evictsWhenFull: boolean; slab: SlabSettings; itemBytesMax: number | undefined } | null = null;
  /** flush_all commands this object sent (see BackendHealth.flushes). */
  #flushesSent = 0;
  #closed = false;
  /** Whether this memcached walks its hash table for a key listing (1.6.9 and later); false once it said it cannot. */
  #walksHash = true;
  /** Told of every quiet store that failed or may have (see setQuiet). */
  onQuietFailure: ((error: StoreError) => void) | null = null;

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

  /** The entries of distinct `keys` (undefined where absent), their gets pipelined under one promise. */
  async getMany(keys: readonly string[]): Promise<Array<Entry | undefined>> {
    const targets = keys.map(memcachedKey);
    const what = keys.length === 1 ? keys[0] ?? null : `${keys[0]} and ${keys.length - 1} more`;
    const frames = targets.map((target) => encodeRequest(OPCODE.get, target.key, null, null));
    const raws = await this.#run('get', what, (connection) => connection.requestEach(frames));
    return raws.map((raw, at) => {
      if (raw === null) return undefined;
      const decoded = decodeEntry(raw);
      if (decoded === null) return undefined; // not written by mckv: reads as absent
      // A digest collision reads as absent.
      return targets[at]?.hashed === true && decoded.keptKey !== keys[at] ? undefined : decoded.entry;
    });
  }

  /**
   * Stores `entry` as memcached's add when the key is known not to be held, else as its replace,
   * either sent again as the other when memcached held the key otherwise (see `storeOpcode`):
   * refusing them for want of memory, memcached keeps what the key held.
   */
  async set(key: string, entry: Entry, present?: KeyPresence): Promise<void> {
    await this.#call('set', key, setFrame(key, entry, present));
  }

  /**
   * The sets leave pipelined, and one promise waits for all of them. A whole replica's worth (a
   * state transfer, a snapshot) is encoded a slice per turn, so the event loop goes on between
   * slices (heartbeats, reads) instead of stopping for the hundreds of ms its frames take.
   */
  async setMany(entries: readonly KeyedPair[], present?: readonly KeyPresence[]): Promise<void> {
    const first = entries[0]?.[0] ?? null;
    const what = entries.length === 1 ? first : `${first} and ${entries.length - 1} more`;
    const sent: Array<Promise<void>> = [];
    let failed = false;
    for (let start = 0; start < entries.length && !failed; start += SET_MANY_SLICE) {
      if (start > 0) await new Promise((resolve) => setImmediate(resolve));
      const frames = entries.slice(start, start + SET_MANY_SLICE)
        .map(([key, entry], index) => setFrame(key, entry, present?.[start + index]));
      const slice = this.#run('set', what, (connection) => connection.requestAll(frames));
      // Awaited below: a slice failing while later ones are encoded is no unhandled rejection.
      slice.catch(() => (failed = true));
      sent.push(slice);
    }
    await Promise.all(sent);
  }

  /**
   * Sends a store that memcached answers only if it fails (its failure goes to `onQuietFailure`),
   * when the connection is open and verified; false, sending nothing, when it is not.
   */
  setQuiet(key: string, entry: Entry, present: KeyPresence): boolean {
    const connection = this.#ready();
    if (connection === null) return false;
    connection.requestQuiet(setFrame(key, entry, present), (cause) => this.onQuietFailure?.(this.#describe(cause, describeCall('set', key))));
    return true;
  }

  /** Resolves once every store sent quietly so far is vouched for, or its failure reported. */
  async settle(): Promise<void> {
    const connection = this.#connection;
    // A failed connection reported its quiet stores' failures as it failed.
    if (connection === null || connection.failed) return;
    await connection.settle().catch((cause: unknown) => {
      throw this.#describe(cause, 'noop');
    });
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

  acknowledgeReset(): boolean {
    if (this.#resetEpoch === null) return false;
    this.#lastEpoch = this.#resetEpoch;
    this.#resetEpoch = null;
    // Fenced since it was found empty: nothing of ours reached it. (A memcached restarted warm,
    // `-e`, may hold items: then we know nothing of what it holds.)
    return this.#resetEmpty;
  }

  /** memcached restarted (`stats` says its new `epoch`): every call fails until acknowledgeReset. */
  #fence(epoch: string, stats: Record<string, string>): void {
    this.#resetEpoch = epoch;
    this.#resetEmpty = stats.curr_items === '0';
  }

  /**
   * Checks the epoch a `stats` answer gives against the one known: the first known becomes it;
   * another one fences (false).
   */
  #checkEpoch(epoch: string, stats: Record<string, string>): boolean {
    if (this.#lastEpoch !== '' && epoch !== this.#lastEpoch) {
      this.#fence(epoch, stats);
      return false;
    }
    this.#lastEpoch = epoch;
    return true;
  }

  async health(): Promise<BackendHealth> {
    if (this.#resetEpoch !== null) {
      return { ok: true, detail: `memcached ${this.address} restarted empty; rebuilding`, epoch: this.#resetEpoch };
    }
    try {
      const stats = await this.#run('stats', null, (connection) => connection.stats());
      const epoch = epochOf(stats);
      if (!this.#checkEpoch(epoch, stats)) return { ok: true, detail: `memcached ${this.address} restarted empty; rebuilding`, epoch };
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
          slab: {
            growthFactor: Number(settings.growth_factor),
            chunkMaxBytes: Number(settings.slab_chunk_max),
            minChunkBytes: Number(settings.chunk_size),
          },
          itemBytesMax: Number.isSafeInteger(itemBytesMax) && itemBytesMax > 0 ? itemBytesMax : undefined,
        };
      }
      const { evictsWhenFull, slab, itemBytesMax } = this.#settings;
      if (memory !== undefined) {
        memory.itemBytesMax = itemBytesMax;
        const items = Number(stats.curr_items);
        if (Number.isSafeInteger(items) && items >= 0) memory.items = items;
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
   * Every key of ours stored in memcached, from `lru_crawler metadump` (text protocol, a separate
   * short-lived connection). Used to rebuild a Replica's key index at start, and for a state
   * transfer after a reset that kept memcached's contents. Fails once it lists more than
   * `keysMax`, or when the listings do not settle.
   *
   * A listing trusted whole makes a complete index, which reads any key it left out as absent. A
   * walk of the hash table lists every item held throughout. A memcached before 1.6.9 walks only
   * its LRUs, which misses items its maintainer moves between them meanwhile (20-35 of 300,000
   * right after a load, thousands right after they were all read): there the union of listings is
   * taken until one finds no key the earlier ones missed.
   */
  async keys(keysMax = Infinity): Promise<string[]> {
    const options = { host: this.#host, port: this.#port, timeoutMs: Math.max(this.#opTimeoutMs * 10, 5000), keysMax };
    const byHash = this.#walksHash ? await metadump({ ...options, walk: 'hash' }) : null;
    if (byHash === null) this.#walksHash = false;
    const listed = byHash ?? await this.#listLrus(options);
    const keys: string[] = [];
    for (const listedKey of listed) {
      const key = keyFromMemcachedKey(listedKey);
      if (key !== null) {
        keys.push(key);
        continue;
      }
      const raw = await this.#run('get (metadump)', null, (connection) => connection.request(encodeRequest(OPCODE.get, listedKey, null, null)));
      const decoded = raw === null ? null : decodeEntry(raw);
      if (decoded !== null && decoded.keptKey !== null) keys.push(decoded.keptKey);
    }
    return keys;
  }

  /** The union of LRU listings, until one finds no key the earlier ones missed (see `keys`). */
  async #listLrus(options: { host: string; port: number; timeoutMs: number; keysMax: number }): Promise<string[]> {
    const listed = new Set<string>();
    for (let listing = 1; ; listing += 1) {
      const before = listed.size;
      for (const key of (await metadump({ ...options, walk: 'lrus' })) ?? []) listed.add(key);
      if (listed.size > options.keysMax) throw new StoreError('BACKEND_FAILED', `memcached ${this.address} holds more than ${options.keysMax} keys`);
      if (listing > 1 && listed.size === before) return [...listed];
      if (listing >= KEY_LISTINGS_MAX) {
        throw new StoreError('BACKEND_FAILED', `memcached ${this.address}: ${KEY_LISTINGS_MAX} key listings in a row each found keys the others missed`);
      }
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    const connection = this.#connection;
    this.#connection = null;
    connection?.fail(new ConnectionFailure('BACKEND_DOWN', 'backend closed'));
  }

  /**
   * The connection a request may go on at once: open, not failed, not fenced, and past its epoch
   * check; null otherwise (then `#run` opens, waits for the check, or refuses). A request
   * pipelined behind a running check would reach a restarted, emptied memcached.
   */
  #ready(): BinaryConnection | null {
    const connection = this.#connection;
    if (connection === null || connection.failed || this.#closed || this.#resetEpoch !== null || this.#verifying !== null) return null;
    return connection;
  }

  /** Sends one encoded request about `key`; on the common path (a ready connection) without a closure. */
  #call(verb: string, key: string, frame: Buffer): Promise<Buffer | null> {
    const connection = this.#ready();
    if (connection === null) return this.#run(verb, key, (opened) => opened.request(frame));
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
    // Before any epoch is known, the first connection's answer becomes the one later connections
    // are checked against, so a restart between two connections is seen even before the first poll.
    const verifying = connection.stats().then((stats) => {
      const expected = this.#lastEpoch;
      const epoch = epochOf(stats);
      if (!this.#checkEpoch(epoch, stats)) {
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
  const numbers = [limitBytes, globalPool, mallocedBytes, growthFactor, chunkMaxBytes, minChunkBytes];
  if (!numbers.every(Number.isFinite) || !(growthFactor > 1)) return null;
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
  const pageBytes =
    pages + globalPool > 0 && mallocedBytes > 0 ? Math.round(mallocedBytes / (pages + globalPool)) : SLAB_PAGE_BYTES_DEFAULT;
  const freePages = Math.max(0, Math.floor((limitBytes - mallocedBytes) / pageBytes)) + globalPool;
  const table = slabClassSizes(minChunkBytes, growthFactor, chunkMaxBytes);
  const classSizes = classes.every((slab) => table[slab.id - 1] === slab.chunkBytes) ? table : null;
  return { pageBytes, freePages, chunkMaxBytes, classes, classSizes };
}

/** memcached's identity: its pid and start time. A restarted memcached has a new one. */
function epochOf(stats: Record<string, string>): string {
  return `${stats.pid}@${Number(stats.time) - Number(stats.uptime)}`;
}

/** "set key" for messages; built only when a call fails. */
function describeCall(verb: string, key: string | null): string {
  return key === null ? verb : `${verb} ${describeKey(key)}`;
}

/** A key for messages: printable, truncated. */
function describeKey(key: string): string {
  const shown = JSON.stringify(key.length > 40 ? `${key.slice(0, 40)}…` : key);
  return `key ${shown}`;
}

