/**
 * The local replica: carries out a mode's store effects (`apply`, `read`, `put`, `fetch`, `purge`,
 * `reset`) on a KVBackend that may answer out of order. This class fixes when each call runs, one
 * promise chain per key (./key-order.ts), and whether it may (trust); ./replica-core.ts does the
 * work on the backend, the key index and the value cache. How and why, tombstones and the cache's
 * rules included: docs/design.md, "The replica and its value cache".
 *
 * Invariants:
 * - Calls on one key take effect in call order; barriers (flush_all, reset, a fetch of every key)
 *   are ordered against all calls. The order is fixed synchronously, when the method is called.
 * - A failed call rejects with the backend's StoreError and does not stop the chain.
 * - While suspect, and for calls issued before the last acknowledged reset, every call is refused.
 * - The index and cache invariants are ./replica-core.ts's.
 */

import type { Reply } from '../protocol/types.ts';
import { sortInTurns } from '../runtime/turns.ts';
import { applyToEntry, isSingleKeyOp, type ApplyContext } from './apply.ts';
import { KeyOrder } from './key-order.ts';
import { ReplicaCore } from './replica-core.ts';
import { valuesReply, type CacheUsage, type IndexRecord } from './replica-records.ts';
import { StoreError, type BackendHealth, type Entry, type KeyedEntry, type KVBackend, type Op } from './types.ts';

export type { CacheUsage, IndexRecord } from './replica-records.ts';

/** Keys a fetch of every key reads at a time (see #fetchEvery). */
const FETCH_PAGE_KEYS = 512;

/** A paced read's slice (see readPaced): at least this many entries, or the rest... */
const PACED_SLICE_ENTRIES = 16_384;
/** ...or this many bytes of keys and values, whichever comes first. */
const PACED_SLICE_BYTES = 4 * 1024 * 1024;

/** Entries a large put in key order decides and writes per turn (see #putSliced). */
const PUT_SLICE_ENTRIES = 16_384;

/** Whether every key comes after the one before it: distinct, in order (one pass, no hashing). */
function inKeyOrder(entries: readonly KeyedEntry[]): boolean {
  for (let index = 1; index < entries.length; index += 1) {
    if (!((entries[index - 1] as KeyedEntry)[0] < (entries[index] as KeyedEntry)[0])) return false;
  }
  return true;
}

/** Default bound of a replica's value cache: 64 MiB. */
export const CACHE_BYTES_MAX_DEFAULT = 64 * 1024 * 1024;

/** Options of a Replica. */
/** How `Replica.fetch` reads. */
export interface FetchOptions {
  /** Every key's read a page at a time, as a `skip-applied` replica does, for a caller that makes its own cut. */
  paged?: boolean;
  /**
   * Each entry without its value (an empty one): its version, expiry, flags, tombstone and counter
   * metadata only. For a mode that reads every key at start to learn what the replica holds: the
   * values of millions of keys were held until the read was in, only to be dropped.
   */
  versionsOnly?: boolean;
}

/** A read of every key handed over a slice at a time, each when its reader asks (Replica.readPaced). */
export interface PacedRead {
  /** The next slice, in key order, and whether it is the last; asked again only once it resolved. */
  next(): Promise<{ entries: KeyedEntry[]; done: boolean }>;
}

