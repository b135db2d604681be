/**
 * A replica's storage as the controller sees it: entries with the controller's own metadata, and
 * the operations (`Op`) every mode replicates and applies.
 *
 * Glossary: *apply* means the local store has it; cas tokens are the controller's versions
 * (`Entry.cas`), never memcached's own, because memcached's differ per replica. Expiry is absolute
 * (`expiresAtMs`, ms since the Unix epoch, 0 = never), fixed by the controller that took the
 * write, so every replica expires an item at the same moment.
 */

import type { ArithVerb, StoreVerb } from '../protocol/types.ts';
import type { Refusal } from '../protocol/refusals.ts';
import type { CounterState } from './counter.ts';

/** What a replica stores under one key. */
export interface Entry {
  value: Buffer;
  flags: number;
  /** Absolute expiry in ms since the epoch; 0 = never. */
  expiresAtMs: number;
  /** The controller's version of this entry: the cas token clients see. */
  cas: bigint;
  /** Eventual mode keeps deletes as tombstones; a tombstone reads as absent. */
  tombstone?: boolean;
  /** Eventual and causal modes: the version of the store this value counts from, when not `cas`. */
  resetCas?: bigint;
  /** Eventual and causal modes: incr/decr since that store, per node (see ./counter.ts). */
  counter?: CounterState;
}

/**
 * A replicated operation: a client command with its expiry made absolute. A non-zero `casUnique`
 * makes the op conditional on the item's cas (verb 'cas'; binary append/prepend, incr/decr and
 * delete with a header cas); 0n or absent means unconditional.
 */
export type Op =
  | {
      kind: 'store';
      verb: StoreVerb;
      key: string;
      flags: number;
      expiresAtMs: number;
      value: Buffer;
      casUnique: bigint;
    }
  | {
      kind: 'arith';
      verb: ArithVerb;
      key: string;
      delta: bigint;
      initial: bigint | null;
      expiresAtMs: number;
      casUnique?: bigint;
    }
  | { kind: 'delete'; key: string; casUnique?: bigint }
  | { kind: 'touch'; key: string; expiresAtMs: number }
  /** Read and touch: a write, because it changes expiry. */
  | { kind: 'gat'; keys: string[]; expiresAtMs: number }
  | { kind: 'get'; keys: string[] }
  /** Invalidate every item: at once when `delayMs` is 0, else items existing now expire then. */
  | { kind: 'flush_all'; delayMs: number };

export type OpKind = Op['kind'];

/** True for the ops that change state (everything but a plain get). */
export function isWrite(op: Op): boolean {
  return op.kind !== 'get';
}

/** Whether `op`'s outcome shows nothing of what its keys held: a plain set (no cas), or flush_all. */
export function showsNothing(op: Op): boolean {
  return op.kind === 'flush_all' || (op.kind === 'store' && op.verb === 'set' && (op.casUnique ?? 0n) === 0n);
}

/** The keys an op touches; flush_all touches all of them and returns null. */
export function opKeys(op: Op): readonly string[] | null {
  switch (op.kind) {
    case 'get':
    case 'gat':
      return op.keys;
    case 'flush_all':
      return null;
    default:
      return [op.key];
  }
}

/** How the backing store is doing, for `show` and for detecting an emptied memcached. */
export interface BackendHealth {
  ok: boolean;
  detail: string;
  /**
   * Changes when the backend lost its contents (memcached restarted): the controller then
   * rebuilds the replica from its peers.
   */
  epoch: string;
  /**
   * What the backend holds and may hold, in bytes, when it says (memcached's `bytes`,
   * `limit_maxbytes`), memcached's slab state, to tell whether an item of some size still fits, and
   * the longest item it takes at all (`item_size_max`, its -I), the items it holds (`curr_items`).
   * `keys`/`keysMax` (both or neither): the keys its controller counts, at least `items`, and the
   * most it can index (controller/key-room.ts); the controller adds them, not the backend.
   */
  memory?: {
    usedBytes: number; limitBytes: number; slabs?: SlabState; itemBytesMax?: number; items?: number; keys?: number; keysMax?: number;
  };
  /**
   * Items the backend threw away for room since it started (memcached's `evictions` counter). It
   * growing within one epoch means the replica lost data: the controller rebuilds it.
   */
  evictions?: number;
  /** The backend evicts when full (memcached started without -M) rather than refusing writes. */
  evictsWhenFull?: boolean;
  /**
   * flush_all commands memcached ran since it started (`cmd_flush`), and those this backend object
   * sent: more of the first than of the second means another client flushed the replica.
   */
  flushes?: { total: number; ours: number };
}

