/**
 * Unit tests of the read-lease rules (src/consistency/log/lease.ts and their use in the replicated
 * log): the guard's arithmetic, a holder's lease (its own ask, its term, its process lifetime, the
 * grant's index), the log's per-key index, and, on three machines over a hand-driven network, the
 * leader's commit rule: every honoured holder's ack, and a new leader's full guard.
 */

import { describe, expect, it } from 'vitest';
import { asPeerId, asRequestId, type PeerId } from '../src/consistency/types.ts';
import { leaseGuardMs, ReadLeases } from '../src/consistency/log/lease.ts';
import { EntryLog } from '../src/consistency/log/entry-log.ts';
import type { LogCore } from '../src/consistency/log/core.ts';
import type { LogEntry } from '../src/consistency/log/types.ts';
import type { Op } from '../src/store/types.ts';
import { IDS, LEASES, Trio } from './support/lease-trio.ts';
const set = (key: string, value: string): Op => ({ kind: 'store', verb: 'set', key, flags: 0, expiresAtMs: 0, value: Buffer.from(value), casUnique: 0n });
const get = (key: string): Op => ({ kind: 'get', keys: [key] });

describe('the lease guard', () => {
  it('stretches the lease by the drift bound both ways, plus the margin', () => {
    expect(leaseGuardMs({ leaseMs: 1000, clockDriftPpmMax: 0, marginMs: 0 })).toBe(1000);
    // 1000 × 1.01 / 0.99 = 1020.2…, rounded up, plus 10.
    expect(leaseGuardMs({ leaseMs: 1000, clockDriftPpmMax: 10_000, marginMs: 10 })).toBe(1031);
  });
});

describe("a holder's lease", () => {
  const core = (): LogCore =>
    ({ incarnation: 2, nowMs: 1_000, term: 5, role: 'follower', leader: asPeerId('n1'), commitIndex: 10 }) as unknown as LogCore;

  it('runs from its own ask, not from the grant, and needs the grant index committed here', () => {
    const state = core();
    const leases = new ReadLeases(state, LEASES);
    const ask = leases.ask();
    state.nowMs = 1_150;
    leases.onGrant({ ...ask, index: 10 });
    expect(leases.holdsAsFollower(1_150)).toBe(true);
    expect(leases.holdsAsFollower(1_199)).toBe(true);
    expect(leases.holdsAsFollower(1_200)).toBe(false);
    leases.onGrant({ incarnation: 2, askedMs: 1_100, index: 12 });
    expect(leases.holdsAsFollower(1_150)).toBe(false);
    state.commitIndex = 12;
    expect(leases.holdsAsFollower(1_250)).toBe(true);
  });

  it('is refused when asked by another process lifetime, and lost with the term or the role', () => {
    const state = core();
    const leases = new ReadLeases(state, LEASES);
    leases.onGrant({ incarnation: 1, askedMs: 990, index: 0 });
    expect(leases.holdsAsFollower(1_000)).toBe(false);
    leases.onGrant({ incarnation: 2, askedMs: 990, index: 0 });
    expect(leases.holdsAsFollower(1_000)).toBe(true);
    state.role = 'candidate';
    expect(leases.holdsAsFollower(1_000)).toBe(false);
    state.role = 'follower';
    state.term = 6;
    expect(leases.holdsAsFollower(1_000)).toBe(false);
  });

  it("the leader's own: from a send a follower acked, once its term's first entry is committed", () => {
    const state = core();
    state.role = 'leader';
    const leases = new ReadLeases(state, LEASES);
    expect(leases.holdsAsLeader(1_100, 950, true)).toBe(true);
    expect(leases.holdsAsLeader(1_150, 950, true)).toBe(false);
    expect(leases.holdsAsLeader(1_100, 950, false)).toBe(false);
  });

  it('a clock jump (the machine was suspended) ends both, until asks and sends dated after it', () => {
    const state = core();
    const leases = new ReadLeases(state, LEASES);
    leases.onGrant({ incarnation: 2, askedMs: 990, index: 0 });
    expect(leases.holdsAsFollower(1_000)).toBe(true);
    expect(leases.forget()).toBe(true);
    expect(leases.holdsAsFollower(1_000)).toBe(false);
    // A grant of an ask made before the jump (same millisecond included) is dated by a clock that lost time.
    leases.onGrant({ incarnation: 2, askedMs: 1_000, index: 0 });
    expect(leases.holdsAsFollower(1_000)).toBe(false);
    state.nowMs = 1_010;
    leases.onGrant({ incarnation: 2, askedMs: 1_001, index: 0 });
    expect(leases.holdsAsFollower(1_010)).toBe(true);

    state.role = 'leader';
    state.nowMs = 1_020;
    leases.forget();
    expect(leases.holdsAsLeader(1_030, 1_020, true)).toBe(false);
    expect(leases.holdsAsLeader(1_030, 1_021, true)).toBe(true);
    state.role = 'follower';
    expect(leases.forget()).toBe(false);
  });
});

