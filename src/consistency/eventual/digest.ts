/**
 * The version index of eventual mode: key → (version, tombstone, expiry, which peers hold it),
 * kept in hash buckets whose digests update incrementally, for anti-entropy.
 *
 * Intuition: keys hash (FNV-1a, then a murmur3 finaliser to spread the bits) into
 * BUCKET_COUNT buckets; a bucket's digest is the XOR of hash(key, version) over its entries, so
 * changing one entry costs two XORs. Buckets form GROUP_COUNT groups whose digest is the XOR of
 * their buckets'. Two replicas compare group digests, then the bucket digests of differing
 * groups, then the key → version lists of differing buckets: the work follows the difference,
 * not the key count.
 *
 * Invariants:
 * - bucketDigest(b) = XOR of hashKeyVersion(k, v) over the entries of bucket b (0 when empty).
 * - groupDigest(g) = XOR of the bucket digests of group g.
 * - size = the number of keys held. Digests are unsigned 32-bit integers.
 */

import { itemAt } from '../../runtime/item-at.ts';
import { PAGE_MASK, PAGE_SLOTS, PagedSlots } from '../../store/paged-slots.ts';
import { fnvKey, FNV_PRIME, mix32 } from '../../store/key-hash.ts';
import { keyHashOf, ShardedMap } from '../../store/sharded-map.ts';

/** Buckets keys hash into. A power of two. */
export const BUCKET_COUNT = 1024;
/** Buckets per group; GROUP_COUNT groups make the top level of the comparison. */
export const BUCKETS_PER_GROUP = 32;
export const GROUP_COUNT = BUCKET_COUNT / BUCKETS_PER_GROUP;

function fnvWord(hash: number, word: number): number {
  let h = hash;
  for (let shift = 0; shift < 32; shift += 8) {
    h ^= (word >>> shift) & 0xff;
    h = Math.imul(h, FNV_PRIME);
  }
  return h;
}

/** The bucket a key belongs to, 0..BUCKET_COUNT-1. */
export function bucketOfKey(key: string): number {
  return bucketOfMixed(keyHashOf(key));
}

/** The bucket of a key from its mixed hash (`keyHashOf`, which also picks its map shard). */
function bucketOfMixed(mixed: number): number {
  return mixed & (BUCKET_COUNT - 1);
}

/** The group a bucket belongs to, 0..GROUP_COUNT-1. */
export function groupOfBucket(bucket: number): number {
  return Math.floor(bucket / BUCKETS_PER_GROUP);
}

/** hash(key, version): the term a (key, version) pair contributes to its bucket's digest. */
export function hashKeyVersion(key: string, version: bigint): number {
  return versionTerm(fnvKey(key), version);
}

/** `hashKeyVersion` from the key's FNV hash, so an update hashes the key once. */
function versionTerm(keyHash: number, version: bigint): number {
  const low = Number(version & 0xffffffffn);
  const high = Number((version >> 32n) & 0xffffffffn);
  return mix32(fnvWord(fnvWord(keyHash, low), high));
}

/** What the index knows of one key. (`VersionIndex.set` and `entryAt` copy every field: keep them in step.) */
export interface IndexEntry {
  version: bigint;
  tombstone: boolean;
  /** Absolute expiry, ms since the epoch; 0 = never. */
  expiresAtMs: number;
  /** Bit per peer (by node index) known to hold this version or a later one. */
  heldByMask: number;
  /**
   * Sequence number of the last local-replica effect that may have changed this key: a fetch
   * issued before it may return an older state.
   */
  touchedSeq: number;
  /**
   * Sequence number of what makes the replica hold `version`: the merge that wrote it, or the
   * fetch that found it there. A fetch issued after it that finds an older version shows the
   * write never landed (memcached refused it).
   */
  claimedSeq: number;
  /**
   * The version of the reset the entry counts from (../../store/counter.ts), when not `version`:
   * a merge joined it over a greater version. A tombstone that stands in for it must carry it.
   */
  resetVersion?: bigint;
}

/** The fields of PAGE_SLOTS consecutive slots (../../store/paged-slots.ts). */
class Page {
  readonly version = new BigUint64Array(PAGE_SLOTS);
  readonly resetVersion = new BigUint64Array(PAGE_SLOTS);
  readonly bits = new Uint8Array(PAGE_SLOTS);
  readonly expiresAtMs = new Float64Array(PAGE_SLOTS);
  readonly heldByMask = new Uint32Array(PAGE_SLOTS);
  readonly touchedSeq = new Float64Array(PAGE_SLOTS);
  readonly claimedSeq = new Float64Array(PAGE_SLOTS);
  readonly bucket = new Uint16Array(PAGE_SLOTS);
  readonly next = new Int32Array(PAGE_SLOTS);
  readonly previous = new Int32Array(PAGE_SLOTS);
  readonly keys = new Array<string>(PAGE_SLOTS).fill('');
}

