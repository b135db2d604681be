/**
 * The replicated log's values: log entries, the messages peers exchange, and the records a node
 * persists. Everything here is plain JSON-serializable data (Buffers and bigints included; the
 * peer codec keeps them), so a message or a record survives the wire and the write-ahead file.
 *
 * Glossary (one meaning each): *append* — an entry enters a log; *commit* — a majority has it;
 * *apply* — the local replica has it; *reply* — the client has it; *ack* — a peer has it.
 * A *round* is one leader heartbeat broadcast; a read index is confirmed by a majority acking a
 * round started after the read arrived. A *transfer* moves a whole replica (state transfer)
 * when the log entries a node needs were compacted away.
 */

import type { KeyedEntry, PeerId, RequestId } from '../types.ts';
import type { Op } from '../../store/types.ts';
import type { RefusalReason } from '../../protocol/refusals.ts';

/** A write forwarded by a node, committed at `index`: named as its origin knows it. */
export interface CommittedForward {
  incarnation: number;
  requestId: RequestId;
  index: number;
}

/**
 * One slot of the replicated log. `op` is null for the no-op a new leader appends. `incarnation`
 * names the origin's process lifetime, so a restarted origin never mistakes an old entry's
 * `requestId` for one of its new requests.
 */
export interface LogEntry {
  term: number;
  index: number;
  /** The leader's time when it appended the entry; expiry is judged at this time everywhere. */
  nowMs: number;
  op: Op | null;
  origin: PeerId;
  incarnation: number;
  requestId: RequestId | null;
}

/** A write a node forwards to the leader. */
export interface ForwardedRequest {
  requestId: RequestId;
  op: Op;
}

/** A follower's ask for a read lease (see ./lease.ts): its process lifetime and its clock when it asked. */
export interface LeaseAsk {
  incarnation: number;
  askedMs: number;
}

/** The leader's grant of a read lease, echoing the ask; usable once the holder knows `index` committed. */
export interface LeaseGrant extends LeaseAsk {
  index: number;
}

