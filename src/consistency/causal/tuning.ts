/** Causal mode's tunables and their defaults, most taken from eventual mode's (./../eventual/tuning.ts). */

import type { MachineOptions } from '../types.ts';
import { defaultTuning as eventualDefaults } from '../eventual/tuning.ts';

/** Causal mode's knobs. Units are in the names. */
export interface CausalTuning {
  /** Most entries, and about most bytes, in one batch message (a larger batch goes in parts). */
  batchEntriesMax: number;
  batchBytesMax: number;
  /** Most parts of one batch a receiver assembles. */
  partsMax: number;
  /** Most batches in flight to one peer. */
  windowBatchesMax: number;
  /** Most batches a receiver parks per sender (out of order, or waiting for dependencies). */
  parkedBatchesMax: number;
  /** Local writes are fetched for shipping at most this often. */
  pushIntervalMs: number;
  /** A batch not acknowledged after this is sent again. */
  ackTimeoutMs: number;
  /** Bytes coalesced for one peer beyond which the sender gives up the chain and sends a snapshot. */
  pendingBytesMax: number;
  /** A batch whose dependencies are still not visible after this asks its sender for a snapshot. */
  resyncAfterMs: number;
  /** Most requests held while the start-up fetch runs; more get SERVER_ERROR. */
  heldRequestsMax: number;
  /** A peer's version further ahead of local time than this is not taken (see eventual mode). */
  clockAheadMaxMs: number;
  /**
   * Most keys written during a snapshot's read that are read again in one read holding up their
   * writes (the cut: ./snapshot-cuts.ts); more are first read again page by page.
   */
  snapshotCutKeysMax: number;
  /** Most tombstones purged per tick. */
  purgesPerTickMax: number;
  /** How long, and how many, purged (key, version) pairs are remembered, so late copies stay dead. */
  purgedMemoryMs: number;
  purgedMemoryEntriesMax: number;
}

export function defaultCausalTuning(options: Pick<MachineOptions, 'heartbeatIntervalMs' | 'failureTimeoutMs'>): CausalTuning {
  const eventual = eventualDefaults(options);
  return {
    batchEntriesMax: eventual.batchEntriesMax,
    batchBytesMax: eventual.batchBytesMax,
    partsMax: 1_000_000,
    windowBatchesMax: eventual.windowBatchesMax,
    parkedBatchesMax: 2 * eventual.windowBatchesMax,
    pushIntervalMs: eventual.pushIntervalMs,
    ackTimeoutMs: eventual.ackTimeoutMs,
    pendingBytesMax: eventual.queueBytesMax,
    resyncAfterMs: Math.max(2000, 4 * options.failureTimeoutMs),
    heldRequestsMax: eventual.heldRequestsMax,
    clockAheadMaxMs: eventual.clockAheadMaxMs,
    snapshotCutKeysMax: 4096,
    purgesPerTickMax: 1024,
    purgedMemoryMs: eventual.purgedMemoryMs,
    purgedMemoryEntriesMax: eventual.purgedMemoryEntriesMax,
  };
}

