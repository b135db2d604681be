/**
 * One mckv controller: thin glue between the client protocol server, the consistency mode, the
 * peer network and the local replica. It makes no protocol decision.
 *
 * Every input — a client command, a peer message, a timer tick, a store completion — becomes an
 * event in one queue. The loop runs a bounded number of events per turn through the mode's
 * `step` and carries out the effects in the order returned: `persist` records go to the
 * durability gate (controller/durability.ts), which writes them off the event loop, a batch per
 * turn, and holds every effect after a persist until the record is durable; `apply`, `read`,
 * `put`, `fetch` reach the replica in issue order (the Replica keeps per-key order); replies
 * resolve the client's pending promise.
 */

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { clockMs } from './clock.ts';
import { causalCommand } from './causal-commands.ts';
import { versionNode } from './consistency/hlc.ts';
import {
  asRequestId,
  type Effect,
  type Event,
  type Machine,
  type Mode,
  type PeerId,
  type RequestId,
} from './consistency/types.ts';
import { toOp } from './commands.ts';
import type { Address, ClusterConfig, NodeConfig } from './config.ts';
import type { Logger } from './log.ts';
import { readClusterSecret, readPeerTls } from './peer/credentials.ts';
import { PeerNetwork } from './peer/network.ts';
import { replacePrivateTextFile } from './private-files.ts';
import { ProtocolServer, type CommandHandler, type ConnectionInfo } from './protocol/server.ts';
import { loadAuthFile } from './protocol/auth.ts';
import { DEFAULT_LIMITS, type Command, type Reply } from './protocol/types.ts';
import { refusalText, refused } from './protocol/refusals.ts';
import { Replica } from './store/replica.ts';
import { LossWatch } from './store/loss-watch.ts';
import { MemoryGuard, type Stored, type WriterOf } from './store/memory-guard.ts';
import { storedItemBytes } from './store/slab-room.ts';
import { opKeys, StoreError, type BackendHealth, type KVBackend, type Op } from './store/types.ts';
import { renderShow, type NodeSummary } from './show.ts';
import { clusterStatus, renderShowJson } from './show-json.ts';
import { StatusHttp } from './http/server.ts';
import { statsGroup } from './stats-group.ts';
import { WriteAheadFile } from './wal.ts';
import { createMachine, priorityKinds } from './controller/create-machine.ts';
import { cacheStatsLines, memoryReportOf, peerStatsLines, storeErrorReply, walStatsLines } from './controller/stats.ts';
import { DurabilityGate, type DurabilityError } from './controller/durability.ts';
import { changedKeys, HeldKeys } from './controller/held-keys.ts';
import { BackgroundWriteAhead } from './controller/wal-background.ts';

export const MCKV_VERSION = '0.1.0';

export interface ControllerOptions {
  config: ClusterConfig;
  node: NodeConfig;
  mode: Mode;
  backend: KVBackend;
  /** Where the backend is, for `show` ("memory" for the embedded store). */
  backendAddress: string;
  log: Logger;
  /** Testing: run the mode without replication. */
  replication?: boolean;
  /** Testing: a file whose number of ms delays every write-ahead fsync (see FSYNC_DELAY_FILE_ENV). */
  fsyncDelayFile?: string | null;
}

/** What the durability gate holds back: an effect, or a step of the controller's own. */
type Deferred = Effect<unknown> | (() => void);

/** Events run per turn of the Node event loop before yielding to I/O. */
const eventsPerTurnMax = 1024;

/**
 * Most failed applies whose replies wait for the next backend reset (a memcached down for long
 * would otherwise pile up the ids of requests long timed out); past it, they are answered at once.
 */
const awaitingApplyMax = 10_000;
/** A request the mode never answered is failed after this long, so no client hangs forever. */
const requestTimeoutMs = 15_000;
const backendPollIntervalMs = 1000;
/** A backend failure this soon after the last reset counts as the repair failing again. */
const resetRetryWindowMs = 5000;
/** The first wait before telling the mode again of such a failure; it doubles each time. */
const resetRetryDelayMs = 50;

/** How often overdue requests are swept (one timer for all, not one per request). */
const requestSweepIntervalMs = 1000;

/**
 * A request the mode has not answered yet. `resolve` is null while `handle` still runs: a reply
 * given meanwhile (a read the replica served at once) is kept in `reply` and returned directly.
 */
type PendingRequest = { resolve: ((reply: Reply) => void) | null; reply: Reply | null; deadlineMs: number; session: number };

