/**
 * A seeded simulator for the replicated log (in the spirit of TigerBeetle's VOPR): three machines
 * over a simulated network that drops, delays, duplicates and reorders messages, cuts links,
 * crashes and restarts nodes (from their durable records) and empties their replicas, while
 * clients submit random ops. Every effect is carried out on a small model replica per node.
 *
 * Persistence runs the controller's own durability gate (src/controller/durability.ts) over an
 * in-memory write-ahead file: records appended in a turn go out as one batch at its end, one batch
 * per node in flight (group commit; each, a compaction included, durable 1–3 ms later); every other
 * effect issued after a record not yet durable (or after a held effect) is held, in order, until it
 * is (but a send marked `beforeDurable`: a leader's ping, its pong). A backend reset is acknowledged,
 * and an emptied backend noticed, only once what was issued
 * before it ran, as the controller does. A crash loses the records not yet durable and every held
 * effect. Half the crashes wait for the end of a turn in which a node wrote records not yet
 * durable (a leader first): that window is short, and it is where the ordering matters.
 *
 * Intuition: everything random comes from one PRNG seeded by `seed`, and time is simulated, so a
 * failing seed replays the run exactly. A machine's internal state runs ahead of what is durable
 * (a leader counts its own copy not yet durable toward a commit), so the checks judge what is externally
 * visible: effects carried out, and a node's beliefs once all its records are durable.
 *
 * Checked after every event: one leader per term; applied ≤ committed (both internal); a
 * committed index never changes its entry, where committed means claimed by a carried-out effect
 * (an apply's index, an append's or append reply's commit index, a transfer chunk's index) or
 * believed by a node none of whose records awaits an fsync; every node applies the same sequence
 * (the same op at each index, and skips only no-ops) — judged on carried-out applies and puts, a
 * put at the transfer index known when it was issued; no client op at two indices; every reply agrees with a reference replica
 * built from that sequence; a read reflects a state at least as new as (or differing only by
 * no-ops from) every op that completed before it started (linearizability) or before it in its
 * session (sequential); a request at a live node gets an answer within the request bound (the
 * machine's timeout plus two fsyncs).
 * Liveness: after faults stop, nodes converge (nothing held, replicas equal to the reference)
 * within a bound, and every request then succeeds.
 *
 * Read leases (option `readLeases`): each node's clock runs at its own rate within the drift drawn
 * and from its own origin per boot; a `keysOnly` read runs ahead of held effects that change none
 * of its keys, as in the controller; a get is judged per key (its key unchanged between where it
 * was served and every op completed before it started: linearizability, which is local).
 *
 * Suspends (option `suspends`, read leases only): one node's whole machine at a time sleeps now and
 * then (a laptop, a paused VM): it runs nothing, takes no message or request, and its monotonic
 * clock stands still, so on waking it still trusts a lease the others have long let run out. Its
 * controller may notice the wall clock ran ahead and tell the machine (`clock_jump`) before
 * anything else. Its links wake up to 100 ms after it, so clients' requests may come first.
 *
 * Every replica lost (option `emptyAll`): every node's backend restarts empty around one moment
 * (maybe with a node crash nearby), so once the log was compacted nobody can rebuild from a peer
 * and the leader starts over (the machine's `startOverIfEveryReplicaLost`). What was applied only
 * up to that snapshot is gone by design: the simulator then rebases its reference to an empty
 * state at the snapshot index (the start-over's put marks that position), so every check above
 * judges the replicas against the ops after it. Also checked: every write acked after the
 * start-over, or at an index after its snapshot, is in the applied sequence the replicas end with.
 *
 * Failed store writes (option `storeFailures`): an apply, put or fetch on a chosen node fails now
 * and then during the faulty phase (memcached errored or timed out mid-write), as the controller
 * sees it (src/controller/controller.ts `backendError`, src/store/replica.ts): the failed apply or put took
 * effect or not (a put entry by entry), a failed fetch answers nothing; from then on the node's
 * replica is suspect and refuses every store effect (a refused apply or read answers its client
 * SERVER_ERROR, a refused put or fetch completes never, a refused reset empties nothing) until,
 * 1–50 ms later (the backend answers a health poll), the machine is told `backend_reset` with
 * `emptied: false`; as the controller's `runQueued` does, what was issued before that is
 * released first and refused, then the replica is trusted again and the machine's effects run.
 * Checked besides the above: once told, the node runs no read, apply, put or fetch on that replica
 * until a reset empties it (it is rebuilt, by replay from an emptied replica or a transfer); no
 * start-over while some replica is merely untrusted and holds a state as of the snapshot or later.
 * A rate-based failure strikes only while another node runs a valid, trusted replica applied as
 * far as every snapshot (one a transfer can be served from), and no crash or emptying strikes
 * while a replica is suspect or untrusted, so one replica always stays valid and the liveness
 * phase applies. Option `everyNodeAtMs` instead makes every node's next store
 * effect fail at once after compaction: no node can then be rebuilt and none may start over, so
 * the cluster stays unavailable by design (`LogSimulation.stall` runs that without convergence).
 * Simplified: the simulator runs store effects one at a time and at once, so a failure never
 * overlaps other calls in flight (the real replica may have several, each of which may or may not
 * have taken effect, and calls on other keys may complete after the failure); a controller crash
 * forgets the failure (a new process trusts its backend), and the machine's replay or rebuild is
 * judged by the usual checks (option `crashChance` crashes a failing node before its machine is
 * told, or just after, before its answer is durable); reads, purges and resets never fail.
 */

import type { Reply } from '../../src/protocol/types.ts';
import { applyToEntry, isLive, type SingleKeyOp } from '../../src/store/apply.ts';
import { opKeys, type Entry, type Op } from '../../src/store/types.ts';
import { asPeerId, asRequestId, type Effect, type Event, type PeerId, type RequestId } from '../../src/consistency/types.ts';
import { DurabilityGate, type WalBatch, type WalWriteResult, type WriteAhead } from '../../src/controller/durability.ts';
import { changedKeys, HeldKeys } from '../../src/controller/held-keys.ts';
import {
  createReplicatedLog,
  type LogMessage,
  type LogMode,
  type ReadLeaseOptions,
  type ReplicatedLog,
} from '../../src/consistency/replicated-log.ts';
import { mulberry32 } from '../../src/runtime/random.ts';
import { refusalText, refused } from '../../src/protocol/refusals.ts';
import { certainlyInvalid } from './junk.ts';
import { itemAt } from '../../src/runtime/item-at.ts';

export { mulberry32 };

export interface SimOptions {
  seed: number;
  mode: LogMode;
  /** Simulated time of the faulty phase. */
  safetyMs: number;
  /** Bound on the liveness phase. */
  livenessMs: number;
  faults: boolean;
  compactionThresholdEntries: number;
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
   * Read leases on (linearizability): reads check per key (see `complete`), and each node's clock
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
  /** With `powerLoss`: nodes trust their records after one anyway (no recovery), to show what it prevents. */
  trustAfterPowerLoss?: boolean;
  /** Whole machines suspended now and then in the faulty phase (see `SuspendOptions`). */
  suspends?: SuspendOptions | null;
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
   * boot) or `after` it (its machine was told, then restarts from its records).
   */
  crash: 'none' | 'before' | 'after';
  whenHealthy: boolean;
}

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

/** A node's emptied backend or a crash, scheduled by `emptyAll` (`atMs` after the anchor until anchored). */
interface Disruption {
  atMs: number;
  kind: 'empty' | 'crash';
  node: number;
}

/** Slack before the emptying window, so a crash `before` it falls after the anchor. */
const EMPTY_ALL_LEAD_MS = 300;

const HEARTBEAT_MS = 50;
const FAILURE_TIMEOUT_MS = 300;
const TICK_MS = 10;
/** A background fsync completes this long after it starts (1–3 ms, drawn per fsync). */
const FSYNC_MIN_MS = 1;
const FSYNC_MAX_MS = 3;
/**
 * The machine answers a request within its request timeout (4 failure timeouts), judged on a
 * tick (2 ticks of slack); the answer may then wait for the fsync in flight and the one after it
 * that covers the answer's record (2 fsyncs).
 */
const REQUEST_BOUND_MS = 4 * FAILURE_TIMEOUT_MS + 2 * TICK_MS + 2 * FSYNC_MAX_MS;
const KEYS = ['k0', 'k1', 'k2'];

interface Flight {
  atMs: number;
  from: PeerId;
  to: PeerId;
  message: LogMessage;
  /** A malformed message (`junkRate`): the receiver must drop it. */
  junk?: boolean;
}

interface InFlightRequest {
  client: number;
  op: Op;
  invokedMs: number;
  /** Lower bound on the position this op may take (completed ops before it). */
  lowerBound: number;
}

/** An effect other than a persist: what the controller carries out beyond its write-ahead file. */
type OutwardEffect = Exclude<Effect<LogMessage>, { kind: 'persist' }>;

/**
 * What the durability gate holds: an effect (for a `put`, with the index of the transfer it
 * installs, as known when it was issued; with the keys it changes, counted in the node's
 * HeldKeys while it waits), or a step of the simulated controller's own.
 */
type HeldWork = { effect: OutwardEffect; transferIndex: number; keys: readonly string[] | null | undefined } | (() => void);

/**
 * A node's write-ahead file in memory: what is durable, and the batch on its way, which becomes
 * durable at `atMs` (when the simulation says it is due).
 */
class SimWriteAhead implements WriteAhead {
  private inFlight: { batch: WalBatch; done: (result: WalWriteResult) => void; atMs: number; startedMs: number } | null = null;

  constructor(
    /** The file's records as a restart reads them. */
    public durable: unknown[],
    private readonly clock: () => number,
    private readonly fsyncMs: () => number,
  ) {}

  write(batch: WalBatch, done: (result: WalWriteResult) => void): void {
    if (this.inFlight !== null) throw new Error('the gate handed over a batch while one was on its way');
    const startedMs = this.clock();
    this.inFlight = { batch, done, atMs: startedMs + this.fsyncMs(), startedMs };
  }

  close(): void {
    this.inFlight = null;
  }

  /** When the batch on its way becomes durable, if one is. */
  dueMs(): number | null {
    return this.inFlight?.atMs ?? null;
  }

