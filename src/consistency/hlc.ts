/**
 * Hybrid logical clock (Kulkarni et al., "Logical Physical Clocks", 2014) for eventual mode.
 *
 * Intuition: a clock is (physicalMs, counter). It follows wall time when wall time moves ahead,
 * and otherwise counts events within one millisecond, so it never goes back and it always ends
 * up ahead of every timestamp it has seen. Packed with the node's index in the low bits it
 * gives a version that is unique per write and totally ordered across the cluster: the order
 * last-writer-wins uses.
 *
 * Pure functions, no clock reads: `nowMs` is passed in.
 *
 * Invariants:
 * - `tickHlc(c, now)` > c, and `mergeHlc(c, r)` >= both c and r (so a tick after a merge is
 *   greater than every version merged).
 * - counter <= HLC_COUNTER_MAX: an overflowing counter carries into physicalMs.
 * - packVersion is strictly monotonic in (clock, nodeIndex); unpackVersion inverts it.
 */

/** A hybrid logical clock reading. */
export interface Hlc {
  readonly physicalMs: number;
  readonly counter: number;
}

/** Bits of the logical counter inside a version. */
export const HLC_COUNTER_BITS = 16n;
/** Bits of the node index inside a version: up to 16 nodes. */
export const NODE_INDEX_BITS = 4n;
export const HLC_COUNTER_MAX = (1 << Number(HLC_COUNTER_BITS)) - 1;
export const NODE_INDEX_MAX = (1 << Number(NODE_INDEX_BITS)) - 1;
const NODE_INDEX_MASK = BigInt(NODE_INDEX_MAX);

export const HLC_ZERO: Hlc = Object.freeze({ physicalMs: 0, counter: 0 });

/** The latest physical time a version can hold: a version is a u64 (the store writes 64 bits). */
export const HLC_PHYSICAL_MS_MAX = 2 ** (64 - Number(HLC_COUNTER_BITS + NODE_INDEX_BITS)) - 1;

/**
 * The greatest version whose clock is at most `aheadMaxMs` ahead of `nowMs` (and within what a
 * version can hold): a clock that merged only versions up to here stays encodable, and ahead of
 * wall time by at most that much.
 */
export function latestVersionAllowed(nowMs: number, aheadMaxMs: number): bigint {
  const physicalMs = Math.min(HLC_PHYSICAL_MS_MAX, Math.floor(nowMs) + Math.max(0, Math.floor(aheadMaxMs)));
  return ((BigInt(Math.max(0, physicalMs)) + 1n) << (HLC_COUNTER_BITS + NODE_INDEX_BITS)) - 1n;
}

/** Negative, zero or positive as a is before, equal to or after b. */
export function compareHlc(a: Hlc, b: Hlc): number {
  if (a.physicalMs !== b.physicalMs) return a.physicalMs < b.physicalMs ? -1 : 1;
  return a.counter - b.counter;
}

function carry(physicalMs: number, counter: number): Hlc {
  if (counter > HLC_COUNTER_MAX) return { physicalMs: physicalMs + 1, counter: 0 };
  return { physicalMs, counter };
}

/** The clock for a local event (a write) at wall time `nowMs`: strictly after `clock`. */
export function tickHlc(clock: Hlc, nowMs: number): Hlc {
  const wallMs = Math.floor(nowMs);
  if (wallMs > clock.physicalMs) return { physicalMs: wallMs, counter: 0 };
  return carry(clock.physicalMs, clock.counter + 1);
}

/**
 * The clock after observing a remote timestamp: the later of the two. The next `tickHlc` is
 * then strictly after `remote`, which is all last-writer-wins needs.
 */
export function mergeHlc(clock: Hlc, remote: Hlc): Hlc {
  return compareHlc(remote, clock) > 0 ? remote : clock;
}

/** One bigint version: ((physicalMs << 16 | counter) << 4) | nodeIndex. */
export function packVersion(clock: Hlc, nodeIndex: number): bigint {
  if (!Number.isInteger(nodeIndex) || nodeIndex < 0 || nodeIndex > NODE_INDEX_MAX) {
    throw new RangeError(`node index ${nodeIndex} out of range 0..${NODE_INDEX_MAX}`);
  }
  const time = (BigInt(clock.physicalMs) << HLC_COUNTER_BITS) | BigInt(clock.counter);
  return (time << NODE_INDEX_BITS) | BigInt(nodeIndex);
}

/** The clock and node index a version was made from. Negative versions read as zero. */
export function unpackVersion(version: bigint): { clock: Hlc; nodeIndex: number } {
  const safe = version < 0n ? 0n : version;
  const nodeIndex = Number(safe & BigInt(NODE_INDEX_MAX));
  const time = safe >> NODE_INDEX_BITS;
  const counter = Number(time & BigInt(HLC_COUNTER_MAX));
  const physicalMs = Number(time >> HLC_COUNTER_BITS);
  return { clock: { physicalMs, counter }, nodeIndex };
}

/** The index of the node that wrote a version. */
export function versionNode(version: bigint): number {
  return version < 0n ? 0 : Number(version & NODE_INDEX_MASK);
}

/** The clock part of a version, for merging a version seen from elsewhere. */
export function versionClock(version: bigint): Hlc {
  return unpackVersion(version).clock;
}

/** Readable form for `show`: "physicalMs.counter". */
export function formatHlc(clock: Hlc): string {
  return `${clock.physicalMs}.${clock.counter}`;
}