export class Controller {
  private readonly machine: Machine<unknown>;
  private readonly replica: Replica;
  private readonly network: PeerNetwork;
  private readonly server: ProtocolServer;
  private readonly durability: DurabilityGate<Deferred>;
  /** `/metrics` and the status page, when config.ini gives this node an `http` address. */
  private readonly http: StatusHttp | null;
  /** Events waiting to run; `queueHead` is the first unrun one (no O(n) shift per event). */
  private queue: Event<unknown>[] = [];
  private queueHead = 0;
  private readonly pending = new Map<RequestId, PendingRequest>();
  /** Client connections with a write's apply waiting for the disk, and how many each has. */
  private readonly heldApplies = new Map<number, number>();
  /** The keys store effects waiting for the disk change: a read of others may run ahead (`keysOnly`). */
  private readonly heldKeys = new HeldKeys();
  private readonly log: Logger;
  private readonly startedAtMs = clockMs();
  private nextRequestId = 1;
  private drainScheduled = false;
  private draining = false;
  private flushScheduled = false;
  private stopped = false;
  private timers: NodeJS.Timeout[] = [];
  /** The mode's pending wake-up (a `wake` effect): when it is due, and its timer. */
  private wakeAtMs = Infinity;
  private wakeTimer: NodeJS.Timeout | null = null;
  private health: BackendHealth;
  private readonly epochFile: string;
  /** What memcached's counters said at the last poll (LossWatch.state), kept across restarts. */
  private readonly lossesFile: string;
  private readonly losses: LossWatch;
  private backendFailed = false;
  /**
   * Every backend failure since the last reset left the replica as it was but for writes whose
   * outcome is unknown (timeouts, broken connections) or that memcached refused without touching
   * the key (StoreError.untouched: an add or replace it had no memory for; a refused set drops
   * the old value), and no reset failed. The reset then says `kept`.
   */
  private failuresKept = true;
  /** When the last backend_reset was queued, and how many in a row a failure followed within the retry window. */
  private lastResetQueuedMs = Number.NEGATIVE_INFINITY;
  private resetRetries = 0;
  /** memcached's words for the last write it refused without storing it, and when (for `show`). */
  private lastRefusal: { message: string; atMs: number } | null = null;
  /** Whether failed applies' replies wait for the reset (the log modes; see `awaitingApply`). */
  private readonly holdsFailedApplies: boolean;
  /** Requests whose apply failed since the last reset, answered by the mode at the next one. */
  private awaitingApply: RequestId[] = [];
  /** The backend_reset event queued and not yet run through the mode, if any. */
  private queuedReset: Extract<Event<unknown>, { kind: 'backend_reset' }> | null = null;
  /**
   * A new backend epoch (memcached restarted), written to the epoch file only once the mode's
   * reset is on disk: written earlier, a crash in between would restart onto the emptied replica
   * believing it had seen that restart, and trust it.
   */
  private epochAfterReset: string | null = null;
  private readonly memoryGuard: MemoryGuard;
  /** Which writer a version is from: each node in eventual mode, else one (the log, or this node). */
  private readonly writerOf: WriterOf;
  /** Per writer, the greatest version this replica has stored: the memory guard's marks. */
  private readonly stored = new Map<number, bigint>();
  /** The marks when the last poll began, as every heartbeat reports them with what it read. */
  private storedAtPoll: NonNullable<NodeSummary['backendStored']> = [];
  /** Eventual mode: a write memcached refused for want of memory leaves the replica trusted. */
  private readonly refusalsKeepTrust: boolean;
  /** Such refusals so far (logged at powers of two). */
  private refusalsKept = 0;
  /** Polls of the backend so far: a peer's guard tells a new report of our memory by it. */
  private backendPolls = 0;
  private warnedEvictsWhenFull = false;
  private warnedItemLimit = false;
  /** The longest item memcached must take: the longest key with a value of value_bytes_max (and flags). */
  private readonly itemBytesNeeded: number;
  private counters = { opsServed: 0, gets: 0, sets: 0, getHits: 0, getMisses: 0, errors: 0 };
  /** The server's connection count at the last `stats reset`: total_connections counts from there. */
  private connectionsTotalAtReset = 0;

