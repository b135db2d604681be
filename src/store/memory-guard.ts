/**
 * Whether memcached has room for a write, so that a write it has no room for is refused up front
 * (memcached's own `SERVER_ERROR out of memory storing object`) instead of failing at every
 * replica at once and leaving none to rebuild from.
 *
 * Three counts, each what a replica's last report said plus what was admitted since and is not in
 * it: bytes (at most `bytesUseMax` of `-m`), room in the item's slab class (./slab-room.ts), and
 * keys, against the most its controller can index in its heap (`keysMax`, controller/key-room.ts;
 * only a set or an add may add one).
 * A key's writes admitted here count once, as memcached replaces its item (`addsTo`). Counting by
 * key costs a map entry per key and view, so a view counts every admission whole (an upper bound)
 * until that would refuse one, and only then by key (`#countByKey`).
 * The node that orders writes asks, inside its mode's step (consistency/memory-admission.ts);
 * peers' reports of their own memcached count too, so the fullest replica decides.
 *
 * Invariants: only stores are refused; a backend that says nothing of its memory refuses nothing;
 * an admission is forgotten for a replica only once a report of it covers its version; at most
 * ADMITTED_KEPT_MAX admissions per writer. Why each rule, and where the counts are approximate:
 * docs/memory-full.md, "How the memory guard counts".
 */

import { itemAt } from '../runtime/item-at.ts';
import { refused, type Refusal } from '../protocol/refusals.ts';
import { itemRoom, storedItemBytes, type ItemRoom } from './slab-room.ts';
import type { BackendHealth, Op } from './types.ts';

/** Most of memcached's memory the stored items may take. */
const BYTES_USE_MAX = 0.7;
/** What writes leave of the room for their size class; one page's worth more, up to as much again. */
const SLAB_ROOM_RESERVE = 0.1;
/** memcached's per-item overhead, roughly (header, cas, suffix), for estimating what a write adds. */
const ITEM_OVERHEAD_BYTES = 56;
/** What memcached's flags may add to an item. */
const FLAGS_BYTES = 4;
/** Admissions kept per writer until reports cover them; beyond, the oldest half is forgotten. */
const ADMITTED_KEPT_MAX = 1 << 18;
/** memcached's replies to a store it cannot take. */
const OUT_OF_MEMORY = refused('out_of_memory');
const TOO_LARGE = refused('too_large');

/** What a backend said of its memory (BackendHealth.memory). */
export type BackendMemory = NonNullable<BackendHealth['memory']>;

/** Per writer, the greatest version a replica had stored when its poll began. */
export type Stored = ReadonlyMap<number, bigint>;

/** Which writer a version is from: each writer's versions grow in the order it writes them. */
export type WriterOf = (version: bigint) => number;

/** A report of a replica's memcached: its memory, and what it had stored when the poll began. */
export interface MemoryReport {
  memory: BackendMemory;
  /** None: the reporter keeps no marks; the report covers everything admitted before it. */
  stored?: Stored;
}

/** A peer's report, as of its poll number `poll` (each poll of its memcached counts one up). */
export type PeerMemoryReport = MemoryReport & { poll: number };

/** One writer's admissions (and arrivals) not yet covered by every report, oldest first. */
interface Admitted {
  /** The absolute position of the first one kept (positions count every admission). */
  base: number;
  versions: bigint[];
  /** Each one's key; null for an arrival counted whole (see `arrived`). */
  keys: Array<string | null>;
  /** What each adds to memcached's bytes. */
  bytes: number[];
  /** Each one's item size, for its size class (0: unknown, an append's). */
  itemBytes: number[];
  /** Whether each may add a key (a set, an add, an arrival). */
  newKeys: boolean[];
}

/** What an admission adds to a view: bytes, and the size class it takes a chunk of, if any (`addsTo`). */
type Added = { bytes: number; room: ItemRoom | null; keys: number; counted: Counted | undefined };

/** One replica's memcached: what it said last, and the admissions its report does not cover. */
interface View {
  memory: BackendMemory;
  /** Per writer, the absolute position of the first admission not covered. */
  from: Map<number, number>;
  admittedBytes: number;
  /** Keys those admissions may add. */
  admittedKeys: number;
  /** Those admissions by the size class they go to. */
  admittedBySlab: Map<string, number>;
  /** Per key admitted, what it counts for here (`addsTo`); null: every admission counts whole. */
  counted: Map<string, Counted> | null;
  /** Each item size's room, as `memory` says (asked for every write, the same few sizes again and again). */
  rooms: Map<number, ItemRoom | null>;
}

