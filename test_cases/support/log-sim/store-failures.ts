/**
 * Store effects that fail (option `storeFailures`): a replica left merely untrusted, what its
 * controller refuses until the machine is told, and the crashes that may strike meanwhile.
 * Separate because it draws from a stream of its own and none of it runs without the option.
 */

import type { Reply } from '../../../src/protocol/types.ts';
import { refused } from '../../../src/protocol/refusals.ts';
import type { SimNode, StoreEffect } from './node.ts';
import type { SimWorld } from './world.ts';

const BACKEND_FAILED: Reply = refused('backend', 'write failed or timed out');
const BACKEND_REFUSED: Reply = refused('backend', 'replica may have missed writes; rebuilding it');

/** The machine is told this long (1 ms up to this) after a store effect failed. */
const UNTRUSTED_RESET_DELAY_MAX_MS = 50;

/**
 * Failed store writes (option `storeFailures`): an apply, put or fetch on a chosen node fails now
 * and then during the faulty phase (memcached errored or timed out mid-write), as the controller
 * sees it (src/controller/controller.ts `backendError`, src/store/replica.ts): the failed apply or put took
 * effect or not (a put entry by entry), a failed fetch answers nothing; from then on the node's
 * replica is suspect and refuses every store effect (a refused apply or read answers its client
 * SERVER_ERROR, a refused put or fetch completes never, a refused reset empties nothing) until,
 * 1–50 ms later (the backend answers a health poll), the machine is told `backend_reset` with
 * `emptied: false`; as the controller's `runQueued` does, what was issued before that is
 * released first and refused, then the replica is trusted again and the machine's effects run.
 * Checked besides what checks.ts checks: once told, the node runs no read, apply, put or fetch on that replica
 * until a reset empties it (it is rebuilt, by replay from an emptied replica or a transfer); no
 * start-over while some replica is merely untrusted and holds a state as of the snapshot or later.
 * A rate-based failure strikes only while another node runs a valid, trusted replica applied as
 * far as every snapshot (one a transfer can be served from), and no crash or emptying strikes
 * while a replica is suspect or untrusted, so one replica always stays valid and the liveness
 * phase applies. Option `everyNodeAtMs` instead makes every node's next store
 * effect fail at once after compaction: no node can then be rebuilt and none may start over, so
 * the cluster stays unavailable by design (`LogSimulation.stall` runs that without convergence).
 * Simplified: the simulator runs store effects one at a time and at once, so a failure never
 * overlaps other calls in flight (the real replica may have several, each of which may or may not
 * have taken effect, and calls on other keys may complete after the failure); a controller crash
 * forgets the failure (a new process trusts its backend), and the machine's replay or rebuild is
 * judged by the usual checks (option `crashChance` crashes a failing node before its machine is
 * told, or just after, before its answer is durable); reads, purges and resets never fail.
 */
export class StoreFailures {
  /** `everyNodeAtMs`: when every node's next store effect may be made to fail (null once armed). */
  private everyNodeFailAnchorMs: number | null = null;
  /** When every replica was first untrusted at once (null: never). */
  private everyUntrustedAtMs: number | null = null;

  constructor(private readonly world: SimWorld) {
    const everyNodeAtMs = world.options.storeFailures?.everyNodeAtMs ?? null;
    if (everyNodeAtMs !== null) this.everyNodeFailAnchorMs = world.nowMs + everyNodeAtMs;
  }

  /** Whether every replica was untrusted at once (a reply served since counts as served after it). */
  get everyUntrusted(): boolean {
    return this.everyUntrustedAtMs !== null;
  }

