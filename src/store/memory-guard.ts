/**
 * Whether memcached has room for a write, so that writes it has no room for are refused up front
 * (memcached's own `SERVER_ERROR out of memory storing object`) instead of failing in memcached.
 *
 * Intuition: memcached started with -M refuses a write it has no room for, and the replicas hold
 * the same data, so such a write would fail at every replica at once and leave none that a peer
 * could rebuild from: every node would refuse everything from then on. The guard refuses first,
 * by two counts, each what the last poll of memcached said plus what was admitted since:
 * - bytes: at most `bytesUseMax` of memcached's memory (`-m`); the margin covers memcached's
 *   slab rounding and writes still in flight when a poll reads the stats;
 * - the item's size class (./slab-room.ts): memcached gives memory to a class a page at a time and
 *   pages stay with the class that took them, so after small items filled memory and were
 *   deleted, a larger item may find no room although few bytes are used. Writes leave
 *   `slabRoomReserve` of the room for their class, and one page's worth more, for the replicas'
 *   slabs differing a little and for writes in flight.
 *
 * The mode asks (MachineOptions.admit) at the node that orders writes: in the ordered modes the
 * leader, which sees every write of the cluster, so writes taken by several controllers at once
 * cannot together overshoot what one of them checked. The replicas' memcached servers are taken to
 * be of one size (startup.sh starts them alike).
 *
 * A store whose item is longer than memcached takes at all (its -I) is refused as memcached refuses
 * it, "object too large for cache", rather than failing at every replica.
 *
 * Invariants: only stores are ever refused (deletes, reads and the rest free or keep memory); a
 * backend that says nothing of its memory refuses nothing; what was admitted is forgotten only
 * when a poll replaces it with what the backend holds.
 */

import { TEXT_ERRORS } from '../protocol/errors.ts';
import { itemRoom, storedItemBytes } from './slab-room.ts';
import type { BackendHealth, Op } from './types.ts';

/** Most of memcached's memory the stored items may take. */
const BYTES_USE_MAX = 0.7;
/** What writes leave of the room for their size class (and one page's worth more). */
const SLAB_ROOM_RESERVE = 0.1;
/** memcached's per-item overhead, roughly (header, cas, suffix), for estimating what a write adds. */
const ITEM_OVERHEAD_BYTES = 56;
/** What memcached's flags may add to an item. */
const FLAGS_BYTES = 4;
/** memcached's replies to a store it cannot take. */
const OUT_OF_MEMORY = TEXT_ERRORS.outOfMemory;
const TOO_LARGE = TEXT_ERRORS.objectTooLarge;

export class MemoryGuard {
  #memory: BackendHealth['memory'] = undefined;
  /** Bytes the stores admitted since the last poll add, about. */
  #admittedBytes = 0;
  /** Items admitted since the last poll, by the size class they go to. */
  readonly #admittedBySlab = new Map<string, number>();

  /** A poll read the backend (or failed: undefined): its memory replaces what was counted since. */
  polled(memory: BackendHealth['memory']): void {
    this.#memory = memory;
    this.#admittedBytes = 0;
    this.#admittedBySlab.clear();
  }

  /**
   * Why memcached cannot take `op` — its own message: "object too large for cache" for an item
   * longer than memcached takes at all, "out of memory storing object" for one it has no room
   * for — or null when it can, and then `op` is counted as admitted.
   */
  refusal(op: Op): string | null {
    const memory = this.#memory;
    if (memory === undefined || op.kind !== 'store') return null;
    // An append's item size depends on the value it extends: only its bytes are counted.
    const sized = op.verb !== 'append' && op.verb !== 'prepend';
    const itemBytes = sized ? storedItemBytes(op.key, op.value.length) : 0;
    if (memory.itemBytesMax !== undefined && itemBytes + FLAGS_BYTES > memory.itemBytesMax) return TOO_LARGE;
    const bytes = op.key.length + op.value.length + ITEM_OVERHEAD_BYTES;
    if (memory.usedBytes + this.#admittedBytes + bytes > memory.limitBytes * BYTES_USE_MAX) return OUT_OF_MEMORY;
    if (memory.slabs !== undefined && sized) {
      const room = itemRoom(memory.slabs, itemBytes);
      const admitted = this.#admittedBySlab.get(room.label) ?? 0;
      if (admitted + 1 > room.items * (1 - SLAB_ROOM_RESERVE) - room.perPage) return OUT_OF_MEMORY;
      this.#admittedBySlab.set(room.label, admitted + 1);
    }
    this.#admittedBytes += bytes;
    return null;
  }
}