  /** Makes the batch on its way durable if it is due, and tells the gate. */
  completeDue(nowMs: number): void {
    const flight = this.inFlight;
    if (flight === null || flight.atMs > nowMs) return;
    this.inFlight = null;
    for (const { record, compact } of flight.batch.records) {
      if (compact) this.durable = [];
      this.durable.push(record);
    }
    flight.done({ ok: true, fsync: { endedAtMs: nowMs, ms: nowMs - flight.startedMs } });
  }
}

interface SimNode {
  id: PeerId;
  machine: ReplicatedLog | null;
  /** The write-ahead file: what is durable, and the batch on its way. */
  disk: SimWriteAhead;
  /** The controller's durability gate over `disk` (a new one each boot). */
  gate: DurabilityGate<HeldWork>;
  replica: Map<string, Entry>;
  /** Index of the state the replica holds (last apply or transfer), null if unknown. */
  replicaIndex: number | null;
  nextTickMs: number;
  nextRequestId: number;
  requests: Map<RequestId, InFlightRequest>;
  localEvents: Array<{ atMs: number; event: Event<LogMessage> }>;
  downUntilMs: number;
  checkedCommit: number;
  lastTransferIndex: number;
  /** The replica was emptied while the node was down: tell the machine once it boots. */
  replicaLost: boolean;
  /** A start-over was carried out: its put (next) marks the snapshot index, not a transfer. */
  startOverPutPending: boolean;
  /**
   * `emptyAll`: the records appended (this boot) up to telling the machine its backend was emptied.
   * A crash before they are durable forgets that it was told, so the controller tells it again at
   * boot (it keeps the backend's new epoch only as durably as the machine's answer to it).
   */
  emptiedRecords: number;
  /** `storeFailures`: how far the replica is trusted since a store effect failed on it. */
  trust: ReplicaTrust;
  /** `suspect`: when the machine is told (the controller's health poll finds the backend answering). */
  resetDueMs: number | null;
  /** `everyNodeAtMs`: the next apply, put or fetch fails. */
  failNext: boolean;
  /** `crashChance`: crash at this moment (before the machine is told), or once told. */
  crashAtMs: number | null;
  crashWhenTold: boolean;
  /** Its memcached restarts empty once what its controller issued before reached it (see emptyOnceIssued). */
  emptyPending: boolean;
  /** The keys store effects held for the disk change (a `keysOnly` read of others runs at once). */
  heldKeys: HeldKeys;
  /** Its clock this boot: local = originMs + (sim time − bootMs) × rate, rounded down. */
  clock: { originMs: number; bootMs: number; rate: number };
  /** Lease reads its machines started before this boot's. */
  leaseReadsBefore: number;
  /** Its machine's boot (`powerLoss`): a power loss starts a new one. */
  boot: number;
  /** It lost power and has not recovered since (`powerLoss`). */
  lostPower: boolean;
  /** It booted before: its write-ahead file exists. */
  booted: boolean;
  /** `suspends`: its machine sleeps from `sinceMs` to `untilMs` (null: awake). */
  suspension: { sinceMs: number; untilMs: number } | null;
  /** `suspends`: peers' messages due before this reach it only then (its links wake after it, in order). */
  peersHeldUntilMs: number;
}

/**
 * A replica after a failed store effect: `suspect` — the controller refuses every store effect and
 * has not told the machine yet; `told` — the machine was told (`backend_reset`, not emptied) and
 * must not use the replica until a reset empties it; `restarted` — the node crashed meanwhile and
 * its new controller trusts the backend again (the machine replays or rebuilds, as it decides).
 * Back to `trusted` once a reset effect or a backend restart empties it.
 */
type ReplicaTrust = 'trusted' | 'suspect' | 'told' | 'restarted';

/** The store effects a backend carries out (the others are sends, replies, notes). */
type StoreEffect = Extract<OutwardEffect, { kind: 'apply' | 'put' | 'fetch' | 'read' | 'purge' | 'reset' }>;

/** A suspend lasts at least this long. */
const SUSPEND_MIN_MS = 20;
/** A sleeper's links wake up to this long after it (its peers' retransmit timers had backed off). */
const SUSPEND_LINK_WAKE_MS_MAX = 100;

/** The machine is told this long (1 ms up to this) after a store effect failed. */
const UNTRUSTED_RESET_DELAY_MAX_MS = 50;

interface Client {
  busy: boolean;
  /** Sequential mode: the node this client's connection goes to (null: pick one). */
  node: PeerId | null;
  nextMs: number;
  session: number;
  /** Highest position of this session's completed ops. */
  sessionPosition: number;
}

interface Rates {
  drop: number;
  duplicate: number;
  delayMaxMs: number;
  partitionPerSecond: number;
  crashPerSecond: number;
  backendResetPerSecond: number;
}

/** Thrown with the seed, so a failure can be replayed. */
export class SimulationFailure extends Error {
  override readonly name = 'SimulationFailure';
}

type LogView = ReturnType<ReplicatedLog['inspect']>;

const BACKEND_FAILED: Reply = refused('backend', 'write failed or timed out');
const BACKEND_REFUSED: Reply = refused('backend', 'replica may have missed writes; rebuilding it');

const isStoreEffect = (effect: OutwardEffect): effect is StoreEffect =>
  effect.kind === 'apply' || effect.kind === 'put' || effect.kind === 'fetch' || effect.kind === 'read' || effect.kind === 'purge' || effect.kind === 'reset';

const readKeys = (op: Op): readonly string[] => opKeys(op) ?? [];

const opKey = (op: Op): string => JSON.stringify(op, (_key, value: unknown) => (typeof value === 'bigint' ? `${value}n` : value));

export class LogSimulation {
  private readonly random: () => number;
  private readonly options: SimOptions;
  private readonly nodes: SimNode[];
  private readonly ids: PeerId[];
  private flights: Flight[] = [];
  private readonly cut = new Set<string>();
  private nowMs = 1_000_000;
  private faultsOn: boolean;
  private readonly rates: Rates;
  private readonly clients: Client[];
  private readonly leaderOfTerm = new Map<number, PeerId>();
  private readonly committedTerm: number[] = [];
  /** Op (or null for a no-op) at each index, as learned from applies. */
  private readonly sequence: Array<{ op: Op | null; nowMs: number } | undefined> = [];
  /** Where each client op (by identity: messages and records carry the same object) took effect: once at most. */
  private readonly indexOfOp = new WeakMap<Op, number>();
  private readonly reference = new Map<string, Entry>();
  private referenceIndex = 0;
  private readonly history = new Map<string, Array<{ index: number; entry: Entry | undefined }>>();
  private readonly referenceReplies: Reply[] = [];
  private completedPosition = 0;
  private readonly result: SimResult;
  private healed = false;
  private strict = false;
  private clientsPaused = false;
  private crashAllAtMs: number | null;
  /** A crash waits for a node with records no fsync covers yet. */
  private crashArmed = false;
  /** Failover measurement: when the leader was killed, and the first write a survivor completed. */
  private killedAtMs: number | null = null;
  private firstWriteAfterKillMs: number | null = null;
  private longestWaitAfterKillMs = 0;
  /** Writes taken by a survivor before the kill was noticed (within a failure timeout of it): how they ended. */
  private readonly writesAroundKill = { ok: 0, refused: 0 };
  /** `emptyAll`: what is still to happen, when it all happened (and all were up), acked writes. */
  private disruptions: Disruption[] = [];
  /** When the disruptions may be anchored (null once they are, or without `emptyAll`). */
  private disruptionAnchorMs: number | null = null;
  /** When the faulty phase ends. */
  private readonly safetyEndMs: number;
  private disruptionEndMs: number | null = null;
  private readonly ackedWrites: Array<{ index: number; op: Op; atMs: number }> = [];
  /** The snapshot index of the last start-over (the reference starts empty there), and when. */
  private startOverBase = 0;
  private startOverAtMs: number | null = null;
  /** `storeFailures`: its own stream, so the rest of a run draws as it would without failures. */
  private readonly failureRandom: () => number;
  /** `junkRate`: its own stream too. */
  private readonly junkRandom: () => number;
  /** Pings and pongs meet their network's drops and delays from their own stream too. */
  private readonly pingRandom: () => number;
  /** REQUEST_BOUND_MS as a node's clock slow by the drift drawn counts it. */
  private readonly requestBoundMs: number;
  /** `readLeases`: clock origins and rates come from their own stream. */
  private readonly clockRandom: () => number;
  /** `suspends`: its own stream too. */
  private readonly suspendRandom: () => number;
  /** `everyNodeAtMs`: when every node's next store effect may be made to fail (null once armed). */
  private everyNodeFailAnchorMs: number | null = null;
  /** When every replica was first untrusted at once (null: never). */
  private everyUntrustedAtMs: number | null = null;

