/**
 * The simulated clients: during the faulty phase, every 1 to `opGapMsMax` ms, a random op (any
 * verb memcached takes, on `keyCount` keys; or only increments of COUNTER_KEY with `countersOnly`)
 * arrives at a random node that is up. Separate because the workload's draws are the bulk of a
 * run's random stream.
 */

import { asRequestId } from '../../../src/consistency/types.ts';
import { itemAt } from '../../../src/runtime/item-at.ts';
import type { Op } from '../../../src/store/types.ts';
import type { SimNode } from './node.ts';
import { COUNTER_KEY } from './options.ts';
import type { SimWorld } from './world.ts';

export class Clients {
  private requestId = 1;

  constructor(private readonly world: SimWorld) {}

  /** Client ops from 1 ms from now until the faulty phase ends. */
  schedule(): void {
    const world = this.world;
    world.everyUntilFaultsEnd(world.nowMs + 1, () => this.clientOp(), () => world.between(1, world.config.opGapMsMax));
  }

  private clientOp(): void {
    const world = this.world;
    const node = itemAt(world.nodes, Math.floor(world.random() * world.nodes.length));
    if (node.machine === null) return;
    const op = this.randomOp(node);
    world.stats.ops += 1;
    const requestId = asRequestId(this.requestId);
    this.requestId += 1;
    world.controller.step(node, { kind: 'request', nowMs: world.nodeNow(node), requestId, session: 1, op });
  }

  private randomOp(node: SimNode): Op {
    const world = this.world;
    const config = world.config;
    if (config.countersOnly === true) {
      if (world.stats.ops === 0) return { kind: 'store', verb: 'set', key: COUNTER_KEY, flags: 0, expiresAtMs: 0, value: Buffer.from('0'), casUnique: 0n };
      return { kind: 'arith', verb: 'incr', key: COUNTER_KEY, delta: 1n, initial: null, expiresAtMs: 0 };
    }
    const key = `k${Math.floor(world.random() * config.keyCount)}`;
    const roll = world.random();
    const expiresAtMs = world.random() < 0.15 ? world.nodeNow(node) + world.between(50, 2500) : 0;
    const value = Buffer.from(world.random() < 0.5 ? String(world.between(0, 999)) : `v${world.between(0, 99999)}`);
    const store = (verb: 'set' | 'add' | 'replace' | 'append' | 'prepend' | 'cas', casUnique = 0n): Op => ({
      kind: 'store', verb, key, flags: world.between(0, 3), expiresAtMs, value, casUnique,
    });
    if (roll < 0.3) return store('set');
    if (roll < 0.35) return store('add');
    if (roll < 0.4) return store('replace');
    if (roll < 0.48) return store('append');
    if (roll < 0.52) return store('prepend');
    if (roll < 0.58) return store('cas', node.replica.get(key)?.cas ?? 1n);
    if (roll < 0.72) {
      const initial = world.random() < 0.3 ? 0n : null;
      const verb = world.random() < 0.7 ? 'incr' : 'decr';
      return { kind: 'arith', verb, key, delta: BigInt(world.between(1, 5)), initial, expiresAtMs };
    }
    if (roll < 0.84) return { kind: 'delete', key };
    if (roll < 0.87) return { kind: 'touch', key, expiresAtMs };
    if (roll < 0.89) return { kind: 'gat', keys: [key, `k${world.between(0, config.keyCount - 1)}`], expiresAtMs };
    if (roll < 0.995) return { kind: 'get', keys: [key] };
    return { kind: 'flush_all', delayMs: world.random() < 0.7 ? 0 : world.between(50, 500) };
  }
}