const NONE = -1;
const TOMBSTONE = 1;
const HAS_RESET = 2;

/**
 * The index with its bucket and group digests. Each key's fields live in typed arrays by slot, a
 * map taking the key to its slot (64 Maps: ../../store/sharded-map.ts), and each bucket is a list
 * threaded through the slots in the order its keys were added (as a Map iterates): at millions of
 * keys a major garbage collection then marks a string a key, not an entry object, a bigint and two
 * Map slots besides. `get` hands out a copy; what changes an entry goes through a method.
 */
export class VersionIndex {
  private readonly slots = new ShardedMap();
  private readonly paged = new PagedSlots(() => new Page());
  private readonly bucketFirst = new Int32Array(BUCKET_COUNT).fill(NONE);
  private readonly bucketLast = new Int32Array(BUCKET_COUNT).fill(NONE);
  private readonly bucketSizes = new Uint32Array(BUCKET_COUNT);
  private readonly bucketDigests = new Array<number>(BUCKET_COUNT).fill(0);
  private readonly groupDigests = new Array<number>(GROUP_COUNT).fill(0);

  get size(): number {
    return this.slots.size;
  }

  /** A copy of what the index holds of `key`, if anything. */
  get(key: string): IndexEntry | undefined {
    const slot = this.slots.get(key);
    return slot === undefined ? undefined : this.entryAt(slot);
  }

  has(key: string): boolean {
    return this.slots.has(key);
  }

  /** The version held of `key`, if any (no copy of the rest). */
  versionOf(key: string): bigint | undefined {
    const slot = this.slots.get(key);
    return slot === undefined ? undefined : (this.page(slot).version[slot & PAGE_MASK] ?? 0n);
  }

  /** Insert the entry of `key`, or update the one held in place (its bucket keeps its place), updating the digests. */
  set(key: string, entry: IndexEntry): void {
    // One hash of the key: its bucket and its map shard come from the mixed one, the digest term from FNV's.
    const keyHash = fnvKey(key);
    const mixed = mix32(keyHash);
    let slot = this.slots.get(key, mixed);
    if (slot === undefined) {
      slot = this.allocate(key, bucketOfMixed(mixed));
      this.slots.set(key, slot, mixed);
      this.flip(this.bucketAt(slot), versionTerm(keyHash, entry.version));
    } else {
      const held = this.page(slot).version[slot & PAGE_MASK] ?? 0n;
      if (held !== entry.version) this.flip(this.bucketAt(slot), versionTerm(keyHash, held) ^ versionTerm(keyHash, entry.version));
    }
    const page = this.page(slot);
    const at = slot & PAGE_MASK;
    page.version[at] = entry.version;
    page.resetVersion[at] = entry.resetVersion ?? 0n;
    page.bits[at] = (entry.tombstone ? TOMBSTONE : 0) | (entry.resetVersion === undefined ? 0 : HAS_RESET);
    page.expiresAtMs[at] = entry.expiresAtMs;
    page.heldByMask[at] = entry.heldByMask;
    page.touchedSeq[at] = entry.touchedSeq;
    page.claimedSeq[at] = entry.claimedSeq;
  }

  /** Notes a local-replica effect that may have changed `key` (IndexEntry.touchedSeq), if held. */
  touch(key: string, seq: number): void {
    const slot = this.slots.get(key);
    if (slot !== undefined) this.page(slot).touchedSeq[slot & PAGE_MASK] = seq;
  }

  /** Adds `bits` to the peers known to hold `key`'s version (IndexEntry.heldByMask), if held. */
  markHeld(key: string, bits: number): void {
    const slot = this.slots.get(key);
    if (slot === undefined) return;
    const held = this.page(slot).heldByMask;
    const at = slot & PAGE_MASK;
    held[at] = (held[at] ?? 0) | bits;
  }

  delete(key: string): boolean {
    const keyHash = fnvKey(key);
    const mixed = mix32(keyHash);
    const slot = this.slots.get(key, mixed);
    if (slot === undefined) return false;
    this.flip(this.bucketAt(slot), versionTerm(keyHash, this.page(slot).version[slot & PAGE_MASK] ?? 0n));
    this.slots.delete(key, mixed);
    this.unlink(slot);
    this.page(slot).keys[slot & PAGE_MASK] = '';
    this.paged.release(slot);
    return true;
  }

