/**
 * A seeded simulator for eventual mode (in the spirit of TigerBeetle's VOPR): three machines
 * over a simulated network that drops, delays, duplicates and reorders messages, cuts links and
 * crashes and restarts controllers (and, optionally, empties a replica or fills its memcached, which
 * then refuses writes for a while), each machine's effects
 * carried out on a model replica (a Map of Entry with the real Replica's semantics), with random
 * client operations on every node.
 *
 * Phases: faults for `faultMs`, then everything heals (links restored, nodes restarted, no more
 * drops) and client traffic stops; the replicas must then converge within `settleMsMax`, and
 * every dead entry (tombstone, long expired) must be collected within `collectMsMax`.
 *
 * Invariants checked at every step: a machine's HLC never goes back; a local write's version is
 * greater than the version its replica holds for the key (last writer wins relies on it).
 * Checked at the end: all replicas read alike, and each key reads as the accepted write with the
 * greatest version (without emptied replicas) or as some accepted write (with them).
 *
 * Everything comes from the seed: a failing seed replays the run exactly.
 */

import { createEventual, type EventualMessage, type EventualMachine } from '../../src/consistency/eventual.ts';
import { createCausal, type CausalMachine } from '../../src/consistency/causal.ts';
import { compareHlc, HLC_ZERO, type Hlc } from '../../src/consistency/hlc.ts';
import {
  asPeerId,
  asRequestId,
  type Effect,
  type Event,
  type KeyedEntry,
  type PeerId,
} from '../../src/consistency/types.ts';
import { decodeValue, encodeValue } from '../../src/peer/value-codec.ts';
import { applyToEntry, isLive, purgeRemoves } from '../../src/store/apply.ts';
import { mergeEntries, plainEntry } from '../../src/store/counter.ts';
import { opKeys, type Entry, type Op } from '../../src/store/types.ts';
import { mulberry32 } from '../../src/runtime/random.ts';
import { certainlyInvalid } from './junk.ts';
import { itemAt } from '../../src/runtime/item-at.ts';

export { mulberry32 };

/** What a run may do. */
export interface SimConfig {
  seed: number;
  faultMs: number;
  settleMsMax: number;
  collectMsMax: number;
  keyCount: number;
  opGapMsMax: number;
  heartbeatIntervalMs: number;
  partitions: boolean;
  crashes: boolean;
  backendResets: boolean;
  /** Some faults fill a replica's memcached for a while: it refuses writes, keeping what it held. */
  refusals: boolean;
  /**
   * Some faults slow a replica's memcached for a while: each store effect then takes 1-30 ms, so
   * the machine's effects stay in flight for longer (a merge not yet applied, a fetch that reads
   * what later effects will change). As the real replica runs them: in the order issued on each
   * key, effects on other keys overlapping and completing in any order, and effects on every key
   * (a fetch of all keys, flush_all, reset) after everything issued before them and before
   * everything issued after.
   */
  slowBackends: boolean;
  /**
   * Chance that a message sent is followed by a malformed copy of it (see ./junk.ts): the receiver
   * must drop and count it, its clock unmoved (checked).
   */
  junkRate?: number;
  /** The mode the machines run: eventual (default) or causal, which replicates alike. */
  mode?: 'eventual' | 'causal';
  /**
   * Clients only increment one key, COUNTER_KEY, set to 0 on the first node at the start: the
   * report then gives the increments answered and what each replica reads.
   */
  countersOnly?: boolean;
}

/** The key of the countersOnly workload. */
export const COUNTER_KEY = 'ctr';

/** What the simulator needs of a machine beyond stepping it. */
type SimMachine = (EventualMachine | CausalMachine) & {
  step(event: Event<EventualMessage>): Effect<EventualMessage>[];
};

/** The outcome of a run. */
export interface SimReport {
  seed: number;
  /** null when every check passed. */
  problem: string | null;
  convergedAfterMs: number | null;
  stats: {
    ops: number; messages: number; dropped: number; crashes: number; resets: number; purged: number; refused: number; slowed: number;
    junk: number;
    /** Increments answered with a number (countersOnly). */
    incremented: number;
  };
  /** countersOnly: what each replica reads under COUNTER_KEY at the end. */
  counterReads?: Array<string | undefined>;
}