describe("the log's per-key index", () => {
  const entry = (index: number, op: Op | null, term = 1): LogEntry => ({ term, index, nowMs: 0, op, origin: asPeerId('n1'), incarnation: 1, requestId: null });

  it('names the last entry touching a key, a flush touching all; truncation and compaction forget', () => {
    const log = new EntryLog(true);
    log.append([entry(1, set('a', '1')), entry(2, set('b', '1')), entry(3, null), entry(4, set('a', '2'))]);
    expect(log.lastIndexTouching(['a'])).toBe(4);
    expect(log.lastIndexTouching(['b'])).toBe(2);
    expect(log.lastIndexTouching(['c'])).toBe(0);
    expect(log.lastIndexTouching(['b', 'a'])).toBe(4);
    log.truncateFrom(4);
    expect(log.lastIndexTouching(['a'])).toBe(1);
    log.append([entry(4, { kind: 'flush_all', delayMs: 0 }, 2)]);
    expect(log.lastIndexTouching(['c'])).toBe(4);
    log.compactTo(2);
    expect(log.lastIndexTouching(['b'])).toBe(4);
  });
});

/** An event without its time (the trio adds it). */
/** Three machines with a leader elected and `k` set to `v` everywhere. */
function trioHoldingK(): { trio: Trio; leader: PeerId } {
  const trio = new Trio();
  trio.run(1_000);
  const leader = trio.leader();
  trio.request(leader, set('k', 'v'));
  trio.run(100);
  return { trio, leader };
}

describe('read leases on three machines', () => {
  it('every node reads under its lease at once, without a read-index message', () => {
    const { trio } = trioHoldingK();
    for (const id of IDS) {
      const requestId = trio.request(id, get('k'));
      expect(trio.replies.get(requestId)?.kind, id).toBe('read');
      expect(trio.machine(id).readsLocally?.(trio.nowMs, 999, { keys: ['k'], appliesDone: true }), id).toBe(true);
      expect(trio.machine(id).readsLocally?.(trio.nowMs, 999, { keys: ['k'], appliesDone: false }), id).toBe(false);
    }
  });

  it('a write waits for a cut-off holder until its lease is out, at most a guard after its last ask', () => {
    const trio = new Trio();
    trio.run(1_000);
    const leader = trio.leader();
    const holder = IDS.find((id) => id !== leader) as PeerId;
    trio.cut.add(holder);
    const requestId = trio.request(leader, set('k', 'v'));
    trio.run(100);
    expect(trio.replies.has(requestId)).toBe(false);
    trio.run(leaseGuardMs(LEASES) + 50);
    expect(trio.replies.get(requestId)?.kind).toBe('apply');
  });

  it('a new leader commits nothing without the old leader until a full guard after its election', () => {
    const trio = new Trio();
    trio.run(1_000);
    const old = trio.leader();
    trio.cut.add(old);
    let electedMs = 0;
    while (electedMs === 0) {
      trio.run(10);
      if (IDS.some((id) => id !== old && trio.machine(id).inspect().role === 'leader')) electedMs = trio.nowMs;
    }
    const leader = trio.leader();
    const committedAtElection = trio.machine(leader).inspect().commitIndex;
    trio.run(leaseGuardMs(LEASES) - 30);
    expect(trio.machine(leader).inspect().commitIndex).toBe(committedAtElection);
    trio.run(60);
    expect(trio.machine(leader).inspect().commitIndex).toBeGreaterThan(committedAtElection);
  });

  it('a later read of a connection is not answered before an earlier one still waiting, though a lease would allow it', () => {
    const { trio, leader } = trioHoldingK();
    // The followers hear nothing for longer than the lease: the leader's lapses.
    for (const id of IDS) if (id !== leader) trio.cut.add(id);
    trio.run(220);
    trio.cut.clear();
    trio.queue = [];
    expect(trio.machine(leader).inspect().role).toBe('leader');
    expect(trio.machine(leader).readsLocally?.(trio.nowMs, 999, { keys: ['k'], appliesDone: true })).toBe(false);
    // A heartbeat leaves (it will renew the lease), then read 1 needs a read-index round.
    for (let tick = 0; tick < 10 && !trio.queue.some((sent) => sent.message.kind === 'append'); tick += 1) {
      trio.nowMs += 10;
      trio.step(leader, { kind: 'tick', peersUp: IDS });
    }
    const heartbeats = trio.queue.splice(0);
    const session = 77;
    const read = (requestId: number): void => {
      trio.step(leader, { kind: 'request', requestId: asRequestId(requestId), session, op: get('k') });
      trio.step(leader, { kind: 'flush' });
    };
    read(901);
    expect(trio.replies.get(901)).toBeUndefined();
    const round = trio.queue.splice(0);
    // The heartbeat's ack renews the lease, not read 1's round.
    const first = heartbeats.find((sent) => sent.message.kind === 'append');
    expect(first).toBeDefined();
    if (first !== undefined) trio.deliver(first.from, first.to, first.message);
    expect(trio.machine(leader).readsLocally?.(trio.nowMs, 999, { keys: ['k'], appliesDone: true })).toBe(true);
    // Read 2 on the same connection: the lease would serve it at once; it waits for read 1.
    expect(trio.machine(leader).readsLocally?.(trio.nowMs, session, { keys: ['k'], appliesDone: true })).toBe(false);
    read(902);
    expect(trio.replies.get(902)).toBeUndefined();
    // Read 1's round completes: read 1 is served, then read 2.
    for (const sent of round) trio.deliver(sent.from, sent.to, sent.message);
    const served = [...trio.replies.keys()].filter((id) => id === 901 || id === 902);
    expect(served).toEqual([901, 902]);
  });
});
