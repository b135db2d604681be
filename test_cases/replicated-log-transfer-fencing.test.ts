/**
 * State transfers that arrive late must not undo what the start-over path relies on (found by
 * review, driven here by hand through one machine):
 * - a follower that told its leader it has no replica, after seeing the leader's replica epoch
 *   grow, refuses a chunk read before that, even after a restart in the same term;
 * - a leader that started over refuses a peer's chunk read before that peer lost its replica;
 * - a transfer descending from a start-over never answers stored a write committed at or before
 *   the start-over's index (every replica lost it), and the index survives a restart;
 * - a node that stood for election and lost follows the new term's leader by that leader's epochs,
 *   not by the higher one of the last term's leader (found by a whole-cluster restart with every
 *   memcached emptied: its asks never counted, so nobody started over and no replica served);
 * - a peer whose log runs past the leader's snapshot but refused an append at it lacks the
 *   snapshot's entry and counts towards a start-over as one whose log ends before it (found by
 *   simulate(1, 'sequential') with every replica lost twice and message faults: a peer whose log
 *   was never compacted replayed it onto its emptied replica, so it never asked, and the leader
 *   waited for it forever).
 */

import { describe, expect, it } from 'vitest';
import type { LogMessage } from '../src/consistency/log/types.ts';
import type { Op } from '../src/store/types.ts';
import { asRequestId, type Effect } from '../src/consistency/types.ts';
import {
  FAILURE_TIMEOUT_MS, N1, N2, N3, Node, chunk, chunksSent, electedLeader, heartbeat, installed, snapshot, startedOverLeader, transferAsk,
} from './support/transfer-kit.ts';

