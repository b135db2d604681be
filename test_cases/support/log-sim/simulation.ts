/**
 * The simulation's driver: the phases of a run (faulty, then liveness; or a stall; or a failover
 * measurement) and the main loop that advances simulated time to the next event and runs one turn
 * there in a fixed order (faults, deliveries, nodes, clients, flushes, checks). The order of a turn
 * is what makes a seed replay exactly, so it is written out here and nowhere else.
 */

import type { SimNode } from './node.ts';
import { FAILURE_TIMEOUT_MS, REQUEST_BOUND_MS, SimulationFailure, TICK_MS, type SimOptions, type SimResult } from './options.ts';
import { SimWorld } from './world.ts';

export class LogSimulation {
  private readonly world: SimWorld;

  constructor(options: SimOptions) {
    // A stopped clock endangers read leases only (and without them, checks take nodes' clocks for simulated time).
    if ((options.suspends ?? null) !== null && (options.mode !== 'linearizability' || (options.readLeases ?? null) === null)) {
      throw new Error('suspends model a read-lease run (linearizability)');
    }
    this.world = new SimWorld(options);
    for (const node of this.world.nodes) this.world.lifecycle.boot(node);
  }

  /** Runs the faulty phase, then the liveness phase; throws a SimulationFailure naming the seed. */
  run(): SimResult {
    const world = this.world;
    try {
      this.runUntil(world.nowMs + world.options.safetyMs);
      world.faults.heal();
      const healedAtMs = world.nowMs;
      world.clients.pause(true);
      this.awaitConvergence();
      world.result.convergedAfterHealMs = world.nowMs - healedAtMs;
      world.clients.strict = true;
      world.clients.pause(false);
      this.runUntil(world.nowMs + 3 * REQUEST_BOUND_MS);
      world.clients.pause(true);
      this.awaitConvergence();
      world.replicasLost.checkAckedWritesKept();
      world.result.committed = world.reference.index;
      const leaseReads = (node: SimNode): number => node.leaseReadsBefore + (node.machine?.inspect().leaseReads ?? 0);
      world.result.leaseReads = world.nodes.reduce((sum, node) => sum + leaseReads(node), 0);
      return world.result;
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      throw new SimulationFailure(`seed ${world.options.seed} (${world.options.mode}) at ${world.nowMs}ms: ${message}`, { cause: error });
    }
  }

  /**
   * For `storeFailures.everyNodeAtMs`: the faulty phase, then the heal and `livenessMs` more, with
   * every check but convergence: once every replica is merely untrusted, none can be rebuilt and
   * none may start over, so the cluster may stay unavailable (the machine's documented choice).
   */
  stall(): SimResult {
    const world = this.world;
    try {
      this.runUntil(world.nowMs + world.options.safetyMs);
      world.faults.heal();
      this.runUntil(world.nowMs + world.options.livenessMs);
      world.result.committed = world.reference.index;
      return world.result;
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      throw new SimulationFailure(`seed ${world.options.seed} (${world.options.mode}) at ${world.nowMs}ms: ${message}`, { cause: error });
    }
  }

  /**
   * Failover time: a fault-free cluster serves clients, its leader is killed (and stays down);
   * returns how long until a survivor completed a write, and the longest any request waited for
   * an answer after the kill.
   */
  failover(): { failoverMs: number; longestWaitMs: number; writesAroundKill: { ok: number; refused: number } } {
    const world = this.world;
    const kill = world.clients.kill;
    this.runUntil(world.nowMs + 2_000);
    const leader = world.nodes.find((node) => node.machine?.inspect().role === 'leader');
    if (leader === undefined) throw new SimulationFailure(`seed ${world.options.seed}: no leader to kill`);
    const killedAtMs = world.nowMs;
    kill.killedAtMs = killedAtMs;
    world.lifecycle.crash(leader);
    const endMs = world.nowMs + 10 * FAILURE_TIMEOUT_MS;
    while (world.nowMs < endMs && (kill.firstWriteAfterKillMs === null || world.nowMs < killedAtMs + REQUEST_BOUND_MS)) {
      world.nowMs = this.nextEventMs();
      this.runDue();
    }
    if (kill.firstWriteAfterKillMs === null) throw new SimulationFailure(`seed ${world.options.seed}: no write after the kill`);
    const failoverMs = kill.firstWriteAfterKillMs - killedAtMs;
    return { failoverMs, longestWaitMs: kill.longestWaitAfterKillMs, writesAroundKill: kill.writesAroundKill };
  }

  private runUntil(endMs: number): void {
    while (this.world.nowMs < endMs) {
      this.world.nowMs = Math.min(endMs, this.nextEventMs());
      this.runDue();
    }
  }

