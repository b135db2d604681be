/**
 * One mckv controller: thin glue between the client protocol server, the consistency mode, the
 * peer network and the local replica. It makes no protocol decision.
 *
 * Every input — a client command, a peer message, a timer tick, a store completion — becomes an
 * event in one queue. The loop runs a bounded number of events per turn through the mode's
 * `step` and hands the effects, in the order returned, to the effect runner (controller/effects.ts),
 * which holds what depends on a write-ahead record until the record is durable. The parts are
 * made elsewhere (controller/parts.ts) and handed in; the backend watch (controller/backend-watch.ts)
 * says when the replica must be rebuilt.
 */

import { clockMs, takeClockJumpMs } from '../runtime/clock.ts';
import { causalCommand } from './causal-commands.ts';
import type { Effect, Event, Machine, Mode, PeerId } from '../consistency/types.ts';
import { toOp } from './commands.ts';
import type { ClusterConfig, NodeConfig } from '../config.ts';
import type { Logger } from '../runtime/log.ts';
import type { PeerNetwork } from '../peer/network.ts';
import type { ConnectionInfo, ProtocolServer } from '../protocol/server.ts';
import type { Command, Reply } from '../protocol/types.ts';
import { refused } from '../protocol/refusals.ts';
import type { Replica } from '../store/replica.ts';
import type { KVBackend } from '../store/types.ts';
import type { StatusHttp } from '../http/server.ts';
import type { BackendWatch } from './backend-watch.ts';
import type { DurabilityError } from './durability.ts';
import { EffectRunner } from './effects.ts';
import type { ControllerHooks, ControllerParts } from './parts.ts';
import { foreignReplicaRefusal, readReplicaMarker, replicaAtStart, writeReplicaMarker, type ReplicaOwner } from './replica-owner.ts';
import { PendingRequests } from './requests.ts';
import { ControllerStatus, VERSION_TEXT } from './status.ts';

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
  /** The node lost its data_dir (--rejoin): the replicated log recovers from its peers first. */
  rejoin?: boolean;
  /** Testing: a file whose number of ms delays every write-ahead fsync (see FSYNC_DELAY_FILE_ENV). */
  fsyncDelayFile?: string | null;
  /**
   * Told once when this controller cannot go on (the write-ahead file refused a write): it has
   * stopped stepping the mode, and the caller ends the process at once, without a graceful stop.
   */
  fatal: (error: Error) => void;
}

/** Events run per turn of the Node event loop before yielding to I/O. */
const eventsPerTurnMax = 1024;

/** How often overdue requests are swept (one timer for all, not one per request). */
const requestSweepIntervalMs = 1000;
/** How long a stopping controller waits for its last peer messages (its `leave`) to go out. */
const LEAVE_FLUSH_MS = 200;
/** How long a stopping controller steps a mode that hands over writes (Machine.handingOver). */
const HANDOVER_MS_MAX = 1000;

export class Controller {
  private readonly machine: Machine<unknown>;
  private readonly replica: Replica;
  private readonly network: PeerNetwork;
  private readonly server: ProtocolServer;
  private readonly http: StatusHttp | null;
  private readonly watch: BackendWatch;
  private readonly effects: EffectRunner;
  private readonly requests: PendingRequests;
  private readonly status: ControllerStatus;
  private readonly log: Logger;
  /** What decides, at start, whether the mode takes the replica as its own (see replica-owner.ts). */
  private readonly replicaOwner: ReplicaOwner;
  /** Events waiting to run; `queueHead` is the first unrun one (no O(n) shift per event). */
  private queue: Event<unknown>[] = [];
  private queueHead = 0;
  private drainScheduled = false;
  private draining = false;
  private flushScheduled = false;
  private stopped = false;
  /** Stopping, its clients gone, while the mode hands its peers what only it holds. */
  private leaving = false;
  private timers: NodeJS.Timeout[] = [];

