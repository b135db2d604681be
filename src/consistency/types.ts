/**
 * The contract between a consistency mode and the controller that runs it.
 *
 * A mode is a deterministic state machine with no I/O (the etcd-io/raft "sans-I/O" pattern):
 * `step(event)` takes one event — a client request, a peer message, a timer tick, a store
 * completion — and returns the effects to carry out, in order. It never awaits, never reads the
 * clock (`nowMs` rides on every event) and never calls Math.random (a seeded `random` is passed
 * in). The controller carries out effects strictly in the order returned: a `persist` completes
 * (fsync) before any later effect (of this step or a later one) but a `send` marked
 * `beforeDurable`, and `apply`/`read`/`fetch` effects reach the local replica in the order they
 * were issued.
 *
 * Glossary, one meaning each everywhere: *commit* — a majority has it; *apply* — the local store
 * has it; *reply* — the client has it; *ack* — a peer has it.
 */

import type { Reply } from '../protocol/types.ts';
import type { BackendMemory, PeerMemoryReport, Stored } from '../store/memory-guard.ts';
import type { KeyedEntry, Op } from '../store/types.ts';

declare const peerIdBrand: unique symbol;
/** A controller's id from config.ini, e.g. "n1". */
export type PeerId = string & { readonly [peerIdBrand]: true };
export const asPeerId = (id: string): PeerId => id as PeerId;

declare const requestIdBrand: unique symbol;
/** Names one client request at the controller that received it. */
export type RequestId = number & { readonly [requestIdBrand]: true };
export const asRequestId = (id: number): RequestId => id as RequestId;

export type Mode = 'linearizability' | 'sequential' | 'causal' | 'eventual';
export const MODES: readonly Mode[] = ['linearizability', 'sequential', 'causal', 'eventual'];
/** The modes that order every write through a replicated log (and keep a write-ahead file). */
export const isOrderedMode = (mode: Mode): boolean => mode === 'linearizability' || mode === 'sequential';

/** A (key, entry) pair moved between replicas (it lives with the store, which holds it). */
export type { KeyedEntry } from '../store/types.ts';

export type Event<M> =
  /** A client's op arrived at this controller. `session` is the client connection's id. */
  | { kind: 'request'; nowMs: number; requestId: RequestId; session: number; op: Op }
  | { kind: 'message'; nowMs: number; from: PeerId; message: M }
  /**
   * Periodic timer; `peersUp` is the failure detector's current view of the other peers.
   * `pausedMs`: how long this node was not running since the previous tick (its timers came late:
   * a stall of the machine, a long GC pause); silence of peers over that time is not theirs.
   * `peersCut`: peers with no connection open either way now and our redial refused (PeerView.cut:
   * a process that exited; a live one whose connections were only reset takes the redial).
   */
  | { kind: 'tick'; nowMs: number; peersUp: readonly PeerId[]; pausedMs?: number; peersCut?: readonly PeerId[] }
  /**
   * The wall clock ran `aheadMs` ahead of the monotonic clock since the controller last looked:
   * the machine was suspended (its monotonic clock stood still while real time ran on) or its
   * wall clock was stepped forward. Told before any event that follows; a mode that times read
   * leases on the monotonic clock drops them (see src/runtime/clock.ts).
   */
  | { kind: 'clock_jump'; nowMs: number; aheadMs: number }
  /**
   * The controller is stopping (SIGTERM, SIGINT): its clients are gone, and it serves nothing
   * more. A mode may tell its peers (sends marked `beforeDurable`, the last this node makes).
   */
  | { kind: 'stopping'; nowMs: number }
  /** Answer to a `fetch` effect; `more`: a slice of a `sliced` or `paced` fetch's result, more follows. */
  | { kind: 'fetched'; nowMs: number; token: number; entries: KeyedEntry[]; more?: true }
  /** An `apply` or `put` effect with a token completed on the local replica. */
  | { kind: 'applied'; nowMs: number; token: number }
  /**
   * The local backend lost its contents or may have missed a write: rebuild from the peers.
   * `emptied`: it restarted (memcached's pid or start time changed), so it certainly holds nothing;
   * absent or false: a write to it failed, so it may still hold almost everything. `kept`: it lost
   * nothing it acknowledged — the failed writes timed out or lost their connection, so each took
   * effect whole or not at all (memcached refused none, evicted nothing) — as after a controller
   * is killed mid-write; a mode that can replay its writes onto the replica may repair it so.
   * `awaiting`: requests whose apply failed on the replica and that got no reply yet; the mode
   * answers each (with the write's result if it applies it again). Only the replicated log's
   * modes get any: there a committed write is applied again by a replay, so the controller holds
   * its reply; other modes' failed applies are answered at once.
   */
  | { kind: 'backend_reset'; nowMs: number; emptied?: boolean; kept?: boolean; awaiting?: RequestId[] }
  /**
   * The local memcached refused an `apply` or `put` for want of memory and left these keys as
   * they were; the replica is still trusted (ReplicaOptions.refusalsKeepTrust: eventual mode
   * only), and the mode re-reads what the keys hold. `token`: the refused effect's, if it had
   * one (its `applied` never comes). `serial`: how many such refusals the controller has passed
   * on, this one included (a `read`'s `fence` names the last one the mode had stepped).
   */
  | { kind: 'refused'; nowMs: number; keys: readonly string[]; token?: number | null; serial?: number }
  /**
   * A poll of the local memcached read its memory (null: it said nothing, or did not answer).
   * `stored`: per writer, the greatest version the replica held when the poll began. It feeds the
   * mode's memory guard (./memory-admission.ts), as does each of the next.
   */
  | { kind: 'memory_polled'; nowMs: number; memory: BackendMemory | null; stored: Stored }
  /**
   * A peer's heartbeat brought a report of its memcached other than its last one (null: it says
   * nothing of its memory). It counts from the next tick that sees the peer up.
   */
  | { kind: 'memory_report'; nowMs: number; from: PeerId; report: PeerMemoryReport | null }
  /**
   * The controller has run every event it had queued for now: a machine that buffers outgoing
   * messages (forwards, appends, pushes) sends them here, so one message carries everything that
   * arrived in the same turn of the event loop (etcd-io/raft's Ready batching).
   */
  | { kind: 'flush'; nowMs: number };

