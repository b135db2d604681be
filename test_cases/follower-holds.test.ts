/**
 * Followers sharing holds (linearizability with read leases, three nodes; see
 * src/consistency/log/follower-holds.ts): a follower that accepts an append carrying the
 * other follower's writes tells that follower (`held`), which commits them on its own copy and
 * that word, one hop before the leader's commit notice. What must hold: the commit needs both
 * followers' copies of the current term; nothing else commits on a `held`; the leader's read
 * index covers whatever the followers may have committed between themselves; a bare commit
 * notice waits only when the origin was told.
 */

import { describe, expect, it } from 'vitest';
import type { PeerId } from '../src/consistency/types.ts';
import type { LogMessage } from '../src/consistency/replicated-log.ts';
import { logMessageProblem } from '../src/consistency/log/validate.ts';
import { OP_LIMITS_DEFAULT } from '../src/store/op-rules.ts';
import type { Op } from '../src/store/types.ts';
import { IDS, Trio } from './support/lease-trio.ts';

const set = (key: string, value: string): Op => ({ kind: 'store', verb: 'set', key, flags: 0, expiresAtMs: 0, value: Buffer.from(value), casUnique: 0n });

type Sent = { from: PeerId; to: PeerId; message: LogMessage };

/** A settled trio, and who is who: the leader, the follower whose client writes, the other follower. */
function settled(): { trio: Trio; leader: PeerId; origin: PeerId; other: PeerId } {
  const trio = new Trio();
  trio.run(1_000);
  trio.request(trio.leader(), set('k', 'v0'));
  trio.run(100);
  const leader = trio.leader();
  const [origin, other] = IDS.filter((id) => id !== leader) as [PeerId, PeerId];
  return { trio, leader, origin, other };
}

/** Takes the queued messages matching `pick` out of the queue. */
function take(trio: Trio, pick: (sent: Sent) => boolean): Sent[] {
  const taken = trio.queue.filter(pick);
  trio.queue = trio.queue.filter((sent) => !pick(sent));
  return taken;
}

/** Steps `sent`'s receiver with it and flushes; what it sends stays queued. */
function handOver(trio: Trio, sent: Sent): void {
  trio.step(sent.to, { kind: 'message', from: sent.from, message: sent.message });
  trio.step(sent.to, { kind: 'flush' });
}

/** The origin's write, forwarded and appended by the leader: the two appends, held back. */
function writeThroughOrigin(trio: Trio, leader: PeerId, origin: PeerId): { requestId: number; appends: Map<PeerId, Sent> } {
  trio.queue = [];
  const requestId = trio.request(origin, set('k', 'v1'));
  const [forward] = take(trio, (sent) => sent.message.kind === 'forward');
  expect(forward?.to).toBe(leader);
  handOver(trio, forward as Sent);
  const appends = new Map(take(trio, (sent) => sent.message.kind === 'append').map((sent) => [sent.to, sent]));
  expect(appends.size).toBe(2);
  return { requestId, appends };
}

