/**
 * How many keys this controller can index, and how much its in-process parts may hold, within its
 * JavaScript heap.
 *
 * Each controller keeps a record per key in memory (the replica's index; in eventual and causal
 * mode a version index too), and a JavaScript Map holds at most 2^24 entries. Past either bound
 * the process dies (a heap out of memory is fatal) and, restarting beside the same memcached,
 * dies again. So each controller reports the most keys it can hold (`keysMax`) beside its
 * memcached's memory, and the memory guard refuses a write of a new key that some replica has no
 * room for, as memcached refuses one it has no memory for (store/memory-guard.ts).
 *
 * The per-key costs are rounded up with room to spare: a 26-byte key costs the replica's index
 * about 75 bytes of heap (store/key-index.ts; bench/index-gc.ts measures it), and eventual mode's
 * version index about 40 more; their fields live in arrays outside the heap (about 20 and 75 bytes
 * a key). What a controller holds besides them is set aside first (in a 96 MiB heap,
 * 40% of the whole let an eventual controller loaded past its bound run out). Raising Node's heap
 * (`--max-old-space-size`) raises the bound.
 */

import { getHeapStatistics } from 'node:v8';

/** A JavaScript Map's most entries (V8: 2^24), less a margin for what arrives past a refusal. */
const MAP_KEYS_MAX = 15_000_000;
/** What a controller holds besides its key records under load (code, buffers, queues, the cache's default). */
const HEAP_BASELINE_BYTES = 96 * 1024 * 1024;
/** The share of the heap past that baseline the key records may take. */
const KEYS_HEAP_SHARE = 0.4;
/** Heap bytes per key: the ordered modes' index record, and with eventual and causal's version records. */
const KEY_BYTES = { ordered: 300, versioned: 400 } as const;
/** The share of the heap the value cache may take (a larger `cache_bytes_max` is refused at start). */
const CACHE_HEAP_SHARE = 0.25;
/** The share of the heap the embedded store's values may take. */
const EMBEDDED_STORE_HEAP_SHARE = 0.15;

/** This process's heap limit, in bytes. */
export function heapLimitBytes(): number {
  return getHeapStatistics().heap_size_limit;
}

/** The most keys a controller indexes in a heap of `heapBytes` (`versioned`: eventual or causal mode). */
export function keysMaxFor(heapBytes: number, versioned: boolean): number {
  const perKey = versioned ? KEY_BYTES.versioned : KEY_BYTES.ordered;
  return Math.min(MAP_KEYS_MAX, Math.floor((Math.max(0, heapBytes - HEAP_BASELINE_BYTES) * KEYS_HEAP_SHARE) / perKey));
}

/** Why a value cache of `cacheBytes` does not fit a heap of `heapBytes`, or null. */
export function cacheProblem(cacheBytes: number, heapBytes: number): string | null {
  const most = Math.floor(heapBytes * CACHE_HEAP_SHARE);
  if (cacheBytes <= most) return null;
  return `cache_bytes_max ${cacheBytes} is more than a quarter of this controller's heap (${heapBytes} bytes): `
    + `lower it, or give Node.js a larger heap (NODE_OPTIONS=--max-old-space-size=MiB)`;
}

/** What the embedded store's items may take in a heap of `heapBytes` (its memory guard's limit). */
export function embeddedStoreBytesMax(heapBytes: number): number {
  return Math.floor(heapBytes * EMBEDDED_STORE_HEAP_SHARE);
}