/** A key and its entry, as a batch of writes carries them. */
export type KeyedPair = readonly [key: string, entry: Entry];

/** A (key, entry) pair moved between replicas; tombstones included. */
export type KeyedEntry = [key: string, entry: Entry];

/** One size class that holds pages, as `stats slabs` lists it. */
export interface SlabClass {
  id: number;
  chunkBytes: number;
  freeChunks: number;
}

/** memcached's slab state, from `stats`, `stats slabs` and `stats settings`. */
export interface SlabState {
  /** Bytes of one slab page. */
  pageBytes: number;
  /** Pages no class holds: never handed out (limit − total_malloced) plus the global page pool. */
  freePages: number;
  /** Largest chunk (`slab_chunk_max`); bigger items are split into chunks of this size. */
  chunkMaxBytes: number;
  /** The classes that hold pages, by id. */
  classes: SlabClass[];
  /**
   * memcached's chunk size of every class, class 1 first (see slabClassSizes), or null when the
   * listed classes do not match that table.
   */
  classSizes: number[] | null;
}

/** Typed operating error from a backend (down, timed out). Becomes a SERVER_ERROR reply. */
export class StoreError extends Error {
  override readonly name = 'StoreError';
  /**
   * BACKEND_FAILED only: the backend refused the call and changed nothing (memcached refusing an
   * add or a replace for want of memory keeps the key's old item; refusing a plain set, it drops
   * it). Such a failure loses nothing the replica held.
   */
  readonly untouched: boolean;
  /**
   * With `untouched`: memcached's own refusal (out of memory, too large), what a client of
   * memcached would have been told.
   */
  readonly refusal: Refusal | undefined;
  constructor(
    readonly code: 'BACKEND_DOWN' | 'BACKEND_TIMEOUT' | 'BACKEND_FAILED' | 'BACKEND_RESET',
    message: string,
    options?: { cause?: unknown; untouched?: boolean; refusal?: Refusal },
  ) {
    super(message, options);
    this.untouched = options?.untouched ?? false;
    this.refusal = options?.refusal;
  }
}

/**
 * What a writer knows of a key in the backend before it writes it: held (true), not held (false),
 * or not known (undefined). A hint: the backend writes the entry either way (memcached's: with
 * fewer round trips when the hint is right).
 */
export type KeyPresence = boolean | undefined;

/**
 * The storage of one replica: a plain key-value map of entries. Adapters: memcached (memjs) and
 * the embedded in-memory store. Every method may reject with a `StoreError`.
 */
export interface KVBackend {
  readonly kind: 'memcache' | 'memory';
  get(key: string): Promise<Entry | undefined>;
  /** The entries of distinct `keys` (undefined where absent), in one pipelined call; optional (else `get` each). */
  getMany?(keys: readonly string[]): Promise<Array<Entry | undefined>>;
  set(key: string, entry: Entry, present?: KeyPresence): Promise<void>;
  /**
   * Sets every (key, entry) pair, the keys distinct; settles once every pair is answered, rejecting
   * if any failed (the others may or may not have been set), with a failure that says `untouched`
   * only if every failure in the batch did. One promise for the whole batch.
   * `present`, when given, holds each key's KeyPresence, in the same order.
   */
  setMany(entries: readonly KeyedPair[], present?: readonly KeyPresence[]): Promise<void>;
  /**
   * Optional: sends a store that is taken as done at once, its failure reported later to
   * `onQuietFailure`; false when it cannot now (the caller uses `set`). See MemcachedBackend.
   */
  setQuiet?(key: string, entry: Entry, present: KeyPresence): boolean;
  /** Resolves once every store sent by `setQuiet` so far is known done or reported failed. */
  settle?(): Promise<void>;
  /** Told of each store sent by `setQuiet` that failed or may have. */
  onQuietFailure?: ((error: StoreError) => void) | null;
  delete(key: string): Promise<void>;
  /** Remove everything. */
  flush(): Promise<void>;
  health(): Promise<BackendHealth>;
  /**
   * After a BACKEND_RESET error (the backend lost its contents: a new epoch), the backend refuses
   * every operation until the controller has told the mode and calls this; from then on the new
   * epoch is the expected one. Optional: a backend that cannot be reset behind our back has none.
   * True when the backend surely holds nothing now: it held no item when the new epoch was found,
   * and every call since was refused.
   */
  acknowledgeReset?(): boolean;
  /** The epoch this backend had when the controller last ran: a different one at start is a reset. */
  expectEpoch?(epoch: string): void;
  close(): Promise<void>;
}
