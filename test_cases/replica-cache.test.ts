/**
 * The value cache answers most reads without memcached, so besides keeping its byte bound it must
 * never answer what memcached would not. ValueCache itself (CLOCK eviction, withheld keys, an exact
 * byte count over a long seeded run), and the Replica serving from it: at once only when nothing
 * earlier on the key runs, no trace of a write whose outcome is unknown, emptied by resets, and no
 * trust in an entry expired by the wall clock.
 */

import { describe, expect, it } from 'vitest';
import { Replica } from '../src/store/replica.ts';
import { cachedEntryBytes, ValueCache } from '../src/store/value-cache.ts';
import type { Entry } from '../src/store/types.ts';
import type { Reply } from '../src/protocol/types.ts';
import { mulberry32 as seeded } from '../src/runtime/random.ts';
import { itemAt } from '../src/runtime/item-at.ts';
import { appendOp, CountingBackend, entry, getOp, incrOp, NOW, setOp, values } from './support/replica-kit.ts';

describe('ValueCache (CLOCK eviction)', () => {
  const sized = (value: string, cas = 1n): Entry => entry(value, cas);

  it('keeps its byte bound, dropping the oldest entries not used since they were inserted', () => {
    const cost = cachedEntryBytes('a', sized('x'.repeat(10)));
    const cache = new ValueCache(3 * cost);
    for (const key of ['a', 'b', 'c']) cache.set(key, sized('x'.repeat(10)));
    expect(cache.get('a')).toBeDefined(); // a gets a second chance
    cache.set('d', sized('x'.repeat(10)));
    expect(cache.bytes).toBeLessThanOrEqual(cache.bytesMax);
    expect(['a', 'b', 'c', 'd'].filter((key) => cache.get(key) !== undefined)).toEqual(['a', 'c', 'd']);
  });

  it('evicts even when every entry was used, and never holds one larger than the bound', () => {
    const cost = cachedEntryBytes('a', sized('y'));
    const cache = new ValueCache(2 * cost);
    cache.set('a', sized('y'));
    cache.set('b', sized('y'));
    cache.get('a');
    cache.get('b');
    cache.set('c', sized('y'));
    expect(cache.size).toBe(2);
    expect(cache.bytes).toBe(2 * cost);
    cache.set('huge', sized('z'.repeat(10 * cost)));
    expect(cache.get('huge')).toBeUndefined();
    expect(cache.bytes).toBeLessThanOrEqual(cache.bytesMax);
  });

  it('replaces an entry in place with the right byte count, and forgets deleted ones', () => {
    const cache = new ValueCache(1 << 20);
    cache.set('k', sized('short', 1n));
    cache.set('k', sized('a longer value', 2n));
    expect(cache.get('k')?.cas).toBe(2n);
    expect(cache.bytes).toBe(cachedEntryBytes('k', sized('a longer value')));
    cache.delete('k');
    expect(cache.bytes).toBe(0);
    expect(cache.size).toBe(0);
  });

  it('misses a withheld key until its next set, charging only its slot meanwhile', () => {
    const cache = new ValueCache(1 << 20);
    cache.set('k', sized('a value', 1n));
    cache.withhold('k');
    expect(cache.get('k')).toBeUndefined();
    expect(cache.bytes).toBe(cachedEntryBytes('k', sized('')));
    cache.withhold('k'); // twice changes nothing
    expect(cache.bytes).toBe(cachedEntryBytes('k', sized('')));
    cache.set('k', sized('another value', 2n));
    expect(cache.get('k')?.cas).toBe(2n);
    expect(cache.bytes).toBe(cachedEntryBytes('k', sized('another value')));
    cache.withhold('k');
    cache.delete('k');
    expect([cache.bytes, cache.size]).toEqual([0, 0]);
    cache.withhold('absent');
    expect(cache.size).toBe(0);
  });

  it('holds its bound over a long seeded run of sets, gets, withholds and deletes', () => {
    const random = seeded(11);
    const cache = new ValueCache(4096);
    const withheld = new Set<string>();
    for (let step = 0; step < 20_000; step += 1) {
      const key = `k${Math.floor(random() * 200)}`;
      const roll = random();
      if (roll < 0.45) {
        cache.set(key, sized('v'.repeat(Math.floor(random() * 100))));
        withheld.delete(key);
      } else if (roll < 0.55) {
        cache.withhold(key);
        withheld.add(key);
      } else if (roll < 0.9) {
        const found = cache.get(key);
        if (withheld.has(key) && found !== undefined) throw new Error(`withheld ${key} answered at step ${step}`);
      } else {
        cache.delete(key);
        withheld.delete(key);
      }
      if (cache.bytes > cache.bytesMax) throw new Error(`bound broken at step ${step}`);
    }
    expect(cache.size).toBeGreaterThan(0);
    // The byte count stayed exact: forgetting every key brings it back to zero.
    for (let i = 0; i < 200; i += 1) cache.delete(`k${i}`);
    expect([cache.bytes, cache.size]).toEqual([0, 0]);
  });
});

