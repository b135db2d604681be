/**
 * One replicated-log machine driven by hand, with the records it wrote so it can be restarted
 * from them, and the state-transfer messages the transfer tests exchange with it.
 */

import { createReplicatedLog, type ReplicatedLog } from '../../src/consistency/replicated-log.ts';
import type { LogMessage } from '../../src/consistency/log/types.ts';
import { asPeerId, type Effect, type Event, type KeyedEntry } from '../../src/consistency/types.ts';

export const N1 = asPeerId('n1');
export const N2 = asPeerId('n2');
export const N3 = asPeerId('n3');
export const FAILURE_TIMEOUT_MS = 300;

/** An event without its time (the node adds it). */
export type Untimed<T> = T extends unknown ? Omit<T, 'nowMs'> : never;

/** One machine and the records it wrote, so it can be restarted from them. */
export class Node {
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

export const snapshot = (term: number, votedFor: typeof N1 | null, entries: unknown[] = []): unknown => ({
  kind: 'snapshot', term, votedFor, incarnation: 1, snapshotIndex: 10, snapshotTerm: 1, entries, replicaTrusted: false, replicaEmptied: true,
});

export const heartbeat = (seq: number, replicaEpoch: number): LogMessage => ({
  kind: 'append', term: 2, prevIndex: 10, prevTerm: 1, entries: [], commitIndex: 10, durableIndex: 10, round: seq, seq, quiet: false, replicaEpoch,
});

export const value = (key: string, cas: bigint): KeyedEntry => [key, { value: Buffer.from(`real-${key}`), flags: 0, expiresAtMs: 0, cas }];

export const chunk = (index: number, replicaEpoch: number): LogMessage => ({
  kind: 'transfer_chunk', term: 2, replicaEpoch, transferId: 7, index, indexTerm: 1, chunkNumber: 0, chunkCount: 1, entries: [value('k', 5n)],
});

export const installed = (effects: Effect<LogMessage>[]): boolean => effects.some((effect) => effect.kind === 'put');

export const chunksSent = (effects: Effect<LogMessage>[]): Array<Extract<LogMessage, { kind: 'transfer_chunk' }>> =>
  effects.flatMap((effect) => (effect.kind === 'send' && effect.message.kind === 'transfer_chunk' ? [effect.message] : []));


/** N1 elected leader of term 2 at snapshot 10, with entries 11 to 20 of term 1 and its replica lost. */
export function electedLeader(): Node {
  const entries = Array.from({ length: 10 }, (_, i) => (
    { term: 1, index: 11 + i, nowMs: 0, op: null, origin: N1, incarnation: 1, requestId: null }
  ));
  const leader = new Node(N1, [snapshot(1, null, entries)]);
  leader.step(2 * FAILURE_TIMEOUT_MS + 1, { kind: 'tick', peersUp: [N2, N3] });
  leader.receive(0, N2, { kind: 'pre_vote_reply', term: 2, granted: true });
  leader.receive(0, N2, { kind: 'vote_reply', term: 2, granted: true });
  leader.step(5, { kind: 'tick', peersUp: [N2, N3] });
  return leader;
}

/** A leader of term 2 at snapshot 10 that started over there: both peers asked it for a transfer. */
export function startedOverLeader(): Node {
  const leader = electedLeader();
  leader.receive(20, N2, { kind: 'transfer_request', term: 2, minIndex: 10, emptied: true, replicaEpoch: 1 });
  leader.receive(5, N3, { kind: 'transfer_request', term: 2, minIndex: 10, emptied: true, replicaEpoch: 1 });
  return leader;
}

/** The ask of a peer whose replica was lost, of startedOverLeader's term and index. */
export const transferAsk: LogMessage = { kind: 'transfer_request', term: 2, minIndex: 10, emptied: true, replicaEpoch: 1 };

/** The token of the read of every key among `effects`, or null. */
export const fetchToken = (effects: Effect<LogMessage>[]): number | null => {
  const fetch = effects.find((effect) => effect.kind === 'fetch' && effect.keys === null);
  return fetch === undefined ? null : (fetch as { token: number }).token;
};

/** A started-over leader with its replica trusted, asked by `peer` for a transfer: the token of its read for it. */
export function askedLeader(peer: typeof N1): { leader: Node; token: number } {
  const leader = startedOverLeader();
  leader.step(0, { kind: 'applied', token: 1 });
  const token = fetchToken(leader.receive(5, peer, transferAsk));
  if (token === null) throw new Error('no fetch for the transfer');
  return { leader, token };
}
