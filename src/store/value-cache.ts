/**
 * A bounded, least-recently-used cache of entries, keyed by our keys: the Replica's copy of what
 * its backend holds, so a read (or the read of a read-modify-write) needs no backend round trip.
 * The Replica decides what goes in and when; this class keeps the byte bound, evicting by CLOCK
 * (second chance), and keeps a key's slot, empty, while a write to it is on its way (`withhold`).
 * Why that is sound, and why CLOCK: docs/design.md, "The replica and its value cache".
 *
 * Invariants:
 * - `bytes` ≤ `bytesMax` after every call; an entry costing more than `bytesMax` is not kept.
 * - `bytes` = the sum of `slotBytes` over the slots held; an empty slot is never a hit.
 * - `generation` changes on every `clear`, so a caller that started a backend call before a clear
 *   can tell that its result must not be cached.
 */

import type { Entry } from './types.ts';

/** Bookkeeping bytes charged per entry on top of its key and value (Map slot, Entry object). */
const ENTRY_OVERHEAD_BYTES = 96;

/** The bytes one cached entry is charged. */
export function cachedEntryBytes(key: string, entry: Entry): number {
  return key.length + entry.value.length + ENTRY_OVERHEAD_BYTES;
}

/** A cached entry (null while withheld) and its CLOCK mark (used since it was inserted or last passed by eviction). */
interface Slot {
  entry: Entry | null;
  used: boolean;
}

/** The bytes a slot is charged: an empty one, its key and bookkeeping only. */
function slotBytes(key: string, slot: Slot): number {
  return slot.entry === null ? key.length + ENTRY_OVERHEAD_BYTES : cachedEntryBytes(key, slot.entry);
}

/** A byte-bounded map from key to entry, evicting about the least recently used. */
export class ValueCache {
  readonly #entries = new Map<string, Slot>();
  /**
   * The CLOCK hand: a live iterator over `#entries`, going on from where the last eviction stopped.
   * A walk started afresh from the oldest end at every eviction stepped over every slot deleted
   * since the Map last compacted its table: once the cache was full, an insert cost 70–230 µs.
   */
  #hand: Iterator<[string, Slot]> | null = null;
  readonly #bytesMax: number;
  #bytes = 0;
  #generation = 0;
  #hits = 0;
  #misses = 0;

  /** `bytesMax` 0 disables the cache (nothing is kept). */
  constructor(bytesMax: number) {
    this.#bytesMax = bytesMax;
  }

  /** Bytes charged for the entries held. */
  get bytes(): number {
    return this.#bytes;
  }

  /** The bound, in bytes. */
  get bytesMax(): number {
    return this.#bytesMax;
  }

  /** Slots held (withheld ones included). */
  get size(): number {
    return this.#entries.size;
  }

  /** Changes on every clear. */
  get generation(): number {
    return this.#generation;
  }

  /** Lookups that found an entry, and that did not. */
  get counts(): { hits: number; misses: number } {
    return { hits: this.#hits, misses: this.#misses };
  }

  /** The entry of `key` (marking it recently used), or undefined. */
  get(key: string): Entry | undefined {
    const slot = this.#entries.get(key);
    if (slot === undefined || slot.entry === null) {
      this.#misses += 1;
      return undefined;
    }
    this.#hits += 1;
    slot.used = true;
    return slot.entry;
  }

  /** Stops answering for `key` until the next `set` (a write of it is on its way), keeping its slot. */
  withhold(key: string): void {
    const slot = this.#entries.get(key);
    if (slot === undefined || slot.entry === null) return;
    const before = slotBytes(key, slot);
    slot.entry = null;
    this.#bytes -= before - slotBytes(key, slot);
  }

  /** Keeps `entry` as the backend's version of `key`, evicting the least recently used to fit. */
  set(key: string, entry: Entry): void {
    const cost = cachedEntryBytes(key, entry);
    const slot = this.#entries.get(key);
    if (cost > this.#bytesMax) {
      if (slot !== undefined) this.#drop(key, slot);
      return;
    }
    if (slot !== undefined) {
      // Replaced in place: it keeps its position, and counts as used.
      this.#bytes += cost - slotBytes(key, slot);
      slot.entry = entry;
      slot.used = true;
    } else {
      this.#entries.set(key, { entry, used: false });
      this.#bytes += cost;
    }
    if (this.#bytes > this.#bytesMax) this.#evict();
  }

  /** Forgets `key`. */
  delete(key: string): void {
    const slot = this.#entries.get(key);
    if (slot !== undefined) this.#drop(key, slot);
  }

  #drop(key: string, slot: Slot): void {
    this.#entries.delete(key);
    this.#bytes -= slotBytes(key, slot);
  }

  /** Forgets everything. */
  clear(): void {
    this.#entries.clear();
    this.#hand = null;
    this.#bytes = 0;
    this.#generation += 1;
  }

  /** Drops unmarked slots at the hand until the bound holds; marked ones get a second chance. */
  #evict(): void {
    // A Map iterator also visits entries appended while it runs: an unmarked slot re-appended here
    // is dropped when the hand reaches it again, so one eviction visits a slot at most twice.
    for (let steps = 2 * this.#entries.size + 1; this.#bytes > this.#bytesMax && steps > 0; steps--) {
      let next = this.#hand?.next();
      if (next === undefined || next.done === true) {
        this.#hand = this.#entries.entries();
        next = this.#hand.next();
        if (next.done === true) return;
      }
      const [key, slot] = next.value;
      this.#entries.delete(key);
      if (slot.used) {
        slot.used = false;
        this.#entries.set(key, slot);
      } else {
        this.#bytes -= slotBytes(key, slot);
      }
    }
  }
}
