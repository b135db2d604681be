/**
 * Scenario tests of the replicated log on a tiny, fault-free, FIFO network: election, replication
 * and commit, read index, sequential reads, refusals, persistence round trip, compaction and state
 * transfer, restart. One scenario's message trace is kept as a file (test_cases/traces/).
 */

import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Op } from '../src/store/types.ts';
import { asPeerId, asRequestId, type Effect, type PeerId } from '../src/consistency/types.ts';
import type { LogMessage, LogMode } from '../src/consistency/replicated-log.ts';
import { MemoryBackend } from '../src/store/memory.ts';
import { Replica } from '../src/store/replica.ts';
import { refused } from '../src/protocol/refusals.ts';
import { itemAt } from '../src/runtime/item-at.ts';
import { exactly } from './support/must.ts';
import { MemoryGuard, type BackendMemory } from '../src/store/memory-guard.ts';
import { Cluster, electedCluster, FAILURE_TIMEOUT_MS, followers, get, HEARTBEAT_MS, IDS, incr, set } from './support/log-cluster.ts';

type WriteAtLeader = { requestId: number; atLeader: Effect<LogMessage>[] };

/** A write at `origin`, forwarded to `leader` and flushed there: its request id and the leader's effects. */
function writeThroughLeader(cluster: Cluster, origin: PeerId, leader: PeerId, op: Op): WriteAtLeader {
  const { requestId, effects } = cluster.request(origin, op);
  const forward = itemAt(effects as Array<Extract<Effect<LogMessage>, { kind: 'send' }>>, 0);
  const atLeader = [
    ...cluster.step(leader, { kind: 'message', nowMs: cluster.nowMs, from: origin, message: forward.message }),
    ...cluster.step(leader, { kind: 'flush', nowMs: cluster.nowMs }),
  ];
  return { requestId, atLeader };
}

/** Where, among `effects`, the record of new entries is persisted (-1: nowhere). */
function entriesRecordAt(effects: readonly Effect<LogMessage>[]): number {
  return effects.findIndex((effect) => effect.kind === 'persist' && (effect.record as { kind: string }).kind === 'entries');
}