  private constructor(private readonly options: ControllerOptions) {
    const { config, node, mode } = options;
    this.log = options.log.child({ node: node.id });
    // Causal mode keeps eventual's replica: versions per writer, tombstones.
    const peerVersions = mode === 'eventual' || mode === 'causal';
    const logMode = !peerVersions && (options.replication ?? true);
    const eventual = peerVersions && (options.replication ?? true);
    this.writerOf = eventual ? versionNode : () => 0;
    // memcached refusing a merge for want of memory leaves the keys as they were: eventual re-reads
    // them; causal rolls its visible vector back to before the refused merge and is sent it again.
    this.refusalsKeepTrust = eventual;
    this.memoryGuard = new MemoryGuard(this.writerOf);
    // The log modes replay their log onto the replica after a restart; skipping ops the replica
    // already holds (its cas ≥ the entry's index) makes that replay idempotent.
    this.replica = new Replica(options.backend, {
      tombstones: peerVersions,
      replay: logMode ? 'skip-applied' : 'plain',
      cacheBytesMax: config.cacheBytesMax,
      valueBytesMax: config.valueBytesMax,
      refusalsKeepTrust: this.refusalsKeepTrust,
    });
    this.itemBytesNeeded = storedItemBytes('k'.repeat(DEFAULT_LIMITS.keyBytesMax), config.valueBytesMax) + 4;
    this.holdsFailedApplies = logMode;
    const walFile = path.join(config.dataDir, node.id, 'wal.bin');
    // The backend's epoch when this controller last saw it: if memcached restarted (emptied) while
    // the controller was down, the first health poll sees a new epoch and the replica is rebuilt.
    this.epochFile = path.join(config.dataDir, node.id, 'backend-epoch');
    this.health = { ok: true, detail: 'starting', epoch: readTextIfExists(this.epochFile) };
    // Evictions and flushes while this controller was down count too: what it last saw is on disk.
    this.lossesFile = path.join(config.dataDir, node.id, 'backend-counters');
    this.losses = new LossWatch(readTextIfExists(this.lossesFile));
    if (this.health.epoch !== '') options.backend.expectEpoch?.(this.health.epoch);
    const walOwner = { clusterId: config.clusterId, nodeId: node.id };
    const persisted = WriteAheadFile.read(walFile, walOwner);
    const writeAhead = new BackgroundWriteAhead({ file: walFile, owner: walOwner, fsyncDelayFile: options.fsyncDelayFile ?? null });
    this.durability = new DurabilityGate<Deferred>({
      writeAhead,
      sync: config.walSync,
      release: (work) => (typeof work === 'function' ? work() : this.execute(work)),
      failed: (error) => this.stopForDurability(error),
      fsynced: (ms) => this.http?.metrics.observeWalFsync(ms / 1000),
    });
    const { tornBytesCut } = writeAhead.opened;
    if (tornBytesCut > 0) this.log.warn('write-ahead file ended in a torn record; cut it off', { file: walFile, bytes: tornBytesCut });
    this.machine = createMachine(mode, options.replication ?? true, config.compactAfterEntries, {
      self: node.id,
      peers: config.nodes.filter((peer) => peer.id !== node.id).map((peer) => peer.id),
      random: Math.random,
      heartbeatIntervalMs: config.heartbeatIntervalMs,
      failureTimeoutMs: config.failureTimeoutMs,
      persisted,
      nowMs: clockMs(),
      refuseStore: (op, version) => this.memoryGuard.refusal(op, version),
      valueBytesMax: config.valueBytesMax,
    }, config.readLeases);
    this.network = new PeerNetwork({
      self: node.id,
      listen: node.peer,
      peers: config.nodes
        .filter((peer) => peer.id !== node.id)
        .map((peer) => ({ id: peer.id, ...(node.dial[peer.id] ?? peer.peer) })),
      secret: readClusterSecret(config.secretFile),
      clusterId: config.clusterId,
      tls:
        config.peerTlsCaFile === null || node.tls === null
          ? null
          : readPeerTls({ caFile: config.peerTlsCaFile, certFile: node.tls.certFile, keyFile: node.tls.keyFile }),
      frameBytesMax: config.peerFrameBytesMax,
      priorityKinds: priorityKinds(mode),
      heartbeatIntervalMs: config.heartbeatIntervalMs,
      failureTimeoutMs: config.failureTimeoutMs,
      heartbeatInfo: () => this.summary(),
      log: this.log.child({ component: 'peer' }),
    });
    this.http = node.http === null ? null : this.createStatusHttp(node.http);
    const handler: CommandHandler = (command, connection) => this.handle(command, connection);
    this.server = new ProtocolServer({
      host: node.client.host,
      port: node.client.port,
      limits: {
        ...DEFAULT_LIMITS,
        valueBytesMax: config.valueBytesMax,
        connectionsMax: config.connectionsMax,
        outputBytesMax: config.clients.outputBytesMax,
        requestsInFlightMax: config.clients.requestsInFlightMax,
        serverRequestsInFlightMax: config.clients.controllerRequestsInFlightMax,
      },
      idleTimeoutMs: config.clients.idleTimeoutMs,
      flushAllEnabled: config.clients.flushAllEnabled,
      // Read once, here: an unreadable or malformed auth file stops the start with one line.
      login: config.clients.authFile === null ? null : loadAuthFile(config.clients.authFile),
      handler: this.http === null ? handler : this.http.timed(handler),
      // Every mode carries out a connection's commands in the order handed over: the replicated
      // log through its session order (consistency/log/session-order.ts); eventual and local
      // issue their effects in that order, and the Replica keeps it per key.
      handlerKeepsOrder: true,
      log: this.log.child({ component: 'protocol' }),
    });
  }

  /** Starts a controller: peers listening, client port open, timers running. */
  static async start(options: ControllerOptions): Promise<Controller> {
    const controller = new Controller(options);
    await controller.open();
    return controller;
  }

  private async open(): Promise<void> {
    this.network.on('message', (from: PeerId, message: unknown) => {
      this.enqueue({ kind: 'message', nowMs: clockMs(), from, message });
    });
    const indexed = await this.replica.loadIndex().catch((error: unknown) => {
      this.log.warn('could not list the keys the backend already holds', { error: String(error) });
      return 0;
    });
    if (indexed > 0) this.log.info('backend already holds keys', { keys: indexed });
    // Before anything is served: a backend that restarted while this controller was down is reset.
    await this.pollBackend();
    await this.network.start();
    try {
      await this.server.listen();
      await this.http?.listen();
    } catch (error) {
      await this.server.close();
      await this.network.stop();
      throw error;
    }
    const tickIntervalMs = Math.max(5, Math.floor(this.options.config.heartbeatIntervalMs / 2));
    this.timers.push(setInterval(() => this.tick(), tickIntervalMs));
    this.timers.push(setInterval(() => void this.pollBackend(), backendPollIntervalMs));
    this.timers.push(setInterval(() => this.sweepOverdue(), requestSweepIntervalMs));
    this.log.info('controller started', {
      mode: this.options.mode,
      client: `${this.options.node.client.host}:${this.options.node.client.port}`,
      peer: `${this.options.node.peer.host}:${this.options.node.peer.port}`,
      backend: `${this.options.backend.kind} ${this.options.backendAddress}`,
    });
  }