export interface ReplicaOptions {
  /** Keep deletes as tombstones (eventual mode). */
  tombstones: boolean;
  /** Most backend calls one barrier runs at once (default 64). */
  barrierConcurrency?: number;
  /**
   * `skip-applied` (the replicated log modes, where cas = the log index of the last change): an
   * op is skipped when its key already holds a cas ≥ the op's, and flush_all removes only entries
   * with a smaller cas, so replaying log entries onto a replica that already has them is
   * idempotent. Default `plain`.
   */
  replay?: 'plain' | 'skip-applied';
  /** Bound of the value cache in bytes; 0 disables it (default `CACHE_BYTES_MAX_DEFAULT`). */
  cacheBytesMax?: number;
  /** The longest value an append or prepend may make (see applyToEntry); default unbounded. */
  valueBytesMax?: number;
  /**
   * Whether a write memcached refused without touching its keys (StoreError.untouched: no memory
   * for it) leaves the replica trusted: the keys hold what they held, and the mode re-reads them
   * (eventual mode). Default false: the replica is suspect until the mode is told (the log modes
   * replay their log onto it, in order).
   */
  refusalsKeepTrust?: boolean;
  /**
   * Send an apply's store quietly when the backend can (KVBackend.setQuiet): the apply is done
   * without waiting for memcached's reply, and a failure reported later makes the replica suspect
   * and goes to `onStoreLost`. For the log modes, whose replays repair what such a failure missed.
   * Default false.
   */
  quietApplies?: boolean;
  /**
   * The most keys this replica lists from its backend (loadIndex, and fetchAll after a reset that
   * kept the backend's contents): a backend holding more fails the listing (controller/key-room.ts).
   * Default unbounded.
   */
  keysMax?: number;
}

/** One replica's storage, carrying out a mode's effects in order. */
export class Replica {
  readonly #backend: KVBackend;
  readonly #order = new KeyOrder();
  readonly #core: ReplicaCore;
  /**
   * Why this replica can no longer be trusted (a write to the backend failed, so it may have
   * missed one), or null. While set, every call fails: nothing is served from a replica that
   * may be stale, until the controller has told the mode and calls `acknowledgeReset`.
   */
  #suspect: string | null = null;
  /** Counts acknowledged resets; a call runs only in the generation it was issued in. */
  #generation = 0;
  readonly #refusalsKeepTrust: boolean;
  /** `skip-applied`: a fetch of every key may read key by key (see #fetchEvery). */
  readonly #skipsApplied: boolean;
  /** Told of each quiet store that failed or may have: the replica may have missed it. */
  onStoreLost: ((error: StoreError) => void) | null = null;

