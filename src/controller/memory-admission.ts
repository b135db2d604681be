/**
 * Memory admission plumbing: what the controller feeds the memory guard (store/memory-guard.ts)
 * and what it reports of its own memcached to its peers.
 *
 * The guard judges; this part only keeps it informed: the greatest version stored per writer (the
 * marks a poll's report covers), each poll of the local memcached, each peer's heartbeat report
 * (untrusted: read by memoryReportOf), and the writes that arrive from peers. The marks taken when
 * a poll begins travel with what that poll read, so a peer drops only admissions the report covers.
 */

import type { Op } from '../store/types.ts';
import { MemoryGuard, type Stored, type WriterOf } from '../store/memory-guard.ts';
import type { Refusal } from '../protocol/refusals.ts';
import type { PeerView } from '../peer/network.ts';
import type { NodeSummary } from '../status/show.ts';
import { memoryReportOf } from './stats.ts';

/** What every heartbeat says of this node's memcached (the `backend*` memory fields of NodeSummary). */
export type MemoryReportFields = Pick<NodeSummary, 'backendMemory' | 'backendPoll' | 'backendStored'>;

export class MemoryAdmission {
  private readonly guard: MemoryGuard;
  /** Per writer, the greatest version this replica has stored: the guard's marks. */
  private readonly stored = new Map<number, bigint>();
  /** What the last poll read, with the marks from when it began, as every heartbeat reports them. */
  private lastReport: MemoryReportFields = { backendMemory: undefined, backendPoll: 0, backendStored: [] };

  /** `writerOf`: which writer a version is from (each node in eventual mode, else one). */
  constructor(private readonly writerOf: WriterOf) {
    this.guard = new MemoryGuard(writerOf);
  }

  /** The guard's answer for a store (MachineOptions.refuseStore). */
  refusal(op: Op, version: bigint): Refusal | null {
    return this.guard.refusal(op, version);
  }

  /** A version is in memcached now: a poll from now on counts it. */
  noteStored(version: bigint): void {
    const writer = this.writerOf(version);
    const mark = this.stored.get(writer);
    if (mark === undefined || version > mark) this.stored.set(writer, version);
  }

  /** Writes pushed by peers, about to be stored here: key, value bytes, version. */
  arrived(items: ReadonlyArray<readonly [key: string, valueBytes: number, version: bigint]>): void {
    this.guard.arrived(items);
  }

  /** The marks as a poll begins: memcached holds at least that by the time it answers. */
  pollStarting(): Stored {
    return new Map(this.stored);
  }

  /** A poll has read memcached's memory (undefined: it said nothing, or did not answer). */
  polled(memory: MemoryReportFields['backendMemory'], stored: Stored): void {
    this.lastReport = {
      backendMemory: memory,
      backendPoll: this.lastReport.backendPoll + 1,
      backendStored: [...stored].map(([writer, version]) => [writer, String(version)]),
    };
    this.guard.polled(memory, stored);
  }

  /** Each peer's latest heartbeat report; a peer that is down counts no more. */
  peersViewed(views: readonly PeerView[]): void {
    for (const view of views) this.guard.peerReported(view.peer, view.up ? memoryReportOf(view.info) : undefined);
  }

  /** This node's report, for its `show` line and every heartbeat. */
  report(): MemoryReportFields {
    return this.lastReport;
  }
}