  private constructor(
    private readonly options: ControllerOptions,
    makeParts: (hooks: ControllerHooks) => ControllerParts,
  ) {
    const parts = makeParts({
      enqueue: (event) => this.enqueue(event),
      whenDurable: (work) => this.effects.whenDurable(work),
      handle: (command, connection) => this.handle(command, connection),
      summary: () => this.status.summary(),
    });
    ({ log: this.log, machine: this.machine, replica: this.replica, watch: this.watch } = parts);
    ({ network: this.network, server: this.server, http: this.http, replicaOwner: this.replicaOwner } = parts);
    this.status = new ControllerStatus({
      ...parts,
      node: options.node.id,
      mode: options.mode,
      backend: `${options.backend.kind} ${options.backendAddress}`,
      durability: { stats: (nowMs) => this.effects.durability.stats(nowMs) },
      eventsQueued: () => this.queue.length - this.queueHead,
    });
    this.requests = new PendingRequests((reply) => this.status.countReply(reply));
    this.effects = new EffectRunner({
      ...parts,
      sync: options.config.walSync,
      failed: (error) => this.stopForDurability(error),
      fsynced: (ms) => this.http?.metrics.observeWalFsync(ms / 1000),
      requests: this.requests,
      status: this.status,
      enqueue: (event) => this.enqueue(event),
      endSessions: () => this.server.closeConnections(),
    });
  }

  /**
   * Starts a controller on the parts `makeParts` makes (see controller/parts.ts): peers
   * listening, client port open, timers running.
   */
  static async start(options: ControllerOptions, makeParts: (hooks: ControllerHooks) => ControllerParts): Promise<Controller> {
    const controller = new Controller(options, makeParts);
    await controller.open();
    return controller;
  }

  private async open(): Promise<void> {
    this.network.on('message', (from: PeerId, message: unknown) => {
      this.enqueue({ kind: 'message', nowMs: clockMs(), from, message });
    });
    this.network.on('memory-report', (from: PeerId, report) => {
      this.enqueue({ kind: 'memory_report', nowMs: clockMs(), from, report });
    });
    // A peer's connections all closed and a redial failed: the mode hears it now, not at the next
    // tick (its leader may have exited; see Election.hurry).
    this.network.on('peer-cut', () => this.tickNow(0));
    const indexed = await this.replica.loadIndex().catch((error: unknown) => {
      this.log.warn('could not list the keys the backend already holds', { error: String(error) });
      return 0;
    });
    if (indexed > 0) this.log.info('backend already holds keys', { keys: indexed });
    await this.claimReplica(indexed);
    // Before anything is served: a backend that restarted while this controller was down is reset.
    await this.watch.poll();
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
    this.watch.start();
    const sweepOverdue = (): void => this.requests.answerOverdue(clockMs(), () => refused('controller_timeout'));
    this.timers.push(setInterval(sweepOverdue, requestSweepIntervalMs));
    this.log.info('controller started', {
      mode: this.options.mode,
      client: `${this.options.node.client.host}:${this.options.node.client.port}`,
      peer: `${this.options.node.peer.host}:${this.options.node.peer.port}`,
      backend: `${this.options.backend.kind} ${this.options.backendAddress}`,
    });
  }

  /**
   * Takes the replica as this mode's own, or refuses to start over one an ordered mode cannot vouch
   * for (see replica-owner.ts); records the mode beside the node's other state files.
   */
  private async claimReplica(keys: number): Promise<void> {
    const { mode, stateDir, logRecords, rejoin } = this.replicaOwner;
    const start = replicaAtStart(mode, readReplicaMarker(stateDir), { logRecords, rejoin, keys });
    if (start.kind === 'refuse') {
      await this.options.backend.close();
      throw new Error(foreignReplicaRefusal(this.options.backendAddress, keys, start.why, mode));
    }
    if (start.kind === 'rebuild') {
      this.log.warn('the replica was written outside this log and is empty now: rebuilding it from the log and peers', { why: start.why });
      this.watch.rebuildAtStart(() => writeReplicaMarker(stateDir, mode));
      return;
    }
    writeReplicaMarker(stateDir, mode);
  }