const START_MS = 1_700_000_000_000;

const defaults = (seed: number): SimConfig => ({
  seed,
  faultMs: 2500,
  settleMsMax: 5000,
  collectMsMax: 9000,
  keyCount: 10,
  opGapMsMax: 12,
  heartbeatIntervalMs: 50,
  partitions: true,
  crashes: true,
  backendResets: false,
  refusals: false,
  slowBackends: false,
});

interface Task {
  atMs: number;
  seq: number;
  run: () => void;
}

/** A binary min-heap of tasks by (atMs, seq). */
class TaskQueue {
  private readonly heap: Task[] = [];

  get size(): number {
    return this.heap.length;
  }

  push(task: Task): void {
    const heap = this.heap;
    heap.push(task);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(itemAt(heap, i), itemAt(heap, parent))) break;
      [heap[i], heap[parent]] = [itemAt(heap, parent), itemAt(heap, i)];
      i = parent;
    }
  }

  pop(): Task | undefined {
    const heap = this.heap;
    const top = heap[0];
    const last = heap.pop();
    if (heap.length === 0 || last === undefined) return top;
    heap[0] = last;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      const right = left + 1;
      let least = i;
      if (left < heap.length && before(itemAt(heap, left), itemAt(heap, least))) least = left;
      if (right < heap.length && before(itemAt(heap, right), itemAt(heap, least))) least = right;
      if (least === i) break;
      [heap[i], heap[least]] = [itemAt(heap, least), itemAt(heap, i)];
      i = least;
    }
    return top;
  }

  peekAtMs(): number {
    return this.heap.length === 0 ? Infinity : itemAt(this.heap, 0).atMs;
  }
}

const before = (a: Task, b: Task): boolean => a.atMs < b.atMs || (a.atMs === b.atMs && a.seq < b.seq);

/** The peer codec's round trip (the value codec a peer frame carries): nothing is shared with the sender. */
export function codecRoundTrip<T>(value: T): T {
  const decoded = decodeValue(encodeValue(value), { copyBuffers: true });
  if (!decoded.ok) throw new Error(`the peer codec refused a message the simulator sent: ${decoded.detail}`);
  return decoded.value as T;
}

interface SimNode {
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

const TOMBSTONE_VALUE = Buffer.alloc(0);

const tombstone = (cas: bigint): Entry => ({ value: TOMBSTONE_VALUE, flags: 0, expiresAtMs: 0, cas, tombstone: true });

const copyEntry = (entry: Entry): Entry => ({ ...entry, value: Buffer.from(entry.value) });

/** One simulation run. */
class Simulation {
  readonly config: SimConfig;
  private readonly random: () => number;
  private readonly tasks = new TaskQueue();
  readonly nodes: SimNode[];
  private readonly cuts = new Set<string>();
  private nowMs = START_MS;
  private seq = 0;
  private requestId = 1;
  private dropRate: number;
  private duplicateRate: number;
  private readonly delayMsMax: number;
  /** key → version → the entry an accepted write produced. */
  private readonly accepted = new Map<string, Map<bigint, Entry>>();
  private faultsOver = false;
  problem: string | null = null;
  readonly stats = { ops: 0, messages: 0, dropped: 0, crashes: 0, resets: 0, purged: 0, refused: 0, slowed: 0, junk: 0, incremented: 0 };
  /** `junkRate`: its own stream, so a run draws everything else as it would without junk. */
  private readonly junkRandom: () => number;

  constructor(config: SimConfig) {
    this.config = config;
    this.random = mulberry32(config.seed);
    this.junkRandom = mulberry32((config.seed ^ 0x6a09e667) >>> 0);
    this.dropRate = this.random() * 0.25;
    this.duplicateRate = this.random() * 0.1;
    this.delayMsMax = 2 + Math.floor(this.random() * 60);
    this.nodes = ['n1', 'n2', 'n3'].map((name) => ({
      id: asPeerId(name),
      machine: null,
      incarnation: 0,
      replica: new Map(),
      skewMs: Math.floor(this.random() * 80) - 40,
      lastHlc: HLC_ZERO,
      fullUntilMs: 0,
      slowUntilMs: 0,
      keyDueMs: new Map(),
      barrierDueMs: 0,
      lastDueMs: 0,
    }));
    for (const node of this.nodes) this.start(node);
  }

