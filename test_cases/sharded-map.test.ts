/**
 * The key-to-slot map behind the replica's indexes (src/store/sharded-map.ts): 64 Maps chosen by a
 * cheap hash of the key. It must behave as one Map (size, overwrite, delete, clear, every key
 * iterated once, deleting the current key while iterating), and spread ordinary keys over its
 * shards so that no one Map grows to hold most of them.
 */

import { describe, expect, it } from 'vitest';
import { shardOf, ShardedMap } from '../src/store/sharded-map.ts';

describe('ShardedMap', () => {
  it('behaves as one Map', () => {
    const map = new ShardedMap();
    const truth = new Map<string, number>();
    for (let i = 0; i < 3000; i += 1) {
      const key = i % 7 === 0 ? '' : `key:${i % 1200}`;
      if (i % 5 === 0) {
        expect(map.delete(key)).toBe(truth.delete(key));
      } else {
        map.set(key, i);
        truth.set(key, i);
      }
      expect(map.size).toBe(truth.size);
    }
    for (const [key, value] of truth) expect(map.get(key)).toBe(value);
    expect(map.has('absent')).toBe(false);
    expect(new Map(map.entries())).toEqual(truth);
    expect([...map.keys()].sort()).toEqual([...truth.keys()].sort());
    for (const key of map.keys()) map.delete(key); // deleting the current key while iterating
    expect(map.size).toBe(0);
    map.set('x', 1);
    map.clear();
    expect([map.size, map.get('x')]).toEqual([0, undefined]);
  });

  it('spreads loader-style and random-looking keys over every shard', () => {
    for (const make of [(i: number) => `k8000:${i}`, (i: number) => `user:${(i * 2654435761) % 1e9}:profile`, (i: number) => String(i)]) {
      const counts = new Array<number>(64).fill(0);
      for (let i = 0; i < 64_000; i += 1) {
        const shard = shardOf(make(i));
        counts[shard] = (counts[shard] ?? 0) + 1;
      }
      expect(Math.min(...counts)).toBeGreaterThan(500);
      expect(Math.max(...counts)).toBeLessThan(2000);
    }
  });
});
