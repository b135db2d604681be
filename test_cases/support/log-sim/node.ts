/**
 * One simulated node: the state the simulator keeps beside its machine (disk, model replica,
 * clock, requests, trust in its replica) and what happens to it as a process: a boot from its
 * durable records, a crash that loses what was not durable, a power loss that also cuts its file.
 * Separate because every other part reads a node, and only these three change what it is.
 */

import type { Event, KeyedEntry, PeerId, RequestId } from '../../../src/consistency/types.ts';
import { createReplicatedLog, type LogMessage, type ReplicatedLog } from '../../../src/consistency/replicated-log.ts';
import type { DurabilityGate } from '../../../src/controller/durability.ts';
import { HeldKeys } from '../../../src/controller/held-keys.ts';
import { mulberry32 } from '../../../src/runtime/random.ts';
import { itemAt } from '../../../src/runtime/item-at.ts';
import type { Entry, Op } from '../../../src/store/types.ts';
import { newGate, SimWriteAhead, type HeldWork, type OutwardEffect, type TransferMark } from './disk.ts';
import { FAILURE_TIMEOUT_MS, HEARTBEAT_MS, TICK_MS } from './options.ts';
import type { SimWorld } from './world.ts';

export type LogView = ReturnType<ReplicatedLog['inspect']>;

/** A machine's random source (its election timer's only draw; see `SimOptions.electionJitter`). */
function electionRandom(random: () => number, jitter: 'full' | 'narrow'): () => number {
  return jitter === 'full' ? random : () => 0.5 + 0.02 * random();
}

export interface InFlightRequest {
  client: number;
  op: Op;
  invokedMs: number;
  /** Lower bound on the position this op may take (completed ops before it). */
  lowerBound: number;
}

export interface SimNode {
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
  /** Events for the machine; a function makes its event when due (null: none after all). */
  localEvents: Array<{ atMs: number; event: Event<LogMessage> | (() => Event<LogMessage> | null) }>;
  downUntilMs: number;
  checkedCommit: number;
  lastTransfer: TransferMark;
  /** Applies up to here follow a transfer read key by key: a key may already hold them, or more. */
  aheadThrough: number;
  /** Counts the replica's resets: a fetch across one fails, as the Replica's does. */
  replicaResets: number;
  /** Paced fetches under way, by token: the keys listed when each was asked for, and how far it got. */
  pacedFetches: Map<number, { listed: KeyedEntry[]; at: number; resets: number }>;
  /** Puts since the last reset: a transfer's chunks, put as they come. */
  putsSinceReset: number;
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
  /** Its memcached restarts empty once what its controller issued before reached it (see EveryReplicaLost.emptyOnceIssued). */
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
export type ReplicaTrust = 'trusted' | 'suspect' | 'told' | 'restarted';

/** The store effects a backend carries out (the others are sends, replies, notes). */
export type StoreEffect = Extract<OutwardEffect, { kind: 'apply' | 'put' | 'fetch' | 'settle' | 'read' | 'purge' | 'reset' }>;

export const isStoreEffect = (effect: OutwardEffect): effect is StoreEffect =>
  effect.kind === 'apply' || effect.kind === 'put' || effect.kind === 'fetch' || effect.kind === 'settle' || effect.kind === 'read' || effect.kind === 'purge' || effect.kind === 'reset';

/** Creates, boots, crashes and cuts the power of the simulated nodes. */
export class NodeLifecycle {
  constructor(private readonly world: SimWorld) {}

  newNode(id: PeerId): SimNode {
    const world = this.world;
    const disk = new SimWriteAhead([], () => world.nowMs, () => world.controller.fsyncMs());
    return {
      id,
      machine: null,
      disk,
      gate: newGate(disk, () => undefined),
      replica: new Map(),
      replicaIndex: 0,
      nextTickMs: world.nowMs,
      nextRequestId: 1,
      requests: new Map(),
      localEvents: [],
      downUntilMs: 0,
      checkedCommit: 0,
      lastTransfer: { id: '', index: 0, through: 0, chunkCount: 1 },
      aheadThrough: 0,
      replicaResets: 0,
      pacedFetches: new Map(),
      putsSinceReset: 0,
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
      clock: { originMs: world.nowMs, bootMs: world.nowMs, rate: 1 },
      leaseReadsBefore: 0,
      boot: 1,
      lostPower: false,
      suspension: null,
      peersHeldUntilMs: 0,
    };
  }

  /**
   * A new process's clock: with read leases, its own origin and its own rate within the drift drawn.
   *
   * Read leases (option `readLeases`): each node's clock runs at its own rate within the drift drawn
   * and from its own origin per boot; a `keysOnly` read runs ahead of held effects that change none
   * of its keys, as in the controller; a get is judged per key (its key unchanged between where it
   * was served and every op completed before it started: linearizability, which is local).
   */
  private newClock(): SimNode['clock'] {
    const world = this.world;
    const leases = world.options.readLeases ?? null;
    if (leases === null) return { originMs: world.nowMs, bootMs: world.nowMs, rate: 1 };
    const ppm = world.options.clockDriftPpm ?? leases.clockDriftPpmMax;
    const rate = 1 + ((2 * world.clockRandom() - 1) * ppm) / 1_000_000;
    // Below 1e8: a store completion's nowMs of 0 must stay within the machine's bound on time going back.
    return { originMs: 1_000_000 + Math.floor(world.clockRandom() * 100_000_000), bootMs: world.nowMs, rate };
  }

