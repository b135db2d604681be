/**
 * The peer messages of eventual mode and their validation.
 *
 * Intuition: two conversations. Pushes carry entries (results of local writes, or repairs) and
 * are acked once the receiver's replica has merged them; the ack lists the versions, which is
 * how a sender learns that a peer holds a tombstone. Anti-entropy is a three-step descent:
 * group digests → bucket digests of differing groups → key → version lists of differing
 * buckets, after which each side ships the entries the other lacks (`ae_want` asks for them).
 *
 * Everything here is JSON-serializable given the peer codec's Buffer and bigint support.
 * A malformed message is a value (the reason from `eventualMessageProblem`), never an exception:
 * every field typed, lists bounded, keys and entries as a client could have written them, versions
 * below 2^64. (How far ahead of local time a version may be is judged by the machine: it needs
 * the time.)
 */

import type { KeyedEntry } from '../types.ts';
import type { Entry } from '../../store/types.ts';
import { isCount, isU32, isU64, isValidKey } from '../../store/op-rules.ts';
import { BUCKET_COUNT, GROUP_COUNT } from './digest.ts';
import { counterFieldsProblem } from '../../store/counter.ts';

/** A (key, version) pair. */
export type KeyVersion = [key: string, version: bigint];

export type EventualMessage =
  /** Entries to merge (last writer wins). `batch` names the push for its ack. */
  | { kind: 'push'; batch: number; entries: KeyedEntry[] }
  /**
   * The receiver's replica merged push `batch`: it now holds these versions or later ones. Only
   * entries that are or may become dead (tombstones, entries with an expiry) are listed: they
   * are the ones collection needs to know every peer holds.
   */
  | { kind: 'push_ack'; batch: number; versions: KeyVersion[] }
  /** Anti-entropy, initiator → responder: the initiator's GROUP_COUNT group digests. */
  | { kind: 'ae_groups'; round: number; groups: number[] }
  /** Responder → initiator: the groups that differ, and every bucket digest in them. */
  | { kind: 'ae_buckets'; round: number; groups: number[]; buckets: Array<[bucket: number, digest: number]> }
  /** Initiator → responder: the key → version lists of the buckets that differ. */
  | { kind: 'ae_keys'; round: number; buckets: number[]; versions: KeyVersion[] }
  /** Either side: please ship these keys' entries to me. */
  | { kind: 'ae_want'; round: number; keys: string[] };

export type EventualMessageKind = EventualMessage['kind'];

/** Bounds of a valid message. */
export interface EventualMessageLimits {
  keyBytesMax: number;
  valueBytesMax: number;
  /** Most entries in a push, and versions in its ack. */
  pushEntriesMax: number;
  /** Most key → version pairs in an ae_keys, and keys in an ae_want. */
  keysMax: number;
}

const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

const isDigest = (value: unknown): value is number => isU32(value);

const isBucket = (value: unknown): value is number => isCount(value) && value < BUCKET_COUNT;

const isGroup = (value: unknown): value is number => isCount(value) && value < GROUP_COUNT;

/** True when `value` is an Entry within `limits`, as the peer codec delivers it. */
export function isEntry(value: unknown, limits: Pick<EventualMessageLimits, 'valueBytesMax'>): value is Entry {
  if (!isObject(value)) return false;
  return (
    Buffer.isBuffer(value.value) &&
    value.value.length <= limits.valueBytesMax &&
    isU64(value.cas) &&
    isU32(value.flags) &&
    isCount(value.expiresAtMs) &&
    (value.tombstone === undefined || typeof value.tombstone === 'boolean') &&
    counterFieldsProblem(value) === null
  );
}

function everyItem<T>(value: unknown, max: number, check: (item: unknown) => item is T): value is T[] {
  return Array.isArray(value) && value.length <= max && value.every((item) => check(item));
}

/** Why `value` is not an EventualMessage within `limits`, or null when it is one. */
export function eventualMessageProblem(value: unknown, limits: EventualMessageLimits): string | null {
  if (!isObject(value)) return 'not an object';
  const isKey = (item: unknown): item is string => isValidKey(item, limits.keyBytesMax);
  const isKeyVersion = (item: unknown): item is KeyVersion =>
    Array.isArray(item) && item.length === 2 && isKey(item[0]) && isU64(item[1]);
  const isKeyedEntry = (item: unknown): item is KeyedEntry =>
    Array.isArray(item) && item.length === 2 && isKey(item[0]) && isEntry(item[1], limits);
  const isBucketDigest = (item: unknown): item is [number, number] =>
    Array.isArray(item) && item.length === 2 && isBucket(item[0]) && isDigest(item[1]);
  switch (value.kind) {
    case 'push':
      return isCount(value.batch) && everyItem(value.entries, limits.pushEntriesMax, isKeyedEntry) ? null : 'push: bad fields';
    case 'push_ack':
      return isCount(value.batch) && everyItem(value.versions, limits.pushEntriesMax, isKeyVersion) ? null : 'push_ack: bad fields';
    case 'ae_groups':
      return isCount(value.round) && everyItem(value.groups, GROUP_COUNT, isDigest) && value.groups.length === GROUP_COUNT
        ? null
        : 'ae_groups: bad fields';
    case 'ae_buckets':
      return isCount(value.round) && everyItem(value.groups, GROUP_COUNT, isGroup) && everyItem(value.buckets, BUCKET_COUNT, isBucketDigest)
        ? null
        : 'ae_buckets: bad fields';
    case 'ae_keys':
      return isCount(value.round) && everyItem(value.buckets, BUCKET_COUNT, isBucket)
        && everyItem(value.versions, limits.keysMax, isKeyVersion)
        ? null
        : 'ae_keys: bad fields';
    case 'ae_want':
      return isCount(value.round) && everyItem(value.keys, limits.keysMax, isKey) ? null : 'ae_want: bad fields';
    default:
      return 'unknown message kind';
  }
}
