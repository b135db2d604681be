/**
 * The local replica: carries out a mode's store effects (`apply`, `read`, `put`, `fetch`, `purge`,
 * `reset`) on a KVBackend that may answer out of order, through one promise chain per key, with an
 * index of the keys it holds (memcached cannot list them) and a write-through value cache. How and
 * why, tombstones and the cache's rules included: docs/design.md, "The replica and its value cache".
 *
 * Invariants:
 * - Calls on one key take effect in call order; barriers (flush_all, reset, a fetch of every key)
 *   are ordered against all calls. The order is fixed synchronously, when the method is called.
 * - A failed call rejects with the backend's StoreError and does not stop the chain.
 * - The index holds a superset of the backend's keys written through this replica; once complete
 *   (loaded, reset or flushed), a key without a record is absent.
 * - A cached entry is exactly what the backend holds after every call ordered before the current one.
 */

import type { Item, Reply } from '../protocol/types.ts';
import { refused } from '../protocol/refusals.ts';
import { clockMs } from '../runtime/clock.ts';
import { applyToEntry, isLive, purgeRemoves, type ApplyContext } from './apply.ts';
import { mergeEntries, plainEntry } from './counter.ts';
import { StoreError, type BackendHealth, type Entry, type KeyedEntry, type KeyPresence, type KVBackend, type Op } from './types.ts';
import { ValueCache } from './value-cache.ts';

/** Default bound of a replica's value cache: 64 MiB. */
export const CACHE_BYTES_MAX_DEFAULT = 64 * 1024 * 1024;

/** What the index remembers of one key. */
export interface IndexRecord {
  cas: bigint;
  expiresAtMs: number;
  tombstone: boolean;
  /** The backend is known to hold exactly this version (the write that set it succeeded). */
  settled: boolean;
  /** The entry carries counter metadata (./counter.ts): a merge must read it. */
  counted?: boolean;
}

/** Options of a Replica. */
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
}

/** What the value cache holds, for `stats` and tests. */
export interface CacheUsage {
  entries: number;
  bytes: number;
  bytesMax: number;
  hits: number;
  misses: number;
}

/** A backend that can list its keys (both of ours can), used to rebuild the index at start. */
interface KeyLister {
  keys(): Promise<string[]>;
}

function canListKeys(backend: KVBackend): backend is KVBackend & KeyLister {
  return typeof (backend as Partial<KeyLister>).keys === 'function';
}

const EMPTY = Buffer.alloc(0);
/**
 * The reply to a replayed op that the replica already holds. Usually nobody waits for it; a client
 * whose write's apply failed (it took effect after all) does, and learns just that.
 */
const ALREADY_APPLIED: Reply = refused('backend', 'write applied before the replica failed; its result is lost');

/** Starts `work` at once; a synchronous throw becomes a rejection, as inside a `then`. */
function startNow<T>(work: () => Promise<T>): Promise<T> {
  try {
    return work();
  } catch (error) {
    return Promise.reject(error);
  }
}

/** Runs calls in order per key, with barriers over all keys. */
class KeyOrder {
  readonly #tails = new Map<string, Promise<void>>();
  readonly #sinceBarrier = new Set<Promise<void>>();
  #barrier: Promise<void> = Promise.resolve();
  #barriersRunning = 0;