  /** Stops taking clients, closes peers and the backend. Pending requests get SERVER_ERROR. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const timer of this.timers) clearInterval(timer);
    if (this.wakeTimer !== null) clearTimeout(this.wakeTimer);
    for (const [requestId] of this.pending) {
      this.resolve(requestId, refused('shutting_down'));
    }
    await this.server.close();
    await this.http?.close();
    await this.network.stop();
    await this.options.backend.close();
    this.durability.close();
    this.log.info('controller stopped');
  }

  private handle(command: Command, connection: ConnectionInfo): Promise<Reply> | Reply {
    const nowMs = clockMs();
    switch (command.kind) {
      case 'show':
        if (command.json) return { kind: 'text', lines: renderShowJson(clusterStatus(this.summary(), this.network.peerView())) };
        return { kind: 'text', lines: renderShow(this.summary(), this.network.peerView()) };
      case 'stats':
        return this.stats(command.group);
      case 'version':
        return { kind: 'version', version: `1.6.18 mckv-${MCKV_VERSION}` };
      case 'verbosity':
        return { kind: 'ok' };
      case 'quit':
      case 'noop':
        return { kind: 'none' };
      case 'causal_token':
      case 'causal_wait':
        return causalCommand(this.machine, command);
      default:
        break;
    }
    const op = toOp(command, nowMs);
    if (op === null) return { kind: 'error' };
    if (this.stopped) return refused('shutting_down');
    this.noticePause();
    this.counters.opsServed += 1;
    if (op.kind === 'get' || op.kind === 'gat') this.counters.gets += 1;
    else this.counters.sets += 1;
    const nothingBefore = !this.draining && this.queueHead >= this.queue.length && !this.heldApplies.has(connection.id);
    const localRead = op.kind === 'get' ? { keys: op.keys, appliesDone: !this.heldKeys.touches(op.keys) } : undefined;
    if (op.kind === 'get' && nothingBefore && this.machine.readsLocally?.(nowMs, connection.id, localRead) === true) {
      // The mode would only turn it into a read: serve it from the replica without a step. Not
      // while an apply of this connection's own write waits for the disk (others' writes that
      // wait are not answered yet: reading before them is allowed to a sequential read, not to a
      // linearizable one, hence `appliesDone`).
      const served = this.replica.readNow(op, nowMs);
      if (served !== null) return this.countRead(op, served);
    }
    const requestId = asRequestId(this.nextRequestId++);
    const pending: PendingRequest = { resolve: null, reply: null, deadlineMs: nowMs + requestTimeoutMs, session: connection.id };
    this.pending.set(requestId, pending);
    const event: Event<unknown> = { kind: 'request', nowMs, requestId, session: connection.id, op };
    if (this.draining || this.queueHead < this.queue.length) {
      this.enqueue(event);
    } else {
      // Nothing waits before it: step it now (a read the replica can serve at once is answered
      // without a promise or a turn); what the mode batches still goes out on the turn's flush.
      this.queue.push(event);
      this.drain(false);
    }
    if (pending.reply !== null) return pending.reply;
    return new Promise<Reply>((resolve) => {
      pending.resolve = resolve;
    });
  }

  /** Fails requests the mode never answered in time. Map order is issue order, so stop at the first one not due. */
  private sweepOverdue(): void {
    const nowMs = clockMs();
    for (const [requestId, pending] of this.pending) {
      if (pending.deadlineMs > nowMs) break;
      this.resolve(requestId, refused('controller_timeout'));
    }
  }

  private enqueue(event: Event<unknown>): void {
    if (this.stopped) return;
    this.queue.push(event);
    if (!this.drainScheduled) {
      this.drainScheduled = true;
      setImmediate(() => this.drain());
    }
  }

