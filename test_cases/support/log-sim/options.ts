/**
 * What a run of the log simulator is asked to do (SimOptions and the options of each fault it can
 * inject), what it reports (SimResult), how it fails (SimulationFailure, naming the seed), and the
 * timings every part of it shares. Kept apart so tests and parts read the contract without the
 * machinery that carries it out.
 */

import type { LogMode, ReadLeaseOptions } from '../../../src/consistency/replicated-log.ts';

export interface SimOptions {
  seed: number;
  mode: LogMode;
  /** Simulated time of the faulty phase. */
  safetyMs: number;
  /** Bound on the liveness phase. */
  livenessMs: number;
  faults: boolean;
  compactionThresholdEntries: number;
  /** The log's compaction threshold in bytes (default: the machine's). */
  compactionThresholdBytes?: number;
  /** How many failure timeouts a silent follower's lag is kept (default: the machine's; 1 makes transfers common). */
  silentFollowerKeptFailureTimeouts?: number;
  clients: number;
  /** Replicas skip ops they already hold (cas ≥ index), so restarts replay onto kept replicas. */
  replicaSkipsApplied: boolean;
  /** If set, every node crashes at this offset into the faulty phase, keeping its replica. */
  crashAllAtMs: number | null;
  /** If set, every node's replica is emptied around one moment (see `EmptyAllOptions`). */
  emptyAll: EmptyAllOptions | null;
  /** If set, store effects fail on chosen nodes (see `StoreFailureOptions`). */
  storeFailures: StoreFailureOptions | null;
  /** Nodes in the cluster (mckv runs three; five exercises the general-majority paths). */
  nodeCount: number;
  /**
   * Chance that a message sent is followed by a malformed copy of it (see ./junk.ts), from its
   * sender: the receiver must drop and count it (checked) and the run must stay safe and live.
   */
  junkRate?: number;
  /**
   * Read leases on (linearizability): reads check per key (see `Clients.complete`), and each node's clock
   * runs at its own rate, drawn per boot within `clockDriftPpm`, from its own origin per boot (a
   * monotonic clock starts afresh with its process).
   */
  readLeases?: ReadLeaseOptions | null;
  /** How far each node's clock rate is drawn from real time, in ppm (default: the leases' bound). */
  clockDriftPpm?: number;
  /**
   * Records are written without fsync (`wal_sync = write`): half the crashes are power losses,
   * after which the node has lost a random suffix of its records since its last compaction (that
   * one is fsynced) and its replica (memcached lost power too), and boots in a new boot. As the
   * product assumes, a power loss strikes only while no other node is still recovering from one.
   */
  powerLoss?: boolean;
  /**
   * With `powerLoss`: half the power losses take a second running node's machine down too, beyond
   * the one machine at a time the product assumes; that one keeps every record it wrote (its page
   * cache had reached the disk), so every acknowledged write is still on it or on the third node
   * and none may be lost. Both come back in a new boot and must recover together.
   */
  powerLossPairs?: boolean;
  /** With `powerLoss`: nodes trust their records after one anyway (no recovery), to show what it prevents. */
  trustAfterPowerLoss?: boolean;
  /** Whole machines suspended now and then in the faulty phase (see `SuspendOptions`). */
  suspends?: SuspendOptions | null;
  /**
   * How each node draws its election timeout's random part: over the whole range (`full`, the
   * default, as mckv does) or within 2% of it (`narrow`), so followers that lost their leader
   * often stand for the same term and all but one lose to a winner of that term: the state a
   * busy machine's scheduler makes common, in which a candidate keeps what it knew before it
   * stood (replica epochs, the leader it followed) unless entering the term made it forget.
   */
  electionJitter?: 'full' | 'narrow';
}

/** A live node's machine sleeps for 20 ms up to `durationMsMax`, its clock stopped meanwhile. */
export interface SuspendOptions {
  /** How often a suspend starts, across the cluster (none while a node sleeps). */
  perSecond: number;
  durationMsMax: number;
  /**
   * Its controller notices the wall clock ran ahead on waking and steps a `clock_jump` first;
   * false: nothing tells it (as when a paused VM's wall clock stopped too).
   */
  notice: boolean;
}

/**
 * Store effects (apply, put, fetch) that fail during the faulty phase, leaving the replica merely
 * untrusted: it may or may not hold the failed write, and may still hold everything else.
 */
export interface StoreFailureOptions {
  /** Nodes (0 = n1, 1 = n2, 2 = n3) whose store effects may fail at `rate`. */
  nodes: readonly number[];
  /** Chance that one apply, put or fetch on such a node fails. */
  rate: number;
  /**
   * Chance that the failing node's controller then crashes: half of these before its machine is
   * told, half at the end of the turn in which it was told (its answer not yet fsynced).
   */
  crashChance: number;
  /**
   * If set: from this offset into the faulty phase, the first moment every node compacted its log
   * and the cluster is healthy, the next store effect on every node fails (every replica untrusted).
   */
  everyNodeAtMs: number | null;
  /**
   * The failures are timeouts or lost connections, never a refusal by memcached: the machine is told
   * `kept: true` (as the controller does) whenever the replica's state is known, that is, no put
   * failed since it was last trusted. A machine that then replays its log onto the replica
   * instead of rebuilding it trusts it again at once.
   */
  kept?: boolean;
}

/**
 * Every node's backend restarts empty (memcached lost everything), within a short window that
 * starts 300 ms after the anchor: `atMs` into the faulty phase, or (`whenHealthy`) the first
 * moment after it when every node is up, valid and caught up and no node's log ends before
 * another's snapshot (nobody needs a state transfer yet).
 */
