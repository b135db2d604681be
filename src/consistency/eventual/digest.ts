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

/** What the index knows of one key. (`VersionIndex.set` copies every field: keep it in step.) */
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

/** The index with its bucket and group digests. */
export class VersionIndex {
  private readonly buckets: Array<Map<string, IndexEntry>> = [];
  /** Every entry by key, so a lookup needs no hash of the key (the buckets serve iteration). */
  private readonly entries = new Map<string, IndexEntry>();
  private readonly bucketDigests = new Array<number>(BUCKET_COUNT).fill(0);
  private readonly groupDigests = new Array<number>(GROUP_COUNT).fill(0);

  constructor() {
    for (let b = 0; b < BUCKET_COUNT; b += 1) this.buckets.push(new Map());
  }

  get size(): number {
    return this.entries.size;
  }

  get(key: string): IndexEntry | undefined {
    return this.entries.get(key);
  }

  /** Insert the entry of `key`, or update the one held in place (no map changes), updating the digests. */
  set(key: string, entry: IndexEntry): void {
    const keyHash = fnvKey(key);
    const bucket = bucketOfHash(keyHash);
    const indexed = this.entries.get(key);
    if (indexed === undefined) {
      this.entries.set(key, entry);
      this.bucket(bucket).set(key, entry);
      this.flip(bucket, versionTerm(keyHash, entry.version));
      return;
    }
    if (indexed.version !== entry.version) this.flip(bucket, versionTerm(keyHash, indexed.version) ^ versionTerm(keyHash, entry.version));
    indexed.version = entry.version;
    indexed.tombstone = entry.tombstone;
    indexed.expiresAtMs = entry.expiresAtMs;
    indexed.heldByMask = entry.heldByMask;
    indexed.touchedSeq = entry.touchedSeq;
    indexed.claimedSeq = entry.claimedSeq;
    indexed.resetVersion = entry.resetVersion;
  }

  delete(key: string): boolean {
    const previous = this.entries.get(key);
    if (previous === undefined) return false;
    const keyHash = fnvKey(key);
    const bucket = bucketOfHash(keyHash);
    this.entries.delete(key);
    this.bucket(bucket).delete(key);
    this.flip(bucket, versionTerm(keyHash, previous.version));
    return true;
  }

  clear(): void {
    for (const entries of this.buckets) entries.clear();
    this.entries.clear();
    this.bucketDigests.fill(0);
    this.groupDigests.fill(0);
  }

  /** Every key; deleting the current one while iterating is safe (a Map's iterator). */
  keys(): IterableIterator<string> {
    return this.entries.keys();
  }

  /** Bucket and group numbers here are below BUCKET_COUNT and GROUP_COUNT (a peer's are checked on arrival). */
  bucketEntries(bucket: number): ReadonlyMap<string, IndexEntry> {
    return this.bucket(bucket);
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

  private bucket(bucket: number): Map<string, IndexEntry> {
    return itemAt(this.buckets, bucket);
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