  // ---- scheduling -------------------------------------------------------------------------

  private at(atMs: number, run: () => void): void {
    this.seq += 1;
    this.tasks.push({ atMs, seq: this.seq, run });
  }

  private between(lowMs: number, highMs: number): number {
    return lowMs + Math.floor(this.random() * (highMs - lowMs + 1));
  }

  runUntil(untilMs: number): void {
    while (this.problem === null && this.tasks.peekAtMs() <= untilMs) {
      const task = this.tasks.pop();
      if (task === undefined) break;
      this.nowMs = task.atMs;
      task.run();
    }
    this.nowMs = Math.max(this.nowMs, untilMs);
  }

  get timeMs(): number {
    return this.nowMs;
  }

  // ---- nodes ------------------------------------------------------------------------------

  private nodeNow(node: SimNode): number {
    return this.nowMs + node.skewMs;
  }

  private start(node: SimNode): void {
    node.incarnation += 1;
    node.lastHlc = HLC_ZERO;
    const seed = Math.floor(this.random() * 2 ** 32);
    const create = this.config.mode === 'causal' ? createCausal : createEventual;
    node.machine = create({
      self: node.id,
      peers: this.nodes.map((other) => other.id).filter((id) => id !== node.id),
      random: mulberry32(seed),
      heartbeatIntervalMs: this.config.heartbeatIntervalMs,
      failureTimeoutMs: 4 * this.config.heartbeatIntervalMs,
      persisted: [],
      nowMs: this.nodeNow(node),
    }) as SimMachine;
    this.scheduleTick(node, node.incarnation, this.between(1, this.config.heartbeatIntervalMs));
  }

  private scheduleTick(node: SimNode, incarnation: number, afterMs: number): void {
    this.at(this.nowMs + afterMs, () => {
      if (node.incarnation !== incarnation || node.machine === null) return;
      const peersUp = this.nodes.filter((peer) => peer !== node && this.reachable(node, peer)).map((peer) => peer.id);
      this.step(node, { kind: 'tick', nowMs: this.nodeNow(node), peersUp });
      this.scheduleTick(node, incarnation, this.config.heartbeatIntervalMs);
    });
  }

  private reachable(from: SimNode, to: SimNode): boolean {
    return from.machine !== null && to.machine !== null && !this.cuts.has(`${from.id}|${to.id}`);
  }

  private step(node: SimNode, event: Event<EventualMessage>): void {
    const machine = node.machine;
    if (machine === null) return;
    const effects = machine.step(event);
    const hlc = machine.hlc();
    if (compareHlc(hlc, node.lastHlc) < 0) this.fail(`${node.id}: HLC went back`);
    node.lastHlc = hlc;
    for (const effect of effects) this.carryOut(node, effect);
  }

  /** Deliver a local completion (fetched, applied) shortly, to this incarnation only. */
  private local(node: SimNode, make: () => Event<EventualMessage>): void {
    const incarnation = node.incarnation;
    this.at(this.nowMs + 1, () => {
      if (node.incarnation === incarnation) this.step(node, make());
    });
  }

  // ---- effects ----------------------------------------------------------------------------

  private carryOut(node: SimNode, effect: Effect<EventualMessage>): void {
    const keys = storeKeys(effect);
    if (keys === undefined) {
      this.carryOutNow(node, effect);
      return;
    }
    // When what was issued before it on its keys (on every key) takes effect: it comes after that.
    let pendingMs = node.barrierDueMs;
    if (keys === null) pendingMs = Math.max(pendingMs, node.lastDueMs);
    else for (const key of keys) pendingMs = Math.max(pendingMs, node.keyDueMs.get(key) ?? 0);
    const slow = node.slowUntilMs > this.nowMs;
    if (!slow && pendingMs < this.nowMs) {
      this.carryOutNow(node, effect);
      return;
    }
    // Slow memcached, or an earlier effect on these keys still waits for it (it keeps running
    // through a crash: those calls were sent). At the same time, the earlier one runs first.
    const dueMs = Math.max(this.nowMs, pendingMs) + (slow ? this.between(1, 30) : 0);
    if (keys === null) node.barrierDueMs = dueMs;
    else for (const key of keys) node.keyDueMs.set(key, dueMs);
    node.lastDueMs = Math.max(node.lastDueMs, dueMs);
    this.stats.slowed += 1;
    this.at(dueMs, () => this.carryOutNow(node, effect));
  }

