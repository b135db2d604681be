/**
 * What every part of the eventual-mode simulator shares: simulated time and the agenda of tasks,
 * the config, the three nodes, the stats being counted, the first failed check, the seeded random
 * streams, and the parts themselves (network, controller, model replicas, clients, faults,
 * checks), so each part reaches another through this one object.
 *
 * The main stream draws the network's rates first, then each node's clock skew, then whatever the
 * run does; malformed messages (`junkRate`) draw from a stream of their own, so a run draws
 * everything else as it would without them.
 */

import { asPeerId } from '../../../src/consistency/types.ts';
import { mulberry32 } from '../../../src/runtime/random.ts';
import { Checks } from './checks.ts';
import { Clients } from './clients.ts';
import { SimController } from './controller.ts';
import { Faults } from './faults.ts';
import { SimNetwork } from './network.ts';
import { newNode, NodeLifecycle, type SimNode } from './node.ts';
import { START_MS, type SimConfig } from './options.ts';
import { ReplicaModel } from './replica.ts';
import { TaskQueue } from './task-queue.ts';

export class SimWorld {
  nowMs = START_MS;
  /** The first failed check (with when it failed), null while every check passes. */
  problem: string | null = null;
  readonly stats = { ops: 0, messages: 0, dropped: 0, crashes: 0, resets: 0, purged: 0, refused: 0, slowed: 0, junk: 0, incremented: 0 };
  private readonly tasks = new TaskQueue();
  private seq = 0;

  readonly config: SimConfig;
  readonly random: () => number;
  /** `junkRate`: its own stream, so a run draws everything else as it would without junk. */
  readonly junkRandom: () => number;
  readonly nodes: SimNode[];

  readonly network: SimNetwork;
  readonly lifecycle: NodeLifecycle;
  readonly controller: SimController;
  readonly replicas: ReplicaModel;
  readonly clients: Clients;
  readonly faults: Faults;
  readonly checks: Checks;

  constructor(config: SimConfig) {
    this.config = config;
    this.random = mulberry32(config.seed);
    this.junkRandom = mulberry32((config.seed ^ 0x6a09e667) >>> 0);
    // The network draws its rates, then each node its clock skew; no other part draws when made.
    this.network = new SimNetwork(this);
    this.nodes = ['n1', 'n2', 'n3'].map((name) => newNode(asPeerId(name), Math.floor(this.random() * 80) - 40));
    this.lifecycle = new NodeLifecycle(this);
    this.controller = new SimController(this);
    this.replicas = new ReplicaModel(this);
    this.clients = new Clients(this);
    this.faults = new Faults(this);
    this.checks = new Checks(this);
  }

  /** Schedules `run` at simulated time `atMs` (after every task already due then). */
  at(atMs: number, run: () => void): void {
    this.seq += 1;
    this.tasks.push({ atMs, seq: this.seq, run });
  }

  /** Runs `step` at `firstAtMs`, then again `gapMs()` after each run, until the faulty phase ends. */
  everyUntilFaultsEnd(firstAtMs: number, step: () => void, gapMs: () => number): void {
    const next = (): void => {
      if (this.nowMs >= START_MS + this.config.faultMs) return;
      step();
      this.at(this.nowMs + gapMs(), next);
    };
    this.at(firstAtMs, next);
  }

  /** A whole number of milliseconds in [lowMs, highMs], from the main stream. */
  between(lowMs: number, highMs: number): number {
    return lowMs + Math.floor(this.random() * (highMs - lowMs + 1));
  }

  /** Runs every task due by `untilMs` (stopping at the first failed check), then moves time there. */
  runUntil(untilMs: number): void {
    while (this.problem === null && this.tasks.peekAtMs() <= untilMs) {
      const task = this.tasks.pop();
      if (task === undefined) break;
      this.nowMs = task.atMs;
      task.run();
    }
    this.nowMs = Math.max(this.nowMs, untilMs);
  }

  /** What the node's clock reads now (simulated time plus its skew). */
  nodeNow(node: SimNode): number {
    return this.nowMs + node.skewMs;
  }

  /** Records a failed check; the first one stands. */
  fail(problem: string): void {
    if (this.problem === null) this.problem = `${problem} (at +${this.nowMs - START_MS} ms)`;
  }
}
