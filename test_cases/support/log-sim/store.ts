/**
 * Each node's model replica (memcached, as a map of entries) carrying out the store effects that
 * reached it: an apply (or an idempotent replay of one it holds), a read, a write answered from a
 * state transfer. Each is held against the reference on the spot: the same reply, the same value,
 * the same op at the same index, so a replica that diverges fails the run where it diverges.
 */

import type { Reply } from '../../../src/protocol/types.ts';
import type { Effect, RequestId } from '../../../src/consistency/types.ts';
import type { LogMessage } from '../../../src/consistency/replicated-log.ts';
import { itemAt } from '../../../src/runtime/item-at.ts';
import { applyToEntry, isLive, type SingleKeyOp } from '../../../src/store/apply.ts';
import type { Entry, Op } from '../../../src/store/types.ts';
import type { SimNode } from './node.ts';
import { opKey } from './reference.ts';
import type { SimWorld } from './world.ts';

export class StoreModel {
  constructor(private readonly world: SimWorld) {}

  apply(node: SimNode, effect: Extract<Effect<LogMessage>, { kind: 'apply' }>): void {
    const reference = this.world.reference;
    const index = Number(effect.cas);
    const previous = node.replicaIndex;
    if (previous === null) throw new Error(`${node.id} applies ${index} onto an unknown replica`);
    if (index <= previous) return this.replay(node, effect);
    for (let gap = previous + 1; gap < index; gap += 1) reference.learn(gap, null, 0, node.id);
    reference.learn(index, effect.op, effect.nowMs, node.id);
    const op = effect.op as SingleKeyOp;
    const current = node.replica.get(op.key);
    if (index <= node.aheadThrough) return this.applyAhead(node, effect, current);
    if (this.world.options.replicaSkipsApplied && current !== undefined && current.cas >= effect.cas) {
      throw new Error(`${node.id} applies ${index} to ${op.key} which already holds cas ${current.cas}`);
    }
    const outcome = applyToEntry(current, op, { cas: effect.cas, nowMs: effect.nowMs });
    if (outcome.write === null) node.replica.delete(op.key);
    else if (outcome.write !== undefined) node.replica.set(op.key, outcome.write);
    node.replicaIndex = index;
    reference.advanceTo(index);
    const expected = reference.replyAt(index);
    if (opKey(expected as unknown as Op) !== opKey(outcome.reply as unknown as Op)) {
      throw new Error(`${node.id} replica diverged at ${index}: ${opKey(outcome.reply as unknown as Op)} vs ${opKey(expected as unknown as Op)}`);
    }
    if (effect.requestId !== null) this.world.clients.complete(node, effect.requestId, outcome.reply, index);
  }

  /**
   * An apply after a transfer read key by key, up to its `fetchedThrough`: the key may already hold
   * this change or a later one, so its outcome need not be the reference's; the machine answered
   * its client itself (as a write the transfer holds), and reads wait until the replica is past it.
   */
  private applyAhead(node: SimNode, effect: Extract<Effect<LogMessage>, { kind: 'apply' }>, current: Entry | undefined): void {
    const index = Number(effect.cas);
    if (!this.world.options.replicaSkipsApplied) throw new Error(`${node.id} installed a transfer read key by key without skipping replays`);
    if (effect.requestId !== null) throw new Error(`${node.id} answers ${index} by its apply while its replica may be ahead of it`);
    if (current === undefined || current.cas < effect.cas) {
      const outcome = applyToEntry(current, effect.op as SingleKeyOp, { cas: effect.cas, nowMs: effect.nowMs });
      if (outcome.write === null) node.replica.delete((effect.op as SingleKeyOp).key);
      else if (outcome.write !== undefined) node.replica.set((effect.op as SingleKeyOp).key, outcome.write);
    }
    node.replicaIndex = index;
    this.world.reference.advanceTo(index);
  }

  /**
   * An apply at or below what the replica already holds: only a restarted node replaying its log
   * onto the replica it kept may do that, and only with skipping replicas (idempotent replay).
   */
  private replay(node: SimNode, effect: Extract<Effect<LogMessage>, { kind: 'apply' }>): void {
    const index = Number(effect.cas);
    if (!this.world.options.replicaSkipsApplied) throw new Error(`${node.id} applies ${index} after ${node.replicaIndex}`);
    if (effect.requestId !== null) throw new Error(`${node.id} replays ${index} with a client waiting`);
    this.world.reference.learn(index, effect.op, effect.nowMs, node.id);
    const op = effect.op as SingleKeyOp;
    const current = node.replica.get(op.key);
    if (current !== undefined && current.cas >= effect.cas) return;
    const outcome = applyToEntry(current, op, { cas: effect.cas, nowMs: effect.nowMs });
    if (outcome.write === null) node.replica.delete(op.key);
    else if (outcome.write !== undefined) node.replica.set(op.key, outcome.write);
  }

  /**
   * Where a write answered without an apply here took effect: a node answers `stored` so only for
   * a write a state transfer holds, naming its entry's index as the cas. That entry must be this
   * very write. Null for any other reply (a refusal).
   */
  storedAt(node: SimNode, requestId: RequestId, reply: Reply): number | null {
    if (reply.kind !== 'stored') return null;
    const reference = this.world.reference;
    const request = node.requests.get(requestId);
    const index = Number(reply.cas ?? 0n);
    const known = reference.at(index);
    if (request === undefined || known === undefined || known.op === null || opKey(known.op) !== opKey(request.op)) {
      throw new Error(`${node.id} answered stored at ${index} for a request whose write is not there`);
    }
    reference.advanceTo(index);
    if (reference.replyAt(index)?.kind !== 'stored') throw new Error(`${node.id} answered stored at ${index}, where the write did not store`);
    return index;
  }

  read(node: SimNode, requestId: RequestId, op: Op): void {
    if (op.kind !== 'get') throw new Error(`read effect for ${op.kind}`);
    const reference = this.world.reference;
    const position = node.replicaIndex;
    if (position === null) throw new Error(`${node.id} reads from an unknown replica`);
    reference.advanceTo(position);
    const key = itemAt(op.keys, 0);
    const entry = node.replica.get(key);
    const value = isLive(entry, 0) ? entry.value.toString() : null;
    if (value !== reference.valueAt(key, position)) throw new Error(`${node.id} read ${key}=${value} at ${position}, reference differs`);
    const reply: Reply = { kind: 'values', items: entry === undefined || value === null ? [] : [{ key, flags: entry.flags, value: entry.value, cas: entry.cas }] };
    this.world.clients.complete(node, requestId, reply, position);
  }
}
