/**
 * Seeded randomness: mulberry32, a tiny fast generator of numbers in [0, 1). The same seed gives
 * the same sequence, so a simulation, a fault schedule or a benchmark's key order replays exactly.
 * Nothing in mckv uses a global random source where a seed matters.
 */

import { itemAt } from './item-at.ts';

export type Random = () => number;

/** A generator seeded with `seed` (any number; its low 32 bits are used). */
export function mulberry32(seed: number): Random {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let mixed = state;
    mixed = Math.imul(mixed ^ (mixed >>> 15), mixed | 1);
    mixed ^= mixed + Math.imul(mixed ^ (mixed >>> 7), mixed | 61);
    return ((mixed ^ (mixed >>> 14)) >>> 0) / 4294967296;
  };
}

/** Picks one of `items` with `random`, each equally likely (items must not be empty). */
export function picker(random: Random): <T>(items: readonly T[]) => T {
  return (items) => itemAt(items, Math.floor(random() * items.length));
}
