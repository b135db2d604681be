/**
 * The replicated, timestamp-ordered request queue behind the linearizability and sequential
 * modes: a Raft-style log (etcd-io/raft and the Raft paper are the reference) as a deterministic
 * state machine with no I/O. Events in (client requests, peer messages, ticks, fetched replica
 * contents, backend resets), effects out (sends, applies, reads, replies, persists, fetch, reset).
 *
 * Intuition: the leader stamps every write with (term, index) — its timestamp — appends it and
 * replicates it with pipelined, batched appends; once a majority has it, it is committed and every
 * node applies committed entries to its replica in index order with cas = index. The node that
 * received the write replies once its own replica applied it. Reads: linearizability serves a
 * read once this replica has applied the leader's commit index as of the read's arrival there (its
 * *read index*), taken when a majority still followed that leader — the leader confirms its own
 * with a heartbeat round, a follower's needs no round with three nodes (see onReadIndex);
 * sequential reads the local replica while this node knows a live leader. A client connection
 * (*session*) may have reads and writes in flight together; each read is served after the
 * session's earlier writes are applied here and before its later ones are (see
 * ./log/session-order.ts).
 *
 * Batching: outgoing work of a turn (forwards, proposals, appends, read-index requests and the
 * heartbeat round confirming the leader's own reads) is buffered and sent on the controller's
 * `flush` event, or at the latest on the next tick, so a burst of requests costs one round trip,
 * not one per request.
 *
 * Invariants (asserted after every step):
 * - one leader per term as seen by this node; a node votes at most once per term;
 * - the commit index never goes back; applied ≤ committed ≤ last log index;
 * - only entries of the current term are committed by counting replicas;
 * - `persist` effects precede the effects that depend on them (vote replies, append acks); only
 *   a ping and its pong, which name no log position, are sent `beforeDurable`;
 * - an apply effect carries a requestId at most once, only at the request's origin.
 *
 * Glossary: *commit* — a majority has it; *apply* — the local replica has it; *reply* — the
 * client has it; *ack* — a peer has it; *round* — one heartbeat broadcast of the leader;
 * *session* — one client connection, whose requests keep their order;
 * *transfer* — copying a whole replica when the needed log entries were compacted away.
 */

import type { Machine, MachineOptions, PeerId } from './types.ts';
import { ReplicatedLogMachine } from './log/machine.ts';
import type { LogEntry, LogMessage, LogMode, LogRole, LogTuning } from './log/types.ts';

export type { LogEntry, LogMessage, LogMode, LogRecord, LogRole, LogTuning } from './log/types.ts';
export { LOG_DEFAULTS } from './log/types.ts';

/** Options of `createReplicatedLog`. */
export type ReplicatedLogOptions = MachineOptions & {
  mode: LogMode;
  /**
   * The replica skips an op whose key already holds a cas ≥ the op's index (Replica option
   * `replay: 'skip-applied'`), so replaying log entries is idempotent: a restarted node replays
   * its log onto the replica it kept instead of needing a state transfer. Default false.
   */
  replicaSkipsApplied?: boolean;
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
