/**
 * A map from key strings to slot numbers, spread over SHARDS JavaScript Maps by a cheap hash of the
 * key, for the indexes that hold every key of a replica (./key-index.ts and eventual mode's version
 * index).
 *
 * Why: a Map grows by rehashing all it holds into a table twice the size, in one step. At two
 * million keys that step took 190 ms on an idle machine, and on a busy one it stopped a controller
 * for seconds, two indexes growing at the same key count. Spread over 64 Maps, each step moves a
 * sixty-fourth of the keys, and the steps fall at different moments.
 *
 * The shard comes from a hash of the key (tens of nanoseconds): keys chosen to land in one shard
 * cost no more than a single Map would. Iteration goes shard by shard, each in insertion order;
 * deleting the current key while iterating is safe, as with a Map.
 */

import { itemAt } from '../runtime/item-at.ts';
import { fnvKey, mix32 } from './key-hash.ts';

const SHARD_BITS = 6;
const SHARDS = 2 ** SHARD_BITS;

/** The hash a key's shard comes from (./key-hash.ts); a caller that has it may pass it to each method. */
export function keyHashOf(key: string): number {
  return mix32(fnvKey(key));
}

/** The shard of `key`: the top bits of its hash. */
export function shardOf(key: string): number {
  return shardOfHash(keyHashOf(key));
}

function shardOfHash(hash: number): number {
  return hash >>> (32 - SHARD_BITS);
}

export class ShardedMap {
  readonly #shards: Array<Map<string, number>> = Array.from({ length: SHARDS }, () => new Map<string, number>());
  #size = 0;

  get size(): number {
    return this.#size;
  }

  get(key: string, hash = keyHashOf(key)): number | undefined {
    return this.#shard(hash).get(key);
  }

  has(key: string, hash = keyHashOf(key)): boolean {
    return this.#shard(hash).has(key);
  }

  set(key: string, value: number, hash = keyHashOf(key)): void {
    const shard = this.#shard(hash);
    const before = shard.size;
    shard.set(key, value);
    this.#size += shard.size - before;
  }

  delete(key: string, hash = keyHashOf(key)): boolean {
    const deleted = this.#shard(hash).delete(key);
    if (deleted) this.#size -= 1;
    return deleted;
  }

  clear(): void {
    for (const shard of this.#shards) shard.clear();
    this.#size = 0;
  }

  *keys(): IterableIterator<string> {
    for (const shard of this.#shards) yield* shard.keys();
  }

  *entries(): IterableIterator<[string, number]> {
    for (const shard of this.#shards) yield* shard.entries();
  }

  #shard(hash: number): Map<string, number> {
    return itemAt(this.#shards, shardOfHash(hash));
  }
}
