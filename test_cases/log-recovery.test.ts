/**
 * A replicated-log node whose records may be incomplete (wal_sync = write, started in a boot other
 * than the one that last wrote its file), driven by hand: it neither votes, nor acknowledges, nor
 * serves reads (writes it holds for the leader) until a majority of its peers has told it the term
 * and the leader has given it its log as far as it stood; then it is an ordinary follower and
 * persists its boot. Records from this very
 * boot and fsynced records (no boot id) need no recovery; --rejoin does, and so does a node with no
 * records at all (new, or it lost its files), which goes on at once once its peers hold nothing either.
 * (The whole protocol under faults and power losses: the log simulator's `powerLoss` runs.)
 */

import { describe, expect, it } from 'vitest';
import { asPeerId, asRequestId, type Effect, type PeerId } from '../src/consistency/types.ts';
import { createReplicatedLog, type LogMessage, type ReplicatedLog, type ReplicatedLogOptions } from '../src/consistency/replicated-log.ts';
import type { LogRecord } from '../src/consistency/log/types.ts';
import type { Op } from '../src/store/types.ts';
import { incarnationFloorAt } from '../src/runtime/incarnation.ts';
import { electedCluster, followers, set } from './support/log-cluster.ts';
import { mulberry32 } from './support/log-sim.ts';

const [N1, N2, N3] = [asPeerId('n1'), asPeerId('n2'), asPeerId('n3')];
const HARD = { kind: 'hard', term: 2, votedFor: null, incarnation: 1, leaderReplicaEpoch: 0, bootId: 'boot-1' };

function node(options: Partial<ReplicatedLogOptions> = {}): { machine: ReplicatedLog; first: Effect<LogMessage>[] } {
  const machine = createReplicatedLog({
    self: N1, peers: [N1, N2, N3], random: mulberry32(7), heartbeatIntervalMs: 50, failureTimeoutMs: 300,
    persisted: [HARD], nowMs: 1_000, mode: 'linearizability', replicaSkipsApplied: true, bootId: 'boot-2', ...options,
  });
  return { machine, first: machine.step({ kind: 'tick', nowMs: 1_000, peersUp: [N2, N3] }) };
}

const sends = (effects: Effect<LogMessage>[]): Array<{ to: PeerId; message: LogMessage }> =>
  effects.flatMap((effect) => (effect.kind === 'send' ? [{ to: effect.to, message: effect.message }] : []));

/** The nonce of the recover message among `effects`. */
function recoverNonce(effects: Effect<LogMessage>[]): number {
  const ask = sends(effects).find((send) => send.message.kind === 'recover')?.message;
  if (ask?.kind !== 'recover') throw new Error('no recover sent');
  return ask.nonce;
}

/** A peer's answer that it holds nothing: no term, no entry. */
const holdsNothing = (nonce: number, recovering = true): LogMessage =>
  ({ kind: 'recover_reply', term: 0, nonce, recovering, leads: false, lastIndex: 0, lastTerm: 0 });

function deliver(machine: ReplicatedLog, from: PeerId, message: LogMessage, nowMs = 1_010): Effect<LogMessage>[] {
  return machine.step({ kind: 'message', nowMs, from, message });
}