  /**
   * What the controller's replica does with a store effect after a failure: a suspect replica
   * refuses it; a told one must not be asked (that would serve from an untrusted replica); a reset
   * trusts it again. Otherwise an apply, put or fetch may fail now. True: carry it out as usual.
   */
  accepts(node: SimNode, effect: StoreEffect): boolean {
    if (node.trust === 'suspect') {
      this.refuse(node, effect);
      return false;
    }
    if (effect.kind === 'reset') {
      node.trust = 'trusted';
      return true;
    }
    if (node.trust === 'told') throw new Error(`${node.id} runs ${effect.kind} on its replica after being told it missed a write, before resetting it`);
    if ((effect.kind !== 'apply' && effect.kind !== 'put' && effect.kind !== 'fetch' && effect.kind !== 'settle') || !this.fails(node)) return true;
    this.fail(node, effect);
    return false;
  }

  /**
   * Whether this apply, put or fetch fails: the next one after `everyNodeAtMs` armed it, or, in the
   * faulty phase on a chosen node, at the rate, while another node could rebuild it.
   */
  private fails(node: SimNode): boolean {
    const world = this.world;
    const failures = world.options.storeFailures;
    if (failures === null) return false;
    if (node.failNext) {
      node.failNext = false;
      return true;
    }
    if (world.healed || !failures.nodes.includes(world.nodes.indexOf(node))) return false;
    if (world.failureRandom() >= failures.rate) return false;
    return world.nodes.some((other) => other !== node && this.canRebuildOthers(other));
  }

  /**
   * Whether a node could serve the others a transfer: it runs a valid replica that is not
   * distrusted, applied as far as every running node's snapshot. (A valid replica that lags
   * behind a snapshot holds nothing to rebuild from; if it were the only valid one, every replica
   * holding data would be merely untrusted, and the cluster waits by design.)
   */
  private canRebuildOthers(node: SimNode): boolean {
    const view = node.machine?.inspect();
    if (view === undefined || !view.replicaValid || this.world.distrusted(node)) return false;
    return this.world.nodes.every((other) => view.appliedIndex >= (other.machine?.inspect().snapshotIndex ?? 0));
  }

  /**
   * The backend failed mid-write: the apply took effect or not, each of a put's entries was
   * written or not (no known state then), a fetch or a settle answers nothing. The replica is suspect until
   * the machine is told, 1–50 ms later; a client waiting on the apply gets SERVER_ERROR.
   */
  private fail(node: SimNode, effect: Extract<StoreEffect, { kind: 'apply' | 'put' | 'fetch' | 'settle' }>): void {
    const world = this.world;
    const random = world.failureRandom;
    world.result.storeFailures += 1;
    node.trust = 'suspect';
    node.resetDueMs = world.nowMs + 1 + Math.floor(random() * UNTRUSTED_RESET_DELAY_MAX_MS);
    if (random() < (world.options.storeFailures?.crashChance ?? 0)) {
      if (random() < 0.5) node.crashWhenTold = true;
      else node.crashAtMs = world.nowMs + Math.floor(random() * (node.resetDueMs - world.nowMs));
    }
    switch (effect.kind) {
      case 'apply':
        if (random() < 0.5) world.store.apply(node, { ...effect, requestId: null });
        else this.learnUnapplied(node, effect);
        if (effect.requestId !== null) world.clients.complete(node, effect.requestId, BACKEND_FAILED, null);
        return;
      case 'put':
        for (const [key, entry] of effect.entries) if (random() < 0.5) node.replica.set(key, entry);
        // Some entries over a replica reset for them or not: no state the simulator can name.
        node.replicaIndex = null;
        node.startOverPutPending = false;
        return;
      case 'fetch':
      case 'settle':
        return;
      default: {
        const never: never = effect;
        throw new Error(`unknown store effect ${JSON.stringify(never)}`);
      }
    }
  }

  /** A failed apply that did not take effect: the replica stays where it was; the op is still known. */
  private learnUnapplied(node: SimNode, effect: Extract<StoreEffect, { kind: 'apply' }>): void {
    const index = Number(effect.cas);
    const previous = node.replicaIndex;
    if (previous === null) throw new Error(`${node.id} applies ${index} onto an unknown replica`);
    // As in StoreModel.apply: applies run in index order, so what lies between is no-ops.
    for (let gap = previous + 1; gap < index; gap += 1) this.world.reference.learn(gap, null, 0, node.id);
    this.world.reference.learn(index, effect.op, effect.nowMs, node.id);
  }

