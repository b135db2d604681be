/**
 * Log compaction: once more than the threshold of entries are applied, or the log holds more
 * than its threshold in bytes, drop them from the log and persist a snapshot record (the replica
 * is the snapshot's state). A leader keeps what its live followers still lack (those heard from
 * within `silentFollowerKeptFailureTimeouts`), so a slow, stalled or restarted (not dead)
 * follower needs no state transfer, while what it lacks holds no more bytes than a transfer
 * would send (what our memcached holds) or LAGGING_FOLLOWER_THRESHOLDS times the byte threshold,
 * whichever is more: a follower further behind gets one, rather than hold the leader's memory
 * without bound. (A transfer being sent keeps the entries after its index while it progresses, so
 * that its receiver needs no second one.)
 * With idempotent replays (`replicaSkipsApplied`) a restart trusts the replica up to the snapshot, so
 * first a `settle` makes sure every apply up to it completed (effects are carried out in order),
 * without holding up the applies after it.
 *
 * Owns: the settle in flight, and the forwarded writes compacted lately (for the transfers that
 * pass them, see ./compacted-forwards.ts).
 */

import { CompactedForwards } from './compacted-forwards.ts';
import type { LogCore } from './core.ts';
import type { ProgressTracker } from './progress.ts';
import type { LogEntry } from './types.ts';

/** How many byte thresholds of log a leader keeps at least for a live follower that lags. */
export const LAGGING_FOLLOWER_THRESHOLDS = 4;

/** Most of the log a compaction keeps (and so rewrites) for each entry it drops, at a leader. */
const TAIL_PER_DROPPED = 1 / 8;

export class Compaction {
  /** Forwarded writes compacted lately, for the transfers that pass them (see its header). */
  readonly compactedForwards: CompactedForwards;
  /** A settle: once it is done, every apply up to `target` has completed. */
  private settling: { token: number; target: number } | null = null;

  /**
   * `transferFloor`: the lowest index a state transfer being sent was fetched at (Infinity: none):
   * a leader keeps the entries after it, so its receiver continues from them once it installed it
   * instead of needing another transfer.
   */
  constructor(
    private readonly core: LogCore,
    private readonly progress: ProgressTracker,
    private readonly transferFloor: () => number,
  ) {
    this.compactedForwards = new CompactedForwards(core.requestTimeoutMs(), core.tuning.queueDepthMax * core.peers.length);
  }

  /** The replica's applies start over (a replay, a reset): a settle in flight no longer counts. */
  forget(): void {
    this.settling = null;
  }

  /** Entries left the log (compacted, or passed by a transfer): remember our peers' forwards among them. */
  noteDropped(dropped: readonly LogEntry[]): void {
    this.compactedForwards.note(dropped, this.core.self, this.core.nowMs);
  }

  compactIfDue(): void {
    const core = this.core;
    const due = core.appliedIndex - core.log.snapshotIndex > core.tuning.compactionThresholdEntries
      || core.log.bytes > core.tuning.compactionThresholdBytes;
    if (!due || !core.replicaValid) return;
    if (!core.replicaSkipsApplied) return this.compactTo(core.appliedIndex);
    // The snapshot will be trusted on restart: first make sure every apply up to it completed.
    if (this.settling !== null || this.compactionTarget(core.appliedIndex) === null) return;
    const token = core.nextStoreToken();
    this.settling = { token, target: core.appliedIndex };
    core.out.push({ kind: 'settle', token });
  }

  /** A store token's work is done: if it is our settle, compact (true); else it is not ours (false). */
  onSettled(token: number): boolean {
    if (this.settling === null || this.settling.token !== token) return false;
    const { target } = this.settling;
    this.settling = null;
    this.compactTo(target);
    return true;
  }

  /** Where to compact to, given applies completed up to `applied`; null: not worth it now. */
  private compactionTarget(applied: number): number | null {
    const core = this.core;
    let target = Math.min(applied, core.appliedIndex);
    if (target <= core.log.snapshotIndex || !core.replicaValid) return null;
    if (core.role === 'leader') {
      const keptBytes = Math.max(LAGGING_FOLLOWER_THRESHOLDS * core.tuning.compactionThresholdBytes, core.memory.replicaBytes() ?? 0);
      const lagFloor = core.log.floorWithin(keptBytes, Number.POSITIVE_INFINITY);
      // A transfer being sent keeps what follows it while it progresses: its receiver continues from there.
      const keptMs = core.tuning.silentFollowerKeptFailureTimeouts * core.failureTimeoutMs;
      const liveFloor = this.progress.liveMatchFloor(target, core.nowMs, keptMs);
      target = Math.min(target, Math.max(liveFloor, lagFloor), this.transferFloor());
      if (target <= core.log.snapshotIndex) return null;
      const few = target - core.log.snapshotIndex <= core.tuning.compactionThresholdEntries / 2;
      if (few && core.log.bytes <= core.tuning.compactionThresholdBytes / 2) return null;
      // Each compaction writes the tail it keeps into its snapshot record. Within the byte bound,
      // one whose tail would be more than TAIL_PER_DROPPED of what it drops waits: a follower
      // catching up after a transfer moved the target a few thousand entries at a time, and each
      // compaction re-encoded the 490,000 entries after it, stopping the leader over a second.
      const rewritesMuch = (target - core.log.snapshotIndex) * TAIL_PER_DROPPED < core.log.lastIndex() - target;
      if (rewritesMuch && core.log.bytes <= keptBytes) return null;
    }
    return target;
  }

  /** Compacts to `applied` (or, at a leader, what its live followers still need). */
  private compactTo(applied: number): void {
    const target = this.compactionTarget(applied);
    if (target === null) return;
    const dropped = this.core.log.compactTo(target);
    for (const entry of dropped) this.core.forgetProposal(entry);
    this.noteDropped(dropped);
    this.core.persistSnapshot();
  }
}
