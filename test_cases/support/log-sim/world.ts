/**
 * What every part of the log simulator shares: simulated time, the options, the nodes, the result
 * being counted, the seeded random streams, and the parts themselves (network, controller, model
 * replicas, clients, checks, faults), so each part reaches another through this one object.
 *
 * Every random stream is seeded from `seed`: the main one draws the fault rates first, then the
 * `emptyAll` schedule, then whatever the run does; the others are streams of their own so that an
 * option that draws from one leaves the rest of a run drawing as it would without it.
 */

import { asPeerId, type PeerId } from '../../../src/consistency/types.ts';
import { mulberry32 } from '../../../src/runtime/random.ts';
import { Checks } from './checks.ts';
import { Clients } from './clients.ts';
import { SimController } from './controller.ts';
import { EveryReplicaLost } from './every-replica-lost.ts';
import { drawRates, Faults, type Rates } from './faults.ts';
import { SimNetwork } from './network.ts';
import { NodeLifecycle, type LogView, type SimNode } from './node.ts';
import { emptyResult, REQUEST_BOUND_MS, type SimOptions, type SimResult } from './options.ts';
import { Reference } from './reference.ts';
import { StoreFailures } from './store-failures.ts';
import { StoreModel } from './store.ts';

export class SimWorld {
  nowMs = 1_000_000;
  faultsOn: boolean;
  /** The faulty phase is over. */
  healed = false;
  readonly options: SimOptions;
  readonly ids: PeerId[];
  readonly nodes: SimNode[];
  readonly result: SimResult;
  readonly rates: Rates;
  /** When the faulty phase ends. */
  readonly safetyEndMs: number;
  /** REQUEST_BOUND_MS as a node's clock slow by the drift drawn counts it. */
  readonly requestBoundMs: number;
  readonly random: () => number;
  /** `storeFailures`: its own stream, so the rest of a run draws as it would without failures. */
  readonly failureRandom: () => number;
  /** `junkRate`: its own stream too. */
  readonly junkRandom: () => number;
  /** Pings and pongs meet their network's drops and delays from their own stream too. */
  readonly pingRandom: () => number;
  /** `readLeases`: clock origins and rates come from their own stream. */
  readonly clockRandom: () => number;
  /** `suspends`: its own stream too. */
  readonly suspendRandom: () => number;

  readonly network: SimNetwork;
  readonly controller: SimController;
  readonly lifecycle: NodeLifecycle;
  readonly store: StoreModel;
  readonly failures: StoreFailures;
  readonly replicasLost: EveryReplicaLost;
  readonly reference: Reference;
  readonly clients: Clients;
  readonly checks: Checks;
  readonly faults: Faults;

  constructor(options: SimOptions) {
    this.options = options;
    this.random = mulberry32(options.seed);
    this.faultsOn = options.faults;
    this.ids = Array.from({ length: options.nodeCount }, (_, index) => asPeerId(`n${index + 1}`));
    this.rates = drawRates(this.random);
    this.safetyEndMs = this.nowMs + options.safetyMs;
    this.failureRandom = mulberry32((options.seed ^ 0x5bd1e995) >>> 0);
    this.junkRandom = mulberry32((options.seed ^ 0x6a09e667) >>> 0);
    this.pingRandom = mulberry32((options.seed ^ 0x3c6ef372) >>> 0);
    this.clockRandom = mulberry32((options.seed ^ 0x510e527f) >>> 0);
    this.suspendRandom = mulberry32((options.seed ^ 0x9b05688c) >>> 0);
    const driftPpm =
      options.readLeases === undefined || options.readLeases === null ? 0 : (options.clockDriftPpm ?? options.readLeases.clockDriftPpmMax);
    this.requestBoundMs = Math.ceil(REQUEST_BOUND_MS / (1 - driftPpm / 1_000_000));
    this.result = emptyResult(options.seed);
    // A part's constructor reads the options and may draw (the emptyAll schedule), never another part.
    this.network = new SimNetwork(this);
    this.controller = new SimController(this);
    this.lifecycle = new NodeLifecycle(this);
    this.store = new StoreModel(this);
    this.failures = new StoreFailures(this);
    this.replicasLost = new EveryReplicaLost(this);
    this.reference = new Reference((options.readLeases ?? null) !== null);
    this.clients = new Clients(this);
    this.checks = new Checks(this);
    this.faults = new Faults(this);
    this.nodes = this.ids.map((id) => this.lifecycle.newNode(id));
  }

  node(id: PeerId): SimNode {
    const node = this.nodes.find((candidate) => candidate.id === id);
    if (node === undefined) throw new Error(`no node ${id}`);
    return node;
  }

  /** What the node's clock reads at simulated time `atMs` (0 stays 0: a store completion's). */
  localMs(node: SimNode, atMs: number): number {
    if (atMs === 0) return 0;
    const { originMs, bootMs, rate } = node.clock;
    return originMs + Math.floor((atMs - bootMs) * rate);
  }

  /**
   * A replica is rebuilt from a peer's, so the design survives losing one replica at a time: no
   * crash or backend reset while some node is still rebuilding (or down).
   */
  mayLoseReplica(): boolean {
    return this.nodes.every((node) => node.machine !== null && node.machine.inspect().replicaValid && !this.distrusted(node));
  }

  /** Whether the node's replica is suspect, or its machine was told so and has not reset it yet. */
  distrusted(node: SimNode): boolean {
    return node.trust === 'suspect' || node.trust === 'told';
  }

  /** Whether no node needs anything but log entries: all up, valid, caught up, no log behind a snapshot. */
  healthy(): boolean {
    const views = this.nodes.map((node) => node.machine?.inspect() ?? null);
    if (views.some((view) => view === null || !view.replicaValid || !view.caughtUp)) return false;
    const present = views.filter((view): view is LogView => view !== null);
    return Math.min(...present.map((view) => view.lastIndex)) >= Math.max(...present.map((view) => view.snapshotIndex));
  }
}