  constructor(options: SimOptions) {
    // A stopped clock endangers read leases only (and without them, checks take nodes' clocks for simulated time).
    if ((options.suspends ?? null) !== null && (options.mode !== 'linearizability' || (options.readLeases ?? null) === null)) {
      throw new Error('suspends model a read-lease run (linearizability)');
    }
    this.options = options;
    this.random = mulberry32(options.seed);
    this.faultsOn = options.faults;
    this.crashAllAtMs = options.crashAllAtMs === null ? null : this.nowMs + options.crashAllAtMs;
    this.ids = Array.from({ length: options.nodeCount }, (_, index) => asPeerId(`n${index + 1}`));
    this.rates = {
      drop: this.random() * 0.1,
      duplicate: this.random() * 0.05,
      delayMaxMs: 5 + Math.floor(this.random() * 60),
      partitionPerSecond: this.random() * 0.6,
      crashPerSecond: this.random() * 0.5,
      backendResetPerSecond: this.random() * 0.15,
    };
    this.safetyEndMs = this.nowMs + options.safetyMs;
    if (options.emptyAll !== null) {
      this.disruptions = this.scheduleEmptyAll(options.emptyAll);
      this.disruptionAnchorMs = this.nowMs + options.emptyAll.atMs;
    }
    this.failureRandom = mulberry32((options.seed ^ 0x5bd1e995) >>> 0);
    this.junkRandom = mulberry32((options.seed ^ 0x6a09e667) >>> 0);
    this.pingRandom = mulberry32((options.seed ^ 0x3c6ef372) >>> 0);
    this.clockRandom = mulberry32((options.seed ^ 0x510e527f) >>> 0);
    this.suspendRandom = mulberry32((options.seed ^ 0x9b05688c) >>> 0);
    const driftPpm =
      options.readLeases === undefined || options.readLeases === null ? 0 : (options.clockDriftPpm ?? options.readLeases.clockDriftPpmMax);
    this.requestBoundMs = Math.ceil(REQUEST_BOUND_MS / (1 - driftPpm / 1_000_000));
    const everyNodeAtMs = options.storeFailures?.everyNodeAtMs ?? null;
    if (everyNodeAtMs !== null) this.everyNodeFailAnchorMs = this.nowMs + everyNodeAtMs;
    this.nodes = this.ids.map((id) => this.newNode(id));
    this.clients = Array.from({ length: options.clients }, (_, session) => ({
      busy: false, node: null, nextMs: this.nowMs, session, sessionPosition: 0,
    }));
    this.result = {
      seed: options.seed, committed: 0, repliesOk: 0, repliesRefused: 0, elections: 0, crashes: 0, transfers: 0, recordsLost: 0,
      heldEffectsLost: 0, messages: {}, startOvers: 0, startOverIndex: null, emptyAllRan: false, recoveryMs: null,
      convergedAfterHealMs: null, storeFailures: 0, storeEffectsRefused: 0, untrustedResets: 0, keptReplays: 0,
      crashesWhileUntrusted: 0, everyReplicaUntrusted: false, repliesOkAfterEveryUntrusted: 0, junkDelivered: 0, leaseReads: 0,
      powerLosses: 0, suspends: 0,
    };
    for (const node of this.nodes) this.boot(node);
  }

  /** Runs the faulty phase, then the liveness phase; throws a SimulationFailure naming the seed. */
  run(): SimResult {
    try {
      this.runUntil(this.nowMs + this.options.safetyMs);
      this.heal();
      const healedAtMs = this.nowMs;
      this.pauseClients(true);
      this.awaitConvergence();
      this.result.convergedAfterHealMs = this.nowMs - healedAtMs;
      this.strict = true;
      this.pauseClients(false);
      this.runUntil(this.nowMs + 3 * REQUEST_BOUND_MS);
      this.pauseClients(true);
      this.awaitConvergence();
      this.checkAckedWritesKept();
      this.result.committed = this.referenceIndex;
      this.result.leaseReads = this.nodes.reduce((sum, node) => sum + node.leaseReadsBefore + (node.machine?.inspect().leaseReads ?? 0), 0);
      return this.result;
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      throw new SimulationFailure(`seed ${this.options.seed} (${this.options.mode}) at ${this.nowMs}ms: ${message}`, { cause: error });
    }
  }

  /**
   * For `storeFailures.everyNodeAtMs`: the faulty phase, then the heal and `livenessMs` more, with
   * every check but convergence: once every replica is merely untrusted, none can be rebuilt and
   * none may start over, so the cluster may stay unavailable (the machine's documented choice).
   */
  stall(): SimResult {
    try {
      this.runUntil(this.nowMs + this.options.safetyMs);
      this.heal();
      this.runUntil(this.nowMs + this.options.livenessMs);
      this.result.committed = this.referenceIndex;
      return this.result;
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      throw new SimulationFailure(`seed ${this.options.seed} (${this.options.mode}) at ${this.nowMs}ms: ${message}`, { cause: error });
    }
  }

  /**
   * Failover time: a fault-free cluster serves clients, its leader is killed (and stays down);
   * returns how long until a survivor completed a write, and the longest any request waited for
   * an answer after the kill.
   */
  failover(): { failoverMs: number; longestWaitMs: number; writesAroundKill: { ok: number; refused: number } } {
    this.runUntil(this.nowMs + 2_000);
    const leader = this.nodes.find((node) => node.machine?.inspect().role === 'leader');
    if (leader === undefined) throw new SimulationFailure(`seed ${this.options.seed}: no leader to kill`);
    this.killedAtMs = this.nowMs;
    this.crash(leader);
    const endMs = this.nowMs + 10 * FAILURE_TIMEOUT_MS;
    while (this.nowMs < endMs && (this.firstWriteAfterKillMs === null || this.nowMs < this.killedAtMs + REQUEST_BOUND_MS)) {
      this.nowMs = this.nextEventMs();
      this.runDue();
    }
    if (this.firstWriteAfterKillMs === null) throw new SimulationFailure(`seed ${this.options.seed}: no write after the kill`);
    const failoverMs = this.firstWriteAfterKillMs - this.killedAtMs;
    return { failoverMs, longestWaitMs: this.longestWaitAfterKillMs, writesAroundKill: this.writesAroundKill };
  }

  private pauseClients(paused: boolean): void {
    this.clientsPaused = paused;
    for (const client of this.clients) client.nextMs = this.nowMs;
  }

  /**
   * A replica is rebuilt from a peer's, so the design survives losing one replica at a time: no
   * crash or backend reset while some node is still rebuilding (or down).
   */
  private mayLoseReplica(): boolean {
    return this.nodes.every((node) => node.machine !== null && node.machine.inspect().replicaValid && !this.distrusted(node));
  }

  /** Whether the node's replica is suspect, or its machine was told so and has not reset it yet. */
  private distrusted(node: SimNode): boolean {
    return node.trust === 'suspect' || node.trust === 'told';
  }

  // ------------------------------------------------------------ nodes

  private newNode(id: PeerId): SimNode {
    const disk = new SimWriteAhead([], () => this.nowMs, () => this.fsyncMs());
    return {
      id,
      machine: null,
      disk,
      gate: this.newGate(disk, () => undefined),
      replica: new Map(),
      replicaIndex: 0,
      nextTickMs: this.nowMs,
      nextRequestId: 1,
      requests: new Map(),
      localEvents: [],
      downUntilMs: 0,
      checkedCommit: 0,
      lastTransferIndex: 0,
      replicaLost: false,
      startOverPutPending: false,
      emptiedRecords: 0,
      trust: 'trusted',
      resetDueMs: null,
      failNext: false,
      crashAtMs: null,
      crashWhenTold: false,
      emptyPending: false,
      heldKeys: new HeldKeys(),
      clock: { originMs: this.nowMs, bootMs: this.nowMs, rate: 1 },
      leaseReadsBefore: 0,
      boot: 1,
      lostPower: false,
      booted: false,
      suspension: null,
      peersHeldUntilMs: 0,
    };
  }

  /** A new process's clock: with read leases, its own origin and its own rate within the drift drawn. */
  private newClock(): SimNode['clock'] {
    const leases = this.options.readLeases ?? null;
    if (leases === null) return { originMs: this.nowMs, bootMs: this.nowMs, rate: 1 };
    const ppm = this.options.clockDriftPpm ?? leases.clockDriftPpmMax;
    const rate = 1 + ((2 * this.clockRandom() - 1) * ppm) / 1_000_000;
    // Below 1e8: a store completion's nowMs of 0 must stay within the machine's bound on time going back.
    return { originMs: 1_000_000 + Math.floor(this.clockRandom() * 100_000_000), bootMs: this.nowMs, rate };
  }

  /** What the node's clock reads at simulated time `atMs` (0 stays 0: a store completion's). */
  private localMs(node: SimNode, atMs: number): number {
    if (atMs === 0) return 0;
    const { originMs, bootMs, rate } = node.clock;
    return originMs + Math.floor((atMs - bootMs) * rate);
  }

  private boot(node: SimNode): void {
    node.clock = this.newClock();
    node.heldKeys = new HeldKeys();
    node.machine = createReplicatedLog({
      self: node.id,
      peers: this.ids,
      random: mulberry32(Math.floor(this.random() * 2 ** 32)),
      heartbeatIntervalMs: HEARTBEAT_MS,
      failureTimeoutMs: FAILURE_TIMEOUT_MS,
      persisted: node.disk.durable.slice(),
      nowMs: this.localMs(node, this.nowMs),
      mode: this.options.mode,
      readLeases: this.options.readLeases ?? null,
      compactionThresholdEntries: this.options.compactionThresholdEntries,
      transferChunkEntriesMax: 2,
      replicaSkipsApplied: this.options.replicaSkipsApplied,
      // Without recovery (`trustAfterPowerLoss`) every boot looks the same: records are trusted.
      bootId: this.options.powerLoss === true && this.options.trustAfterPowerLoss !== true ? `boot-${node.boot}` : null,
      newNode: !node.booted,
    });
    // A restarted controller numbers its requests from 1 again; what it read back is durable.
    node.booted = true;
    node.disk = new SimWriteAhead(node.disk.durable, () => this.nowMs, () => this.fsyncMs());
    node.gate = this.newGate(node.disk, (work) => this.release(node, work));
    node.emptiedRecords = 0;
    node.nextRequestId = 1;
    node.checkedCommit = 0;
    node.nextTickMs = this.nowMs + Math.floor(this.random() * TICK_MS);
    node.localEvents = [];
    if (node.replicaLost) {
      // The controller notices an emptied backend (its epoch changed) and says so.
      node.replicaLost = false;
      this.stepNode(node, { kind: 'backend_reset', nowMs: this.nowMs, emptied: true });
    }
  }

  private crash(node: SimNode, keepReplica = false): void {
    node.leaseReadsBefore += node.machine?.inspect().leaseReads ?? 0;
    node.machine = null;
    // What was not durable is lost, and so is every effect that waited for it.
    this.result.recordsLost += node.gate.stats(this.nowMs).recordsWaiting;
    this.result.heldEffectsLost += node.gate.waitingCount();
    if (node.gate.position().durable < node.emptiedRecords) node.replicaLost = true;
    node.gate.close();
    if (node.emptyPending) {
      node.emptyPending = false;
      this.emptyNow(node);
      node.replicaLost = true;
    }
    this.result.crashes += 1;
    for (const request of node.requests.values()) itemAt(this.clients, request.client).busy = false;
    for (const client of this.clients) {
      if (client.node !== node.id) continue;
      // The connection broke: a new session starts elsewhere.
      client.node = null;
      client.sessionPosition = 0;
    }
    node.requests.clear();
    // An emptied backend the machine was not told of yet (it slept): told at boot.
    if (node.localEvents.some(({ event }) => event.kind === 'backend_reset' && event.emptied)) node.replicaLost = true;
    node.localEvents = [];
    node.suspension = null;
    node.peersHeldUntilMs = 0;
    node.downUntilMs = this.nowMs + 100 + Math.floor(this.random() * 1500);
    if (this.distrusted(node)) this.result.crashesWhileUntrusted += 1;
    if (this.options.powerLoss === true && !keepReplica && this.random() < 0.5 && this.nodes.every((other) => !other.lostPower)) {
      this.losePower(node);
    } else if (!keepReplica && this.random() < 0.4) {
      node.replica.clear();
      node.replicaIndex = 0;
      node.replicaLost = true;
      node.trust = 'trusted';
    }
    // The new controller process trusts its backend again: the failure is forgotten.
    node.resetDueMs = null;
    node.crashAtMs = null;
    node.crashWhenTold = false;
    if (this.distrusted(node)) node.trust = 'restarted';
  }