  /** True when no call on any of `keys` and no barrier is waiting or running. */
  idle(keys: readonly string[]): boolean {
    if (this.#barriersRunning > 0) return false;
    if (this.#tails.size === 0) return true; // nothing running: no lookup needed
    for (const key of keys) if (this.#tails.has(key)) return false;
    return true;
  }

  /** `idle([key])`, without the array. */
  idleKey(key: string): boolean {
    if (this.#barriersRunning > 0) return false;
    return this.#tails.size === 0 || !this.#tails.has(key); // nothing running: no lookup needed
  }

  /** Runs `work` after every earlier call on `key` and the last barrier (the common, one-key case). */
  single<T>(key: string, work: () => Promise<T>): Promise<T> {
    const tail = this.#tails.get(key);
    let result: Promise<T>;
    if (tail === undefined && this.#barriersRunning === 0) {
      // Nothing to wait for: start now rather than a microtask later.
      result = startNow(work);
    } else {
      // A key's tail already waits for the barrier it was issued after (or is that barrier's successor).
      result = (tail === undefined ? this.#barrier : tail).then(work);
    }
    return this.#track([key], result);
  }

  /**
   * Runs `work` now, as the one call on `keys` (distinct, every one idle: see `idle`); later
   * calls on them wait for it, as after `keyed`. One registration for the whole batch.
   */
  runNow<T>(keys: readonly string[], work: () => Promise<T>): Promise<T> {
    return this.#track(keys, startNow(work));
  }

  /** Runs `work` after every earlier call on any of `keys` and the last barrier. */
  keyed<T>(keys: readonly string[], work: () => Promise<T>): Promise<T> {
    const first = keys[0];
    if (keys.length === 1 && first !== undefined) return this.single(first, work);
    const distinct = [...new Set(keys)];
    const before: Promise<void>[] = [this.#barrier];
    for (const key of distinct) {
      const tail = this.#tails.get(key);
      if (tail !== undefined) before.push(tail);
    }
    return this.#track(distinct, Promise.all(before).then(work));
  }

  /**
   * Makes `result` the last call on `keys` until it settles; it is forgotten as it settles,
   * before its caller's own continuation runs, so the keys are idle again at once.
   */
  #track<T>(keys: readonly string[], result: Promise<T>): Promise<T> {
    // Two inline callbacks rather than one named one: tsx names every named closure it creates
    // (esbuild's keepNames), a property definition per call on this hot path.
    const done: Promise<void> = result.then(
      () => this.#forget(keys, done),
      () => this.#forget(keys, done),
    );
    for (const key of keys) this.#tails.set(key, done);
    this.#sinceBarrier.add(done);
    return result;
  }

  #forget(keys: readonly string[], done: Promise<void>): void {
    this.#sinceBarrier.delete(done);
    for (const key of keys) if (this.#tails.get(key) === done) this.#tails.delete(key);
  }

  /** Runs `work` after every earlier call; every later call waits for it. */
  barrier<T>(work: () => Promise<T>): Promise<T> {
    const result = Promise.all([this.#barrier, ...this.#sinceBarrier]).then(work);
    this.#barriersRunning += 1;
    const settled = (): void => {
      this.#barriersRunning -= 1;
    };
    this.#barrier = result.then(settled, settled);
    this.#sinceBarrier.clear();
    this.#tails.clear();
    return result;
  }
}

/** Calls `work` on every item, at most `limit` at a time; rejects with the first failure. */
async function forEachBounded<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  // The workers share one iterator: each takes the next item not yet taken.
  const queue = items.values();
  const worker = async (): Promise<void> => {
    for (const item of queue) await work(item);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

function tombstoneEntry(cas: bigint): Entry {
  return { value: EMPTY, flags: 0, expiresAtMs: 0, cas, tombstone: true };
}

function toItem(key: string, entry: Entry): Item {
  return { key, flags: entry.flags, value: entry.value, cas: entry.cas };
}

/** The reply to a get: the live entries, in key order. */
function valuesReply(keys: readonly string[], entries: ReadonlyArray<Entry | undefined>, nowMs: number): Reply {
  const items: Item[] = [];
  for (let position = 0; position < keys.length; position += 1) {
    const key = keys[position];
    const entry = entries[position];
    if (key !== undefined && isLive(entry, nowMs)) items.push(toItem(key, entry));
  }
  return { kind: 'values', items };
}

/** One replica's storage, carrying out a mode's effects in order. */
export class Replica {
  readonly #backend: KVBackend;
  readonly #tombstones: boolean;
  readonly #skipApplied: boolean;
  readonly #barrierConcurrency: number;
  readonly #order = new KeyOrder();
  readonly #index = new Map<string, IndexRecord>();
  readonly #cache: ValueCache;
  /** Every key the backend holds has an index record (after loadIndex, reset or flush). */
  #indexComplete = false;
  /**
   * Why this replica can no longer be trusted (a write to the backend failed, so it may have
   * missed one), or null. While set, every call fails: nothing is served from a replica that
   * may be stale, until the controller has told the mode and calls `acknowledgeReset`.
   */
  #suspect: string | null = null;
  /** Counts acknowledged resets; a call runs only in the generation it was issued in. */
  #generation = 0;
  readonly #valueBytesMax: number;
  readonly #refusalsKeepTrust: boolean;

  constructor(backend: KVBackend, options: ReplicaOptions) {
    this.#backend = backend;
    this.#tombstones = options.tombstones;
    this.#skipApplied = options.replay === 'skip-applied';
    this.#barrierConcurrency = options.barrierConcurrency ?? 64;
    this.#valueBytesMax = options.valueBytesMax ?? Number.POSITIVE_INFINITY;
    this.#refusalsKeepTrust = options.refusalsKeepTrust ?? false;
    this.#cache = new ValueCache(options.cacheBytesMax ?? CACHE_BYTES_MAX_DEFAULT);
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
    this.#backend.acknowledgeReset?.();
    // Calls issued before this point were meant for the replica as it was: they are refused
    // when their turn comes, never run against the emptied one (their results would be wrong).
    this.#generation += 1;
    this.#suspect = null;
    this.#index.clear();
    this.#indexComplete = false;
    this.#cache.clear();
  }

  /**
   * Runs a call that reads only: refused while suspect. A read that finds the backend emptied
   * (BACKEND_RESET) makes the replica suspect too: the cache must not answer for it any more.
   */
  #reading<T>(call: () => Promise<T>): () => Promise<T> {
    const issuedIn = this.#generation;
    return () => {
      if (this.#suspect !== null || issuedIn !== this.#generation) return Promise.reject(this.#suspectError());
      return call().catch((error: unknown) => {
        if (error instanceof StoreError && error.code === 'BACKEND_RESET') this.#distrust(error);
        throw error;
      });
    };
  }

  /**
   * Runs a call that writes: refused while suspect; its failure makes the replica suspect, but
   * for a refusal that left the keys as they were, when refusals keep trust. The write already
   * left those keys uncached and their index records unsettled (see #write), so they are read
   * from the backend again.
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
    this.#cache.clear();
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
        return this.#order.keyed([op.key], this.#writing(() => this.#applySingle(op, ctx)));
      case 'get':
        return this.#order.keyed(op.keys, this.#reading(() => this.#readValues(op.keys, ctx.nowMs)));
      case 'gat':
        return this.#order.keyed(op.keys, this.#writing(() => this.#getAndTouch(op, ctx)));
      case 'flush_all':
        return this.#order.barrier(this.#writing(() => this.#flushAll(op.delayMs, ctx)));
      default: {
        // Ops come from logs and peers: an unknown one is refused, never thrown (see applyToEntry).
        const unknown: never = op;
        return Promise.resolve(applyToEntry(undefined, unknown, ctx).reply);
      }
    }
  }

  /** Serves a get after every earlier call on its keys: items with cas, in key order. */
  read(op: Op, nowMs: number): Promise<Reply> {
    if (op.kind !== 'get') throw new Error(`Replica.read: expected a get, got ${op.kind}`);
    return this.#order.keyed(op.keys, this.#reading(() => this.#readValues(op.keys, nowMs)));
  }

  /**
   * Serves a get at once, when it can: nothing issued earlier on its keys is still running and
   * the cache or the index knows every key. Otherwise null, and the caller uses `read`. Same
   * answer as `read` would give, without a promise or a turn of the event loop.
   */
  readNow(op: Op, nowMs: number): Reply | null {
    if (op.kind !== 'get' || this.#suspect !== null || !this.#order.idle(op.keys)) return null;
    const entries: Array<Entry | undefined> = [];
    for (const key of op.keys) {
      const entry = this.#known(key);
      if (entry === null) return null;
      entries.push(entry);
    }
    return valuesReply(op.keys, entries, nowMs);
  }

  /**
   * Writes entries; `merge` keeps, per key, whichever has the greater cas, or, given `joinCas`
   * (eventual and causal modes), their merge by ./counter.ts's `mergeEntries`. The common case (keys
   * distinct, idle, of known cas) goes in one batch: the winners are chosen now and written in one
   * pipelined backend call, under one key-order registration. A key that is busy, repeated or of
   * unknown cas goes alone.
   */
  async put(entries: readonly KeyedEntry[], how: 'merge' | 'overwrite', joinCas?: bigint): Promise<void> {
    const byKey = new Map<string, Entry[]>();
    for (const [key, entry] of entries) {
      const list = byKey.get(key);
      if (list === undefined) byKey.set(key, [entry]);
      else list.push(entry);
    }
    const calls: Array<Promise<void>> = [];
    const batch: KeyedEntry[] = [];
    for (const [key, list] of byKey) {
      const only = list.length === 1 ? list[0] : undefined;
      if (only !== undefined && this.#suspect === null && this.#order.idleKey(key)) {
        const known = how === 'overwrite' ? null : this.#knownCas(key, joinCas === undefined ? undefined : only);
        if (known !== undefined) {
          // A merge loses to what the replica holds already: nothing to write.
          if (known === null || known < only.cas) batch.push([key, only]);
          continue;
        }
      }
      calls.push(this.#order.single(key, this.#writing(() => this.#putAll(key, list, how, joinCas))));
    }
    if (batch.length > 0) calls.push(this.#order.runNow(batch.map(([key]) => key), this.#writing(() => this.#writeAll(batch))));
    await Promise.all(calls);
  }

  /** `#write` for a batch of distinct keys: one backend call. */
  async #writeAll(entries: readonly KeyedEntry[]): Promise<void> {
    const present = entries.map(([key]) => this.#presence(key));
    const records = entries.map(([key, entry]) => {
      this.#cache.withhold(key);
      return this.#remember(key, entry, false);
    });
    const generation = this.#cache.generation;
    await this.#backend.setMany(entries, present);
    for (const record of records) record.settled = true;
    if (generation === this.#cache.generation) for (const [key, entry] of entries) this.#cache.set(key, entry);
  }

  /** Puts one key's entries, in order. */
  async #putAll(key: string, list: readonly Entry[], how: 'merge' | 'overwrite', joinCas: bigint | undefined): Promise<void> {
    for (const entry of list) await this.#putOne(key, entry, how, joinCas);
  }

  /** Entries (tombstones and expired ones included) of `keys`, or of every key when null. */
  fetch(keys: readonly string[] | null): Promise<KeyedEntry[]> {
    if (keys === null) return this.#order.barrier(this.#reading(() => this.#fetchKeys([...this.#index.keys()])));
    const distinct = [...new Set(keys)];
    return this.#order.keyed(distinct, this.#reading(() => this.#fetchKeys(distinct)));
  }

  /**
   * Removes each tombstone whose cas is still the one given, and whatever older version a key
   * holds instead: the tombstone superseded it, and every replica held the tombstone. (One that
   * memcached refused to store, keeping the older value, may have been counted as held while the
   * write was in flight.)
   */
  async purge(tombstones: ReadonlyArray<readonly [string, bigint]>): Promise<void> {
    const calls = tombstones.map(([key, cas]) => this.#order.keyed([key], this.#writing(() => this.#purgeOne(key, cas))));
    await Promise.all(calls);
  }

  /** Empties the replica. */
  reset(): Promise<void> {
    return this.#order.barrier(
      this.#writing(async () => {
        this.#cache.clear();
        await this.#backend.flush();
        this.#cache.clear();
        this.#index.clear();
        this.#indexComplete = true;
      }),
    );
  }

  /** Resolves once every call made so far has settled. */
  idle(): Promise<void> {
    return this.#order.barrier(async () => {});
  }

  /**
   * Rebuilds the key index from the backend (memcached: `lru_crawler metadump all`), for a
   * controller that restarts in front of a memcached that kept its data. Returns the key count.
   */
  loadIndex(): Promise<number> {
    return this.#order.barrier(async () => {
      if (!canListKeys(this.#backend)) return this.#index.size;
      const keys = await this.#backend.keys();
      await forEachBounded(keys, this.#barrierConcurrency, async (key) => {
        const entry = await this.#readBackend(key);
        if (entry !== undefined) this.#remember(key, entry, true);
      });
      this.#indexComplete = true;
      return this.#index.size;
    });
  }

  /** Keys held, tombstones included. */
  keyCount(): number {
    return this.#index.size;
  }

  /** Every index record, in no particular order: the status page lists stored keys from it. */
  indexEntries(): IterableIterator<[string, Readonly<IndexRecord>]> {
    return this.#index.entries();
  }

  /** What the index knows of `key`, if anything. */
  indexRecord(key: string): IndexRecord | undefined {
    return this.#index.get(key);
  }

  /** What the value cache holds. */
  cacheUsage(): CacheUsage {
    const { hits, misses } = this.#cache.counts;
    return { entries: this.#cache.size, bytes: this.#cache.bytes, bytesMax: this.#cache.bytesMax, hits, misses };
  }

  health(): Promise<BackendHealth> {
    return this.#backend.health();
  }

  async #applySingle(op: Extract<Op, { kind: 'store' | 'arith' | 'delete' | 'touch' }>, ctx: ApplyContext): Promise<Reply> {
    // The index knows the cas of every key written through this replica (or loaded at start).
    if (this.#isApplied(this.#index.get(op.key), ctx)) return ALREADY_APPLIED;
    // A plain set does not depend on what is stored: skip the read (one backend round trip).
    const current = op.kind === 'store' && op.verb === 'set' ? undefined : await this.#current(op.key);
    if (this.#isApplied(current, ctx)) return ALREADY_APPLIED;
    const { write, reply } = applyToEntry(current, op, ctx, this.#valueBytesMax);
    if (write === null) await this.#remove(op.key, ctx.cas);
    else if (write !== undefined) await this.#write(op.key, write);
    return reply;
  }

  #readValues(keys: readonly string[], nowMs: number): Promise<Reply> {
    const known: Array<Entry | undefined | Promise<Entry | undefined>> = [];
    let reading = false;
    for (const key of keys) {
      const entry = this.#current(key);
      if (entry instanceof Promise) reading = true;
      known.push(entry);
    }
    if (!reading) return Promise.resolve(valuesReply(keys, known as Array<Entry | undefined>, nowMs));
    return Promise.all(known).then((entries) => valuesReply(keys, entries, nowMs));
  }

  async #getAndTouch(op: Extract<Op, { kind: 'gat' }>, ctx: ApplyContext): Promise<Reply> {
    const touched = new Map<string, Entry>();
    await Promise.all(
      [...new Set(op.keys)].map(async (key) => {
        const entry = await this.#current(key);
        if (!isLive(entry, ctx.nowMs) || this.#isApplied(entry, ctx)) return;
        const next: Entry = { ...plainEntry(entry), expiresAtMs: op.expiresAtMs, cas: ctx.cas };
        await this.#write(key, next);
        touched.set(key, next);
      }),
    );
    const items: Item[] = [];
    for (const key of op.keys) {
      const entry = touched.get(key);
      if (entry !== undefined) items.push(toItem(key, entry));
    }
    return { kind: 'values', items };
  }

  async #flushAll(delayMs: number, ctx: ApplyContext): Promise<Reply> {
    if (delayMs <= 0 && !this.#tombstones && !this.#skipApplied) {
      this.#cache.clear();
      await this.#backend.flush();
      this.#cache.clear();
      this.#index.clear();
      this.#indexComplete = true;
      return { kind: 'ok' };
    }
    const deadlineMs = ctx.nowMs + delayMs;
    await forEachBounded([...this.#index.keys()], this.#barrierConcurrency, async (key) => {
      const entry = await this.#current(key);
      if (entry === undefined) {
        this.#index.delete(key);
        return;
      }
      if (this.#isApplied(entry, ctx)) return;
      if (delayMs <= 0) {
        if (entry.tombstone !== true) await this.#remove(key, ctx.cas);
        return;
      }
      const expiresLater = entry.expiresAtMs === 0 || entry.expiresAtMs > deadlineMs;
      if (isLive(entry, ctx.nowMs) && expiresLater) {
        await this.#write(key, { ...plainEntry(entry), expiresAtMs: deadlineMs, cas: ctx.cas });
      }
    });
    return { kind: 'ok' };
  }

  /** Writes `entry` unless (merge) the backend already holds an equal or greater cas (see `put`). */
  #putOne(key: string, entry: Entry, how: 'merge' | 'overwrite', joinCas: bigint | undefined): Promise<void> {
    if (how === 'overwrite') return this.#write(key, entry);
    if (joinCas !== undefined) {
      return Promise.resolve(this.#current(key)).then((current) => {
        const merged = current === undefined ? entry : mergeEntries(current, entry, joinCas);
        return merged === current ? undefined : this.#write(key, merged);
      });
    }
    const known = this.#knownCas(key);
    if (known === undefined) {
      return this.#backend.get(key).then((current) =>
        current !== undefined && current.cas >= entry.cas ? undefined : this.#write(key, entry));
    }
    return known !== null && known >= entry.cas ? Promise.resolve() : this.#write(key, entry);
  }

  async #fetchKeys(keys: readonly string[]): Promise<KeyedEntry[]> {
    const found: KeyedEntry[] = [];
    const collect = (key: string, entry: Entry | undefined): void => {
      if (entry === undefined) this.#index.delete(key);
      else found.push([key, entry]);
    };
    // What the cache or the index knows needs no backend call (nor a promise per key).
    const unknown: string[] = [];
    for (const key of keys) {
      const known = this.#known(key);
      if (known === null) unknown.push(key);
      else collect(key, known);
    }
    await forEachBounded(unknown, this.#barrierConcurrency, async (key) => collect(key, await this.#readBackend(key)));
    // Deterministic order for callers that compare replicas.
    found.sort(([left], [right]) => (left < right ? -1 : left > right ? 1 : 0));
    return found;
  }

  async #purgeOne(key: string, cas: bigint): Promise<void> {
    const entry = await this.#current(key);
    if (entry === undefined) {
      this.#index.delete(key);
      return;
    }
    if (!purgeRemoves(entry, cas)) return;
    this.#cache.delete(key);
    await this.#backend.delete(key);
    this.#index.delete(key);
  }

  async #remove(key: string, cas: bigint): Promise<void> {
    if (this.#tombstones) {
      await this.#write(key, tombstoneEntry(cas));
      return;
    }
    const record = this.#index.get(key);
    if (record !== undefined) record.settled = false;
    this.#cache.delete(key);
    await this.#backend.delete(key);
    this.#index.delete(key);
  }

  async #write(key: string, entry: Entry): Promise<void> {
    const present = this.#presence(key);
    // Remember first: if the write fails halfway, the index still lists the key (a superset).
    const record = this.#remember(key, entry, false);
    // Cached only once acknowledged: until then the backend may hold either version.
    this.#cache.withhold(key);
    const generation = this.#cache.generation;
    await this.#backend.set(key, entry, present);
    record.settled = true;
    if (generation === this.#cache.generation) this.#cache.set(key, entry);
  }

  /**
   * The backend's entry of `key` (undefined if absent): from the cache or the index when they
   * know it, else read (and cached). Only called with no other call on `key` running.
   */
  #current(key: string): Entry | undefined | Promise<Entry | undefined> {
    const known = this.#known(key);
    return known === null ? this.#readBackend(key) : known;
  }

  /** The backend's entry of `key` when the cache or the index knows it (undefined: absent), else null. */
  #known(key: string): Entry | undefined | null {
    const cached = this.#cache.get(key);
    if (cached !== undefined) {
      // Expired by the wall clock: ask the backend, exactly as without the cache.
      if (cached.expiresAtMs === 0 || cached.expiresAtMs > clockMs()) return cached;
    } else if (this.#indexComplete && !this.#index.has(key)) {
      return undefined;
    }
    return null;
  }

  /**
   * Whether the backend holds an item for `key`, as far as the index tells (a hint for the write
   * about to be issued; see KeyPresence): a record says probably (the index is a superset, and an
   * item may have expired), no record in a complete index says no, else unknown.
   */
  #presence(key: string): KeyPresence {
    if (this.#index.has(key)) return true;
    return this.#indexComplete ? false : undefined;
  }

  /** Reads `key` from the backend and caches what it holds, unless the cache was cleared meanwhile. */
  async #readBackend(key: string): Promise<Entry | undefined> {
    const generation = this.#cache.generation;
    const entry = await this.#backend.get(key);
    if (entry !== undefined && generation === this.#cache.generation) this.#cache.set(key, entry);
    return entry;
  }

  /** With `skip-applied`: does the key already hold this op's change or a later one? */
  #isApplied(entry: { cas: bigint } | undefined, ctx: ApplyContext): boolean {
    return this.#skipApplied && entry !== undefined && entry.cas >= ctx.cas;
  }

  #remember(key: string, entry: Entry, settled: boolean): IndexRecord {
    const record: IndexRecord = {
      cas: entry.cas,
      expiresAtMs: entry.expiresAtMs,
      tombstone: entry.tombstone === true,
      settled,
      counted: isCounted(entry),
    };
    this.#index.set(key, record);
    return record;
  }

  /**
   * The backend's version of `key` as the index knows it: null if absent, undefined if unknown or,
   * for a merge, if greater-cas-wins cannot decide it (counter metadata on either side).
   */
  #knownCas(key: string, merging?: Entry): bigint | null | undefined {
    const record = this.#index.get(key);
    if (record === undefined) return this.#indexComplete ? null : undefined;
    if (merging !== undefined && (record.counted === true || isCounted(merging))) return undefined;
    return record.settled ? record.cas : undefined;
  }
}

/** An entry merges by ./counter.ts rather than by greater cas. */
function isCounted(entry: Entry): boolean {
  return entry.counter !== undefined || entry.resetCas !== undefined;
}