  constructor(backend: KVBackend, options: ReplicaOptions) {
    this.#backend = backend;
    this.#refusalsKeepTrust = options.refusalsKeepTrust ?? false;
    const quietApplies = options.quietApplies === true && backend.setQuiet !== undefined;
    if (quietApplies) {
      backend.onQuietFailure = (error) => {
        this.#distrust(error);
        this.onStoreLost?.(error);
      };
    }
    this.#skipsApplied = options.replay === 'skip-applied';
    this.#core = new ReplicaCore(backend, {
      tombstones: options.tombstones,
      skipApplied: options.replay === 'skip-applied',
      barrierConcurrency: options.barrierConcurrency ?? 64,
      cacheBytesMax: options.cacheBytesMax ?? CACHE_BYTES_MAX_DEFAULT,
      valueBytesMax: options.valueBytesMax ?? Number.POSITIVE_INFINITY,
      quietApplies,
      keysMax: options.keysMax ?? Number.POSITIVE_INFINITY,
    });
  }

  /** The backend this replica writes to. */
  get backend(): KVBackend {
    return this.#backend;
  }

  /** Why the replica is not trusted (a backend write failed), or null. */
  get suspect(): string | null {
    return this.#suspect;
  }

  /**
   * The controller has told the mode that this replica lost writes or its contents: trust it
   * again, as empty (the mode rebuilds it), and accept the backend's new epoch.
   */
  acknowledgeReset(): void {
    const empty = this.#backend.acknowledgeReset?.() === true;
    // Calls issued before this point were meant for the replica as it was: they are refused
    // when their turn comes, never run against the emptied one (their results would be wrong).
    this.#generation += 1;
    this.#suspect = null;
    this.#core.forgetContents(empty);
  }

  /**
   * Runs a call that reads only: refused while suspect. A read that finds the backend emptied
   * (BACKEND_RESET) makes the replica suspect too: the cache must not answer for it any more.
   * `trustedThroughout`: it also fails if the replica became suspect while it ran.
   */
  #reading<T>(call: () => Promise<T>, trustedThroughout = false): () => Promise<T> {
    const issuedIn = this.#generation;
    return () => {
      if (this.#suspect !== null || issuedIn !== this.#generation) return Promise.reject(this.#suspectError());
      const read = call().catch((error: unknown) => {
        if (error instanceof StoreError && error.code === 'BACKEND_RESET') this.#distrust(error);
        throw error;
      });
      if (!trustedThroughout) return read;
      // A fetch says what the replica holds: not if a quiet store before it failed meanwhile.
      return read.then((result) => {
        if (this.#suspect !== null || issuedIn !== this.#generation) throw this.#suspectError();
        return result;
      });
    };
  }

  /**
   * Runs a call that writes: refused while suspect; its failure makes the replica suspect, but
   * for a refusal that left the keys as they were, when refusals keep trust. The write already
   * left those keys uncached and their index records unsettled (see ReplicaCore), so they are
   * read from the backend again.
   */
  #writing<T>(call: () => Promise<T>): () => Promise<T> {
    const issuedIn = this.#generation;
    return () => {
      if (this.#suspect !== null || issuedIn !== this.#generation) return Promise.reject(this.#suspectError());
      return call().catch((error: unknown) => {
        if (!(this.#refusalsKeepTrust && error instanceof StoreError && error.untouched)) this.#distrust(error);
        throw error;
      });
    };
  }

  /** The backend may not hold what this replica wrote: refuse everything, trust no cached entry. */
  #distrust(error: unknown): void {
    this.#core.clearCache();
    this.#suspect ??= error instanceof Error ? error.message : String(error);
  }

  #suspectError(): StoreError {
    return new StoreError('BACKEND_RESET', `replica may have missed writes (${this.#suspect ?? 'it was reset'}); rebuilding it`);
  }

  /** Applies any op with version `ctx.cas` as of `ctx.nowMs`; resolves to the client's reply. */
  apply(op: Op, ctx: ApplyContext): Promise<Reply> {
    switch (op.kind) {
      case 'store':
      case 'arith':
      case 'delete':
      case 'touch':
        return this.#order.keyed([op.key], this.#writing(() => this.#core.applySingle(op, ctx)));
      case 'get':
        return this.#order.keyed(op.keys, this.#reading(() => this.#core.readValues(op.keys, ctx.nowMs)));
      case 'gat':
        return this.#order.keyed(op.keys, this.#writing(() => this.#core.getAndTouch(op, ctx)));
      case 'flush_all':
        return this.#order.barrier(this.#writing(() => this.#core.flushAll(op.delayMs, ctx)));
      default: {
        // Ops come from logs and peers: an unknown one is refused, never thrown (see applyToEntry).
        const unknown: never = op;
        return Promise.resolve(applyToEntry(undefined, unknown, ctx).reply);
      }
    }
  }

  /**
   * Applies a one-key op at once, when it can: trusted, nothing issued earlier on its key still
   * running, and nothing to wait for (see ReplicaCore.applySingleNow). Otherwise null, and the
   * caller uses `apply`. Same reply and writes as `apply` would give, without a promise.
   */
  applyNow(op: Op, ctx: ApplyContext): Reply | null {
    if (!isSingleKeyOp(op) || this.#suspect !== null || !this.#order.idleKey(op.key)) return null;
    try {
      return this.#core.applySingleNow(op, ctx);
    } catch (error) {
      // As `#writing` would: the write may have gone; `apply` now refuses, telling the caller.
      this.#distrust(error);
      return null;
    }
  }

  /** Serves a get after every earlier call on its keys: items with cas, in key order. */
  read(op: Op, nowMs: number): Promise<Reply> {
    if (op.kind !== 'get') throw new Error(`Replica.read: expected a get, got ${op.kind}`);
    return this.#order.keyed(op.keys, this.#reading(() => this.#core.readValues(op.keys, nowMs)));
  }

  /**
   * Serves a get at once, when it can: nothing issued earlier on its keys is still running and
   * the cache or the index knows every key. Otherwise null, and the caller uses `read`. Same
   * answer as `read` would give, without a promise or a turn of the event loop.
   */
  readNow(op: Op, nowMs: number): Reply | null {
    if (op.kind !== 'get' || this.#suspect !== null || !this.#order.idle(op.keys)) return null;
    const core = this.#core;
    const entries: Array<Entry | undefined> = [];
    for (const key of op.keys) {
      const entry = core.known(key);
      if (entry === null) return null;
      entries.push(entry);
    }
    return valuesReply(op.keys, entries, nowMs);
  }

  /**
   * Writes entries; `merge` keeps, per key, whichever has the greater cas, or, given `joinCas`
   * (eventual and causal modes), their merge by ./counter.ts's `mergeEntries`. The common case (keys
   * distinct, idle, of known cas) goes in one batch: the winners are chosen now and written in one
   * pipelined backend call, under one key-order registration. Busy keys (a state transfer's or a
   * snapshot's, say, behind the reset before them) go as one batch too, once every earlier call on
   * them is done, and merges are decided then: tens of thousands of keys would otherwise each start
   * a call of their own in the same turn. A key that is repeated, or idle and of unknown cas in a
   * merge, goes alone.
   */
  async put(entries: readonly KeyedEntry[], how: 'merge' | 'overwrite', joinCas?: bigint): Promise<void> {
    if (entries.length > PUT_SLICE_ENTRIES && inKeyOrder(entries)) {
      const keys = entries.map(([key]) => key);
      return this.#order.bulk(keys, this.#writing(() => this.#putSliced(entries, how, joinCas)));
    }
    const byKey = new Map<string, Entry[]>();
    for (const [key, entry] of entries) {
      const list = byKey.get(key);
      if (list === undefined) byKey.set(key, [entry]);
      else list.push(entry);
    }
    const calls: Array<Promise<void>> = [];
    const batch: KeyedEntry[] = [];
    const afterBusy: KeyedEntry[] = [];
    for (const [key, list] of byKey) {
      const only = list.length === 1 ? list[0] : undefined;
      if (only !== undefined && this.#suspect === null) {
        if (!this.#order.idleKey(key)) {
          afterBusy.push([key, only]);
          continue;
        }
        const writes = how === 'overwrite' ? true : this.#core.mergeWrites(key, only, joinCas);
        if (writes !== undefined) {
          // A merge that loses to what the replica holds already writes nothing.
          if (writes) batch.push([key, only]);
          continue;
        }
      }
      calls.push(this.#order.single(key, this.#writing(() => this.#core.putAll(key, list, how, joinCas))));
    }
    // A whole replica's worth (an overwrite: a state transfer) is not cached: it would only churn the cache.
    const cached = how === 'merge';
    if (batch.length > 0) {
      calls.push(this.#order.runNow(batch.map(([key]) => key), this.#writing(() => this.#core.writeAll(batch, cached))));
    }
    if (afterBusy.length > 0) {
      const write = how === 'overwrite' ? () => this.#core.writeAll(afterBusy, cached) : () => this.#core.mergeAll(afterBusy, joinCas);
      calls.push(this.#order.keyed(afterBusy.map(([key]) => key), this.#writing(write)));
    }
    await Promise.all(calls);
  }

  /**
   * A large put of distinct keys in key order (a snapshot, a rebuild's chunk), once every earlier
   * call is done: PUT_SLICE_ENTRIES at a time, a turn of the event loop between slices, so its
   * decisions and writes do not hold the controller for seconds. Later calls on its keys wait for
   * all of it (./key-order.ts's `bulk`).
   */
  async #putSliced(entries: readonly KeyedEntry[], how: 'merge' | 'overwrite', joinCas: bigint | undefined): Promise<void> {
    const issuedIn = this.#generation;
    const cached = how === 'merge';
    for (let start = 0; start < entries.length; start += PUT_SLICE_ENTRIES) {
      if (start > 0) await new Promise((resolve) => setImmediate(resolve));
      if (this.#suspect !== null || issuedIn !== this.#generation) throw this.#suspectError();
      const slice = entries.slice(start, start + PUT_SLICE_ENTRIES);
      await (how === 'overwrite' ? this.#core.writeAll(slice, cached) : this.#core.mergeAll(slice, joinCas));
    }
  }

  /**
   * Entries (tombstones and expired ones included) of `keys`, in key order; when null, of every
   * key, each as of some point after this call (see #fetchEvery).
   */
  fetch(keys: readonly string[] | null, options: FetchOptions = {}): Promise<KeyedEntry[]> {
    const { paged = false, versionsOnly = false } = options;
    if (keys === null) return this.#fetchEvery(paged, versionsOnly);
    const distinct = [...new Set(keys)].sort();
    if (paged) return this.#readPages(distinct, this.#generation, versionsOnly);
    return this.#order.keyed(distinct, this.#reading(() => this.#core.fetchKeys(distinct, versionsOnly), true));
  }

  /**
   * Every key's entry, read a page of keys at a time in order with the calls on those keys, so
   * the calls issued meanwhile are not held up for the whole read (a state transfer of millions of
   * keys takes seconds). Each key is as of some point between this call and the answer: not one
   * point for all of them. With `skip-applied` that is enough for a receiver that replays the
   * changes issued meanwhile (docs/design.md, "State transfer in the log modes"). The keys are
   * listed once the calls before this one completed; without `skip-applied` or `paged`, or with an
   * index that does not know every key, they are all read at one point, holding up every later call.
   */
  async #fetchEvery(paged: boolean, versionsOnly: boolean): Promise<KeyedEntry[]> {
    const issuedIn = this.#generation;
    const { keys, entries } = await this.#listEvery(!this.#skipsApplied && !paged, versionsOnly);
    return keys === null ? entries : this.#readPages(keys, issuedIn, versionsOnly);
  }

  /**
   * Every key's entry as `fetch(null, { paged: true })` reads them, handed over a slice at a time
   * (PACED_SLICE_ENTRIES or PACED_SLICE_BYTES, whichever comes first), each read when the reader
   * asks for it: a replica larger than this process's memory passes through a reader that lets
   * each slice go before it asks for more (a state transfer sent as its receiver acks). Ordered
   * with the other calls as `fetch` is; only the keys' listing is held throughout (and, without
   * `skip-applied` or when the index does not know every key, the one-point read that stands in
   * for it).
   */
  readPaced(versionsOnly = false): PacedRead {
    const issuedIn = this.#generation;
    const listed = this.#listEvery(!this.#skipsApplied, versionsOnly);
    let at = 0;
    const next = async (): Promise<{ entries: KeyedEntry[]; done: boolean }> => {
      const { keys, entries } = await listed;
      const found: KeyedEntry[] = [];
      let bytes = 0;
      const take = (entry: KeyedEntry): void => {
        found.push(entry);
        bytes += entry[0].length + entry[1].value.length;
      };
      const room = (): boolean => found.length < PACED_SLICE_ENTRIES && bytes < PACED_SLICE_BYTES;
      if (keys === null) {
        for (; at < entries.length && room(); at += 1) take(entries[at] as KeyedEntry);
        return { entries: found, done: at >= entries.length };
      }
      while (at < keys.length && room()) {
        const page = keys.slice(at, at + FETCH_PAGE_KEYS);
        at += page.length;
        for (const entry of await this.#readPage(page, issuedIn, versionsOnly)) take(entry);
      }
      return { entries: found, done: at >= keys.length };
    };
    return { next };
  }

  /**
   * Every key, listed once the calls before this one completed and sorted between turns; when
   * `onePoint`, or when the index does not know every key, null, with all entries read at that
   * one point instead.
   */
  #listEvery(onePoint: boolean, versionsOnly: boolean): Promise<{ keys: string[] | null; entries: KeyedEntry[] }> {
    const core = this.#core;
    const listed = this.#order.barrier(this.#reading(async () => {
      const keys = onePoint ? null : core.indexedKeys();
      return keys === null ? { keys: null, entries: await core.fetchAll(versionsOnly) } : { keys, entries: [] };
    }, true));
    return listed.then(async ({ keys, entries }) => (keys === null ? { keys, entries } : { keys: await sortInTurns(keys), entries }));
  }

  /** `keys` (sorted, distinct) read a page at a time, each page in order with the calls on its keys. */
  async #readPages(keys: readonly string[], issuedIn: number, versionsOnly: boolean): Promise<KeyedEntry[]> {
    const found: KeyedEntry[] = [];
    for (let start = 0; start < keys.length; start += FETCH_PAGE_KEYS) {
      for (const entry of await this.#readPage(keys.slice(start, start + FETCH_PAGE_KEYS), issuedIn, versionsOnly)) found.push(entry);
    }
    return found;
  }

  /** One page of keys (sorted, distinct) read in order with the calls on them; refused once the replica was reset or became suspect. */
  #readPage(page: string[], issuedIn: number, versionsOnly: boolean): Promise<KeyedEntry[]> {
    if (this.#suspect !== null || issuedIn !== this.#generation) return Promise.reject(this.#suspectError());
    return this.#order.keyed(page, this.#reading(() => this.#core.fetchKeys(page, versionsOnly), true));
  }

  /**
   * Removes each tombstone whose cas is still the one given, and whatever older version a key
   * holds instead: the tombstone superseded it, and every replica held the tombstone. (One that
   * memcached refused to store, keeping the older value, may have been counted as held while the
   * write was in flight.)
   */
  async purge(tombstones: ReadonlyArray<readonly [string, bigint]>): Promise<void> {
    const calls = tombstones.map(([key, cas]) => this.#order.keyed([key], this.#writing(() => this.#core.purgeOne(key, cas))));
    await Promise.all(calls);
  }

  /** Empties the replica. */
  reset(): Promise<void> {
    return this.#order.barrier(this.#writing(() => this.#core.reset()));
  }

  /**
   * Resolves once every call made so far has settled and memcached has answered the stores sent
   * quietly among them; rejects if the replica is or became suspect. Unlike a fetch or `idle`, it
   * holds up no later call.
   */
  settled(): Promise<void> {
    return this.#reading(() => this.#order.settledSoFar().then(() => this.#core.vouchQuiet()), true)();
  }

  /** Resolves once every call made so far has settled. */
  idle(): Promise<void> {
    return this.#order.barrier(async () => {});
  }

  /**
   * Rebuilds the key index from the backend (memcached: `lru_crawler metadump`), for a
   * controller that restarts in front of a memcached that kept its data. Returns the key count.
   */
  loadIndex(): Promise<number> {
    return this.#order.barrier(() => this.#core.loadIndex());
  }

  /** Keys held, tombstones included. */
  keyCount(): number {
    return this.#core.index.size;
  }

  /** Every index record, in no particular order: the status page lists stored keys from it. */
  indexEntries(): IterableIterator<[string, Readonly<IndexRecord>]> {
    return this.#core.index.entries();
  }

  /** What the index knows of `key`, if anything (a copy). */
  indexRecord(key: string): IndexRecord | undefined {
    const index = this.#core.index;
    return index.record(index.refOf(key));
  }

  /** Whether the index holds a record of `key`. */
  indexHas(key: string): boolean {
    return this.#core.index.has(key);
  }

  /** What the value cache holds. */
  cacheUsage(): CacheUsage {
    return this.#core.cacheUsage();
  }

  health(): Promise<BackendHealth> {
    return this.#backend.health();
  }
}
