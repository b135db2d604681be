/**
 * What the peer fuzz tests share (peer-fuzz-log, peer-fuzz-log-attacks, peer-fuzz-eventual): the
 * three nodes and the time they start at, the limits a log message must keep, checks that a message
 * was dropped and that a log machine's own effects are well formed, and a small replicated-log
 * cluster on a perfect FIFO network with a machine put alone in a role.
 */

import { expect } from 'vitest';
import { asPeerId, asRequestId, type Effect, type Event, type Machine, type PeerId } from '../../src/consistency/types.ts';
import { createReplicatedLog, type LogMessage, type LogMode, type ReadLeaseOptions, type ReplicatedLog } from '../../src/consistency/replicated-log.ts';
import { logMessageProblem, type LogMessageLimits } from '../../src/consistency/log/validate.ts';
import { LOG_DEFAULTS } from '../../src/consistency/log/types.ts';
import { isValidOp, OP_LIMITS_DEFAULT } from '../../src/store/op-rules.ts';
import type { Entry, Op } from '../../src/store/types.ts';
import { mulberry32 } from './log-sim.ts';
import { carryOutOnMap } from './log-cluster.ts';

/** The three nodes of every cluster and machine here. */
export const IDS = [asPeerId('n1'), asPeerId('n2'), asPeerId('n3')] as const;
/** The three nodes by name. */
export const [N1, N2, N3] = IDS;
const HEARTBEAT_MS = 50;
const FAILURE_TIMEOUT_MS = 300;
/** The time every machine starts at. */
export const T0 = 1_700_000_000_000;
/** Every fuzz loop stops after this long, whatever its count (a bound in time as well as in steps). */
export const FUZZ_BUDGET_MS = 20_000;

/** The count fields of a log message, for certainlyInvalid. */
export const LOG_COUNT_FIELDS = ['term'];

/** The limits a log message from a peer must keep among these three nodes. */
export const LOG_LIMITS: LogMessageLimits = {
  nodes: new Set(IDS),
  op: OP_LIMITS_DEFAULT,
  appendEntriesMax: LOG_DEFAULTS.appendEntriesMax,
  requestsMax: LOG_DEFAULTS.queueDepthMax,
  chunkEntriesMax: LOG_DEFAULTS.transferChunkEntriesMax,
  chunkCountMax: 2 ** 24,
};

/** A set of `value` under `key`, never expiring. */
export const set = (key: string, value: string | Buffer): Op => ({
  kind: 'store', verb: 'set', key, flags: 0, expiresAtMs: 0, value: typeof value === 'string' ? Buffer.from(value) : value, casUnique: 0n,
});

/** The note effects among `effects`. */
export const notes = <M>(effects: Effect<M>[]): Array<Extract<Effect<M>, { kind: 'note' }>> =>
  effects.filter((effect): effect is Extract<Effect<M>, { kind: 'note' }> => effect.kind === 'note');

/** What a dropped message may cause: a note, nothing else. */
export function expectDropped<M>(effects: Effect<M>[], machine: Machine<M>, peer: PeerId, countBefore: number): void {
  expect(effects.filter((effect) => effect.kind !== 'note')).toEqual([]);
  expect(machine.status().invalidPeerMessages).toBe(countBefore + 1);
}

/** Checks what a machine does in return: every message it sends and op it applies is well formed. */
export function checkOwnEffects(effects: Effect<LogMessage>[]): void {
  for (const effect of effects) {
    if (effect.kind === 'send') {
      const problem = logMessageProblem(effect.message, LOG_LIMITS);
      if (problem !== null) throw new Error(`sent a malformed ${effect.message.kind}: ${problem}`);
    } else if (effect.kind === 'apply' && !isValidOp(effect.op)) {
      throw new Error(`applies a malformed op ${JSON.stringify(effect.op)}`);
    }
  }
}

// ------------------------------------------------------------------------------------------
// A small replicated-log cluster on a perfect FIFO network.

/** A node of LogCluster: its machine, its persisted records and its replica (a map). */
export interface LogNode {
  machine: ReplicatedLog;
  records: unknown[];
  replica: Map<string, Entry>;
}

/** Three log machines of `mode`: ticks in 10 ms steps, delivers in turns each ending in a flush, and keeps every message sent. */
/** What a fuzz cluster may be run with besides its mode. */
export interface LogClusterTuning {
  batchBytesMax?: number;
  transferChunkEntriesMax?: number;
  compactionThresholdEntries?: number;
  readLeases?: ReadLeaseOptions;
}

