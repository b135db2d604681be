/**
 * The replica's index of keys (see ./replica-core.ts): what it knows of each key its backend
 * holds, kept in typed arrays by slot, with a Map from key to slot.
 *
 * Why not an object per key: at millions of keys a record object and its cas bigint were two heap
 * objects a key beside the key string, and every major garbage collection marks each of them; in
 * process, 3.9 million keys held 650 MB of heap and a full collection stopped the controller
 * 330–650 ms (a controller's longest stops under a bulk load came from such collections, and a
 * leader stopped a second loses its leadership). Here a key costs its string and a Map slot
 * holding a small integer; its fields live off the heap in arrays the collector never walks.
 *
 * A record is named by a `ref`, its slot and the slot's generation together: a ref taken before an
 * await names the record only while no write replaced it and no delete or clear freed its slot
 * (`isCurrent`), as a record object a later write replaced would be detached from the index.
 *
 * Invariants:
 * - `#slots` maps every key held to a slot below `#next` that is not on the free list.
 * - A slot's generation changes each time it is given to a record and each time it is freed, so
 *   no ref is ever current twice.
 */

import type { IndexRecord } from './replica-records.ts';
import { isCounted } from './replica-records.ts';
import type { Entry } from './types.ts';

/** A JavaScript Map holds at most 2^24 entries (V8), so no more slots are ever needed. */
const SLOT_BITS = 24;
const SLOT_COUNT = 2 ** SLOT_BITS;
/** Generations wrap here, so a ref (generation × SLOT_COUNT + slot) stays an exact number. */
const GENERATION_MASK = 0x0fff_ffff;
const CAPACITY_INITIAL = 1024;

const TOMBSTONE = 1;
const SETTLED = 2;
const COUNTED = 4;
const LISTED = 8;

/** A record's name (see the header); NO_RECORD for none. */
export type IndexRef = number;
export const NO_RECORD: IndexRef = -1;

export class KeyIndex {
  readonly #slots = new Map<string, number>();
  #cas = new BigUint64Array(CAPACITY_INITIAL);
  #expiresAtMs = new Float64Array(CAPACITY_INITIAL);
  #bits = new Uint8Array(CAPACITY_INITIAL);
  #generation = new Uint32Array(CAPACITY_INITIAL);
  /** Slots below this were given out at least once since the last clear. */
  #next = 0;
  #free: number[] = [];

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
    return ref !== NO_RECORD && this.#ref(ref % SLOT_COUNT) === ref;
  }

  /** The version the backend holds (-1 while only listed). `ref` must be current. */
  cas(ref: IndexRef): bigint {
    const slot = ref % SLOT_COUNT;
    return (this.#bits[slot] ?? 0) & LISTED ? -1n : (this.#cas[slot] ?? 0n);
  }

  expiresAtMs(ref: IndexRef): number {
    return this.#expiresAtMs[ref % SLOT_COUNT] ?? 0;
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
    const bits = this.#bits[slot] ?? 0;
    this.#bits[slot] = settled ? bits | SETTLED : bits & ~SETTLED;
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
    this.#cas[slot] = 0n;
    this.#expiresAtMs[slot] = 0;
    this.#bits[slot] = LISTED;
  }

  delete(key: string): void {
    const slot = this.#slots.get(key);
    if (slot === undefined) return;
    this.#slots.delete(key);
    this.#bump(slot);
    this.#free.push(slot);
  }

  /** Deletes `key` only if `ref` is its current record. */
  deleteIf(key: string, ref: IndexRef): void {
    if (this.isCurrent(ref) && this.#slots.get(key) === ref % SLOT_COUNT) this.delete(key);
  }

  /** Forgets every key. Generations go on, so refs taken before stay stale. */
  clear(): void {
    for (let slot = 0; slot < this.#next; slot += 1) this.#bump(slot);
    this.#slots.clear();
    this.#next = 0;
    this.#free = [];
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
    for (const [key, slot] of this.#slots) {
      const record = this.record(this.#ref(slot));
      if (record !== undefined) yield [key, record];
    }
  }

  #has(ref: IndexRef, bit: number): boolean {
    return ((this.#bits[ref % SLOT_COUNT] ?? 0) & bit) !== 0;
  }

  #ref(slot: number): IndexRef {
    return (this.#generation[slot] ?? 0) * SLOT_COUNT + slot;
  }

  #bump(slot: number): void {
    this.#generation[slot] = ((this.#generation[slot] ?? 0) + 1) & GENERATION_MASK;
  }

  #describe(slot: number, entry: Entry, settled: boolean): void {
    this.#cas[slot] = entry.cas;
    this.#expiresAtMs[slot] = entry.expiresAtMs;
    this.#bits[slot] = (entry.tombstone === true ? TOMBSTONE : 0) | (settled ? SETTLED : 0) | (isCounted(entry) ? COUNTED : 0);
  }

  #allocate(): number {
    const reused = this.#free.pop();
    const slot = reused ?? this.#next++;
    if (slot >= this.#cas.length) this.#grow();
    this.#bump(slot);
    return slot;
  }

  #grow(): void {
    const capacity = Math.min(SLOT_COUNT, this.#cas.length * 2);
    const cas = new BigUint64Array(capacity);
    cas.set(this.#cas);
    this.#cas = cas;
    const expires = new Float64Array(capacity);
    expires.set(this.#expiresAtMs);
    this.#expiresAtMs = expires;
    const bits = new Uint8Array(capacity);
    bits.set(this.#bits);
    this.#bits = bits;
    const generation = new Uint32Array(capacity);
    generation.set(this.#generation);
    this.#generation = generation;
  }
}
