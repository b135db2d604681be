/**
 * What every part of the replicated log shares: the node's configuration, the durable state (term,
 * vote, incarnation, the entry log), the volatile state every concern reads (role, leader, commit
 * and applied indexes, whether the replica is valid and trusted), and the effect buffer with the
 * helpers that fill it. The concerns (./progress.ts, ./read-index.ts, ./transfer.ts, …) each own
 * their own state and reach this one through it; the machine (./machine.ts) is this plus step.
 *
 * Invariant: effects leave in the order they were pushed here — a `persist` before the sends that
 * depend on it; only a ping and its pong are sent `beforeDurable`.
 */

import assert from 'node:assert';
import type { Refusal } from '../../protocol/refusals.ts';
import { refusalText } from '../../protocol/refusals.ts';
import type { Effect, PeerId } from '../types.ts';
import { DroppedPeerMessages } from '../peer-input.ts';
import { MemoryAdmission } from '../memory-admission.ts';
import { EntryLog } from './entry-log.ts';
import { ProposalMap } from './proposal-map.ts';
import type { ReadLeaseOptions } from './lease.ts';
import type { LogMessageLimits } from './validate.ts';
import { OP_LIMITS_DEFAULT } from '../../store/op-rules.ts';
import { LOG_DEFAULTS, type HardState, type LogEntry, type LogMessage, type LogMode, type LogRecord, type LogRole, type LogTuning } from './types.ts';
import type { MachineOptions } from '../types.ts';

/** Most chunks of one transfer: 2^24 chunks of at least one key each. */
const TRANSFER_CHUNKS_MAX = 2 ** 24;

/** The options the core reads (a subset of ReplicatedLogOptions). */
export type LogCoreOptions = MachineOptions & {
  mode: LogMode;
  replicaSkipsApplied?: boolean;
  readLeases?: ReadLeaseOptions | null;
  bootId?: string | null;
  rejoin?: boolean;
  incarnationFloor?: number;
} & Partial<LogTuning>;

export class LogCore {
  readonly self: PeerId;
  readonly peers: readonly PeerId[];
  readonly mode: LogMode;
  readonly tuning: LogTuning;
  readonly random: () => number;
  readonly heartbeatIntervalMs: number;
  readonly failureTimeoutMs: number;
  readonly majority: number;
  readonly replicaSkipsApplied: boolean;
  /** What a peer message must be to be acted on (see ./validate.ts). */
  readonly messageLimits: LogMessageLimits;
  /**
   * Read leases (./lease.ts), or null: only for linearizable reads (sequential ones are local
   * anyway), and only with three nodes or fewer, where a lease's ask and the leader are a majority.
   */
  readonly readLeases: ReadLeaseOptions | null;
  /**
   * The machine's boot (`wal_sync = write`): records written in this boot are all in the file,
   * those of an earlier one may not be (see ./recovery.ts). Null: every record is fsynced.
   */
  readonly bootId: string | null;
  /** The memory guard: the leader asks it for every write; state transfers count in it (one writer: the log). */
  readonly memory: MemoryAdmission;
  /**
   * Linearizability with read leases, three nodes: a follower tells the other follower when it
   * holds that one's writes (`held`), and the two, a majority, commit them without waiting for the
   * leader's notice (./follower-holds.ts); the leader's read index then covers what it sent both.
   */
  readonly followersShareHolds: boolean;

  // Durable state.
  term = 0;
  votedFor: PeerId | null = null;
  incarnation = 0;
  readonly log: EntryLog;
  /** The boot in which the persisted records were last known complete (see `bootId`). */
  recordedBootId: string | null = null;
  /** The last hard state restored was written while recovering (see Recovery): not complete, even if fsynced. */
  recordedRecovering = false;
  /** Our records hold everything we ever acknowledged: persisted as `bootId` with the hard state. */
  recordsComplete = false;

