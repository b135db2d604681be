/**
 * The fault schedule of the faulty phase: every 100-500 ms one random node meets one fault, as the
 * config allows: a partition, a crash (restarted 50-800 ms later, its replica kept), an emptied
 * replica (`backendResets`), a full memcached (`refusals`) or a slow one (`slowBackends`); then
 * the heal that ends it all. Separate so what a seed does to the cluster can be read in one place.
 */

import { itemAt } from '../../../src/runtime/item-at.ts';
import type { SimNode } from './node.ts';
import type { SimWorld } from './world.ts';

export class Faults {
  constructor(private readonly world: SimWorld) {}

  /** Faults from 50-300 ms from now until the faulty phase ends. */
  schedule(): void {
    const world = this.world;
    world.everyUntilFaultsEnd(world.nowMs + world.between(50, 300), () => this.fault(), () => world.between(100, 500));
  }

  private fault(): void {
    const world = this.world;
    const config = world.config;
    const node = itemAt(world.nodes, Math.floor(world.random() * world.nodes.length));
    const roll = world.random();
    if (roll < 0.4 && config.partitions) world.network.partition(node);
    else if (roll < 0.7 && config.crashes && node.machine !== null) this.crash(node);
    else if (roll < 0.8 && config.backendResets && node.machine !== null) this.emptyBackend(node);
    else if (roll < 0.95 && config.refusals) node.fullUntilMs = world.nowMs + world.between(100, 800);
    else if (config.slowBackends) node.slowUntilMs = world.nowMs + world.between(100, 800);
  }

  private crash(node: SimNode): void {
    const world = this.world;
    world.stats.crashes += 1;
    node.machine = null;
    node.incarnation += 1;
    world.at(world.nowMs + world.between(50, 800), () => {
      if (node.machine === null) world.lifecycle.start(node);
    });
  }

  private emptyBackend(node: SimNode): void {
    const world = this.world;
    world.stats.resets += 1;
    node.replica.clear();
    world.controller.step(node, { kind: 'backend_reset', nowMs: world.nodeNow(node) });
  }

  /** Faults stop: links heal, nodes restart, the network stops losing messages. */
  heal(): void {
    const world = this.world;
    world.network.heal();
    for (const node of world.nodes) {
      node.fullUntilMs = 0;
      node.slowUntilMs = 0;
      if (node.machine === null) world.lifecycle.start(node);
    }
  }
}
