/**
 * A simulated node: its machine (eventual or causal), the incarnation that tells a restarted
 * process's events from a dead one's, its model replica (memcached as a Map of entries) and the
 * state of that memcached (full, slow, effects still due), its clock skew; and its start, with the
 * tick that drives it from then on. Separate because every other part reads a node.
 */

import { createEventual, type EventualMessage, type EventualMachine } from '../../../src/consistency/eventual.ts';
import { createCausal, type CausalMachine } from '../../../src/consistency/causal.ts';
import { HLC_ZERO, type Hlc } from '../../../src/consistency/hlc.ts';
import type { Effect, Event, PeerId } from '../../../src/consistency/types.ts';
import { mulberry32 } from '../../../src/runtime/random.ts';
import type { Entry } from '../../../src/store/types.ts';
import type { SimWorld } from './world.ts';

/** What the simulator needs of a machine beyond stepping it. */
export type SimMachine = (EventualMachine | CausalMachine) & {
  step(event: Event<EventualMessage>): Effect<EventualMessage>[];
};

export interface SimNode {
  id: PeerId;
  machine: SimMachine | null;
  incarnation: number;
  replica: Map<string, Entry>;
  skewMs: number;
  lastHlc: Hlc;
  /** Until then the node's memcached is full and refuses writes (see SimConfig.refusals). */
  fullUntilMs: number;
  /** Until then the node's memcached is slow (see SimConfig.slowBackends). */
  slowUntilMs: number;
  /** When the last store effect issued on each key takes effect (see SimConfig.slowBackends). */
  keyDueMs: Map<string, number>;
  /** When the last effect on every key takes effect, and when the latest effect of any. */
  barrierDueMs: number;
  lastDueMs: number;
}

/** A node not started yet, its clock `skewMs` off simulated time. */
export function newNode(id: PeerId, skewMs: number): SimNode {
  return {
    id,
    machine: null,
    incarnation: 0,
    replica: new Map(),
    skewMs,
    lastHlc: HLC_ZERO,
    fullUntilMs: 0,
    slowUntilMs: 0,
    keyDueMs: new Map(),
    barrierDueMs: 0,
    lastDueMs: 0,
  };
}

export class NodeLifecycle {
  constructor(private readonly world: SimWorld) {}

  /** A new incarnation: a fresh machine (nothing persisted), ticking from a random offset. */
  start(node: SimNode): void {
    const world = this.world;
    node.incarnation += 1;
    node.lastHlc = HLC_ZERO;
    const seed = Math.floor(world.random() * 2 ** 32);
    const create = world.config.mode === 'causal' ? createCausal : createEventual;
    node.machine = create({
      self: node.id,
      peers: world.nodes.map((other) => other.id).filter((id) => id !== node.id),
      random: mulberry32(seed),
      heartbeatIntervalMs: world.config.heartbeatIntervalMs,
      failureTimeoutMs: 4 * world.config.heartbeatIntervalMs,
      persisted: [],
      nowMs: world.nodeNow(node),
    }) as SimMachine;
    this.scheduleTick(node, node.incarnation, world.between(1, world.config.heartbeatIntervalMs));
  }

  private scheduleTick(node: SimNode, incarnation: number, afterMs: number): void {
    const world = this.world;
    world.at(world.nowMs + afterMs, () => {
      if (node.incarnation !== incarnation || node.machine === null) return;
      const peersUp = world.nodes.filter((peer) => peer !== node && world.network.reachable(node, peer)).map((peer) => peer.id);
      world.controller.step(node, { kind: 'tick', nowMs: world.nodeNow(node), peersUp });
      this.scheduleTick(node, incarnation, world.config.heartbeatIntervalMs);
    });
  }
}