export type LogMessage =
  /** Pre-vote: would you vote for me in `term` (= my term + 1)? Changes nobody's term. */
  | { kind: 'pre_vote'; term: number; lastIndex: number; lastTerm: number }
  /** `term` is the proposed term when granted, else the responder's term. */
  | { kind: 'pre_vote_reply'; term: number; granted: boolean }
  | { kind: 'vote'; term: number; lastIndex: number; lastTerm: number }
  | { kind: 'vote_reply'; term: number; granted: boolean }
  /** Entries after `prevIndex` (maybe none: a heartbeat), the leader's commit index and round. */
  | {
      kind: 'append';
      term: number;
      prevIndex: number;
      prevTerm: number;
      entries: LogEntry[];
      commitIndex: number;
      /**
       * The leader's log up to here was durable when this left (every effect after a persist
       * waits for its fsync): in sequential mode a follower holding an entry of this term up to
       * here knows that a majority of three holds it.
       */
      durableIndex: number;
      round: number;
      seq: number;
      /**
       * A commit notice (no entries, not a heartbeat): the follower answers only to refuse it, so
       * telling followers of a commit costs one message each, not two.
       */
      quiet: boolean;
      /** The leader's replica epoch (see `transfer_chunk`); absent from older peers: 0. */
      replicaEpoch?: number;
      /** Read leases: the leader's clock when this left, echoed in the reply (dates the leader's lease). */
      sentMs?: number;
      /** Read leases: the grant of the follower's last ask. */
      lease?: LeaseGrant;
    }
  /** `matchIndex` when success; else `hintIndex`, the first index the leader should send. */
  | {
      kind: 'append_reply';
      term: number;
      success: boolean;
      matchIndex: number;
      hintIndex: number;
      round: number;
      seq: number;
      /** The follower's commit index: what it knows is committed needs no commit notice. */
      commitIndex: number;
      /** The greatest replica epoch the follower has seen from this leader (absent from older peers: 0). */
      replicaEpoch?: number;
      /**
       * The follower's last log index: one whose log ends before the leader's snapshot needs a
       * transfer (absent from older peers: unknown).
       */
      lastIndex?: number;
      /** Read leases: the append's `sentMs`, echoed. */
      sentMs?: number;
      /** Read leases: the follower asks for a lease, dated now. */
      leaseAsk?: LeaseAsk;
    }
  /**
   * Linearizability with read leases, three nodes: the sender, a follower of `term`, holds that
   * term's leader's log up to `matchIndex` (durably, as its ack says). Sent beside the ack to the
   * other follower when the append carried that one's writes: the two followers are a majority
   * and, with the leader, every lease holder, so the writes' origin commits them on receipt.
   */
  | { kind: 'held'; term: number; matchIndex: number }
  /**
   * The leader of `term` is alive: sent each heartbeat interval without waiting for the leader's
   * disk (a `beforeDurable` send), so a slow fsync there starts no election. It names no log
   * position and no commit, so it claims nothing a record must back, whatever it overtakes.
   */
  | { kind: 'ping'; term: number }
  /** A follower hears `term`'s leader (its answer to a ping), for the leader's check-quorum. */
  | { kind: 'pong'; term: number }
  /**
   * The sender is stopping: its clients are gone, and it serves no read, holds no read lease and
   * takes part in nothing from now on, in `term` (its last message). Its leader commits without
   * waiting for its lease; if it led, its followers elect another at once, `next` first (the
   * follower it knew to hold the most of its log; see Roles.onLeave).
   */
  | { kind: 'leave'; term: number; next?: PeerId }
  /**
   * Writes received by a follower, batched per step, for the leader to append. `stream`, `seq`:
   * the sender's stream of forwards in this term and the number of the first request, the rest
   * numbered on from it (./forward-order.ts). `again`: these requests were sent before in this
   * term, when the sender's commit index was at least this (so a copy the leader logged has a
   * greater index; see Turn.onForward).
   */
  | { kind: 'forward'; term: number; incarnation: number; stream: number; seq: number; requests: ForwardedRequest[]; again?: number }
  /** The leader took `stream`'s forwards up to `expected` (exclusive) and dropped a later one: send again from there. */
  | { kind: 'forward_gap'; term: number; incarnation: number; stream: number; expected: number }
  /** The leader refused these forwarded writes (the client is told `reason`, with `detail`). */
  | { kind: 'forward_refused'; term: number; incarnation: number; requestIds: RequestId[]; reason: RefusalReason; detail?: string }
  /**
   * Reads received by a follower (linearizability), batched per step: ask for a read index.
   * `incarnation`: the asker's, echoed in the reply, so a restarted node never takes an answer
   * meant for the batch of the same id its previous run sent.
   */
  | { kind: 'read_index'; term: number; incarnation: number; batchId: number }
  /** `readIndex` null: refused (not the leader, or leadership lost before confirming). */
  | { kind: 'read_index_reply'; term: number; incarnation: number; batchId: number; readIndex: number | null }
  /**
   * Send me your replica, as of an applied index ≥ `minIndex`. `emptied`: the asker's replica
   * holds nothing the logs cannot give back (its backend restarted empty, not merely missed a
   * write). `replicaEpoch`: the greatest replica epoch the asker has seen from its leader.
   */
  | { kind: 'transfer_request'; term: number; minIndex: number; emptied: boolean; replicaEpoch?: number }
  /** A node whose records may be incomplete asks each peer where the cluster stands (./recovery.ts). */
  | { kind: 'recover'; term: number; nonce: number }
  /**
   * `leads`: the replier leads `term`; `lastIndex`, `lastTerm`: its log's last entry; `recovering`:
   * it is recovering too.
   */
  | { kind: 'recover_reply'; term: number; nonce: number; recovering: boolean; leads: boolean; lastIndex: number; lastTerm: number }
  /**
   * One chunk of a replica as of `index` (whose entry has term `indexTerm`). `replicaEpoch`: the
   * sender's replica epoch when it read it. A node's epoch grows each time its replica is lost,
   * and its appends carry it; a follower drops a chunk of an epoch older than one it has seen, so
   * a transfer still in flight when the sender's replica was lost is never installed after the
   * follower told the leader it has no replica. (The epoch fields are optional so that a node of
   * an earlier release, which sends none, still works with this one: its asks never count toward a
   * start-over.) `startOverIndex`: the replica descends from a start-over at that index, so it holds
   * no write committed at or before it (absent from older peers: 0, none known). `committedForwards`,
   * on the first chunk only: the writes the recipient forwarded that are committed after
   * `startOverIndex` and at or before `index`, so it can answer their clients at once (absent from
   * older peers: those clients wait for their request timeout, as before). `fetchedThrough`: the
   * sender had applied up to here when its read of the replica ended; the read goes key by key
   * while applies go on, so a key may hold any change up to it (absent: `index`, as from older
   * peers, whose read was one point). The receiver replays the entries after `index`, skipping
   * what its keys hold, and serves nothing from the replica until it applied `fetchedThrough`.
   */
  | {
      kind: 'transfer_chunk';
      term: number;
      replicaEpoch?: number;
      startOverIndex?: number;
      fetchedThrough?: number;
      transferId: number;
      index: number;
      indexTerm: number;
      chunkNumber: number;
      chunkCount?: number;
      entries: KeyedEntry[];
      committedForwards?: CommittedForward[];
    }
  /** The receiver of transfer `transferId` has stored `received` of its chunks in its replica: the sender may send on. */
  | { kind: 'transfer_ack'; term: number; transferId: number; received: number };

export type LogMessageKind = LogMessage['kind'];

/** A node's hard state, as a `hard` record and every `snapshot` record carry it. */
export interface HardState {
  term: number;
  votedFor: PeerId | null;
  incarnation: number;
  /** The greatest replica epoch seen from this term's leader (absent: 0). */
  leaderReplicaEpoch?: number;
  /** The boot in which the file held every record this node wrote (absent: not known; see ./recovery.ts). */
  bootId?: string;
  /** Written before this node's recovery ended: its records are not complete even if fsynced. */
  recovering?: boolean;
}

