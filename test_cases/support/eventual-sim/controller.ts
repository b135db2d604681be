/**
 * The simulated controller: it steps a node's machine with an event (checking that its HLC never
 * goes back) and carries out the effects: sends on the network, store effects on the model replica
 * in the order memcached would run them (see SimConfig.slowBackends), refusals of a full memcached
 * (see SimConfig.refusals), and the completions and wake-ups it owes the machine, to the
 * incarnation that asked only. Separate because the order it carries effects out in is the
 * contract under test.
 */

import type { EventualMessage } from '../../../src/consistency/eventual.ts';
import { compareHlc } from '../../../src/consistency/hlc.ts';
import type { Effect, Event } from '../../../src/consistency/types.ts';
import { opKeys } from '../../../src/store/types.ts';
import { changedKeys } from '../../../src/consistency/changed-keys.ts';
import type { SimNode } from './node.ts';
import type { SimWorld } from './world.ts';

export class SimController {
  constructor(private readonly world: SimWorld) {}

  step(node: SimNode, event: Event<EventualMessage>): void {
    const machine = node.machine;
    if (machine === null) return;
    const effects = machine.step(event);
    const hlc = machine.hlc();
    if (compareHlc(hlc, node.lastHlc) < 0) this.world.fail(`${node.id}: HLC went back`);
    node.lastHlc = hlc;
    for (const effect of effects) this.carryOut(node, effect);
  }

  /** Deliver a local completion (fetched, applied) shortly, to this incarnation only. */
  local(node: SimNode, make: () => Event<EventualMessage>): void {
    const incarnation = node.incarnation;
    this.world.at(this.world.nowMs + 1, () => {
      if (node.incarnation === incarnation) this.step(node, make());
    });
  }

  private carryOut(node: SimNode, effect: Effect<EventualMessage>): void {
    const world = this.world;
    if (effect.kind === 'fetch' && effect.paged === true) {
      // Every key is listed once what was issued before took effect (as for a barrier); each is read on its own.
      const listAtMs = Math.max(world.nowMs, node.barrierDueMs, effect.keys === null ? node.lastDueMs : 0);
      world.replicas.fetchPaged(node, effect.token, effect.keys, listAtMs);
      return;
    }
    const keys = storeKeys(effect);
    if (keys === undefined) {
      this.carryOutNow(node, effect);
      return;
    }
    // When what was issued before it on its keys (on every key) takes effect: it comes after that.
    let pendingMs = node.barrierDueMs;
    if (keys === null) pendingMs = Math.max(pendingMs, node.lastDueMs);
    else for (const key of keys) pendingMs = Math.max(pendingMs, node.keyDueMs.get(key) ?? 0);
    const slow = node.slowUntilMs > world.nowMs;
    if (!slow && pendingMs < world.nowMs) {
      this.carryOutNow(node, effect);
      return;
    }
    // Slow memcached, or an earlier effect on these keys still waits for it (it keeps running
    // through a crash: those calls were sent). At the same time, the earlier one runs first.
    const dueMs = Math.max(world.nowMs, pendingMs) + (slow ? world.between(1, 30) : 0);
    if (keys === null) node.barrierDueMs = dueMs;
    else for (const key of keys) node.keyDueMs.set(key, dueMs);
    node.lastDueMs = Math.max(node.lastDueMs, dueMs);
    world.stats.slowed += 1;
    world.at(dueMs, () => this.carryOutNow(node, effect));
  }

  private carryOutNow(node: SimNode, effect: Effect<EventualMessage>): void {
    const world = this.world;
    const replicas = world.replicas;
    switch (effect.kind) {
      case 'send':
        world.network.send(node, effect.to, effect.message);
        break;
      case 'reply':
      case 'read':
      case 'persist':
        break;
      case 'apply': {
        const keys = opKeys(effect.op);
        if (keys !== null && effect.op.kind !== 'get' && this.refuses(node, keys, effect.token)) break;
        replicas.apply(node, effect.op, effect.cas, effect.nowMs, effect.counterNode);
        if (effect.token !== null) this.completeApplied(node, effect.token);
        break;
      }
      case 'put':
        if (this.refuses(node, effect.entries.map(([key]) => key), effect.token)) {
          // A batch goes to memcached pipelined: it may have taken some entries before refusing.
          if (effect.entries.length > 1) {
            for (const [key, entry] of effect.entries) if (world.random() < 0.5) replicas.merge(node, key, entry, effect.joinCas);
          }
          break;
        }
        for (const [key, entry] of effect.entries) replicas.merge(node, key, entry, effect.joinCas);
        if (effect.token !== null) this.completeApplied(node, effect.token);
        break;
      case 'fetch':
        replicas.fetch(node, effect.token, effect.keys, effect.versionsOnly === true);
        break;
      case 'purge':
        replicas.purge(node, effect.tombstones);
        break;
      case 'reset':
        node.replica.clear();
        break;
      case 'settle':
        world.fail('eventual mode never settles its replica');
        break;
      case 'note':
        break;
      case 'end_sessions':
        // The simulator's clients keep no sessions to end: it checks convergence.
        break;
      case 'wake':
        this.wake(node, effect.afterMs);
        break;
      case 'fetch_more':
        world.fail('eventual and causal mode pace no fetch');
        break;
      default: {
        const unreachable: never = effect;
        world.fail(`unknown effect ${JSON.stringify(unreachable)}`);
      }
    }
  }

  /** A `wake` effect: a flush event after afterMs, to this incarnation only. */
  private wake(node: SimNode, afterMs: number): void {
    const world = this.world;
    const incarnation = node.incarnation;
    world.at(world.nowMs + Math.max(0, afterMs), () => {
      if (node.incarnation === incarnation) this.step(node, { kind: 'flush', nowMs: world.nodeNow(node) });
    });
  }

  /**
   * Whether the node's memcached, full, refuses a write of `keys`: it keeps what it held, and the
   * controller tells the machine (`refused`) once memcached has answered, a while later.
   */
  private refuses(node: SimNode, keys: readonly string[], token: number | null): boolean {
    const world = this.world;
    if (node.fullUntilMs <= world.nowMs || world.random() < 0.2) return false;
    world.stats.refused += 1;
    const incarnation = node.incarnation;
    world.at(world.nowMs + world.between(1, 40), () => {
      if (node.incarnation === incarnation) this.step(node, { kind: 'refused', nowMs: world.nodeNow(node), keys, token });
    });
    return true;
  }

  private completeApplied(node: SimNode, token: number): void {
    this.local(node, () => ({ kind: 'applied', nowMs: this.world.nodeNow(node), token }));
  }
}

/** The keys a store effect touches (null: every key); undefined for effects that touch none. */
function storeKeys(effect: Effect<EventualMessage>): readonly string[] | null | undefined {
  // A fetch reads its keys: it changes none, yet waits its turn on them like a change.
  return effect.kind === 'fetch' ? effect.keys : changedKeys(effect);
}