  boot(node: SimNode): void {
    const world = this.world;
    node.clock = this.newClock();
    node.heldKeys = new HeldKeys();
    node.machine = createReplicatedLog({
      self: node.id,
      peers: world.ids,
      random: electionRandom(mulberry32(Math.floor(world.random() * 2 ** 32)), world.options.electionJitter ?? 'full'),
      heartbeatIntervalMs: HEARTBEAT_MS,
      failureTimeoutMs: FAILURE_TIMEOUT_MS,
      persisted: node.disk.durable.slice(),
      nowMs: world.localMs(node, world.nowMs),
      mode: world.options.mode,
      readLeases: world.options.readLeases ?? null,
      compactionThresholdEntries: world.options.compactionThresholdEntries,
      ...(world.options.compactionThresholdBytes === undefined ? {} : { compactionThresholdBytes: world.options.compactionThresholdBytes }),
      ...(world.options.silentFollowerKeptFailureTimeouts === undefined
        ? {} : { silentFollowerKeptFailureTimeouts: world.options.silentFollowerKeptFailureTimeouts }),
      transferChunkEntriesMax: 2,
      replicaSkipsApplied: world.options.replicaSkipsApplied,
      // Without recovery (`trustAfterPowerLoss`) every boot looks the same: records are trusted.
      bootId: world.options.powerLoss === true && world.options.trustAfterPowerLoss !== true ? `boot-${node.boot}` : null,
    });
    // A restarted controller numbers its requests from 1 again; what it read back is durable.
    node.disk = new SimWriteAhead(node.disk.durable, () => world.nowMs, () => world.controller.fsyncMs());
    node.gate = newGate(node.disk, (work) => world.controller.release(node, work));
    node.emptiedRecords = 0;
    node.nextRequestId = 1;
    node.checkedCommit = 0;
    node.nextTickMs = world.nowMs + Math.floor(world.random() * TICK_MS);
    node.localEvents = [];
    if (node.replicaLost) {
      // The controller notices an emptied backend (its epoch changed) and says so.
      node.replicaLost = false;
      world.controller.step(node, { kind: 'backend_reset', nowMs: world.nowMs, emptied: true });
    }
  }

  crash(node: SimNode, keepReplica = false): void {
    const world = this.world;
    node.leaseReadsBefore += node.machine?.inspect().leaseReads ?? 0;
    node.machine = null;
    node.pacedFetches.clear();
    // What was not durable is lost, and so is every effect that waited for it.
    world.result.recordsLost += node.gate.stats(world.nowMs).recordsWaiting;
    world.result.heldEffectsLost += node.gate.waitingCount();
    if (node.gate.position().durable < node.emptiedRecords) node.replicaLost = true;
    node.gate.close();
    if (node.emptyPending) {
      node.emptyPending = false;
      world.replicasLost.emptyNow(node);
      node.replicaLost = true;
    }
    world.result.crashes += 1;
    world.clients.onCrash(node);
    node.requests.clear();
    // An emptied backend the machine was not told of yet (it slept): told at boot.
    if (node.localEvents.some(({ event }) => typeof event !== 'function' && event.kind === 'backend_reset' && event.emptied)) node.replicaLost = true;
    node.localEvents = [];
    node.suspension = null;
    node.peersHeldUntilMs = 0;
    node.downUntilMs = world.nowMs + 100 + Math.floor(world.random() * 1500);
    if (world.distrusted(node)) world.result.crashesWhileUntrusted += 1;
    if (world.options.powerLoss === true && !keepReplica && world.random() < 0.5 && world.nodes.every((other) => !other.lostPower)) {
      this.losePower(node);
      if (world.options.powerLossPairs === true) this.maybeTakePartner(node);
    } else if (!keepReplica && world.random() < 0.4) {
      node.replica.clear();
      node.replicaIndex = 0;
      node.replicaLost = true;
      node.trust = 'trusted';
    }
    // The new controller process trusts its backend again: the failure is forgotten.
    node.resetDueMs = null;
    node.crashAtMs = null;
    node.crashWhenTold = false;
    if (world.distrusted(node)) node.trust = 'restarted';
  }

  /** `powerLossPairs`: half the time a second running node loses power with `node`, keeping its records. */
  private maybeTakePartner(node: SimNode): void {
    const world = this.world;
    const running = world.nodes.filter((other) => other !== node && other.machine !== null);
    if (running.length === 0 || world.random() < 0.5) return;
    const partner = itemAt(running, Math.floor(world.random() * running.length));
    this.crash(partner, true);
    this.losePower(partner, true);
  }

  /**
   * The machine lost power (`powerLoss`): the records written since the last compaction are cut at
   * a random point (none with `keepRecords`), the replica is empty, and the node boots in a new boot.
   */
  private losePower(node: SimNode, keepRecords = false): void {
    const world = this.world;
    const durable = node.disk.durable;
    const synced = durable.length > 0 && (durable[0] as { kind?: unknown }).kind === 'snapshot' ? 1 : 0;
    const kept = keepRecords ? durable.length : synced + Math.floor(world.random() * (durable.length - synced + 1));
    world.result.recordsLost += durable.length - kept;
    node.disk.durable = durable.slice(0, kept);
    node.boot += 1;
    node.lostPower = true;
    node.replica.clear();
    node.replicaIndex = 0;
    node.replicaLost = true;
    node.trust = 'trusted';
    world.result.powerLosses += 1;
  }
}
