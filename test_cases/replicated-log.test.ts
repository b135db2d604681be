/**
 * Scenario tests of the replicated log on the tiny, fault-free, FIFO network of
 * support/log-cluster.ts: election, replication and commit, a leader whose disk stalls (its pings
 * keep its followers), and the notes the log leaves for operators. One scenario's message trace is
 * kept as a file (test_cases/traces/). Reads and refusals: replicated-log-reads.test.ts;
 * persistence, compaction, state transfer and restart: replicated-log-restart.test.ts.
 */

import { describe, expect, it } from 'vitest';
import type { Op } from '../src/store/types.ts';
import { asRequestId, type Effect, type PeerId } from '../src/consistency/types.ts';
import type { LogMessage } from '../src/consistency/replicated-log.ts';
import { itemAt } from '../src/runtime/item-at.ts';
import { LOG_DEFAULTS } from '../src/consistency/log/types.ts';
import { DEFERRED_APPEND_MS } from '../src/consistency/log/replication.ts';
import { Cluster, compactedPastLaggingFollower, electedCluster, FAILURE_TIMEOUT_MS, followers, get, HEARTBEAT_MS, IDS, incr, set } from './support/log-cluster.ts';

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

/** The appends among `effects`. */
function appendsIn(effects: readonly Effect<LogMessage>[]): Array<Extract<Effect<LogMessage>, { kind: 'send' }>> {
  return effects.filter((effect) => effect.kind === 'send' && effect.message.kind === 'append') as Array<Extract<Effect<LogMessage>, { kind: 'send' }>>;
}

