/**
 * memcached as mckv runs it (`-M` and the LRU settings of store/memcached-flags.ts): its LRU
 * maintainer runs with a large HOT segment, so it has little to move under writes, and it still
 * reclaims expired items by itself. The memory guard counts memcached's `bytes`
 * (store/memory-guard.ts): were expired items left counted until something read them, as with
 * `-o no_lru_maintainer`, a cluster whose keys expire would refuse writes it has room for.
 */

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pollUntil, stats } from './support/attack-kit.ts';
import { startMemcached, type MemcachedInstance } from './support/memcached.ts';
import { exchange } from './support/raw.ts';

describe('memcached as mckv starts it', () => {
  let server: MemcachedInstance;

  beforeAll(async () => {
    server = await startMemcached({ memoryMb: 64 });
  });

  afterAll(async () => {
    await server?.stop();
  });

  it('runs its LRU maintainer with a large HOT segment', async () => {
    const settings = await stats(server.port, 'settings');
    expect(settings.get('lru_maintainer_thread')).toBe('yes');
    expect(settings.get('hot_lru_pct')).toBe('70');
    expect(settings.get('warm_lru_pct')).toBe('10');
    expect(settings.get('evictions')).toBe('off');
  });

  it('reclaims expired items by itself, so their bytes stop counting', async () => {
    const items = 3000;
    const value = 'x'.repeat(500);
    let request = '';
    for (let index = 0; index < items; index += 1) request += `set ttl${index} 0 1 ${value.length}\r\n${value}\r\n`;
    const storedCount = (received: Buffer): number => received.toString('latin1').split('STORED\r\n').length - 1;
    const stored = await exchange(server.port, request, (received) => storedCount(received) === items, 10_000);
    expect(storedCount(stored)).toBe(items);
    const before = await stats(server.port);
    expect(Number(before.get('curr_items'))).toBeGreaterThanOrEqual(items);
    expect(Number(before.get('bytes'))).toBeGreaterThan(items * value.length);
    // Nothing reads the keys again: only memcached's own background work can reclaim them.
    const after = await pollUntil(() => stats(server.port), (now) => Number(now.get('bytes')) === 0, 20_000, 200);
    expect(Number(after.get('bytes'))).toBe(0);
    expect(Number(after.get('curr_items'))).toBe(0);
    expect(Number(after.get('reclaimed')) + Number(after.get('crawler_reclaimed'))).toBeGreaterThanOrEqual(items);
  });
});