describe('followers sharing holds', () => {
  it("a follower's write commits on its copy and the other follower's held, before the leader hears an ack", () => {
    const { trio, leader, origin, other } = settled();
    const leaderCommit = trio.machine(leader).inspect().commitIndex;
    const { requestId, appends } = writeThroughOrigin(trio, leader, origin);
    handOver(trio, appends.get(origin) as Sent);
    expect(trio.replies.has(requestId)).toBe(false);
    handOver(trio, appends.get(other) as Sent);
    const held = take(trio, (sent) => sent.message.kind === 'held');
    expect(held).toHaveLength(1);
    expect(held[0]).toMatchObject({ from: other, to: origin });
    handOver(trio, held[0] as Sent);
    expect(trio.replies.get(requestId)?.kind).toBe('apply');
    // The acks are still queued: the leader has not committed it yet.
    expect(trio.machine(leader).inspect().commitIndex).toBe(leaderCommit);
  });

  it('a held that arrives before the entries commits them when they come', () => {
    const { trio, leader, origin, other } = settled();
    const { requestId, appends } = writeThroughOrigin(trio, leader, origin);
    handOver(trio, appends.get(other) as Sent);
    const [held] = take(trio, (sent) => sent.message.kind === 'held');
    handOver(trio, held as Sent);
    expect(trio.replies.has(requestId)).toBe(false);
    handOver(trio, appends.get(origin) as Sent);
    expect(trio.replies.get(requestId)?.kind).toBe('apply');
  });

  it('without the other follower holding it, the origin waits for the commit notice', () => {
    const { trio, leader, origin } = settled();
    const { requestId, appends } = writeThroughOrigin(trio, leader, origin);
    handOver(trio, appends.get(origin) as Sent);
    const term = trio.machine(origin).inspect().term;
    const lastIndex = trio.machine(origin).inspect().lastIndex;
    // A held from the leader, or of an older term, commits nothing.
    handOver(trio, { from: leader, to: origin, message: { kind: 'held', term, matchIndex: lastIndex } });
    handOver(trio, { from: IDS.find((id) => id !== leader && id !== origin) as PeerId, to: origin, message: { kind: 'held', term: term - 1, matchIndex: lastIndex } });
    expect(trio.replies.has(requestId)).toBe(false);
    expect(trio.machine(origin).inspect().commitIndex).toBeLessThan(lastIndex);
  });

  it("the leader's read index covers what it sent both followers, acked or not", () => {
    const { trio, leader, origin } = settled();
    const { appends } = writeThroughOrigin(trio, leader, origin);
    const writeIndex = trio.machine(leader).inspect().lastIndex;
    expect(trio.machine(leader).inspect().commitIndex).toBeLessThan(writeIndex);
    expect(appends.size).toBe(2);
    const term = trio.machine(leader).inspect().term;
    handOver(trio, { from: origin, to: leader, message: { kind: 'read_index', term, incarnation: 1, batchId: 1 } });
    const [reply] = take(trio, (sent) => sent.message.kind === 'read_index_reply');
    expect(reply?.message).toMatchObject({ readIndex: writeIndex });
  });

  it('the leader reads under its lease while writes it sent both followers are in flight', () => {
    const { trio, leader, origin } = settled();
    writeThroughOrigin(trio, leader, origin);
    expect(trio.machine(leader).inspect().commitIndex).toBeLessThan(trio.machine(leader).inspect().lastIndex);
    expect(trio.machine(leader).readsLocally?.(trio.nowMs, 999, { keys: ['other'], appliesDone: true })).toBe(true);
    expect(trio.machine(leader).readsLocally?.(trio.nowMs, 999, { keys: ['k'], appliesDone: true })).toBe(false);
  });

  it("the leader's bare commit notice waits when the origin was told, and leaves within 2 ms", () => {
    const { trio, leader, origin, other } = settled();
    const { appends } = writeThroughOrigin(trio, leader, origin);
    handOver(trio, appends.get(origin) as Sent);
    handOver(trio, appends.get(other) as Sent);
    const acks = take(trio, (sent) => sent.message.kind === 'append_reply');
    expect(acks).toHaveLength(2);
    for (const ack of acks) handOver(trio, ack);
    const writeIndex = trio.machine(leader).inspect().lastIndex;
    expect(trio.machine(leader).inspect().commitIndex).toBe(writeIndex);
    const notices = (): Sent[] => take(trio, (sent) => sent.from === leader && sent.message.kind === 'append');
    expect(notices()).toEqual([]);
    trio.nowMs += 2;
    trio.step(leader, { kind: 'tick', peersUp: IDS });
    trio.step(leader, { kind: 'flush' });
    const late = notices();
    expect(late.map((sent) => sent.to).sort()).toEqual([origin, other].sort());
    for (const sent of late) expect(sent.message).toMatchObject({ commitIndex: writeIndex });
  });

  it('a held is checked as every peer message is', () => {
    const counts = { appendEntriesMax: 64, requestsMax: 64, chunkEntriesMax: 64, chunkCountMax: 64 };
    const limits = { nodes: new Set<string>(IDS), op: OP_LIMITS_DEFAULT, ...counts };
    expect(logMessageProblem({ kind: 'held', term: 3, matchIndex: 7 }, limits)).toBeNull();
    expect(logMessageProblem({ kind: 'held', term: 3, matchIndex: -1 }, limits)).toBe('held: bad fields');
    expect(logMessageProblem({ kind: 'held', term: 3, matchIndex: '7' }, limits)).toBe('held: bad fields');
    expect(logMessageProblem({ kind: 'held', term: 3 }, limits)).toBe('held: bad fields');
  });
});