  /**
   * Stops taking clients, tells the peers (the mode's `stopping` step), closes peers and the
   * backend. Pending requests get SERVER_ERROR. A mode that hands its peers writes only it holds
   * (eventual, causal) is stepped on until it has, for at most HANDOVER_MS_MAX; a log mode's
   * `stopping` step is its last, since a peer that hears from it after its `leave` takes it back.
   */
  async stop(): Promise<void> {
    if (this.stopped || this.leaving) return;
    this.watch.stop();
    this.requests.answerAll(() => refused('shutting_down'));
    // Every client connection ends here, at once: nothing is answered after the peers hear we left.
    const serverClosed = this.server.close();
    // Health checks see it gone as its clients do (its metrics with it).
    const httpClosed = this.http?.close();
    const handsOver = this.machine.handingOver !== undefined;
    if (handsOver) await this.handOver();
    this.stopped = true;
    for (const timer of this.timers) clearInterval(timer);
    if (!handsOver) for (const effect of this.machine.step({ kind: 'stopping', nowMs: clockMs() })) this.effects.carryOut(effect);
    this.effects.stop();
    await serverClosed;
    await httpClosed;
    await this.network.stop({ flushMs: LEAVE_FLUSH_MS });
    // Stores sent quietly are done once memcached vouches for them; closing first would lose that word.
    await this.options.backend.settle?.().catch(() => {});
    await this.options.backend.close();
    this.effects.durability.close();
    this.log.info('controller stopped');
  }

  /** The mode's `stopping` step through the queue, then its events, until it has handed over or the time is up. */
  private async handOver(): Promise<void> {
    this.leaving = true;
    const deadlineMs = clockMs() + HANDOVER_MS_MAX;
    this.enqueue({ kind: 'stopping', nowMs: clockMs() });
    do {
      await new Promise((resolve) => setTimeout(resolve, 2));
    } while (this.machine.handingOver?.() === true && clockMs() < deadlineMs);
    if (this.machine.handingOver?.() === true) {
      this.log.warn('stopping before every local write reached the peers up: the rest goes when this node is back (anti-entropy)', {
        afterMs: HANDOVER_MS_MAX,
      });
    } else {
      this.log.info('local writes handed to the peers up');
    }
  }

