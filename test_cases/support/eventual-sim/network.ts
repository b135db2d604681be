/**
 * The simulated network: messages through the peer codec, dropped, duplicated and delayed at the
 * run's rates (drawn from the seed), plus a malformed copy now and then (`junkRate`, checked on
 * arrival), and links cut by a partition (one node isolated from one peer or both, maybe one way).
 * Separate so the order in which the wire draws from its random streams lives in one place.
 */

import type { EventualMessage } from '../../../src/consistency/eventual.ts';
import { compareHlc } from '../../../src/consistency/hlc.ts';
import type { PeerId } from '../../../src/consistency/types.ts';
import { decodeValue, encodeValue } from '../../../src/peer/value-codec.ts';
import { itemAt } from '../../../src/runtime/item-at.ts';
import { certainlyInvalid } from '../junk.ts';
import type { SimNode } from './node.ts';
import type { SimWorld } from './world.ts';

/** The peer codec's round trip (the value codec a peer frame carries): nothing is shared with the sender. */
export function codecRoundTrip<T>(value: T): T {
  const decoded = decodeValue(encodeValue(value), { copyBuffers: true });
  if (!decoded.ok) throw new Error(`the peer codec refused a message the simulator sent: ${decoded.detail}`);
  return decoded.value as T;
}

export class SimNetwork {
  private readonly cuts = new Set<string>();
  private dropRate: number;
  private duplicateRate: number;
  private readonly delayMsMax: number;

  /** Draws the run's rates: the first three draws of the main stream, in this order. */
  constructor(private readonly world: SimWorld) {
    this.dropRate = world.random() * 0.25;
    this.duplicateRate = world.random() * 0.1;
    this.delayMsMax = 2 + Math.floor(world.random() * 60);
  }

  reachable(from: SimNode, to: SimNode): boolean {
    return from.machine !== null && to.machine !== null && !this.cuts.has(`${from.id}|${to.id}`);
  }

  send(from: SimNode, to: PeerId, message: EventualMessage): void {
    const world = this.world;
    world.stats.messages += 1;
    const target = world.nodes.find((node) => node.id === to);
    if (target === undefined) {
      world.fail(`${from.id} sent to unknown peer ${to}`);
      return;
    }
    const copies = world.random() < this.duplicateRate ? 2 : 1;
    for (let i = 0; i < copies; i += 1) {
      if (!this.reachable(from, target) || world.random() < this.dropRate) {
        world.stats.dropped += 1;
        continue;
      }
      if (world.junkRandom() < (world.config.junkRate ?? 0)) this.sendJunk(from, target, message);
      const wire = codecRoundTrip(message);
      world.at(world.nowMs + world.between(1, this.delayMsMax), () => {
        if (!this.reachable(from, target)) {
          world.stats.dropped += 1;
          return;
        }
        world.controller.step(target, { kind: 'message', nowMs: world.nodeNow(target), from: from.id, message: wire });
      });
    }
  }

  /** A malformed copy of `message`, delivered a little later: dropped and counted, the clock unmoved. */
  private sendJunk(from: SimNode, target: SimNode, message: EventualMessage): void {
    const world = this.world;
    const junk = certainlyInvalid(message as unknown as Record<string, unknown>, world.junkRandom, ['batch', 'round']);
    world.at(world.nowMs + world.between(1, this.delayMsMax), () => {
      const machine = target.machine;
      if (machine === null) return;
      // The machine's per-step chores (a due fetch, a wake) run at every step and may move the
      // clock (causal mode ships re-joined writes under a new version): a flush at the same instant
      // runs them first, so what the malformed message's step changes is its own doing.
      const nowMs = world.nodeNow(target);
      world.controller.step(target, { kind: 'flush', nowMs });
      const before = machine.status().invalidPeerMessages;
      const clock = machine.hlc();
      world.controller.step(target, { kind: 'message', nowMs, from: from.id, message: junk as EventualMessage });
      if (machine.status().invalidPeerMessages !== before + 1) world.fail(`${target.id} did not count a malformed message`);
      if (compareHlc(machine.hlc(), clock) !== 0) world.fail(`${target.id} moved its clock on a malformed message`);
      world.stats.junk += 1;
    });
  }

  /** Cuts the node's links to one peer or both (maybe one way) for 100-900 ms. */
  partition(node: SimNode): void {
    const world = this.world;
    const others = world.nodes.filter((other) => other !== node);
    const cut = world.random() < 0.5 ? others : [itemAt(others, Math.floor(world.random() * others.length))];
    const oneWay = world.random() < 0.2;
    const links = cut.flatMap((other) => (oneWay ? [`${node.id}|${other.id}`] : [`${node.id}|${other.id}`, `${other.id}|${node.id}`]));
    for (const link of links) this.cuts.add(link);
    world.at(world.nowMs + world.between(100, 900), () => {
      for (const link of links) this.cuts.delete(link);
    });
  }

  /** Faults stop: every link restored, nothing lost or duplicated from now on. */
  heal(): void {
    this.cuts.clear();
    this.dropRate = 0;
    this.duplicateRate = 0;
  }
}
