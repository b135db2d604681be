/**
 * A tiny, fault-free, FIFO network of three replicated-log machines for scenario tests: ticks in
 * 10 ms steps, turns of delivered messages each ending in a flush at every node (as the
 * controller does), nodes taken down and messages lost on demand, and each node's effects carried
 * out on a map standing for its replica.
 */

import { expect } from 'vitest';
import { applyToEntry, type SingleKeyOp } from '../../src/store/apply.ts';
import type { Entry, Op } from '../../src/store/types.ts';
import { asPeerId, asRequestId, type Effect, type Event, type PeerId } from '../../src/consistency/types.ts';
import { createReplicatedLog, type LogMessage, type LogMode, type ReplicatedLog } from '../../src/consistency/replicated-log.ts';
import type { LogTuning } from '../../src/consistency/log/types.ts';
import { mulberry32 } from './log-sim.ts';
import { itemAt } from '../../src/runtime/item-at.ts';
import type { BackendMemory } from '../../src/store/memory-guard.ts';

export const IDS = [asPeerId('n1'), asPeerId('n2'), asPeerId('n3')] as const;
export const HEARTBEAT_MS = 50;
export const FAILURE_TIMEOUT_MS = 300;

export interface Node {
  machine: ReplicatedLog;
  records: unknown[];
  replica: Map<string, Entry>;
  effects: Effect<LogMessage>[];
}

export const set = (key: string, value: string): Op => ({ kind: 'store', verb: 'set', key, flags: 0, expiresAtMs: 0, value: Buffer.from(value), casUnique: 0n });
export const incr = (key: string): Op => ({ kind: 'arith', verb: 'incr', key, delta: 1n, initial: null, expiresAtMs: 0 });
export const get = (key: string): Op => ({ kind: 'get', keys: [key] });

/** One line per message for traces: its kind and the fields that matter. */
function describeMessage(message: LogMessage): string {
  switch (message.kind) {
    case 'append':
      return `append t${message.term} prev=${message.prevIndex}/${message.prevTerm} entries=[${message.entries.map((entry) => `${entry.index}:${entry.op?.kind ?? 'noop'}`).join(',')}] commit=${message.commitIndex} round=${message.round}${message.quiet ? ' quiet' : ''}`;
    case 'append_reply':
      return `append_reply t${message.term} ${message.success ? `match=${message.matchIndex}` : `reject hint=${message.hintIndex}`} round=${message.round}`;
    case 'forward':
      return `forward ${message.requests.map((request) => `${request.requestId}:${request.op.kind}`).join(',')}`;
    default:
      return `${message.kind} t${message.term}${'granted' in message ? ` granted=${message.granted}` : ''}`;
  }
}

/** Carries out a store effect (an apply, reset or put; anything else is not one) on a map standing for a replica. */
export function carryOutOnMap(replica: Map<string, Entry>, effect: Effect<LogMessage>): void {
  if (effect.kind === 'apply') {
    const op = effect.op as SingleKeyOp;
    const outcome = applyToEntry(replica.get(op.key), op, { cas: effect.cas, nowMs: effect.nowMs });
    if (outcome.write === null) replica.delete(op.key);
    else if (outcome.write !== undefined) replica.set(op.key, outcome.write);
  } else if (effect.kind === 'reset') {
    replica.clear();
  } else if (effect.kind === 'put') {
    for (const [key, entry] of effect.entries) replica.set(key, entry);
  }
}

export class Cluster {
  nowMs = 1_000;
  readonly nodes = new Map<PeerId, Node>();
  readonly down = new Set<PeerId>();
  readonly trace: string[] = [];
  /** Messages for which this says true are lost in transit (as on a connection that broke). */
  lose: (message: LogMessage, to: PeerId) => boolean = () => false;
  /** Applies at nodes for which this says true time out without taking effect. */
  applyTimesOut: (id: PeerId) => boolean = () => false;
  private queue: Array<{ from: PeerId; to: PeerId; message: LogMessage }> = [];
  private requestId = 0;

  /**
   * `bootId`: as with wal_sync = write (records reach the OS, not the disk); null: as with fsync.
   * `thresholdBytes`: the log's compaction threshold in bytes (default: the machine's).
   * `tuning`: the log's tunables beyond those; `silentFollowerKeptFailureTimeouts` is 1 unless
   * given (the machine's default is longer; one lets a test compact past a follower it cut off briefly).
   */
  constructor(
    readonly mode: LogMode = 'linearizability',
    readonly threshold = 10_000,
    readonly skipApplied = false,
    readonly bootId: string | null = null,
    readonly thresholdBytes?: number,
    readonly tuning: Partial<LogTuning> = {},
  ) {
    for (const id of IDS) this.nodes.set(id, this.boot(id, []));
  }

  boot(id: PeerId, records: unknown[], replica = new Map<string, Entry>()): Node {
    const seed = IDS.indexOf(id) + 1;
    const machine = createReplicatedLog({
      self: id, peers: IDS, random: mulberry32(seed), heartbeatIntervalMs: HEARTBEAT_MS, failureTimeoutMs: FAILURE_TIMEOUT_MS,
      persisted: records, nowMs: this.nowMs, mode: this.mode, compactionThresholdEntries: this.threshold, transferChunkEntriesMax: 2,
      ...(this.thresholdBytes === undefined ? {} : { compactionThresholdBytes: this.thresholdBytes }),
      silentFollowerKeptFailureTimeouts: 1,
      ...this.tuning,
      replicaSkipsApplied: this.skipApplied, bootId: this.bootId,
    });
    return { machine, records: records.slice(), replica, effects: [] };
  }

