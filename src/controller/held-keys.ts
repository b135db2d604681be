/**
 * The keys on which a store effect waits for the disk: what lets a read that depends only on its
 * own keys (a linearizable read in the replicated log with read leases: see `keysOnly` on the
 * read effect) run at once while unrelated applies still wait for an fsync.
 *
 * Invariants: a key is counted once per held effect that changes it, until that effect runs;
 * an effect that changes every key (a reset, a flush_all) counts for all of them. Which keys an
 * effect changes: ../consistency/changed-keys.ts.
 */

/** Counts, per key, the store effects held for the disk. */
export class HeldKeys {
  readonly #count = new Map<string, number>();
  #everyKey = 0;

  hold(keys: readonly string[] | null): void {
    if (keys === null) this.#everyKey += 1;
    else for (const key of keys) this.#count.set(key, (this.#count.get(key) ?? 0) + 1);
  }

  release(keys: readonly string[] | null): void {
    if (keys === null) {
      this.#everyKey -= 1;
      return;
    }
    for (const key of keys) {
      const left = (this.#count.get(key) ?? 1) - 1;
      if (left > 0) this.#count.set(key, left);
      else this.#count.delete(key);
    }
  }

  /** Whether a held effect changes any of `keys`. */
  touches(keys: readonly string[]): boolean {
    if (this.#everyKey > 0) return true;
    for (const key of keys) if (this.#count.has(key)) return true;
    return false;
  }
}
