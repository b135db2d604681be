/**
 * The checks the simulator runs as it goes, and the convergence it waits for. Separate so the
 * properties a run must keep read as one list; the model replicas (store.ts) and the clients
 * (clients.ts) check the replies they carry out against the reference (reference.ts).
 *
 * Checked after every event: one leader per term; applied ≤ committed (both internal); a
 * committed index never changes its entry, where committed means claimed by a carried-out effect
 * (an apply's index, an append's or append reply's commit index, a transfer chunk's index) or
 * believed by a node none of whose records awaits an fsync; every node applies the same sequence
 * (the same op at each index, and skips only no-ops) — judged on carried-out applies and puts, a
 * put at the transfer index known when it was issued; no client op at two indices; every reply agrees with a reference replica
 * built from that sequence; a read reflects a state at least as new as (or differing only by
 * no-ops from) every op that completed before it started (linearizability) or before it in its
 * session (sequential); a request at a live node gets an answer within the request bound (the
 * machine's timeout plus two fsyncs).
 * Liveness: after faults stop, nodes converge (nothing held, replicas equal to the reference)
 * within a bound, and every request then succeeds.
 */

import type { Effect, PeerId } from '../../../src/consistency/types.ts';
import type { LogMessage } from '../../../src/consistency/replicated-log.ts';
import type { LogView, SimNode } from './node.ts';
import { FAILURE_TIMEOUT_MS } from './options.ts';
import type { SimWorld } from './world.ts';

export class Checks {
  private readonly leaderOfTerm = new Map<number, PeerId>();
  private readonly committedTerm: number[] = [];

  constructor(private readonly world: SimWorld) {}

  /** After every event: one leader per term, applied ≤ committed, committed entries kept, requests answered in time. */
  afterEvent(): void {
    const world = this.world;
    for (const node of world.nodes) {
      const machine = node.machine;
      if (machine === null) continue;
      const view = machine.inspect();
      if (view.appliedIndex > view.commitIndex) throw new Error(`${node.id} applied ${view.appliedIndex} > committed ${view.commitIndex}`);
      if (view.role === 'leader') {
        const known = this.leaderOfTerm.get(view.term);
        if (known !== undefined && known !== node.id) throw new Error(`two leaders in term ${view.term}: ${known}, ${node.id}`);
        this.leaderOfTerm.set(view.term, node.id);
      }
      // With every record durable, all the machine believes rests on durable state.
      if (node.gate.stats(world.nowMs).recordsWaiting === 0) this.committed(node, view, view.commitIndex);
      // Asleep, a node answers nothing (its requests' bound resumes with it: see Faults.resume).
      if (node.suspension !== null) continue;
      for (const [requestId, request] of node.requests) {
        if (world.nowMs - request.invokedMs > world.requestBoundMs) throw new Error(`${node.id} left request ${requestId} unanswered`);
      }
    }
  }

  /**
   * What an effect leaving the process says is committed: an apply its index; an append, an
   * append reply the sender's commit index; a transfer chunk its index.
   */
  claim(node: SimNode, effect: Effect<LogMessage>): void {
    let claimed = 0;
    if (effect.kind === 'apply') claimed = Number(effect.cas);
    else if (effect.kind === 'send' && (effect.message.kind === 'append' || effect.message.kind === 'append_reply')) claimed = effect.message.commitIndex;
    else if (effect.kind === 'send' && effect.message.kind === 'transfer_chunk') claimed = effect.message.index;
    const view = node.machine?.inspect();
    if (view === undefined || claimed <= node.checkedCommit) return;
    if (claimed > view.commitIndex) throw new Error(`${node.id} claims ${claimed} committed, its commit index is ${view.commitIndex}`);
    this.committed(node, view, claimed);
  }

  /**
   * An index, once committed, keeps the same entry (term) everywhere. Judged on what is visible:
   * up to what an effect that left the process claims, or what the node believes once all its
   * records are durable (a leader's commit index counts its own copy before its fsync, but nothing
   * resting on that leaves the process before the fsync, and a crash before it forgets it all).
   */
  private committed(node: SimNode, view: LogView, upTo: number): void {
    const from = Math.max(node.checkedCommit, view.snapshotIndex) + 1;
    for (let index = from; index <= upTo; index += 1) {
      const entry = view.entryAt(index);
      if (entry === null) continue;
      const term = this.committedTerm[index];
      if (term === undefined) this.committedTerm[index] = entry.term;
      else if (term !== entry.term) throw new Error(`${node.id} committed index ${index} with term ${entry.term}, was ${term}`);
    }
    node.checkedCommit = Math.max(node.checkedCommit, upTo);
  }

  /**
   * Whether the cluster converged: every node up, caught up and valid, nothing held or unwritten,
   * one leader its followers are in touch with, everything applied everywhere, no request pending;
   * and then every replica must equal the reference (else the run fails).
   */
  converged(): boolean {
    const world = this.world;
    const views = world.nodes.map((node) => node.machine?.inspect() ?? null);
    if (views.some((view) => view === null || !view.caughtUp || !view.replicaValid || view.recovering)) return false;
    // Nothing may still wait for an fsync: the replicas must hold what the machines applied.
    if (world.nodes.some((node) => node.gate.waitingCount() > 0 || node.gate.stats(world.nowMs).recordsWaiting > 0 || node.emptyPending)) {
      return false;
    }
    // A suspect replica refuses writes until its machine is told: it is not rebuilt yet.
    if (world.nodes.some((node) => world.distrusted(node))) return false;
    const leaders = views.filter((view) => view?.role === 'leader');
    if (leaders.length !== 1) return false;
    // Followers must be in touch with the leader, or one may start an election right after (on
    // each node's own clock: with read leases it has its own origin and rate).
    const inTouch = (node: SimNode, view: LogView | null): boolean =>
      view !== null && (view.role === 'leader' || (view.role === 'follower' && world.localMs(node, world.nowMs) - view.lastLeaderContactMs < FAILURE_TIMEOUT_MS / 2));
    if (!world.nodes.every((node, at) => inTouch(node, views[at] ?? null))) return false;
    const last = leaders[0]?.lastIndex ?? -1;
    if (views.some((view) => view?.appliedIndex !== last)) return false;
    if (world.nodes.some((node) => node.requests.size > 0)) return false;
    const reference = world.reference;
    reference.advanceTo(last);
    for (const node of world.nodes) {
      if (node.replica.size !== reference.entries.size) throw new Error(`${node.id} replica has ${node.replica.size} keys, reference ${reference.entries.size}`);
      for (const [key, entry] of reference.entries) {
        const mine = node.replica.get(key);
        if (mine === undefined || !mine.value.equals(entry.value) || mine.cas !== entry.cas) throw new Error(`${node.id} differs at ${key}`);
      }
    }
    return true;
  }

  describe(): string {
    return this.world.nodes
      .map((node) => {
        const view = node.machine?.inspect();
        if (view === undefined) return `${node.id}: down`;
        return `${node.id}: ${view.role} t${view.term} c${view.commitIndex} a${view.appliedIndex} last${view.lastIndex} snap${view.snapshotIndex} valid=${view.replicaValid} caughtUp=${view.caughtUp} pending=${node.requests.size}`;
      })
      .join('; ');
  }
}
