/**
 * Peer input is never a programmer error: every mode's machine drops (and counts, and notes) a
 * message it cannot use, whatever it holds, and goes on as if it never came.
 *
 * A seeded fuzz feeds thousands of random and mutated real messages (taken from a fault-free run)
 * into machines in each role — leader, follower, candidate for the log; a peer for eventual — and
 * checks that nothing throws, that the machine's own invariants hold (it asserts them after every
 * step), that everything it sends in turn is well formed, and that a cluster whose machines got
 * nothing but junk still elects and replicates. Focused tests replay each attack measured against
 * earlier releases, and the byte budgets of batched messages.
 */

import { describe, expect, it } from 'vitest';
import { asPeerId, asRequestId, type Effect, type Event, type KeyedEntry, type Machine, type PeerId } from '../src/consistency/types.ts';
import { createReplicatedLog, type LogMessage, type LogMode, type ReplicatedLog } from '../src/consistency/replicated-log.ts';
import { logMessageProblem, type LogMessageLimits } from '../src/consistency/log/validate.ts';
import { LOG_DEFAULTS } from '../src/consistency/log/types.ts';
import { EventualMachine, type EventualMessage } from '../src/consistency/eventual.ts';
import { eventualMessageProblem } from '../src/consistency/eventual/messages.ts';
import { HLC_PHYSICAL_MS_MAX, packVersion, unpackVersion } from '../src/consistency/hlc.ts';
import { createLocal } from '../src/consistency/local.ts';
import { applyToEntry, UNKNOWN_OP_REFUSAL, type SingleKeyOp } from '../src/store/apply.ts';
import { isValidOp, OP_LIMITS_DEFAULT, opProblem } from '../src/store/op-rules.ts';
import type { Entry, Op } from '../src/store/types.ts';
import { mulberry32, simulate } from './support/log-sim.ts';
import { runEventualSim } from './support/eventual-sim.ts';
import { certainlyInvalid, deepCopy, mutate, randomJunk } from './support/junk.ts';
import { itemAt } from '../src/runtime/item-at.ts';
import { carryOutOnMap } from './support/log-cluster.ts';

const IDS = [asPeerId('n1'), asPeerId('n2'), asPeerId('n3')] as const;
const [N1, N2, N3] = IDS;
const HEARTBEAT_MS = 50;
const FAILURE_TIMEOUT_MS = 300;
const T0 = 1_700_000_000_000;
const U64_MAX = (1n << 64n) - 1n;
/** Every fuzz loop stops after this long, whatever its count (a bound in time as well as in steps). */
const FUZZ_BUDGET_MS = 20_000;

const LOG_KINDS = ['pre_vote', 'pre_vote_reply', 'vote', 'vote_reply', 'append', 'append_reply', 'forward', 'forward_refused', 'read_index', 'read_index_reply', 'transfer_request', 'transfer_chunk'];
const LOG_COUNT_FIELDS = ['term'];
const EVENTUAL_KINDS = ['push', 'push_ack', 'ae_groups', 'ae_buckets', 'ae_keys', 'ae_want'];
const EVENTUAL_COUNT_FIELDS = ['batch', 'round'];

const LOG_LIMITS: LogMessageLimits = {
  nodes: new Set(IDS),
  op: OP_LIMITS_DEFAULT,
  appendEntriesMax: LOG_DEFAULTS.appendEntriesMax,
  requestsMax: LOG_DEFAULTS.queueDepthMax,
  chunkEntriesMax: LOG_DEFAULTS.transferChunkEntriesMax,
  chunkCountMax: 2 ** 24,
};

const EVENTUAL_LIMITS = { keyBytesMax: 250, valueBytesMax: 1 << 20, pushEntriesMax: 256, keysMax: 4096 };

const set = (key: string, value: string | Buffer): Op => ({
  kind: 'store', verb: 'set', key, flags: 0, expiresAtMs: 0, value: typeof value === 'string' ? Buffer.from(value) : value, casUnique: 0n,
});

const notes = <M>(effects: Effect<M>[]): Array<Extract<Effect<M>, { kind: 'note' }>> =>
  effects.filter((effect): effect is Extract<Effect<M>, { kind: 'note' }> => effect.kind === 'note');

/** What a dropped message may cause: a note, nothing else. */
function expectDropped<M>(effects: Effect<M>[], machine: Machine<M>, peer: PeerId, countBefore: number): void {
  expect(effects.filter((effect) => effect.kind !== 'note')).toEqual([]);
  expect(machine.status().invalidPeerMessages).toBe(countBefore + 1);
}