  private carryOutNow(node: SimNode, effect: Effect<EventualMessage>): void {
    switch (effect.kind) {
      case 'send':
        this.send(node, effect.to, effect.message);
        break;
      case 'reply':
      case 'read':
      case 'persist':
        break;
      case 'apply': {
        const keys = opKeys(effect.op);
        if (keys !== null && effect.op.kind !== 'get' && this.refuses(node, keys, effect.token)) break;
        this.apply(node, effect.op, effect.cas, effect.nowMs, effect.counterNode);
        if (effect.token !== null) this.completeApplied(node, effect.token);
        break;
      }
      case 'put':
        if (this.refuses(node, effect.entries.map(([key]) => key), effect.token)) {
          // A batch goes to memcached pipelined: it may have taken some entries before refusing.
          if (effect.entries.length > 1) {
            for (const [key, entry] of effect.entries) if (this.random() < 0.5) this.merge(node, key, entry, effect.joinCas);
          }
          break;
        }
        for (const [key, entry] of effect.entries) this.merge(node, key, entry, effect.joinCas);
        if (effect.token !== null) this.completeApplied(node, effect.token);
        break;
      case 'fetch':
        this.fetch(node, effect.token, effect.keys);
        break;
      case 'purge':
        this.purge(node, effect.tombstones);
        break;
      case 'reset':
        node.replica.clear();
        break;
      case 'note':
        break;
      case 'wake':
        this.wake(node, effect.afterMs);
        break;
      default: {
        const unreachable: never = effect;
        this.fail(`unknown effect ${JSON.stringify(unreachable)}`);
      }
    }
  }

  /** A `wake` effect: a flush event after afterMs, to this incarnation only. */
  private wake(node: SimNode, afterMs: number): void {
    const incarnation = node.incarnation;
    this.at(this.nowMs + Math.max(0, afterMs), () => {
      if (node.incarnation === incarnation) this.step(node, { kind: 'flush', nowMs: this.nodeNow(node) });
    });
  }

  /**
   * Whether the node's memcached, full, refuses a write of `keys`: it keeps what it held, and the
   * controller tells the machine (`refused`) once memcached has answered, a while later.
   */
  private refuses(node: SimNode, keys: readonly string[], token: number | null): boolean {
    if (node.fullUntilMs <= this.nowMs || this.random() < 0.2) return false;
    this.stats.refused += 1;
    const incarnation = node.incarnation;
    this.at(this.nowMs + this.between(1, 40), () => {
      if (node.incarnation === incarnation) this.step(node, { kind: 'refused', nowMs: this.nodeNow(node), keys, token });
    });
    return true;
  }

  private completeApplied(node: SimNode, token: number): void {
    this.local(node, () => ({ kind: 'applied', nowMs: this.nodeNow(node), token }));
  }

  private fetch(node: SimNode, token: number, keys: string[] | null): void {
    const wanted = keys ?? [...node.replica.keys()];
    const entries: KeyedEntry[] = [];
    for (const key of new Set(wanted)) {
      const entry = node.replica.get(key);
      if (entry !== undefined) entries.push([key, copyEntry(entry)]);
    }
    this.local(node, () => ({ kind: 'fetched', nowMs: this.nodeNow(node), token, entries }));
  }

  private merge(node: SimNode, key: string, entry: Entry, joinCas: bigint | undefined): void {
    const current = node.replica.get(key);
    if (current !== undefined && joinCas !== undefined) {
      const merged = mergeEntries(current, entry, joinCas);
      if (merged !== current) node.replica.set(key, copyEntry(merged));
      return;
    }
    if (current === undefined || current.cas < entry.cas) node.replica.set(key, copyEntry(entry));
  }

  private purge(node: SimNode, tombstones: Array<[string, bigint]>): void {
    for (const [key, cas] of tombstones) {
      const entry = node.replica.get(key);
      if (entry !== undefined && purgeRemoves(entry, cas)) {
        node.replica.delete(key);
        this.stats.purged += 1;
      }
    }
  }

