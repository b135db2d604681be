/**
 * The replica's index of keys (see ./replica-core.ts): what it knows of each key its backend
 * holds, kept in typed arrays by slot, with a map from key to slot.
 *
 * Why not an object per key: at millions of keys a record object and its cas bigint were two heap
 * objects a key beside the key string, and every major garbage collection marks each of them; in
 * process, 3.9 million keys held 712 MiB of heap and a full collection stopped the process
 * 588–970 ms (a leader stopped a failure timeout loses its leadership). Here a key costs its
 * string and a map slot holding a small integer; its fields live off the heap in arrays the
 * collector never walks. Nothing grows in one long step: the arrays come in pages of 65,536 slots
 * (./paged-slots.ts), and the map is 64 Maps (./sharded-map.ts).
 *
 * A record is named by a `ref`, its slot and the slot's generation together: a ref taken before an
 * await names the record only while no write replaced it and no delete or clear freed its slot
 * (`isCurrent`), as a record object a later write replaced would be detached from the index.
 *
 * Invariants:
 * - `#slots` maps every key held to a slot `#paged` gave out and has not taken back.
 * - A slot's generation changes each time it is given to a record and each time it is freed, so
 *   no ref is ever current twice.
 */

import type { IndexRecord } from './replica-records.ts';
import { PAGE_MASK, PAGE_SLOTS, PagedSlots } from './paged-slots.ts';
import { ShardedMap } from './sharded-map.ts';
import { isCounted } from './replica-records.ts';
import type { Entry } from './types.ts';

/** A JavaScript Map holds at most 2^24 entries (V8), so no more slots are ever needed. */
const SLOT_BITS = 24;
const SLOT_COUNT = 2 ** SLOT_BITS;
/** Generations wrap here, so a ref (generation × SLOT_COUNT + slot) stays an exact number. */
const GENERATION_MASK = 0x0fff_ffff;

const TOMBSTONE = 1;
const SETTLED = 2;
const COUNTED = 4;
const LISTED = 8;

/** A record's name (see the header); NO_RECORD for none. */
export type IndexRef = number;
export const NO_RECORD: IndexRef = -1;

/** The fields of PAGE_SLOTS consecutive slots (./paged-slots.ts). */
class Page {
  readonly cas = new BigUint64Array(PAGE_SLOTS);
  readonly expiresAtMs = new Float64Array(PAGE_SLOTS);
  readonly bits = new Uint8Array(PAGE_SLOTS);
  readonly generation = new Uint32Array(PAGE_SLOTS);
}

export class KeyIndex {
  readonly #slots = new ShardedMap();
  // Past SLOT_COUNT a ref would name two slots; a single Map threw there too (the key bound stays below).
  readonly #paged = new PagedSlots(() => new Page(), { slotsMax: SLOT_COUNT, what: 'the key index' });

  get size(): number {
    return this.#slots.size;
  }

  has(key: string): boolean {
    return this.#slots.has(key);
  }

  keys(): IterableIterator<string> {
    return this.#slots.keys();
  }

  /** The ref of `key`'s record, or NO_RECORD. */
  refOf(key: string): IndexRef {
    const slot = this.#slots.get(key);
    return slot === undefined ? NO_RECORD : this.#ref(slot);
  }

  /** Whether `ref` still names a record of the index (no write replaced it, nothing freed it). */
  isCurrent(ref: IndexRef): boolean {
    if (ref === NO_RECORD) return false;
    const slot = ref % SLOT_COUNT;
    return slot < this.#paged.capacity && this.#ref(slot) === ref;
  }

  /** The version the backend holds (-1 while only listed). `ref` must be current. */
  cas(ref: IndexRef): bigint {
    const slot = ref % SLOT_COUNT;
    const page = this.#page(slot);
    const at = slot & PAGE_MASK;
    return (page.bits[at] ?? 0) & LISTED ? -1n : (page.cas[at] ?? 0n);
  }

  expiresAtMs(ref: IndexRef): number {
    const slot = ref % SLOT_COUNT;
    return this.#page(slot).expiresAtMs[slot & PAGE_MASK] ?? 0;
  }

  settled(ref: IndexRef): boolean {
    return this.#has(ref, SETTLED);
  }

  counted(ref: IndexRef): boolean {
    return this.#has(ref, COUNTED);
  }

  listed(ref: IndexRef): boolean {
    return this.#has(ref, LISTED);
  }

