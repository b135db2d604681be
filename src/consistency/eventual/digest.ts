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

/** Buckets keys hash into. A power of two. */
export const BUCKET_COUNT = 1024;
/** Buckets per group; GROUP_COUNT groups make the top level of the comparison. */
export const BUCKETS_PER_GROUP = 32;
export const GROUP_COUNT = BUCKET_COUNT / BUCKETS_PER_GROUP;

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

/** murmur3's 32-bit finaliser: every input bit affects every output bit. */
function mix32(input: number): number {
  let h = input;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** FNV-1a over a key's chars (keys are latin1 strings: one char per byte). */
function fnvKey(key: string): number {
  let h = FNV_OFFSET;
  for (let i = 0; i < key.length; i += 1) {
    h ^= key.charCodeAt(i) & 0xffff;
    h = Math.imul(h, FNV_PRIME);
  }
  return h;
}

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
  return bucketOfHash(fnvKey(key));
}

function bucketOfHash(keyHash: number): number {
  return mix32(keyHash) & (BUCKET_COUNT - 1);
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

/** `copy` (the larger) holding what `array` held. */
function grown<T extends Uint8Array | Uint16Array | Uint32Array | Int32Array | Float64Array>(array: T, copy: T): T {
  copy.set(array);
  return copy;
}

function grownBig(array: BigUint64Array, capacity: number): BigUint64Array<ArrayBuffer> {
  const copy = new BigUint64Array(capacity);
  copy.set(array);
  return copy;
}

/** A JavaScript Map holds at most 2^24 entries (V8): no more slots are ever needed. */
const SLOTS_MAX = 2 ** 24;
const CAPACITY_INITIAL = 1024;
const NONE = -1;
const TOMBSTONE = 1;
const HAS_RESET = 2;

/**
 * The index with its bucket and group digests. Each key's fields live in typed arrays by slot, a
 * Map taking the key to its slot, and each bucket is a list threaded through the slots in the
 * order its keys were added (as a Map iterates): at millions of keys a major garbage collection
 * then marks a string a key, not an entry object, a bigint and two Map slots besides. `get` hands
 * out a copy; what changes an entry goes through a method.
 */
export class VersionIndex {
  private readonly slots = new Map<string, number>();
  private keyOf: string[] = [];
  private version = new BigUint64Array(CAPACITY_INITIAL);
  private resetVersion = new BigUint64Array(CAPACITY_INITIAL);
  private bits = new Uint8Array(CAPACITY_INITIAL);
  private expiresAtMs = new Float64Array(CAPACITY_INITIAL);
  private heldByMask = new Uint32Array(CAPACITY_INITIAL);
  private touchedSeq = new Float64Array(CAPACITY_INITIAL);
  private claimedSeq = new Float64Array(CAPACITY_INITIAL);
  private bucketOfSlot = new Uint16Array(CAPACITY_INITIAL);
  private next = new Int32Array(CAPACITY_INITIAL);
  private previous = new Int32Array(CAPACITY_INITIAL);
  private free: number[] = [];
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
    return slot === undefined ? undefined : this.version[slot];
  }

  /** Insert the entry of `key`, or update the one held in place (its bucket keeps its place), updating the digests. */
  set(key: string, entry: IndexEntry): void {
    const keyHash = fnvKey(key);
    let slot = this.slots.get(key);
    if (slot === undefined) {
      slot = this.allocate(key, bucketOfHash(keyHash));
      this.slots.set(key, slot);
      this.flip(this.bucketAt(slot), versionTerm(keyHash, entry.version));
    } else {
      const held = this.version[slot] ?? 0n;
      if (held !== entry.version) this.flip(this.bucketAt(slot), versionTerm(keyHash, held) ^ versionTerm(keyHash, entry.version));
    }
    this.version[slot] = entry.version;
    this.resetVersion[slot] = entry.resetVersion ?? 0n;
    this.bits[slot] = (entry.tombstone ? TOMBSTONE : 0) | (entry.resetVersion === undefined ? 0 : HAS_RESET);
    this.expiresAtMs[slot] = entry.expiresAtMs;
    this.heldByMask[slot] = entry.heldByMask;
    this.touchedSeq[slot] = entry.touchedSeq;
    this.claimedSeq[slot] = entry.claimedSeq;
  }

  /** Notes a local-replica effect that may have changed `key` (IndexEntry.touchedSeq), if held. */
  touch(key: string, seq: number): void {
    const slot = this.slots.get(key);
    if (slot !== undefined) this.touchedSeq[slot] = seq;
  }

  /** Adds `bits` to the peers known to hold `key`'s version (IndexEntry.heldByMask), if held. */
  markHeld(key: string, bits: number): void {
    const slot = this.slots.get(key);
    if (slot !== undefined) this.heldByMask[slot] = (this.heldByMask[slot] ?? 0) | bits;
  }

  delete(key: string): boolean {
    const slot = this.slots.get(key);
    if (slot === undefined) return false;
    this.flip(this.bucketAt(slot), versionTerm(fnvKey(key), this.version[slot] ?? 0n));
    this.slots.delete(key);
    this.unlink(slot);
    this.keyOf[slot] = '';
    this.free.push(slot);
    return true;
  }

  clear(): void {
    this.slots.clear();
    this.keyOf = [];
    this.free = [];
    this.bucketFirst.fill(NONE);
    this.bucketLast.fill(NONE);
    this.bucketSizes.fill(0);
    this.bucketDigests.fill(0);
    this.groupDigests.fill(0);
  }

  /** Every key; deleting the current one while iterating is safe (a Map's iterator). */
  keys(): IterableIterator<string> {
    return this.slots.keys();
  }

  /** Bucket and group numbers here are below BUCKET_COUNT and GROUP_COUNT (a peer's are checked on arrival). */
  bucketSize(bucket: number): number {
    return this.bucketSizes[bucket] ?? 0;
  }

  /** The keys of `bucket` with a copy of each entry, in the order they were added; nothing may change the index meanwhile. */
  *bucketEntries(bucket: number): IterableIterator<[string, IndexEntry]> {
    for (let slot = this.bucketFirst[bucket] ?? NONE; slot !== NONE; slot = this.next[slot] ?? NONE) {
      yield [this.keyOf[slot] ?? '', this.entryAt(slot)];
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

  private entryAt(slot: number): IndexEntry {
    const bits = this.bits[slot] ?? 0;
    return {
      version: this.version[slot] ?? 0n,
      tombstone: (bits & TOMBSTONE) !== 0,
      expiresAtMs: this.expiresAtMs[slot] ?? 0,
      heldByMask: this.heldByMask[slot] ?? 0,
      touchedSeq: this.touchedSeq[slot] ?? 0,
      claimedSeq: this.claimedSeq[slot] ?? 0,
      ...((bits & HAS_RESET) === 0 ? {} : { resetVersion: this.resetVersion[slot] ?? 0n }),
    };
  }

  private bucketAt(slot: number): number {
    return this.bucketOfSlot[slot] ?? 0;
  }

  /** A free slot for `key`, at the end of `bucket`'s list. */
  private allocate(key: string, bucket: number): number {
    const slot = this.free.pop() ?? this.keyOf.length;
    if (slot >= this.version.length) this.grow();
    this.keyOf[slot] = key;
    this.bucketOfSlot[slot] = bucket;
    const last = this.bucketLast[bucket] ?? NONE;
    this.previous[slot] = last;
    this.next[slot] = NONE;
    if (last === NONE) this.bucketFirst[bucket] = slot;
    else this.next[last] = slot;
    this.bucketLast[bucket] = slot;
    this.bucketSizes[bucket] = (this.bucketSizes[bucket] ?? 0) + 1;
    return slot;
  }

  private unlink(slot: number): void {
    const bucket = this.bucketAt(slot);
    const before = this.previous[slot] ?? NONE;
    const after = this.next[slot] ?? NONE;
    if (before === NONE) this.bucketFirst[bucket] = after;
    else this.next[before] = after;
    if (after === NONE) this.bucketLast[bucket] = before;
    else this.previous[after] = before;
    this.bucketSizes[bucket] = (this.bucketSizes[bucket] ?? 1) - 1;
  }

  private grow(): void {
    const capacity = Math.min(SLOTS_MAX, this.version.length * 2);
    this.version = grownBig(this.version, capacity);
    this.resetVersion = grownBig(this.resetVersion, capacity);
    this.bits = grown(this.bits, new Uint8Array(capacity));
    this.expiresAtMs = grown(this.expiresAtMs, new Float64Array(capacity));
    this.heldByMask = grown(this.heldByMask, new Uint32Array(capacity));
    this.touchedSeq = grown(this.touchedSeq, new Float64Array(capacity));
    this.claimedSeq = grown(this.claimedSeq, new Float64Array(capacity));
    this.bucketOfSlot = grown(this.bucketOfSlot, new Uint16Array(capacity));
    this.next = grown(this.next, new Int32Array(capacity));
    this.previous = grown(this.previous, new Int32Array(capacity));
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