  /** The model replica's apply (the real Replica's semantics with tombstones on). */
  private apply(node: SimNode, op: Op, cas: bigint, nowMs: number, counterNode: number | undefined): void {
    switch (op.kind) {
      case 'store':
      case 'arith':
      case 'delete':
      case 'touch': {
        const current = this.checkVersion(node, op.key, cas);
        const { write, reply } = applyToEntry(current, op, { cas, nowMs, counterNode });
        if (op.kind === 'arith' && reply.kind === 'number') this.stats.incremented += 1;
        if (write !== undefined) this.write(node, op.key, write ?? tombstone(cas));
        break;
      }
      case 'gat':
        for (const key of new Set(op.keys)) {
          const current = this.checkVersion(node, key, cas);
          if (isLive(current, nowMs)) this.write(node, key, { ...plainEntry(current), expiresAtMs: op.expiresAtMs, cas });
        }
        break;
      case 'flush_all':
        this.flushAll(node, op.delayMs, cas, nowMs);
        break;
      case 'get':
        break;
      default: {
        const unreachable: never = op;
        this.fail(`unknown op ${JSON.stringify(unreachable)}`);
      }
    }
  }

  private flushAll(node: SimNode, delayMs: number, cas: bigint, nowMs: number): void {
    for (const key of [...node.replica.keys()]) {
      const entry = this.checkVersion(node, key, cas);
      if (entry === undefined) continue;
      if (delayMs <= 0) {
        if (entry.tombstone !== true) this.write(node, key, tombstone(cas));
        continue;
      }
      const deadlineMs = nowMs + delayMs;
      const expiresLater = entry.expiresAtMs === 0 || entry.expiresAtMs > deadlineMs;
      if (isLive(entry, nowMs) && expiresLater) this.write(node, key, { ...plainEntry(entry), expiresAtMs: deadlineMs, cas });
    }
  }

  /** A local write must carry a version greater than the one its replica holds. */
  private checkVersion(node: SimNode, key: string, cas: bigint): Entry | undefined {
    const current = node.replica.get(key);
    if (current !== undefined && current.cas >= cas) {
      this.fail(`${node.id}: write of ${key} at version ${cas} over version ${current.cas}`);
    }
    return current;
  }

  private write(node: SimNode, key: string, entry: Entry): void {
    node.replica.set(key, copyEntry(entry));
    let versions = this.accepted.get(key);
    if (versions === undefined) {
      versions = new Map();
      this.accepted.set(key, versions);
    }
    if (versions.has(entry.cas)) this.fail(`version ${entry.cas} of ${key} written twice`);
    versions.set(entry.cas, copyEntry(entry));
  }

  // ---- network ----------------------------------------------------------------------------

  private send(from: SimNode, to: PeerId, message: EventualMessage): void {
    this.stats.messages += 1;
    const target = this.nodes.find((node) => node.id === to);
    if (target === undefined) {
      this.fail(`${from.id} sent to unknown peer ${to}`);
      return;
    }
    const copies = this.random() < this.duplicateRate ? 2 : 1;
    for (let i = 0; i < copies; i += 1) {
      if (!this.reachable(from, target) || this.random() < this.dropRate) {
        this.stats.dropped += 1;
        continue;
      }
      if (this.junkRandom() < (this.config.junkRate ?? 0)) this.sendJunk(from, target, message);
      const wire = codecRoundTrip(message);
      this.at(this.nowMs + this.between(1, this.delayMsMax), () => {
        if (!this.reachable(from, target)) {
          this.stats.dropped += 1;
          return;
        }
        this.step(target, { kind: 'message', nowMs: this.nodeNow(target), from: from.id, message: wire });
      });
    }
  }