  /**
   * The machine lost power (`powerLoss`): the records written since the last compaction are cut at
   * a random point, the replica is empty, and the node boots in a new boot.
   */
  private losePower(node: SimNode): void {
    const durable = node.disk.durable;
    const synced = durable.length > 0 && (durable[0] as { kind?: unknown }).kind === 'snapshot' ? 1 : 0;
    const kept = synced + Math.floor(this.random() * (durable.length - synced + 1));
    this.result.recordsLost += durable.length - kept;
    node.disk.durable = durable.slice(0, kept);
    node.boot += 1;
    node.lostPower = true;
    node.replica.clear();
    node.replicaIndex = 0;
    node.replicaLost = true;
    node.trust = 'trusted';
    this.result.powerLosses += 1;
  }

  // ------------------------------------------------------------ main loop

  private runUntil(endMs: number): void {
    while (this.nowMs < endMs) {
      this.nowMs = Math.min(endMs, this.nextEventMs());
      this.runDue();
    }
  }

  private nextEventMs(): number {
    let next = this.nowMs + TICK_MS;
    for (const flight of this.flights) next = Math.min(next, flight.atMs);
    for (const node of this.nodes) {
      if (node.suspension !== null) {
        next = Math.min(next, node.suspension.untilMs);
        continue;
      }
      next = Math.min(next, node.machine === null ? node.downUntilMs : node.nextTickMs);
      const diskDueMs = node.disk.dueMs();
      if (diskDueMs !== null) next = Math.min(next, diskDueMs);
      if (node.resetDueMs !== null) next = Math.min(next, node.resetDueMs);
      if (node.crashAtMs !== null) next = Math.min(next, node.crashAtMs);
      for (const local of node.localEvents) next = Math.min(next, local.atMs);
    }
    if (!this.clientsPaused) for (const client of this.clients) if (!client.busy) next = Math.min(next, client.nextMs);
    return Math.max(next, this.nowMs + 1);
  }

  private runDue(): void {
    if (this.faultsOn) this.injectFaults();
    if (this.crashAllAtMs !== null && this.nowMs >= this.crashAllAtMs) {
      this.crashAllAtMs = null;
      for (const node of this.nodes) if (node.machine !== null) this.crash(node, true);
    }
    this.disrupt();
    this.armEveryNodeFailure();
    this.deliverMessages();
    for (const node of this.nodes) this.runNode(node);
    this.submitRequests();
    // The end of the turn: as the controller does, let every node send what it batched.
    for (const node of this.nodes) this.stepNode(node, { kind: 'flush', nowMs: this.nowMs });
    for (const node of this.nodes) this.settle(node);
    this.crashExposed();
    this.crashAfterFailure();
    this.checkInvariants();
    this.noteEveryReplicaUntrusted();
  }

  private runNode(node: SimNode): void {
    if (node.machine === null) {
      // With `emptyAll`, a node crashed around the emptying comes back even in a run without faults.
      const mayBoot = this.faultsOn || this.healed || this.options.emptyAll !== null || this.options.storeFailures !== null;
      if (node.downUntilMs <= this.nowMs && mayBoot) this.boot(node);
      return;
    }
    if (node.suspension !== null) {
      if (node.suspension.untilMs > this.nowMs) return;
      this.resume(node, node.suspension.sinceMs);
    }
    node.disk.completeDue(this.nowMs);
    if (node.resetDueMs !== null && node.resetDueMs <= this.nowMs) this.tellUntrusted(node);
    const due = node.localEvents.filter((local) => local.atMs <= this.nowMs);
    if (due.length > 0) node.localEvents = node.localEvents.filter((local) => local.atMs > this.nowMs);
    for (const local of due) this.stepNode(node, local.event);
    if (node.nextTickMs <= this.nowMs && node.machine !== null) {
      node.nextTickMs = this.nowMs + TICK_MS;
      const peersUp = this.ids.filter((id) => id !== node.id);
      this.stepNode(node, { kind: 'tick', nowMs: this.nowMs, peersUp });
    }
  }

  private deliverMessages(): void {
    const due = this.flights.filter((flight) => flight.atMs <= this.nowMs);
    if (due.length === 0) return;
    this.flights = this.flights.filter((flight) => flight.atMs > this.nowMs);
    for (const flight of due) {
      const node = this.node(flight.to);
      if (flight.atMs < node.peersHeldUntilMs) {
        // Its links are still asleep (see suspend).
        this.flights.push({ ...flight, atMs: node.peersHeldUntilMs });
        continue;
      }
      if (node.machine === null || this.cut.has(`${flight.from}>${flight.to}`)) continue;
      if (flight.junk === true) {
        this.deliverJunk(node, flight);
        continue;
      }
      if (flight.message.kind === 'transfer_chunk') node.lastTransferIndex = flight.message.index;
      this.stepNode(node, { kind: 'message', nowMs: this.nowMs, from: flight.from, message: flight.message });
    }
  }

  /** A malformed message: dropped, counted, nothing else but a note. */
  private deliverJunk(node: SimNode, flight: Flight): void {
    const machine = node.machine;
    if (machine === null) return;
    const before = machine.status().invalidPeerMessages;
    const effects = machine.step({ kind: 'message', nowMs: this.localMs(node, this.nowMs), from: flight.from, message: flight.message });
    if (machine.status().invalidPeerMessages !== before + 1) throw new Error(`${node.id} did not count a malformed message`);
    const others = effects.filter((effect) => effect.kind !== 'note');
    if (others.length > 0) throw new Error(`${node.id} acted on a malformed message: ${others.map((effect) => effect.kind).join(', ')}`);
    this.result.junkDelivered += 1;
  }

  private stepNode(node: SimNode, event: Event<LogMessage>): void {
    const machine = node.machine;
    if (machine === null) return;
    if (node.suspension !== null) {
      // Due now, so taken on waking (whose turn ends with a flush of its own).
      if (event.kind !== 'flush') node.localEvents.push({ atMs: this.nowMs, event });
      return;
    }
    const wasLeader = machine.inspect().role === 'leader';
    const effects = machine.step({ ...event, nowMs: this.localMs(node, event.nowMs) });
    if (!wasLeader && machine.inspect().role === 'leader') this.result.elections += 1;
    for (const effect of effects) this.carryOut(node, effect);
    // Recovered once its machine says so and what it recovered is written.
    if (node.lostPower && !machine.inspect().recovering && node.gate.stats(this.nowMs).recordsWaiting === 0) node.lostPower = false;
  }

  // ------------------------------------------------------------ effects

  /**
   * As the controller does: a record goes to the gate; any other effect runs at once unless a
   * record not yet durable, or an effect already held, precedes it: then it waits, in order.
   */
  private carryOut(node: SimNode, effect: Effect<LogMessage>): void {
    if (effect.kind === 'persist') {
      node.gate.append([{ record: effect.record, compact: effect.compact }]);
      return;
    }
    // A start-over's put (issued right after this note) installs the state at the snapshot index.
    const startOverIndex = this.startOverIndexOf(effect);
    if (startOverIndex !== null) node.lastTransferIndex = startOverIndex;
    if (effect.kind === 'send' && effect.beforeDurable === true) return this.execute(node, effect, node.lastTransferIndex);
    // As the controller does: a read that needs only its keys' applies runs at once if none is held.
    if (effect.kind === 'read' && effect.keysOnly === true && !node.heldKeys.touches(readKeys(effect.op))) {
      return this.execute(node, effect, node.lastTransferIndex);
    }
    const keys = changedKeys(effect);
    if (keys !== undefined) node.heldKeys.hold(keys);
    node.gate.whenDurable(node.gate.latest(), { effect, transferIndex: node.lastTransferIndex, keys });
  }

  /** The end of a turn: what a node wrote goes out as one batch (unless one is on its way). */
  private settle(node: SimNode): void {
    if (node.machine !== null && node.suspension === null) node.gate.writeAppended();
  }

  /** Runs `step` once everything the node issued so far ran (at once when nothing waits). */
  private afterIssued(node: SimNode, step: () => void): void {
    node.gate.whenDurable(node.gate.latest(), step);
  }

  private newGate(disk: SimWriteAhead, release: (work: HeldWork) => void): DurabilityGate<HeldWork> {
    return new DurabilityGate<HeldWork>({
      writeAhead: disk,
      sync: 'fsync',
      release,
      failed: (error) => {
        throw error;
      },
    });
  }

  private release(node: SimNode, work: HeldWork): void {
    if (node.machine === null) return;
    if (typeof work === 'function') return work();
    if (work.keys !== undefined) node.heldKeys.release(work.keys);
    this.execute(node, work.effect, work.transferIndex);
  }

  /** How long the next batch takes to become durable (1–3 ms). */
  private fsyncMs(): number {
    return FSYNC_MIN_MS + Math.floor(this.random() * (FSYNC_MAX_MS - FSYNC_MIN_MS + 1));
  }

