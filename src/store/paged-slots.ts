/**
 * Slot numbers for the indexes that keep a record per key in typed arrays (./key-index.ts, and
 * eventual mode's version index): a slot is given out, freed for reuse, and names its fields in
 * a page of PAGE_SLOTS slots.
 *
 * Why pages: arrays grown by doubling are copied whole, and at two million keys one growth
 * stopped a controller for a third of a second (seconds on a busy machine), faulting in and
 * copying their memory. A page is allocated once and never moved.
 *
 * Invariants: every slot below `used` was given out since the last clear and is either held or
 * on the free list; a page exists for every slot below `capacity`.
 */

import { itemAt } from '../runtime/item-at.ts';

export const PAGE_BITS = 16;
export const PAGE_SLOTS = 2 ** PAGE_BITS;
export const PAGE_MASK = PAGE_SLOTS - 1;

export class PagedSlots<P> {
  readonly pages: P[] = [];
  #next = 0;
  #free: number[] = [];

  /** `newPage` makes the fields of one page; past `slotsMax` slots in use, `allocate` refuses (`what` names the index). */
  constructor(
    private readonly newPage: () => P,
    private readonly limit: { slotsMax: number; what: string } | null = null,
  ) {}

  /** Slots below this were given out at least once since the last clear. */
  get used(): number {
    return this.#next;
  }

  /** Slots below this have a page. */
  get capacity(): number {
    return this.pages.length * PAGE_SLOTS;
  }

  /** The page holding `slot`'s fields (its index in the page: `slot & PAGE_MASK`). */
  page(slot: number): P {
    return itemAt(this.pages, slot >>> PAGE_BITS);
  }

  /** A free slot, reusing a freed one first; a page is added when the slots run past the last. */
  allocate(): number {
    const limit = this.limit;
    if (limit !== null && this.#free.length === 0 && this.#next >= limit.slotsMax) {
      throw new RangeError(`${limit.what} holds its most keys (${limit.slotsMax})`);
    }
    const slot = this.#free.pop() ?? this.#next++;
    if (slot >= this.capacity) this.pages.push(this.newPage());
    return slot;
  }

  /** `slot` may be given out again. */
  release(slot: number): void {
    this.#free.push(slot);
  }

  /** Every slot free again; the pages are kept (what they hold is the caller's to reset). */
  clear(): void {
    this.#next = 0;
    this.#free = [];
  }
}