  /** A malformed copy of `message`, delivered a little later: dropped and counted, the clock unmoved. */
  private sendJunk(from: SimNode, target: SimNode, message: EventualMessage): void {
    const junk = certainlyInvalid(message as unknown as Record<string, unknown>, this.junkRandom, ['batch', 'round']);
    this.at(this.nowMs + this.between(1, this.delayMsMax), () => {
      const machine = target.machine;
      if (machine === null) return;
      // The machine's per-step chores (a due fetch, a wake) run at every step and may move the
      // clock (causal mode ships re-joined writes under a new version): a flush at the same instant
      // runs them first, so what the malformed message's step changes is its own doing.
      const nowMs = this.nodeNow(target);
      this.step(target, { kind: 'flush', nowMs });
      const before = machine.status().invalidPeerMessages;
      const clock = machine.hlc();
      this.step(target, { kind: 'message', nowMs, from: from.id, message: junk as EventualMessage });
      if (machine.status().invalidPeerMessages !== before + 1) this.fail(`${target.id} did not count a malformed message`);
      if (compareHlc(machine.hlc(), clock) !== 0) this.fail(`${target.id} moved its clock on a malformed message`);
      this.stats.junk += 1;
    });
  }

  // ---- clients and faults -----------------------------------------------------------------

  scheduleClients(): void {
    const next = (): void => {
      if (this.nowMs >= START_MS + this.config.faultMs) return;
      this.clientOp();
      this.at(this.nowMs + this.between(1, this.config.opGapMsMax), next);
    };
    this.at(this.nowMs + 1, next);
  }

  private clientOp(): void {
    const node = itemAt(this.nodes, Math.floor(this.random() * this.nodes.length));
    if (node.machine === null) return;
    const op = this.randomOp(node);
    this.stats.ops += 1;
    const requestId = asRequestId(this.requestId);
    this.requestId += 1;
    this.step(node, { kind: 'request', nowMs: this.nodeNow(node), requestId, session: 1, op });
  }

  private randomOp(node: SimNode): Op {
    if (this.config.countersOnly === true) {
      if (this.stats.ops === 0) return { kind: 'store', verb: 'set', key: COUNTER_KEY, flags: 0, expiresAtMs: 0, value: Buffer.from('0'), casUnique: 0n };
      return { kind: 'arith', verb: 'incr', key: COUNTER_KEY, delta: 1n, initial: null, expiresAtMs: 0 };
    }
    const key = `k${Math.floor(this.random() * this.config.keyCount)}`;
    const roll = this.random();
    const expiresAtMs = this.random() < 0.15 ? this.nodeNow(node) + this.between(50, 2500) : 0;
    const value = Buffer.from(this.random() < 0.5 ? String(this.between(0, 999)) : `v${this.between(0, 99999)}`);
    const store = (verb: 'set' | 'add' | 'replace' | 'append' | 'prepend' | 'cas', casUnique = 0n): Op => ({
      kind: 'store', verb, key, flags: this.between(0, 3), expiresAtMs, value, casUnique,
    });
    if (roll < 0.3) return store('set');
    if (roll < 0.35) return store('add');
    if (roll < 0.4) return store('replace');
    if (roll < 0.48) return store('append');
    if (roll < 0.52) return store('prepend');
    if (roll < 0.58) return store('cas', node.replica.get(key)?.cas ?? 1n);
    if (roll < 0.72) {
      const initial = this.random() < 0.3 ? 0n : null;
      const verb = this.random() < 0.7 ? 'incr' : 'decr';
      return { kind: 'arith', verb, key, delta: BigInt(this.between(1, 5)), initial, expiresAtMs };
    }
    if (roll < 0.84) return { kind: 'delete', key };
    if (roll < 0.87) return { kind: 'touch', key, expiresAtMs };
    if (roll < 0.89) return { kind: 'gat', keys: [key, `k${this.between(0, this.config.keyCount - 1)}`], expiresAtMs };
    if (roll < 0.995) return { kind: 'get', keys: [key] };
    return { kind: 'flush_all', delayMs: this.random() < 0.7 ? 0 : this.between(50, 500) };
  }

  scheduleFaults(): void {
    const next = (): void => {
      if (this.nowMs >= START_MS + this.config.faultMs) return;
      this.fault();
      this.at(this.nowMs + this.between(100, 500), next);
    };
    this.at(this.nowMs + this.between(50, 300), next);
  }