/** What a node writes to its write-ahead file; handed back in order on restart. */
export type LogRecord =
  | ({ kind: 'hard' } & HardState)
  | { kind: 'entries'; entries: LogEntry[] }
  /** Entries from `fromIndex` on were removed (a conflicting suffix). */
  | { kind: 'truncate'; fromIndex: number }
  /** A compacted file: the whole hard state and the log after `snapshotIndex`. */
  | (HardState & {
      kind: 'snapshot';
      snapshotIndex: number;
      snapshotTerm: number;
      entries: LogEntry[];
      /**
       * The replica holds every change up to `snapshotIndex` (its applies completed), so a
       * restart can replay the log onto it. Absent in older files: not trusted.
       */
      replicaTrusted?: boolean;
      /** The backend restarted empty since the replica was last valid (absent: no). */
      replicaEmptied?: boolean;
      /** The replica descends from a start-over at this index (absent: 0, none). */
      replicaStartOverIndex?: number;
    })
  /**
   * Whether the replica may be replayed onto after a restart (false while it is rebuilt), and
   * whether its backend restarted empty meanwhile (absent in older files: no), which a restart
   * must not forget: only replicas known to be empty let a leader start over.
   */
  | { kind: 'replica'; trusted: boolean; emptied?: boolean };

/** Tunables of the replicated log, beyond `MachineOptions`. Defaults in `LOG_DEFAULTS`. */
export interface LogTuning {
  /** Compact when applied − snapshot index exceeds this many entries. */
  compactionThresholdEntries: number;
  /**
   * Or when the entries after the snapshot hold more than this many bytes (`opBytes`): the log
   * keeps every value it holds in memory, and ten thousand large values would be gigabytes.
   */
  compactionThresholdBytes: number;
  /**
   * How many failure timeouts a follower may have been silent (a stall, its controller restarted)
   * and still have what it lacks kept by compaction (./compaction.ts).
   */
  silentFollowerKeptFailureTimeouts: number;
  /** Most entries in one append message. */
  appendEntriesMax: number;
  /** Most entries sent to a follower and not yet acked. */
  inflightEntriesMax: number;
  /** Most requests waiting at this node; more are refused. */
  queueDepthMax: number;
  /** A request waiting longer than this many failure timeouts is answered with an error. */
  requestTimeoutFailureTimeouts: number;
  /** Most replica entries in one transfer chunk. */
  transferChunkEntriesMax: number;
  /**
   * Most bytes of entries (values, keys and a per-entry allowance, see `opBytes`) in one append,
   * forward or transfer chunk; a single larger entry goes alone. Keeps every message under the
   * peer frame cap, which is sized for this much plus one more value.
   */
  batchBytesMax: number;
}

export const LOG_DEFAULTS: Readonly<LogTuning> = Object.freeze({
  compactionThresholdEntries: 10_000,
  compactionThresholdBytes: 64 * 1024 * 1024,
  // Counted as down at one failure timeout, a follower that stalled 0.9 s under a bulk load fell
  // behind the snapshot and got a transfer of 3.9 million keys.
  silentFollowerKeptFailureTimeouts: 10,
  appendEntriesMax: 512,
  inflightEntriesMax: 4096,
  queueDepthMax: 10_000,
  requestTimeoutFailureTimeouts: 4,
  transferChunkEntriesMax: 256,
  batchBytesMax: 4 * 1024 * 1024,
});

/** What an entry costs in a message besides its key and value bytes (its fields, the framing). */
export const ENTRY_OVERHEAD_BYTES = 128;

/** About how many bytes an op takes in a message: its keys and value, and the overhead. */
export function opBytes(op: Op | null): number {
  if (op === null) return ENTRY_OVERHEAD_BYTES;
  switch (op.kind) {
    case 'store':
      return ENTRY_OVERHEAD_BYTES + op.key.length + op.value.length;
    case 'get':
    case 'gat':
      return ENTRY_OVERHEAD_BYTES + op.keys.reduce((sum, key) => sum + key.length + 4, 0);
    case 'flush_all':
      return ENTRY_OVERHEAD_BYTES;
    default:
      return ENTRY_OVERHEAD_BYTES + op.key.length;
  }
}

/** About how many bytes a replica entry takes in a transfer chunk. */
export function keyedEntryBytes([key, entry]: KeyedEntry): number {
  return ENTRY_OVERHEAD_BYTES + key.length + entry.value.length;
}

/**
 * How many of `sizes` (from the start) one message takes: at most `countMax`, and at most
 * `bytesMax` bytes of them, but always at least one (a single larger item goes alone).
 */
export function batchCount(sizes: (index: number) => number, available: number, limits: { countMax: number; bytesMax: number }): number {
  const limit = Math.min(available, limits.countMax);
  let bytes = 0;
  let count = 0;
  while (count < limit) {
    const size = sizes(count);
    if (count > 0 && bytes + size > limits.bytesMax) break;
    bytes += size;
    count += 1;
  }
  return count;
}

export type LogMode = 'linearizability' | 'sequential';
export type LogRole = 'follower' | 'pre_candidate' | 'candidate' | 'leader';
