/**
 * Every replica lost (option `emptyAll`) and what the simulator does about a start-over: the
 * schedule of emptied backends (and a crash nearby), emptying a node's replica as its controller
 * would, rebasing the reference at a start-over, and the writes acked around it. Separate because
 * only this option makes the simulator forget, by design, what was applied.
 */

import type { Effect } from '../../../src/consistency/types.ts';
import type { LogMessage } from '../../../src/consistency/replicated-log.ts';
import { itemAt } from '../../../src/runtime/item-at.ts';
import type { Op } from '../../../src/store/types.ts';
import type { InFlightRequest, SimNode } from './node.ts';
import type { EmptyAllOptions, EmptyAllRound } from './options.ts';
import { opKey } from './reference.ts';
import type { SimWorld } from './world.ts';

/**
 * A node's emptied backend or a crash, scheduled by `emptyAll` (`atMs` after the anchor until
 * anchored): a node by its index, or whichever node leads when it is due (none leading: nothing).
 */
interface Disruption {
  atMs: number;
  kind: 'empty' | 'crash';
  node: number | 'leader';
}

/** Slack before the emptying window, so a crash `before` it falls after the anchor. */
const EMPTY_ALL_LEAD_MS = 300;
/** Between the starts of successive rounds (`then`): room for a start-over and the transfers. */
const EMPTY_ALL_ROUND_GAP_MS = 900;
/** In a `leader-crash` round, from the leader's crash to every replica's emptying: an election's time. */
const LEADER_CRASH_EMPTY_DELAY_MS = 400;

/**
 * Every replica lost (option `emptyAll`): every node's backend restarts empty around one moment
 * (maybe with a node crash nearby), so once the log was compacted nobody can rebuild from a peer
 * and the leader starts over (the machine's `startOverIfEveryReplicaLost`). What was applied only
 * up to that snapshot is gone by design: the simulator then rebases its reference to an empty
 * state at the snapshot index (the start-over's put marks that position), so every check (see
 * checks.ts) judges the replicas against the ops after it. Also checked: every write acked after the
 * start-over, or at an index after its snapshot, is in the applied sequence the replicas end with.
 */
export class EveryReplicaLost {
  /** `emptyAll`: what is still to happen, when it all happened (and all were up), acked writes. */
  private disruptions: Disruption[] = [];
  /** When the disruptions may be anchored (null once they are, or without `emptyAll`). */
  private disruptionAnchorMs: number | null = null;
  private disruptionEndMs: number | null = null;
  private readonly ackedWrites: Array<{ index: number; op: Op; atMs: number }> = [];
  /** The snapshot index of the last start-over (the reference starts empty there), and when. */
  private startOverBase = 0;
  private startOverAtMs: number | null = null;

  /** Draws the schedule (from the main stream, right after the fault rates). */
  constructor(private readonly world: SimWorld) {
    const emptyAll = world.options.emptyAll;
    if (emptyAll !== null) {
      this.disruptions = this.schedule(emptyAll);
      this.disruptionAnchorMs = world.nowMs + emptyAll.atMs;
    }
  }

  /** Draws when (after the anchor) each node's backend restarts empty and which nodes crash, round by round. */
  private schedule(emptyAll: EmptyAllOptions): Disruption[] {
    const rounds = [emptyAll.crash, ...(emptyAll.then ?? [])];
    const schedule = rounds.flatMap((crash, round) => this.round(crash, emptyAll.windowMs, round * EMPTY_ALL_ROUND_GAP_MS));
    return schedule.sort((a, b) => a.atMs - b.atMs);
  }

  private round(crash: EmptyAllRound, windowMs: number, offsetMs: number): Disruption[] {
    const random = this.world.random;
    const draw = (spanMs: number): number => Math.floor(random() * (spanMs + 1));
    const at = offsetMs + EMPTY_ALL_LEAD_MS;
    if (crash === 'leader-alone') return [{ atMs: at, kind: 'empty', node: 'leader' }];
    if (crash === 'leader-crash') {
      const emptied = this.world.ids.map((_, node): Disruption => ({ atMs: at + LEADER_CRASH_EMPTY_DELAY_MS + draw(windowMs), kind: 'empty', node }));
      return [{ atMs: at, kind: 'crash', node: 'leader' }, ...emptied];
    }
    const round: Disruption[] = this.world.ids.map((_, node) => ({ atMs: at + draw(windowMs), kind: 'empty', node }));
    if (crash === 'all') {
      // Down for at least 100 ms (see lifecycle.crash): each is emptied while its node is down.
      for (const empty of [...round]) round.push({ atMs: empty.atMs - 1 - draw(89), kind: 'crash', node: empty.node });
    } else if (crash !== 'none') {
      const victim = itemAt(round, Math.floor(random() * round.length));
      const gapMs = 1 + draw(EMPTY_ALL_LEAD_MS - 1);
      round.push({ atMs: victim.atMs + (crash === 'before' ? -gapMs : gapMs), kind: 'crash', node: victim.node });
    }
    return round;
  }

