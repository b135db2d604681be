/**
 * A whole replica's keys sorted without stopping the controller: the same order as the native
 * sort, and turns of the event loop run while it sorts (a leader that sorted 3.9 million keys in
 * one call sent no heartbeat for 4 s, and its followers elected another).
 */

import { describe, expect, it } from 'vitest';
import { sortInTurns } from '../src/runtime/turns.ts';
import { mulberry32 } from './support/eventual-sim.ts';
import { countTurns } from './support/turns.ts';

function shuffledKeys(count: number, seed: number): string[] {
  const random = mulberry32(seed);
  // Some keys repeated, some sharing long prefixes, some beyond latin1: the native order decides.
  return Array.from({ length: count }, (_, i) => {
    const n = Math.floor(random() * count);
    return i % 97 === 0 ? `k${n}\u00e9\u4e2d` : i % 13 === 0 ? `shared:prefix:${n % 50}` : `k${n}`;
  });
}

describe('sortInTurns', () => {
  it.each([0, 1, 2, 16_383, 16_384, 16_385, 50_000, 70_001])('sorts %i keys as Array.prototype.sort does, in place', async (count) => {
    const keys = shuffledKeys(count, count + 7);
    const expected = [...keys].sort();
    const sorted = await sortInTurns(keys);
    expect(sorted).toBe(keys);
    expect(sorted).toEqual(expected);
  });

  it('lets the event loop run while it sorts keys of many slices', async () => {
    const keys = shuffledKeys(200_000, 3);
    const turns = countTurns();
    await sortInTurns(keys);
    // 13 runs and 4 merge passes of 200,000 keys, a turn per slice of 16,384.
    expect(turns.stop()).toBeGreaterThanOrEqual(30);
  });
});