  /** Carries out an effect that left the process: the model replica and network see it now. */
  private execute(node: SimNode, effect: OutwardEffect, transferIndex: number): void {
    this.checkClaim(node, effect);
    if (isStoreEffect(effect) && !this.storeAccepts(node, effect)) return;
    switch (effect.kind) {
      case 'send':
        return this.transmit(node.id, effect.to, effect.message);
      case 'reply':
        return this.complete(node, effect.requestId, effect.reply, this.storedAt(node, effect.requestId, effect.reply));
      case 'apply':
        return this.onApply(node, effect);
      case 'read':
        return this.onRead(node, effect.requestId, effect.op);
      case 'reset':
        node.replica.clear();
        node.replicaIndex = 0;
        return;
      case 'put':
        for (const [key, entry] of effect.entries) node.replica.set(key, entry);
        node.replicaIndex = transferIndex;
        if (node.startOverPutPending) node.startOverPutPending = false;
        else this.result.transfers += 1;
        // As the controller does once the backend took it: tell the machine (it then trusts the replica).
        if (effect.token !== null) this.afterStore(node, { kind: 'applied', nowMs: 0, token: effect.token });
        return;
      case 'fetch':
        return this.afterStore(node, { kind: 'fetched', nowMs: 0, token: effect.token, entries: [...node.replica.entries()] });
      case 'purge':
        throw new Error('the replicated log never purges');
      case 'wake':
        throw new Error('the replicated log never asks for a wake-up');
      case 'note':
        return this.onNote(node, effect);
      default: {
        const never: never = effect;
        throw new Error(`unknown effect ${JSON.stringify(never)}`);
      }
    }
  }

  // ------------------------------------------------------------ failed store effects

  /**
   * What the controller's replica does with a store effect after a failure: a suspect replica
   * refuses it; a told one must not be asked (that would serve from an untrusted replica); a reset
   * trusts it again. Otherwise an apply, put or fetch may fail now. True: carry it out as usual.
   */
  private storeAccepts(node: SimNode, effect: StoreEffect): boolean {
    if (node.trust === 'suspect') {
      this.refuseStoreEffect(node, effect);
      return false;
    }
    if (effect.kind === 'reset') {
      node.trust = 'trusted';
      return true;
    }
    if (node.trust === 'told') throw new Error(`${node.id} runs ${effect.kind} on its replica after being told it missed a write, before resetting it`);
    if ((effect.kind !== 'apply' && effect.kind !== 'put' && effect.kind !== 'fetch') || !this.storeFails(node)) return true;
    this.failStoreEffect(node, effect);
    return false;
  }

  /**
   * Whether this apply, put or fetch fails: the next one after `everyNodeAtMs` armed it, or, in the
   * faulty phase on a chosen node, at the rate, while another node could rebuild it.
   */
  private storeFails(node: SimNode): boolean {
    const failures = this.options.storeFailures;
    if (failures === null) return false;
    if (node.failNext) {
      node.failNext = false;
      return true;
    }
    if (this.healed || !failures.nodes.includes(this.nodes.indexOf(node))) return false;
    if (this.failureRandom() >= failures.rate) return false;
    return this.nodes.some((other) => other !== node && this.canRebuildOthers(other));
  }

  /**
   * Whether a node could serve the others a transfer: it runs a valid replica that is not
   * distrusted, applied as far as every running node's snapshot. (A valid replica that lags
   * behind a snapshot holds nothing to rebuild from; if it were the only valid one, every replica
   * holding data would be merely untrusted, and the cluster waits by design.)
   */
  private canRebuildOthers(node: SimNode): boolean {
    const view = node.machine?.inspect();
    if (view === undefined || !view.replicaValid || this.distrusted(node)) return false;
    return this.nodes.every((other) => view.appliedIndex >= (other.machine?.inspect().snapshotIndex ?? 0));
  }

  /**
   * The backend failed mid-write: the apply took effect or not, each of a put's entries was
   * written or not (no known state then), a fetch answers nothing. The replica is suspect until
   * the machine is told, 1–50 ms later; a client waiting on the apply gets SERVER_ERROR.
   */
  private failStoreEffect(node: SimNode, effect: Extract<StoreEffect, { kind: 'apply' | 'put' | 'fetch' }>): void {
    this.result.storeFailures += 1;
    node.trust = 'suspect';
    node.resetDueMs = this.nowMs + 1 + Math.floor(this.failureRandom() * UNTRUSTED_RESET_DELAY_MAX_MS);
    if (this.failureRandom() < (this.options.storeFailures?.crashChance ?? 0)) {
      if (this.failureRandom() < 0.5) node.crashWhenTold = true;
      else node.crashAtMs = this.nowMs + Math.floor(this.failureRandom() * (node.resetDueMs - this.nowMs));
    }
    switch (effect.kind) {
      case 'apply':
        if (this.failureRandom() < 0.5) this.onApply(node, { ...effect, requestId: null });
        else this.learnUnapplied(node, effect);
        if (effect.requestId !== null) this.complete(node, effect.requestId, BACKEND_FAILED, null);
        return;
      case 'put':
        for (const [key, entry] of effect.entries) if (this.failureRandom() < 0.5) node.replica.set(key, entry);
        // Some entries over a replica reset for them or not: no state the simulator can name.
        node.replicaIndex = null;
        node.startOverPutPending = false;
        return;
      case 'fetch':
        return;
      default: {
        const never: never = effect;
        throw new Error(`unknown store effect ${JSON.stringify(never)}`);
      }
    }
  }

  /** A failed apply that did not take effect: the replica stays where it was; the op is still known. */
  private learnUnapplied(node: SimNode, effect: Extract<StoreEffect, { kind: 'apply' }>): void {
    const index = Number(effect.cas);
    const previous = node.replicaIndex;
    if (previous === null) throw new Error(`${node.id} applies ${index} onto an unknown replica`);
    // As in onApply: applies run in index order, so what lies between is no-ops.
    for (let gap = previous + 1; gap < index; gap += 1) this.learn(gap, null, 0, node.id);
    this.learn(index, effect.op, effect.nowMs, node.id);
  }

  /** A suspect replica refuses every call (src/store/replica.ts): replies are SERVER_ERROR, completions never come. */
  private refuseStoreEffect(node: SimNode, effect: StoreEffect): void {
    this.result.storeEffectsRefused += 1;
    switch (effect.kind) {
      case 'apply':
        // Committed all the same: what sits at its index is known.
        this.learn(Number(effect.cas), effect.op, effect.nowMs, node.id);
        if (effect.requestId !== null) this.complete(node, effect.requestId, BACKEND_REFUSED, null);
        return;
      case 'read':
        return this.complete(node, effect.requestId, BACKEND_REFUSED, null);
      case 'put':
        node.startOverPutPending = false;
        return;
      case 'fetch':
      case 'purge':
      case 'reset':
        return;
      default: {
        const never: never = effect;
        throw new Error(`unknown store effect ${JSON.stringify(never)}`);
      }
    }
  }

  /**
   * The controller's health poll finds the backend answering and tells the machine (as its
   * `runQueued` does): step the reset; once what was issued before it ran (refused: the replica
   * is suspect), trust the replica again; then the machine's answer.
   */
  private tellUntrusted(node: SimNode): void {
    node.resetDueMs = null;
    const machine = node.machine;
    if (machine === null) return;
    this.result.untrustedResets += 1;
    const kept = this.options.storeFailures?.kept === true && node.replicaIndex !== null;
    const effects = machine.step({ kind: 'backend_reset', nowMs: this.localMs(node, this.nowMs), emptied: false, kept });
    // A replay onto the kept replica (still valid, nothing emptied): trusted again at once.
    const replays = kept && machine.inspect().replicaValid && !effects.some((effect) => effect.kind === 'reset');
    this.afterIssued(node, () => {
      node.trust = replays ? 'trusted' : 'told';
    });
    if (replays) this.result.keptReplays += 1;
    for (const effect of effects) this.carryOut(node, effect);
  }

  /** The backend restarted empty: the controller's reset says so (emptied), superseding a failure's. */
  private forgetStoreFailure(node: SimNode): void {
    node.trust = 'trusted';
    node.resetDueMs = null;
  }

  /** `everyNodeAtMs`: once due, every node compacted and the cluster healthy, every node's next store effect fails. */
  private armEveryNodeFailure(): void {
    const anchorMs = this.everyNodeFailAnchorMs;
    if (anchorMs === null || this.nowMs < anchorMs || this.healed || !this.healthy()) return;
    if (this.nodes.some((node) => node.trust !== 'trusted' || (node.machine?.inspect().snapshotIndex ?? 0) === 0)) return;
    this.everyNodeFailAnchorMs = null;
    for (const node of this.nodes) node.failNext = true;
  }

  /**
   * `crashChance`: the failing node's controller crashes while its replica is suspect, or at the
   * end of the turn in which its machine was told (what it wrote in answer maybe not durable).
   */
  private crashAfterFailure(): void {
    for (const node of this.nodes) {
      const due = (node.crashAtMs !== null && node.crashAtMs <= this.nowMs) || (node.crashWhenTold && node.trust === 'told');
      if (!due || node.machine === null) continue;
      this.crash(node);
    }
  }

  /** Notes the first moment every machine was told its replica missed a write and none is valid. */
  private noteEveryReplicaUntrusted(): void {
    if (this.everyUntrustedAtMs !== null || !this.nodes.every((node) => node.trust === 'told')) return;
    if (this.nodes.some((node) => node.machine === null || node.machine.inspect().replicaValid)) return;
    this.everyUntrustedAtMs = this.nowMs;
    this.result.everyReplicaUntrusted = true;
  }

  /** A store operation's completion reaches the machine as an event 1–5 ms later. */
  private afterStore(node: SimNode, event: Event<LogMessage>): void {
    node.localEvents.push({ atMs: this.nowMs + 1 + Math.floor(this.random() * 5), event });
  }

  private transmit(from: PeerId, to: PeerId, message: LogMessage): void {
    this.result.messages[message.kind] = (this.result.messages[message.kind] ?? 0) + 1;
    const random = message.kind === 'ping' || message.kind === 'pong' ? this.pingRandom : this.random;
    const copies = random() < this.rates.drop ? 0 : random() < this.rates.duplicate ? 2 : 1;
    for (let copy = 0; copy < copies; copy += 1) {
      const slow = random() < 0.05 ? 4 : 1;
      this.flights.push({ atMs: this.nowMs + 1 + Math.floor(random() * this.rates.delayMaxMs * slow), from, to, message });
    }
    if (this.junkRandom() < (this.options.junkRate ?? 0)) {
      const junk = certainlyInvalid(message as unknown as Record<string, unknown>, this.junkRandom, ['term']) as LogMessage;
      const atMs = this.nowMs + 1 + Math.floor(this.junkRandom() * this.rates.delayMaxMs);
      this.flights.push({ atMs, from, to, message: junk, junk: true });
    }
  }