  // Volatile state.
  role: LogRole = 'follower';
  /**
   * Set by a recovery that gave up (./recovery.ts): the most complete log any node reported; until
   * a leader is known (or `untilMs`) this node votes only for a candidate whose log reaches it.
   */
  voteFloor: { index: number; term: number; untilMs: number } | null = null;
  leader: PeerId | null = null;
  commitIndex = 0;
  appliedIndex = 0;
  replicaValid = true;
  caughtUp = false;
  /** The leader's commit index this node must apply before serving; null until known. */
  catchUpIndex: number | null = null;
  nowMs: number;
  lastLeaderContactMs = Number.NEGATIVE_INFINITY;
  /**
   * Peers with no connection open either way and a redial refused, at the last tick (its
   * `peersCut`), less those heard from since. A leader in it most likely exited: its followers
   * elect another without waiting out the failure timeout (see Election.hurry).
   */
  readonly cutPeers = new Set<PeerId>();
  /**
   * Peers that said they are stopping (a `leave`) in `term`, and whether they led it, less those
   * heard from since: such a peer serves no read and holds no lease (see Roles.onLeave).
   */
  readonly departed = new Map<PeerId, { term: number; led: boolean }>();

  /** Whether `peer` is gone for now: cut off (its process most likely exited), or it said it leaves. */
  isGone(peer: PeerId): boolean {
    return this.cutPeers.has(peer) || this.departed.has(peer);
  }

  // The replica (see ./replica.ts and ./transfer.ts).
  /** The snapshot index a state transfer must reach; null while none is wanted. */
  transferMinIndex: number | null = null;
  /**
   * The replica holds nothing the logs cannot give back: its backend restarted empty, or we reset
   * it for a transfer or a start-over, and it has not been trusted since. (A replica that is
   * merely untrusted, after a failed write, may still hold data no one else has.)
   */
  replicaEmptied = false;
  /** `replicaEmptied` as last persisted (with `replicaTrusted`), so a restart remembers it. */
  replicaEmptiedPersisted = false;
  /** Grows each time our replica is lost; rides on appends and transfers (see transfer_chunk). */
  replicaEpoch = 0;
  /**
   * The replica descends from a start-over at this index (0: none known): every replica lost the
   * writes committed at or before it, so a transfer of this replica must not answer them stored.
   * Never above the snapshot index; persisted with the snapshot.
   */
  replicaStartOverIndex = 0;
  /** The greatest replica epoch seen from the current leader in this term. */
  leaderReplicaEpoch = 0;
  /** Replica durability (with replicaSkipsApplied): may a restart replay onto the replica? */
  replicaTrusted = true;
  /**
   * After a restart that replays onto the kept replica, or a state transfer read key by key, the
   * replica may already hold changes up to here (the last index logged before the restart, the
   * transfer's `fetchedThrough`): until applied reaches it, the replica is ahead of
   * `appliedIndex`: a state transfer it serves says its keys may hold changes up to here.
   */
  replayUntilIndex = 0;
  /**
   * After a state transfer read key by key (see transfer_chunk's `fetchedThrough`): our writes
   * committed up to here are answered as writes the transfer holds, not by their apply, which
   * may be skipped or see a key that is ahead.
   */
  transferAheadThrough = 0;
  /** Tokens of store effects (fetches and puts): one sequence, so no two are ever confused. */
  private storeToken = 0;

  /** Every request in the log (origin, incarnation, requestId → index), so none enters twice. */
  readonly proposals = new ProposalMap<number>();

  out: Effect<LogMessage>[] = [];
  /** When each refusal reason was last noted, so refusals are noted at most once a second. */
  private readonly refusalNotedMs = new Map<string, number>();
  private readonly dropped = new DroppedPeerMessages();

