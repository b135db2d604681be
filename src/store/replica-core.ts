/**
 * The work of a Replica (./replica.ts) once a call's turn has come: a mode's store effects carried
 * out on the backend, through an index of the keys it holds (memcached cannot list them) and a
 * write-through value cache. The Replica decides when a call runs and whether; this decides what it
 * reads and writes. Why and how: docs/design.md, "The replica and its value cache".
 *
 * Invariants:
 * - Called only in the Replica's order: no other call on the same key is running (none at all
 *   during a barrier: flushAll, fetchAll, reset, loadIndex).
 * - The index holds a superset of the backend's keys written through this replica; once complete
 *   (loaded, reset or flushed), a key without a record is absent.
 * - A cached entry is exactly what the backend holds after every call ordered before the current one.
 */

import type { Item, Reply } from '../protocol/types.ts';
import { clockMs } from '../runtime/clock.ts';
import { nextTurn, sortInTurns } from '../runtime/turns.ts';
import { applyToEntry, isLive, purgeRemoves, type ApplyContext, type ApplyResult, type SingleKeyOp } from './apply.ts';
import { mergeEntries, plainEntry } from './counter.ts';
import { forEachBounded } from './key-order.ts';
import { KeyIndex, NO_RECORD, type IndexRef } from './key-index.ts';
import { ALREADY_APPLIED, isCounted, tombstoneEntry, toItem, valuesReply, withoutValue, type CacheUsage } from './replica-records.ts';
import type { Entry, KeyedEntry, KeyPresence, KVBackend, Op } from './types.ts';
import { ValueCache } from './value-cache.ts';

/** A ReplicaCore's settings: the Replica's options (see ReplicaOptions), defaults filled in. */
export interface ReplicaCoreOptions {
  tombstones: boolean;
  skipApplied: boolean;
  barrierConcurrency: number;
  cacheBytesMax: number;
  valueBytesMax: number;
  quietApplies: boolean;
  keysMax: number;
}

/**
 * An item the index says expires this soon (ms) may be gone from memcached, whose clock and ours
 * differ by its one-second granularity and more: its store is not sent quietly (see #writeQuietly).
 */
const QUIET_EXPIRY_MARGIN_MS = 5000;

/** Keys read from the backend in one pipelined call (a page of a state transfer's read is 512; a larger fetch goes in slices). */
const READ_MANY_KEYS = 4096;

/**
 * Keys a loop over the whole replica handles between two turns of the event loop: done in one
 * turn, 1,500,000 keys stopped the controller for seconds (no heartbeat, no client served).
 */
const KEYS_PER_TURN = 16_384;

/** Whether `op`'s outcome depends on its key's entry: all but a plain set, which skips the read. */
function readsEntry(op: SingleKeyOp): boolean {
  return op.kind !== 'store' || op.verb !== 'set';
}

/** A backend that can list its keys (both of ours can), used to rebuild the index at start. */
interface KeyLister {
  /** Fails once it lists more than `keysMax`. */
  keys(keysMax: number): Promise<string[]>;
}

function canListKeys(backend: KVBackend): backend is KVBackend & KeyLister {
  return typeof (backend as Partial<KeyLister>).keys === 'function';
}

/** A replica's backend, index and value cache, and the store effects carried out on them. */
export class ReplicaCore {
  readonly #backend: KVBackend;
  readonly #tombstones: boolean;
  readonly #skipApplied: boolean;
  readonly #barrierConcurrency: number;
  readonly #index = new KeyIndex();
  readonly #cache: ValueCache;
  /** Every key the backend holds has an index record (after loadIndex, reset or flush). */
  #indexComplete = false;
  readonly #valueBytesMax: number;
  readonly #quietApplies: boolean;
  readonly #keysMax: number;

  constructor(backend: KVBackend, options: ReplicaCoreOptions) {
    this.#backend = backend;
    this.#tombstones = options.tombstones;
    this.#skipApplied = options.skipApplied;
    this.#barrierConcurrency = options.barrierConcurrency;
    this.#valueBytesMax = options.valueBytesMax;
    this.#quietApplies = options.quietApplies;
    this.#keysMax = options.keysMax;
    this.#cache = new ValueCache(options.cacheBytesMax);
  }