export type Effect<M> =
  /**
   * `beforeDurable`: the message rests on no record (a liveness ping, its answer), so it leaves at
   * once, ahead of effects still waiting for earlier records to be durable.
   */
  | { kind: 'send'; to: PeerId; message: M; beforeDurable?: true }
  | { kind: 'reply'; requestId: RequestId; reply: Reply }
  /**
   * Apply `op` to the local replica with version `cas`, as of time `nowMs` (expiry is judged at
   * this time, so every replica decides alike). If `requestId` is set, the op's result is the
   * reply to that request. If `token` is set, an `applied` event follows.
   */
  | {
      kind: 'apply';
      op: Op;
      cas: bigint;
      nowMs: number;
      requestId: RequestId | null;
      token: number | null;
      /** Eventual and causal modes: this node's index, for incr/decr's per-node totals. */
      counterNode?: number;
      /** As a `read`'s: a result that may show what a later refusal undoes is answered `result_unknown`. */
      fence?: number;
    }
  /**
   * Write entries to the local replica. `merge`: keep whichever has the greater cas (last writer
   * wins), or with `joinCas` merge counters (store/counter.ts; a fresh version above every one the
   * node has seen). `overwrite`: replace. If `token` is set, an `applied` event follows.
   */
  | { kind: 'put'; entries: KeyedEntry[]; how: 'merge' | 'overwrite'; token: number | null; joinCas?: bigint }
  /**
   * Serve a read (`op` is a get) from the local replica, after every earlier apply. `keysOnly`:
   * after every earlier store effect on its keys only; it may run ahead of other effects waiting
   * for the disk (a linearizable read of the replicated log with read leases). `fence`: the
   * `serial` of the last `refused` event the mode had stepped; if a later refusal has come by the
   * time the read is answered, it is refused (`not_caught_up`) instead, as what it shows may be
   * undone by that refusal, which the mode had not seen (causal mode: ./causal/ahead-keys.ts).
   */
  | { kind: 'read'; requestId: RequestId; op: Op; nowMs: number; keysOnly?: true; fence?: number }
  /**
   * Once every replica call issued before it has completed (and memcached has answered the stores
   * sent quietly among them), an `applied` event with `token` follows. Unlike a fetch, it holds up
   * no call issued after it. (A compaction: every apply up to its snapshot is done.)
   */
  | { kind: 'settle'; token: number }
  /**
   * Read entries (tombstones too) from the local replica; null keys = all. A `fetched` follows;
   * `sliced`: a large result may come as several, all but the last marked `more`. `paged` (null
   * keys): each key as of some point after the fetch, not one point for all, so later calls are not
   * held up for the whole read (the mode makes its own cut: ./causal/snapshot-cuts.ts).
   * `versionsOnly`: the entries come without their values (the mode learns only what the replica
   * holds, as at start: store/replica.ts, FetchOptions). `paced` (null keys, read as `paged`): the
   * result comes a slice at a time, the first at once and each next one when a `fetch_more` asks,
   * so a whole replica is never held at once (a state transfer sent as its receiver acks).
   */
  | { kind: 'fetch'; token: number; keys: string[] | null; sliced?: true; paged?: true; paced?: true; versionsOnly?: true }
  /**
   * The next slice of the `paced` fetch `token` (a `fetched` follows, `more` unless it is the
   * last); `stop`: none, the fetch is given up and its listing let go.
   */
  | { kind: 'fetch_more'; token: number; stop?: true }
  /**
   * Remove these tombstones from the local replica, each only if its cas is still the one given;
   * a key that holds an older version instead (a refused write kept it) is removed too.
   */
  | { kind: 'purge'; tombstones: Array<[key: string, cas: bigint]> }
  /** Empty the local replica. */
  | { kind: 'reset' }
  /**
   * Close every client connection of this node: a write answered on one of them may be lost for
   * good (causal mode, when memcached lost writes no peer held yet), so no session may go on as if
   * it held. New connections are served as usual.
   */
  | { kind: 'end_sessions'; reason: string }
  /**
   * Make `record` durable (appended to the write-ahead file and fsynced) before any later effect.
   * `compact`: the file is rewritten to hold only this record. Records are given back, in order,
   * to the mode's constructor on restart.
   */
  | { kind: 'persist'; record: unknown; compact: boolean }
  /**
   * Something an operator wants in the log: an election won or lost, a step-down, a state
   * transfer, a refused request. Carries the peer ids involved in `meta`. No protocol effect.
   */
  | { kind: 'note'; level: 'debug' | 'info' | 'warn'; message: string; meta: Record<string, unknown> }
  /**
   * Deliver a `flush` event about `afterMs` from now (a mode that paces its messages asks for the
   * moment its next batch is due). One pending wake-up per controller: a later request replaces a
   * later pending one, never an earlier one. Ticks still come, so a lost wake-up only delays.
   */
  | { kind: 'wake'; afterMs: number };