/** Compaction threshold 6, a follower down while 20 writes commit: the leader compacted past it. */
function compactedPastLaggingFollower(): { cluster: Cluster; leader: PeerId; lagging: PeerId } {
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

describe('a leader whose disk stalls', () => {
  /** Everything the leader sends but its pings waits for its disk: here, lost until `heal`. */
  function stallLeaderDisk(cluster: Cluster, leader: PeerId, pings: boolean): () => void {
    const fromLeader = new Set(['append', 'ping', 'read_index_reply', 'forward_refused', 'transfer_chunk']);
    cluster.lose = (message, to) => to !== leader && fromLeader.has(message.kind) && !(pings && message.kind === 'ping');
    return () => {
      cluster.lose = () => false;
    };
  }

  it('keeps its followers with pings, which leave without waiting for its disk: no election, and its check-quorum holds on their pongs', () => {
    const cluster = electedCluster();
    const leader = cluster.leader();
    const { term } = cluster.node(leader).machine.status();
    const heal = stallLeaderDisk(cluster, leader, true);
    const write = cluster.request(leader, set('d', 'v'));
    // Three failure timeouts: past any election timeout, within the write's request timeout.
    cluster.run(3 * FAILURE_TIMEOUT_MS);
    for (const id of IDS) expect(cluster.node(id).machine.status(), id).toMatchObject({ term, leader, role: id === leader ? 'leader' : 'follower' });
    const sends = IDS.flatMap((id) => cluster.node(id).effects).filter((effect) => effect.kind === 'send');
    const early = sends.filter((effect) => effect.beforeDurable === true).map((effect) => effect.message.kind);
    expect(new Set(early)).toEqual(new Set(['ping', 'pong']));
    expect(sends.filter((effect) => effect.message.kind === 'ping' || effect.message.kind === 'pong').every((effect) => effect.beforeDurable === true)).toBe(true);
    heal();
    cluster.run(1_000);
    expect(cluster.outcome(leader, write.requestId)).toMatchObject({ kind: 'apply', cas: 2n });
    expect(cluster.node(leader).machine.status().term).toBe(term);
  });

  it('without pings, the same stall makes the followers elect another leader', () => {
    const cluster = electedCluster();
    const leader = cluster.leader();
    const { term } = cluster.node(leader).machine.status();
    const others = followers(cluster);
    stallLeaderDisk(cluster, leader, false);
    cluster.run(3 * FAILURE_TIMEOUT_MS);
    expect(others.some((id) => cluster.node(id).machine.status().term > term)).toBe(true);
  });

  it('a ping names no log position: it moves no commit and confirms no read', () => {
    const cluster = electedCluster();
    const leader = cluster.leader();
    const [follower] = followers(cluster);
    const { committed } = cluster.node(follower).machine.status();
    const { term } = cluster.node(leader).machine.status();
    const effects = cluster.step(follower, { kind: 'message', nowMs: cluster.nowMs, from: leader, message: { kind: 'ping', term } });
    expect(effects).toEqual([{ kind: 'send', to: leader, message: { kind: 'pong', term }, beforeDurable: true }]);
    expect(cluster.node(follower).machine.status().committed).toBe(committed);
    // A ping from a node that is not this term's leader is dropped, not answered.
    const other = itemAt(followers(cluster).filter((id) => id !== follower), 0);
    const dropped = cluster.step(follower, { kind: 'message', nowMs: cluster.nowMs, from: other, message: { kind: 'ping', term } });
    expect(dropped.filter((effect) => effect.kind === 'send')).toEqual([]);
  });
});

describe('election', () => {
  it('elects exactly one leader, by pre-vote then vote, which appends and commits a no-op', () => {
    const cluster = new Cluster();
    cluster.run(1_000);
    const leader = cluster.leader();
    const status = cluster.node(leader).machine.status();
    expect(status.term).toBe(1);
    expect(status.committed).toBe('1');
    const preVote = cluster.trace.findIndex((line) => line.startsWith(`${leader}->`) && line.includes(' pre_vote '));
    const vote = cluster.trace.findIndex((line) => line.startsWith(`${leader}->`) && line.includes(' vote '));
    expect(preVote).toBeGreaterThanOrEqual(0);
    expect(preVote).toBeLessThan(vote);
    for (const id of IDS) expect(cluster.node(id).machine.status()).toMatchObject({ leader, term: 1, committed: '1', applied: '1' });
  });

  it('persists the vote before replying to it', () => {
    const cluster = new Cluster();
    cluster.run(1_000);
    for (const id of followers(cluster)) {
      const effects = cluster.node(id).effects;
      const reply = effects.findIndex((effect) => effect.kind === 'send' && effect.message.kind === 'vote_reply' && effect.message.granted);
      const persisted = effects.slice(0, reply).some((effect) => effect.kind === 'persist' && (effect.record as { votedFor?: string }).votedFor !== null);
      expect(persisted).toBe(true);
    }
  });

  it('keeps the message trace of an election and a write', async () => {
    const cluster = new Cluster();
    cluster.run(1_000);
    const election = cluster.trace.slice(0, 12);
    cluster.trace.length = 0;
    cluster.request(followers(cluster)[0], set('a', '1'));
    cluster.deliver();
    const trace = ['# election', ...election, '# a write at a follower', ...cluster.trace].join('\n') + '\n';
    await expect(trace).toMatchFileSnapshot('./traces/replicated-log-election-and-write.txt');
  });

  it('a leader cut off from the majority steps down; the rest elect a new one; it does not disrupt them on return', () => {
    const cluster = electedCluster();
    const old = cluster.leader();
    cluster.down.add(old);
    cluster.run(1_500);
    const fresh = cluster.leader();
    expect(fresh).not.toBe(old);
    const term = cluster.node(fresh).machine.status().term;
    // The old leader, on its own, gave up leadership (check-quorum).
    for (let ms = 0; ms < 1_000; ms += 10) cluster.step(old, { kind: 'tick', nowMs: cluster.nowMs + ms, peersUp: [] });
    expect(cluster.node(old).machine.status().role).not.toBe('leader');
    cluster.down.delete(old);
    cluster.run(1_000);
    expect(cluster.leader()).toBe(fresh);
    expect(cluster.node(fresh).machine.status().term).toBe(term);
    expect(cluster.node(old).machine.status()).toMatchObject({ role: 'follower', leader: fresh, term });
  });
});

describe('replication and commit', () => {
  it('a write at a follower is forwarded, committed, applied everywhere with cas = index, answered at its origin', () => {
    const cluster = electedCluster();
    const origin = followers(cluster)[0];
    const { requestId, effects } = cluster.request(origin, set('a', 'x'));
    expect(effects).toEqual([expect.objectContaining({ kind: 'send', message: expect.objectContaining({ kind: 'forward' }) })]);
    cluster.run(50);
    const applied = cluster.outcome(origin, requestId);
    expect(applied).toMatchObject({ kind: 'apply', cas: 2n, requestId });
    for (const id of IDS) {
      expect(cluster.node(id).replica.get('a')?.value.toString()).toBe('x');
      const apply = cluster.node(id).effects.find((effect) => effect.kind === 'apply');
      expect(apply).toMatchObject({ cas: 2n, requestId: id === origin ? requestId : null });
    }
  });

  it('sequential, three nodes: a follower commits an entry of the leader\'s term once an append says the leader\'s copy is durable', () => {
    const cluster = electedCluster('sequential');
    const leader = cluster.leader();
    const [origin] = followers(cluster);
    const proposeAtLeader = (op: Op): WriteAtLeader => writeThroughLeader(cluster, origin, leader, op);
    const appendTo = (effects: Effect<LogMessage>[]): Extract<Effect<LogMessage>, { kind: 'send' }> =>
      effects.find((effect) => effect.kind === 'send' && effect.to === origin && effect.message.kind === 'append') as Extract<Effect<LogMessage>, { kind: 'send' }>;
    const first = proposeAtLeader(set('a', 'x'));
    const firstAppend = appendTo(first.atLeader);
    // Sent while the leader's copy is being written (Raft §10.2.1): it says so.
    const persisted = entriesRecordAt(first.atLeader);
    expect(first.atLeader.indexOf(firstAppend)).toBeLessThan(persisted);
    expect(firstAppend.message).toMatchObject({ entries: [expect.objectContaining({ index: 2 })], durableIndex: 1, commitIndex: 1 });
    cluster.step(origin, { kind: 'message', nowMs: cluster.nowMs, from: leader, message: firstAppend.message });
    expect(cluster.outcome(origin, first.requestId)).toBeUndefined();
    // The next append (no ack has reached the leader, which still has commit index 1) says index 2
    // is durable there: the leader and the origin hold it, a majority, so the origin applies it.
    const second = proposeAtLeader(set('b', 'y'));
    const secondAppend = appendTo(second.atLeader);
    expect(secondAppend.message).toMatchObject({ entries: [expect.objectContaining({ index: 3 })], durableIndex: 2, commitIndex: 1 });
    const accepted = cluster.step(origin, { kind: 'message', nowMs: cluster.nowMs, from: leader, message: secondAppend.message });
    const ownCopy = accepted.findIndex((effect) => effect.kind === 'persist');
    const apply = accepted.findIndex((effect) => effect.kind === 'apply');
    expect(apply).toBeGreaterThan(ownCopy); // behind its own copy of what it just accepted
    expect(accepted.filter((effect) => effect.kind === 'apply')).toEqual([expect.objectContaining({ cas: 2n, requestId: first.requestId })]);
    expect(accepted).toContainEqual(expect.objectContaining({ kind: 'send', message: expect.objectContaining({ kind: 'append_reply', commitIndex: 2 }) }));
    cluster.deliver();
    expect(cluster.outcome(origin, second.requestId)).toMatchObject({ kind: 'apply', cas: 3n });
  });

  it('sequential, wal_sync = write: the leader writes its copy before the appends leave, so each follower commits on receipt, with no commit notice', () => {
    const cluster = electedCluster('sequential', 10_000, false, 'boot-a');
    const leader = cluster.leader();
    const [origin, other] = followers(cluster);
    const { requestId, atLeader } = writeThroughLeader(cluster, origin, leader, set('a', 'x'));
    const persisted = entriesRecordAt(atLeader);
    const appends = atLeader.filter((effect) => effect.kind === 'send' && effect.message.kind === 'append') as Array<Extract<Effect<LogMessage>, { kind: 'send' }>>;
    expect(appends.map((append) => append.to).sort()).toEqual([origin, other].sort());
    for (const append of appends) {
      expect(atLeader.indexOf(append)).toBeGreaterThan(persisted);
      expect(append.message).toMatchObject({ entries: [expect.objectContaining({ index: 2 })], durableIndex: 2, commitIndex: 1 });
      // Each follower applies on receipt: the leader and it hold the entry, a majority of three.
      const accepted = cluster.step(append.to, { kind: 'message', nowMs: cluster.nowMs, from: leader, message: append.message });
      expect(accepted.filter((effect) => effect.kind === 'apply')).toEqual([expect.objectContaining({ cas: 2n, requestId: append.to === origin ? requestId : null })]);
    }
    expect(cluster.outcome(origin, requestId)).toMatchObject({ kind: 'apply', cas: 2n, requestId });
    // Their acks say so, and the leader sends no commit notice.
    cluster.deliver();
    const notices = cluster.node(leader).effects.filter((effect) => effect.kind === 'send' && effect.message.kind === 'append' && effect.message.quiet);
    expect(notices).toEqual([]);
  });

  it('sequential, wal_sync = write: an ack nobody waits for rides with the follower\'s next forward or leaves at its tick; one of the leader\'s own writes is acked at once', () => {
    const cluster = electedCluster('sequential', 10_000, false, 'boot-a');
    const leader = cluster.leader();
    const [origin, other] = followers(cluster);
    const acks = (effects: Effect<LogMessage>[]): Effect<LogMessage>[] =>
      effects.filter((effect) => effect.kind === 'send' && effect.to === leader && effect.message.kind === 'append_reply');
    const appendTo = (effects: Effect<LogMessage>[], to: PeerId): LogMessage =>
      (effects.find((effect) => effect.kind === 'send' && effect.to === to && effect.message.kind === 'append') as Extract<Effect<LogMessage>, { kind: 'send' }>).message;
    // A follower's write: both followers commit it on receipt, and neither acks at once.
    const { atLeader } = writeThroughLeader(cluster, origin, leader, set('a', 'x'));
    for (const to of [origin, other]) {
      const accepted = [...cluster.step(to, { kind: 'message', nowMs: cluster.nowMs, from: leader, message: appendTo(atLeader, to) }), ...cluster.step(to, { kind: 'flush', nowMs: cluster.nowMs })];
      expect(accepted).toContainEqual(expect.objectContaining({ kind: 'apply', cas: 2n }));
      expect(acks(accepted)).toEqual([]);
    }
    // `other` forwards a write: the ack leaves with it. `origin` acks at its next tick.
    const forwarded = cluster.request(other, set('b', 'y')).effects;
    expect(forwarded.flatMap((effect) => (effect.kind === 'send' ? [effect.message.kind] : []))).toEqual(['forward', 'append_reply']);
    expect(acks(forwarded)).toEqual([expect.objectContaining({ message: expect.objectContaining({ success: true, matchIndex: 2 }) })]);
    const ticked = cluster.step(origin, { kind: 'tick', nowMs: cluster.nowMs + 1, peersUp: IDS });
    expect(acks(ticked)).toEqual([expect.objectContaining({ message: expect.objectContaining({ success: true, matchIndex: 2 }) })]);
    cluster.deliver();
    // The leader's own client's write waits for an ack: it is sent at once.
    const own = cluster.request(leader, set('c', 'z'));
    const accepted = cluster.step(origin, { kind: 'message', nowMs: cluster.nowMs, from: leader, message: appendTo(own.effects, origin) });
    expect(acks(accepted)).toEqual([expect.objectContaining({ message: expect.objectContaining({ success: true }) })]);
    cluster.deliver();
    expect(cluster.outcome(leader, own.requestId)).toMatchObject({ kind: 'apply' });
  });

  it('linearizability, wal_sync = write: the appends still leave before the leader\'s copy is written', () => {
    const cluster = electedCluster('linearizability', 10_000, false, 'boot-a');
    const leader = cluster.leader();
    const { effects: atLeader } = cluster.request(leader, set('a', 'x'));
    const persisted = entriesRecordAt(atLeader);
    const append = atLeader.findIndex((effect) => effect.kind === 'send' && effect.message.kind === 'append');
    expect(append).toBeGreaterThanOrEqual(0);
    expect(append).toBeLessThan(persisted);
  });

  it('a write with nothing after it is committed at the followers by the leader\'s commit notice', () => {
    const cluster = electedCluster();
    const leader = cluster.leader();
    const [origin] = followers(cluster);
    const { requestId, atLeader } = writeThroughLeader(cluster, origin, leader, set('a', 'x'));
    const persisted = entriesRecordAt(atLeader);
    const append = atLeader.find((effect) => effect.kind === 'send' && effect.to === origin) as Extract<Effect<LogMessage>, { kind: 'send' }>;
    expect(atLeader.indexOf(append)).toBeLessThan(persisted);
    expect(append.message).toMatchObject({ entries: [expect.objectContaining({ index: 2 })], durableIndex: 1 });
    cluster.step(origin, { kind: 'message', nowMs: cluster.nowMs, from: leader, message: append.message });
    expect(cluster.outcome(origin, requestId)).toBeUndefined();
    cluster.deliver();
    expect(cluster.outcome(origin, requestId)).toMatchObject({ kind: 'apply', cas: 2n, requestId });
  });

  it('linearizability: a follower commits only on the leader\'s word, so the leader\'s commit index covers every answered write', () => {
    const cluster = electedCluster();
    const leader = cluster.leader();
    const [origin, other] = followers(cluster);
    // The other follower never gets the entry, and no ack of it reaches the leader.
    cluster.lose = (message, to) =>
      (message.kind === 'append' && to === other && message.entries.length > 0) ||
      (message.kind === 'append_reply' && message.success && message.matchIndex >= 2);
    const write = cluster.request(origin, set('r', 'v1'));
    // Heartbeats tell the origin that the leader's copy of index 2 is durable; it still waits.
    cluster.run(HEARTBEAT_MS * 3);
    const toOrigin = cluster.node(leader).effects.filter((effect) => effect.kind === 'send' && effect.to === origin && effect.message.kind === 'append');
    expect(toOrigin.at(-1)).toMatchObject({ message: { durableIndex: 2, commitIndex: 1 } });
    expect(cluster.outcome(origin, write.requestId)).toBeUndefined();
    // A read at the leader is served at the leader's commit index, without the unanswered write.
    const read = cluster.request(leader, get('r'));
    cluster.run(HEARTBEAT_MS * 3);
    expect(cluster.outcome(leader, read.requestId)).toMatchObject({ kind: 'read' });
    expect(cluster.node(leader).replica.get('r')).toBeUndefined();
    cluster.lose = () => false;
    cluster.run(HEARTBEAT_MS * 3);
    expect(cluster.outcome(origin, write.requestId)).toMatchObject({ kind: 'apply', cas: 2n });
  });

  it('pipelines: appends go out without waiting for acks, several entries per message when queued', () => {
    const cluster = electedCluster();
    const leader = cluster.leader();
    const sends = (): number => cluster.node(leader).effects.filter((effect) => effect.kind === 'send' && effect.message.kind === 'append').length;
    const before = sends();
    for (let n = 0; n < 5; n += 1) cluster.request(leader, incr('c'));
    expect(sends() - before).toBe(10);
    // A follower that missed appends gets everything missing in one message.
    const follower = followers(cluster)[0];
    cluster.down.add(follower);
    cluster.deliver();
    for (let n = 0; n < 5; n += 1) cluster.request(leader, set(`k${n}`, 'v'));
    cluster.deliver();
    cluster.down.delete(follower);
    cluster.run(60);
    const catchUp = cluster.node(leader).effects.find(
      (effect) => effect.kind === 'send' && effect.to === follower && effect.message.kind === 'append' && effect.message.entries.length >= 5,
    );
    expect(catchUp).toBeDefined();
    expect(cluster.node(follower).machine.status().applied).toBe(cluster.node(leader).machine.status().applied);
  });

  it('batches per turn: one forward, one append per follower and one read-index round for a whole turn', () => {
    const cluster = electedCluster();
    const leader = cluster.leader();
    const follower = followers(cluster)[0];
    const writes = Array.from({ length: 16 }, (_, n) => set(`b${n}`, String(n)));
    const { requestIds, effects } = cluster.requests(follower, writes);
    expect(effects.filter((effect) => effect.kind === 'send')).toEqual([
      expect.objectContaining({ to: leader, message: expect.objectContaining({ kind: 'forward', requests: expect.any(Array) }) }),
    ]);
    const leaderSends = (kind: LogMessage['kind']): number =>
      cluster.node(leader).effects.filter((effect) => effect.kind === 'send' && effect.message.kind === kind).length;
    const appendsBefore = leaderSends('append');
    cluster.deliver();
    // One append per follower with all 16 entries, one more per follower carrying the commit
    // (also to the follower that did not originate them: its local reads stay fresh).
    expect(leaderSends('append') - appendsBefore).toBe(4);
    for (const requestId of requestIds) expect(cluster.outcome(follower, requestId)).toMatchObject({ kind: 'apply', requestId });
    const reads = cluster.requests(follower, writes.map((_, n) => get(`b${n}`)));
    expect(reads.effects.filter((effect) => effect.kind === 'send')).toHaveLength(1);
    const roundsBefore = leaderSends('append');
    const confirmsBefore = leaderSends('read_index_reply');
    cluster.deliver();
    // One reply for the whole batch, and no heartbeat round (see the "reads" tests).
    expect(leaderSends('append') - roundsBefore).toBe(0);
    expect(leaderSends('read_index_reply') - confirmsBefore).toBe(1);
    for (const requestId of reads.requestIds) expect(cluster.outcome(follower, requestId)).toMatchObject({ kind: 'read' });
  });

  it('a turn without a flush is sent by the next tick', () => {
    const cluster = electedCluster();
    const follower = followers(cluster)[0];
    const effects = cluster.step(follower, { kind: 'request', nowMs: cluster.nowMs, requestId: asRequestId(999), session: 1, op: set('t', '1') });
    expect(effects.filter((effect) => effect.kind === 'send')).toEqual([]);
    const ticked = cluster.step(follower, { kind: 'tick', nowMs: cluster.nowMs + 10, peersUp: IDS });
    expect(ticked).toContainEqual(expect.objectContaining({ kind: 'send', message: expect.objectContaining({ kind: 'forward' }) }));
  });

  it('a duplicated forward is appended once', () => {
    const cluster = electedCluster();
    const leader = cluster.leader();
    const follower = followers(cluster)[0];
    const { effects } = cluster.request(follower, incr('n'));
    const forward = effects[0] as Extract<Effect<LogMessage>, { kind: 'send' }>;
    cluster.step(leader, { kind: 'message', nowMs: cluster.nowMs, from: follower, message: forward.message });
    cluster.run(100);
    expect(cluster.node(leader).machine.status().committed).toBe('2');
  });

  it('a forward duplicated after its entry was compacted is not appended again', () => {
    const cluster = electedCluster('linearizability', 6);
    const leader = cluster.leader();
    const follower = followers(cluster)[0];
    cluster.request(leader, set('n', '0'));
    cluster.run(20);
    const { effects } = cluster.request(follower, incr('n'));
    const forward = effects[0] as Extract<Effect<LogMessage>, { kind: 'send' }>;
    cluster.run(20);
    for (let n = 0; n < 20; n += 1) {
      cluster.request(leader, set(`k${n % 5}`, String(n)));
      cluster.run(20);
    }
    expect(cluster.node(leader).machine.inspect().snapshotIndex).toBeGreaterThan(3);
    const committed = cluster.node(leader).machine.status().committed;
    cluster.step(leader, { kind: 'message', nowMs: cluster.nowMs, from: follower, message: forward.message });
    cluster.run(100);
    expect(cluster.node(leader).machine.status().committed).toBe(committed);
    for (const id of IDS) expect(cluster.node(id).replica.get('n')?.value.toString()).toBe('1');
  });
});

describe('room in the store', () => {
  const outOfMemory = { kind: 'reply', reply: { kind: 'refused', reason: 'out_of_memory' } };
  /** A memcached of 1000 bytes: a 1000-byte value finds no room, a 1-byte one does. */
  const memcached = (usedBytes: number): BackendMemory => ({ usedBytes, limitBytes: 1000 });
  const big = 'x'.repeat(1000);

  afterEach(() => {
    vi.restoreAllMocks();
  });

  /** Which node's memory guard was asked for which key, in order (each guard named by the poll that fed it). */
  function watchGuards(cluster: Cluster): { asked: () => Array<[PeerId, string]>; poll: (memory: BackendMemory) => void } {
    const polled = vi.spyOn(MemoryGuard.prototype, 'polled');
    const refusal = vi.spyOn(MemoryGuard.prototype, 'refusal');
    const guards = new Map<unknown, PeerId>();
    const poll = (memory: BackendMemory): void => {
      for (const id of IDS) {
        const before = polled.mock.contexts.length;
        cluster.step(id, { kind: 'memory_polled', nowMs: cluster.nowMs, memory, stored: new Map() });
        for (const guard of polled.mock.contexts.slice(before)) guards.set(guard, id);
      }
    };
    const asked = (): Array<[PeerId, string]> => refusal.mock.calls.map(([op], call) => [
      guards.get(refusal.mock.contexts[call]) ?? asPeerId('unpolled'),
      op.kind === 'store' ? op.key : op.kind,
    ]);
    return { asked, poll };
  }

  it('the leader asks for every write, its own clients\' and forwarded ones; a refused write is answered at its origin and logged nowhere', () => {
    const cluster = electedCluster('sequential');
    const leader = cluster.leader();
    const follower = followers(cluster)[0];
    const { asked, poll } = watchGuards(cluster);
    poll(memcached(0));
    const atFollower = cluster.request(follower, set('big1', big));
    const atLeader = cluster.request(leader, set('big2', big));
    const fits = cluster.request(follower, set('small', 'x'));
    cluster.run(100);
    expect(asked()).toEqual([[leader, 'big2'], [leader, 'big1'], [leader, 'small']]);
    expect(cluster.outcome(follower, atFollower.requestId)).toMatchObject(outOfMemory);
    expect(cluster.outcome(leader, atLeader.requestId)).toMatchObject(outOfMemory);
    expect(cluster.outcome(follower, fits.requestId)).toMatchObject({ kind: 'apply' });
    for (const id of IDS) {
      expect([...cluster.node(id).replica.keys()]).toEqual(['small']);
      expect(cluster.node(id).machine.status().committed).toBe('2'); // the leader's no-op and "small"
    }
  });

  it('a duplicate of a refused forward is refused too, even once there is room', () => {
    const cluster = electedCluster('sequential');
    const leader = cluster.leader();
    const follower = followers(cluster)[0];
    cluster.polled(memcached(1000));
    const { requestId, effects } = cluster.request(follower, set('k', 'v'));
    const forward = effects.find((effect) => effect.kind === 'send') as Extract<Effect<LogMessage>, { kind: 'send' }>;
    cluster.run(50);
    expect(cluster.outcome(follower, requestId)).toMatchObject(outOfMemory);
    cluster.polled(memcached(0));
    cluster.step(leader, { kind: 'message', nowMs: cluster.nowMs, from: follower, message: forward.message });
    cluster.run(100);
    expect(cluster.node(leader).machine.status().committed).toBe('1');
    expect(cluster.node(leader).replica.has('k')).toBe(false);
  });
});

describe('a pipelining connection (one session, requests in flight together)', () => {
  /** Where the apply or read of each request falls among a node's effects. */
  const positions = (cluster: Cluster, id: PeerId, requestIds: number[]): number[] =>
    requestIds.map((requestId) =>
      cluster.node(id).effects.findIndex((effect) => (effect.kind === 'apply' || effect.kind === 'read') && effect.requestId === requestId));

  it.each<LogMode>(['sequential', 'linearizability'])('%s: each read is carried out after the writes sent before it and before the ones sent after it', (mode) => {
    const cluster = electedCluster(mode);
    const follower = followers(cluster)[0];
    const pipelined = cluster.requests(follower, [get('p'), set('p', '1'), get('p'), get('q'), set('p', '2'), get('p')], 7);
    // A read behind a write of its own session waits for it; another session's read does not.
    const [firstRead, write1, read1, read2, write2, read3] = exactly(pipelined.requestIds, 6);
    if (mode === 'sequential') expect(cluster.outcome(follower, firstRead)).toMatchObject({ kind: 'read' });
    for (const held of [read1, read2, read3]) expect(cluster.outcome(follower, held)).toBeUndefined();
    const other = cluster.requests(follower, [get('p')], 8);
    if (mode === 'sequential') expect(cluster.outcome(follower, itemAt(other.requestIds, 0))).toMatchObject({ kind: 'read' });
    cluster.deliver();
    cluster.run(100);
    const at = positions(cluster, follower, pipelined.requestIds);
    for (const position of at) expect(position).toBeGreaterThanOrEqual(0);
    const [atFirstRead, atWrite1, atRead1, atRead2, atWrite2, atRead3] = exactly(at, 6);
    expect(atFirstRead).toBeLessThan(atWrite1);
    expect(atWrite1).toBeLessThan(atRead1);
    expect(atWrite1).toBeLessThan(atRead2);
    expect(Math.max(atRead1, atRead2)).toBeLessThan(atWrite2);
    expect(atWrite2).toBeLessThan(atRead3);
    expect(cluster.node(follower).machine.status().queueDepth).toBe(0);
    void write1;
    void write2;
  });

  it('linearizability: a read sent before a write is served before that write is applied, read index or not', () => {
    const cluster = electedCluster('linearizability');
    const follower = followers(cluster)[0];
    // The read's read-index request to the leader is lost; the write still commits.
    cluster.lose = (message) => message.kind === 'read_index' || message.kind === 'read_index_reply';
    const { requestIds } = cluster.requests(follower, [get('r'), set('r', 'after')], 9);
    cluster.deliver();
    cluster.run(50);
    const [atRead, atWrite] = exactly(positions(cluster, follower, requestIds), 2);
    expect(atRead).toBeGreaterThanOrEqual(0);
    expect(atRead).toBeLessThan(atWrite);
  });

  it('a read held behind a write that is refused goes on at once (here: refused too), not when its own time runs out', () => {
    const cluster = electedCluster('sequential');
    const [cutOff, other] = followers(cluster);
    cluster.down.add(cluster.leader());
    cluster.down.add(other);
    // The write goes to the leader, now gone (it may take effect: "timeout" at its deadline); the
    // read comes while the leader still counts as live, so it is taken and held behind the write.
    const write = cluster.requests(cutOff, [set('s', '1')], 10);
    cluster.run(200);
    const read = cluster.requests(cutOff, [get('s')], 10);
    const [writeId, readId] = [itemAt(write.requestIds, 0), itemAt(read.requestIds, 0)];
    let writeAtMs = -1;
    let readAtMs = -1;
    for (let ms = 10; ms <= 4 * FAILURE_TIMEOUT_MS && readAtMs < 0; ms += 10) {
      cluster.run(10);
      if (writeAtMs < 0 && cluster.outcome(cutOff, writeId) !== undefined) writeAtMs = ms;
      if (cluster.outcome(cutOff, readId) !== undefined) readAtMs = ms;
    }
    expect(cluster.outcome(cutOff, writeId)).toMatchObject({ kind: 'reply', reply: { kind: 'refused', reason: 'timeout' } });
    expect(cluster.outcome(cutOff, readId)).toMatchObject({ kind: 'reply', reply: refused('no_quorum', 'no leader reachable') });
    // Answered with the write, 200 ms before its own time ran out.
    expect(writeAtMs).toBeGreaterThan(0);
    expect(readAtMs).toBe(writeAtMs);
    expect(cluster.node(cutOff).machine.status().queueDepth).toBe(0);
  });
});

describe('reads', () => {
  it('linearizability: a follower read waits for a majority-confirmed read index', () => {
    const cluster = electedCluster();
    const leader = cluster.leader();
    const follower = followers(cluster)[0];
    for (const id of IDS) expect(cluster.node(id).machine.readsLocally?.(cluster.nowMs, 1)).toBe(false);
    const write = cluster.request(leader, set('r', 'v1'));
    cluster.deliver();
    expect(cluster.outcome(leader, write.requestId)).toMatchObject({ kind: 'apply', cas: 2n });
    const { requestId, effects } = cluster.request(follower, get('r'));
    expect(effects).toEqual([expect.objectContaining({ kind: 'send', to: leader, message: expect.objectContaining({ kind: 'read_index' }) })]);
    cluster.deliver();
    expect(cluster.outcome(follower, requestId)).toMatchObject({ kind: 'read', requestId });
    expect(cluster.node(follower).replica.get('r')?.value.toString()).toBe('v1');
    const confirm = cluster.node(leader).effects.filter((effect) => effect.kind === 'send' && effect.message.kind === 'read_index_reply');
    expect(confirm).toEqual([expect.objectContaining({ message: expect.objectContaining({ readIndex: 2 }) })]);
  });

  it('linearizability: the leader answers a follower\'s read index at once, with no heartbeat round', () => {
    const cluster = electedCluster();
    const leader = cluster.leader();
    const [asker] = followers(cluster);
    const write = cluster.request(leader, set('r', 'v1'));
    cluster.deliver();
    expect(cluster.outcome(leader, write.requestId)).toMatchObject({ kind: 'apply', cas: 2n });
    const { requestId, effects } = cluster.request(asker, get('r'));
    const ask = itemAt(effects as Array<Extract<Effect<LogMessage>, { kind: 'send' }>>, 0);
    const answer = [
      ...cluster.step(leader, { kind: 'message', nowMs: cluster.nowMs, from: asker, message: ask.message }),
      ...cluster.step(leader, { kind: 'flush', nowMs: cluster.nowMs }),
    ].filter((effect): effect is Extract<Effect<LogMessage>, { kind: 'send' }> => effect.kind === 'send');
    // With three nodes the asker and the leader are a majority: one answer, no append to anyone.
    expect(answer).toEqual([
      expect.objectContaining({ to: asker, message: expect.objectContaining({ kind: 'read_index_reply', readIndex: 2 }) }),
    ]);
    cluster.step(asker, { kind: 'message', nowMs: cluster.nowMs, from: leader, message: itemAt(answer, 0).message });
    expect(cluster.outcome(asker, requestId)).toMatchObject({ kind: 'read', requestId });
    expect(cluster.node(asker).replica.get('r')?.value.toString()).toBe('v1');
  });

  it('linearizability: a read index answered in a term the asker has left is not used; its reads are refused', () => {
    const cluster = electedCluster();
    const leader = cluster.leader();
    const [asker] = followers(cluster);
    const { requestId, effects } = cluster.request(asker, get('r'));
    const ask = itemAt(effects as Array<Extract<Effect<LogMessage>, { kind: 'send' }>>, 0);
    const answer = cluster
      .step(leader, { kind: 'message', nowMs: cluster.nowMs, from: asker, message: ask.message })
      .find((effect): effect is Extract<Effect<LogMessage>, { kind: 'send' }> => effect.kind === 'send' && effect.message.kind === 'read_index_reply');
    expect(answer?.message).toMatchObject({ readIndex: expect.any(Number) });
    // Before the answer arrives the asker moves to a later term, with the same leader (re-elected):
    // it may have voted in between, so the earlier term's answer proves nothing about a majority.
    const last = [...cluster.node(leader).effects].reverse().find((effect) => effect.kind === 'send' && effect.to === asker && effect.message.kind === 'append');
    const sent = (last as Extract<Effect<LogMessage>, { kind: 'send' }>).message as Extract<LogMessage, { kind: 'append' }>;
    const lastIndex = sent.prevIndex + sent.entries.length;
    const lastTerm = sent.entries.at(-1)?.term ?? sent.prevTerm;
    const term = sent.term + 1;
    cluster.step(asker, {
      kind: 'message', nowMs: cluster.nowMs, from: leader,
      message: { kind: 'append', term, prevIndex: lastIndex, prevTerm: lastTerm, entries: [], commitIndex: sent.commitIndex, durableIndex: lastIndex, round: 0, seq: 1, quiet: false },
    });
    expect(cluster.node(asker).machine.status()).toMatchObject({ term, role: 'follower' });
    cluster.step(asker, { kind: 'message', nowMs: cluster.nowMs, from: leader, message: answer?.message as LogMessage });
    expect(cluster.outcome(asker, requestId)).toMatchObject({ kind: 'reply', reply: { kind: 'refused', reason: 'no_quorum' } });
  });

  it('linearizability: an answer meant for the same batch id of an earlier run of the asker is ignored', () => {
    const cluster = electedCluster();
    const leader = cluster.leader();
    const [asker] = followers(cluster);
    const { requestId, effects } = cluster.request(asker, get('r'));
    const ask = itemAt(effects as Array<Extract<Effect<LogMessage>, { kind: 'send' }>>, 0).message as Extract<LogMessage, { kind: 'read_index' }>;
    const stale = { kind: 'read_index_reply', term: ask.term, incarnation: ask.incarnation - 1, batchId: ask.batchId, readIndex: 0 } as const;
    cluster.step(asker, { kind: 'message', nowMs: cluster.nowMs, from: leader, message: stale });
    expect(cluster.outcome(asker, requestId)).toBeUndefined();
    cluster.deliver();
    expect(cluster.outcome(asker, requestId)).toMatchObject({ kind: 'read', requestId });
  });

  it('linearizability: a node cut off from the others refuses reads rather than serve stale data', () => {
    const cluster = electedCluster();
    const follower = followers(cluster)[0];
    cluster.down.add(follower);
    for (let ms = 10; ms <= 400; ms += 10) cluster.step(follower, { kind: 'tick', nowMs: cluster.nowMs + ms, peersUp: [] });
    cluster.nowMs += 400;
    const { requestId } = cluster.request(follower, get('r'));
    expect(cluster.outcome(follower, requestId)).toMatchObject({ kind: 'reply', reply: { kind: 'refused', reason: 'no_quorum' } });
  });

  it('sequential: reads are served locally at once while a leader is known, refused after', () => {
    const cluster = electedCluster('sequential');
    const follower = followers(cluster)[0];
    // What the controller asks before serving a get without stepping it agrees with the step.
    expect(cluster.node(follower).machine.readsLocally?.(cluster.nowMs, 1)).toBe(true);
    const served = cluster.request(follower, get('x'));
    expect(served.effects).toEqual([expect.objectContaining({ kind: 'read', requestId: served.requestId })]);
    cluster.down.add(follower);
    cluster.nowMs += FAILURE_TIMEOUT_MS;
    expect(cluster.node(follower).machine.readsLocally?.(cluster.nowMs, 1)).toBe(false);
    const refused = cluster.request(follower, get('x'));
    expect(refused.effects.filter((effect) => effect.kind !== 'note')).toEqual([
      expect.objectContaining({ kind: 'reply', reply: expect.objectContaining({ kind: 'refused' }) }),
    ]);
  });
});

describe('refusals', () => {
  it('a write pending beyond the bound gets a refusal', () => {
    const cluster = electedCluster();
    const [follower, other] = followers(cluster);
    cluster.down.add(cluster.leader());
    cluster.down.add(other);
    const { requestId } = cluster.request(follower, set('a', '1'));
    cluster.run(4 * FAILURE_TIMEOUT_MS + 20);
    expect(cluster.outcome(follower, requestId)).toMatchObject({ kind: 'reply', reply: { kind: 'refused' } });
    expect(cluster.node(follower).machine.status().queueDepth).toBe(0);
  });

  it('a leader refuses a forward of an older term, so a write enters the log only in the term it was sent', () => {
    const cluster = electedCluster();
    const leader = cluster.leader();
    const follower = followers(cluster)[0];
    const term = cluster.node(leader).machine.status().term;
    const stale: LogMessage = { kind: 'forward', term: term - 1, incarnation: 1, requests: [{ requestId: asRequestId(5), op: set('s', '1') }] };
    const effects = cluster.step(leader, { kind: 'message', nowMs: cluster.nowMs, from: follower, message: stale });
    expect(effects).toContainEqual(expect.objectContaining({ kind: 'send', message: expect.objectContaining({ kind: 'forward_refused' }) }));
  });

});

describe('persistence and restart', () => {
  it('a restarted node rebuilds term, vote and log from its records, resets its replica and replays it', () => {
    const cluster = electedCluster();
    const leader = cluster.leader();
    const follower = followers(cluster)[0];
    cluster.request(leader, incr('n'));
    cluster.request(leader, set('n', '10'));
    cluster.request(leader, incr('n'));
    cluster.run(100);
    expect(cluster.node(follower).replica.get('n')?.value.toString()).toBe('11');
    const records = cluster.node(follower).records;
    const kept = cluster.node(follower).replica;
    cluster.nodes.set(follower, cluster.boot(follower, records, kept));
    const status = cluster.node(follower).machine.status();
    expect(status).toMatchObject({ term: 1, committed: '0', applied: '0' });
    const refused = cluster.request(follower, get('n'));
    expect(refused.effects).toContainEqual(expect.objectContaining({ kind: 'reset' }));
    expect(cluster.outcome(follower, refused.requestId)).toMatchObject({ reply: { kind: 'refused' } });
    cluster.run(200);
    // Replayed from index 1 onto an emptied replica: incr is not applied twice.
    expect(cluster.node(follower).replica.get('n')?.value.toString()).toBe('11');
    expect(cluster.node(follower).machine.status().applied).toBe(cluster.node(leader).machine.status().applied);
  });

  it('a backend reset empties the replica and replays the log', () => {
    const cluster = electedCluster();
    const follower = followers(cluster)[0];
    cluster.request(cluster.leader(), set('a', '1'));
    cluster.run(100);
    cluster.node(follower).replica.clear();
    cluster.step(follower, { kind: 'backend_reset', nowMs: cluster.nowMs });
    cluster.run(100);
    expect(cluster.node(follower).replica.get('a')?.value.toString()).toBe('1');
  });
});

describe('compaction and state transfer', () => {
  it('compacts past the threshold, and a follower that missed compacted entries gets a state transfer', () => {
    const { cluster, leader, lagging } = compactedPastLaggingFollower();
    const compacted = cluster.node(leader).records;
    expect(compacted[0]).toMatchObject({ kind: 'snapshot' });
    expect((compacted[0] as { snapshotIndex: number }).snapshotIndex).toBeGreaterThan(6);
    cluster.down.delete(lagging);
    cluster.run(1_500);
    const node = cluster.node(lagging);
    expect(node.effects.some((effect) => effect.kind === 'put')).toBe(true);
    expect(node.machine.status().applied).toBe(cluster.node(leader).machine.status().applied);
    expect([...node.replica.entries()].map(([key, entry]) => [key, entry.value.toString()]).sort()).toEqual(
      [...cluster.node(leader).replica.entries()].map(([key, entry]) => [key, entry.value.toString()]).sort(),
    );
  });

  for (const mode of ['linearizability', 'sequential'] as const) {
    it(`${mode}: a read sent before a write of its connection is refused, never served after it, when a state transfer jumps past that write`, () => {
      const cluster = electedCluster(mode, 6);
      const leader = cluster.leader();
      const lagging = followers(cluster)[0];
      // The lagging follower gets no appends for a while (its forwards and read-index requests go
      // through): the leader commits entries it does not have.
      cluster.lose = (message, to) => to === lagging && message.kind === 'append';
      for (let n = 0; n < 4; n += 1) cluster.request(leader, set(`k${n}`, String(n)));
      cluster.deliver();
      // In sequential mode the read is held behind an earlier write of its connection.
      const ops = mode === 'sequential' ? [set('x', 'first'), get('x'), set('x', 'mine')] : [get('x'), set('x', 'mine')];
      const { requestIds } = cluster.requests(lagging, ops, 7);
      const read = itemAt(requestIds, requestIds.length - 2);
      cluster.deliver();
      // Then it is cut off while the leader compacts past it (it no longer counts as live).
      cluster.down.add(lagging);
      for (let n = 0; n < 10; n += 1) {
        cluster.request(leader, set(`k${n % 5}`, `again${n}`));
        cluster.run(40);
      }
      cluster.down.delete(lagging);
      expect(cluster.node(leader).records[0]).toMatchObject({ kind: 'snapshot' }); // compacted past the follower
      cluster.lose = () => false;
      cluster.run(200);
      expect(cluster.node(lagging).effects.some((effect) => effect.kind === 'put')).toBe(true); // a transfer came
      // The transferred state holds the connection's later write: the read must not see it.
      expect(cluster.outcome(lagging, read)).toMatchObject({ kind: 'reply', reply: { kind: 'refused', reason: 'not_caught_up' } });
    });
  }

  for (const mode of ['linearizability', 'sequential'] as const) {
    it(`${mode}: the writes a state transfer holds are answered at once, a set as stored, any other write as committed with its result unknown`, () => {
      const cluster = electedCluster(mode, 6);
      const leader = cluster.leader();
      const lagging = followers(cluster)[0];
      // Its forwards go through, the appends that would bring them back do not.
      cluster.lose = (message, to) => to === lagging && message.kind === 'append';
      const { requestIds } = cluster.requests(lagging, [set('a', 'mine'), incr('n'), set('b', 'mine too')], 7);
      const [setA, incrN, setB] = exactly(requestIds, 3);
      cluster.deliver();
      cluster.down.add(lagging);
      for (let n = 0; n < 10; n += 1) {
        cluster.request(leader, set(`k${n % 5}`, `again${n}`));
        cluster.run(40);
      }
      expect(cluster.node(leader).records[0]).toMatchObject({ kind: 'snapshot' }); // compacted past the three writes
      for (const requestId of requestIds) expect(cluster.outcome(lagging, requestId)).toBeUndefined();
      cluster.down.delete(lagging);
      cluster.lose = () => false;
      cluster.run(200); // well within the request timeout
      expect(cluster.node(lagging).effects.some((effect) => effect.kind === 'put')).toBe(true); // a transfer came
      expect(cluster.node(lagging).replica.get('a')?.value.toString()).toBe('mine');
      const stored = cluster.outcome(lagging, setA);
      expect(stored).toMatchObject({ kind: 'reply', reply: { kind: 'stored', cas: cluster.node(lagging).replica.get('a')?.cas } });
      expect(cluster.outcome(lagging, setB)).toMatchObject({ kind: 'reply', reply: { kind: 'stored' } });
      expect(cluster.outcome(lagging, incrN)).toMatchObject({
        kind: 'reply',
        reply: { kind: 'refused', reason: 'result_unknown' },
      });
    });
  }

  it('no state transfer is fetched for a follower that is down; one that comes back gets one at once', () => {
    const { cluster, leader, lagging } = compactedPastLaggingFollower();
    // More than the entries a leader keeps in flight to one follower (4,096): the rest wait at the
    // leader, and compaction passes them, so the follower can only be rebuilt by a transfer.
    for (let n = 0; n < 45; n += 1) {
      cluster.requests(leader, Array.from({ length: 100 }, (_, at) => set(`k${at % 5}`, String(n))), n + 10);
      cluster.run(20);
    }
    const transferFetches = (): number => cluster.node(leader).effects.filter((effect) => effect.kind === 'fetch' && effect.keys === null).length;
    // Down for ten transfer retry periods (4 failure timeouts each): every fetch of the whole replica would be wasted.
    cluster.run(10 * 4 * FAILURE_TIMEOUT_MS);
    expect(transferFetches()).toBe(0);
    cluster.down.delete(lagging);
    cluster.run(FAILURE_TIMEOUT_MS);
    expect(transferFetches()).toBe(1);
    expect(cluster.node(lagging).effects.some((effect) => effect.kind === 'put')).toBe(true);
    expect(cluster.node(lagging).machine.status().applied).toBe(cluster.node(leader).machine.status().applied);
  });

  it('a restarted node whose log was compacted asks for a transfer, then serves', () => {
    const cluster = electedCluster('sequential', 4);
    const leader = cluster.leader();
    const follower = followers(cluster)[0];
    for (let n = 0; n < 12; n += 1) cluster.request(leader, incr('n'));
    cluster.request(leader, set('n', '5'));
    for (let n = 0; n < 3; n += 1) cluster.request(leader, incr('n'));
    cluster.run(200);
    const records = cluster.node(follower).records;
    expect(records[0]).toMatchObject({ kind: 'snapshot' });
    cluster.nodes.set(follower, cluster.boot(follower, records, cluster.node(follower).replica));
    cluster.run(1_000);
    const node = cluster.node(follower);
    expect(node.effects.some((effect) => effect.kind === 'send' && effect.message.kind === 'transfer_request')).toBe(true);
    expect(node.replica.get('n')?.value.toString()).toBe('8');
    const served = cluster.request(follower, get('n'));
    expect(served.effects).toEqual([expect.objectContaining({ kind: 'read' })]);
  });
});

describe('restart with idempotent replay (replicaSkipsApplied)', () => {
  function compactedCluster(): { cluster: Cluster; leader: PeerId } {
    const cluster = electedCluster('linearizability', 4, true);
    const leader = cluster.leader();
    for (let n = 0; n < 12; n += 1) cluster.request(leader, incr('n'));
    cluster.request(leader, set('n', '5'));
    for (let n = 0; n < 3; n += 1) cluster.request(leader, incr('n'));
    cluster.request(leader, { kind: 'store', verb: 'append', key: 'n', flags: 0, expiresAtMs: 0, value: Buffer.from('0'), casUnique: 0n });
    cluster.run(300);
    return { cluster, leader };
  }

  it('a full-cluster restart after compaction replays each log onto its kept replica, without a transfer', () => {
    const { cluster } = compactedCluster();
    for (const id of IDS) {
      const node = cluster.node(id);
      expect(node.records[0]).toMatchObject({ kind: 'snapshot', replicaTrusted: true });
      expect(node.replica.get('n')?.value.toString()).toBe('80');
    }
    for (const id of IDS) cluster.nodes.set(id, cluster.boot(id, cluster.node(id).records, cluster.node(id).replica));
    cluster.run(1_500);
    const leader = cluster.leader();
    for (const id of IDS) {
      const node = cluster.node(id);
      expect(node.effects.some((effect) => effect.kind === 'reset' || (effect.kind === 'send' && effect.message.kind === 'transfer_request'))).toBe(false);
      expect(node.replica.get('n')?.value.toString()).toBe('80');
      expect(node.machine.inspect()).toMatchObject({ caughtUp: true, replicaValid: true });
    }
    const write = cluster.request(leader, incr('n'));
    cluster.deliver();
    expect(cluster.outcome(leader, write.requestId)).toMatchObject({ kind: 'apply' });
    for (const id of IDS) expect(cluster.node(id).replica.get('n')?.value.toString()).toBe('81');
  });

  it('a node whose backend was emptied still gets a state transfer, and only trusts it once the puts completed', () => {
    const { cluster, leader } = compactedCluster();
    const follower = followers(cluster)[0];
    cluster.node(follower).replica.clear();
    const effects = cluster.step(follower, { kind: 'backend_reset', nowMs: cluster.nowMs });
    expect(effects).toContainEqual(expect.objectContaining({ kind: 'persist', record: { kind: 'replica', trusted: false, emptied: false } }));
    cluster.run(1_500);
    const node = cluster.node(follower);
    expect(node.effects.some((effect) => effect.kind === 'send' && effect.message.kind === 'transfer_request')).toBe(true);
    expect(node.replica.get('n')?.value.toString()).toBe('80');
    expect(node.records.some((record) => (record as { kind: string }).kind === 'replica' && (record as { trusted: boolean }).trusted)).toBe(false);
    const puts = node.effects.filter((effect) => effect.kind === 'put');
    for (const put of puts) if (put.kind === 'put' && put.token !== null) cluster.step(follower, { kind: 'applied', nowMs: cluster.nowMs, token: put.token });
    expect(node.records[node.records.length - 1]).toEqual({ kind: 'replica', trusted: true, emptied: false });
    expect(cluster.node(leader).machine.status().applied).toBe(node.machine.status().applied);
  });

  it('a backend whose failed writes only timed out (kept) is repaired by replaying the log onto it, at every node at once, without a transfer', () => {
    const { cluster, leader } = compactedCluster();
    // A write commits, but its apply times out at every replica without taking effect.
    cluster.applyTimesOut = () => true;
    const timedOut = cluster.request(leader, set('n', '99')).requestId;
    cluster.run(100);
    cluster.applyTimesOut = () => false;
    for (const id of IDS) expect(cluster.node(id).replica.get('n')?.value.toString()).toBe('80');
    // The controller held the client's reply (its apply failed): the replay answers it.
    for (const id of IDS) {
      const awaiting = id === leader ? [asRequestId(timedOut)] : [];
      cluster.step(id, { kind: 'backend_reset', nowMs: cluster.nowMs, kept: true, awaiting });
    }
    cluster.run(500);
    const answers = cluster.node(leader).effects.filter((effect) => (effect.kind === 'apply' || effect.kind === 'reply') && effect.requestId === timedOut);
    expect(answers.map((effect) => effect.kind)).toEqual(['apply', 'apply']);
    for (const id of IDS) {
      const node = cluster.node(id);
      expect(node.effects.some((effect) => effect.kind === 'send' && effect.message.kind === 'transfer_request')).toBe(false);
      expect(node.records.some((record) => (record as { kind: string }).kind === 'replica' && !(record as { trusted: boolean }).trusted)).toBe(false);
      expect(node.replica.get('n')?.value.toString()).toBe('99');
    }
    const { requestId } = cluster.request(leader, incr('n'));
    cluster.run(100);
    expect(cluster.outcome(leader, requestId)).toMatchObject({ kind: 'apply' });
    for (const id of IDS) expect(cluster.node(id).replica.get('n')?.value.toString()).toBe('100');
  });

  it('a kept reset of a replica that is not trusted (being rebuilt) still asks for a transfer, and answers the writes it held', () => {
    const { cluster } = compactedCluster();
    const follower = followers(cluster)[0];
    cluster.step(follower, { kind: 'backend_reset', nowMs: cluster.nowMs });
    const held = asRequestId(9_999);
    const effects = cluster.step(follower, { kind: 'backend_reset', nowMs: cluster.nowMs, kept: true, awaiting: [held] });
    expect(effects.some((effect) => effect.kind === 'apply')).toBe(false);
    expect(effects).toContainEqual({ kind: 'reply', requestId: held, reply: { kind: 'refused', reason: 'backend', detail: expect.stringMatching(/^write outcome unknown/) } });
    cluster.run(1_500);
    expect(cluster.node(follower).effects.some((effect) => effect.kind === 'send' && effect.message.kind === 'transfer_request')).toBe(true);
  });

  it('a node restarted after its backend was emptied still says so when it asks for a transfer', () => {
    const { cluster } = compactedCluster();
    const follower = followers(cluster)[0];
    cluster.node(follower).replica.clear();
    const effects = cluster.step(follower, { kind: 'backend_reset', nowMs: cluster.nowMs, emptied: true });
    expect(effects).toContainEqual(expect.objectContaining({ kind: 'persist', record: { kind: 'replica', trusted: false, emptied: true } }));
    // Restarted before any transfer: the controller will not report the (already seen) restart again.
    cluster.nodes.set(follower, cluster.boot(follower, cluster.node(follower).records, cluster.node(follower).replica));
    cluster.run(1_500);
    const asked = cluster.node(follower).effects.filter((effect) => effect.kind === 'send' && effect.message.kind === 'transfer_request');
    expect(asked.length).toBeGreaterThan(0);
    for (const effect of asked) expect(effect).toMatchObject({ message: { emptied: true } });
  });

  it('a write taken while the replica is rebuilt is held, not refused: it commits and is answered once the transfer lands; a read is refused meanwhile', () => {
    const { cluster } = compactedCluster();
    const follower = followers(cluster)[0];
    cluster.node(follower).replica.clear();
    cluster.step(follower, { kind: 'backend_reset', nowMs: cluster.nowMs, emptied: true });
    expect(cluster.node(follower).machine.inspect()).toMatchObject({ replicaValid: false, caughtUp: false });
    const write = cluster.request(follower, set('during', 'rebuild'));
    expect(write.effects.some((effect) => effect.kind === 'reply')).toBe(false);
    const read = cluster.requests(follower, [get('a')], 2);
    expect(read.effects).toContainEqual(expect.objectContaining({ kind: 'reply', reply: expect.objectContaining({ reason: 'not_caught_up' }) }));
    cluster.run(1_500);
    expect(cluster.node(follower).machine.inspect()).toMatchObject({ replicaValid: true, caughtUp: true });
    const outcome = cluster.outcome(follower, write.requestId);
    expect(outcome?.kind === 'apply' || (outcome?.kind === 'reply' && outcome.reply.kind !== 'refused')).toBe(true);
    for (const id of IDS) expect(cluster.node(id).replica.get('during')?.value.toString()).toBe('rebuild');
  });

  it('a node just started holds writes for two failure timeouts before it judges its silent peers unreachable', () => {
    const cluster = new Cluster();
    const alone = IDS[0];
    cluster.step(alone, { kind: 'tick', nowMs: cluster.nowMs, peersUp: [] });
    const write = cluster.request(alone, set('k', 'v'));
    expect(write.effects.some((effect) => effect.kind === 'reply')).toBe(false);
    const refusedBy = (): Effect<LogMessage> | undefined => cluster.outcome(alone, write.requestId);
    for (let ms = 10; ms < 2 * FAILURE_TIMEOUT_MS; ms += 10) cluster.step(alone, { kind: 'tick', nowMs: cluster.nowMs + ms, peersUp: [] });
    expect(refusedBy()).toBeUndefined();
    cluster.step(alone, { kind: 'tick', nowMs: cluster.nowMs + 2 * FAILURE_TIMEOUT_MS, peersUp: [] });
    expect(refusedBy()).toMatchObject({ kind: 'reply', reply: { kind: 'refused', reason: 'no_quorum' } });
  });

  it('when every backend restarted empty after compaction, the leader starts over from an empty replica and the others copy it', () => {
    const { cluster } = compactedCluster();
    for (const id of IDS) {
      cluster.node(id).replica.clear();
      cluster.step(id, { kind: 'backend_reset', nowMs: cluster.nowMs, emptied: true });
      expect(cluster.node(id).machine.inspect()).toMatchObject({ replicaValid: false, snapshotIndex: expect.any(Number) });
      expect(cluster.node(id).machine.inspect().snapshotIndex).toBeGreaterThan(0);
    }
    cluster.run(5_000);
    const startedOver = IDS.flatMap((id) =>
      cluster.node(id).effects.filter((effect) => effect.kind === 'note' && /every replica lost its data/.test(effect.message)),
    );
    expect(startedOver).toHaveLength(1);
    for (const id of IDS) expect(cluster.node(id).machine.inspect()).toMatchObject({ replicaValid: true, caughtUp: true });
    const leader = cluster.leader();
    const contents = (id: PeerId): string => JSON.stringify([...cluster.node(id).replica.entries()].sort(), (_key, value: unknown) => (typeof value === 'bigint' ? `${value}` : value));
    for (const id of IDS) expect(contents(id)).toBe(contents(leader));
    // And it serves again: a write at a follower, read back at the other.
    const [writer, reader] = followers(cluster);
    const write = cluster.request(writer, set('after', 'yes'));
    cluster.run(100);
    expect(cluster.outcome(writer, write.requestId)).toMatchObject({ kind: 'apply' });
    const read = cluster.request(reader, get('after'));
    cluster.run(100);
    expect(cluster.outcome(reader, read.requestId)).toMatchObject({ kind: 'read' });
    expect(cluster.node(reader).replica.get('after')?.value.toString()).toBe('yes');
  });

  it('no start over while a peer may still hold the data, nor when the replicas are merely untrusted', () => {
    const { cluster } = compactedCluster();
    // All three untrusted after failed writes: their backends may still hold the data, so the
    // cluster keeps refusing rather than drop it.
    for (const id of IDS) cluster.step(id, { kind: 'backend_reset', nowMs: cluster.nowMs });
    cluster.run(5_000);
    for (const id of IDS) {
      expect(cluster.node(id).effects.some((effect) => effect.kind === 'note' && /every replica lost its data/.test(effect.message))).toBe(false);
      expect(cluster.node(id).machine.inspect().replicaValid).toBe(false);
    }
  });

  it('a leader whose backend restarted empty does not start over while a peer still holds the data', () => {
    const { cluster } = compactedCluster();
    const lost = [cluster.leader(), followers(cluster)[0]];
    for (const id of lost) {
      cluster.node(id).replica.clear();
      cluster.step(id, { kind: 'backend_reset', nowMs: cluster.nowMs, emptied: true });
    }
    cluster.run(5_000);
    for (const id of IDS) {
      expect(cluster.node(id).effects.some((effect) => effect.kind === 'note' && /every replica lost its data/.test(effect.message))).toBe(false);
      expect(cluster.node(id).machine.inspect().replicaValid).toBe(true);
      expect(cluster.node(id).replica.get('n')?.value.toString()).toBe('80');
    }
  });
});

describe('Replica with replay: skip-applied', () => {
  const ctx = (cas: number): { cas: bigint; nowMs: number } => ({ cas: BigInt(cas), nowMs: 1_000 });

  it('skips an op whose key already holds a cas ≥ its index, so replaying incr and append is idempotent', async () => {
    const replica = new Replica(new MemoryBackend(), { tombstones: false, replay: 'skip-applied' });
    await replica.apply(set('n', '5'), ctx(1));
    await replica.apply(incr('n'), ctx(2));
    await replica.apply({ kind: 'store', verb: 'append', key: 'n', flags: 0, expiresAtMs: 0, value: Buffer.from('0'), casUnique: 0n }, ctx(3));
    // Replay of 1..3 (a restart) changes nothing; 4 is new.
    await replica.apply(set('n', '5'), ctx(1));
    await replica.apply(incr('n'), ctx(2));
    await replica.apply({ kind: 'store', verb: 'append', key: 'n', flags: 0, expiresAtMs: 0, value: Buffer.from('0'), casUnique: 0n }, ctx(3));
    await replica.apply(incr('n'), ctx(4));
    expect(await replica.read(get('n'), 1_000)).toMatchObject({ items: [{ value: Buffer.from('61'), cas: 4n }] });
  });

  it('flush_all at index f removes only entries older than f', async () => {
    const replica = new Replica(new MemoryBackend(), { tombstones: false, replay: 'skip-applied' });
    await replica.apply(set('old', 'x'), ctx(1));
    await replica.apply(set('new', 'y'), ctx(5));
    await replica.apply({ kind: 'flush_all', delayMs: 0 }, ctx(3));
    expect(await replica.read({ kind: 'get', keys: ['old', 'new'] }, 1_000)).toMatchObject({ items: [{ key: 'new', cas: 5n }] });
  });

  it('without the option, a replayed incr applies twice (why the log modes need it)', async () => {
    const replica = new Replica(new MemoryBackend(), { tombstones: false });
    await replica.apply(set('n', '5'), ctx(1));
    await replica.apply(incr('n'), ctx(2));
    await replica.apply(incr('n'), ctx(2));
    expect(await replica.read(get('n'), 1_000)).toMatchObject({ items: [{ value: Buffer.from('7') }] });
  });
});

describe('notes for operators', () => {
  const notes = (cluster: Cluster, id: PeerId): Array<Extract<Effect<LogMessage>, { kind: 'note' }>> =>
    cluster.node(id).effects.filter((effect): effect is Extract<Effect<LogMessage>, { kind: 'note' }> => effect.kind === 'note');

  it('an election, a vote, leadership and following are noted with the peers involved', () => {
    const cluster = electedCluster();
    const leader = cluster.leader();
    const follower = followers(cluster)[0];
    expect(notes(cluster, leader).map((note) => note.message)).toEqual(expect.arrayContaining(['election started: no leader heard from', 'became leader']));
    expect(notes(cluster, leader).find((note) => note.message === 'became leader')?.meta).toMatchObject({ leader, term: 1, peers: expect.any(Array) });
    expect(notes(cluster, follower)).toContainEqual(expect.objectContaining({ level: 'info', message: 'vote granted', meta: expect.objectContaining({ to: leader }) }));
    expect(notes(cluster, follower)).toContainEqual(expect.objectContaining({ message: 'became follower', meta: expect.objectContaining({ leader }) }));
  });

  it('a leader that loses its quorum notes why it stepped down', () => {
    const cluster = electedCluster();
    const leader = cluster.leader();
    for (let ms = 10; ms <= 400; ms += 10) cluster.step(leader, { kind: 'tick', nowMs: cluster.nowMs + ms, peersUp: [] });
    expect(notes(cluster, leader)).toContainEqual(expect.objectContaining({ level: 'warn', message: 'stepped down', meta: expect.objectContaining({ why: expect.any(String) }) }));
  });

  it('refusals are noted at most once per reason per second', () => {
    const cluster = new Cluster();
    for (let n = 0; n < 50; n += 1) cluster.request(IDS[0], get('a'));
    expect(notes(cluster, IDS[0]).filter((note) => note.message === 'request refused')).toHaveLength(1);
    cluster.nowMs += 1_000;
    cluster.request(IDS[0], get('a'));
    expect(notes(cluster, IDS[0]).filter((note) => note.message === 'request refused')).toHaveLength(2);
  });

  it('state transfers are noted at both ends with the peer and index', () => {
    const { cluster, leader, lagging } = compactedPastLaggingFollower();
    cluster.down.delete(lagging);
    cluster.run(1_500);
    expect(notes(cluster, leader)).toContainEqual(expect.objectContaining({ message: 'state transfer sent', meta: expect.objectContaining({ peer: lagging, index: expect.any(Number) }) }));
    expect(notes(cluster, lagging)).toContainEqual(expect.objectContaining({ message: 'state transfer received', meta: expect.objectContaining({ peer: leader }) }));
  });
});