  /**
   * The backend lost its contents: know nothing of it, cache nothing (see Replica.acknowledgeReset);
   * `empty`: it surely holds nothing, so the empty index is complete, and a rebuild's merges are
   * decided by it rather than by reading every key from the backend.
   */
  forgetContents(empty: boolean): void {
    this.#index.clear();
    this.#indexComplete = empty;
    this.#cache.clear();
  }

  /** The backend may not hold what was written: trust no cached entry. */
  clearCache(): void {
    this.#cache.clear();
  }

  /** The key index, for the Replica's `keyCount`, `indexEntries` and `indexRecord` to read. */
  get index(): KeyIndex {
    return this.#index;
  }

  /** What the value cache holds. */
  cacheUsage(): CacheUsage {
    const { hits, misses } = this.#cache.counts;
    return { entries: this.#cache.size, bytes: this.#cache.bytes, bytesMax: this.#cache.bytesMax, hits, misses };
  }

  /** Empties the backend, the index (complete: nothing is held) and the cache. */
  async reset(): Promise<void> {
    this.#cache.clear();
    await this.#backend.flush();
    this.#cache.clear();
    this.#index.clear();
    this.#indexComplete = true;
  }

  /**
   * Rebuilds the index from a backend that can list its keys; returns the key count. Nothing is
   * read: each key's record says only that it is held (listed, in KeyIndex), until its first read.
   * A controller beside a memcached holding millions of keys serves after one listing, not a
   * read of each key (about 6 µs a key, 30 s at five million); a mode that reads the whole
   * replica at start (eventual, causal) reads each key once, not twice.
   */
  async loadIndex(): Promise<number> {
    const keys = await this.#listKeys();
    if (keys === null) return this.#index.size;
    for (let at = 0; at < keys.length; at += 1) {
      if (at > 0 && at % KEYS_PER_TURN === 0) await nextTurn();
      const key = keys[at] as string;
      this.#index.addListed(key);
    }
    this.#indexComplete = true;
    return this.#index.size;
  }

  /**
   * Lists the backend's keys and reads each, remembering what it holds (the index is complete
   * then); the entries read, or null if the backend cannot list its keys.
   */
  async #readListedKeys(versionsOnly: boolean): Promise<KeyedEntry[] | null> {
    const listed = await this.#listKeys();
    if (listed === null) return null;
    // In key order: callers compare entries across replicas.
    const keys = await sortInTurns(listed);
    const found = new Array<KeyedEntry | undefined>(keys.length);
    await forEachBounded(keys, this.#barrierConcurrency, async (key, at) => {
      const entry = await this.#readBackend(key);
      if (entry === undefined) return;
      this.#index.remember(key, entry, true);
      found[at] = [key, versionsOnly ? withoutValue(entry) : entry];
    });
    this.#indexComplete = true;
    return found.filter((entry): entry is KeyedEntry => entry !== undefined);
  }

  /** The backend's keys (at most keysMax), or null if it cannot list them. */
  async #listKeys(): Promise<string[] | null> {
    if (!canListKeys(this.#backend)) return null;
    // The key listing comes over another connection: it must follow every store sent quietly.
    await this.vouchQuiet();
    return this.#backend.keys(this.#keysMax);
  }

  /** A store, arith, delete or touch on one key; resolves to the client's reply. */
  async applySingle(op: SingleKeyOp, ctx: ApplyContext): Promise<Reply> {
    // The index knows the cas of every key written through this replica. A key only listed at
    // start has none: a replayed plain set of it is applied again, anything else reads the entry.
    if (this.#isIndexedApplied(this.#index.refOf(op.key), ctx)) return ALREADY_APPLIED;
    const current = readsEntry(op) ? await this.#current(op.key) : undefined;
    const { write, reply } = this.#outcome(op, ctx, current);
    if (write === null) await this.#remove(op.key, ctx.cas);
    else if (write !== undefined && !(this.#quietApplies && this.#writeQuietly(op.key, write, this.#index.refOf(op.key)))) {
      await this.#write(op.key, write);
    }
    return reply;
  }

  /**
   * `applySingle` at once, when it needs no backend round trip: quiet applies, the entry it
   * depends on known, and its write sent quietly or none needed. Otherwise null, having sent
   * nothing (the caller uses `applySingle`).
   */
  applySingleNow(op: SingleKeyOp, ctx: ApplyContext): Reply | null {
    if (!this.#quietApplies) return null;
    // One index lookup serves the whole apply: nothing here awaits, so the ref stays current.
    const ref = this.#index.refOf(op.key);
    if (this.#isIndexedApplied(ref, ctx)) return ALREADY_APPLIED;
    const current = readsEntry(op) ? this.known(op.key) : undefined;
    if (current === null) return null;
    const { write, reply } = this.#outcome(op, ctx, current);
    if (write === undefined) return reply;
    return write !== null && this.#writeQuietly(op.key, write, ref) ? reply : null;
  }

  /**
   * What `op` does to its key's entry `current`: nothing but ALREADY_APPLIED when a replay finds
   * it done there (the caller checked the index already).
   */
  #outcome(op: SingleKeyOp, ctx: ApplyContext, current: Entry | undefined): ApplyResult {
    if (this.#isApplied(current, ctx)) return { write: undefined, reply: ALREADY_APPLIED };
    return applyToEntry(current, op, ctx, this.#valueBytesMax);
  }

  /** A get's reply; no promise hop per key the cache or the index knows. */
  readValues(keys: readonly string[], nowMs: number): Promise<Reply> {
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

  /** A gat: gives each live key the new expiry and cas; replies with the touched items, in key order. */
  async getAndTouch(op: Extract<Op, { kind: 'gat' }>, ctx: ApplyContext): Promise<Reply> {
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

  /** A flush_all (a barrier): removes every entry now, or after the delay (shortening live entries' expiry). */
  async flushAll(delayMs: number, ctx: ApplyContext): Promise<Reply> {
    if (delayMs <= 0 && !this.#tombstones && !this.#skipApplied) {
      await this.reset();
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

  /**
   * `#write` for a batch of distinct keys: one backend call. `cached` false leaves the values out
   * of the value cache (a state transfer's chunks: a whole replica would only churn it).
   */
  async writeAll(entries: readonly KeyedEntry[], cached = true): Promise<void> {
    const present = entries.map(([key]) => this.#presence(key));
    const refs = entries.map(([key, entry]) => {
      if (cached) this.#cache.withhold(key);
      else this.#cache.delete(key);
      return this.#index.remember(key, entry, false);
    });
    const generation = this.#cache.generation;
    await this.#backend.setMany(entries, present);
    for (const ref of refs) this.#index.setSettled(ref, true);
    if (cached && generation === this.#cache.generation) for (const [key, entry] of entries) this.#cache.set(key, entry);
  }

  /**
   * Merges one entry into each of distinct keys (see Replica.put): those the index can decide go in
   * one backend call (`writeAll`), the others key by key.
   */
  async mergeAll(entries: readonly KeyedEntry[], joinCas: bigint | undefined): Promise<void> {
    const decided: KeyedEntry[] = [];
    const alone: Array<Promise<void>> = [];
    for (const [key, entry] of entries) {
      const writes = this.mergeWrites(key, entry, joinCas);
      if (writes === undefined) alone.push(this.#putOne(key, entry, 'merge', joinCas));
      else if (writes) decided.push([key, entry]);
    }
    if (decided.length > 0) alone.push(this.writeAll(decided));
    await Promise.all(alone);
  }

  /** Puts one key's entries, in order. */
  async putAll(key: string, list: readonly Entry[], how: 'merge' | 'overwrite', joinCas: bigint | undefined): Promise<void> {
    for (const entry of list) await this.#putOne(key, entry, how, joinCas);
  }

  /** Writes `entry` unless (merge) the backend already holds an equal or greater cas (see Replica.put). */
  #putOne(key: string, entry: Entry, how: 'merge' | 'overwrite', joinCas: bigint | undefined): Promise<void> {
    if (how === 'overwrite') return this.#write(key, entry);
    if (joinCas !== undefined) {
      return Promise.resolve(this.#current(key)).then((current) => {
        const merged = current === undefined ? entry : mergeEntries(current, entry, joinCas);
        return merged === current ? undefined : this.#write(key, merged);
      });
    }
    const writes = this.mergeWrites(key, entry, undefined);
    if (writes === undefined) {
      return this.#readBackend(key).then((current) =>
        current !== undefined && current.cas >= entry.cas ? undefined : this.#write(key, entry));
    }
    return writes ? this.#write(key, entry) : Promise.resolve();
  }

  /**
   * `fetchKeys` of every key the backend holds: the index's, once it is complete. After a reset
   * that kept the backend's contents (a failed write) the index knows only what was written since,
   * so the backend's keys are listed and read instead (as `loadIndex` does, which then completes
   * the index): a state transfer or a snapshot read from the index alone would leave out every key
   * not written since, and its receiver would lose them.
   */
  async fetchAll(versionsOnly = false): Promise<KeyedEntry[]> {
    const listed = this.#indexComplete ? null : await this.#readListedKeys(versionsOnly);
    return listed ?? this.fetchKeys(await sortInTurns([...this.#index.keys()]), versionsOnly);
  }

  /** Every key the backend holds (the index's: a fresh array), or null while the index may miss some. */
  indexedKeys(): string[] | null {
    return this.#indexComplete ? [...this.#index.keys()] : null;
  }

  /** Resolves once memcached has answered every store sent quietly so far (a later reply vouches for them). */
  async vouchQuiet(): Promise<void> {
    if (this.#quietApplies) await this.#backend.settle?.();
  }

  /**
   * Entries (tombstones and expired ones included) of distinct `keys`, in the order of `keys`
   * (callers sort them: the native sort of strings is a quarter of the cost of sorting entries);
   * `versionsOnly`: each without its value (see FetchOptions in ./replica.ts).
   */
  async fetchKeys(keys: readonly string[], versionsOnly = false): Promise<KeyedEntry[]> {
    // What the cache knows of a key written quietly is what memcached holds only once vouched for.
    await this.vouchQuiet();
    const found = new Array<KeyedEntry | undefined>(keys.length);
    const collect = (at: number, key: string, entry: Entry | undefined): void => {
      if (entry === undefined) this.#index.delete(key);
      else found[at] = [key, versionsOnly ? withoutValue(entry) : entry];
    };
    // What the cache or the index knows needs no backend call (nor a promise per key).
    const unknown: number[] = [];
    for (let at = 0; at < keys.length; at += 1) {
      if (at > 0 && at % KEYS_PER_TURN === 0) await nextTurn();
      const key = keys[at] as string;
      const known = this.known(key);
      if (known === null) unknown.push(at);
      else collect(at, key, known);
    }
    const getMany = this.#backend.getMany;
    const keyAt = (at: number): string => keys[at] as string;
    if (getMany === undefined) {
      await forEachBounded(unknown, this.#barrierConcurrency, async (at) => collect(at, keyAt(at), await this.#readBackend(keyAt(at))));
    } else {
      for (let start = 0; start < unknown.length; start += READ_MANY_KEYS) {
        const slice = unknown.slice(start, start + READ_MANY_KEYS);
        const entries = await this.#readBackendMany(getMany, slice.map(keyAt));
        slice.forEach((at, index) => collect(at, keyAt(at), entries[index]));
      }
    }
    return found.filter((entry): entry is KeyedEntry => entry !== undefined);
  }

  /** Removes `key` if it holds the tombstone of `cas` or an older version (see Replica.purge). */
  async purgeOne(key: string, cas: bigint): Promise<void> {
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
    this.#index.setSettled(this.#index.refOf(key), false);
    this.#cache.delete(key);
    await this.#backend.delete(key);
    this.#index.delete(key);
  }

  async #write(key: string, entry: Entry): Promise<void> {
    const present = this.#presence(key);
    // Remember first: if the write fails halfway, the index still lists the key (a superset).
    const ref = this.#index.remember(key, entry, false);
    // Cached only once acknowledged: until then the backend may hold either version.
    this.#cache.withhold(key);
    const generation = this.#cache.generation;
    await this.#backend.set(key, entry, present);
    this.#index.setSettled(ref, true);
    if (generation === this.#cache.generation) this.#cache.set(key, entry);
  }

  /**
   * `#write` sent quietly (KVBackend.setQuiet): taken as done at once, so cached and settled now;
   * a failure reaches the Replica later and makes it suspect. Only when the index is sure whether
   * memcached holds the key: an add or replace that found it otherwise would be refused, and the
   * requests behind it would have seen the key as memcached had it. False, sending nothing, if not.
   */
  #writeQuietly(key: string, entry: Entry, ref: IndexRef): boolean {
    const present = this.#presenceOf(ref);
    if (present === undefined) return false;
    if (ref !== NO_RECORD) {
      const expiresAtMs = this.#index.expiresAtMs(ref);
      const expiresSoon = expiresAtMs !== 0 && expiresAtMs <= clockMs() + QUIET_EXPIRY_MARGIN_MS;
      if (!this.#index.settled(ref) || expiresSoon) return false;
    }
    if (this.#backend.setQuiet?.(key, entry, present) !== true) return false;
    this.#index.remember(key, entry, true, ref);
    this.#cache.set(key, entry);
    return true;
  }

  /**
   * The backend's entry of `key` (undefined if absent): from the cache or the index when they
   * know it, else read (and cached). Only called with no other call on `key` running.
   */
  #current(key: string): Entry | undefined | Promise<Entry | undefined> {
    const known = this.known(key);
    return known === null ? this.#readBackend(key) : known;
  }

  /** The backend's entry of `key` when the cache or the index knows it (undefined: absent), else null. */
  known(key: string): Entry | undefined | null {
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
    return this.#presenceOf(this.#index.refOf(key));
  }

  /** `#presence` of the key whose record is `ref` (NO_RECORD: none). */
  #presenceOf(ref: IndexRef): KeyPresence {
    if (ref !== NO_RECORD) return true;
    return this.#indexComplete ? false : undefined;
  }

  /**
   * Reads `key` from the backend and caches what it holds, unless the cache was cleared meanwhile.
   * A record only listed so far, still in place, is settled by what was read.
   */
  async #readBackend(key: string): Promise<Entry | undefined> {
    const generation = this.#cache.generation;
    const ref = this.#index.refOf(key);
    const entry = await this.#backend.get(key);
    this.#learnRead(key, ref, entry);
    if (entry !== undefined && generation === this.#cache.generation) this.#cache.set(key, entry);
    return entry;
  }

  /**
   * `#readBackend` of distinct `keys` in one pipelined call, without filling the value cache: a
   * read of many keys (a page of a whole-replica read) is a scan, and would evict the keys clients use.
   */
  async #readBackendMany(getMany: NonNullable<KVBackend['getMany']>, keys: readonly string[]): Promise<Array<Entry | undefined>> {
    const refs = keys.map((key) => this.#index.refOf(key));
    const entries = await getMany.call(this.#backend, keys);
    keys.forEach((key, at) => this.#learnRead(key, refs[at] ?? NO_RECORD, entries[at]));
    return entries;
  }

  /**
   * What a read of `key` from the backend tells the index, of a listed key (`ref`, its record
   * then). The record is settled in place: a start-up read of millions of keys then looks up none
   * of them again. (A record a write replaced meanwhile is no longer current, and settling it
   * changes nothing.)
   */
  #learnRead(key: string, ref: IndexRef, entry: Entry | undefined): void {
    if (!this.#index.isCurrent(ref) || !this.#index.listed(ref)) return;
    if (entry === undefined) this.#index.deleteIf(key, ref);
    else this.#index.describe(ref, entry);
  }

  /** With `skip-applied`: does the key already hold this op's change or a later one? */
  #isApplied(entry: { cas: bigint } | undefined, ctx: ApplyContext): boolean {
    return this.#skipApplied && entry !== undefined && entry.cas >= ctx.cas;
  }

  /** `#isApplied` of the version the index knows of a key, `ref` its record (a listed key's, -1, never is). */
  #isIndexedApplied(ref: IndexRef, ctx: ApplyContext): boolean {
    return this.#skipApplied && ref !== NO_RECORD && this.#index.cas(ref) >= ctx.cas;
  }

  /**
   * Whether a merge of `entry` into `key` writes it, as the index decides (the greater cas wins):
   * false when the replica holds as much already; undefined when the index cannot tell (see #knownCas).
   */
  mergeWrites(key: string, entry: Entry, joinCas: bigint | undefined): boolean | undefined {
    const known = this.#knownCas(key, joinCas === undefined ? undefined : entry);
    return known === undefined ? undefined : known === null || known < entry.cas;
  }

  /**
   * The backend's version of `key` as the index knows it: null if absent, undefined if unknown or,
   * for a merge, if greater-cas-wins cannot decide it (counter metadata on either side).
   */
  #knownCas(key: string, merging?: Entry): bigint | null | undefined {
    const ref = this.#index.refOf(key);
    if (ref === NO_RECORD) return this.#indexComplete ? null : undefined;
    if (merging !== undefined && (this.#index.counted(ref) || isCounted(merging))) return undefined;
    return this.#index.settled(ref) ? this.#index.cas(ref) : undefined;
  }
}
