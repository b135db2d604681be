/**
 * The simulated controller: it steps a node's machine with an event (on the node's own clock) and
 * carries out the effects, through the durability gate, on the model replica and the network.
 * Separate because the order it carries effects out in is the contract under test.
 *
 * Persistence runs the controller's own durability gate (src/controller/durability.ts) over an
 * in-memory write-ahead file: records appended in a turn go out as one batch at its end, one batch
 * per node in flight (group commit; each, a compaction included, durable 1–3 ms later); every other
 * effect issued after a record not yet durable (or after a held effect) is held, in order, until it
 * is (but a send marked `beforeDurable`: a leader's ping, its pong). A backend reset is acknowledged,
 * and an emptied backend noticed, only once what was issued
 * before it ran, as the controller does. A crash loses the records not yet durable and every held
 * effect. Half the crashes wait for the end of a turn in which a node wrote records not yet
 * durable (a leader first): that window is short, and it is where the ordering matters.
 */

import type { Effect, Event } from '../../../src/consistency/types.ts';
import type { LogMessage } from '../../../src/consistency/replicated-log.ts';
import { keysHeldBy } from '../../../src/consistency/changed-keys.ts';
import { opKeys, type KeyedEntry, type Op } from '../../../src/store/types.ts';
import type { HeldWork, OutwardEffect, TransferMark } from './disk.ts';
import type { Flight } from './network.ts';
import { isStoreEffect, type SimNode } from './node.ts';
import { FSYNC_MAX_MS, FSYNC_MIN_MS } from './options.ts';
import type { SimWorld } from './world.ts';

const readKeys = (op: Op): readonly string[] => opKeys(op) ?? [];

export class SimController {
  constructor(private readonly world: SimWorld) {}

  step(node: SimNode, event: Event<LogMessage>): void {
    const machine = node.machine;
    if (machine === null) return;
    if (node.suspension !== null) {
      // Due now, so taken on waking (whose turn ends with a flush of its own).
      if (event.kind !== 'flush') node.localEvents.push({ atMs: this.world.nowMs, event });
      return;
    }
    const before = machine.inspect();
    const effects = machine.step({ ...event, nowMs: this.world.localMs(node, event.nowMs) });
    const after = machine.inspect();
    if (before.role !== 'leader' && after.role === 'leader') this.world.result.elections += 1;
    if (before.role === 'candidate' && after.role === 'follower' && after.term === before.term) this.world.result.candidaciesLost += 1;
    for (const effect of effects) this.carryOut(node, effect);
    // Recovered once its machine says so and what it recovered is written.
    if (node.lostPower && !machine.inspect().recovering && node.gate.stats(this.world.nowMs).recordsWaiting === 0) node.lostPower = false;
  }

  /** A malformed message: dropped, counted, nothing else but a note. */
  deliverJunk(node: SimNode, flight: Flight): void {
    const machine = node.machine;
    if (machine === null) return;
    const before = machine.status().invalidPeerMessages;
    const effects = machine.step({ kind: 'message', nowMs: this.world.localMs(node, this.world.nowMs), from: flight.from, message: flight.message });
    if (machine.status().invalidPeerMessages !== before + 1) throw new Error(`${node.id} did not count a malformed message`);
    const others = effects.filter((effect) => effect.kind !== 'note');
    if (others.length > 0) throw new Error(`${node.id} acted on a malformed message: ${others.map((effect) => effect.kind).join(', ')}`);
    this.world.result.junkDelivered += 1;
  }

  /**
   * As the controller does: a record goes to the gate; any other effect runs at once unless a
   * record not yet durable, or an effect already held, precedes it: then it waits, in order.
   */
  carryOut(node: SimNode, effect: Effect<LogMessage>): void {
    if (effect.kind === 'persist') {
      node.gate.append([{ record: effect.record, compact: effect.compact }]);
      return;
    }
    // A start-over's put (issued right after this note) installs the state at the snapshot index.
    const startOverIndex = this.world.replicasLost.startOverIndexOf(effect);
    if (startOverIndex !== null) node.lastTransfer = { id: '', index: startOverIndex, through: startOverIndex, chunkCount: 1 };
    if (effect.kind === 'send' && effect.beforeDurable === true) return this.execute(node, effect, node.lastTransfer);
    // As the controller does: a read that needs only its keys' applies runs at once if none is held.
    if (effect.kind === 'read' && effect.keysOnly === true && !node.heldKeys.touches(readKeys(effect.op))) {
      return this.execute(node, effect, node.lastTransfer);
    }
    const keys = keysHeldBy(effect);
    if (keys !== undefined) node.heldKeys.hold(keys);
    node.gate.whenDurable(node.gate.latest(), { effect, transfer: node.lastTransfer, keys });
  }

  /** The end of a turn: what a node wrote goes out as one batch (unless one is on its way). */
  settle(node: SimNode): void {
    if (node.machine !== null && node.suspension === null) node.gate.writeAppended();
  }

  /** Runs `step` once everything the node issued so far ran (at once when nothing waits). */
  afterIssued(node: SimNode, step: () => void): void {
    node.gate.whenDurable(node.gate.latest(), step);
  }