  clear(): void {
    this.slots.clear();
    for (const page of this.paged.pages) page.keys.fill('');
    this.paged.clear();
    this.bucketFirst.fill(NONE);
    this.bucketLast.fill(NONE);
    this.bucketSizes.fill(0);
    this.bucketDigests.fill(0);
    this.groupDigests.fill(0);
  }

  /** Every key; deleting the current one while iterating is safe (as with a Map's iterator). */
  keys(): IterableIterator<string> {
    return this.slots.keys();
  }

  /** Bucket and group numbers here are below BUCKET_COUNT and GROUP_COUNT (a peer's are checked on arrival). */
  bucketSize(bucket: number): number {
    return this.bucketSizes[bucket] ?? 0;
  }

  /** The keys of `bucket` with a copy of each entry, in the order they were added; nothing may change the index meanwhile. */
  *bucketEntries(bucket: number): IterableIterator<[string, IndexEntry]> {
    for (let slot = this.bucketFirst[bucket] ?? NONE; slot !== NONE; slot = this.page(slot).next[slot & PAGE_MASK] ?? NONE) {
      yield [this.page(slot).keys[slot & PAGE_MASK] ?? '', this.entryAt(slot)];
    }
  }

  bucketDigest(bucket: number): number {
    return itemAt(this.bucketDigests, bucket);
  }

  groupDigest(group: number): number {
    return itemAt(this.groupDigests, group);
  }

  /** A copy of the GROUP_COUNT group digests. */
  groupDigestList(): number[] {
    return [...this.groupDigests];
  }

  private page(slot: number): Page {
    return this.paged.page(slot);
  }

  private entryAt(slot: number): IndexEntry {
    const page = this.page(slot);
    const at = slot & PAGE_MASK;
    const bits = page.bits[at] ?? 0;
    return {
      version: page.version[at] ?? 0n,
      tombstone: (bits & TOMBSTONE) !== 0,
      expiresAtMs: page.expiresAtMs[at] ?? 0,
      heldByMask: page.heldByMask[at] ?? 0,
      touchedSeq: page.touchedSeq[at] ?? 0,
      claimedSeq: page.claimedSeq[at] ?? 0,
      ...((bits & HAS_RESET) === 0 ? {} : { resetVersion: page.resetVersion[at] ?? 0n }),
    };
  }

  private bucketAt(slot: number): number {
    return this.page(slot).bucket[slot & PAGE_MASK] ?? 0;
  }

  /** A free slot for `key`, at the end of `bucket`'s list. */
  private allocate(key: string, bucket: number): number {
    const slot = this.paged.allocate();
    const page = this.page(slot);
    const at = slot & PAGE_MASK;
    page.keys[at] = key;
    page.bucket[at] = bucket;
    const last = this.bucketLast[bucket] ?? NONE;
    page.previous[at] = last;
    page.next[at] = NONE;
    if (last === NONE) this.bucketFirst[bucket] = slot;
    else this.page(last).next[last & PAGE_MASK] = slot;
    this.bucketLast[bucket] = slot;
    this.bucketSizes[bucket] = (this.bucketSizes[bucket] ?? 0) + 1;
    return slot;
  }

  private unlink(slot: number): void {
    const page = this.page(slot);
    const at = slot & PAGE_MASK;
    const bucket = page.bucket[at] ?? 0;
    const before = page.previous[at] ?? NONE;
    const after = page.next[at] ?? NONE;
    if (before === NONE) this.bucketFirst[bucket] = after;
    else this.page(before).next[before & PAGE_MASK] = after;
    if (after === NONE) this.bucketLast[bucket] = before;
    else this.page(after).previous[after & PAGE_MASK] = before;
    this.bucketSizes[bucket] = (this.bucketSizes[bucket] ?? 1) - 1;
  }

  private flip(bucket: number, term: number): void {
    this.bucketDigests[bucket] = (itemAt(this.bucketDigests, bucket) ^ term) >>> 0;
    const group = groupOfBucket(bucket);
    this.groupDigests[group] = (itemAt(this.groupDigests, group) ^ term) >>> 0;
  }
}

/** Groups whose digests differ between two GROUP_COUNT lists. */
export function differingGroups(mine: readonly number[], theirs: readonly number[]): number[] {
  const differing: number[] = [];
  for (let g = 0; g < GROUP_COUNT; g += 1) {
    if (mine[g] !== theirs[g]) differing.push(g);
  }
  return differing;
}

/** The buckets of one group. */
export function bucketsOfGroup(group: number): number[] {
  const first = group * BUCKETS_PER_GROUP;
  return Array.from({ length: BUCKETS_PER_GROUP }, (_, i) => first + i);
}