  /**
   * Runs queued events through the mode. `flushNow`: when the queue is empty, let the mode send
   * what it batched at once; otherwise (a request stepped as it arrived) on a flush at the end
   * of this turn, so one message still carries the whole turn's work.
   */
  private drain(flushNow = true): void {
    this.drainScheduled = false;
    this.draining = true;
    try {
      this.runQueued();
    } finally {
      this.draining = false;
    }
    if (this.queueHead < this.queue.length) {
      if (!this.drainScheduled) {
        this.drainScheduled = true;
        setImmediate(() => this.drain());
      }
      return;
    }
    if (!flushNow) {
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => {
          this.flushScheduled = false;
          if (this.queueHead >= this.queue.length) this.flush();
        });
      }
      return;
    }
    this.flush();
  }

  /** Everything queued for now has run: let the mode send what it batched. */
  private flush(): void {
    if (!this.stopped) for (const effect of this.machine.step({ kind: 'flush', nowMs: clockMs() })) this.carryOut(effect);
    this.settle();
  }

  private runQueued(): void {
    let budget = eventsPerTurnMax;
    while (this.queueHead < this.queue.length && budget-- > 0 && !this.stopped) {
      const event = this.queue[this.queueHead];
      this.queueHead += 1;
      let effects: Effect<unknown>[];
      if (event.kind === 'backend_reset') {
        event.awaiting = this.awaitingApply;
        this.awaitingApply = [];
      }
      try {
        effects = this.machine.step(event);
      } catch (error) {
        // A broken invariant in the mode: crash rather than serve wrong answers.
        this.log.error('consistency state machine failed', { error: String((error as Error).stack ?? error) });
        throw error;
      }
      if (event.kind === 'backend_reset') {
        // Everything issued before now goes to the replica first (so the reset refuses it, rather
        // than running it against the emptied replica); then the mode's next effects rebuild it.
        this.queuedReset = null;
        this.durability.whenDurable(this.durability.latest(), () => {
          this.replica.acknowledgeReset();
          this.backendFailed = false;
          this.failuresKept = true;
        });
      }
      for (const effect of effects) this.carryOut(effect);
      if (event.kind === 'backend_reset' && this.epochAfterReset !== null) this.recordEpochAfterReset(this.epochAfterReset);
    }
    this.settle();
    if (this.queueHead >= this.queue.length) {
      this.queue = [];
      this.queueHead = 0;
    } else if (this.queueHead > 4096) {
      this.queue = this.queue.slice(this.queueHead);
      this.queueHead = 0;
    }
  }

  /**
   * A persist goes to the durability gate; every other effect runs once every record before it is
   * durable and every effect before it has run (at once when nothing waits), so nothing that
   * depends on a record leaves this process before the record is on disk, while the event loop
   * keeps taking input. A send the mode marks `beforeDurable` rests on no record and leaves at
   * once. With `wal_sync = write` a record counts as durable once written.
   */
  private carryOut(effect: Effect<unknown>): void {
    if (effect.kind === 'persist') {
      this.durability.append([{ record: effect.record, compact: effect.compact }]);
      return;
    }
    if (effect.kind === 'send' && effect.beforeDurable === true) this.execute(effect);
    else if (effect.kind === 'read' && effect.keysOnly === true && !this.heldKeys.touches(opKeys(effect.op) ?? [])) this.execute(effect);
    else if (effect.kind === 'apply' && effect.requestId !== null) this.holdApply(effect, effect.requestId);
    else this.holdForDisk(effect);
  }

  /** Hands an effect to the gate, noting the keys it changes while it waits (see HeldKeys). */
  private holdForDisk(effect: Effect<unknown>, run: () => void = () => this.execute(effect)): void {
    const keys = changedKeys(effect);
    if (keys === undefined) {
      this.durability.whenDurable(this.durability.latest(), effect);
      return;
    }
    this.heldKeys.hold(keys);
    this.durability.whenDurable(this.durability.latest(), () => {
      this.heldKeys.release(keys);
      run();
    });
  }

  /** An apply answering a client waits for the disk; its connection reads no further locally until it runs. */
  private holdApply(effect: Effect<unknown>, requestId: RequestId): void {
    const session = this.pending.get(requestId)?.session;
    if (session === undefined) {
      this.holdForDisk(effect);
      return;
    }
    this.heldApplies.set(session, (this.heldApplies.get(session) ?? 0) + 1);
    this.holdForDisk(effect, () => {
      const left = (this.heldApplies.get(session) ?? 1) - 1;
      if (left > 0) this.heldApplies.set(session, left);
      else this.heldApplies.delete(session);
      this.execute(effect);
    });
  }

  /**
   * The disk refused a write-ahead record (full, failing) or its fsync: durability is lost, and it
   * is better to stop than to act on a vote or entry that may vanish. The file holds nothing of the
   * refused batch (the writer cuts it back); the peers go on without this node.
   */
  private stopForDurability(error: DurabilityError): never {
    this.log.error('write-ahead file refused a write; stopping', { code: error.code, error: error.message });
    process.exit(1);
  }

  /** The end of a turn: what the mode wrote this turn goes to the disk as one batch. */
  private settle(): void {
    if (!this.stopped) this.durability.writeAppended();
  }

  private execute(effect: Effect<unknown>): void {
    switch (effect.kind) {
      case 'send':
        this.network.send(effect.to, effect.message);
        return;
      case 'reply':
        this.resolve(effect.requestId, effect.reply);
        return;
      case 'apply': {
        const { requestId, token } = effect;
        this.replica.apply(effect.op, { cas: effect.cas, nowMs: effect.nowMs, counterNode: effect.counterNode }).then(
          (reply) => {
            this.noteStored(effect.cas);
            if (requestId !== null) this.resolve(requestId, reply);
            if (token !== null) this.enqueue({ kind: 'applied', nowMs: clockMs(), token });
          },
          (error: unknown) => {
            if (!this.refusedKeepingTrust(opKeys(effect.op), token, error)) this.backendError('apply', error);
            if (requestId === null) return;
            // A committed write of the log modes: the mode answers it at the reset, with its
            // result if a replay applies it again (see the backend_reset event's `awaiting`).
            if (this.holdsFailedApplies && this.backendFailed && this.awaitingApply.length < awaitingApplyMax) this.awaitingApply.push(requestId);
            else this.resolve(requestId, storeErrorReply(error));
          },
        );
        return;
      }
      case 'put': {
        const { token } = effect;
        this.memoryGuard.arrived(effect.entries.map(([key, entry]) => [key, entry.value.length, entry.cas] as const));
        this.replica.put(effect.entries, effect.how, effect.joinCas).then(
          () => {
            for (const [, entry] of effect.entries) this.noteStored(entry.cas);
            if (token !== null) this.enqueue({ kind: 'applied', nowMs: clockMs(), token });
          },
          (error: unknown) => {
            if (!this.refusedKeepingTrust(effect.entries.map(([key]) => key), token, error)) this.backendError('put', error);
          },
        );
        return;
      }
      case 'read': {
        const { requestId, op } = effect;
        const served = this.replica.readNow(op, effect.nowMs);
        if (served !== null) {
          this.answerRead(requestId, op, served);
          return;
        }
        this.replica.read(op, effect.nowMs).then(
          (reply) => this.answerRead(requestId, op, reply),
          (error: unknown) => this.resolve(requestId, storeErrorReply(error)),
        );
        return;
      }
      case 'fetch': {
        const { token } = effect;
        this.replica.fetch(effect.keys).then(
          (entries) => this.enqueue({ kind: 'fetched', nowMs: clockMs(), token, entries }),
          (error: unknown) => this.backendError('fetch', error),
        );
        return;
      }
      case 'purge':
        this.replica.purge(effect.tombstones).catch((error: unknown) => this.backendError('purge', error));
        return;
      case 'reset':
        this.replica.reset().catch((error: unknown) => this.backendError('reset', error));
        return;
      case 'persist':
        throw new Error('persist effects go to the durability gate (carryOut)');
      case 'note':
        this.log[effect.level](effect.message, effect.meta);
        return;
      case 'wake':
        this.wakeAfter(effect.afterMs);
        return;
      default: {
        const unreachable: never = effect;
        throw new Error(`unknown effect ${JSON.stringify(unreachable)}`);
      }
    }
  }

  /** Delivers a `flush` event after `afterMs`, unless a wake-up already pending comes sooner. */
  private wakeAfter(afterMs: number): void {
    const atMs = clockMs() + afterMs;
    if (this.wakeTimer !== null && this.wakeAtMs <= atMs) return;
    if (this.wakeTimer !== null) clearTimeout(this.wakeTimer);
    this.wakeAtMs = atMs;
    this.wakeTimer = setTimeout(() => {
      this.wakeTimer = null;
      this.wakeAtMs = Infinity;
      this.enqueue({ kind: 'flush', nowMs: clockMs() });
    }, afterMs);
  }

  private answerRead(requestId: RequestId, op: Op, reply: Reply): void {
    this.resolve(requestId, this.countRead(op, reply));
  }

  private countRead(op: Op, reply: Reply): Reply {
    if (reply.kind === 'values') {
      this.counters.getHits += reply.items.length;
      if (op.kind === 'get') this.counters.getMisses += op.keys.length - reply.items.length;
    }
    return reply;
  }

  private resolve(requestId: RequestId, reply: Reply): void {
    const pending = this.pending.get(requestId);
    if (!pending) return;
    this.pending.delete(requestId);
    if (reply.kind === 'refused' || reply.kind === 'client_error') this.counters.errors += 1;
    if (pending.resolve === null) pending.reply = reply;
    else pending.resolve(reply);
  }

  /**
   * A tick that comes late (this node was not running: the machine stalled, a long GC pause)
   * excuses the pause in the failure detector and tells the mode, so neither counts that silence
   * against the peers.
   */
  private tick(): void {
    this.tickNow(this.network.excuseOwnPause());
  }

  /**
   * A request can be the first thing this node runs after a stall (the poll phase comes before the
   * timers): the mode is told of the pause before it judges the request by its peers' silence.
   */
  private noticePause(): void {
    const pausedMs = this.network.excuseOwnPause();
    if (pausedMs > 0) this.tickNow(pausedMs);
  }

  private tickNow(pausedMs: number): void {
    const peers = this.network.peerView();
    for (const view of peers) this.memoryGuard.peerReported(view.peer, view.up ? memoryReportOf(view.info) : undefined);
    const peersUp = peers.filter((view) => view.up).map((view) => view.peer);
    this.enqueue({ kind: 'tick', nowMs: clockMs(), peersUp, ...(pausedMs > 0 ? { pausedMs: Math.round(pausedMs) } : {}) });
  }

  /**
   * Whether memcached refused a write for want of memory, leaving `keys` as they were, and the
   * replica stays trusted (ReplicaOptions.refusalsKeepTrust): the mode is told to re-read them.
   */
  private refusedKeepingTrust(keys: readonly string[] | null, token: number | null, error: unknown): boolean {
    if (!this.refusalsKeepTrust || keys === null || !(error instanceof StoreError) || !error.untouched || this.replica.suspect !== null) return false;
    this.rememberRefusal(error);
    this.refusalsKept += 1;
    if (isPowerOfTwoOrZero(this.refusalsKept)) this.log.warn('memcached refused a write and kept the keys as they were; re-reading them', { keys: keys.slice(0, 3), error: error.message, refusals: this.refusalsKept });
    this.enqueue({ kind: 'refused', nowMs: clockMs(), keys, token });
    return true;
  }

  /**
   * A failed store operation means this replica may have missed an apply. Once the backend
   * answers again, the mode is told the replica must be rebuilt, or, when every failure since
   * the last reset left it as it was but for the failed writes (`kept`), repaired by a replay.
   */
  private backendError(what: string, error: unknown): void {
    // A call refused because it was issued before the last acknowledged reset says nothing new
    // about the backend: the replica is trusted again (suspect is null) and being rebuilt.
    if (error instanceof StoreError && error.code === 'BACKEND_RESET' && this.replica.suspect === null) return;
    // Calls the suspect replica refused (BACKEND_RESET) never reached memcached.
    const kept = error instanceof StoreError && (error.code !== 'BACKEND_FAILED' || error.untouched) && what !== 'reset';
    this.rememberRefusal(error);
    if (!kept) {
      this.failuresKept = false;
      if (this.queuedReset !== null) this.queuedReset.kept = false;
    }
    if (!this.backendFailed) {
      const delayMs = this.resetDelayMs(clockMs());
      if (isPowerOfTwoOrZero(this.resetRetries)) this.log.error('backend operation failed', { what, error: String(error), retries: this.resetRetries });
      // The replica refuses everything until the mode is told; tell it as soon as the backend
      // answers (after the delay, if any).
      if (delayMs === 0) setImmediate(() => void this.pollBackend());
      else setTimeout(() => void this.pollBackend(), delayMs).unref();
    }
    this.backendFailed = true;
  }

  /**
   * How long to wait before telling the mode of a failure. In the log modes a failure soon after
   * the last reset (the replay failing again, as while memcached stays full) waits longer each
   * time, up to a poll interval: each reset replays at once, so the replica would fail in a tight
   * loop. Eventual mode is told at once: its reset rebuilds the replica while holding requests and
   * fails again only when a new write comes, while a suspect replica refuses everything.
   */
  private resetDelayMs(nowMs: number): number {
    this.resetRetries = nowMs - this.lastResetQueuedMs < resetRetryWindowMs ? this.resetRetries + 1 : 0;
    if (!this.holdsFailedApplies || this.resetRetries === 0) return 0;
    return Math.min(backendPollIntervalMs, resetRetryDelayMs * 2 ** (this.resetRetries - 1));
  }

  /** memcached's words for a write it refused without storing it, for `show` (backendRefusal). */
  private rememberRefusal(error: unknown): void {
    if (error instanceof StoreError && error.refusal !== undefined) this.lastRefusal = { message: refusalText(error.refusal), atMs: clockMs() };
  }

  /** A version is in memcached now: a poll from now on counts it. */
  private noteStored(version: bigint): void {
    const writer = this.writerOf(version);
    const mark = this.stored.get(writer);
    if (mark === undefined || version > mark) this.stored.set(writer, version);
  }

  private async pollBackend(): Promise<void> {
    // What memcached holds by the time it answers: at least what was stored before it was asked.
    const stored: Stored = new Map(this.stored);
    let health: BackendHealth;
    try {
      health = await this.replica.health();
    } catch (error) {
      health = { ok: false, detail: String((error as Error).message ?? error), epoch: this.health.epoch };
    }
    const previous = this.health;
    this.health = health;
    this.backendPolls += 1;
    this.storedAtPoll = [...stored].map(([writer, version]) => [writer, String(version)]);
    this.memoryGuard.polled(health.memory, stored);
    if (previous.ok !== health.ok) {
      const level = health.ok ? 'info' : 'error';
      this.log[level](health.ok ? 'backend healthy' : 'backend down', { detail: health.detail });
    }
    if (!health.ok || this.stopped) return;
    const restarted = previous.epoch !== '' && health.epoch !== previous.epoch;
    if (restarted) this.epochAfterReset = health.epoch;
    else if (health.epoch !== previous.epoch) replacePrivateTextFile(this.epochFile, health.epoch);
    const { evicted, flushed } = this.noteLosses(health);
    this.noteItemLimit(health);
    const emptied = restarted || flushed;
    if (!emptied && !evicted && !this.backendFailed && this.replica.suspect === null) return;
    if (this.queuedReset !== null) {
      if (emptied) this.queuedReset.emptied = true;
      if (emptied || evicted) this.queuedReset.kept = false;
      return;
    }
    const kept = !emptied && !evicted && this.failuresKept;
    this.log.warn('backend lost its contents or missed writes; rebuilding the replica', { restarted, flushed, evicted, kept });
    this.queuedReset = { kind: 'backend_reset', nowMs: clockMs(), emptied, kept };
    this.lastResetQueuedMs = this.queuedReset.nowMs;
    this.enqueue(this.queuedReset);
  }

  /**
   * What memcached threw away since the last poll of the same epoch (see LossWatch): evicted items
   * (the replica is rebuilt like one that missed writes) or a flush_all another client sent (the
   * replica counts as emptied). Warns once when memcached is set to evict at all (no -M).
   */
  private noteLosses(health: BackendHealth): { evicted: boolean; flushed: boolean } {
    if (health.evictsWhenFull === true && !this.warnedEvictsWhenFull) {
      this.warnedEvictsWhenFull = true;
      this.log.warn('memcached evicts items when full (started without -M): an eviction loses data on this replica, which is then rebuilt from peers; start memcached with -M', { backend: health.detail });
    }
    const before = this.losses.state();
    const { evicted, flushedByOthers } = this.losses.observe(health);
    if (this.losses.state() !== before) replacePrivateTextFile(this.lossesFile, this.losses.state());
    if (evicted > 0) this.log.error('memcached evicted items this replica held', { evictions: evicted });
    if (flushedByOthers > 0) this.log.error('memcached was flushed by another client: this replica is empty', { flushes: flushedByOthers });
    return { evicted: evicted > 0, flushed: flushedByOthers > 0 };
  }

  /** Warns once when memcached takes shorter items than value_bytes_max allows (its -I is too small). */
  private noteItemLimit(health: BackendHealth): void {
    const itemBytesMax = health.memory?.itemBytesMax;
    if (this.warnedItemLimit || itemBytesMax === undefined) return;
    if (this.itemBytesNeeded <= itemBytesMax) return;
    this.warnedItemLimit = true;
    this.log.warn('memcached takes shorter items than value_bytes_max allows: longer values are refused (object too large for cache); start memcached with -I 2m, as startup.sh does, or lower value_bytes_max', {
      backend: health.detail,
      itemBytesMax,
      valueBytesMax: this.options.config.valueBytesMax,
    });
  }

  /** The mode has stepped the reset; once what it wrote is durable, the epoch counts as seen. */
  private recordEpochAfterReset(epoch: string): void {
    this.epochAfterReset = null;
    this.durability.whenDurable(this.durability.latest(), () => replacePrivateTextFile(this.epochFile, epoch));
  }

  /** `stats [group]` (see stats-group.ts). */
  private stats(group: string): Reply {
    const answer = statsGroup(group);
    if (answer.kind === 'reply') return answer.reply;
    if (answer.kind === 'reset') {
      this.counters.gets = this.counters.sets = this.counters.getHits = this.counters.getMisses = 0;
      this.connectionsTotalAtReset = this.server.stats().connectionsTotal;
      return { kind: 'reset' };
    }
    const serverStats = this.server.stats();
    const status = this.machine.status();
    const stats: Array<[string, string]> = [
      ['pid', String(process.pid)],
      ['uptime', String(Math.floor((clockMs() - this.startedAtMs) / 1000))],
      ['time', String(Math.floor(clockMs() / 1000))],
      ['version', `1.6.18 mckv-${MCKV_VERSION}`],
      ['curr_connections', String(serverStats.connectionsCurrent)],
      ['total_connections', String(serverStats.connectionsTotal - this.connectionsTotalAtReset)],
      ['cmd_get', String(this.counters.gets)],
      ['cmd_set', String(this.counters.sets)],
      ['get_hits', String(this.counters.getHits)],
      ['get_misses', String(this.counters.getMisses)],
      ['curr_items', String(this.replica.keyCount())],
      ['mckv_node', this.options.node.id],
      ['mckv_mode', this.options.mode],
      ['mckv_role', status.role],
      ['mckv_term', String(status.term)],
      ['mckv_committed', status.committed],
      ['mckv_applied', status.applied],
      ['mckv_queue_depth', String(status.queueDepth)],
      ['mckv_backend', `${this.options.backend.kind} ${this.options.backendAddress}`],
      ['mckv_backend_ok', this.health.ok ? '1' : '0'],
      ...peerStatsLines(this.network, status.invalidPeerMessages),
      ...walStatsLines(this.durability.stats(clockMs())),
      ...this.server.statsLines(),
      ...cacheStatsLines(this.replica),
    ];
    return { kind: 'stats', stats };
  }

  /** The HTTP status server (src/http/), reading this controller's parts when asked. */
  private createStatusHttp(listen: Address): StatusHttp {
    return new StatusHttp({
      node: this.options.node.id,
      mode: this.options.mode,
      listen,
      log: this.log.child({ component: 'http' }),
      source: {
        summary: () => this.summary(),
        peerView: () => this.network.peerView(),
        clientStats: () => this.server.stats(),
        keyCount: () => this.replica.keyCount(),
        indexEntries: () => this.replica.indexEntries(),
        fetch: (keys) => this.replica.fetch(keys),
      },
    });
  }

  /** This controller's own line in `show`, also sent to peers in every heartbeat. */
  private summary(): NodeSummary {
    const status = this.machine.status();
    return {
      node: this.options.node.id,
      mode: this.options.mode,
      role: status.role,
      term: status.term,
      leader: status.leader,
      committed: status.committed,
      applied: status.applied,
      queueDepth: status.queueDepth + this.queue.length - this.queueHead,
      opsServed: this.counters.opsServed,
      backend: `${this.options.backend.kind} ${this.options.backendAddress}`,
      backendOk: this.health.ok,
      backendDetail: this.health.detail,
      peersUp: this.network.peerView().map((view) => ({ peer: view.peer, up: view.up })),
      backendMemory: this.health.memory,
      backendPoll: this.backendPolls,
      backendStored: this.storedAtPoll,
      // A replica waiting for room fails again at least once a poll interval (see backendError).
      backendRefusal: this.lastRefusal !== null && clockMs() - this.lastRefusal.atMs <= 2 * backendPollIntervalMs ? this.lastRefusal.message : undefined,
      walFsyncSlowestRecentMs: Math.round(this.durability.stats(clockMs()).fsyncSlowestRecentMs),
    };
  }
}

/** A small state file's trimmed text, or '' when there is none. */
function readTextIfExists(file: string): string {
  try {
    return readFileSync(file, 'utf8').trim();
  } catch {
    return '';
  }
}

function isPowerOfTwoOrZero(count: number): boolean {
  return (count & (count - 1)) === 0;
}
