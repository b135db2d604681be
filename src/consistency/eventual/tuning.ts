/**
 * Eventual mode's knobs, with defaults derived from the heartbeat interval and failure timeout.
 *
 * Every bound is a cap on memory or on the work one step may do; none is needed for
 * correctness, because anti-entropy repairs whatever a capped or dropped push left out.
 */

import type { MachineOptions } from '../types.ts';

/** Bounds and periods of eventual mode. Units are in the names. */
export interface EventualTuning {
  /** Period of anti-entropy rounds (one peer per round, round-robin). */
  antiEntropyIntervalMs: number;
  /** Most entries in one push message. */
  batchEntriesMax: number;
  /** Most value bytes (about) in one push message; a single larger entry goes alone. */
  batchBytesMax: number;
  /** Most entries waiting per peer; more are dropped (anti-entropy repairs them). */
  queueEntriesMax: number;
  /** Most bytes waiting per peer. */
  queueBytesMax: number;
  /** Most unacked push batches per peer. */
  windowBatchesMax: number;
  /** After this, an unacked push batch no longer holds its window slot. */
  ackTimeoutMs: number;
  /**
   * Writes are pushed at most this often: the results of every write of the interval are fetched
   * and pushed together, one message per peer, instead of one message (and one ack, and one
   * backend write at each peer) per write. The first write after a quiet interval goes at once.
   */
  pushIntervalMs: number;
  /** Most dirty keys in one fetch. */
  fetchKeysMax: number;
  /** Most key → version pairs in one anti-entropy key list (whole buckets only), and most keys shipped or asked for per round. */
  aeKeysMax: number;
  /** An expired entry is dead (collectable) this long after its expiry. */
  expiredGraceMs: number;
  /** How long a purged (key, version) is remembered, so late copies are not resurrected. */
  purgedMemoryMs: number;
  /** Most purged (key, version) pairs remembered. */
  purgedMemoryEntriesMax: number;
  /** Entries with an expiry checked per tick (entries without one are never swept). */
  sweepEntriesPerTick: number;
  /** Most requests held while the start-up fetch runs; more get SERVER_ERROR. */
  heldRequestsMax: number;
  /**
   * A peer's version whose clock is further ahead of local time than this is dropped, never
   * merged into the clock: a peer with a clock gone wild (or a hostile one) cannot drag every
   * later write's version with it, nor past what a version can hold.
   */
  clockAheadMaxMs: number;
}

/** Defaults for a cluster with the given heartbeat interval and failure timeout. */
export function defaultTuning(options: Pick<MachineOptions, 'heartbeatIntervalMs' | 'failureTimeoutMs'>): EventualTuning {
  const heartbeatMs = Math.max(1, options.heartbeatIntervalMs);
  return {
    antiEntropyIntervalMs: 3 * heartbeatMs,
    batchEntriesMax: 256,
    batchBytesMax: 512 * 1024,
    queueEntriesMax: 65_536,
    queueBytesMax: 64 * 1024 * 1024,
    windowBatchesMax: 8,
    ackTimeoutMs: Math.max(options.failureTimeoutMs, 4 * heartbeatMs),
    pushIntervalMs: 25,
    fetchKeysMax: 1024,
    aeKeysMax: 4096,
    expiredGraceMs: 1000,
    purgedMemoryMs: 10 * 60 * 1000,
    purgedMemoryEntriesMax: 100_000,
    sweepEntriesPerTick: 4096,
    heldRequestsMax: 100_000,
    clockAheadMaxMs: 5 * 60 * 1000,
  };
}
