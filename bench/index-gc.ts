/**
 * What a large key index costs the garbage collector: `node --expose-gc --import tsx
 * bench/index-gc.ts [KEYS] [versioned]` (default 3,900,000 keys, a memcached of 1 GiB filled with
 * 100-byte values; `versioned` adds eventual mode's version index of the same keys).
 *
 * Intuition: a controller indexes every key its replica holds (src/store/key-index.ts), and every
 * major collection marks what that index keeps on the heap; a collection the concurrent marker
 * could not finish stops the controller for it, and a leader stopped a failure timeout loses its
 * leadership. This fills a ReplicaCore's index through `writeAll` over a backend that stores
 * nothing, as a bulk load or a state transfer does, then prints the heap it holds and how long
 * three full collections stop the process (the worst case of a collection's final pause).
 */

import { VersionIndex } from '../src/consistency/eventual/digest.ts';
import { ReplicaCore } from '../src/store/replica-core.ts';
import type { Entry, KeyedEntry, KVBackend } from '../src/store/types.ts';

const keyCount = Number(process.argv[2] ?? 3_900_000);
const versions = process.argv[3] === 'versioned' ? new VersionIndex() : null;
const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error('run with node --expose-gc');

const discard: KVBackend = {
  get: () => Promise.resolve(undefined),
  set: () => Promise.resolve(),
  setMany: () => Promise.resolve(),
  delete: () => Promise.resolve(),
  flush: () => Promise.resolve(),
  health: () => Promise.resolve({ ok: true }),
  close: () => Promise.resolve(),
} as unknown as KVBackend;

const core = new ReplicaCore(discard, {
  tombstones: false, skipApplied: true, barrierConcurrency: 64, cacheBytesMax: 0, valueBytesMax: 1024 * 1024,
  quietApplies: true, keysMax: 16_000_000,
});
const value = Buffer.alloc(100);
const startedMs = performance.now();
for (let start = 0; start < keyCount; start += 16_384) {
  const batch: KeyedEntry[] = [];
  for (let at = start; at < Math.min(keyCount, start + 16_384); at += 1) {
    const entry: Entry = { value, flags: 0, expiresAtMs: 0, cas: BigInt(1_000_000 + at) };
    const key = `key:${String(at).padStart(12, '0')}`;
    batch.push([key, entry]);
    versions?.set(key, { version: entry.cas, tombstone: false, expiresAtMs: 0, heldByMask: 0, touchedSeq: at, claimedSeq: at });
  }
  await core.writeAll(batch, false);
}
const fillMs = performance.now() - startedMs;
gc();
const heapMb = process.memoryUsage().heapUsed / 2 ** 20;
const stops: string[] = [];
for (let round = 0; round < 3; round += 1) {
  const before = performance.now();
  gc();
  stops.push((performance.now() - before).toFixed(0));
}
console.log(`${core.index.size} keys indexed${versions === null ? '' : ' with versions'} in ${(fillMs / 1000).toFixed(1)} s: heap ${heapMb.toFixed(0)} MiB (${((heapMb * 2 ** 20) / keyCount).toFixed(0)} bytes a key), full collections ${stops.join(', ')} ms`);