/** Where, among `effects`, the record of new entries is persisted (-1: nowhere). */
function entriesRecordAt(effects: readonly Effect<LogMessage>[]): number {
  return effects.findIndex((effect) => effect.kind === 'persist' && (effect.record as { kind: string }).kind === 'entries');
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

  it('keeps the message trace of a new cluster\'s start, its election and a write', async () => {
    const cluster = new Cluster();
    cluster.run(1_000);
    // Each new node first asks the others whether the cluster ran before (12 messages), then the election.
    const election = cluster.trace.slice(0, 24);
    cluster.trace.length = 0;
    cluster.request(followers(cluster)[0], set('a', '1'));
    cluster.deliver();
    const trace = ['# a new cluster, its election', ...election, '# a write at a follower', ...cluster.trace].join('\n') + '\n';
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
    // The write's origin gets it at once; the other follower, which need not have it yet, within DEFERRED_APPEND_MS.
    expect(appendsIn(atLeader).map((append) => append.to)).toEqual([origin]);
    expect(appendsIn(atLeader).every((append) => atLeader.indexOf(append) > persisted)).toBe(true);
    expect(atLeader).toContainEqual({ kind: 'wake', afterMs: DEFERRED_APPEND_MS });
    cluster.nowMs += 1;
    expect(appendsIn(cluster.step(leader, { kind: 'flush', nowMs: cluster.nowMs }))).toEqual([]);
    cluster.nowMs += DEFERRED_APPEND_MS - 1;
    const woken = cluster.step(leader, { kind: 'flush', nowMs: cluster.nowMs });
    expect(appendsIn(woken).map((append) => append.to)).toEqual([other]);
    for (const append of [...appendsIn(atLeader), ...appendsIn(woken)]) {
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
    // A follower's write: both followers commit it on receipt (the other DEFERRED_APPEND_MS later), and neither acks at once.
    const { atLeader } = writeThroughLeader(cluster, origin, leader, set('a', 'x'));
    cluster.nowMs += DEFERRED_APPEND_MS;
    const sent = [...atLeader, ...cluster.step(leader, { kind: 'flush', nowMs: cluster.nowMs })];
    for (const to of [origin, other]) {
      const accepted = [...cluster.step(to, { kind: 'message', nowMs: cluster.nowMs, from: leader, message: appendTo(sent, to) }), ...cluster.step(to, { kind: 'flush', nowMs: cluster.nowMs })];
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
    // The leader's own client's write waits for an ack: it is sent at once, to one follower.
    const own = cluster.request(leader, set('c', 'z'));
    const [ownAppend, ...more] = appendsIn(own.effects);
    expect(more).toEqual([]);
    const accepted = cluster.step(ownAppend!.to, { kind: 'message', nowMs: cluster.nowMs, from: leader, message: ownAppend!.message });
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

  it('compacts by bytes: large values leave the log long before the entry threshold', () => {
    const cluster = new Cluster('sequential', 10_000, false, null, 64 * 1024);
    cluster.run(1_000);
    const leader = cluster.leader();
    for (let n = 0; n < 40; n += 1) {
      cluster.request(leader, set(`big${n % 4}`, String(n % 10).repeat(8 * 1024)));
      cluster.run(20);
    }
    for (const id of IDS) {
      // 40 entries of 8 KiB against a 64 KiB threshold: compacted at least every 8 or so.
      expect(cluster.node(id).machine.inspect().snapshotIndex).toBeGreaterThan(20);
      expect(cluster.node(id).replica.get('big3')?.value.toString()).toBe('9'.repeat(8 * 1024));
    }
  });

  it('keeps what a follower silent for a few failure timeouts lacks: back, it catches up from the log, with no transfer', () => {
    const cluster = new Cluster('linearizability', 6, false, null, undefined, { silentFollowerKeptFailureTimeouts: LOG_DEFAULTS.silentFollowerKeptFailureTimeouts });
    cluster.run(1_000);
    const leader = cluster.leader();
    const lagging = followers(cluster)[0];
    cluster.down.add(lagging);
    // 20 writes over 3 failure timeouts (a stall, a controller restarted), at a compaction threshold of 6.
    for (let n = 0; n < 20; n += 1) {
      cluster.request(leader, set(`k${n % 5}`, String(n)));
      cluster.run(3 * FAILURE_TIMEOUT_MS / 20);
    }
    cluster.down.delete(lagging);
    cluster.run(1_500);
    const transferNotes = cluster.node(leader).effects.filter((effect) => effect.kind === 'note' && effect.message.startsWith('state transfer'));
    expect(transferNotes).toEqual([]);
    expect(cluster.node(lagging).machine.inspect().appliedIndex).toBe(cluster.node(leader).machine.inspect().appliedIndex);
    for (let n = 15; n < 20; n += 1) expect(cluster.node(lagging).replica.get(`k${n % 5}`)?.value.toString()).toBe(String(n));
  });

  it('waits to compact while it would rewrite more than an eighth of what it drops: a follower catching up a little at a time', () => {
    const cluster = new Cluster('linearizability', 6, false, null, undefined, { appendEntriesMax: 4, inflightEntriesMax: 4 });
    cluster.run(1_000);
    const leader = cluster.leader();
    const lagging = followers(cluster)[0];
    // It hears heartbeats only (live, so the leader keeps what it lacks) while 80 writes commit.
    cluster.lose = (message, to) => to === lagging && message.kind === 'append' && message.entries.length > 0;
    for (let n = 0; n < 80; n += 1) {
      cluster.request(leader, set(`k${n % 5}`, String(n)));
      cluster.run(10);
    }
    const tails = (): number[] => cluster.node(leader).effects.flatMap((effect) =>
      (effect.kind === 'persist' && effect.compact && (effect.record as { kind: string }).kind === 'snapshot'
        ? [(effect.record as { entries: unknown[] }).entries.length] : []));
    const before = tails().length;
    // Then it catches up four entries an append: each compaction writes the tail it keeps.
    cluster.lose = () => false;
    cluster.run(3_000);
    expect(cluster.node(lagging).machine.inspect().appliedIndex).toBe(cluster.node(leader).machine.inspect().appliedIndex);
    const written = tails().slice(before).reduce((sum, tail) => sum + tail, 0);
    // An eighth of the 80 dropped, and one append's worth caught up meanwhile.
    expect(written).toBeLessThanOrEqual(80 / 8 + 4);
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

describe('a follower below the snapshot', () => {
  it('while its transfer is under way, gets appends at heartbeats, not one per reply', () => {
    const { cluster, leader, lagging } = compactedPastLaggingFollower();
    cluster.down.delete(lagging);
    // The transfer's chunks are held up: the follower stays below the snapshot, answering each append.
    cluster.lose = (message) => message.kind === 'transfer_chunk';
    const sentBefore = cluster.trace.length;
    cluster.run(500);
    const appends = cluster.trace.slice(sentBefore).filter((line) => line.startsWith(`${leader}->${lagging} append `)).length;
    expect(appends).toBeGreaterThan(0);
    // A heartbeat every 50 ms and a read-confirming round now and then: ten or so, not one per round trip.
    expect(appends).toBeLessThanOrEqual(2 * (500 / HEARTBEAT_MS));
  });
});
