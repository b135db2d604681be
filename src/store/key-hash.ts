/**
 * A 32-bit hash of a key, for spreading keys over buckets and shards: FNV-1a over its characters
 * (keys are latin1 strings, one char per byte), and murmur3's finaliser so that every input bit
 * affects every output bit. Eventual mode's digest buckets and the indexes' map shards
 * (./sharded-map.ts) both take theirs from here.
 */

const FNV_OFFSET = 0x811c9dc5;
export const FNV_PRIME = 0x01000193;

/** murmur3's 32-bit finaliser: every input bit affects every output bit. */
export function mix32(input: number): number {
  let h = input;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** FNV-1a over a key's chars. */
export function fnvKey(key: string): number {
  let h = FNV_OFFSET;
  for (let i = 0; i < key.length; i += 1) {
    h ^= key.charCodeAt(i) & 0xffff;
    h = Math.imul(h, FNV_PRIME);
  }
  return h;
}