  node(id: PeerId): Node {
    return this.nodes.get(id) as Node;
  }

  step(id: PeerId, event: Event<LogMessage>): Effect<LogMessage>[] {
    const node = this.node(id);
    const effects = node.machine.step(event);
    node.effects.push(...effects);
    for (const effect of effects) this.carryOut(id, node, effect);
    return effects;
  }

  private carryOut(id: PeerId, node: Node, effect: Effect<LogMessage>): void {
    if (effect.kind === 'send') {
      if (!this.down.has(id) && !this.down.has(effect.to)) this.queue.push({ from: id, to: effect.to, message: effect.message });
    } else if (effect.kind === 'persist') {
      if (effect.compact) node.records = [effect.record];
      else node.records.push(effect.record);
    } else if (effect.kind === 'apply') {
      if (this.applyTimesOut(id)) return;
      const current = node.replica.get((effect.op as SingleKeyOp).key);
      if (this.skipApplied && current !== undefined && current.cas >= effect.cas) return;
      carryOutOnMap(node.replica, effect);
    } else if (effect.kind === 'fetch') {
      this.step(id, { kind: 'fetched', nowMs: this.nowMs, token: effect.token, entries: [...node.replica.entries()] });
    } else if (effect.kind === 'fetch_more') {
      // Each fetch above is answered whole: none is under way.
    } else if (effect.kind === 'settle') {
      this.step(id, { kind: 'applied', nowMs: this.nowMs, token: effect.token });
    } else {
      carryOutOnMap(node.replica, effect);
    }
  }

  /** Delivers in turns: every message queued now, then a flush at every node (as the controller does). */
  deliver(limit = 10_000): void {
    let count = 0;
    while (count < limit && this.queue.length > 0) {
      const turn = this.queue;
      this.queue = [];
      for (const { from, to, message } of turn) {
        count += 1;
        if (this.down.has(to) || this.down.has(from) || this.lose(message, to)) continue;
        this.trace.push(`${from}->${to} ${describeMessage(message)}`);
        this.step(to, { kind: 'message', nowMs: this.nowMs, from, message });
      }
      this.flushAll();
    }
  }

  flushAll(): void {
    for (const id of IDS) if (!this.down.has(id)) this.step(id, { kind: 'flush', nowMs: this.nowMs });
  }

  /** Every running node's poll of its memcached reads `memory` (marks: none stored yet). */
  polled(memory: BackendMemory): void {
    for (const id of IDS) if (!this.down.has(id)) this.step(id, { kind: 'memory_polled', nowMs: this.nowMs, memory, stored: new Map() });
  }

  /** Advance time in 10 ms ticks, delivering everything after each. */
  run(ms: number): void {
    for (let elapsed = 0; elapsed < ms; elapsed += 10) {
      this.nowMs += 10;
      for (const id of IDS) if (!this.down.has(id)) this.step(id, { kind: 'tick', nowMs: this.nowMs, peersUp: IDS });
      this.deliver();
    }
  }

  /** One request in a turn of its own: the request, then a flush. */
  request(id: PeerId, op: Op): { requestId: number; effects: Effect<LogMessage>[] } {
    const { requestIds, effects } = this.requests(id, [op]);
    return { requestId: itemAt(requestIds, 0), effects };
  }

  /** Several requests in one turn of the event loop (of one client connection), then one flush. */
  requests(id: PeerId, ops: Op[], session = 1): { requestIds: number[]; effects: Effect<LogMessage>[] } {
    const requestIds: number[] = [];
    const effects: Effect<LogMessage>[] = [];
    for (const op of ops) {
      const requestId = ++this.requestId;
      requestIds.push(requestId);
      effects.push(...this.step(id, { kind: 'request', nowMs: this.nowMs, requestId: asRequestId(requestId), session, op }));
    }
    effects.push(...this.step(id, { kind: 'flush', nowMs: this.nowMs }));
    return { requestIds, effects };
  }

  leader(): PeerId {
    const leaders = IDS.filter((id) => !this.down.has(id) && this.node(id).machine.status().role === 'leader');
    expect(leaders).toHaveLength(1);
    return leaders[0]!;
  }

  /** The outcome for one request at a node: the apply, read or reply effect naming it. */
  outcome(id: PeerId, requestId: number): Effect<LogMessage> | undefined {
    return this.node(id).effects.find(
      (effect) => (effect.kind === 'apply' || effect.kind === 'read' || effect.kind === 'reply') && effect.requestId === requestId,
    );
  }
}

export function electedCluster(mode: LogMode = 'linearizability', threshold = 10_000, skipApplied = false, bootId: string | null = null): Cluster {
  const cluster = new Cluster(mode, threshold, skipApplied, bootId);
  cluster.run(1_000);
  return cluster;
}

/** The two nodes that are not the leader. */
export function followers(cluster: Cluster): [PeerId, PeerId] {
  const [first, second, ...others] = IDS.filter((id) => id !== cluster.leader());
  if (first === undefined || second === undefined || others.length > 0) throw new Error('expected two followers');
  return [first, second];
}

/** Compaction threshold 6, a follower down while 20 writes commit: the leader compacted past it. */
export function compactedPastLaggingFollower(): { cluster: Cluster; leader: PeerId; lagging: PeerId } {
  const cluster = electedCluster('linearizability', 6);
  const leader = cluster.leader();
  const lagging = followers(cluster)[0];
  cluster.down.add(lagging);
  for (let n = 0; n < 20; n += 1) {
    cluster.request(leader, set(`k${n % 5}`, String(n)));
    cluster.run(20);
  }
  return { cluster, leader, lagging };
}