describe('Replica value cache', () => {
  it('answers a get at once (readNow) only when nothing earlier on its keys is running', async () => {
    const backend = new CountingBackend();
    const replica = new Replica(backend, { tombstones: false });
    await replica.apply(setOp('k', '1'), { cas: 1n, nowMs: NOW });
    await new Promise((resolve) => setImmediate(resolve)); // the call's bookkeeping settles
    expect(replica.readNow(getOp('k'), NOW)).toMatchObject({ kind: 'values', items: [expect.objectContaining({ key: 'k' })] });
    const write = replica.apply(setOp('k', '2'), { cas: 2n, nowMs: NOW });
    expect(replica.readNow(getOp('k'), NOW)).toBeNull(); // the write is still running
    await write;
    await new Promise((resolve) => setImmediate(resolve));
    expect(values(replica.readNow(getOp('k'), NOW) as Reply)).toEqual([['k', '2']]);
    // A key neither cached nor known absent needs the backend: not now.
    await backend.set('elsewhere', entry('v', 9n));
    expect(replica.readNow(getOp('elsewhere'), NOW)).toBeNull();
  });

  it('serves gets and read-modify-writes of entries it wrote without a backend read', async () => {
    const backend = new CountingBackend();
    const replica = new Replica(backend, { tombstones: false });
    await replica.apply(setOp('k', '1'), { cas: 1n, nowMs: NOW });
    for (let round = 0; round < 5; round += 1) expect(values(await replica.read(getOp('k', 'k'), NOW))).toEqual([['k', '1'], ['k', '1']]);
    expect(await replica.apply(incrOp('k'), { cas: 2n, nowMs: NOW })).toEqual({ kind: 'number', value: 2n, cas: 2n });
    expect(await replica.apply(appendOp('k', 'x'), { cas: 3n, nowMs: NOW })).toEqual({ kind: 'stored', cas: 3n });
    expect(values(await replica.read(getOp('k'), NOW))).toEqual([['k', '2x']]);
    expect(backend.gets).toBe(0);
    expect(backend.sets).toBe(3);
    // A key it never saw is read from the backend once, then cached.
    await backend.set('other', entry('v', 9n));
    expect(values(await replica.read(getOp('other'), NOW))).toEqual([['other', 'v']]);
    expect(values(await replica.read(getOp('other'), NOW))).toEqual([['other', 'v']]);
    expect(backend.gets).toBe(1);
    expect(replica.cacheUsage()).toMatchObject({ entries: 2 });
  });

  it('keeps a state transfer\'s puts and a whole-replica read out of the cache: they evict nothing clients use', async () => {
    const backend = new CountingBackend();
    const replica = new Replica(backend, { tombstones: false, replay: 'skip-applied' });
    await replica.reset(); // as a transfer's receiver: its index then knows every key
    await replica.apply(setOp('hot', '1'), { cas: 1n, nowMs: NOW });
    const transferred = Array.from({ length: 100 }, (_, i) => [`t${i}`, entry(`v${i}`, BigInt(i + 2))] as const);
    await replica.put(transferred.map(([key, value]) => [key, value]), 'overwrite');
    expect(replica.cacheUsage().entries).toBe(1);
    const all = await replica.fetch(null);
    expect(all).toHaveLength(101);
    expect(replica.cacheUsage().entries).toBe(1);
    expect(backend.gets).toBe(100);
    // What it holds is memcached's: a client's read gets it there, then from the cache.
    expect(values(await replica.read(getOp('t7'), NOW))).toEqual([['t7', 'v7']]);
    expect(values(await replica.read(getOp('t7'), NOW))).toEqual([['t7', 'v7']]);
    expect(backend.gets).toBe(101);
    // A merge (a peer's push) is cached as before.
    await replica.put([['m', entry('m', 200n)]], 'merge');
    expect(replica.cacheUsage().entries).toBe(3);
  });

  it('keeps no trace of a write whose outcome is unknown', async () => {
    const backend = new CountingBackend();
    const replica = new Replica(backend, { tombstones: false });
    await replica.apply(setOp('k', 'one'), { cas: 1n, nowMs: NOW });
    await replica.apply(setOp('j', 'one'), { cas: 2n, nowMs: NOW });
    expect(replica.cacheUsage().entries).toBe(2);
    backend.failNextSetAfterStoring = true;
    await expect(replica.apply(setOp('k', 'two'), { cas: 3n, nowMs: NOW })).rejects.toMatchObject({ code: 'BACKEND_TIMEOUT' });
    expect(replica.cacheUsage()).toMatchObject({ entries: 0, bytes: 0 });
    replica.acknowledgeReset();
    // The backend did store it: the next read must ask the backend, not answer "one".
    const getsBefore = backend.gets;
    expect(values(await replica.read(getOp('k', 'j'), NOW))).toEqual([['k', 'two'], ['j', 'one']]);
    expect(backend.gets).toBe(getsBefore + 2);
  });

  it('stays within its byte bound, evicting the least recently used', async () => {
    const backend = new CountingBackend();
    const cacheBytesMax = 4000;
    const replica = new Replica(backend, { tombstones: false, cacheBytesMax });
    const value = 'v'.repeat(100);
    for (let index = 0; index < 100; index += 1) {
      await replica.apply(setOp(`key${index}`, value), { cas: BigInt(index + 1), nowMs: NOW });
      expect(replica.cacheUsage().bytes).toBeLessThanOrEqual(cacheBytesMax);
    }
    const held = replica.cacheUsage().entries;
    expect(held).toBeGreaterThan(0);
    expect(held).toBeLessThan(100);
    // The most recent ones are held; the oldest were evicted and are read back from the backend.
    expect(values(await replica.read(getOp('key99'), NOW))).toEqual([['key99', value]]);
    expect(backend.gets).toBe(0);
    expect(values(await replica.read(getOp('key0'), NOW))).toEqual([['key0', value]]);
    expect(backend.gets).toBe(1);
    expect(replica.cacheUsage().bytes).toBeLessThanOrEqual(cacheBytesMax);
    // An entry larger than the bound is never cached, and is still stored.
    await replica.apply(setOp('big', 'b'.repeat(cacheBytesMax)), { cas: 200n, nowMs: NOW });
    expect(itemAt(values(await replica.read(getOp('big'), NOW)), 0)[1]).toHaveLength(cacheBytesMax);
    expect(backend.gets).toBe(2);
  });

  it('is emptied by reset, flush_all and acknowledgeReset', async () => {
    const backend = new CountingBackend();
    const replica = new Replica(backend, { tombstones: true });
    await replica.apply(setOp('a', '1'), { cas: 1n, nowMs: NOW });
    await replica.reset();
    expect(replica.cacheUsage().entries).toBe(0);
    expect(values(await replica.read(getOp('a'), NOW))).toEqual([]);
    await replica.apply(setOp('b', '1'), { cas: 2n, nowMs: NOW });
    await replica.apply({ kind: 'delete', key: 'b' }, { cas: 3n, nowMs: NOW });
    // The tombstone is cached: the delete read nothing, and neither does this get.
    expect(values(await replica.read(getOp('b'), NOW))).toEqual([]);
    expect(backend.gets).toBe(0);
    expect(await replica.fetch(['b'])).toEqual([['b', entry('', 3n, { tombstone: true })]]);
    replica.acknowledgeReset();
    expect(replica.cacheUsage().entries).toBe(0);
  });

  it('does not trust a cached entry that has expired by the wall clock', async () => {
    const backend = new CountingBackend();
    const replica = new Replica(backend, { tombstones: false });
    // Expired by the wall clock, live at the op's time: the backend decides, as without a cache.
    await replica.apply(setOp('t', 'x', Date.now() - 1), { cas: 1n, nowMs: NOW });
    expect(values(await replica.read(getOp('t'), NOW))).toEqual([['t', 'x']]);
    expect(backend.gets).toBe(1);
    expect(values(await replica.read(getOp('t'), Date.now()))).toEqual([]);
  });
});