export class LogCluster {
  nowMs = T0;
  readonly nodes = new Map<PeerId, LogNode>();
  /** Every message sent, for the fuzz to mutate. */
  readonly sent: LogMessage[] = [];
  private queue: Array<{ from: PeerId; to: PeerId; message: LogMessage }> = [];
  private requestId = 0;

  constructor(
    readonly mode: LogMode,
    readonly tuning: LogClusterTuning = {},
  ) {
    for (const id of IDS) this.nodes.set(id, this.boot(id, []));
  }

  boot(id: PeerId, records: unknown[]): LogNode {
    const machine = createReplicatedLog({
      self: id, peers: IDS, random: mulberry32(IDS.indexOf(id) + 11), heartbeatIntervalMs: HEARTBEAT_MS,
      failureTimeoutMs: FAILURE_TIMEOUT_MS, persisted: records, nowMs: this.nowMs, mode: this.mode, ...this.tuning,
    });
    return { machine, records: records.slice(), replica: new Map() };
  }

  node(id: PeerId): LogNode {
    return this.nodes.get(id) as LogNode;
  }

  step(id: PeerId, event: Event<LogMessage>): Effect<LogMessage>[] {
    const node = this.node(id);
    const effects = node.machine.step(event);
    checkOwnEffects(effects);
    for (const effect of effects) this.carryOut(id, node, effect);
    return effects;
  }

  private carryOut(id: PeerId, node: LogNode, effect: Effect<LogMessage>): void {
    if (effect.kind === 'send') {
      this.sent.push(effect.message);
      this.queue.push({ from: id, to: effect.to, message: effect.message });
    } else if (effect.kind === 'persist') {
      if (effect.compact) node.records = [effect.record];
      else node.records.push(effect.record);
    } else if (effect.kind === 'fetch') {
      this.step(id, { kind: 'fetched', nowMs: this.nowMs, token: effect.token, entries: [...node.replica.entries()] });
    } else if (effect.kind === 'settle') {
      this.step(id, { kind: 'applied', nowMs: this.nowMs, token: effect.token });
    } else {
      carryOutOnMap(node.replica, effect);
    }
  }

  deliver(limit = 10_000): void {
    let count = 0;
    while (count < limit && this.queue.length > 0) {
      const turn = this.queue;
      this.queue = [];
      for (const { from, to, message } of turn) {
        count += 1;
        this.step(to, { kind: 'message', nowMs: this.nowMs, from, message });
      }
      for (const id of IDS) this.step(id, { kind: 'flush', nowMs: this.nowMs });
    }
  }

  run(ms: number): void {
    for (let elapsed = 0; elapsed < ms; elapsed += 10) {
      this.nowMs += 10;
      for (const id of IDS) this.step(id, { kind: 'tick', nowMs: this.nowMs, peersUp: IDS });
      this.deliver();
    }
  }

  write(id: PeerId, op: Op): void {
    this.requestId += 1;
    this.step(id, { kind: 'request', nowMs: this.nowMs, requestId: asRequestId(this.requestId), session: this.requestId, op });
    this.step(id, { kind: 'flush', nowMs: this.nowMs });
  }

  leader(): PeerId | null {
    const [leader, ...others] = IDS.filter((id) => this.node(id).machine.inspect().role === 'leader');
    return leader !== undefined && others.length === 0 ? leader : null;
  }
}

/** A machine alone in its role: leader (of a live cluster), follower, or candidate. */
export function machineInRole(mode: LogMode, role: 'leader' | 'follower' | 'candidate', tuning: LogClusterTuning = {}): { cluster: LogCluster; id: PeerId } {
  const cluster = new LogCluster(mode, tuning);
  cluster.run(1_000);
  const leader = cluster.leader() as PeerId;
  if (role === 'leader') return { cluster, id: leader };
  const follower = IDS.find((id) => id !== leader) as PeerId;
  if (role === 'follower') return { cluster, id: follower };
  // A node that heard nothing for an election timeout, granted a pre-vote: a candidate. (Booted
  // with a record of its own: a node with none asks its peers first whether the cluster ran.)
  const lonely = cluster.boot(N1, [{ kind: 'hard', term: 0, votedFor: null, incarnation: 1, leaderReplicaEpoch: 0 }]);
  cluster.nodes.set(N1, lonely);
  cluster.nowMs += 3 * FAILURE_TIMEOUT_MS;
  lonely.machine.step({ kind: 'tick', nowMs: cluster.nowMs, peersUp: IDS });
  const term = lonely.machine.inspect().term;
  lonely.machine.step({ kind: 'message', nowMs: cluster.nowMs, from: N2, message: { kind: 'pre_vote_reply', term: term + 1, granted: true } });
  expect(lonely.machine.inspect().role).toBe('candidate');
  return { cluster, id: N1 };
}