const set: Op = { kind: 'store', verb: 'set', key: 'k', flags: 0, expiresAtMs: 0, value: Buffer.from('v'), casUnique: 0n };

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
    const leader = electedLeader();
    expect(leader.machine.inspect().role).toBe('leader');
    const epoch = 1;
    leader.receive(20, N2, { kind: 'transfer_request', term: 2, minIndex: 10, emptied: true, replicaEpoch: epoch });
    const startedOver = leader.receive(5, N3, { kind: 'transfer_request', term: 2, minIndex: 15, emptied: true, replicaEpoch: epoch });
    expect(startedOver).toContainEqual(expect.objectContaining({ kind: 'note', message: expect.stringMatching(/starting over/) }));
    expect(installed(leader.receive(5, N3, chunk(20, 0)))).toBe(false);
    expect(leader.machine.inspect()).toMatchObject({ appliedIndex: 10, snapshotIndex: 10 });
  });

  it('a leader that started over says so in the transfers it serves, also after a restart', () => {
    const leader = startedOverLeader();
    leader.step(0, { kind: 'applied', token: 1 });
    for (const restart of [false, true]) {
      if (restart) {
        leader.restart();
        leader.step(2 * FAILURE_TIMEOUT_MS + 1, { kind: 'tick', peersUp: [N2, N3] });
        leader.receive(0, N2, { kind: 'pre_vote_reply', term: 3, granted: true });
        leader.receive(0, N2, { kind: 'vote_reply', term: 3, granted: true });
        // It replays its log onto the kept replica first: serves no transfer until the new term's no-op is applied.
        leader.step(0, { kind: 'flush' });
        const lastIndex = leader.machine.inspect().lastIndex;
        leader.receive(1, N2, {
          kind: 'append_reply', term: 3, success: true, matchIndex: lastIndex, hintIndex: 0, round: 0, seq: 0, commitIndex: 10,
        });
        expect(leader.machine.inspect().appliedIndex).toBe(lastIndex);
      }
      const ask: LogMessage = { kind: 'transfer_request', term: restart ? 3 : 2, minIndex: 10, emptied: true, replicaEpoch: 1 };
      const asked = leader.receive(5, N2, ask);
      const fetch = asked.find((effect) => effect.kind === 'fetch');
      expect(fetch).toBeDefined();
      const sent = chunksSent(leader.step(1, { kind: 'fetched', token: (fetch as { token: number }).token, entries: [] }));
      expect(sent.length).toBeGreaterThan(0);
      for (const chunk of sent) expect(chunk.startOverIndex).toBe(10);
    }
  });

  it('a follower installing a transfer refuses its own write committed at or before the start-over, and answers one after it', () => {
    for (const startOverIndex of [11, 10]) {
      const follower = new Node(N2, [{ ...(snapshot(2, N1) as object), replicaTrusted: true, replicaEmptied: false }]);
      follower.receive(0, N1, heartbeat(1, 0));
      expect(follower.machine.inspect().caughtUp).toBe(true);
      const requestId = asRequestId(1);
      follower.step(1, { kind: 'request', requestId, session: 1, op: set });
      follower.step(0, { kind: 'flush' });
      // The leader appends it at 11; the follower's memcached restarts empty before it is committed.
      const entry = { term: 2, index: 11, nowMs: follower.nowMs, op: set, origin: N2, incarnation: 2, requestId };
      follower.receive(1, N1, { ...(heartbeat(2, 0) as Extract<LogMessage, { kind: 'append' }>), entries: [entry] });
      follower.step(1, { kind: 'backend_reset', emptied: true });
      const chunk: LogMessage = { kind: 'transfer_chunk', term: 2, replicaEpoch: 1, startOverIndex, transferId: 9, index: 11, indexTerm: 2,
        chunkNumber: 0, chunkCount: 1, entries: [] };
      const effects = follower.receive(5, N1, chunk);
      expect(installed(effects)).toBe(true);
      const reply = effects.find((effect) => effect.kind === 'reply' && effect.requestId === requestId);
      if (startOverIndex === 11) expect(reply).toMatchObject({ reply: { kind: 'refused', reason: 'result_unknown' } });
      else expect(reply).toMatchObject({ reply: { kind: 'stored', cas: 11n } });
    }
  });

  it('a chunk naming a start-over after its own index is dropped at the edge; one naming none (an older peer) is installed', () => {
    const follower = new Node(N2, [snapshot(2, N1)]);
    follower.receive(0, N1, heartbeat(1, 0));
    const before = follower.machine.status().invalidPeerMessages;
    expect(installed(follower.receive(5, N1, { ...(chunk(10, 0) as object), startOverIndex: 11 } as LogMessage))).toBe(false);
    expect(follower.machine.status().invalidPeerMessages).toBe(before + 1);
    expect(installed(follower.receive(5, N1, chunk(10, 0)))).toBe(true);
  });

  it('a node that lost an election follows the new leader by its epochs, not the last term\'s leader\'s', () => {
    const node = new Node(N2, [snapshot(2, N1)]);
    // The leader of term 2 lost its replica three times; this follower saw it.
    node.receive(0, N1, heartbeat(1, 3));
    expect(node.machine.inspect().replicaValid).toBe(false);
    // It hears no leader, stands for term 3 and loses: N3 leads term 3, whose replica epoch is 1.
    node.step(2 * FAILURE_TIMEOUT_MS + 1, { kind: 'tick', peersUp: [N1, N3] });
    node.receive(0, N1, { kind: 'pre_vote_reply', term: 3, granted: true });
    expect(node.machine.inspect()).toMatchObject({ role: 'candidate', term: 3 });
    const append: LogMessage = { ...(heartbeat(2, 1) as object), term: 3 } as LogMessage;
    node.receive(5, N3, append);
    expect(node.machine.inspect()).toMatchObject({ role: 'follower', term: 3, leader: N3 });
    // Its asks name the epoch it saw from N3, so N3 counts them towards a start-over.
    const asked = node.step(FAILURE_TIMEOUT_MS, { kind: 'tick', peersUp: [N1, N3] });
    expect(asked).toContainEqual(expect.objectContaining({ kind: 'send', to: N3, message: expect.objectContaining({ kind: 'transfer_request', term: 3, replicaEpoch: 1 }) }));
    // And N3's transfer of epoch 1 is installed.
    expect(installed(node.receive(5, N3, { ...(chunk(10, 1) as object), term: 3 } as LogMessage))).toBe(true);
  });

  it('a peer whose log runs past the snapshot counts as lost once it refused an append at it, not before', () => {
    const startsOver = (effects: Effect<LogMessage>[]): boolean =>
      effects.some((effect) => effect.kind === 'note' && /starting over/.test(effect.message));
    const lastAppendSeq = (effects: Effect<LogMessage>[]): number => {
      const appends = effects.flatMap((effect) => (effect.kind === 'send' && effect.to === N3 && effect.message.kind === 'append' ? [effect.message] : []));
      const last = appends.at(-1);
      if (last === undefined) throw new Error('no append to N3');
      return last.seq;
    };
    // N1 leads term 2 at snapshot 10 with its replica lost (epoch 1); N2 lost its replica too and asks.
    const leader = electedLeader();
    expect(startsOver(leader.receive(5, N2, transferAsk))).toBe(false);
    // N3's log was never compacted: it replayed it onto its emptied replica, so it asks for nothing.
    // Its log (to 15) is of another history from index 1: it refuses every append.
    const refusal = (seq: number): LogMessage => ({
      kind: 'append_reply', term: 2, success: false, matchIndex: 0, hintIndex: 1, round: 0, seq, commitIndex: 0, replicaEpoch: 1, lastIndex: 15,
    });
    // Its refusal of the first append, sent at the log's end (above the snapshot), proves nothing of the snapshot.
    const first = lastAppendSeq(leader.step(50, { kind: 'tick', peersUp: [N2, N3] }));
    leader.receive(5, N3, refusal(first));
    const atSnapshot = leader.step(50, { kind: 'tick', peersUp: [N2, N3] });
    expect(startsOver(atSnapshot)).toBe(false);
    // The next goes at the snapshot: refused, N3 lacks the snapshot's entry, and nobody holds a replica.
    expect(atSnapshot).toContainEqual(expect.objectContaining({ kind: 'send', to: N3, message: expect.objectContaining({ kind: 'append', prevIndex: 10 }) }));
    leader.receive(5, N3, refusal(lastAppendSeq(atSnapshot)));
    expect(startsOver(leader.step(50, { kind: 'tick', peersUp: [N2, N3] }))).toBe(true);
    expect(leader.machine.inspect()).toMatchObject({ replicaValid: true, appliedIndex: 10 });
  });
});