  constructor(options: LogCoreOptions) {
    this.self = options.self;
    this.peers = options.peers.filter((peer) => peer !== options.self);
    this.mode = options.mode;
    this.tuning = {
      compactionThresholdEntries: options.compactionThresholdEntries ?? LOG_DEFAULTS.compactionThresholdEntries,
      compactionThresholdBytes: options.compactionThresholdBytes ?? LOG_DEFAULTS.compactionThresholdBytes,
      silentFollowerKeptFailureTimeouts: options.silentFollowerKeptFailureTimeouts ?? LOG_DEFAULTS.silentFollowerKeptFailureTimeouts,
      appendEntriesMax: options.appendEntriesMax ?? LOG_DEFAULTS.appendEntriesMax,
      inflightEntriesMax: options.inflightEntriesMax ?? LOG_DEFAULTS.inflightEntriesMax,
      queueDepthMax: options.queueDepthMax ?? LOG_DEFAULTS.queueDepthMax,
      requestTimeoutFailureTimeouts:
        options.requestTimeoutFailureTimeouts ?? LOG_DEFAULTS.requestTimeoutFailureTimeouts,
      transferChunkEntriesMax: options.transferChunkEntriesMax ?? LOG_DEFAULTS.transferChunkEntriesMax,
      batchBytesMax: options.batchBytesMax ?? LOG_DEFAULTS.batchBytesMax,
    };
    // A bound tuned below the default still takes what a peer running the defaults sends.
    this.messageLimits = {
      nodes: new Set([this.self, ...this.peers]),
      op: { ...OP_LIMITS_DEFAULT, valueBytesMax: options.valueBytesMax ?? OP_LIMITS_DEFAULT.valueBytesMax },
      appendEntriesMax: Math.max(this.tuning.appendEntriesMax, LOG_DEFAULTS.appendEntriesMax),
      requestsMax: Math.max(this.tuning.queueDepthMax, LOG_DEFAULTS.queueDepthMax),
      chunkEntriesMax: Math.max(this.tuning.transferChunkEntriesMax, LOG_DEFAULTS.transferChunkEntriesMax),
      chunkCountMax: TRANSFER_CHUNKS_MAX,
    };
    this.random = options.random;
    this.heartbeatIntervalMs = options.heartbeatIntervalMs;
    this.failureTimeoutMs = options.failureTimeoutMs;
    this.majority = Math.floor((this.peers.length + 1) / 2) + 1;
    this.nowMs = options.nowMs;
    this.replicaSkipsApplied = options.replicaSkipsApplied ?? false;
    this.bootId = options.bootId ?? null;
    const leases = options.readLeases ?? null;
    this.readLeases = leases !== null && this.mode === 'linearizability' && this.peers.length <= 2 ? leases : null;
    this.followersShareHolds = this.readLeases !== null && this.peers.length === 2;
    this.log = new EntryLog(this.readLeases !== null);
    this.memory = new MemoryAdmission(this.peers, undefined, options.keyHeld);
  }

  /** How long a request may wait for its answer. */
  requestTimeoutMs(): number {
    return this.tuning.requestTimeoutFailureTimeouts * this.failureTimeoutMs;
  }

  /** The effects pushed since the last call, in order. */
  takeEffects(): Effect<LogMessage>[] {
    const effects = this.out;
    this.out = [];
    return effects;
  }

  nextStoreToken(): number {
    this.storeToken += 1;
    return this.storeToken;
  }

  rememberProposal(entry: LogEntry): void {
    if (entry.requestId !== null) this.proposals.set(entry.origin, entry.incarnation, entry.requestId, entry.index);
  }

  forgetProposal(entry: LogEntry): void {
    if (entry.requestId !== null) this.proposals.delete(entry.origin, entry.incarnation, entry.requestId);
  }

  /** A peer message this node cannot use: dropped, counted, noted (rate-limited). */
  dropMessage(from: PeerId, reason: string): void {
    const note = this.dropped.drop<LogMessage>(from, reason, this.nowMs);
    if (note !== null) this.out.push({ ...note, meta: { node: this.self, term: this.term, ...note.meta } });
  }

