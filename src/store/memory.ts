/**
 * The embedded in-memory backend: a Map from key to entry, used when no memcached is available and
 * in tests.
 *
 * Intuition: the simplest KVBackend, with the same contract as the memcached one so the contract
 * suite runs against both. Entries are copied on the way in and out, so a caller mutating an entry
 * object never changes what is stored (value Buffers are treated as immutable everywhere).
 *
 * It reports its memory as memcached does (`bytesMax` of the process's heap), so the memory guard
 * refuses a write it has no room for instead of the heap running out.
 *
 * Invariants: `health().epoch` is fixed for the life of an instance (its contents are only lost
 * with the instance); every method resolves asynchronously, like a real backend; `#bytes` is what
 * the held entries count for (`itemBytes`).
 */

import { StoreError, type BackendHealth, type Entry, type KeyedPair, type KVBackend } from './types.ts';

let instanceCounter = 0;

/** What an entry holds beside its key and value (the entry object, the Map's slot), roughly. */
const ENTRY_OVERHEAD_BYTES = 120;

function itemBytes(key: string, entry: Entry): number {
  return key.length + entry.value.length + ENTRY_OVERHEAD_BYTES;
}

/** MemoryBackend's settings. */
export interface MemoryBackendOptions {
  /** The most its items may take, as memcached's `-m`; none: it says nothing of its memory. */
  bytesMax?: number;
}

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
  readonly #bytesMax: number | undefined;
  #bytes = 0;

  constructor(options: MemoryBackendOptions = {}) {
    this.#bytesMax = options.bytesMax;
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

  async getMany(keys: readonly string[]): Promise<Array<Entry | undefined>> {
    return keys.map((key) => {
      const entry = this.#entries.get(key);
      return entry === undefined ? undefined : copyEntry(entry);
    });
  }

  async set(key: string, entry: Entry): Promise<void> {
    this.#put(key, entry);
  }

  async setMany(entries: readonly KeyedPair[]): Promise<void> {
    for (const [key, entry] of entries) this.#put(key, entry);
  }

  async delete(key: string): Promise<void> {
    const held = this.#entries.get(key);
    if (held === undefined) return;
    this.#bytes -= itemBytes(key, held);
    this.#entries.delete(key);
  }

  async flush(): Promise<void> {
    this.#entries.clear();
    this.#bytes = 0;
  }

  #put(key: string, entry: Entry): void {
    const held = this.#entries.get(key);
    if (held !== undefined) this.#bytes -= itemBytes(key, held);
    this.#entries.set(key, copyEntry(entry));
    this.#bytes += itemBytes(key, entry);
  }

  /** Every stored key (more than `keysMax`: fails); the in-memory store can list them, unlike memcached. */
  async keys(keysMax = Infinity): Promise<string[]> {
    if (this.#entries.size > keysMax) throw new StoreError('BACKEND_FAILED', `the embedded store holds more than ${keysMax} keys`);
    return [...this.#entries.keys()];
  }

  async health(): Promise<BackendHealth> {
    const health: BackendHealth = { ok: true, detail: `memory, ${this.#entries.size} keys`, epoch: this.#epoch };
    if (this.#bytesMax !== undefined) health.memory = { usedBytes: this.#bytes, limitBytes: this.#bytesMax, items: this.#entries.size };
    return health;
  }

  async close(): Promise<void> {
    // Nothing to release; the contents stay readable until the instance is dropped.
  }
}
