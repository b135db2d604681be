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
 * Malformed messages are a value (`null` from `validateMessage`), never an exception.
 */

import type { KeyedEntry } from '../types.ts';
import type { Entry } from '../../store/types.ts';
import { BUCKET_COUNT, GROUP_COUNT } from './digest.ts';

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

const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null;

const isCount = (value: unknown): value is number =>
  typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;

const isDigest = (value: unknown): value is number =>
  isCount(value) && value <= 0xffffffff;

const isBucket = (value: unknown): value is number => isCount(value) && value < BUCKET_COUNT;

/** True when `value` is an Entry as the peer codec delivers it. */
export function isEntry(value: unknown): value is Entry {
  if (!isObject(value)) return false;
  return (
    Buffer.isBuffer(value.value) &&
    typeof value.cas === 'bigint' &&
    value.cas >= 0n &&
    typeof value.flags === 'number' &&
    typeof value.expiresAtMs === 'number' &&
    (value.tombstone === undefined || typeof value.tombstone === 'boolean')
  );
}

function isKeyedEntry(value: unknown): value is KeyedEntry {
  return Array.isArray(value) && value.length === 2 && typeof value[0] === 'string' && isEntry(value[1]);
}

function isKeyVersion(value: unknown): value is KeyVersion {
  return (
    Array.isArray(value) &&
    value.length === 2 &&
    typeof value[0] === 'string' &&
    typeof value[1] === 'bigint' &&
    value[1] >= 0n
  );
}

function isBucketDigest(value: unknown): value is [number, number] {
  return Array.isArray(value) && value.length === 2 && isBucket(value[0]) && isDigest(value[1]);
}

function everyItem<T>(value: unknown, check: (item: unknown) => item is T): value is T[] {
  return Array.isArray(value) && value.every((item) => check(item));
}

const isString = (value: unknown): value is string => typeof value === 'string';

/** The message if it is well formed, else null (the caller drops it). */
export function validateMessage(value: unknown): EventualMessage | null {
  if (!isObject(value)) return null;
  const message = value as EventualMessage;
  switch (message.kind) {
    case 'push':
      return isCount(message.batch) && everyItem(message.entries, isKeyedEntry) ? message : null;
    case 'push_ack':
      return isCount(message.batch) && everyItem(message.versions, isKeyVersion) ? message : null;
    case 'ae_groups':
      return isCount(message.round) &&
        everyItem(message.groups, isDigest) &&
        message.groups.length === GROUP_COUNT
        ? message
        : null;
    case 'ae_buckets':
      return isCount(message.round) &&
        everyItem(message.groups, isCount) &&
        everyItem(message.buckets, isBucketDigest)
        ? message
        : null;
    case 'ae_keys':
      return isCount(message.round) &&
        everyItem(message.buckets, isBucket) &&
        everyItem(message.versions, isKeyVersion)
        ? message
        : null;
    case 'ae_want':
      return isCount(message.round) && everyItem(message.keys, isString) ? message : null;
    default:
      return null;
  }
}