/** What a key's admissions count for in a view: its largest item's bytes, appends adding theirs, and the class of its last chunk. */
interface Counted {
  bytes: number;
  label: string | null;
  /** Counted as a key added. */
  key: boolean;
}

export class MemoryGuard {
  /** This node's memcached, as the last poll found it (null: it said nothing of its memory). */
  #own: View | null = null;
  /** The peers' memcached, as their latest reports said, by peer. */
  readonly #peers = new Map<string, View & { poll: number }>();
  /** Ours (when our memcached says what it holds) and the peers', rebuilt when one is replaced. */
  #views: View[] = [];
  /** By writer. */
  readonly #admitted = new Map<number, Admitted>();
  readonly #writerOf: WriterOf;

  /** `writerOf`: which writer a version is from (default: a single writer, a log). */
  constructor(writerOf: WriterOf = () => 0) {
    this.#writerOf = writerOf;
  }

  /** What our memcached said it holds at the last poll, in bytes (null: it said nothing). */
  ownUsedBytes(): number | null {
    return this.#own?.memory.usedBytes ?? null;
  }

  /** A poll read our backend (or failed: memory undefined); `stored` as of the poll's start. */
  polled(memory: BackendHealth['memory'], stored?: Stored): void {
    this.#own = memory === undefined ? null : this.#viewOf({ memory, stored });
    this.#listViews();
  }