/** Checks what a machine does in return: every message it sends and op it applies is well formed. */
function checkOwnEffects(effects: Effect<LogMessage>[]): void {
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

interface LogNode {
  machine: ReplicatedLog;
  records: unknown[];
  replica: Map<string, Entry>;
}

class LogCluster {
  nowMs = T0;
  readonly nodes = new Map<PeerId, LogNode>();
  /** Every message sent, for the fuzz to mutate. */
  readonly sent: LogMessage[] = [];
  private queue: Array<{ from: PeerId; to: PeerId; message: LogMessage }> = [];
  private requestId = 0;

  constructor(
    readonly mode: LogMode,
    readonly tuning: { batchBytesMax?: number; transferChunkEntriesMax?: number; compactionThresholdEntries?: number } = {},
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

/** A fault-free run with writes of every op kind: the corpus of real messages to mutate. */
function logCorpus(mode: LogMode): LogMessage[] {
  const cluster = new LogCluster(mode, { compactionThresholdEntries: 8, transferChunkEntriesMax: 2 });
  cluster.run(1_000);
  const leader = cluster.leader() as PeerId;
  const follower = IDS.find((id) => id !== leader) as PeerId;
  const ops: Op[] = [
    set('a', '1'), set('b', 'two'), { kind: 'arith', verb: 'incr', key: 'a', delta: 5n, initial: null, expiresAtMs: 0 },
    { kind: 'delete', key: 'b' }, { kind: 'touch', key: 'a', expiresAtMs: T0 + 60_000 }, { kind: 'gat', keys: ['a'], expiresAtMs: 0 },
    { kind: 'flush_all', delayMs: 0 }, set('c', 'x'.repeat(100)),
  ];
  for (const op of ops) {
    cluster.write(follower, op);
    cluster.write(leader, op);
    cluster.step(follower, { kind: 'request', nowMs: cluster.nowMs, requestId: asRequestId(9_000 + ops.indexOf(op)), session: 999, op: { kind: 'get', keys: ['a'] } });
    cluster.run(20);
  }
  // A state transfer: a follower's backend restarts empty after compaction.
  cluster.step(follower, { kind: 'backend_reset', nowMs: cluster.nowMs, emptied: true });
  cluster.run(1_000);
  return cluster.sent;
}

/** A machine alone in its role: leader (of a live cluster), follower, or candidate. */
function machineInRole(mode: LogMode, role: 'leader' | 'follower' | 'candidate'): { cluster: LogCluster; id: PeerId } {
  const cluster = new LogCluster(mode);
  cluster.run(1_000);
  const leader = cluster.leader() as PeerId;
  if (role === 'leader') return { cluster, id: leader };
  const follower = IDS.find((id) => id !== leader) as PeerId;
  if (role === 'follower') return { cluster, id: follower };
  // A node that heard nothing for an election timeout, granted a pre-vote: a candidate.
  const lonely = cluster.boot(N1, []);
  cluster.nodes.set(N1, lonely);
  cluster.nowMs += 3 * FAILURE_TIMEOUT_MS;
  lonely.machine.step({ kind: 'tick', nowMs: cluster.nowMs, peersUp: IDS });
  const term = lonely.machine.inspect().term;
  lonely.machine.step({ kind: 'message', nowMs: cluster.nowMs, from: N2, message: { kind: 'pre_vote_reply', term: term + 1, granted: true } });
  expect(lonely.machine.inspect().role).toBe('candidate');
  return { cluster, id: N1 };
}

function fuzzLog(mode: LogMode, seed: number, count: number): { steps: number; dropped: number } {
  const corpus = logCorpus(mode);
  expect(corpus.length).toBeGreaterThan(50);
  const random = mulberry32(seed);
  const startedMs = Date.now();
  let steps = 0;
  let dropped = 0;
  for (const role of ['leader', 'follower', 'candidate'] as const) {
    for (let round = 0; round < 3; round += 1) {
      const { cluster, id } = machineInRole(mode, role);
      const node = cluster.node(id);
      const sender = itemAt(IDS.filter((peer) => peer !== id), Math.floor(random() * 2));
      const before = node.machine.status().invalidPeerMessages;
      for (let n = 0; n < count / 9 && Date.now() - startedMs < FUZZ_BUDGET_MS; n += 1) {
        const real = corpus[Math.floor(random() * corpus.length)];
        const message = random() < 0.9 ? mutate(real, random, LOG_KINDS) : randomJunk(random);
        cluster.nowMs += random() < 0.2 ? 7 : 0;
        const effects = node.machine.step({ kind: 'message', nowMs: cluster.nowMs, from: sender, message: message as LogMessage });
        checkOwnEffects(effects);
        steps += 1;
      }
      dropped += node.machine.status().invalidPeerMessages - before;
    }
  }
  return { steps, dropped };
}

describe('replicated log: peer messages are validated before the machine acts', () => {
  for (const mode of ['linearizability', 'sequential'] as const) {
    it(`${mode}: thousands of mutated and random messages, in every role, throw nothing and keep invariants`, () => {
      const { steps, dropped } = fuzzLog(mode, mode === 'linearizability' ? 101 : 202, 4_500);
      expect(steps).toBeGreaterThan(1_000);
      // Most mutations break the schema: they are dropped and counted.
      expect(dropped).toBeGreaterThan(steps / 3);
    });
  }

  it('a cluster whose machines got nothing but junk still elects a leader and replicates', () => {
    const cluster = new LogCluster('linearizability');
    const corpus = logCorpus('linearizability');
    const random = mulberry32(5);
    for (let n = 0; n < 3_000; n += 1) {
      const to = itemAt(IDS, n % 3);
      const from = itemAt(IDS, (n + 1 + Math.floor(random() * 2)) % 3);
      const real = corpus[Math.floor(random() * corpus.length)] as unknown as Record<string, unknown>;
      const junk = n % 2 === 0 ? certainlyInvalid(real, random, LOG_COUNT_FIELDS) : randomJunk(random);
      cluster.step(to, { kind: 'message', nowMs: cluster.nowMs, from, message: junk as LogMessage });
    }
    for (const id of IDS) {
      const view = cluster.node(id).machine.inspect();
      expect([view.term, view.lastIndex, view.role]).toEqual([0, 0, 'follower']);
      expect(cluster.node(id).machine.status().invalidPeerMessages).toBeGreaterThan(900);
    }
    cluster.run(1_000);
    const leader = cluster.leader();
    expect(leader).not.toBeNull();
    cluster.write(leader as PeerId, set('k', 'v'));
    cluster.run(200);
    for (const id of IDS) expect(cluster.node(id).replica.get('k')?.value.toString()).toBe('v');
  });
});

describe('replicated log: each measured attack is dropped, counted and noted, state unchanged', () => {
  function attacked(role: 'leader' | 'follower'): { cluster: LogCluster; id: PeerId; from: PeerId } {
    const { cluster, id } = machineInRole('linearizability', role);
    const leader = cluster.leader() as PeerId;
    const from = role === 'leader' ? IDS.find((peer) => peer !== id) as PeerId : leader;
    return { cluster, id, from };
  }

  function expectUnchanged(machine: ReplicatedLog, step: () => Effect<LogMessage>[], peer: PeerId): Effect<LogMessage>[] {
    const before = machine.inspect();
    const entriesBefore = Array.from({ length: before.lastIndex }, (_, at) => before.entryAt(at + 1));
    const countBefore = machine.status().invalidPeerMessages;
    const effects = step();
    expectDropped(effects, machine, peer, countBefore);
    const after = machine.inspect();
    expect([after.term, after.role, after.leader, after.lastIndex, after.commitIndex])
      .toEqual([before.term, before.role, before.leader, before.lastIndex, before.commitIndex]);
    expect(Array.from({ length: after.lastIndex }, (_, at) => after.entryAt(at + 1))).toEqual(entriesBefore);
    return effects;
  }

  const junkBodies: Array<[string, unknown]> = [
    ['a message of unknown kind', { kind: 'explode', term: 1 }],
    ['null', null],
    ['{}', {}],
    ['a term of Infinity', { kind: 'append_reply', term: Number.POSITIVE_INFINITY, success: false, matchIndex: 0, hintIndex: 0, round: 0, seq: 0, commitIndex: 0 }],
    ['a term of "9"', { kind: 'vote', term: '9', lastIndex: 99, lastTerm: 9 }],
    ['a term far beyond any election count', { kind: 'pre_vote_reply', term: 2 ** 40, granted: false }],
  ];
  for (const role of ['leader', 'follower'] as const) {
    for (const [what, body] of junkBodies) {
      it(`${role}: ${what}`, () => {
        const { cluster, id, from } = attacked(role);
        const machine = cluster.node(id).machine;
        const records = cluster.node(id).records.length;
        const effects = expectUnchanged(machine, () => machine.step({ kind: 'message', nowMs: cluster.nowMs, from, message: body as LogMessage }), from);
        expect(notes(effects)).toEqual([expect.objectContaining({ level: 'warn', meta: expect.objectContaining({ peer: from }) })]);
        // Nothing persisted: a restart does not bring the junk back.
        expect(cluster.node(id).records.length).toBe(records);
        cluster.run(500);
        expect(cluster.leader()).not.toBeNull();
      });
    }
  }

  it('an append in the leader\'s own term ("two leaders in term") is dropped, not asserted', () => {
    const { cluster, id: leader, from } = attacked('leader');
    const machine = cluster.node(leader).machine;
    const view = machine.inspect();
    const append: LogMessage = {
      kind: 'append', term: view.term, prevIndex: view.lastIndex, prevTerm: view.term, entries: [], commitIndex: 0,
      durableIndex: 0, round: 0, seq: 1, quiet: false,
    };
    const effects = expectUnchanged(machine, () => machine.step({ kind: 'message', nowMs: cluster.nowMs, from, message: append }), from);
    expect(itemAt(notes(effects), 0).meta).toMatchObject({ peer: from, reason: expect.stringContaining('two leaders') });
  });

  it('an append that would change a committed entry is dropped, not asserted', () => {
    const { cluster, id, from } = attacked('follower');
    cluster.write(from, set('k', 'v'));
    cluster.run(200);
    const machine = cluster.node(id).machine;
    const view = machine.inspect();
    expect(view.commitIndex).toBeGreaterThanOrEqual(2);
    const committed = view.commitIndex;
    const before = view.entryAt(committed - 1);
    const target = view.entryAt(committed);
    if (before === null || target === null) throw new Error('entries compacted');
    // The only way to differ in term at a committed index: a later term (which Raft adopts).
    const changed: LogMessage = {
      kind: 'append', term: view.term + 1, prevIndex: committed - 1, prevTerm: before.term,
      entries: [{ ...target, term: view.term + 1, op: set('k', 'forged') }], commitIndex: committed, durableIndex: 0, round: 0, seq: 99, quiet: false,
    };
    // A term one higher is adopted (Raft's rule), but the committed entry must not change.
    const effects = machine.step({ kind: 'message', nowMs: cluster.nowMs, from, message: changed });
    expect(notes(effects).some((note) => String(note.meta.reason).includes('committed entry'))).toBe(true);
    expect(machine.inspect().entryAt(view.commitIndex)).toEqual(view.entryAt(view.commitIndex));
    expect(machine.status().invalidPeerMessages).toBe(1);
  });

  it('a log entry with an unknown op kind is dropped with its append; nothing is persisted or applied', () => {
    const { cluster, id, from } = attacked('follower');
    const machine = cluster.node(id).machine;
    const view = machine.inspect();
    const append = {
      kind: 'append', term: view.term, prevIndex: view.lastIndex, prevTerm: view.term, commitIndex: view.lastIndex + 1,
      durableIndex: view.lastIndex + 1, round: 0, seq: 77, quiet: false,
      entries: [{ term: view.term, index: view.lastIndex + 1, nowMs: cluster.nowMs, op: { kind: 'explode', key: 'k' }, origin: from, incarnation: 1, requestId: null }],
    };
    const records = cluster.node(id).records.length;
    const effects = expectUnchanged(machine, () => machine.step({ kind: 'message', nowMs: cluster.nowMs, from, message: append as unknown as LogMessage }), from);
    expect(itemAt(notes(effects), 0).meta).toMatchObject({ peer: from, reason: 'append: bad entry' });
    expect(cluster.node(id).records.length).toBe(records);
  });

  it('a restart from records holding junk (an unknown op, an Infinity term, an unknown record) neither throws nor applies it', () => {
    const cluster = new LogCluster('linearizability');
    cluster.run(1_000);
    const leader = cluster.leader() as PeerId;
    cluster.write(leader, set('k', 'v'));
    cluster.run(200);
    const follower = IDS.find((id) => id !== leader) as PeerId;
    const records = deepCopy(cluster.node(follower).records);
    const last = cluster.node(follower).machine.inspect().lastIndex;
    const term = cluster.node(follower).machine.inspect().term;
    records.push(
      { kind: 'entries', entries: [{ term, index: last + 1, nowMs: T0, op: { kind: 'explode', key: 'k' }, origin: leader, incarnation: 1, requestId: null }] },
      { kind: 'hard', term: Number.POSITIVE_INFINITY, votedFor: null, incarnation: 1 },
      { kind: 'what' }, null, { kind: 'entries', entries: [{ index: 'x' }] }, { kind: 'truncate', fromIndex: -3 },
    );
    const restarted = cluster.boot(follower, records);
    const view = restarted.machine.inspect();
    expect(view.term).toBe(term);
    expect(view.lastIndex).toBe(last + 1);
    expect(view.entryAt(last + 1)?.op).toBeNull();
    cluster.nodes.set(follower, restarted);
    cluster.run(1_000);
    expect(cluster.leader()).not.toBeNull();
  });

  it('applying an op of unknown kind or verb is a typed refusal, not an exception', () => {
    const unknownKind = { kind: 'explode', key: 'k' } as unknown as SingleKeyOp;
    const unknownVerb = { ...set('k', 'v'), verb: 'upsert' } as unknown as SingleKeyOp;
    for (const op of [unknownKind, unknownVerb]) {
      expect(applyToEntry(undefined, op, { cas: 1n, nowMs: T0 })).toEqual({ write: undefined, reply: UNKNOWN_OP_REFUSAL });
    }
  });

  it('notes at most once a second per peer, and counts every drop', () => {
    const { cluster, id, from } = attacked('follower');
    const machine = cluster.node(id).machine;
    let noted = 0;
    for (let n = 0; n < 100; n += 1) {
      noted += notes(machine.step({ kind: 'message', nowMs: cluster.nowMs + n * 25, from, message: null as unknown as LogMessage })).length;
    }
    // 100 drops over 2.5 s: notes at 0, 1000 and 2000 ms.
    expect(noted).toBe(3);
    expect(machine.status().invalidPeerMessages).toBe(100);
  });
});

describe('replicated log: byte budgets keep every batched message under the frame cap', () => {
  const messageBytes = (message: LogMessage): number => {
    if (message.kind === 'append') return message.entries.reduce((sum, entry) => sum + (entry.op?.kind === 'store' ? entry.op.value.length : 0), 0);
    if (message.kind === 'forward') return message.requests.reduce((sum, request) => sum + (request.op.kind === 'store' ? request.op.value.length : 0), 0);
    if (message.kind === 'transfer_chunk') return message.entries.reduce((sum, [, entry]) => sum + entry.value.length, 0);
    return 0;
  };

  it('appends, forwards and transfer chunks hold at most batchBytesMax of values (one larger entry alone)', () => {
    const budget = 10_000;
    const cluster = new LogCluster('linearizability', { batchBytesMax: budget, compactionThresholdEntries: 8 });
    cluster.run(1_000);
    const leader = cluster.leader() as PeerId;
    const follower = IDS.find((id) => id !== leader) as PeerId;
    const value = Buffer.alloc(3_000, 'v');
    const huge = Buffer.alloc(25_000, 'h');
    // One turn at the follower: 12 writes forwarded together, one of them over the budget alone.
    for (let n = 0; n < 12; n += 1) {
      cluster.step(follower, { kind: 'request', nowMs: cluster.nowMs, requestId: asRequestId(100 + n), session: n, op: set(`k${n}`, n === 5 ? huge : value) });
    }
    cluster.step(follower, { kind: 'flush', nowMs: cluster.nowMs });
    cluster.run(500);
    for (const id of IDS) expect(cluster.node(id).replica.size).toBe(12);
    // The emptied follower is rebuilt by a state transfer (the log was compacted).
    cluster.step(follower, { kind: 'backend_reset', nowMs: cluster.nowMs, emptied: true });
    cluster.run(1_000);
    expect(cluster.node(follower).replica.size).toBe(12);
    const kinds = new Set<string>();
    for (const message of cluster.sent) {
      const bytes = messageBytes(message);
      if (bytes === 0) continue;
      kinds.add(message.kind);
      const count = message.kind === 'append' ? message.entries.length : message.kind === 'forward' ? message.requests.length : message.kind === 'transfer_chunk' ? message.entries.length : 0;
      if (count > 1) expect(bytes).toBeLessThanOrEqual(budget);
    }
    expect([...kinds].sort()).toEqual(['append', 'forward', 'transfer_chunk']);
    // Batching still happens: some message carried more than one entry.
    expect(cluster.sent.some((message) => message.kind === 'forward' && message.requests.length > 1)).toBe(true);
  });
});

// ------------------------------------------------------------------------------------------
// Eventual mode.

function eventualMachine(self: PeerId = N1): EventualMachine {
  return new EventualMachine({
    self, peers: IDS, random: mulberry32(7), heartbeatIntervalMs: 100, failureTimeoutMs: 400, persisted: [], nowMs: T0,
  });
}

/** Answers the start-up fetch, so requests are served. */
function bootEventual(machine: EventualMachine, nowMs = T0): void {
  const effects = machine.step({ kind: 'tick', nowMs, peersUp: [N2, N3] });
  for (const effect of effects) if (effect.kind === 'fetch') machine.step({ kind: 'fetched', nowMs, token: effect.token, entries: [] });
}

/** Real eventual messages: pushes, acks and every anti-entropy step between two machines. */
function eventualCorpus(): EventualMessage[] {
  const one = eventualMachine(N1);
  const two = eventualMachine(N2);
  const corpus: EventualMessage[] = [];
  const replicas = new Map<PeerId, Map<string, Entry>>([[N1, new Map()], [N2, new Map()]]);
  const queue: Array<{ to: PeerId; from: PeerId; event: Event<EventualMessage> }> = [];
  const run = (id: PeerId, event: Event<EventualMessage>): void => {
    const machine = id === N1 ? one : two;
    const replica = replicas.get(id) as Map<string, Entry>;
    for (const effect of machine.step(event)) {
      if (effect.kind === 'send' && (effect.to === N1 || effect.to === N2)) {
        corpus.push(effect.message);
        // Pushes are lost for a while: the replicas differ, so anti-entropy has work.
        if (effect.message.kind === 'push' && lossy) continue;
        queue.push({ to: effect.to, from: id, event: { kind: 'message', nowMs: event.nowMs, from: id, message: effect.message } });
      } else if (effect.kind === 'apply') {
        const op = effect.op as SingleKeyOp;
        const outcome = applyToEntry(replica.get(op.key), op, { cas: effect.cas, nowMs: effect.nowMs });
        if (outcome.write === null) {
          replica.set(op.key, { value: Buffer.alloc(0), flags: 0, expiresAtMs: 0, cas: effect.cas, tombstone: true });
        }
        else if (outcome.write !== undefined) replica.set(op.key, outcome.write);
      } else if (effect.kind === 'put') {
        for (const [key, entry] of effect.entries) if ((replica.get(key)?.cas ?? -1n) < entry.cas) replica.set(key, entry);
        if (effect.token !== null) queue.push({ to: id, from: id, event: { kind: 'applied', nowMs: event.nowMs, token: effect.token } });
      } else if (effect.kind === 'fetch') {
        const keys = effect.keys ?? [...replica.keys()];
        const entries: KeyedEntry[] = keys.flatMap((key) => (replica.has(key) ? [[key, replica.get(key) as Entry] as KeyedEntry] : []));
        queue.push({ to: id, from: id, event: { kind: 'fetched', nowMs: event.nowMs, token: effect.token, entries } });
      }
    }
  };
  let nowMs = T0;
  let lossy = true;
  for (let n = 0; n < 60; n += 1) {
    nowMs += 50;
    lossy = n < 30;
    const id = n % 2 === 0 ? N1 : N2;
    const expiring: Op = { kind: 'store', verb: 'set', key: `k${n % 7}`, flags: 0, expiresAtMs: n % 3 === 0 ? nowMs + 60_000 : 0, value: Buffer.from(`v${n}`), casUnique: 0n };
    const op: Op = n % 5 === 4 ? { kind: 'delete', key: `k${n % 7}` } : expiring;
    run(id, { kind: 'request', nowMs, requestId: asRequestId(n + 1), session: 1, op });
    run(N1, { kind: 'tick', nowMs, peersUp: [N2] });
    run(N2, { kind: 'tick', nowMs, peersUp: [N1] });
    for (let guard = 0; guard < 1_000 && queue.length > 0; guard += 1) {
      const next = queue.shift() as (typeof queue)[number];
      run(next.to, next.event);
    }
  }
  return corpus;
}

describe('eventual: peer messages are validated before the machine acts', () => {
  it('thousands of mutated and random messages throw nothing, keep the clock encodable, and are counted', () => {
    const corpus = eventualCorpus();
    const kinds = new Set(corpus.map((message) => message.kind));
    expect([...kinds].sort()).toEqual([...EVENTUAL_KINDS].sort());
    // No false alarm: every real message passes.
    for (const message of corpus) expect(eventualMessageProblem(message, EVENTUAL_LIMITS)).toBeNull();
    const random = mulberry32(303);
    const machine = eventualMachine();
    bootEventual(machine);
    const startedMs = Date.now();
    let nowMs = T0;
    let steps = 0;
    for (let n = 0; n < 4_000 && Date.now() - startedMs < FUZZ_BUDGET_MS; n += 1) {
      nowMs += random() < 0.3 ? 5 : 0;
      const real = corpus[Math.floor(random() * corpus.length)];
      const message = random() < 0.9 ? mutate(real, random, EVENTUAL_KINDS) : randomJunk(random);
      const effects = machine.step({ kind: 'message', nowMs, from: random() < 0.5 ? N2 : N3, message: message as EventualMessage });
      for (const effect of effects) {
        if (effect.kind === 'send') expect(eventualMessageProblem(effect.message, EVENTUAL_LIMITS)).toBeNull();
        if (effect.kind === 'fetched' as string) throw new Error('impossible');
      }
      // Answer what it asks of its replica, so acks and ships run too.
      for (const effect of effects) {
        if (effect.kind === 'put' && effect.token !== null) machine.step({ kind: 'applied', nowMs, token: effect.token });
        if (effect.kind === 'fetch') machine.step({ kind: 'fetched', nowMs, token: effect.token, entries: [] });
      }
      if (n % 97 === 0) machine.step({ kind: 'tick', nowMs, peersUp: [N2, N3] });
      expect(machine.hlc().physicalMs).toBeLessThanOrEqual(nowMs + 5 * 60_000);
      steps += 1;
    }
    expect(steps).toBeGreaterThan(1_000);
    expect(machine.status().invalidPeerMessages).toBeGreaterThan(steps / 3);
    // Still writes with an encodable version.
    const write = machine.step({ kind: 'request', nowMs, requestId: asRequestId(1), session: 1, op: set('k', 'v') });
    const apply = write.find((effect) => effect.kind === 'apply');
    expect(apply?.kind === 'apply' && apply.cas < U64_MAX).toBe(true);
  });

  for (const [what, cas] of [['2^64 − 1', U64_MAX], ['2^1100', 1n << 1100n]] as const) {
    it(`a push with cas ${what} is dropped: the clock is unchanged and later writes still encode`, () => {
      const machine = eventualMachine();
      bootEventual(machine);
      const clock = machine.hlc();
      const push = { kind: 'push', batch: 1, entries: [['k', { value: Buffer.from('v'), flags: 0, expiresAtMs: 0, cas }]] };
      const effects = machine.step({ kind: 'message', nowMs: T0 + 1, from: N2, message: push as EventualMessage });
      expectDropped(effects.filter((effect) => !(effect.kind === 'send' && effect.message.kind === 'push_ack')), machine, N2, 0);
      expect(itemAt(notes(effects), 0).meta).toMatchObject({ peer: N2 });
      expect(effects.some((effect) => effect.kind === 'put')).toBe(false);
      expect(machine.hlc()).toEqual(clock);
      const write = machine.step({ kind: 'request', nowMs: T0 + 2, requestId: asRequestId(1), session: 1, op: set('k', 'mine') });
      const apply = write.find((effect) => effect.kind === 'apply');
      expect(apply?.kind === 'apply' && unpackVersion(apply.cas).clock.physicalMs).toBe(T0 + 2);
    });
  }

  it('an entry whose clock is further ahead than clockAheadMaxMs is dropped; one within it is merged', () => {
    const machine = eventualMachine();
    bootEventual(machine);
    const far = packVersion({ physicalMs: T0 + 10 * 60_000, counter: 0 }, 1);
    const near = packVersion({ physicalMs: T0 + 60_000, counter: 3 }, 1);
    const push: EventualMessage = { kind: 'push', batch: 4, entries: [['far', { value: Buffer.from('f'), flags: 0, expiresAtMs: 0, cas: far }], ['near', { value: Buffer.from('n'), flags: 0, expiresAtMs: 0, cas: near }]] };
    const effects = machine.step({ kind: 'message', nowMs: T0, from: N3, message: push });
    const put = effects.find((effect) => effect.kind === 'put');
    expect(put?.kind === 'put' && put.entries.map(([key]) => key)).toEqual(['near']);
    // The clock follows `near`, then ticks once for the merge's own version (a counter join's).
    expect(machine.hlc()).toEqual({ physicalMs: T0 + 60_000, counter: 4 });
    expect(machine.status().invalidPeerMessages).toBe(1);
    expect(itemAt(notes(effects), 0).meta).toMatchObject({ peer: N3 });
  });

  it('a fetched replica entry with a huge version does not drag the clock (a replica poisoned before the check)', () => {
    const machine = eventualMachine();
    const boot = machine.step({ kind: 'tick', nowMs: T0, peersUp: [N2, N3] });
    const fetch = boot.find((effect) => effect.kind === 'fetch');
    expect(fetch).toBeDefined();
    machine.step({ kind: 'fetched', nowMs: T0, token: fetch?.kind === 'fetch' ? fetch.token : 0, entries: [['bad', { value: Buffer.from('x'), flags: 0, expiresAtMs: 0, cas: U64_MAX }]] });
    expect(machine.hlc().physicalMs).toBeLessThanOrEqual(T0 + 5 * 60_000);
    expect(HLC_PHYSICAL_MS_MAX).toBeGreaterThan(T0);
  });

  it('local mode drops and counts peer messages', () => {
    const local = createLocal({ self: N1, peers: IDS, random: mulberry32(1), heartbeatIntervalMs: 100, failureTimeoutMs: 400, persisted: [], nowMs: T0, mode: 'linearizability' });
    const effects = local.step({ kind: 'message', nowMs: T0, from: N2, message: { kind: 'append' } as never });
    expect(itemAt(notes(effects), 0).meta).toMatchObject({ peer: N2 });
    expect(local.status().invalidPeerMessages).toBe(1);
  });
});

it('junk helpers: certainlyInvalid always fails both schemas', () => {
  const random = mulberry32(9);
  const logMessage = { kind: 'append_reply', term: 1, success: true, matchIndex: 1, hintIndex: 0, round: 0, seq: 1, commitIndex: 1 };
  const push = { kind: 'push', batch: 1, entries: [] };
  for (let n = 0; n < 500; n += 1) {
    expect(logMessageProblem(certainlyInvalid(logMessage, random, LOG_COUNT_FIELDS), LOG_LIMITS)).not.toBeNull();
    expect(eventualMessageProblem(certainlyInvalid(push, random, EVENTUAL_COUNT_FIELDS), EVENTUAL_LIMITS)).not.toBeNull();
  }
});

describe('simulators with malformed copies of messages on the wire', () => {
  it('replicated log, both modes: every malformed copy is dropped and counted; the run stays safe and converges', () => {
    for (const mode of ['linearizability', 'sequential'] as const) {
      const result = simulate(mode === 'linearizability' ? 41 : 42, mode, { junkRate: 0.2, safetyMs: 3_000 });
      expect(result.junkDelivered).toBeGreaterThan(100);
      expect(result.repliesOk).toBeGreaterThan(0);
    }
  });

  it('eventual and causal: every malformed copy is dropped and counted, the clock unmoved; the replicas converge', () => {
    for (const mode of ['eventual', 'causal'] as const) {
      for (const seed of [43, 45, 46, 49]) {
        const report = runEventualSim({ seed, mode, junkRate: 0.2, faultMs: 3_000 });
        expect(report.problem, `${mode} seed ${seed}`).toBeNull();
        expect(report.stats.junk).toBeGreaterThan(100);
      }
    }
  });
});

describe('op rules (what a peer\'s op must be)', () => {
  const base = set('k', 'v') as Extract<Op, { kind: 'store' }>;
  it('takes what a client can send, at the bounds', () => {
    expect(opProblem({ ...base, key: 'k'.repeat(250), flags: 0xffffffff, casUnique: U64_MAX, value: Buffer.alloc(1 << 20) })).toBeNull();
    expect(opProblem({ kind: 'arith', verb: 'decr', key: 'n', delta: U64_MAX, initial: 0n, expiresAtMs: 0, casUnique: 5n })).toBeNull();
    expect(opProblem({ kind: 'flush_all', delayMs: 0 })).toBeNull();
    expect(opProblem({ kind: 'gat', keys: ['a', 'b'], expiresAtMs: T0 })).toBeNull();
  });
  it('refuses keys, values and numbers no client can send', () => {
    const bad: Array<[string, unknown]> = [
      ['key of 251 bytes', { ...base, key: 'k'.repeat(251) }],
      ['empty key', { ...base, key: '' }],
      ['key with a space', { ...base, key: 'a b' }],
      ['key with a control byte', { ...base, key: 'a\u0001' }],
      ['key beyond latin1', { ...base, key: 'ключ' }],
      ['value over the limit', { ...base, value: Buffer.alloc((1 << 20) + 1) }],
      ['value not a Buffer', { ...base, value: 'v' }],
      ['flags over u32', { ...base, flags: 2 ** 32 }],
      ['negative expiry', { ...base, expiresAtMs: -1 }],
      ['cas of 2^64', { ...base, casUnique: 1n << 64n }],
      ['unknown verb', { ...base, verb: 'upsert' }],
      ['unknown kind', { kind: 'explode', key: 'k' }],
      ['delta of 2^64', { kind: 'arith', verb: 'incr', key: 'n', delta: 1n << 64n, initial: null, expiresAtMs: 0 }],
      ['flush delay of Infinity', { kind: 'flush_all', delayMs: Number.POSITIVE_INFINITY }],
      ['too many keys', { kind: 'get', keys: Array.from({ length: 1025 }, (_, n) => `k${n}`) }],
    ];
    for (const [what, op] of bad) expect(opProblem(op), what).not.toBeNull();
  });
});