  private handle(command: Command, connection: ConnectionInfo): Promise<Reply> | Reply {
    const nowMs = clockMs();
    switch (command.kind) {
      case 'show':
        return this.status.show(command.json === true);
      case 'stats':
        return this.status.stats(command.group);
      case 'version':
        return { kind: 'version', version: VERSION_TEXT };
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
    if (this.stopped || this.leaving) return refused('shutting_down');
    // memcached down for a second: refused at once and certainly without effect (the mode never
    // sees it), so a client retries at another controller instead of waiting for this replica.
    const unreachable = this.watch.unreachable(nowMs);
    if (unreachable !== null) return refused('not_caught_up', `its memcached does not answer (${unreachable})`);
    // A get may be answered here, before any drain: the mode hears of a stall first (drain checks the rest).
    if (op.kind === 'get') this.noticePause();
    this.status.countOp(op);
    // Nothing of the controller's nor of this connection's comes before it: the server hands a
    // connection's commands over without waiting for earlier replies, and an earlier request of
    // the connection may still wait (in the mode, or behind the disk: an apply of its write, a
    // read queued after others' applies), which a read served now would overtake.
    const nothingBefore = !this.draining && this.queueHead >= this.queue.length
      && !this.requests.holdsAnyOf(connection.id) && !this.effects.holdsApplyOf(connection.id);
    const localRead = op.kind === 'get' ? { keys: op.keys, appliesDone: !this.effects.holdsKeys(op.keys) } : undefined;
    if (op.kind === 'get' && nothingBefore && this.machine.readsLocally?.(nowMs, connection.id, localRead) === true) {
      // The mode would only turn it into a read: serve it from the replica without a step.
      // Others' writes that wait for the disk are not answered yet: reading before them is
      // allowed to a sequential read, not to a linearizable one, hence `appliesDone`.
      const served = this.replica.readNow(op, nowMs);
      if (served !== null) return this.status.countRead(op, served);
    }
    const request = this.requests.open(connection.id, nowMs);
    const event: Event<unknown> = { kind: 'request', nowMs, requestId: request.requestId, session: connection.id, op };
    if (this.draining || this.queueHead < this.queue.length) {
      this.enqueue(event);
    } else {
      // Nothing waits before it: step it now (a read the replica can serve at once is answered
      // without a promise or a turn); what the mode batches still goes out on the turn's flush.
      this.queue.push(event);
      this.drain(false);
    }
    return request.reply();
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
   * of this turn, so one message and one write-ahead batch still carry the whole turn's work.
   */
  private drain(flushNow = true): void {
    this.drainScheduled = false;
    // Whatever was queued (a peer's message, a backend's answer, a wake-up) may be the first thing
    // run after a stall: the mode hears of the pause before it judges anything by peers' silence.
    this.noticePause();
    this.draining = true;
    try {
      this.runQueued();
    } finally {
      this.draining = false;
    }
    if (this.queueHead < this.queue.length) {
      this.settle();
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
    if (!this.stopped) for (const effect of this.machine.step({ kind: 'flush', nowMs: clockMs() })) this.effects.carryOut(effect);
    this.settle();
  }

  private runQueued(): void {
    let budget = eventsPerTurnMax;
    for (let queued = this.queue[this.queueHead]; queued !== undefined && budget-- > 0; queued = this.queue[this.queueHead]) {
      if (this.stopped) break;
      this.queueHead += 1;
      // A reset is queued bare; the watch says what it carries as it is taken.
      const event = queued.kind === 'backend_reset' ? this.watch.takeReset(queued) : queued;
      let effects: Effect<unknown>[];
      try {
        effects = this.machine.step(event);
      } catch (error) {
        // A broken invariant in the mode: crash rather than serve wrong answers.
        this.log.error('consistency state machine failed', { error: String((error as Error).stack ?? error) });
        throw error;
      }
      if (event.kind === 'backend_reset') this.watch.resetStepped();
      for (const effect of effects) this.effects.carryOut(effect);
      if (event.kind === 'backend_reset') this.watch.resetCarriedOut();
    }
    if (this.queueHead >= this.queue.length) {
      this.queue = [];
      this.queueHead = 0;
    } else if (this.queueHead > 4096) {
      this.queue = this.queue.slice(this.queueHead);
      this.queueHead = 0;
    }
  }

  /**
   * The disk refused a write-ahead record (full, failing) or its fsync: durability is lost, and it
   * is better to stop than to act on a vote or entry that may vanish. The file holds nothing of the
   * refused batch (the writer cuts it back); the peers go on without this node.
   */
  private stopForDurability(error: DurabilityError): void {
    this.log.error('write-ahead file refused a write; stopping', { code: error.code, error: error.message });
    // Nothing more is queued, stepped or written before the caller exits.
    this.stopped = true;
    this.options.fatal(error);
  }

  /** The end of a turn: what the mode wrote this turn goes to the disk as one batch. */
  private settle(): void {
    if (!this.stopped) this.effects.durability.writeAppended();
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
   * A request, a peer's message or any queued event can be the first thing this node runs after
   * a stall (the poll phase can come before the tick's timer): a tick that tells the mode of the
   * pause goes ahead of everything queued, before anything is judged by its peers' silence.
   */
  private noticePause(): void {
    const pausedMs = this.network.excuseOwnPause();
    if (pausedMs > 0 && !this.stopped) this.queue.splice(this.queueHead, 0, this.tickEvent(pausedMs));
    // A suspended machine's monotonic clock stood still: its read leases end before anything runs.
    const aheadMs = takeClockJumpMs();
    if (aheadMs > 0 && !this.stopped) this.queue.splice(this.queueHead, 0, { kind: 'clock_jump', nowMs: clockMs(), aheadMs });
  }

  private tickNow(pausedMs: number): void {
    this.enqueue(this.tickEvent(pausedMs));
  }

  private tickEvent(pausedMs: number): Event<unknown> {
    const peers = this.network.peerView();
    const peersUp = peers.filter((view) => view.up).map((view) => view.peer);
    const peersCut = peers.filter((view) => view.cut).map((view) => view.peer);
    return { kind: 'tick', nowMs: clockMs(), peersUp, peersCut, ...(pausedMs > 0 ? { pausedMs: Math.round(pausedMs) } : {}) };
  }
}
