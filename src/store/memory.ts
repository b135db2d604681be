/**
 * The embedded in-memory backend: a Map from key to entry, used when no memcached is available and
 * in tests.
 *
 * Intuition: the simplest KVBackend, with the same contract as the memcached one so the contract
 * suite runs against both. Entries are copied on the way in and out, so a caller mutating an entry
 * object never changes what is stored (value Buffers are treated as immutable everywhere).
 *
 * Invariants: `health().epoch` is fixed for the life of an instance (its contents are only lost
 * with the instance); every method resolves asynchronously, like a real backend.
 */

import type { BackendHealth, Entry, KeyedPair, KVBackend } from './types.ts';

let instanceCounter = 0;

function copyEntry(entry: Entry): Entry {
  const copy: Entry = {
    value: entry.value,
    flags: entry.flags,
    expiresAtMs: entry.expiresAtMs,
    cas: entry.cas,
  };
  if (entry.tombstone === true) copy.tombstone = true;
  return copy;
}

/** A KVBackend held in this process's memory. */
export class MemoryBackend implements KVBackend {
  readonly kind = 'memory' as const;
  readonly #entries = new Map<string, Entry>();
  readonly #epoch: string;

  constructor() {
    instanceCounter += 1;
    this.#epoch = `memory-${process.pid}-${Date.now()}-${instanceCounter}`;
  }

  /** Number of stored keys (tombstones included). */
  get size(): number {
    return this.#entries.size;
  }

  async get(key: string): Promise<Entry | undefined> {
    const entry = this.#entries.get(key);
    return entry === undefined ? undefined : copyEntry(entry);
  }

  async set(key: string, entry: Entry): Promise<void> {
    this.#entries.set(key, copyEntry(entry));
  }

  async setMany(entries: readonly KeyedPair[]): Promise<void> {
    for (const [key, entry] of entries) this.#entries.set(key, copyEntry(entry));
  }

  async delete(key: string): Promise<void> {
    this.#entries.delete(key);
  }

  async flush(): Promise<void> {
    this.#entries.clear();
  }

  /** Every stored key; the in-memory store can list them, unlike memcached. */
  async keys(): Promise<string[]> {
    return [...this.#entries.keys()];
  }

  async health(): Promise<BackendHealth> {
    return { ok: true, detail: `memory, ${this.#entries.size} keys`, epoch: this.#epoch };
  }

  async close(): Promise<void> {
    // Nothing to release; the contents stay readable until the instance is dropped.
  }
}
