/**
 * What eventual and causal mode remember of the entries they purged: each purged (key, version),
 * so that a late copy of what a purge deleted (still queued or in flight somewhere) is not merged
 * back to life.
 *
 * The memory is bounded: a purge is forgotten after purgedMemoryMs, or sooner once more than
 * purgedMemoryEntriesMax are remembered.
 *
 * Invariant: purges are held oldest first (a key purged again moves to the end), so forgetting
 * stops at the first purge still young once the count is within its bound.
 */

/** The purge memory's bounds (both modes' tunings carry them, documented there). */
export interface PurgedMemoryLimits {
  purgedMemoryMs: number;
  purgedMemoryEntriesMax: number;
}

/** Purged (key → version, reset version, purged at), oldest first. */
export class PurgedVersions {
  private readonly purged = new Map<string, { version: bigint; resetVersion: bigint; atMs: number }>();

  constructor(private readonly limits: PurgedMemoryLimits) {}

  /** Purges remembered. */
  get size(): number {
    return this.purged.size;
  }

  /** The version at which `key` was last purged, while that is remembered. */
  version(key: string): bigint | undefined {
    return this.purged.get(key)?.version;
  }

  /**
   * The last purge of `key`, while remembered: its version, and the reset (../store/counter.ts) the
   * purged entry counted from (its own version, unless a merge joined it over a greater one).
   */
  last(key: string): { version: bigint; resetVersion: bigint } | undefined {
    return this.purged.get(key);
  }

  /** Whether `key` at `version` was purged (or is older than what was). */
  covers(key: string, version: bigint): boolean {
    const purged = this.purged.get(key);
    return purged !== undefined && version <= purged.version;
  }

  /** `key` was purged at `version` (counting from `resetVersion`, by default itself), now. */
  remember(key: string, version: bigint, nowMs: number, resetVersion = version): void {
    this.purged.delete(key);
    this.purged.set(key, { version, resetVersion, atMs: nowMs });
  }

  /** Forgets purges older than purgedMemoryMs, and the oldest beyond purgedMemoryEntriesMax. */
  forgetOld(nowMs: number): void {
    for (const [key, purged] of this.purged) {
      const old = nowMs - purged.atMs > this.limits.purgedMemoryMs;
      if (!old && this.purged.size <= this.limits.purgedMemoryEntriesMax) break;
      this.purged.delete(key);
    }
  }
}
