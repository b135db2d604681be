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
 * The mode asks (MachineOptions.refuseStore) at the node that orders writes: in the ordered
 * modes the leader, which sees every write of the cluster, so writes taken by several controllers
 * at once cannot together overshoot what one of them checked. In eventual mode every node decides
 * the writes it takes, and counts the others' as their pushes arrive (`arrived`): what they admit
 * within one push interval is not seen, and the margin must cover it. Each replica's memcached
 * counts: the peers report theirs in their heartbeats (`peerReported`), so memcached servers of
 * different sizes, or one that other clients also fill, make the cluster refuse what the fullest
 * replica has no room for, instead of that replica failing the write and being rebuilt (or, were
 * every replica to fail it, none being left to rebuild from).
 *
 * A store whose item is longer than memcached takes at all (its -I) is refused as memcached refuses
 * it, "object too large for cache", rather than failing at every replica.
 *
 * Invariants: only stores are ever refused (deletes, reads and the rest free or keep memory); a
 * backend that says nothing of its memory refuses nothing; what was admitted is forgotten only
 * when a poll replaces it with what the backend holds (a peer's: a report of a later poll); a
 * peer that is down counts no more (it catches up, or is rebuilt, when it returns).
 *
 * Known gap: a poll forgets every write admitted before it, also those still on their way to
 * that memcached (not yet pushed, applied or stored when it polled). A writer at full speed on a
 * loaded machine can so overshoot the margin (README, the failure table). Closing it needs each
 * report to say which admitted writes its poll already counts (the replica's applied log index,
 * or last push batch, at poll time).
 */

import { TEXT_ERRORS } from '../protocol/errors.ts';
import { itemRoom, storedItemBytes, type ItemRoom } from './slab-room.ts';
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

/** What a backend said of its memory (BackendHealth.memory). */
export type BackendMemory = NonNullable<BackendHealth['memory']>;

/** One replica's memcached: what it said last, and what was admitted since (about). */
interface View {
  memory: BackendMemory;
  /** Bytes admitted here, or arrived from other nodes that admit writes, since. */
  admittedBytes: number;
  /** Items so counted, by the size class they go to. */
  admittedBySlab: Map<string, number>;
}

export class MemoryGuard {
  /** This node's memcached, as the last poll found it (null: it said nothing of its memory). */
  #own: View | null = null;
  /** The peers' memcached, as their latest reports said, by peer. */
  readonly #peers = new Map<string, View & { poll: number }>();
  /** Ours (when our memcached says what it holds) and the peers', rebuilt when one is replaced. */
  #views: View[] = [];

  /** A poll read the backend (or failed: undefined): its memory replaces what was counted since. */
  polled(memory: BackendHealth['memory']): void {
    this.#own = memory === undefined ? null : freshView(memory);
    this.#listViews();
  }

  /**
   * A peer reported its memcached as of its poll number `poll` (memory undefined: it said nothing,
   * or it is gone); a new poll replaces what was counted since its last one.
   */
  peerReported(peer: string, report: { memory: BackendMemory; poll: number } | undefined): void {
    if (report === undefined) {
      if (this.#peers.delete(peer)) this.#listViews();
      return;
    }
    if (this.#peers.get(peer)?.poll === report.poll) return;
    this.#peers.set(peer, { ...freshView(report.memory), poll: report.poll });
    this.#listViews();
  }

  /**
   * Why some replica's memcached cannot take `op` — its own message: "object too large for cache"
   * for an item longer than memcached takes at all, "out of memory storing object" for one it has
   * no room for — or null when every replica can, and then `op` is counted as admitted by each.
   */
  refusal(op: Op): string | null {
    if (op.kind !== 'store') return null;
    // An append's item size depends on the value it extends: only its bytes are counted.
    const sized = op.verb !== 'append' && op.verb !== 'prepend';
    const itemBytes = sized ? storedItemBytes(op.key, op.value.length) : 0;
    const bytes = op.key.length + op.value.length + ITEM_OVERHEAD_BYTES;
    const views = this.#views;
    const rooms: Array<ItemRoom | null> = [];
    for (const view of views) {
      const { memory } = view;
      if (memory.itemBytesMax !== undefined && itemBytes + FLAGS_BYTES > memory.itemBytesMax) return TOO_LARGE;
      if (memory.usedBytes + view.admittedBytes + bytes > memory.limitBytes * BYTES_USE_MAX) return OUT_OF_MEMORY;
      const room = memory.slabs !== undefined && sized ? itemRoom(memory.slabs, itemBytes) : null;
      if (room !== null && (view.admittedBySlab.get(room.label) ?? 0) + 1 > room.items * (1 - SLAB_ROOM_RESERVE) - room.perPage) return OUT_OF_MEMORY;
      rooms.push(room);
    }
    views.forEach((view, i) => {
      const room = rooms[i];
      if (room !== null) view.admittedBySlab.set(room.label, (view.admittedBySlab.get(room.label) ?? 0) + 1);
      view.admittedBytes += bytes;
    });
    return null;
  }

  #listViews(): void {
    this.#views = this.#own === null ? [...this.#peers.values()] : [this.#own, ...this.#peers.values()];
  }

  /**
   * Counts items another node admitted, as they arrive here to be stored (an eventual peer's
   * push, a state transfer): they take room in every replica, and the node deciding here would
   * otherwise learn of them only at the next poll. Never refuses.
   */
  arrived(items: ReadonlyArray<readonly [key: string, valueBytes: number]>): void {
    const views = this.#views;
    for (const [key, valueBytes] of items) {
      const itemBytes = storedItemBytes(key, valueBytes);
      for (const view of views) {
        view.admittedBytes += key.length + valueBytes + ITEM_OVERHEAD_BYTES;
        if (view.memory.slabs === undefined) continue;
        const { label } = itemRoom(view.memory.slabs, itemBytes);
        view.admittedBySlab.set(label, (view.admittedBySlab.get(label) ?? 0) + 1);
      }
    }
  }
}

function freshView(memory: BackendMemory): View {
  return { memory, admittedBytes: 0, admittedBySlab: new Map() };
}

/** Whether a peer's report (decoded from its heartbeat) is a BackendMemory, as far as the guard reads it. */
export function isBackendMemory(value: unknown): value is BackendMemory {
  if (typeof value !== 'object' || value === null) return false;
  const memory = value as Record<string, unknown>;
  if (!isCount(memory.usedBytes) || !isCount(memory.limitBytes)) return false;
  if (memory.itemBytesMax !== undefined && !isCount(memory.itemBytesMax)) return false;
  return memory.slabs === undefined || isSlabState(memory.slabs);
}

function isSlabState(value: unknown): boolean {
  if (typeof value !== 'object' || value === null) return false;
  const slabs = value as Record<string, unknown>;
  if (!isCount(slabs.pageBytes) || !isCount(slabs.freePages) || !isCount(slabs.chunkMaxBytes)) return false;
  if (!Array.isArray(slabs.classes)) return false;
  const classesOk = slabs.classes.every(
    (slab: unknown) => typeof slab === 'object' && slab !== null && ['id', 'chunkBytes', 'freeChunks'].every((field) => isCount((slab as Record<string, unknown>)[field])),
  );
  return classesOk && (slabs.classSizes === null || (Array.isArray(slabs.classSizes) && slabs.classSizes.every(isCount)));
}

function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0;
}