  private onApply(node: SimNode, effect: Extract<Effect<LogMessage>, { kind: 'apply' }>): void {
    const index = Number(effect.cas);
    const previous = node.replicaIndex;
    if (previous === null) throw new Error(`${node.id} applies ${index} onto an unknown replica`);
    if (index <= previous) return this.onReplay(node, effect);
    for (let gap = previous + 1; gap < index; gap += 1) this.learn(gap, null, 0, node.id);
    this.learn(index, effect.op, effect.nowMs, node.id);
    const op = effect.op as SingleKeyOp;
    const current = node.replica.get(op.key);
    if (this.options.replicaSkipsApplied && current !== undefined && current.cas >= effect.cas) {
      throw new Error(`${node.id} applies ${index} to ${op.key} which already holds cas ${current.cas}`);
    }
    const outcome = applyToEntry(current, op, { cas: effect.cas, nowMs: effect.nowMs });
    if (outcome.write === null) node.replica.delete(op.key);
    else if (outcome.write !== undefined) node.replica.set(op.key, outcome.write);
    node.replicaIndex = index;
    this.advanceReference(index);
    const expected = this.referenceReplies[index];
    if (opKey(expected as unknown as Op) !== opKey(outcome.reply as unknown as Op)) {
      throw new Error(`${node.id} replica diverged at ${index}: ${opKey(outcome.reply as unknown as Op)} vs ${opKey(expected as unknown as Op)}`);
    }
    if (effect.requestId !== null) this.complete(node, effect.requestId, outcome.reply, index);
  }

  /**
   * An apply at or below what the replica already holds: only a restarted node replaying its log
   * onto the replica it kept may do that, and only with skipping replicas (idempotent replay).
   */
  private onReplay(node: SimNode, effect: Extract<Effect<LogMessage>, { kind: 'apply' }>): void {
    const index = Number(effect.cas);
    if (!this.options.replicaSkipsApplied) throw new Error(`${node.id} applies ${index} after ${node.replicaIndex}`);
    if (effect.requestId !== null) throw new Error(`${node.id} replays ${index} with a client waiting`);
    this.learn(index, effect.op, effect.nowMs, node.id);
    const op = effect.op as SingleKeyOp;
    const current = node.replica.get(op.key);
    if (current !== undefined && current.cas >= effect.cas) return;
    const outcome = applyToEntry(current, op, { cas: effect.cas, nowMs: effect.nowMs });
    if (outcome.write === null) node.replica.delete(op.key);
    else if (outcome.write !== undefined) node.replica.set(op.key, outcome.write);
  }

  /**
   * Where a write answered without an apply here took effect: a node answers `stored` so only for
   * a write a state transfer holds, naming its entry's index as the cas. That entry must be this
   * very write. Null for any other reply (a refusal).
   */
  private storedAt(node: SimNode, requestId: RequestId, reply: Reply): number | null {
    if (reply.kind !== 'stored') return null;
    const request = node.requests.get(requestId);
    const index = Number(reply.cas ?? 0n);
    const known = this.sequence[index];
    if (request === undefined || known === undefined || known.op === null || opKey(known.op) !== opKey(request.op)) {
      throw new Error(`${node.id} answered stored at ${index} for a request whose write is not there`);
    }
    this.advanceReference(index);
    if (this.referenceReplies[index]?.kind !== 'stored') throw new Error(`${node.id} answered stored at ${index}, where the write did not store`);
    return index;
  }

  /** Records what sits at `index` of the applied sequence; every node must agree. */
  private learn(index: number, op: Op | null, nowMs: number, by: PeerId): void {
    const known = this.sequence[index];
    if (known === undefined) {
      this.sequence[index] = { op, nowMs };
      if (op === null) return;
      const earlier = this.indexOfOp.get(op);
      if (earlier !== undefined && earlier !== index) throw new Error(`${by} applies at ${index} the client op already at ${earlier}: ${opKey(op)}`);
      this.indexOfOp.set(op, index);
      return;
    }
    if (known.op !== op && (known.op === null || op === null || opKey(known.op) !== opKey(op))) {
      throw new Error(`${by} disagrees at index ${index}: ${op === null ? 'no-op' : opKey(op)} vs ${known.op === null ? 'no-op' : opKey(known.op)}`);
    }
  }

  private advanceReference(toIndex: number): void {
    while (this.referenceIndex < toIndex) {
      const next = this.sequence[this.referenceIndex + 1];
      // Unseen below an applied or transferred position: nobody applied it, so it is a no-op.
      if (next === undefined) {
        this.sequence[this.referenceIndex + 1] = { op: null, nowMs: 0 };
        continue;
      }
      this.referenceIndex += 1;
      if (next.op === null) continue;
      const op = next.op as SingleKeyOp;
      const outcome = applyToEntry(this.reference.get(op.key), op, { cas: BigInt(this.referenceIndex), nowMs: next.nowMs });
      if (outcome.write === null) this.reference.delete(op.key);
      else if (outcome.write !== undefined) this.reference.set(op.key, outcome.write);
      this.referenceReplies[this.referenceIndex] = outcome.reply;
      const changes = this.history.get(op.key) ?? [];
      changes.push({ index: this.referenceIndex, entry: this.reference.get(op.key) });
      this.history.set(op.key, changes);
    }
  }

  /**
   * Whether every index in (from, to] is a no-op, so the states at `from` and `to` are the same:
   * a replica's position is its last apply, and a new leader's no-op is never applied.
   */
  private onlyNoOpsAfter(from: number, to: number): boolean {
    this.advanceReference(to);
    for (let index = from + 1; index <= to; index += 1) if (this.sequence[index]?.op !== null) return false;
    return true;
  }

  /**
   * Whether an op served at `from` reflects the state at `to` as well. With read leases a
   * linearizable read waits only for its own key's entries, and per key is exactly
   * linearizability (it is local: Herlihy and Wing), so a get needs only its key unchanged;
   * otherwise the whole state must be (the read index serves a state at least as new as every
   * completed op).
   */
  private unchangedAfter(op: Op, from: number, to: number): boolean {
    if ((this.options.readLeases ?? null) === null || op.kind !== 'get') return this.onlyNoOpsAfter(from, to);
    this.advanceReference(to);
    for (let index = from + 1; index <= to; index += 1) {
      const other = this.sequence[index]?.op ?? null;
      if (other === null) continue;
      const keys = opKeys(other);
      if (keys === null || keys.some((key) => op.keys.includes(key))) return false;
    }
    return true;
  }

  private valueAt(key: string, index: number): string | null {
    const changes = this.history.get(key) ?? [];
    for (let at = changes.length - 1; at >= 0; at -= 1) {
      const change = itemAt(changes, at);
      if (change.index <= index) {
        const entry = change.entry;
        return isLive(entry, 0) ? entry.value.toString() : null;
      }
    }
    return null;
  }

  private onRead(node: SimNode, requestId: RequestId, op: Op): void {
    if (op.kind !== 'get') throw new Error(`read effect for ${op.kind}`);
    const position = node.replicaIndex;
    if (position === null) throw new Error(`${node.id} reads from an unknown replica`);
    this.advanceReference(position);
    const key = itemAt(op.keys, 0);
    const entry = node.replica.get(key);
    const value = isLive(entry, 0) ? entry.value.toString() : null;
    if (value !== this.valueAt(key, position)) throw new Error(`${node.id} read ${key}=${value} at ${position}, reference differs`);
    const reply: Reply = { kind: 'values', items: entry === undefined || value === null ? [] : [{ key, flags: entry.flags, value: entry.value, cas: entry.cas }] };
    this.complete(node, requestId, reply, position);
  }

  // ------------------------------------------------------------ clients

  private submitRequests(): void {
    if (this.clientsPaused) return;
    for (const client of this.clients) {
      if (client.busy || client.nextMs > this.nowMs) continue;
      const live = this.nodes.filter((node) => node.machine !== null && node.suspension === null);
      if (live.length === 0) continue;
      const sticky = this.options.mode === 'sequential' ? live.find((node) => node.id === client.node) : undefined;
      const node = sticky ?? itemAt(live, Math.floor(this.random() * live.length));
      if (this.options.mode === 'sequential') client.node = node.id;
      const op = this.randomOp();
      const requestId = asRequestId(node.nextRequestId++);
      const lowerBound = this.options.mode === 'linearizability' ? this.completedPosition : client.sessionPosition;
      node.requests.set(requestId, { client: client.session, op, invokedMs: this.nowMs, lowerBound });
      client.busy = true;
      this.stepNode(node, { kind: 'request', nowMs: this.nowMs, requestId, session: client.session, op });
    }
  }

  private randomOp(): Op {
    const key = itemAt(KEYS, Math.floor(this.random() * KEYS.length));
    const roll = this.random();
    if (roll < 0.4) return { kind: 'get', keys: [key] };
    if (roll < 0.6) {
      const value = Buffer.from(String(Math.floor(this.random() * 1000)));
      return { kind: 'store', verb: 'set', key, flags: 0, expiresAtMs: 0, value, casUnique: 0n };
    }
    if (roll < 0.75) return { kind: 'arith', verb: 'incr', key, delta: 1n, initial: null, expiresAtMs: 0 };
    if (roll < 0.85) return { kind: 'store', verb: 'append', key, flags: 0, expiresAtMs: 0, value: Buffer.from('7'), casUnique: 0n };
    if (roll < 0.93) return { kind: 'delete', key };
    return { kind: 'store', verb: 'add', key, flags: 0, expiresAtMs: 0, value: Buffer.from('1'), casUnique: 0n };
  }