  private nextEventMs(): number {
    const world = this.world;
    let next = world.network.nextArrivalMs(world.nowMs + TICK_MS);
    for (const node of world.nodes) {
      if (node.suspension !== null) {
        next = Math.min(next, node.suspension.untilMs);
        continue;
      }
      next = Math.min(next, node.machine === null ? node.downUntilMs : node.nextTickMs);
      const diskDueMs = node.disk.dueMs();
      if (diskDueMs !== null) next = Math.min(next, diskDueMs);
      if (node.resetDueMs !== null) next = Math.min(next, node.resetDueMs);
      if (node.crashAtMs !== null) next = Math.min(next, node.crashAtMs);
      for (const local of node.localEvents) next = Math.min(next, local.atMs);
    }
    next = world.clients.nextRequestMs(next);
    return Math.max(next, world.nowMs + 1);
  }

  private runDue(): void {
    const world = this.world;
    if (world.faultsOn) world.faults.inject();
    world.faults.crashAllIfDue();
    world.replicasLost.disrupt();
    world.failures.armEveryNode();
    this.deliverMessages();
    for (const node of world.nodes) this.runNode(node);
    world.clients.submit();
    // The end of the turn: as the controller does, let every node send what it batched.
    for (const node of world.nodes) world.controller.step(node, { kind: 'flush', nowMs: world.nowMs });
    for (const node of world.nodes) world.controller.settle(node);
    world.faults.crashExposed();
    world.failures.crashAfterFailure();
    world.checks.afterEvent();
    world.failures.noteEveryReplicaUntrusted();
  }

  private runNode(node: SimNode): void {
    const world = this.world;
    if (node.machine === null) {
      // With `emptyAll`, a node crashed around the emptying comes back even in a run without faults.
      const mayBoot = world.faultsOn || world.healed || world.options.emptyAll !== null || world.options.storeFailures !== null;
      if (node.downUntilMs <= world.nowMs && mayBoot) world.lifecycle.boot(node);
      return;
    }
    if (node.suspension !== null) {
      if (node.suspension.untilMs > world.nowMs) return;
      world.faults.resume(node, node.suspension.sinceMs);
    }
    node.disk.completeDue(world.nowMs);
    if (node.resetDueMs !== null && node.resetDueMs <= world.nowMs) world.failures.tellUntrusted(node);
    const due = node.localEvents.filter((local) => local.atMs <= world.nowMs);
    if (due.length > 0) node.localEvents = node.localEvents.filter((local) => local.atMs > world.nowMs);
    for (const local of due) {
      const event = typeof local.event === 'function' ? local.event() : local.event;
      if (event !== null) world.controller.step(node, event);
    }
    if (node.nextTickMs <= world.nowMs && node.machine !== null) {
      node.nextTickMs = world.nowMs + TICK_MS;
      const peersUp = world.ids.filter((id) => id !== node.id);
      world.controller.step(node, { kind: 'tick', nowMs: world.nowMs, peersUp });
    }
  }

  private deliverMessages(): void {
    const world = this.world;
    for (const flight of world.network.takeDue()) {
      const node = world.node(flight.to);
      if (flight.atMs < node.peersHeldUntilMs) {
        // Its links are still asleep (see Faults.suspend).
        world.network.hold(flight, node.peersHeldUntilMs);
        continue;
      }
      if (node.machine === null || world.network.isCut(flight.from, flight.to)) continue;
      if (flight.junk === true) {
        world.controller.deliverJunk(node, flight);
        continue;
      }
      if (flight.message.kind === 'transfer_chunk') {
        const { index, fetchedThrough, chunkCount, transferId } = flight.message;
        const id = `${flight.from}:${transferId}`;
        if (chunkCount !== undefined) node.lastTransfer = { id, index, through: Math.max(index, fetchedThrough ?? index), chunkCount };
        else if (node.lastTransfer.id !== id) node.lastTransfer = { id, index, through: index, chunkCount: Number.POSITIVE_INFINITY };
      }
      world.controller.step(node, { kind: 'message', nowMs: world.nowMs, from: flight.from, message: flight.message });
    }
  }

  private awaitConvergence(): void {
    const world = this.world;
    const deadlineMs = world.nowMs + world.options.livenessMs;
    while (!world.checks.converged()) {
      if (world.nowMs >= deadlineMs) throw new Error(`no convergence within ${world.options.livenessMs}ms: ${world.checks.describe()}`);
      world.nowMs = this.nextEventMs();
      this.runDue();
    }
  }
}
