/**
 * Replica repair: what this node does when its replica cannot be trusted to hold what the log
 * says it applied — at a restart, or when the backend restarted empty or writes to it failed with
 * an unknown outcome. With idempotent replays (`replicaSkipsApplied`) and a replica that held
 * every change up to the snapshot, the log is replayed onto it; otherwise it is rebuilt: replayed
 * from index 1 if nothing was compacted, else reset once a state transfer arrives (./transfer.ts).
 * Until the replay reaches the leader's commit index the node serves nothing (caughtUp).
 *
 * Owns no state of its own: it moves the core's replica flags, the compaction's and the
 * transfer's, in one place.
 */

import type { RequestId } from '../types.ts';
import type { Compaction } from './compaction.ts';
import type { LogCore } from './core.ts';
import type { Requests } from './requests.ts';
import type { StateTransfer } from './transfer.ts';

export class ReplicaRepair {
  constructor(
    private readonly core: LogCore,
    private readonly requests: Requests,
    private readonly compaction: Compaction,
    private readonly transfer: StateTransfer,
  ) {}

  /**
   * A new incarnation's replica may hold applies its log would repeat: if replays are idempotent
   * and the replica is trusted, replay from the snapshot onto it; else rebuild it.
   */
  restart(): void {
    const core = this.core;
    if (core.replicaSkipsApplied && (core.replicaTrusted || core.log.snapshotIndex === 0)) {
      core.caughtUp = false;
      core.catchUpIndex = null;
      core.replayUntilIndex = core.log.lastIndex();
      core.note('info', 'replaying the log onto the kept replica', { fromIndex: core.log.snapshotIndex + 1, lastIndex: core.log.lastIndex() });
    } else {
      this.rebuild(core.replicaEmptiedPersisted);
    }
  }

  /**
   * The backend was reset: `kept` — it kept its contents (writes to it failed, outcome unknown);
   * `emptied` — it restarted empty. `awaiting`: our writes whose apply failed.
   */
  onBackendReset(event: { kept?: boolean; emptied?: boolean; awaiting?: readonly RequestId[] }): void {
    if (event.kept === true && event.emptied !== true && this.canReplay()) {
      this.replay(event.awaiting ?? []);
    } else {
      this.rebuild(event.emptied === true);
      this.requests.answerLostApplies(event.awaiting ?? []);
    }
  }

  /**
   * Whether the replica, after writes to it failed with an unknown outcome, can be repaired by
   * replaying the log from the snapshot: replays are idempotent, and the replica held every change
   * up to the snapshot (trusted, not being rebuilt) when they failed.
   */
  private canReplay(): boolean {
    if (!this.core.replicaSkipsApplied || !this.core.replicaValid || this.core.replicaEmptied) return false;
    return this.core.log.snapshotIndex === 0 || (this.core.replicaTrusted && this.transfer.putsDone());
  }

  /**
   * Replays the log from the snapshot onto the kept replica, skipping what it holds, as a
   * restarted node does: each failed write took effect whole or not at all, so this repairs it
   * without a peer (no transfer: when every replica's writes timed out at once, as when every
   * memcached stalled, there is none to ask). Not serving until the replay is done.
   */
  private replay(awaiting: readonly RequestId[]): void {
    // Our writes whose apply failed are committed: the replay applies them again and answers.
    this.requests.awaitReplay(awaiting);
    this.compaction.forget();
    this.transfer.sender.forgetFetches();
    this.core.appliedIndex = this.core.log.snapshotIndex;
    this.core.replayUntilIndex = this.core.log.lastIndex();
    this.core.caughtUp = false;
    this.core.catchUpIndex = this.core.role === 'leader' ? this.core.commitIndex : null;
    this.core.note('warn', 'writes to the replica failed (outcome unknown): replaying the log onto it', { fromIndex: this.core.log.snapshotIndex + 1, commitIndex: this.core.commitIndex });
  }

  /**
   * Forgets what the replica held: nothing of it is replayed onto, compacted, sent or served until
   * it is rebuilt (`emptied`: its backend restarted, or a transfer's reset emptied it).
   */
  forget(emptied: boolean): void {
    this.core.replicaEmptied ||= emptied;
    this.compaction.forget();
    this.transfer.forgetPuts();
    this.transfer.sender.forgetOutgoing();
    this.core.replayUntilIndex = 0;
    this.core.transferAheadThrough = 0;
    if (this.core.log.snapshotIndex > 0) this.core.setReplicaTrusted(false);
    this.core.caughtUp = false;
    this.core.catchUpIndex = this.core.role === 'leader' ? this.core.commitIndex : null;
  }

  /**
   * Forget what the replica holds: replay the log from 1, or ask for a state transfer. `emptied`:
   * the backend restarted, so it holds nothing (rather than being merely untrusted).
   */
  rebuild(emptied = false): void {
    this.forget(emptied);
    if (this.core.log.snapshotIndex === 0) {
      this.core.out.push({ kind: 'reset' });
      this.core.appliedIndex = 0;
      this.core.replicaValid = true;
      this.core.replicaEmptied = false;
    } else {
      // The reset waits for the transfer: if no peer can serve one, the replica is kept.
      this.core.replicaValid = false;
      this.core.replicaEpoch += 1;
      this.transfer.want(this.core.log.snapshotIndex);
    }
  }
}