  release(node: SimNode, work: HeldWork): void {
    if (node.machine === null) return;
    if (typeof work === 'function') return work();
    if (work.keys !== undefined) node.heldKeys.release(work.keys);
    this.execute(node, work.effect, work.transfer);
  }

  /** How long the next batch takes to become durable (1–3 ms). */
  fsyncMs(): number {
    return FSYNC_MIN_MS + Math.floor(this.world.random() * (FSYNC_MAX_MS - FSYNC_MIN_MS + 1));
  }

  /** Carries out an effect that left the process: the model replica and network see it now. */
  private execute(node: SimNode, effect: OutwardEffect, transfer: TransferMark): void {
    const world = this.world;
    world.checks.claim(node, effect);
    if (isStoreEffect(effect) && !world.failures.accepts(node, effect)) return;
    switch (effect.kind) {
      case 'send':
        return world.network.transmit(node.id, effect.to, effect.message);
      case 'reply':
        return world.clients.complete(node, effect.requestId, effect.reply, world.store.storedAt(node, effect.requestId, effect.reply));
      case 'apply':
        return world.store.apply(node, effect);
      case 'read':
        return world.store.read(node, effect.requestId, effect.op);
      case 'reset':
        node.replica.clear();
        node.replicaResets += 1;
        node.replicaIndex = 0;
        node.putsSinceReset = 0;
        return;
      case 'put':
        for (const [key, entry] of effect.entries) node.replica.set(key, entry);
        node.putsSinceReset += 1;
        // A transfer's chunks are put as they come: its state is there once all of them are.
        if (node.startOverPutPending || node.putsSinceReset >= transfer.chunkCount) {
          node.replicaIndex = transfer.index;
          node.aheadThrough = transfer.through;
          if (node.startOverPutPending) node.startOverPutPending = false;
          else world.result.transfers += 1;
        }
        // As the controller does once the backend took it: tell the machine (it then trusts the replica).
        if (effect.token !== null) this.afterStore(node, { kind: 'applied', nowMs: 0, token: effect.token });
        return;
      case 'fetch': {
        // As Replica.readPaced: the keys as listed now, each read when its slice is asked for
        // while applies go on (none across a reset: that fetch fails). The log modes pace every fetch.
        if (effect.paced !== true) throw new Error('the replicated log paces every fetch');
        const listed = [...node.replica.entries()].sort(([a], [b]) => (a < b ? -1 : 1));
        node.pacedFetches.set(effect.token, { listed, at: 0, resets: node.replicaResets });
        return this.nextPacedSlice(node, effect.token);
      }
      case 'fetch_more':
        if (effect.stop === true) node.pacedFetches.delete(effect.token);
        else this.nextPacedSlice(node, effect.token);
        return;
      case 'settle':
        return this.afterStore(node, { kind: 'applied', nowMs: 0, token: effect.token });
      case 'purge':
        throw new Error('the replicated log never purges');
      case 'wake':
        // As the controller's EffectRunner: a flush after the delay (sequential's deferred appends).
        node.localEvents.push({ atMs: this.world.nowMs + Math.max(0, effect.afterMs), event: { kind: 'flush', nowMs: 0 } });
        return;
      case 'note':
        if (effect.message.startsWith('replaying the log onto the kept replica') && Number(effect.meta.lastIndex) > 0) world.result.keptReplicaRestarts += 1;
        return world.replicasLost.onNote(node, effect);
      case 'end_sessions':
        throw new Error('the log modes end no sessions');
      default: {
        const never: never = effect;
        throw new Error(`unknown effect ${JSON.stringify(never)}`);
      }
    }
  }

  /**
   * As Replica.readPaced: the next 1-8 keys of a paced fetch's listing, each as listed or (with
   * skip-applied) as it is when the slice is read; none across a reset (that fetch fails).
   */
  private nextPacedSlice(node: SimNode, token: number): void {
    const paced = node.pacedFetches.get(token);
    if (paced === undefined) return;
    const size = 1 + Math.floor(this.world.random() * 8);
    this.afterStoreLazily(node, () => {
      if (node.pacedFetches.get(token) !== paced || paced.resets !== node.replicaResets) return null;
      const listed = paced.listed.slice(paced.at, paced.at + size);
      paced.at += listed.length;
      const entries: KeyedEntry[] = [];
      for (const [key, then] of listed) {
        const entry = !this.world.options.replicaSkipsApplied || this.world.random() < 0.5 ? then : node.replica.get(key);
        if (entry !== undefined) entries.push([key, entry]);
      }
      const more = paced.at < paced.listed.length;
      if (!more) node.pacedFetches.delete(token);
      return { kind: 'fetched', nowMs: 0, token, entries, ...(more ? { more: true as const } : {}) };
    });
  }

  /** A store operation's completion reaches the machine as an event 1–5 ms later. */
  private afterStore(node: SimNode, event: Event<LogMessage>): void {
    this.afterStoreLazily(node, () => event);
  }

  /** As afterStore, the event made when due. */
  private afterStoreLazily(node: SimNode, event: () => Event<LogMessage> | null): void {
    node.localEvents.push({ atMs: this.world.nowMs + 1 + Math.floor(this.world.random() * 5), event });
  }
}
