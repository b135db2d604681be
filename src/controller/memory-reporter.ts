/**
 * What this controller reports of its own memcached, to its mode and to its peers.
 *
 * The mode's memory guard (consistency/memory-admission.ts) judges; this part only keeps it
 * informed: the greatest version stored per writer (the marks a poll's report covers), and each
 * poll of the local memcached, which becomes a `memory_polled` event for the mode and the report
 * every heartbeat carries (peer/memory-report.ts). The marks taken when a poll begins travel with
 * what that poll read, so a node drops only admissions the report covers.
 */

import { clockMs } from '../runtime/clock.ts';
import type { Event } from '../consistency/types.ts';
import { memoryReportWire, type MemoryReportWire } from '../peer/memory-report.ts';
import type { BackendMemory, Stored, WriterOf } from '../store/memory-guard.ts';

export class MemoryReporter {
  /** Per writer, the greatest version this replica has stored: the guard's marks. */
  private readonly stored = new Map<number, bigint>();
  /** What the last poll read, with the marks from when it began, as every heartbeat reports it. */
  private lastReport: MemoryReportWire = memoryReportWire(0, undefined, new Map());

  /**
   * `writerOf`: which writer a version is from (each node in eventual and causal mode, else one).
   * `enqueue`: queues an event for the mode. `keys`: the keys this controller indexes now, and the
   * most it can (./key-room.ts), reported beside memcached's memory.
   */
  constructor(
    private readonly writerOf: WriterOf,
    private readonly enqueue: (event: Event<unknown>) => void,
    private readonly keys: { count: () => number; max: number },
  ) {}

  /** A version is in memcached now: a poll from now on counts it. */
  noteStored(version: bigint): void {
    const writer = this.writerOf(version);
    const mark = this.stored.get(writer);
    if (mark === undefined || version > mark) this.stored.set(writer, version);
  }

  /** The marks as a poll begins: memcached holds at least that by the time it answers. */
  pollStarting(): Stored {
    return new Map(this.stored);
  }

  /** A poll has read memcached's memory (undefined: it said nothing, or did not answer). */
  polled(polledMemory: BackendMemory | undefined, stored: Stored): void {
    // memcached's items count too: keys it holds that the index does not know yet (a listing
    // refused at start) are keys a write may bring into it.
    const memory = polledMemory === undefined
      ? undefined
      : { ...polledMemory, keys: Math.max(this.keys.count(), polledMemory.items ?? 0), keysMax: this.keys.max };
    this.lastReport = memoryReportWire(this.lastReport.poll + 1, memory, stored);
    this.enqueue({ kind: 'memory_polled', nowMs: clockMs(), memory: memory ?? null, stored });
  }

  /** This node's report, for every heartbeat. */
  report(): MemoryReportWire {
    return this.lastReport;
  }

  /** What `show` says of this node's memcached memory, as the last poll read it. */
  shown(): { usedBytes: number; limitBytes: number } | undefined {
    const memory = this.lastReport.memory;
    return memory === null ? undefined : { usedBytes: memory.usedBytes, limitBytes: memory.limitBytes };
  }

  /** The most keys this controller indexes: a write of a new key past it is refused. */
  get keysMax(): number {
    return this.keys.max;
  }
}