describe('a node whose records may be incomplete', () => {
  it('asks its peers, refuses votes and clients, copies the leader\'s log, then takes part and persists its boot', () => {
    const { machine, first } = node();
    expect(machine.status().role).toBe('recovering');
    const asks = sends(first).filter((send) => send.message.kind === 'recover');
    expect(asks.map((send) => send.to).sort()).toEqual([N2, N3]);
    const nonce = asks[0]?.message.kind === 'recover' ? asks[0].message.nonce : -1;

    // A vote request of a later term is not even looked at: no reply, no term change.
    expect(sends(deliver(machine, N3, { kind: 'vote', term: 3, lastIndex: 9, lastTerm: 2 }))).toEqual([]);
    expect(machine.status().term).toBe(2);
    // An append before it knows the term is dropped too: no acknowledgement.
    const early: Extract<LogMessage, { kind: 'append' }> = {
      kind: 'append', term: 3, prevIndex: 0, prevTerm: 0, entries: [], commitIndex: 0, durableIndex: 0, round: 1, seq: 1, quiet: false,
    };
    expect(sends(deliver(machine, N2, early))).toEqual([]);
    const refused = machine.step({ kind: 'request', nowMs: 1_010, requestId: asRequestId(1), session: 1, op: { kind: 'get', keys: ['k'] } });
    expect(JSON.stringify(refused)).toContain('recovering its log from the peers');
    // A write is only a client's request: it is held (not refused, not sent) until a leader is known.
    const write: Op = { kind: 'store', verb: 'set', key: 'w', flags: 0, expiresAtMs: 0, value: Buffer.from('v'), casUnique: 0n };
    const held = [
      ...machine.step({ kind: 'request', nowMs: 1_010, requestId: asRequestId(2), session: 2, op: write }),
      ...machine.step({ kind: 'flush', nowMs: 1_010 }),
    ];
    expect(held.filter((effect) => effect.kind === 'reply' || effect.kind === 'send')).toEqual([]);

    // One sound peer is not a majority of the peers of three nodes; the leader's reply completes it.
    deliver(machine, N3, { kind: 'recover_reply', term: 3, nonce, recovering: false, leads: false, lastIndex: 0, lastTerm: 0 });
    expect(machine.inspect().term).toBe(3);
    expect(machine.status().role).toBe('recovering');
    deliver(machine, N2, { kind: 'recover_reply', term: 3, nonce, recovering: false, leads: true, lastIndex: 1, lastTerm: 3 });
    expect(machine.inspect().leader).toBe(N2);
    expect(machine.status().role).toBe('recovering');

    const entry = { term: 3, index: 1, nowMs: 1_000, op: null, origin: N2, incarnation: 1, requestId: null };
    const effects = deliver(machine, N2, { ...early, entries: [entry], commitIndex: 1, durableIndex: 1 });
    expect(sends(effects).some((send) => send.message.kind === 'append_reply' && send.message.success)).toBe(true);
    expect(machine.status().role).toBe('follower');
    const forwarded = sends(machine.step({ kind: 'flush', nowMs: 1_020 })).filter((send) => send.message.kind === 'forward');
    expect(forwarded).toEqual([{ to: N2, message: expect.objectContaining({ term: 3, requests: [{ requestId: 2, op: write }] }) }]);
    const hard = effects.flatMap((effect) => (effect.kind === 'persist' ? [effect.record as LogRecord] : [])).filter((record) => record.kind === 'hard');
    expect(hard.at(-1)).toMatchObject({ term: 3, votedFor: N2, bootId: 'boot-2' });
  });

  it('a stale nonce counts for nothing, and every peer recovering lets it continue with what it holds', () => {
    const { machine, first } = node();
    const ask = sends(first).find((send) => send.message.kind === 'recover');
    const nonce = ask?.message.kind === 'recover' ? ask.message.nonce : -1;
    deliver(machine, N2, { kind: 'recover_reply', term: 2, nonce: nonce + 7, recovering: true, leads: false, lastIndex: 0, lastTerm: 0 });
    deliver(machine, N3, { kind: 'recover_reply', term: 2, nonce, recovering: true, leads: false, lastIndex: 0, lastTerm: 0 });
    expect(machine.status().role).toBe('recovering');
    const effects = deliver(machine, N2, { kind: 'recover_reply', term: 2, nonce, recovering: true, leads: false, lastIndex: 0, lastTerm: 0 });
    expect(machine.status().role).toBe('follower');
    expect(JSON.stringify(effects)).toContain('every peer is recovering too');
  });

  it('two machines lost their records: the one sound peer, once every peer answered, is followed if it leads', () => {
    const { machine, first } = node();
    const ask = sends(first).find((send) => send.message.kind === 'recover');
    const nonce = ask?.message.kind === 'recover' ? ask.message.nonce : -1;
    deliver(machine, N2, { kind: 'recover_reply', term: 2, nonce, recovering: true, leads: false, lastIndex: 0, lastTerm: 0 });
    deliver(machine, N3, { kind: 'recover_reply', term: 3, nonce, recovering: false, leads: true, lastIndex: 4, lastTerm: 3 });
    expect(machine.inspect().leader).toBe(N3);
    expect(machine.inspect().term).toBe(3);
    expect(machine.status().role).toBe('recovering');
  });

  it('two machines lost their records and the sound peer does not lead: it continues with what it holds after two failure timeouts', () => {
    const { machine, first } = node();
    let nonce = -1;
    const answer = (effects: Effect<LogMessage>[], nowMs: number): Effect<LogMessage>[] => {
      const ask = sends(effects).find((send) => send.message.kind === 'recover');
      if (ask?.message.kind === 'recover') nonce = ask.message.nonce;
      deliver(machine, N2, { kind: 'recover_reply', term: 4, nonce, recovering: true, leads: false, lastIndex: 0, lastTerm: 0 }, nowMs);
      return deliver(machine, N3, { kind: 'recover_reply', term: 3, nonce, recovering: false, leads: false, lastIndex: 4, lastTerm: 3 }, nowMs);
    };
    let effects = answer(first, 1_010);
    // Within two failure timeouts (300 ms each) it asks again each round and waits.
    let nowMs = 1_010;
    let rounds = 0;
    while (machine.status().role === 'recovering' && nowMs < 3_000) {
      nowMs += 50;
      effects = answer(machine.step({ kind: 'tick', nowMs, peersUp: [N2, N3] }), nowMs);
      rounds += 1;
    }
    expect(machine.status().role).toBe('follower');
    expect(nowMs).toBeGreaterThanOrEqual(1_010 + 600);
    expect(nowMs).toBeLessThan(1_010 + 600 + 200);
    expect(rounds).toBeGreaterThan(3);
    expect(JSON.stringify(effects)).toContain('too few peers are sound to elect a leader');
    // Above every term any node recorded, and it answers as recovering until it knows a leader.
    expect(machine.inspect().term).toBe(4);
    const reply = sends(deliver(machine, N2, { kind: 'recover', term: 4, nonce: 9 }, nowMs + 1));
    expect(reply).toEqual([{ to: N2, message: expect.objectContaining({ recovering: true }) }]);
    // It votes only for a log that reaches the sound peer's (term 3, index 4): not for the other
    // node that lost its records (its log as empty as ours), though Raft's own rule would.
    const vote = (from: PeerId, term: number, lastIndex: number, lastTerm: number, at: number): boolean => {
      const effects = deliver(machine, from, { kind: 'vote', term, lastIndex, lastTerm }, at);
      const answer = sends(effects).find((send) => send.message.kind === 'vote_reply');
      return answer?.message.kind === 'vote_reply' && answer.message.granted;
    };
    expect(vote(N2, 5, 0, 0, nowMs + 2)).toBe(false);
    expect(vote(N3, 5, 4, 3, nowMs + 3)).toBe(true);
    // Should no leader show for twenty failure timeouts (the node with that log gone for good),
    // Raft's own rule is enough again.
    expect(vote(N2, 6, 0, 0, nowMs + 20 * 300 - 10)).toBe(false);
    expect(vote(N2, 7, 0, 0, nowMs + 20 * 300 + 10)).toBe(true);
  });

  it('needs no recovery with records of this boot or with fsync; --rejoin and no records at all always recover', () => {
    expect(node({ bootId: 'boot-1' }).machine.status().role).toBe('follower');
    expect(node({ persisted: [] }).machine.status().role).toBe('recovering');
    expect(node({ persisted: [], bootId: null }).machine.status().role).toBe('recovering');
    expect(node({ bootId: null }).machine.status().role).toBe('follower');
    expect(node({ persisted: [], rejoin: true }).machine.status().role).toBe('recovering');
    expect(node({ bootId: null, rejoin: true }).machine.status().role).toBe('recovering');
    // Records without a boot (written before they were known complete) are not trusted.
    expect(node({ persisted: [{ ...HARD, bootId: undefined }] }).machine.status().role).toBe('recovering');
  });

  it('a leader answers a recovering peer with its term, that it leads, and how far its log goes', () => {
    // n1, with fsynced records, is elected by a pre-vote and a vote from n2, then appends its no-op.
    const { machine } = node({ bootId: null, persisted: [{ ...HARD, term: 0 }] });
    machine.step({ kind: 'tick', nowMs: 5_000, peersUp: [N2, N3] });
    deliver(machine, N2, { kind: 'pre_vote_reply', term: 1, granted: true }, 5_001);
    deliver(machine, N2, { kind: 'vote_reply', term: 1, granted: true }, 5_002);
    expect(machine.status().role).toBe('leader');
    machine.step({ kind: 'flush', nowMs: 5_003 });
    const reply = sends(deliver(machine, N2, { kind: 'recover', term: 1, nonce: 4 }, 5_004));
    expect(reply).toEqual([{ to: N2, message: { kind: 'recover_reply', term: 1, nonce: 4, recovering: false, leads: true, lastIndex: 1, lastTerm: 1 } }]);
  });

  it('with no records, goes on at once when every peer holds nothing either (a new cluster)', () => {
    const { machine, first } = node({ persisted: [] });
    const empty = holdsNothing(recoverNonce(first));
    deliver(machine, N2, empty);
    expect(machine.status().role).toBe('recovering');
    deliver(machine, N3, empty);
    expect(machine.status().role).toBe('follower');
    expect(machine.inspect().term).toBe(0);
  });

  it('with no records and a peer down, goes on once a majority has held nothing for two failure timeouts', () => {
    const { machine, first } = node({ persisted: [], failureTimeoutMs: 300 });
    deliver(machine, N2, holdsNothing(recoverNonce(first)), 1_010);
    expect(machine.status().role).toBe('recovering');
    // It asks again at its ticks; N2 answers the same, N3 never does.
    let nowMs = 1_010;
    while (machine.status().role === 'recovering' && nowMs < 3_000) {
      nowMs += 50;
      for (const send of sends(machine.step({ kind: 'tick', nowMs, peersUp: [N2] }))) {
        if (send.message.kind === 'recover' && send.to === N2) {
          deliver(machine, N2, holdsNothing(send.message.nonce), nowMs);
        }
      }
    }
    expect(machine.status().role).toBe('follower');
    expect(nowMs - 1_010).toBeGreaterThanOrEqual(600);
  });

  it('a crash while recovering recovers again at the next start, fsynced records or not; once recovered, it does not', () => {
    const records = (effects: Effect<LogMessage>[]): unknown[] => effects.flatMap((effect) => (effect.kind === 'persist' ? [effect.record] : []));
    for (const bootId of [null, 'boot-2']) {
      const first = node({ persisted: [], bootId });
      const kept = records(first.first);
      expect(kept.some((record) => (record as { recovering?: boolean }).recovering === true)).toBe(true);
      // It crashes here, before any peer answered: with what it wrote, it asks again.
      expect(node({ persisted: kept, bootId }).machine.status().role).toBe('recovering');
      // Recovered (a new cluster), what it writes from then on is complete.
      const empty = holdsNothing(recoverNonce(first.first));
      const done = [...deliver(first.machine, N2, empty), ...deliver(first.machine, N3, empty)];
      expect(first.machine.status().role).toBe('follower');
      expect(node({ persisted: [...kept, ...records(done)], bootId }).machine.status().role).toBe('follower');
    }
  });

  it('with no records in a cluster that ran (it lost its files), copies the leader\'s log before it votes', () => {
    const { machine, first } = node({ persisted: [] });
    const nonce = recoverNonce(first);
    // An empty peer answers first: not enough, the other ran in term 4.
    deliver(machine, N3, holdsNothing(nonce, false));
    expect(machine.status().role).toBe('recovering');
    deliver(machine, N2, { kind: 'recover_reply', term: 4, nonce, recovering: false, leads: true, lastIndex: 7, lastTerm: 4 });
    expect(machine.inspect()).toMatchObject({ term: 4, leader: N2 });
    expect(machine.status().role).toBe('recovering');
    expect(sends(deliver(machine, N3, { kind: 'vote', term: 5, lastIndex: 9, lastTerm: 4 }))).toEqual([]);
  });

  it('puts each incarnation in an fsynced record before anything of it leaves, so a power loss cannot hand its number out twice', () => {
    // A record that is not a compaction may be lost with the power (wal_sync = write); a
    // compaction (a snapshot record) is always fsynced. Each start must leave its number in one.
    const restart = (persisted: readonly unknown[]): { incarnation: number; records: LogRecord[] } => {
      const { first } = node({ persisted: [...persisted], bootId: null });
      const firstSend = first.findIndex((effect) => effect.kind === 'send' || effect.kind === 'reply');
      const synced = first.findIndex((effect) => effect.kind === 'persist' && effect.compact);
      expect(synced).toBeGreaterThanOrEqual(0);
      if (firstSend >= 0) expect(synced).toBeLessThan(firstSend);
      const records = first.flatMap((effect) => (effect.kind === 'persist' ? [effect.record as LogRecord] : []));
      const snapshot = records.find((record) => record.kind === 'snapshot');
      return { incarnation: snapshot?.kind === 'snapshot' ? snapshot.incarnation : -1, records };
    };
    const one = restart([HARD]);
    expect(one.incarnation).toBe(2);
    // The power goes: what was written after the last compaction is lost.
    const durable = (records: LogRecord[]): LogRecord[] => records.slice(records.map((record) => record.kind).lastIndexOf('snapshot'));
    const two = restart(durable(one.records));
    expect(two.incarnation).toBe(3);
    expect(restart(durable(two.records)).incarnation).toBe(4);
  });

  it('a node that lost its files and started again within the same second: its new writes are not taken for its last run\'s', () => {
    const cluster = electedCluster('linearizability');
    const leader = cluster.leader();
    const [origin] = followers(cluster);
    const { term } = cluster.node(leader).machine.inspect();
    // Each run numbers its forwards from 1; its number is the floor of its start (no records: none higher).
    const forward = (incarnation: number, requestId: number, key: string): LogMessage =>
      ({ kind: 'forward', term, incarnation, stream: 0, seq: requestId, requests: [{ requestId: asRequestId(requestId), op: set(key, 'v') }] });
    const startMs = Date.UTC(2026, 10, 29, 2, 1, 5, 50);
    const lost = incarnationFloorAt(startMs);
    const again = incarnationFloorAt(startMs + 900);
    const take = (message: LogMessage): void => {
      cluster.step(leader, { kind: 'message', nowMs: cluster.nowMs, from: origin, message });
      cluster.step(leader, { kind: 'flush', nowMs: cluster.nowMs });
    };
    const logged = (): number => cluster.node(leader).machine.inspect().lastIndex;
    const before = logged();
    for (const requestId of [1, 2, 3]) take(forward(lost, requestId, `old-${requestId}`));
    expect(logged()).toBe(before + 3);
    // Its data_dir lost, the node starts again 900 ms later and forwards its first write.
    take(forward(again, 1, 'new'));
    expect(logged()).toBe(before + 4);
    const entry = cluster.node(leader).machine.inspect().entryAt(before + 4);
    expect(entry).toMatchObject({ origin, incarnation: again, requestId: 1, op: { key: 'new' } });
  });
});