  /** A suspect replica refuses every call (src/store/replica.ts): replies are SERVER_ERROR, completions never come. */
  private refuse(node: SimNode, effect: StoreEffect): void {
    const world = this.world;
    world.result.storeEffectsRefused += 1;
    switch (effect.kind) {
      case 'apply':
        // Committed all the same: what sits at its index is known.
        world.reference.learn(Number(effect.cas), effect.op, effect.nowMs, node.id);
        if (effect.requestId !== null) world.clients.complete(node, effect.requestId, BACKEND_REFUSED, null);
        return;
      case 'read':
        return world.clients.complete(node, effect.requestId, BACKEND_REFUSED, null);
      case 'put':
        node.startOverPutPending = false;
        return;
      case 'fetch':
      case 'settle':
      case 'purge':
      case 'reset':
        return;
      default: {
        const never: never = effect;
        throw new Error(`unknown store effect ${JSON.stringify(never)}`);
      }
    }
  }

  /**
   * The controller's health poll finds the backend answering and tells the machine (as its
   * `runQueued` does): step the reset; once what was issued before it ran (refused: the replica
   * is suspect), trust the replica again; then the machine's answer.
   */
  tellUntrusted(node: SimNode): void {
    const world = this.world;
    node.resetDueMs = null;
    const machine = node.machine;
    if (machine === null) return;
    world.result.untrustedResets += 1;
    const kept = world.options.storeFailures?.kept === true && node.replicaIndex !== null;
    const effects = machine.step({ kind: 'backend_reset', nowMs: world.localMs(node, world.nowMs), emptied: false, kept });
    // A replay onto the kept replica (still valid, nothing emptied): trusted again at once.
    const replays = kept && machine.inspect().replicaValid && !effects.some((effect) => effect.kind === 'reset');
    world.controller.afterIssued(node, () => {
      node.trust = replays ? 'trusted' : 'told';
    });
    if (replays) world.result.keptReplays += 1;
    for (const effect of effects) world.controller.carryOut(node, effect);
  }

  /** The backend restarted empty: the controller's reset says so (emptied), superseding a failure's. */
  forget(node: SimNode): void {
    node.trust = 'trusted';
    node.resetDueMs = null;
  }

  /** `everyNodeAtMs`: once due, every node compacted and the cluster healthy, every node's next store effect fails. */
  armEveryNode(): void {
    const world = this.world;
    const anchorMs = this.everyNodeFailAnchorMs;
    if (anchorMs === null || world.nowMs < anchorMs || world.healed || !world.healthy()) return;
    if (world.nodes.some((node) => node.trust !== 'trusted' || (node.machine?.inspect().snapshotIndex ?? 0) === 0)) return;
    this.everyNodeFailAnchorMs = null;
    for (const node of world.nodes) node.failNext = true;
  }

  /**
   * `crashChance`: the failing node's controller crashes while its replica is suspect, or at the
   * end of the turn in which its machine was told (what it wrote in answer maybe not durable).
   */
  crashAfterFailure(): void {
    const world = this.world;
    for (const node of world.nodes) {
      const due = (node.crashAtMs !== null && node.crashAtMs <= world.nowMs) || (node.crashWhenTold && node.trust === 'told');
      if (!due || node.machine === null) continue;
      world.lifecycle.crash(node);
    }
  }

  /** Notes the first moment every machine was told its replica missed a write and none is valid. */
  noteEveryReplicaUntrusted(): void {
    const world = this.world;
    if (this.everyUntrustedAtMs !== null || !world.nodes.every((node) => node.trust === 'told')) return;
    if (world.nodes.some((node) => node.machine === null || node.machine.inspect().replicaValid)) return;
    this.everyUntrustedAtMs = world.nowMs;
    world.result.everyReplicaUntrusted = true;
  }
}
