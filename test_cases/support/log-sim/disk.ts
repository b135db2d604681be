/**
 * A simulated node's disk: its write-ahead file in memory (what is durable, and the one batch on
 * its way) and the controller's own durability gate over it, which holds every effect issued after
 * a record not yet durable. Separate because it is the one place that decides what a crash loses.
 */

import type { Effect } from '../../../src/consistency/types.ts';
import type { LogMessage } from '../../../src/consistency/replicated-log.ts';
import { DurabilityGate, type WalBatch, type WalWriteResult, type WriteAhead } from '../../../src/controller/durability.ts';

/** An effect other than a persist: what the controller carries out beyond its write-ahead file. */
export type OutwardEffect = Exclude<Effect<LogMessage>, { kind: 'persist' }>;

/**
 * What the durability gate holds: an effect (for a `put`, with the index of the transfer it
 * installs, as known when it was issued; with the keys it changes, counted in the node's
 * HeldKeys while it waits), or a step of the simulated controller's own.
 */
/** Where the last transfer a node received stands: its index, and how far its keys may be ahead. */
export interface TransferMark {
  /** Its sender and transfer id. */
  id: string;
  index: number;
  /** The transfer's `fetchedThrough`: its sender read key by key while applying up to here. */
  through: number;
  /**
   * How many chunks it comes in: the replica holds its state once that many were put after the
   * reset (Infinity until a chunk says: one sent before the sender's read was done does not).
   */
  chunkCount: number;
}

export type HeldWork = { effect: OutwardEffect; transfer: TransferMark; keys: readonly string[] | null | undefined } | (() => void);

/**
 * A node's write-ahead file in memory: what is durable, and the batch on its way, which becomes
 * durable at `atMs` (when the simulation says it is due).
 */
export class SimWriteAhead implements WriteAhead {
  private inFlight: { batch: WalBatch; done: (result: WalWriteResult) => void; atMs: number; startedMs: number } | null = null;

  constructor(
    /** The file's records as a restart reads them. */
    public durable: unknown[],
    private readonly clock: () => number,
    private readonly fsyncMs: () => number,
  ) {}

  write(batch: WalBatch, done: (result: WalWriteResult) => void): void {
    if (this.inFlight !== null) throw new Error('the gate handed over a batch while one was on its way');
    const startedMs = this.clock();
    this.inFlight = { batch, done, atMs: startedMs + this.fsyncMs(), startedMs };
  }

  close(): void {
    this.inFlight = null;
  }

  /** When the batch on its way becomes durable, if one is. */
  dueMs(): number | null {
    return this.inFlight?.atMs ?? null;
  }

  /** Makes the batch on its way durable if it is due, and tells the gate. */
  completeDue(nowMs: number): void {
    const flight = this.inFlight;
    if (flight === null || flight.atMs > nowMs) return;
    this.inFlight = null;
    for (const { record, compact } of flight.batch.records) {
      if (compact) this.durable = [];
      this.durable.push(record);
    }
    flight.done({ ok: true, fsync: { endedAtMs: nowMs, ms: nowMs - flight.startedMs } });
  }
}

/** The controller's gate over `disk`: a failed write would be a bug of the simulator's, so it throws. */
export function newGate(disk: SimWriteAhead, release: (work: HeldWork) => void): DurabilityGate<HeldWork> {
  return new DurabilityGate<HeldWork>({
    writeAhead: disk,
    sync: 'fsync',
    release,
    failed: (error) => {
      throw error;
    },
  });
}