  private fault(): void {
    const node = itemAt(this.nodes, Math.floor(this.random() * this.nodes.length));
    const roll = this.random();
    if (roll < 0.4 && this.config.partitions) this.cutLinks(node);
    else if (roll < 0.7 && this.config.crashes && node.machine !== null) this.crash(node);
    else if (roll < 0.8 && this.config.backendResets && node.machine !== null) this.emptyBackend(node);
    else if (roll < 0.95 && this.config.refusals) node.fullUntilMs = this.nowMs + this.between(100, 800);
    else if (this.config.slowBackends) node.slowUntilMs = this.nowMs + this.between(100, 800);
  }

  private cutLinks(node: SimNode): void {
    const others = this.nodes.filter((other) => other !== node);
    const cut = this.random() < 0.5 ? others : [itemAt(others, Math.floor(this.random() * others.length))];
    const oneWay = this.random() < 0.2;
    const links = cut.flatMap((other) => (oneWay ? [`${node.id}|${other.id}`] : [`${node.id}|${other.id}`, `${other.id}|${node.id}`]));
    for (const link of links) this.cuts.add(link);
    this.at(this.nowMs + this.between(100, 900), () => {
      for (const link of links) this.cuts.delete(link);
    });
  }

  private crash(node: SimNode): void {
    this.stats.crashes += 1;
    node.machine = null;
    node.incarnation += 1;
    this.at(this.nowMs + this.between(50, 800), () => {
      if (node.machine === null) this.start(node);
    });
  }

  private emptyBackend(node: SimNode): void {
    this.stats.resets += 1;
    node.replica.clear();
    this.step(node, { kind: 'backend_reset', nowMs: this.nodeNow(node) });
  }

  /** Faults stop: links heal, nodes restart, the network stops losing messages. */
  heal(): void {
    this.faultsOver = true;
    this.cuts.clear();
    this.dropRate = 0;
    this.duplicateRate = 0;
    for (const node of this.nodes) {
      node.fullUntilMs = 0;
      node.slowUntilMs = 0;
      if (node.machine === null) this.start(node);
    }
  }

  // ---- checks -----------------------------------------------------------------------------

  fail(problem: string): void {
    if (this.problem === null) this.problem = `${problem} (at +${this.nowMs - START_MS} ms)`;
  }

  /** Why the replicas have not converged to the expected state, or null if they have. */
  divergence(): string | null {
    const views = this.nodes.map((node) => this.view(node));
    for (let i = 1; i < views.length; i += 1) {
      const difference = compareViews(itemAt(views, 0), itemAt(views, i));
      if (difference !== null) return `${itemAt(this.nodes, 0).id} vs ${itemAt(this.nodes, i).id}: ${difference.text} [${this.explain(difference.key)}]`;
    }
    return this.config.backendResets ? this.someAcceptedWrite(itemAt(views, 0)) : this.greatestWrite(itemAt(views, 0));
  }

  private greatestWrite(view: Map<string, string>): string | null {
    for (const [key, versions] of this.accepted) {
      // The merge of every accepted write: the greatest one, but for counters (src/store/counter.ts).
      let greatest: Entry | undefined;
      const ordered = [...versions.values()].sort((left, right) => (left.cas < right.cas ? -1 : 1));
      for (const entry of ordered) greatest = greatest === undefined ? entry : mergeEntries(greatest, entry, JOIN_CAS_CHECK);
      const expected = greatest !== undefined && isLive(greatest, this.nowMs) ? describeContent(greatest) : undefined;
      const read = view.get(key);
      const readContent = read?.slice(0, read.lastIndexOf('@'));
      if (readContent !== expected) return `${key} reads ${read}, the merge of every accepted write is ${expected}`;
    }
    return null;
  }

  private someAcceptedWrite(view: Map<string, string>): string | null {
    for (const [key, read] of view) {
      const versions = this.accepted.get(key);
      const written = [...(versions?.values() ?? [])];
      // An incr/decr result merges with others into a state no single write produced.
      if (written.some((entry) => entry.counter !== undefined)) continue;
      const matches = written.some((entry) => describe(entry) === read);
      if (!matches) return `${key} reads ${read}, which no accepted write produced`;
    }
    return null;
  }