  /**
   * Anchors the schedule once due (in the faulty phase, with room for all of it before the
   * liveness phase; else never); runs the emptyings and crashes due; notes when all ran and all are up.
   */
  disrupt(): void {
    const world = this.world;
    const anchorMs = this.disruptionAnchorMs;
    if (anchorMs !== null) {
      if (world.nowMs < anchorMs || (world.options.emptyAll?.whenHealthy === true && !world.healthy())) return;
      const lastMs = Math.max(...this.disruptions.map((disruption) => disruption.atMs));
      if (world.healed || world.nowMs + lastMs + EMPTY_ALL_LEAD_MS > world.safetyEndMs) return;
      this.disruptionAnchorMs = null;
      for (const disruption of this.disruptions) disruption.atMs += world.nowMs;
    }
    while (this.disruptions.length > 0 && itemAt(this.disruptions, 0).atMs <= world.nowMs) {
      const next = this.disruptions.shift();
      if (next === undefined) break;
      const node = next.node === 'leader' ? world.nodes.find((candidate) => candidate.machine?.inspect().role === 'leader') : itemAt(world.nodes, next.node);
      if (node === undefined) continue;
      if (next.kind === 'empty') this.emptyReplica(node);
      else if (node.machine !== null) world.lifecycle.crash(node);
    }
    const allUp = world.nodes.every((node) => node.machine !== null);
    if (world.options.emptyAll !== null && this.disruptions.length === 0 && this.disruptionEndMs === null && allUp) {
      this.disruptionEndMs = world.nowMs;
      world.result.emptyAllRan = true;
    }
  }

  /** The node's memcached restarted empty: its controller tells the machine (at boot if down). */
  private emptyReplica(node: SimNode): void {
    const world = this.world;
    if (node.machine === null) {
      this.emptyNow(node);
      node.replicaLost = true;
      return;
    }
    this.emptyOnceIssued(node, () => {
      world.controller.step(node, { kind: 'backend_reset', nowMs: world.nowMs, emptied: true });
      node.emptiedRecords = node.gate.position().appended;
    });
  }

  /**
   * The node's memcached restarts empty and `tell` tells the machine at once; the replica is
   * emptied once everything issued before that has reached it, before anything the machine issues
   * from then on (in mckv, the epoch fence refuses calls between the restart and the reset). A
   * crash meanwhile leaves the replica emptied, told at boot.
   */
  emptyOnceIssued(node: SimNode, tell: () => void): void {
    node.emptyPending = true;
    this.world.controller.afterIssued(node, () => {
      node.emptyPending = false;
      this.emptyNow(node);
    });
    tell();
  }

  emptyNow(node: SimNode): void {
    node.replica.clear();
    node.replicaIndex = 0;
    this.world.failures.forget(node);
  }

  /**
   * Whether a node counts on its replica: a running node whose machine holds it valid, or a
   * stopped one whose durable records leave it trusted (its next start replays onto it).
   */
  private reliesOnReplica(node: SimNode): boolean {
    if (node.machine !== null) return node.machine.inspect().replicaValid;
    const records = node.disk.durable;
    for (let at = records.length - 1; at >= 0; at -= 1) {
      const record = records[at] as { kind: string; trusted?: boolean; replicaTrusted?: boolean };
      if (record.kind === 'replica') return record.trusted === true;
      if (record.kind === 'snapshot') return record.replicaTrusted === true;
    }
    return true;
  }

  /** The snapshot index a start-over note announces (null for any other effect). */
  startOverIndexOf(effect: Effect<LogMessage>): number | null {
    if (effect.kind !== 'note' || !effect.message.includes('starting over')) return null;
    const index = effect.meta.snapshotIndex;
    if (typeof index !== 'number') throw new Error(`a start-over note without a snapshot index: ${JSON.stringify(effect.meta)}`);
    return index;
  }

  /**
   * A leader starts over: no replica its node relies on may hold a state it could have been
   * rebuilt from (one as of the snapshot index or later: it would be thrown away), and from here
   * the reference is an empty state at the snapshot index. Not counted: a replica behind the
   * snapshot (the entries between it and the snapshot are compacted away everywhere, so it could
   * not be brought up to it), and one its node does not trust (reset before it is rebuilt anyway).
   */
  onNote(node: SimNode, effect: Extract<Effect<LogMessage>, { kind: 'note' }>): void {
    const world = this.world;
    if (process.env.SIM_TRACE && /recover|records may/.test(effect.message)) console.log(world.nowMs, node.id, effect.message, JSON.stringify(effect.meta));
    const index = this.startOverIndexOf(effect);
    if (index === null) return;
    const holder = world.nodes.find(
      (other) =>
        other.replicaIndex !== 0 &&
        (other.replicaIndex === null || other.replicaIndex >= index) &&
        (this.reliesOnReplica(other) || other.trust !== 'trusted'),
    );
    if (holder !== undefined) throw new Error(`${node.id} started over at ${index} while ${holder.id} holds the state at ${holder.replicaIndex} (replica ${holder.trust})`);
    world.result.startOvers += 1;
    world.result.startOverIndex = index;
    this.startOverBase = index;
    this.startOverAtMs = world.nowMs;
    node.startOverPutPending = true;
    world.reference.startOver(index);
  }

  onWriteAcked(request: InFlightRequest, index: number): void {
    const world = this.world;
    if (world.options.emptyAll === null) return;
    this.ackedWrites.push({ index, op: request.op, atMs: world.nowMs });
    if (this.disruptionEndMs !== null && world.result.recoveryMs === null && request.invokedMs >= this.disruptionEndMs) {
      world.result.recoveryMs = world.nowMs - this.disruptionEndMs;
    }
  }

  /**
   * Every write acked at an index after the last start-over's snapshot (so every one acked after
   * the start-over) is the op at that index of the sequence the converged replicas hold.
   */
  checkAckedWritesKept(): void {
    for (const acked of this.ackedWrites) {
      if (acked.index <= this.startOverBase) {
        if (this.startOverAtMs !== null && acked.atMs >= this.startOverAtMs) throw new Error(`write acked after the start-over at ${acked.index} ≤ its snapshot ${this.startOverBase}`);
        continue;
      }
      const known = this.world.reference.at(acked.index);
      if (known === undefined || known.op === null || opKey(known.op) !== opKey(acked.op)) throw new Error(`acked write ${opKey(acked.op)} at ${acked.index} is not in the final sequence`);
    }
  }
}
