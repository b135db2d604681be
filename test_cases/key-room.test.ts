/**
 * What a controller may hold in its heap (src/controller/key-room.ts): the most keys it indexes
 * follows its heap and mode and stays under a JavaScript Map's bound, a value cache larger than a
 * quarter of the heap is refused at start with what to do, and the embedded store reports its
 * memory as memcached does, so the memory guard refuses what it has no room for.
 */

import { describe, expect, it } from 'vitest';
import { cacheProblem, embeddedStoreBytesMax, keysMaxFor } from '../src/controller/key-room.ts';
import { MemoryBackend } from '../src/store/memory.ts';
import { StoreError } from '../src/store/types.ts';

const GB = 1024 ** 3;

describe('key room', () => {
  it('indexes fewer keys where each costs more, more in a larger heap, none in one the rest of a controller fills, and never past a Map\'s bound', () => {
    expect(keysMaxFor(4 * GB, false)).toBeGreaterThan(keysMaxFor(4 * GB, true));
    expect(keysMaxFor(4 * GB, true)).toBeGreaterThan(2 * keysMaxFor(2 * GB, true));
    expect(keysMaxFor(4 * GB, true)).toBeGreaterThan(4_000_000);
    expect(keysMaxFor(64 * 1024 * 1024, false)).toBe(0);
    expect(keysMaxFor(64 * GB, false)).toBeLessThan(2 ** 24);
  });

  it('refuses a value cache over a quarter of the heap, saying how to give Node.js more', () => {
    expect(cacheProblem(64 * 1024 * 1024, 4 * GB)).toBeNull();
    expect(cacheProblem(2 * GB, 4 * GB)).toMatch(/cache_bytes_max .* quarter .*--max-old-space-size/);
  });

  it('the embedded store reports its items\' bytes against its share of the heap, and lists no more than asked', async () => {
    const store = new MemoryBackend({ bytesMax: embeddedStoreBytesMax(GB) });
    const entry = { value: Buffer.alloc(1000), flags: 0, expiresAtMs: 0, cas: 1n };
    await store.setMany(Array.from({ length: 10 }, (_, i) => [`k${i}`, entry] as const));
    await store.set('k0', entry);
    await store.delete('k9');
    const { memory } = await store.health();
    expect(memory?.items).toBe(9);
    expect(memory?.usedBytes).toBeGreaterThan(9 * 1000);
    expect(memory?.usedBytes).toBeLessThan(9 * 1200);
    expect(memory?.limitBytes).toBe(embeddedStoreBytesMax(GB));
    await store.flush();
    expect((await store.health()).memory?.usedBytes).toBe(0);
    await store.set('a', entry);
    await store.set('b', entry);
    expect(await store.keys(2)).toHaveLength(2);
    await expect(store.keys(1)).rejects.toBeInstanceOf(StoreError);
  });
});