export interface EmptyAllOptions {
  /** Offset into the faulty phase of the anchor. */
  atMs: number;
  /** Each node is emptied at a moment drawn in the window, this long. */
  windowMs: number;
  /**
   * A random node also crashes 1–300 ms `before` its replica is emptied (so it may learn it at
   * boot) or `after` it (its machine was told, then restarts from its records); or `all` nodes
   * crash, each 1–90 ms before its replica is emptied (a whole-cluster restart with memcached's
   * contents gone: every node learns it at boot).
   */
  crash: EmptyAllCrash;
  /**
   * Further rounds, each `EMPTY_ALL_ROUND_GAP_MS` after the one before, with its own crash: a
   * leader that lost its replica more than once in a term, then a new term (replica epochs). Two
   * kinds of round only further rounds take: `leader-alone` empties only the replica of the node
   * leading then (its epoch runs ahead of the others'); `leader-crash` crashes the node leading
   * then and empties every replica a little later, while the others elect a new leader.
   */
  then?: EmptyAllRound[];
  whenHealthy: boolean;
}

export type EmptyAllCrash = 'none' | 'before' | 'after' | 'all';
export type EmptyAllRound = EmptyAllCrash | 'leader-alone' | 'leader-crash';

export const SIM_DEFAULTS: Omit<SimOptions, 'seed' | 'mode'> = {
  safetyMs: 6_000,
  livenessMs: 8_000,
  faults: true,
  compactionThresholdEntries: 40,
  clients: 4,
  replicaSkipsApplied: true,
  crashAllAtMs: null,
  emptyAll: null,
  storeFailures: null,
  nodeCount: 3,
};

export interface SimResult {
  seed: number;
  committed: number;
  repliesOk: number;
  repliesRefused: number;
  elections: number;
  /** Candidates that became followers in the term they stood for (another node won it). */
  candidaciesLost: number;
  crashes: number;
  transfers: number;
  /** Records crashes lost (written, no fsync covered them), and effects lost waiting for one. */
  recordsLost: number;
  heldEffectsLost: number;
  /** Peer messages sent, by kind. */
  messages: Record<string, number>;
  /** Times a leader started over because every replica was lost, and the last one's snapshot index. */
  startOvers: number;
  startOverIndex: number | null;
  /** With `emptyAll`: every scheduled emptying and crash ran. */
  emptyAllRan: boolean;
  /**
   * With `emptyAll`: from the moment every scheduled emptying and crash ran and every node was up,
   * until the first write submitted after it was acknowledged (null if none was).
   */
  recoveryMs: number | null;
  /** From the end of the faulty phase until the cluster converged (null: not run to convergence). */
  convergedAfterHealMs: number | null;
  /** With `storeFailures`: store effects that failed, and effects a suspect replica refused. */
  storeFailures: number;
  storeEffectsRefused: number;
  /** Restarts of a node with a log that replayed it onto the replica it kept (not rebuilt). */
  keptReplicaRestarts: number;
  /** Times a machine was told its backend missed a write (`backend_reset`, not emptied). */
  untrustedResets: number;
  /** Of those, times it replayed its log onto the kept replica (`kept`, see StoreFailureOptions). */
  keptReplays: number;
  /** Crashes of a node whose replica was suspect, or told so and not reset yet. */
  crashesWhileUntrusted: number;
  /** Every node's machine was told so and none held a valid replica, at once; replies served after. */
  everyReplicaUntrusted: boolean;
  repliesOkAfterEveryUntrusted: number;
  /** With `junkRate`: malformed messages delivered (each dropped and counted by its receiver). */
  junkDelivered: number;
  /** With `readLeases`: linearizable reads started under a lease, all nodes. */
  leaseReads: number;
  /** Crashes that were power losses (`powerLoss`). */
  powerLosses: number;
  /** Machines suspended (`suspends`). */
  suspends: number;
}

/** A result with nothing counted yet (the field order is the order a result prints in). */
export function emptyResult(seed: number): SimResult {
  return {
    seed, committed: 0, repliesOk: 0, repliesRefused: 0, elections: 0, candidaciesLost: 0, crashes: 0, transfers: 0, recordsLost: 0,
    heldEffectsLost: 0, messages: {}, startOvers: 0, startOverIndex: null, emptyAllRan: false, recoveryMs: null,
    convergedAfterHealMs: null, storeFailures: 0, storeEffectsRefused: 0, keptReplicaRestarts: 0, untrustedResets: 0, keptReplays: 0,
    crashesWhileUntrusted: 0, everyReplicaUntrusted: false, repliesOkAfterEveryUntrusted: 0, junkDelivered: 0, leaseReads: 0,
    powerLosses: 0, suspends: 0,
  };
}

/** Thrown with the seed, so a failure can be replayed. */
export class SimulationFailure extends Error {
  override readonly name = 'SimulationFailure';
}

export const HEARTBEAT_MS = 50;
export const FAILURE_TIMEOUT_MS = 300;
export const TICK_MS = 10;
/** A background fsync completes this long after it starts (1–3 ms, drawn per fsync). */
export const FSYNC_MIN_MS = 1;
export const FSYNC_MAX_MS = 3;
/**
 * The machine answers a request within its request timeout (4 failure timeouts), judged on a
 * tick (2 ticks of slack); the answer may then wait for the fsync in flight and the one after it
 * that covers the answer's record (2 fsyncs).
 */
export const REQUEST_BOUND_MS = 4 * FAILURE_TIMEOUT_MS + 2 * TICK_MS + 2 * FSYNC_MAX_MS;
