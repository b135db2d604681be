/**
 * Peer input is never a programmer error, for the replicated log: a seeded fuzz feeds thousands of
 * random and mutated real messages (taken from a fault-free run) into machines in each role —
 * leader, follower, candidate — and checks that nothing throws, that the machine's own invariants
 * hold (it asserts them after every step) and that everything it sends in turn is well formed; a
 * cluster whose machines got nothing but junk still elects and replicates. And the byte budgets
 * that keep every batched message under the frame cap.
 */

import { describe, expect, it } from 'vitest';
import { asRequestId, type PeerId } from '../src/consistency/types.ts';
import type { LogMessage, LogMode } from '../src/consistency/replicated-log.ts';
import type { Op } from '../src/store/types.ts';
import { mulberry32 } from './support/log-sim.ts';
import { certainlyInvalid, mutate, randomJunk } from './support/junk.ts';
import { itemAt } from '../src/runtime/item-at.ts';
import { checkOwnEffects, FUZZ_BUDGET_MS, IDS, LOG_COUNT_FIELDS, LogCluster, machineInRole, set, T0, type LogClusterTuning } from './support/peer-fuzz-kit.ts';

const LOG_KINDS = ['pre_vote', 'pre_vote_reply', 'vote', 'vote_reply', 'append', 'append_reply', 'forward', 'forward_gap', 'forward_refused', 'read_index', 'read_index_reply', 'transfer_request', 'transfer_chunk', 'held'];
const LEASES = { readLeases: { leaseMs: 200, clockDriftPpmMax: 10_000, marginMs: 5 } };

/** A fault-free run with writes of every op kind: the corpus of real messages to mutate. */
function logCorpus(mode: LogMode, tuning: LogClusterTuning = {}): LogMessage[] {
  const cluster = new LogCluster(mode, { compactionThresholdEntries: 8, transferChunkEntriesMax: 2, ...tuning });
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

function fuzzLog(mode: LogMode, seed: number, count: number, tuning: LogClusterTuning = {}): { steps: number; dropped: number } {
  const corpus = logCorpus(mode, tuning);
  expect(corpus.length).toBeGreaterThan(50);
  const random = mulberry32(seed);
  const startedMs = Date.now();
  let steps = 0;
  let dropped = 0;
  for (const role of ['leader', 'follower', 'candidate'] as const) {
    for (let round = 0; round < 3; round += 1) {
      const { cluster, id } = machineInRole(mode, role, tuning);
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

  it('linearizability with read leases (lease fields, followers\' holds): the same', () => {
    const corpus = logCorpus('linearizability', LEASES);
    expect(corpus.some((message) => message.kind === 'held')).toBe(true);
    const { steps, dropped } = fuzzLog('linearizability', 303, 4_500, LEASES);
    expect(steps).toBeGreaterThan(1_000);
    expect(dropped).toBeGreaterThan(steps / 3);
  });

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
