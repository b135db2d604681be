/**
 * The replicated, timestamp-ordered request queue behind the linearizability and sequential
 * modes: a Raft-style log (etcd-io/raft is the reference) as a deterministic state machine with no
 * I/O, built in ./log/ (machine.ts, one part per concern; docs/design.md has the map). The leader
 * stamps every write with (term, index), replicates it in pipelined batches, and once a majority
 * has it every node applies it in index order with cas = index; the node that took the write
 * replies once its own replica applied it. Linearizable reads wait for a majority-confirmed read
 * index; sequential reads are local while this node knows a live leader. A turn's work is sent on
 * the controller's `flush`, so a burst costs one round trip.
 *
 * Glossary: *commit* — a majority has it; *apply* — the local replica has it; *reply* — the
 * client has it; *ack* — a peer has it; *round* — one heartbeat broadcast of the leader;
 * *session* — one client connection, whose requests keep their order;
 * *transfer* — copying a whole replica when the needed log entries were compacted away.
 */

import type { Machine, MachineOptions, PeerId } from './types.ts';
import { ReplicatedLogMachine } from './log/machine.ts';
import type { LogEntry, LogMessage, LogMode, LogRole, LogTuning } from './log/types.ts';
import type { ReadLeaseOptions } from './log/lease.ts';

export type { LogEntry, LogMessage, LogMode, LogRecord, LogRole, LogTuning } from './log/types.ts';
export { LOG_DEFAULTS } from './log/types.ts';
export type { ReadLeaseOptions } from './log/lease.ts';

/** Options of `createReplicatedLog`. */
export type ReplicatedLogOptions = MachineOptions & {
  mode: LogMode;
  /**
   * The replica skips an op whose key already holds a cas ≥ the op's index (Replica option
   * `replay: 'skip-applied'`), so replaying log entries is idempotent: a restarted node replays
   * its log onto the replica it kept instead of needing a state transfer. Default false.
   */
  replicaSkipsApplied?: boolean;
  /**
   * Linearizable reads served locally under read leases (./log/lease.ts), with their timing
   * assumption; null or absent: off. Ignored in sequential mode and with more than three nodes.
   */
  readLeases?: ReadLeaseOptions | null;
  /**
   * This machine's boot, with `wal_sync = write`: records are known complete only in the boot that
   * wrote them; after another, the node recovers from its peers first (./log/recovery.ts). Null or
   * absent: records are fsynced, always complete.
   */
  bootId?: string | null;
  /** It lost its write-ahead file (`--rejoin`): whatever it holds, it recovers from its peers first. */
  rejoin?: boolean;
  /**
   * The least incarnation this run may take (default 0: one more than the last). The controller
   * passes the wall clock's milliseconds at its start (../runtime/incarnation.ts), so a node that
   * lost its data_dir, whose count of runs starts again, never takes the number of a run its peers
   * may still remember: they know its forwards and requests by it.
   */
  incarnationFloor?: number;
} & Partial<LogTuning>;

/** A read-only view of the machine's state, for tests and the simulator. */
export interface LogInspection {
  role: LogRole;
  term: number;
  leader: PeerId | null;
  commitIndex: number;
  appliedIndex: number;
  snapshotIndex: number;
  lastIndex: number;
  replicaValid: boolean;
  caughtUp: boolean;
  /** When a follower last heard from its leader (−Infinity if never). */
  lastLeaderContactMs: number;
  /** Linearizable reads this process started under a read lease. */
  leaseReads: number;
  /** Recovering records that may be incomplete (./log/recovery.ts). */
  recovering: boolean;
  /** The entry at `index`, or null if compacted away or beyond the end. */
  entryAt(index: number): LogEntry | null;
}

/** The machine plus an inspection hook for tests. */
export interface ReplicatedLog extends Machine<LogMessage> {
  inspect(): LogInspection;
}

/** Creates the replicated log state machine for one node. */
export function createReplicatedLog(options: ReplicatedLogOptions): ReplicatedLog {
  return new ReplicatedLogMachine(options);
}
