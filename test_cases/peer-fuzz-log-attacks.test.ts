/**
 * Each attack on the replicated log measured against earlier releases, replayed on its own so that
 * none comes back: junk bodies at a leader and at a follower, a second leader in the same term, an
 * append that would change a committed entry, an unknown op kind in an entry or in the records a
 * node restarts from. Each is dropped, counted and noted (at most once a second per peer), and the
 * machine's state is unchanged.
 */

import { describe, expect, it } from 'vitest';
import type { Effect, PeerId } from '../src/consistency/types.ts';
import type { LogMessage, ReplicatedLog } from '../src/consistency/replicated-log.ts';
import { applyToEntry, UNKNOWN_OP_REFUSAL, type SingleKeyOp } from '../src/store/apply.ts';
import { deepCopy } from './support/junk.ts';
import { itemAt } from '../src/runtime/item-at.ts';
import { expectDropped, IDS, LogCluster, machineInRole, notes, set, T0 } from './support/peer-fuzz-kit.ts';

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
