/**
 * Scenario tests of the replicated log on the network of support/log-cluster.ts, across restarts
 * and lost state: a node rebuilt from its records, compaction and state transfer to a follower
 * left behind, replay onto a kept replica that skips what it already applied (and the Replica
 * option behind it), and backends that come back empty or untrusted.
 */

import { describe, expect, it } from 'vitest';
import { asRequestId, type Effect, type PeerId } from '../src/consistency/types.ts';
import type { LogMessage } from '../src/consistency/replicated-log.ts';
import { MemoryBackend } from '../src/store/memory.ts';
import { Replica } from '../src/store/replica.ts';
import { itemAt } from '../src/runtime/item-at.ts';
import { exactly } from './support/must.ts';
import { Cluster, compactedPastLaggingFollower, electedCluster, FAILURE_TIMEOUT_MS, followers, get, IDS, incr, set } from './support/log-cluster.ts';

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

  it('writes held when the backend restarted empty: a committed plain set is STORED, one whose result depended on the replica is not told', () => {
    const { cluster, leader } = compactedCluster();
    // Its applies at the leader fail (the controller holds their replies), then its memcached restarts empty.
    cluster.applyTimesOut = (id) => id === leader;
    const plain = asRequestId(cluster.request(leader, set('s', 'v')).requestId);
    const counted = asRequestId(cluster.request(leader, incr('n')).requestId);
    cluster.run(100);
    cluster.applyTimesOut = () => false;
    cluster.node(leader).replica.clear();
    const effects = cluster.step(leader, { kind: 'backend_reset', nowMs: cluster.nowMs, emptied: true, awaiting: [plain, counted, asRequestId(9_999)] });
    const replies = new Map(effects.flatMap((effect) => (effect.kind === 'reply' ? [[effect.requestId, effect.reply] as const] : [])));
    expect(replies.get(plain)).toMatchObject({ kind: 'stored' });
    expect(replies.get(counted)).toMatchObject({ kind: 'refused', reason: 'backend', detail: expect.stringMatching(/^write outcome unknown/) });
    expect(replies.get(asRequestId(9_999))).toMatchObject({ kind: 'refused', reason: 'backend' });
    cluster.run(1_500);
    for (const id of IDS) expect(cluster.node(id).replica.get('s')?.value.toString()).toBe('v');
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