  /** What each node's replica and index hold for a key, for failure messages. */
  private explain(key: string): string {
    return this.nodes
      .map((node) => {
        const stored = node.replica.get(key);
        const indexed = node.machine?.indexEntry(key);
        const replica = stored === undefined ? 'none' : `${stored.tombstone === true ? 'tombstone' : 'value'}@${stored.cas}`;
        const index = indexed === undefined ? 'none' : `${indexed.tombstone ? 'tombstone' : 'value'}@${indexed.version} held by ${indexed.heldByMask}`;
        return `${node.id}: replica ${replica}, index ${index}`;
      })
      .join('; ');
  }

  private view(node: SimNode): Map<string, string> {
    const view = new Map<string, string>();
    for (const [key, entry] of node.replica) if (isLive(entry, this.nowMs)) view.set(key, describe(entry));
    return view;
  }

  /** Dead entries still held by some machine's index (tombstones, long-expired entries). */
  uncollected(): number {
    let total = 0;
    for (const node of this.nodes) total += node.machine?.counters().graveyard ?? 0;
    return total;
  }

  faultsStopped(): boolean {
    return this.faultsOver;
  }
}

function describe(entry: Entry): string {
  return `${describeContent(entry)}@${entry.cas}`;
}

function describeContent(entry: Entry): string {
  return `${entry.value.toString('latin1')}/${entry.flags}/${entry.expiresAtMs}`;
}

/** A version above every one a run makes: the checks merge for content only. */
const JOIN_CAS_CHECK = (1n << 64n) - 1n;

function compareViews(left: Map<string, string>, right: Map<string, string>): { key: string; text: string } | null {
  for (const key of new Set([...left.keys(), ...right.keys()])) {
    if (left.get(key) !== right.get(key)) return { key, text: `${key}: ${left.get(key)} vs ${right.get(key)}` };
  }
  return null;
}

/** The keys a store effect touches (null: every key); undefined for effects that touch none. */
function storeKeys(effect: Effect<EventualMessage>): readonly string[] | null | undefined {
  switch (effect.kind) {
    case 'apply':
      return opKeys(effect.op);
    case 'put':
      return effect.entries.map(([key]) => key);
    case 'fetch':
      return effect.keys;
    case 'purge':
      return effect.tombstones.map(([key]) => key);
    case 'reset':
      return null;
    default:
      return undefined;
  }
}

/** Run one seeded simulation and report; `problem` names the first failed check. */
export function runEventualSim(overrides: Partial<SimConfig> & { seed: number }): SimReport {
  const config = { ...defaults(overrides.seed), ...overrides };
  const sim = new Simulation(config);
  sim.scheduleClients();
  sim.scheduleFaults();
  const healAtMs = START_MS + config.faultMs;
  sim.runUntil(healAtMs);
  sim.heal();
  let convergedAfterMs: number | null = null;
  const checkEveryMs = 25;
  for (let t = healAtMs; t <= healAtMs + config.settleMsMax && sim.problem === null; t += checkEveryMs) {
    sim.runUntil(t);
    if (sim.divergence() === null) {
      convergedAfterMs = t - healAtMs;
      break;
    }
  }
  if (sim.problem === null && convergedAfterMs === null) {
    sim.fail(`no convergence within ${config.settleMsMax} ms: ${sim.divergence()}`);
  }
  collectPhase(sim, healAtMs + config.collectMsMax);
  const counterReads = config.countersOnly === true ? sim.nodes.map((node) => node.replica.get(COUNTER_KEY)?.value.toString('latin1').trim()) : undefined;
  return { seed: config.seed, problem: sim.problem, convergedAfterMs, stats: sim.stats, counterReads };
}

/**
 * Dead entries must all be collected, and the replicas must agree again, by `untilMs`. (Again: a
 * push queued for a peer that was down may still bring it a write another replica lost when
 * emptied; anti-entropy then spreads it.)
 */
function collectPhase(sim: Simulation, untilMs: number): void {
  for (let t = sim.timeMs; t <= untilMs && sim.problem === null; t += 100) {
    sim.runUntil(t);
    if (sim.uncollected() === 0 && sim.divergence() === null) break;
  }
  if (sim.problem !== null) return;
  if (sim.uncollected() !== 0) sim.fail(`${sim.uncollected()} dead entries never collected`);
  const divergence = sim.divergence();
  if (divergence !== null) sim.fail(`diverged again after collection: ${divergence}`);
}