/** What `show` reports of a mode. */
export interface MachineStatus {
  mode: Mode;
  role: string;
  term: number;
  leader: PeerId | null;
  /** Position of the last committed entry (or a clock, for eventual). */
  committed: string;
  /** Position of the last entry applied to the local replica. */
  applied: string;
  /** Requests waiting in this controller's queue. */
  queueDepth: number;
  /** Peer messages dropped since start: malformed, or impossible from a correct peer. */
  invalidPeerMessages: number;
  /** Linearizability with read leases on: whether this node holds one now (absent: leases off). */
  readLease?: 'held' | 'none';
  /**
   * Whether its replica is whole, so it serves reads: ordered modes, recovered and caught up with
   * the log as far as the leader had committed when it (re)joined; eventual and causal mode, not
   * rebuilding its replica. What a rolling restart waits for before stopping the next node.
   */
  caughtUp: boolean;
}

export interface Machine<M> {
  step(event: Event<M>): Effect<M>[];
  status(): MachineStatus;
  /**
   * Whether a get arriving at `nowMs` on client connection `session`, with no event queued
   * before it, would be stepped into nothing but a `read` effect, leaving the machine's state as
   * it was. A pure query: the controller then serves the get from the local replica without
   * stepping it (no event, no effect list, no pending request), and steps it as usual when this
   * is false or absent. `read`: what a linearizable read under a lease needs (absent: not one).
   */
  readsLocally?(nowMs: number, session: number, read?: LocalRead): boolean;
  /**
   * After its `stopping` step: whether it still hands its peers something only it holds (eventual
   * and causal mode: local writes not yet pushed to a peer that is up). The controller keeps
   * stepping it, for a bounded time, until this is false. Absent: nothing to hand over.
   */
  handingOver?(): boolean;
  /** Causal mode: a short token naming the causal context of everything visible here. */
  contextToken?(): string;
  /** Causal mode: whether everything `token` names is visible here; null when it is no token of this cluster. */
  coversToken?(token: string): boolean | null;
}

/**
 * What a linearizable read served without a step needs told: its keys, and whether every store
 * effect the mode issued on them has reached the replica (none of them waits for the disk).
 */
export interface LocalRead {
  keys: readonly string[];
  appliesDone: boolean;
}

/** What every mode's constructor gets. */
export interface MachineOptions {
  self: PeerId;
  peers: readonly PeerId[];
  /** Deterministic randomness in [0, 1). */
  random: () => number;
  heartbeatIntervalMs: number;
  failureTimeoutMs: number;
  /** Records this node persisted before a restart, oldest first (empty on a fresh start). */
  persisted: readonly unknown[];
  nowMs: number;
  /**
   * The largest value a client may store (config.ini's value_bytes_max): a peer's op or entry
   * with a larger one is malformed and dropped. Default 1 MiB.
   */
  valueBytesMax?: number;
  /**
   * Whether this node's replica holds `key` now: the memory guard counts a write of a held key as
   * adding none (consistency/memory-admission.ts). Default: every write of a set or add may add one.
   */
  keyHeld?: (key: string) => boolean;
}