  /** A reply reached the client; `position` is where the op took effect (null for refusals). */
  private complete(node: SimNode, requestId: RequestId, reply: Reply, position: number | null): void {
    const request = node.requests.get(requestId);
    if (request === undefined) throw new Error(`${node.id} answered unknown or already answered request ${requestId}`);
    node.requests.delete(requestId);
    if (this.killedAtMs !== null && request.invokedMs <= this.killedAtMs + FAILURE_TIMEOUT_MS) {
      this.longestWaitAfterKillMs = Math.max(this.longestWaitAfterKillMs, this.nowMs - Math.max(request.invokedMs, this.killedAtMs));
      if (request.op.kind !== 'get') this.writesAroundKill[reply.kind === 'refused' ? 'refused' : 'ok'] += 1;
    }
    if (this.killedAtMs !== null && this.firstWriteAfterKillMs === null && position !== null && request.op.kind !== 'get') {
      this.firstWriteAfterKillMs = this.nowMs;
    }
    const client = itemAt(this.clients, request.client);
    client.busy = false;
    client.nextMs = this.nowMs + Math.floor(this.random() * 30);
    if (reply.kind === 'refused') {
      if (position !== null) throw new Error(`an applied op was refused: ${refusalText(reply)}`);
      if (this.strict) throw new Error(`${node.id} refused after the cluster converged: ${refusalText(reply)} ${this.describe()}`);
      this.result.repliesRefused += 1;
      return;
    }
    if (position === null) throw new Error(`${node.id} answered ${reply.kind} without applying or reading`);
    if (position < request.lowerBound && !this.unchangedAfter(request.op, position, request.lowerBound)) {
      throw new Error(`${node.id} served ${opKey(request.op)} at ${position}, older than ${request.lowerBound} which completed before it started`);
    }
    this.result.repliesOk += 1;
    if (this.everyUntrustedAtMs !== null) this.result.repliesOkAfterEveryUntrusted += 1;
    if (request.op.kind !== 'get') this.onWriteAcked(request, position);
    this.completedPosition = Math.max(this.completedPosition, position);
    client.sessionPosition = Math.max(client.sessionPosition, position);
  }

  // ------------------------------------------------------------ every replica lost

  /** Draws when (after the anchor) each node's backend restarts empty and which node crashes. */
  private scheduleEmptyAll(emptyAll: EmptyAllOptions): Disruption[] {
    const draw = (spanMs: number): number => Math.floor(this.random() * (spanMs + 1));
    const schedule: Disruption[] = this.ids.map((_, node) => ({ atMs: EMPTY_ALL_LEAD_MS + draw(emptyAll.windowMs), kind: 'empty', node }));
    if (emptyAll.crash !== 'none') {
      const victim = itemAt(schedule, Math.floor(this.random() * schedule.length));
      const offsetMs = 1 + draw(EMPTY_ALL_LEAD_MS - 1);
      schedule.push({ atMs: victim.atMs + (emptyAll.crash === 'before' ? -offsetMs : offsetMs), kind: 'crash', node: victim.node });
    }
    return schedule.sort((a, b) => a.atMs - b.atMs);
  }

  /** Whether no node needs anything but log entries: all up, valid, caught up, no log behind a snapshot. */
  private healthy(): boolean {
    const views = this.nodes.map((node) => node.machine?.inspect() ?? null);
    if (views.some((view) => view === null || !view.replicaValid || !view.caughtUp)) return false;
    const present = views.filter((view): view is LogView => view !== null);
    return Math.min(...present.map((view) => view.lastIndex)) >= Math.max(...present.map((view) => view.snapshotIndex));
  }

  /**
   * Anchors the schedule once due (in the faulty phase, with room for all of it before the
   * liveness phase; else never); runs the emptyings and crashes due; notes when all ran and all are up.
   */
  private disrupt(): void {
    const anchorMs = this.disruptionAnchorMs;
    if (anchorMs !== null) {
      if (this.nowMs < anchorMs || (this.options.emptyAll?.whenHealthy === true && !this.healthy())) return;
      const lastMs = Math.max(...this.disruptions.map((disruption) => disruption.atMs));
      if (this.healed || this.nowMs + lastMs + EMPTY_ALL_LEAD_MS > this.safetyEndMs) return;
      this.disruptionAnchorMs = null;
      for (const disruption of this.disruptions) disruption.atMs += this.nowMs;
    }
    while (this.disruptions.length > 0 && itemAt(this.disruptions, 0).atMs <= this.nowMs) {
      const next = this.disruptions.shift();
      if (next === undefined) break;
      const node = itemAt(this.nodes, next.node);
      if (next.kind === 'empty') this.emptyReplica(node);
      else if (node.machine !== null) this.crash(node);
    }
    const allUp = this.nodes.every((node) => node.machine !== null);
    if (this.options.emptyAll !== null && this.disruptions.length === 0 && this.disruptionEndMs === null && allUp) {
      this.disruptionEndMs = this.nowMs;
      this.result.emptyAllRan = true;
    }
  }

  /** The node's memcached restarted empty: its controller tells the machine (at boot if down). */
  private emptyReplica(node: SimNode): void {
    if (node.machine === null) {
      this.emptyNow(node);
      node.replicaLost = true;
      return;
    }
    this.emptyOnceIssued(node, () => {
      this.stepNode(node, { kind: 'backend_reset', nowMs: this.nowMs, emptied: true });
      node.emptiedRecords = node.gate.position().appended;
    });
  }

  /**
   * The node's memcached restarts empty and `tell` tells the machine at once; the replica is
   * emptied once everything issued before that has reached it, before anything the machine issues
   * from then on (in mckv, the epoch fence refuses calls between the restart and the reset). A
   * crash meanwhile leaves the replica emptied, told at boot.
   */
  private emptyOnceIssued(node: SimNode, tell: () => void): void {
    node.emptyPending = true;
    this.afterIssued(node, () => {
      node.emptyPending = false;
      this.emptyNow(node);
    });
    tell();
  }

  private emptyNow(node: SimNode): void {
    node.replica.clear();
    node.replicaIndex = 0;
    this.forgetStoreFailure(node);
  }

  /**
   * Whether a node counts on its replica: a running node whose machine holds it valid, or a
   * stopped one whose durable records leave it trusted (its next start replays onto it).
   */
  private reliesOnReplica(node: SimNode): boolean {
    if (node.machine !== null) return node.machine.inspect().replicaValid;
    const records = node.disk.durable;
    for (let at = records.length - 1; at >= 0; at -= 1) {
      const record = records[at] as { kind: string; trusted?: boolean; replicaTrusted?: boolean };
      if (record.kind === 'replica') return record.trusted === true;
      if (record.kind === 'snapshot') return record.replicaTrusted === true;
    }
    return true;
  }

  /** The snapshot index a start-over note announces (null for any other effect). */
  private startOverIndexOf(effect: Effect<LogMessage>): number | null {
    if (effect.kind !== 'note' || !effect.message.includes('starting over')) return null;
    const index = effect.meta.snapshotIndex;
    if (typeof index !== 'number') throw new Error(`a start-over note without a snapshot index: ${JSON.stringify(effect.meta)}`);
    return index;
  }

  /**
   * A leader starts over: no replica its node relies on may hold a state it could have been
   * rebuilt from (one as of the snapshot index or later: it would be thrown away), and from here
   * the reference is an empty state at the snapshot index. Not counted: a replica behind the
   * snapshot (the entries between it and the snapshot are compacted away everywhere, so it could
   * not be brought up to it), and one its node does not trust (reset before it is rebuilt anyway).
   */
  private onNote(node: SimNode, effect: Extract<Effect<LogMessage>, { kind: 'note' }>): void {
    if (process.env.SIM_TRACE && /recover|records may/.test(effect.message)) console.log(this.nowMs, node.id, effect.message, JSON.stringify(effect.meta));
    const index = this.startOverIndexOf(effect);
    if (index === null) return;
    const holder = this.nodes.find(
      (other) =>
        other.replicaIndex !== 0 &&
        (other.replicaIndex === null || other.replicaIndex >= index) &&
        (this.reliesOnReplica(other) || other.trust !== 'trusted'),
    );
    if (holder !== undefined) throw new Error(`${node.id} started over at ${index} while ${holder.id} holds the state at ${holder.replicaIndex} (replica ${holder.trust})`);
    this.result.startOvers += 1;
    this.result.startOverIndex = index;
    this.startOverBase = index;
    this.startOverAtMs = this.nowMs;
    node.startOverPutPending = true;
    this.reference.clear();
    this.referenceIndex = index;
    this.referenceReplies.length = Math.min(this.referenceReplies.length, index + 1);
    for (const [key, changes] of this.history) {
      this.history.set(key, [...changes.filter((change) => change.index < index), { index, entry: undefined }]);
    }
  }

  private onWriteAcked(request: InFlightRequest, index: number): void {
    if (this.options.emptyAll === null) return;
    this.ackedWrites.push({ index, op: request.op, atMs: this.nowMs });
    if (this.disruptionEndMs !== null && this.result.recoveryMs === null && request.invokedMs >= this.disruptionEndMs) {
      this.result.recoveryMs = this.nowMs - this.disruptionEndMs;
    }
  }

  /**
   * Every write acked at an index after the last start-over's snapshot (so every one acked after
   * the start-over) is the op at that index of the sequence the converged replicas hold.
   */
  private checkAckedWritesKept(): void {
    for (const acked of this.ackedWrites) {
      if (acked.index <= this.startOverBase) {
        if (this.startOverAtMs !== null && acked.atMs >= this.startOverAtMs) throw new Error(`write acked after the start-over at ${acked.index} ≤ its snapshot ${this.startOverBase}`);
        continue;
      }
      const known = this.sequence[acked.index];
      if (known === undefined || known.op === null || opKey(known.op) !== opKey(acked.op)) throw new Error(`acked write ${opKey(acked.op)} at ${acked.index} is not in the final sequence`);
    }
  }

  // ------------------------------------------------------------ faults

  private injectFaults(): void {
    const perStep = (perSecond: number, random = this.random): boolean => random() < (perSecond * TICK_MS) / 1000 / 3;
    if (perStep(this.rates.partitionPerSecond)) this.togglePartition();
    if (perStep(this.rates.crashPerSecond)) {
      // Half the crashes wait for a node with records no fsync covers yet (see crashExposed).
      if (this.random() < 0.5) this.crashArmed = true;
      else if (this.mayLoseReplica()) this.crash(itemAt(this.nodes, Math.floor(this.random() * this.nodes.length)));
    }
    if (perStep(this.rates.backendResetPerSecond)) {
      const node = itemAt(this.nodes, Math.floor(this.random() * this.nodes.length));
      if (this.mayLoseReplica()) {
        if (node.machine === null) this.emptyNow(node);
        else this.emptyOnceIssued(node, () => this.stepNode(node, { kind: 'backend_reset', nowMs: this.nowMs, emptied: true }));
      }
    }
    const suspends = this.options.suspends ?? null;
    if (suspends !== null && perStep(suspends.perSecond, this.suspendRandom)) this.suspend(suspends.durationMsMax);
  }

