/**
 * State transfers that arrive late must not undo what the start-over path relies on (found by
 * review, driven here by hand through one machine):
 * - a follower that told its leader it has no replica, after seeing the leader's replica epoch
 *   grow, refuses a chunk read before that, even after a restart in the same term;
 * - a leader that started over refuses a peer's chunk read before that peer lost its replica.
 */

import { describe, expect, it } from 'vitest';
import { createReplicatedLog, type ReplicatedLog } from '../src/consistency/replicated-log.ts';
import type { LogMessage } from '../src/consistency/log/types.ts';
import { asPeerId, type Effect, type Event, type KeyedEntry } from '../src/consistency/types.ts';

const N1 = asPeerId('n1');
const N2 = asPeerId('n2');
const N3 = asPeerId('n3');
const FAILURE_TIMEOUT_MS = 300;

/** An event without its time (the node adds it). */
type Untimed<T> = T extends unknown ? Omit<T, 'nowMs'> : never;

/** One machine and the records it wrote, so it can be restarted from them. */
class Node {
  machine: ReplicatedLog;
  readonly records: unknown[];
  nowMs = 1_000_000;

  constructor(readonly self: typeof N1, records: unknown[]) {
    this.records = [...records];
    this.machine = this.boot();
  }

  boot(): ReplicatedLog {
    return createReplicatedLog({
      self: this.self, peers: [N1, N2, N3], random: () => 0.5, heartbeatIntervalMs: 50, failureTimeoutMs: FAILURE_TIMEOUT_MS,
      persisted: [...this.records], nowMs: this.nowMs, mode: 'sequential', replicaSkipsApplied: true,
    });
  }

  restart(): void {
    this.machine = this.boot();
  }

  step(afterMs: number, event: Untimed<Event<LogMessage>>): Effect<LogMessage>[] {
    this.nowMs += afterMs;
    const effects = this.machine.step({ ...event, nowMs: this.nowMs } as Event<LogMessage>);
    for (const effect of effects) {
      if (effect.kind !== 'persist') continue;
      if (effect.compact) this.records.length = 0;
      this.records.push(effect.record);
    }
    return effects;
  }

  receive(afterMs: number, from: typeof N1, message: LogMessage): Effect<LogMessage>[] {
    return this.step(afterMs, { kind: 'message', from, message });
  }
}

const snapshot = (term: number, votedFor: typeof N1 | null, entries: unknown[] = []): unknown => ({
  kind: 'snapshot', term, votedFor, incarnation: 1, snapshotIndex: 10, snapshotTerm: 1, entries, replicaTrusted: false, replicaEmptied: true,
});

const heartbeat = (seq: number, replicaEpoch: number): LogMessage => ({
  kind: 'append', term: 2, prevIndex: 10, prevTerm: 1, entries: [], commitIndex: 10, durableIndex: 10, round: seq, seq, quiet: false, replicaEpoch,
});

const value = (key: string, cas: bigint): KeyedEntry => [key, { value: Buffer.from(`real-${key}`), flags: 0, expiresAtMs: 0, cas }];

const chunk = (index: number, replicaEpoch: number): LogMessage => ({
  kind: 'transfer_chunk', term: 2, replicaEpoch, transferId: 7, index, indexTerm: 1, chunkNumber: 0, chunkCount: 1, entries: [value('k', 5n)],
});

const installed = (effects: Effect<LogMessage>[]): boolean => effects.some((effect) => effect.kind === 'put');

describe('late state transfers', () => {
  it('a follower refuses a chunk older than the leader epoch it reported, also after a restart in the same term', () => {
    for (const restart of [false, true]) {
      const follower = new Node(N2, [snapshot(2, N1)]);
      follower.receive(0, N1, heartbeat(1, 0));
      follower.step(10, { kind: 'tick', peersUp: [N1, N3] });
      // The leader lost its replica (epoch 1); the follower sees it and says so when it asks again.
      follower.receive(20, N1, heartbeat(2, 1));
      const asked = follower.step(FAILURE_TIMEOUT_MS, { kind: 'tick', peersUp: [N1, N3] });
      expect(asked).toContainEqual(expect.objectContaining({ kind: 'send', message: expect.objectContaining({ kind: 'transfer_request', replicaEpoch: 1 }) }));
      if (restart) follower.restart();
      else follower.step(2 * FAILURE_TIMEOUT_MS + 1, { kind: 'tick', peersUp: [] }); // loses the leader: pre-candidate
      follower.receive(5, N1, heartbeat(1, 0)); // a late copy of the first heartbeat
      expect(installed(follower.receive(5, N1, chunk(10, 0)))).toBe(false);
      expect(follower.machine.inspect().replicaValid).toBe(false);
      // A chunk of the current epoch is installed.
      expect(installed(follower.receive(5, N1, chunk(10, 1)))).toBe(true);
    }
  });

  it('a leader that started over refuses a chunk a peer read before it lost its replica', () => {
    const entries = Array.from({ length: 10 }, (_, i) => (
      { term: 1, index: 11 + i, nowMs: 0, op: null, origin: N1, incarnation: 1, requestId: null }
    ));
    const leader = new Node(N1, [snapshot(1, null, entries)]);
    leader.step(2 * FAILURE_TIMEOUT_MS + 1, { kind: 'tick', peersUp: [N2, N3] });
    leader.receive(0, N2, { kind: 'pre_vote_reply', term: 2, granted: true });
    leader.receive(0, N2, { kind: 'vote_reply', term: 2, granted: true });
    expect(leader.machine.inspect().role).toBe('leader');
    leader.step(5, { kind: 'tick', peersUp: [N2, N3] });
    const epoch = 1;
    leader.receive(20, N2, { kind: 'transfer_request', term: 2, minIndex: 10, emptied: true, replicaEpoch: epoch });
    const startedOver = leader.receive(5, N3, { kind: 'transfer_request', term: 2, minIndex: 15, emptied: true, replicaEpoch: epoch });
    expect(startedOver).toContainEqual(expect.objectContaining({ kind: 'note', message: expect.stringMatching(/starting over/) }));
    expect(installed(leader.receive(5, N3, chunk(20, 0)))).toBe(false);
    expect(leader.machine.inspect()).toMatchObject({ appliedIndex: 10, snapshotIndex: 10 });
  });
});