  /**
   * A peer reported its memcached as of its poll number `poll` (undefined: it said nothing, or it
   * is gone); a new poll replaces the peer's view.
   */
  peerReported(peer: string, report: PeerMemoryReport | undefined): void {
    if (report === undefined) {
      if (this.#peers.delete(peer)) this.#listViews();
      return;
    }
    if (this.#peers.get(peer)?.poll === report.poll) return;
    this.#peers.set(peer, { ...this.#viewOf(report), poll: report.poll });
    this.#listViews();
  }

  /**
   * Why some replica's memcached cannot take `op`, to be stored as `version` — its own message:
   * "object too large for cache" for an item longer than memcached takes at all, "out of memory
   * storing object" for one it has no room for — or null when every replica can, and then `op`
   * is counted in each until a report of it covers `version`. `keyHeld`: whether the deciding
   * node's replica holds the key, so that the write adds none; asked only of a set or add that
   * would be refused (a map lookup per write otherwise).
   */
  refusal(op: Op, version: bigint, keyHeld: () => boolean = () => false): Refusal | null {
    if (op.kind !== 'store') return null;
    if (this.#views.length === 0) return null;
    // An append's item size depends on the value it extends: only its bytes are counted.
    const sized = op.verb !== 'append' && op.verb !== 'prepend';
    const itemBytes = sized ? storedItemBytes(op.key, op.value.length) : 0;
    const item = { key: op.key, itemBytes, bytes: op.key.length + op.value.length + ITEM_OVERHEAD_BYTES };
    // Only these store a key that may not be there yet.
    let newKey = op.verb === 'set' || op.verb === 'add';
    let added = this.#addsToViews(item, newKey);
    if (added === OUT_OF_MEMORY && newKey && keyHeld()) {
      newKey = false;
      added = this.#addsToViews(item, newKey);
    }
    if (!Array.isArray(added)) return added;
    this.#remember(version, op.key, item.bytes, item.itemBytes, newKey);
    this.#views.forEach((view, i) => countAdded(view, op.key, itemAt(added, i)));
    return null;
  }

  /** What `item` adds to each view, or why some view has no room for it. */
  #addsToViews(item: { key: string; bytes: number; itemBytes: number }, newKey: boolean): Added[] | Refusal {
    const { key, bytes, itemBytes } = item;
    const added: Added[] = [];
    for (const view of this.#views) {
      const { memory } = view;
      if (memory.itemBytesMax !== undefined && itemBytes + FLAGS_BYTES > memory.itemBytesMax) return TOO_LARGE;
      let adds = addsTo(view, key, bytes, itemBytes, newKey);
      if (!fits(view, adds) && view.counted === null && this.#countByKey(view)) {
        // Counted whole, it would not fit: counted by key, it may.
        adds = addsTo(view, key, bytes, itemBytes, newKey);
      }
      if (!fits(view, adds)) return OUT_OF_MEMORY;
      added.push(adds);
    }
    return added;
  }

  /**
   * Counts items another node admitted, as they arrive here to be stored (an eventual peer's
   * push, a state transfer): they take room in every replica, and the node deciding here would
   * otherwise learn of them only from the reports that cover them. Never refuses. `byKey`: counted
   * by key as admissions are (a push, a chain batch: the same keys again and again under a bulk
   * load); else whole (a snapshot or a transfer: distinct keys by the hundred thousand, each of
   * which would cost a map entry).
   */
  arrived(items: ReadonlyArray<readonly [key: string, valueBytes: number, version: bigint]>, byKey = false): void {
    const views = this.#views;
    if (views.length === 0) return;
    for (const [key, valueBytes, version] of items) {
      const itemBytes = storedItemBytes(key, valueBytes);
      const bytes = key.length + valueBytes + ITEM_OVERHEAD_BYTES;
      const counted = byKey ? key : null;
      this.#remember(version, counted, bytes, itemBytes, true);
      for (const view of views) countIn(view, counted, bytes, itemBytes, true);
    }
  }

  #remember(version: bigint, key: string | null, bytes: number, itemBytes: number, newKey: boolean): void {
    const writer = this.#writerOf(version);
    let admitted = this.#admitted.get(writer);
    if (admitted === undefined) {
      admitted = { base: 0, versions: [], keys: [], bytes: [], itemBytes: [], newKeys: [] };
      this.#admitted.set(writer, admitted);
      // Every view so far was made before this writer's first admission: it counts all of them.
      for (const view of this.#views) view.from.set(writer, 0);
    }
    admitted.versions.push(version);
    admitted.keys.push(key);
    admitted.bytes.push(bytes);
    admitted.itemBytes.push(itemBytes);
    admitted.newKeys.push(newKey);
    if (admitted.versions.length > ADMITTED_KEPT_MAX) dropOldest(admitted, ADMITTED_KEPT_MAX / 2);
  }

  /** A report's view: the admissions it does not cover are counted in it, whole. */
  #viewOf(report: MemoryReport): View {
    const view: View = {
      memory: report.memory, from: new Map(), admittedBytes: 0, admittedKeys: 0, admittedBySlab: new Map(), counted: null, rooms: new Map(),
    };
    for (const [writer, admitted] of this.#admitted) {
      const { versions } = admitted;
      let first = report.stored === undefined ? versions.length : 0;
      const mark = report.stored?.get(writer);
      if (mark !== undefined) {
        const after = versions.findIndex((version) => version > mark);
        first = after === -1 ? versions.length : after;
      }
      view.from.set(writer, admitted.base + first);
    }
    this.#countUncovered(view);
    return view;
  }

  /**
   * Counts the admissions `view` does not cover again, by key, and goes on so; false, counting on
   * whole, if some of them were forgotten (ADMITTED_KEPT_MAX) and cannot be counted again.
   */
  #countByKey(view: View): boolean {
    for (const [writer, admitted] of this.#admitted) if ((view.from.get(writer) ?? admitted.base) < admitted.base) return false;
    view.admittedBytes = 0;
    view.admittedKeys = 0;
    view.admittedBySlab = new Map();
    view.counted = new Map();
    this.#countUncovered(view);
    return true;
  }

  /** Counts in `view` the admissions kept that it does not cover (from its `from` marks on). */
  #countUncovered(view: View): void {
    for (const [writer, admitted] of this.#admitted) {
      const first = (view.from.get(writer) ?? admitted.base) - admitted.base;
      for (let i = first; i < admitted.versions.length; i++) {
        countIn(view, itemAt(admitted.keys, i), itemAt(admitted.bytes, i), itemAt(admitted.itemBytes, i), itemAt(admitted.newKeys, i));
      }
    }
  }

  #listViews(): void {
    this.#views = this.#own === null ? [...this.#peers.values()] : [this.#own, ...this.#peers.values()];
    // What every view covers is needed no more.
    for (const [writer, admitted] of this.#admitted) {
      let needed = admitted.base + admitted.versions.length;
      // A view made before the writer's first admission counts all of them.
      for (const view of this.#views) needed = Math.min(needed, view.from.get(writer) ?? admitted.base);
      dropOldest(admitted, needed - admitted.base);
    }
  }
}