  /**
   * A live node falls asleep, one at a time: the others keep serving, so the sleeper wakes to
   * something to be stale about. It runs nothing until it wakes (see runNode).
   */
  private suspend(durationMsMax: number): void {
    const live = this.nodes.filter((node) => node.machine !== null);
    if (live.length === 0 || this.nodes.some((node) => node.suspension !== null)) return;
    const node = itemAt(live, Math.floor(this.suspendRandom() * live.length));
    const spanMs = SUSPEND_MIN_MS + Math.floor(this.suspendRandom() * (durationMsMax - SUSPEND_MIN_MS + 1));
    node.suspension = { sinceMs: this.nowMs, untilMs: this.nowMs + spanMs };
    this.result.suspends += 1;
    node.peersHeldUntilMs = node.suspension.untilMs + 1 + Math.floor(this.suspendRandom() * SUSPEND_LINK_WAKE_MS_MAX);
  }

  /**
   * The node wakes: its clock goes on from where it stopped, and its requests' time asleep does
   * not count against the request bound (the machine times them on that clock). If the controller
   * notices, the machine hears of the jump before anything else.
   */
  private resume(node: SimNode, sinceMs: number): void {
    const spanMs = this.nowMs - sinceMs;
    node.suspension = null;
    node.clock.originMs -= Math.floor(spanMs * node.clock.rate);
    for (const request of node.requests.values()) request.invokedMs += spanMs;
    if (this.options.suspends?.notice === true) this.stepNode(node, { kind: 'clock_jump', nowMs: this.nowMs, aheadMs: spanMs });
  }

  /**
   * An armed crash hits, at the end of a turn, a node that wrote records no fsync covers yet (a
   * leader first): a crash at a random moment rarely hits that window of a millisecond or two,
   * and that window is where the write-ahead ordering matters.
   */
  private crashExposed(): void {
    if (!this.crashArmed || !this.faultsOn) return;
    const exposed = this.nodes.filter(
      (node) => node.machine !== null && node.suspension === null && node.gate.stats(this.nowMs).recordsWaiting > 0,
    );
    const victim = exposed.find((node) => node.machine?.inspect().role === 'leader') ?? exposed[0];
    if (victim === undefined) return;
    this.crashArmed = false;
    if (this.mayLoseReplica()) this.crash(victim);
  }

  private togglePartition(): void {
    if (this.cut.size > 0) {
      this.cut.clear();
      return;
    }
    const isolated = itemAt(this.ids, Math.floor(this.random() * this.ids.length));
    const oneWay = this.random() < 0.3;
    for (const other of this.ids) {
      if (other === isolated) continue;
      this.cut.add(`${isolated}>${other}`);
      if (!oneWay) this.cut.add(`${other}>${isolated}`);
    }
  }

  private heal(): void {
    this.faultsOn = false;
    this.healed = true;
    this.cut.clear();
    this.rates.drop = 0;
    this.rates.duplicate = 0;
    for (const node of this.nodes) {
      node.downUntilMs = Math.min(node.downUntilMs, this.nowMs);
      if (node.suspension !== null) node.suspension.untilMs = Math.min(node.suspension.untilMs, this.nowMs);
      // Failures strike in the faulty phase only: an armed store failure not yet struck is off.
      node.failNext = false;
    }
  }

  private awaitConvergence(): void {
    const deadlineMs = this.nowMs + this.options.livenessMs;
    while (!this.converged()) {
      if (this.nowMs >= deadlineMs) throw new Error(`no convergence within ${this.options.livenessMs}ms: ${this.describe()}`);
      this.nowMs = this.nextEventMs();
      this.runDue();
    }
  }

  private converged(): boolean {
    const views = this.nodes.map((node) => node.machine?.inspect() ?? null);
    if (views.some((view) => view === null || !view.caughtUp || !view.replicaValid || view.recovering)) return false;
    // Nothing may still wait for an fsync: the replicas must hold what the machines applied.
    if (this.nodes.some((node) => node.gate.waitingCount() > 0 || node.gate.stats(this.nowMs).recordsWaiting > 0 || node.emptyPending)) {
      return false;
    }
    // A suspect replica refuses writes until its machine is told: it is not rebuilt yet.
    if (this.nodes.some((node) => this.distrusted(node))) return false;
    const leaders = views.filter((view) => view?.role === 'leader');
    if (leaders.length !== 1) return false;
    // Followers must be in touch with the leader, or one may start an election right after (on
    // each node's own clock: with read leases it has its own origin and rate).
    const inTouch = (node: SimNode, view: LogView | null): boolean =>
      view !== null && (view.role === 'leader' || (view.role === 'follower' && this.localMs(node, this.nowMs) - view.lastLeaderContactMs < FAILURE_TIMEOUT_MS / 2));
    if (!this.nodes.every((node, at) => inTouch(node, views[at] ?? null))) return false;
    const last = leaders[0]?.lastIndex ?? -1;
    if (views.some((view) => view?.appliedIndex !== last)) return false;
    if (this.nodes.some((node) => node.requests.size > 0)) return false;
    this.advanceReference(last);
    for (const node of this.nodes) {
      if (node.replica.size !== this.reference.size) throw new Error(`${node.id} replica has ${node.replica.size} keys, reference ${this.reference.size}`);
      for (const [key, entry] of this.reference) {
        const mine = node.replica.get(key);
        if (mine === undefined || !mine.value.equals(entry.value) || mine.cas !== entry.cas) throw new Error(`${node.id} differs at ${key}`);
      }
    }
    return true;
  }

  private describe(): string {
    return this.nodes
      .map((node) => {
        const view = node.machine?.inspect();
        if (view === undefined) return `${node.id}: down`;
        return `${node.id}: ${view.role} t${view.term} c${view.commitIndex} a${view.appliedIndex} last${view.lastIndex} snap${view.snapshotIndex} valid=${view.replicaValid} caughtUp=${view.caughtUp} pending=${node.requests.size}`;
      })
      .join('; ');
  }

  // ------------------------------------------------------------ invariants

  private checkInvariants(): void {
    for (const node of this.nodes) {
      const machine = node.machine;
      if (machine === null) continue;
      const view = machine.inspect();
      if (view.appliedIndex > view.commitIndex) throw new Error(`${node.id} applied ${view.appliedIndex} > committed ${view.commitIndex}`);
      if (view.role === 'leader') {
        const known = this.leaderOfTerm.get(view.term);
        if (known !== undefined && known !== node.id) throw new Error(`two leaders in term ${view.term}: ${known}, ${node.id}`);
        this.leaderOfTerm.set(view.term, node.id);
      }
      // With every record durable, all the machine believes rests on durable state.
      if (node.gate.stats(this.nowMs).recordsWaiting === 0) this.checkCommitted(node, view, view.commitIndex);
      // Asleep, a node answers nothing (its requests' bound resumes with it: see resume).
      if (node.suspension !== null) continue;
      for (const [requestId, request] of node.requests) {
        if (this.nowMs - request.invokedMs > this.requestBoundMs) throw new Error(`${node.id} left request ${requestId} unanswered`);
      }
    }
  }

  /**
   * What an effect leaving the process says is committed: an apply its index; an append, an
   * append reply the sender's commit index; a transfer chunk its index.
   */
  private checkClaim(node: SimNode, effect: Effect<LogMessage>): void {
    let claimed = 0;
    if (effect.kind === 'apply') claimed = Number(effect.cas);
    else if (effect.kind === 'send' && (effect.message.kind === 'append' || effect.message.kind === 'append_reply')) claimed = effect.message.commitIndex;
    else if (effect.kind === 'send' && effect.message.kind === 'transfer_chunk') claimed = effect.message.index;
    const view = node.machine?.inspect();
    if (view === undefined || claimed <= node.checkedCommit) return;
    if (claimed > view.commitIndex) throw new Error(`${node.id} claims ${claimed} committed, its commit index is ${view.commitIndex}`);
    this.checkCommitted(node, view, claimed);
  }

  /**
   * An index, once committed, keeps the same entry (term) everywhere. Judged on what is visible:
   * up to what an effect that left the process claims, or what the node believes once all its
   * records are durable (a leader's commit index counts its own copy before its fsync, but nothing
   * resting on that leaves the process before the fsync, and a crash before it forgets it all).
   */
  private checkCommitted(node: SimNode, view: LogView, upTo: number): void {
    const from = Math.max(node.checkedCommit, view.snapshotIndex) + 1;
    for (let index = from; index <= upTo; index += 1) {
      const entry = view.entryAt(index);
      if (entry === null) continue;
      const term = this.committedTerm[index];
      if (term === undefined) this.committedTerm[index] = entry.term;
      else if (term !== entry.term) throw new Error(`${node.id} committed index ${index} with term ${entry.term}, was ${term}`);
    }
    node.checkedCommit = Math.max(node.checkedCommit, upTo);
  }

  private node(id: PeerId): SimNode {
    const node = this.nodes.find((candidate) => candidate.id === id);
    if (node === undefined) throw new Error(`no node ${id}`);
    return node;
  }
}

/** Measures failover (see `LogSimulation.failover`) for one seed, without other faults. */
export function measureFailover(seed: number, mode: LogMode): ReturnType<LogSimulation['failover']> {
  return new LogSimulation({ ...SIM_DEFAULTS, seed, mode, faults: false }).failover();
}

export const SIM_FAILURE_TIMEOUT_MS = FAILURE_TIMEOUT_MS;

/** Runs one seed with defaults; convenient for replaying a failure. */
export function simulate(seed: number, mode: LogMode, overrides: Partial<SimOptions> = {}): SimResult {
  return new LogSimulation({ ...SIM_DEFAULTS, seed, mode, ...overrides }).run();
}

/** Runs one seed through `LogSimulation.stall` (no convergence demanded), for `storeFailures.everyNodeAtMs`. */
export function simulateStall(seed: number, mode: LogMode, overrides: Partial<SimOptions> = {}): SimResult {
  return new LogSimulation({ ...SIM_DEFAULTS, seed, mode, ...overrides }).stall();
}
