/**
 * The peer messages of causal mode and their validation.
 *
 * One conversation per ordered pair of nodes: the sender ships *batches* — the results of its
 * local writes since the last batch the receiver acknowledged, or, when it does not know what
 * the receiver holds, a *snapshot* of its whole replica — and the receiver acknowledges each
 * batch once its replica has merged it, with its visible vector. Batches may arrive out of order
 * (a few are in flight); the receiver parks them until they follow on. A batch too large for one frame
 * goes in `parts` messages that share (snapshot, prev, to).
 *
 * Vectors are indexed by the cluster's node ids in sorted order; every one has exactly one
 * component per node. A malformed message is a value (the reason from `causalMessageProblem`),
 * never an exception: fields typed, lists bounded, versions below 2^64, counters safe integers.
 */

import type { KeyedEntry } from '../types.ts';
import { isCount, isU64, isValidKey } from '../../store/op-rules.ts';
import { isEntry } from '../eventual/messages.ts';
import { itemAt } from '../../runtime/item-at.ts';

/** One version per node (sorted node order): the greatest write of that node covered. */
export type VersionVector = bigint[];

export type CausalMessage =
  /**
   * The sender's writes with versions in (prev, to] — or, with `snapshot`, its whole replica —
   * as the latest entry per key. The receiver may make them visible once it sees every write
   * of `deps` (the sender's visible vector when it read them; a snapshot needs nothing: it is a
   * causally closed cut, and `deps` says what it covers — unless `needs` says more).
   */
  | {
      kind: 'batch';
      snapshot: boolean;
      /** What the sender believes the receiver holds of its chain: more than it does means a gap. */
      base: bigint;
      prev: bigint;
      to: bigint;
      deps: VersionVector;
      /**
       * A snapshot only, from a sender whose replica is being rebuilt (./rebuild-gate.ts): its
       * entries may depend on writes it no longer holds, up to this vector. The receiver takes it
       * once it sees those writes of every other node, or holds that node's own snapshot too.
       */
      needs?: VersionVector;
      part: number;
      parts: number;
      entries: KeyedEntry[];
    }
  /**
   * The receiver made the batch ending at `to` visible (or already had it), and its visible
   * vector is now `visible`. `resync`: it cannot use the sender's batches (a gap, or a wait too
   * long for another node's writes): send a snapshot next.
   */
  | { kind: 'batch_ack'; to: bigint; visible: VersionVector; resync: boolean }
  /**
   * The receiver holds the first `received` of the `parts` of the batch (snapshot or not) ending at
   * `to`: the sender may send on from there (see ../send-window.ts).
   */
  | { kind: 'part_ack'; snapshot: boolean; to: bigint; parts: number; received: number }
  /** The sender's visible vector, now and then: how every node learns what is stable. */
  | { kind: 'visible'; visible: VersionVector };

/** A batch whole: as its sender keeps it until it is acknowledged, and as its receiver assembles it. */
export interface Batch {
  snapshot: boolean;
  prev: bigint;
  to: bigint;
  deps: VersionVector;
  /** A snapshot's: see the batch message. */
  needs?: VersionVector;
  entries: KeyedEntry[];
}

/** Bounds of a valid message. */
export interface CausalMessageLimits {
  keyBytesMax: number;
  valueBytesMax: number;
  /** Components of every vector: the cluster's size. */
  nodeCount: number;
  /** Most entries in one batch message. */
  entriesMax: number;
  /** Most parts of one batch. */
  partsMax: number;
}

const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

/**
 * Component `index` of a vector (a place in the sorted node list). Every vector has one per node:
 * the machine makes its own so and `isVector` holds a peer's to it, so a miss is a bug here.
 */
export function componentOf(vector: readonly bigint[], index: number): bigint {
  return itemAt(vector, index);
}

/** True when `value` is a vector with one u64 per node. */
export function isVector(value: unknown, nodeCount: number): value is VersionVector {
  return Array.isArray(value) && value.length === nodeCount && value.every((item) => isU64(item));
}

/** Why `value` is not a CausalMessage within `limits`, or null when it is one. */
export function causalMessageProblem(value: unknown, limits: CausalMessageLimits): string | null {
  if (!isObject(value)) return 'not an object';
  switch (value.kind) {
    case 'batch': {
      const { entries, part, parts } = value;
      if (typeof value.snapshot !== 'boolean' || !isU64(value.base) || !isU64(value.prev) || !isU64(value.to)) return 'batch: bad range';
      if (!isVector(value.deps, limits.nodeCount)) return 'batch: bad deps vector';
      if (value.needs !== undefined && (value.snapshot !== true || !isVector(value.needs, limits.nodeCount))) return 'batch: bad needs vector';
      if (!isCount(part) || !isCount(parts) || parts < 1 || parts > limits.partsMax || part >= parts) return 'batch: bad part';
      if (!Array.isArray(entries) || entries.length > limits.entriesMax) return 'batch: bad entries';
      const ok = entries.every(
        (item: unknown) =>
          Array.isArray(item) && item.length === 2 && isValidKey(item[0], limits.keyBytesMax) && isEntry(item[1], limits),
      );
      return ok ? null : 'batch: bad entry';
    }
    case 'part_ack': {
      const { parts, received } = value;
      if (typeof value.snapshot !== 'boolean' || !isU64(value.to)) return 'part_ack: bad range';
      return isCount(parts) && isCount(received) && parts <= limits.partsMax && received <= parts ? null : 'part_ack: bad counts';
    }
    case 'batch_ack':
      if (!isU64(value.to) || typeof value.resync !== 'boolean') return 'batch_ack: bad fields';
      return isVector(value.visible, limits.nodeCount) ? null : 'batch_ack: bad visible vector';
    case 'visible':
      return isVector(value.visible, limits.nodeCount) ? null : 'visible: bad vector';
    default:
      return 'unknown message kind';
  }
}