/** Whether a view has room for what an admission adds to it. */
function fits(view: View, adds: Added): boolean {
  const { memory } = view;
  if (memory.usedBytes + view.admittedBytes + adds.bytes > memory.limitBytes * BYTES_USE_MAX) return false;
  // Only a write that adds a key can have no room for it: an overwrite past the bound goes on.
  if (adds.keys > 0 && memory.keysMax !== undefined && (memory.keys ?? 0) + view.admittedKeys + adds.keys > memory.keysMax) return false;
  const room = adds.room;
  return room === null || (view.admittedBySlab.get(room.label) ?? 0) + 1 <= room.items - slabReserve(room);
}

/** What writes leave free of an item's size class: see the file header. */
function slabReserve(room: ItemRoom): number {
  const fraction = room.items * SLAB_ROOM_RESERVE;
  return fraction + Math.min(room.perPage, fraction);
}

/**
 * What an admission of `key` adds to a view: memcached replaces a key's item with each write, so
 * the writes of one key since the view's report take the largest of their items' bytes (appends
 * add theirs) and a chunk of its size class (`room`: the class, when it takes a chunk there the
 * key's last counted write did not), and a key (`newKey`: a set or an add), once. A bulk load
 * overwriting a few keys adds nothing.
 */
function addsTo(view: View, key: string | null, bytes: number, itemBytes: number, newKey: boolean): Added {
  const grows = itemBytes === 0;
  const room = grows ? null : roomIn(view, itemBytes);
  const keys = newKey ? 1 : 0;
  // An arrival counted whole (key null: see `arrived`), or a view counting whole.
  if (key === null || view.counted === null) return { bytes, room, keys, counted: undefined };
  const counted = view.counted.get(key);
  if (counted === undefined) return { bytes, room, keys, counted };
  const keyAdded = newKey && !counted.key ? 1 : 0;
  if (grows) return { bytes, room, keys: keyAdded, counted };
  const added = Math.max(0, bytes - counted.bytes);
  return { bytes: added, room: room !== null && counted.label === room.label ? null : room, keys: keyAdded, counted };
}

/** The room for items of `itemBytes` in a view's memcached, worked out once per size and report. */
function roomIn(view: View, itemBytes: number): ItemRoom | null {
  let room = view.rooms.get(itemBytes);
  if (room === undefined) {
    room = view.memory.slabs === undefined ? null : itemRoom(view.memory.slabs, itemBytes);
    view.rooms.set(itemBytes, room);
  }
  return room;
}

/** Counts an admission (of `key`, or an arrival) in a view that did not count it yet (see `addsTo`). */
function countIn(view: View, key: string | null, bytes: number, itemBytes: number, newKey: boolean): void {
  countAdded(view, key, addsTo(view, key, bytes, itemBytes, newKey));
}

/** Counts in `view` what an admission of `key` adds to it (`addsTo`'s answer). */
function countAdded(view: View, key: string | null, adds: Added): void {
  view.admittedBytes += adds.bytes;
  view.admittedKeys += adds.keys;
  const label = adds.room === null ? null : adds.room.label;
  if (label !== null) view.admittedBySlab.set(label, (view.admittedBySlab.get(label) ?? 0) + 1);
  if (key === null || view.counted === null) return;
  const { counted } = adds;
  if (counted === undefined) {
    view.counted.set(key, { bytes: adds.bytes, label, key: adds.keys > 0 });
    return;
  }
  counted.bytes += adds.bytes;
  if (label !== null) counted.label = label;
  if (adds.keys > 0) counted.key = true;
}

function dropOldest(admitted: Admitted, count: number): void {
  if (count <= 0) return;
  admitted.versions.splice(0, count);
  admitted.keys.splice(0, count);
  admitted.bytes.splice(0, count);
  admitted.itemBytes.splice(0, count);
  admitted.newKeys.splice(0, count);
  admitted.base += count;
}

/** Whether a peer's report (decoded from its heartbeat) is a BackendMemory, as far as the guard reads it. */
export function isBackendMemory(value: unknown): value is BackendMemory {
  if (typeof value !== 'object' || value === null) return false;
  const memory = value as Record<string, unknown>;
  if (!isCount(memory.usedBytes) || !isCount(memory.limitBytes)) return false;
  if (memory.itemBytesMax !== undefined && !isCount(memory.itemBytesMax)) return false;
  if (memory.items !== undefined && !isCount(memory.items)) return false;
  if ((memory.keys === undefined) !== (memory.keysMax === undefined)) return false;
  if (memory.keys !== undefined && (!isCount(memory.keys) || !isCount(memory.keysMax))) return false;
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
