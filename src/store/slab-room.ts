/**
 * How many more items of a given size memcached can take, from its slab statistics.
 *
 * Intuition: memcached stores an item in the smallest of its size classes whose chunk holds it,
 * and gives memory to a class one page (1 MB) at a time. A page stays with its class after the
 * items in it are deleted, until memcached's slab mover takes it back (slowly, by default over a
 * 30 s window). So after a cluster filled memory with small items and deleted them, memcached
 * may refuse a larger item although its item bytes are near zero: the larger item's class has no
 * free chunk and no free page is left. Counting bytes cannot see that; counting the item's class
 * can: the free chunks of that class, plus the pages not yet given to any class.
 *
 * Invariants: `itemRoom` never counts chunks of a class the item does not go to. When the item's
 * class is not among the classes that hold pages (memcached lists only those), its room is what
 * free pages give. Every input is what memcached said at the last poll; between polls the caller
 * counts what it admitted.
 */

import { HEADER_BYTES, memcachedKey } from './codec.ts';
import type { SlabClass, SlabState } from './types.ts';

/** The slab state's shapes live with the backend's health (./types.ts); re-exported here, where they are read. */
export type { SlabClass, SlabState } from './types.ts';

/** Where an item of some size goes, and how many more of them fit now. */
export interface ItemRoom {
  /** The class, or a label for a class not yet holding pages. Stable between polls. */
  label: string;
  items: number;
  /** How many such items one page holds. */
  perPage: number;
}

/** memcached's per-item overhead: its item header (48 bytes), cas (8), key terminator and "\r\n". */
const MEMCACHED_ITEM_BYTES = 48 + 8 + 1 + 2;

/**
 * The bytes memcached allocates for our entry of `valueBytes` under `key`, as ./codec.ts lays it
 * out (its header, and the key itself when it is stored hashed); memcached's flags add 4 at most.
 */
export function storedItemBytes(key: string, valueBytes: number): number {
  const stored = memcachedKey(key);
  const keptKeyBytes = stored.hashed ? 1 + key.length : 0;
  return MEMCACHED_ITEM_BYTES + stored.key.length + HEADER_BYTES + keptKeyBytes + valueBytes;
}

/** Room for items of `itemBytes` each; the smaller of the two sizes' rooms when one may be 4 bytes more. */
export function itemRoom(state: SlabState, itemBytes: number): ItemRoom {
  const low = roomFor(state, itemBytes);
  const high = roomFor(state, itemBytes + 4);
  return high.items < low.items ? high : low;
}

function roomFor(state: SlabState, itemBytes: number): ItemRoom {
  if (itemBytes > state.chunkMaxBytes) {
    // Split into chunks of the largest class: count bytes of its free chunks and of free pages.
    const largest = state.classes.find((slab) => slab.chunkBytes >= state.chunkMaxBytes);
    const freeBytes = (largest?.freeChunks ?? 0) * state.chunkMaxBytes + state.freePages * state.pageBytes;
    return { label: 'chunked', items: Math.floor(freeBytes / itemBytes), perPage: Math.max(1, Math.floor(state.pageBytes / itemBytes)) };
  }
  const home = homeClass(state, itemBytes);
  const perPage = Math.floor(state.pageBytes / home.chunkBytes);
  const listed = state.classes.find((slab) => slab.id === home.id);
  return { label: `class:${home.id}`, items: (listed?.freeChunks ?? 0) + state.freePages * perPage, perPage };
}

/** memcached's item header, on which its smallest chunk size builds (64-bit builds). */
const ITEM_HEADER_BYTES = 48;
/** memcached aligns every chunk size to this. */
const CHUNK_ALIGN_BYTES = 8;

/**
 * memcached's size classes, as its slabs_init computes them: from the item header plus the
 * minimum chunk (-n), each the previous times the growth factor (truncated, then aligned to 8
 * bytes), up to the largest chunk, which is the last class.
 */
export function slabClassSizes(minChunkBytes: number, growthFactor: number, chunkMaxBytes: number): number[] {
  const sizes: number[] = [];
  let size = ITEM_HEADER_BYTES + minChunkBytes;
  while (sizes.length < 62 && size < chunkMaxBytes / growthFactor) {
    if (size % CHUNK_ALIGN_BYTES !== 0) size += CHUNK_ALIGN_BYTES - (size % CHUNK_ALIGN_BYTES);
    sizes.push(size);
    size = Math.trunc(size * growthFactor);
  }
  sizes.push(chunkMaxBytes);
  return sizes;
}

/**
 * The class an item goes to: the smallest whose chunk holds it. From memcached's class table when
 * the listed classes agree with it; otherwise (a memcached started with -o slab_sizes, say) the
 * smallest listed class that holds it if its lower neighbour is listed too, else a class of the
 * item's own size that holds no page (no free chunks are counted for it).
 */
function homeClass(state: SlabState, itemBytes: number): { id: number; chunkBytes: number } {
  const sizes = state.classSizes;
  if (sizes !== null) {
    const index = sizes.findIndex((size) => size >= itemBytes);
    const chunkBytes = sizes[index];
    // memcached's table ends with the largest chunk, which holds every item that comes here; a
    // table that stops short (only a peer's report could send one) is not trusted: the classes
    // memcached listed decide, as when no table is known.
    if (chunkBytes !== undefined) return { id: index + 1, chunkBytes };
  }
  let home: SlabClass | null = null;
  for (const slab of state.classes) {
    if (slab.chunkBytes >= itemBytes && (home === null || slab.chunkBytes < home.chunkBytes)) home = slab;
  }
  if (home !== null && (home.id === 1 || state.classes.some((slab) => slab.id === home.id - 1))) return home;
  return { id: 0, chunkBytes: itemBytes };
}