  /** Marks the record settled or not, if `ref` is still current (else it changes nothing). */
  setSettled(ref: IndexRef, settled: boolean): void {
    if (!this.isCurrent(ref)) return;
    const slot = ref % SLOT_COUNT;
    const bits = this.#page(slot).bits;
    const at = slot & PAGE_MASK;
    const held = bits[at] ?? 0;
    bits[at] = settled ? held | SETTLED : held & ~SETTLED;
  }

  /**
   * A new record of `key`, describing `entry` (`settled`: the backend surely holds it); refs of its
   * old record go stale. `known`, a ref `refOf(key)` gave, spares a lookup while it is current.
   */
  remember(key: string, entry: Entry, settled: boolean, known: IndexRef = NO_RECORD): IndexRef {
    let slot = this.isCurrent(known) ? known % SLOT_COUNT : this.#slots.get(key);
    if (slot === undefined) {
      slot = this.#allocate();
      this.#slots.set(key, slot);
    } else {
      this.#bump(slot);
    }
    this.#describe(slot, entry, settled);
    return this.#ref(slot);
  }

  /** Settles a record in place, if `ref` is still current: the backend holds `entry` (see Replica's start-up read). */
  describe(ref: IndexRef, entry: Entry): void {
    if (this.isCurrent(ref)) this.#describe(ref % SLOT_COUNT, entry, true);
  }

  /** Records `key` as listed (held, version unknown), unless a record of it is held. */
  addListed(key: string): void {
    if (this.#slots.has(key)) return;
    const slot = this.#allocate();
    this.#slots.set(key, slot);
    const page = this.#page(slot);
    const at = slot & PAGE_MASK;
    page.cas[at] = 0n;
    page.expiresAtMs[at] = 0;
    page.bits[at] = LISTED;
  }

  delete(key: string): void {
    const slot = this.#slots.get(key);
    if (slot === undefined) return;
    this.#slots.delete(key);
    this.#bump(slot);
    this.#paged.release(slot);
  }

  /** Deletes `key` only if `ref` is its current record. */
  deleteIf(key: string, ref: IndexRef): void {
    if (this.isCurrent(ref) && this.#slots.get(key) === ref % SLOT_COUNT) this.delete(key);
  }

  /** Forgets every key. Generations go on (the pages are kept), so refs taken before stay stale. */
  clear(): void {
    for (let slot = 0; slot < this.#paged.used; slot += 1) this.#bump(slot);
    this.#slots.clear();
    this.#paged.clear();
  }

  /** `ref`'s record as a plain object (for the status page and tests), or undefined if not current. */
  record(ref: IndexRef): IndexRecord | undefined {
    if (!this.isCurrent(ref)) return undefined;
    return {
      cas: this.cas(ref), expiresAtMs: this.expiresAtMs(ref), tombstone: this.#has(ref, TOMBSTONE),
      settled: this.settled(ref), counted: this.counted(ref), listed: this.listed(ref),
    };
  }

  /** Every key with its record as a plain object, in no particular order. */
  *entries(): IterableIterator<[string, IndexRecord]> {
    for (const [key, slot] of this.#slots.entries()) {
      const record = this.record(this.#ref(slot));
      if (record !== undefined) yield [key, record];
    }
  }

  #page(slot: number): Page {
    return this.#paged.page(slot);
  }

  #has(ref: IndexRef, bit: number): boolean {
    const slot = ref % SLOT_COUNT;
    return ((this.#page(slot).bits[slot & PAGE_MASK] ?? 0) & bit) !== 0;
  }

  #ref(slot: number): IndexRef {
    return (this.#page(slot).generation[slot & PAGE_MASK] ?? 0) * SLOT_COUNT + slot;
  }

  #bump(slot: number): void {
    const generation = this.#page(slot).generation;
    const at = slot & PAGE_MASK;
    generation[at] = ((generation[at] ?? 0) + 1) & GENERATION_MASK;
  }

  #describe(slot: number, entry: Entry, settled: boolean): void {
    const page = this.#page(slot);
    const at = slot & PAGE_MASK;
    page.cas[at] = entry.cas;
    page.expiresAtMs[at] = entry.expiresAtMs;
    page.bits[at] = (entry.tombstone === true ? TOMBSTONE : 0) | (settled ? SETTLED : 0) | (isCounted(entry) ? COUNTED : 0);
  }

  #allocate(): number {
    const slot = this.#paged.allocate();
    this.#bump(slot);
    return slot;
  }
}
