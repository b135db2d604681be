/**
 * The fault schedule of the faulty phase: the run's rates (drawn from the seed), partitions,
 * crashes (half of them aimed at the window where records are not yet durable), emptied
 * backends, a crash of every node at once (`crashAllAtMs`), machines suspended, and the heal that
 * ends it all. Separate so what a seed does to the cluster can be read in one place.
 *
 * Suspends (option `suspends`, read leases only): one node's whole machine at a time sleeps now and
 * then (a laptop, a paused VM): it runs nothing, takes no message or request, and its monotonic
 * clock stands still, so on waking it still trusts a lease the others have long let run out. Its
 * controller may notice the wall clock ran ahead and tell the machine (`clock_jump`) before
 * anything else. Its links wake up to 100 ms after it, so clients' requests may come first.
 */

import { itemAt } from '../../../src/runtime/item-at.ts';
import type { SimNode } from './node.ts';
import { TICK_MS } from './options.ts';
import type { SimWorld } from './world.ts';

/** A suspend lasts at least this long. */
const SUSPEND_MIN_MS = 20;
/** A sleeper's links wake up to this long after it (its peers' retransmit timers had backed off). */
const SUSPEND_LINK_WAKE_MS_MAX = 100;

export interface Rates {
  drop: number;
  duplicate: number;
  delayMaxMs: number;
  partitionPerSecond: number;
  crashPerSecond: number;
  backendResetPerSecond: number;
}

/** The run's rates: the first six draws of the main stream, in this order. */
export function drawRates(random: () => number): Rates {
  return {
    drop: random() * 0.1,
    duplicate: random() * 0.05,
    delayMaxMs: 5 + Math.floor(random() * 60),
    partitionPerSecond: random() * 0.6,
    crashPerSecond: random() * 0.5,
    backendResetPerSecond: random() * 0.15,
  };
}

export class Faults {
  /** A crash waits for a node with records no fsync covers yet. */
  private crashArmed = false;
  private crashAllAtMs: number | null;

  constructor(private readonly world: SimWorld) {
    this.crashAllAtMs = world.options.crashAllAtMs === null ? null : world.nowMs + world.options.crashAllAtMs;
  }

  /** `crashAllAtMs`: once due, every running node crashes, keeping its replica. */
  crashAllIfDue(): void {
    const world = this.world;
    if (this.crashAllAtMs !== null && world.nowMs >= this.crashAllAtMs) {
      this.crashAllAtMs = null;
      for (const node of world.nodes) if (node.machine !== null) world.lifecycle.crash(node, true);
    }
  }

  inject(): void {
    const world = this.world;
    const perStep = (perSecond: number, random = world.random): boolean => random() < (perSecond * TICK_MS) / 1000 / 3;
    if (perStep(world.rates.partitionPerSecond)) world.network.togglePartition();
    if (perStep(world.rates.crashPerSecond)) {
      // Half the crashes wait for a node with records no fsync covers yet (see crashExposed).
      if (world.random() < 0.5) this.crashArmed = true;
      else if (world.mayLoseReplica()) world.lifecycle.crash(itemAt(world.nodes, Math.floor(world.random() * world.nodes.length)));
    }
    if (perStep(world.rates.backendResetPerSecond)) {
      const node = itemAt(world.nodes, Math.floor(world.random() * world.nodes.length));
      if (world.mayLoseReplica()) {
        if (node.machine === null) world.replicasLost.emptyNow(node);
        else world.replicasLost.emptyOnceIssued(node, () => world.controller.step(node, { kind: 'backend_reset', nowMs: world.nowMs, emptied: true }));
      }
    }
    const suspends = world.options.suspends ?? null;
    if (suspends !== null && perStep(suspends.perSecond, world.suspendRandom)) this.suspend(suspends.durationMsMax);
  }

  /**
   * A live node falls asleep, one at a time: the others keep serving, so the sleeper wakes to
   * something to be stale about. It runs nothing until it wakes (see LogSimulation.runNode).
   */
  private suspend(durationMsMax: number): void {
    const world = this.world;
    const live = world.nodes.filter((node) => node.machine !== null);
    if (live.length === 0 || world.nodes.some((node) => node.suspension !== null)) return;
    const node = itemAt(live, Math.floor(world.suspendRandom() * live.length));
    const spanMs = SUSPEND_MIN_MS + Math.floor(world.suspendRandom() * (durationMsMax - SUSPEND_MIN_MS + 1));
    node.suspension = { sinceMs: world.nowMs, untilMs: world.nowMs + spanMs };
    world.result.suspends += 1;
    node.peersHeldUntilMs = node.suspension.untilMs + 1 + Math.floor(world.suspendRandom() * SUSPEND_LINK_WAKE_MS_MAX);
  }

  /**
   * The node wakes: its clock goes on from where it stopped, and its requests' time asleep does
   * not count against the request bound (the machine times them on that clock). If the controller
   * notices, the machine hears of the jump before anything else.
   */
  resume(node: SimNode, sinceMs: number): void {
    const world = this.world;
    const spanMs = world.nowMs - sinceMs;
    node.suspension = null;
    node.clock.originMs -= Math.floor(spanMs * node.clock.rate);
    for (const request of node.requests.values()) request.invokedMs += spanMs;
    if (world.options.suspends?.notice === true) world.controller.step(node, { kind: 'clock_jump', nowMs: world.nowMs, aheadMs: spanMs });
  }

  /**
   * An armed crash hits, at the end of a turn, a node that wrote records no fsync covers yet (a
   * leader first): a crash at a random moment rarely hits that window of a millisecond or two,
   * and that window is where the write-ahead ordering matters.
   */
  crashExposed(): void {
    const world = this.world;
    if (!this.crashArmed || !world.faultsOn) return;
    const exposed = world.nodes.filter(
      (node) => node.machine !== null && node.suspension === null && node.gate.stats(world.nowMs).recordsWaiting > 0,
    );
    const victim = exposed.find((node) => node.machine?.inspect().role === 'leader') ?? exposed[0];
    if (victim === undefined) return;
    this.crashArmed = false;
    if (world.mayLoseReplica()) world.lifecycle.crash(victim);
  }

  heal(): void {
    const world = this.world;
    world.faultsOn = false;
    world.healed = true;
    world.network.heal();
    for (const node of world.nodes) {
      node.downUntilMs = Math.min(node.downUntilMs, world.nowMs);
      if (node.suspension !== null) node.suspension.untilMs = Math.min(node.suspension.untilMs, world.nowMs);
      // Failures strike in the faulty phase only: an armed store failure not yet struck is off.
      node.failNext = false;
    }
  }
}