  get droppedCount(): number {
    return this.dropped.count;
  }

  /** Records whether the replica may be replayed onto, with whether its backend restarted empty. */
  setReplicaTrusted(trusted: boolean): void {
    if (trusted) this.replicaEmptied = false;
    const emptied = !trusted && this.replicaEmptied;
    if (this.replicaTrusted === trusted && this.replicaEmptiedPersisted === emptied) return;
    this.replicaTrusted = trusted;
    this.replicaEmptiedPersisted = emptied;
    this.persist({ kind: 'replica', trusted, emptied }, false);
  }

  /**
   * Enters a later term, as a follower or a candidate (the caller persists the hard state). What
   * was seen of a leader belongs to its term: the replica epoch is that leader's own count (one
   * leader per term), so a node that stood for election and lost must not judge the new leader's
   * asks and transfers by the last one's (its asks would never count towards a start-over).
   */
  enterTerm(term: number, votedFor: PeerId | null): void {
    assert(term > this.term, `term ${term} is not after ${this.term}`);
    this.term = term;
    this.votedFor = votedFor;
    this.leaderReplicaEpoch = 0;
  }

  persistHardState(): void {
    this.persist({ kind: 'hard', ...this.hardState() }, false);
  }

  /** The hard state as persisted, naming this boot once our records are known complete. */
  private hardState(): HardState {
    const hard = { term: this.term, votedFor: this.votedFor, incarnation: this.incarnation, leaderReplicaEpoch: this.leaderReplicaEpoch };
    // A crash while recovering must recover again at the next start, fsynced records or not.
    if (!this.recordsComplete) return { ...hard, recovering: true };
    return this.bootId !== null ? { ...hard, bootId: this.bootId } : hard;
  }

  persistSnapshot(): void {
    this.replicaEmptiedPersisted = !this.replicaTrusted && this.replicaEmptied;
    this.persist(this.snapshotRecord(), true);
  }

  /** The durable state as it stands (as restored, at a start), rewritten as one fsynced record. */
  persistWhole(): void {
    this.persist(this.snapshotRecord(), true);
  }

  private snapshotRecord(): LogRecord {
    return {
      kind: 'snapshot',
      ...this.hardState(),
      snapshotIndex: this.log.snapshotIndex,
      snapshotTerm: this.log.snapshotTerm,
      entries: this.log.entries.slice(),
      replicaTrusted: this.replicaTrusted,
      replicaEmptied: this.replicaEmptiedPersisted,
      replicaStartOverIndex: this.replicaStartOverIndex,
    };
  }

  persist(record: LogRecord, compact: boolean): void {
    this.out.push({ kind: 'persist', record, compact });
  }

  /** Refusals come in floods: note each reason at most once a second. */
  noteRefusal(refusal: Refusal): void {
    const reason = refusalText(refusal);
    const lastMs = this.refusalNotedMs.get(reason);
    if (lastMs !== undefined && this.nowMs - lastMs < 1000) return;
    this.refusalNotedMs.set(reason, this.nowMs);
    if (this.refusalNotedMs.size > 64) this.refusalNotedMs.delete(this.refusalNotedMs.keys().next().value as string);
    this.note('warn', 'request refused', { reason, leader: this.leader, peers: this.peers });
  }

  note(level: 'info' | 'warn', message: string, meta: Record<string, unknown>): void {
    this.out.push({ kind: 'note', level, message, meta: { node: this.self, term: this.term, ...meta } });
  }

  send(to: PeerId, message: LogMessage): void {
    this.out.push({ kind: 'send', to, message });
  }

  /** A message that rests on no record: it leaves ahead of effects waiting for the disk. */
  sendBeforeDurable(to: PeerId, message: Extract<LogMessage, { kind: 'ping' | 'pong' | 'leave' }>): void {
    this.out.push({ kind: 'send', to, message, beforeDurable: true });
  }
}
