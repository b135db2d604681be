/**
 * Eventual mode, the way of one write. Last writer wins is only as good as its versions, so the
 * hybrid logical clock must move strictly forward whatever the wall clock does; then serving
 * requests (held until the start-up fetch, dirty fetches, paced pushes, status), merging pushes to
 * the greatest version in every arrival order (malformed messages and strangers dropped), and the
 * bounds on push batches and queues.
 */

import { describe, expect, it } from 'vitest';
import { createEventual, type EventualMessage } from '../src/consistency/eventual.ts';
import { BUCKET_COUNT } from '../src/consistency/eventual/digest.ts';
import { PushQueues } from '../src/consistency/eventual/push.ts';
import {
  compareHlc,
  HLC_COUNTER_MAX,
  HLC_ZERO,
  mergeHlc,
  packVersion,
  tickHlc,
  unpackVersion,
  type Hlc,
} from '../src/consistency/hlc.ts';
import { asPeerId, asRequestId, type KeyedEntry } from '../src/consistency/types.ts';
import type { Entry } from '../src/store/types.ts';
import { mulberry32 } from './support/eventual-sim.ts';
import { itemAt } from '../src/runtime/item-at.ts';
import { boot, entry, firstOfKind, machine, message, N1, N2, N3, ofKind, sent, setOp, T0, tombstone } from './support/eventual-kit.ts';

describe('hybrid logical clock', () => {
  it('ticks strictly forward whatever the wall clock does', () => {
    const random = mulberry32(42);
    let clock: Hlc = HLC_ZERO;
    let version = -1n;
    for (let i = 0; i < 5000; i += 1) {
      const nowMs = T0 + Math.floor(random() * 50) - (i % 7 === 0 ? 1000 : 0);
      const next = tickHlc(clock, nowMs);
      expect(compareHlc(next, clock)).toBeGreaterThan(0);
      const packed = packVersion(next, 2);
      expect(packed).toBeGreaterThan(version);
      clock = next;
      version = packed;
    }
  });

  it('follows the wall clock when it moves ahead, counts within a millisecond', () => {
    expect(tickHlc({ physicalMs: T0, counter: 9 }, T0 + 5)).toEqual({ physicalMs: T0 + 5, counter: 0 });
    expect(tickHlc({ physicalMs: T0, counter: 9 }, T0)).toEqual({ physicalMs: T0, counter: 10 });
    expect(tickHlc({ physicalMs: T0, counter: HLC_COUNTER_MAX }, T0)).toEqual({ physicalMs: T0 + 1, counter: 0 });
  });

  it('merges to the later clock, so the next tick passes every version seen', () => {
    const local = { physicalMs: T0, counter: 3 };
    const remote = { physicalMs: T0 + 500, counter: 7 };
    expect(mergeHlc(local, remote)).toEqual(remote);
    expect(mergeHlc(remote, local)).toEqual(remote);
    const next = tickHlc(mergeHlc(local, remote), T0 + 1);
    expect(packVersion(next, 0)).toBeGreaterThan(packVersion(remote, 15));
  });

  it('packs (clock, node index) into one order-preserving bigint and back', () => {
    const clock = { physicalMs: T0 + 123, counter: 456 };
    const version = packVersion(clock, 5);
    expect(version).toBe(((BigInt(T0 + 123) << 16n | 456n) << 4n) | 5n);
    expect(unpackVersion(version)).toEqual({ clock, nodeIndex: 5 });
    expect(packVersion(clock, 1)).toBeLessThan(packVersion(clock, 2));
    expect(version).toBeLessThan(2n ** 64n);
    expect(() => packVersion(clock, 16)).toThrow(RangeError);
  });
});

describe('serving requests', () => {
  it('turns a write into an apply with a fresh version (no token: nothing waits for it), a get into a read', () => {
    const m = machine(N2);
    boot(m);
    const write = m.step({ kind: 'request', nowMs: T0 + 20, requestId: asRequestId(1), session: 1, op: setOp('a', 'x') });
    const apply = firstOfKind(write, 'apply');
    expect(apply.requestId).toBe(1);
    expect(apply.token).toBeNull();
    expect(apply.nowMs).toBe(T0 + 20);
    expect(unpackVersion(apply.cas)).toEqual({ clock: { physicalMs: T0 + 20, counter: 0 }, nodeIndex: 1 });
    expect(ofKind(write, 'fetch')).toEqual([expect.objectContaining({ keys: ['a'] })]);
    const read = m.step({ kind: 'request', nowMs: T0 + 21, requestId: asRequestId(2), session: 1, op: { kind: 'get', keys: ['a'] } });
    expect(read).toEqual([{ kind: 'read', requestId: 2, op: { kind: 'get', keys: ['a'] }, nowMs: T0 + 21 }]);
  });

  it('holds requests until the start-up fetch has returned, then outversions what the replica holds', () => {
    const m = machine();
    const future = packVersion({ physicalMs: T0 + 60_000, counter: 0 }, 2);
    expect(m.readsLocally()).toBe(false);
    const first = m.step({ kind: 'request', nowMs: T0, requestId: asRequestId(1), session: 1, op: setOp('a', 'x') });
    expect(ofKind(first, 'apply')).toEqual([]);
    expect(m.readsLocally()).toBe(false); // a get now would be held too, not read
    const rebuild = firstOfKind(first, 'fetch');
    const released = m.step({ kind: 'fetched', nowMs: T0 + 1, token: rebuild.token, entries: [['a', entry('old', future)]] });
    const apply = firstOfKind(released, 'apply');
    expect(apply.cas).toBeGreaterThan(future);
    expect(m.readsLocally()).toBe(true);
  });

  it('keeps one dirty fetch outstanding and batches the keys written meanwhile', () => {
    const m = machine(N1, { pushIntervalMs: 1 });
    boot(m);
    const out1 = m.step({ kind: 'request', nowMs: T0 + 5, requestId: asRequestId(1), session: 1, op: setOp('a', '1') });
    const out2 = m.step({ kind: 'request', nowMs: T0 + 6, requestId: asRequestId(2), session: 1, op: setOp('b', '2') });
    const out3 = m.step({ kind: 'request', nowMs: T0 + 7, requestId: asRequestId(3), session: 1, op: setOp('c', '3') });
    const fetch1 = firstOfKind(out1, 'fetch');
    expect(ofKind(out2, 'fetch')).toEqual([]);
    expect(ofKind(out3, 'fetch')).toEqual([]);
    const casA = firstOfKind(out1, 'apply').cas;
    const after = m.step({ kind: 'fetched', nowMs: T0 + 8, token: fetch1.token, entries: [['a', entry('1', casA)]] });
    expect(ofKind(after, 'fetch').map((f) => f.keys)).toEqual([['b', 'c']]);
    const pushes = sent(after, 'push');
    expect(pushes.map((p) => p.to).sort()).toEqual([N2, N3]);
    expect(itemAt(pushes, 0).message.entries).toEqual([['a', entry('1', casA)]]);
  });

  it('paces pushes: writes within pushIntervalMs of the last fetch wait for one wake-up and go together', () => {
    const m = machine(N1, { pushIntervalMs: 2 });
    boot(m);
    const out1 = m.step({ kind: 'request', nowMs: T0 + 5, requestId: asRequestId(1), session: 1, op: setOp('a', '1') });
    const fetch1 = firstOfKind(out1, 'fetch');
    expect(fetch1.keys).toEqual(['a']); // the first write after a quiet interval goes at once
    const out2 = m.step({ kind: 'request', nowMs: T0 + 5.5, requestId: asRequestId(2), session: 1, op: setOp('b', '2') });
    expect(ofKind(out2, 'fetch')).toEqual([]);
    expect(ofKind(out2, 'wake')).toEqual([]); // the first fetch is still out
    const casA = firstOfKind(out1, 'apply').cas;
    const fetched = m.step({ kind: 'fetched', nowMs: T0 + 6, token: fetch1.token, entries: [['a', entry('1', casA)]] });
    expect(sent(fetched, 'push')).toHaveLength(2);
    expect(ofKind(fetched, 'fetch')).toEqual([]);
    expect(ofKind(fetched, 'wake')).toEqual([{ kind: 'wake', afterMs: 1 }]);
    const out3 = m.step({ kind: 'request', nowMs: T0 + 6.5, requestId: asRequestId(3), session: 1, op: setOp('c', '3') });
    expect(ofKind(out3, 'fetch')).toEqual([]);
    expect(ofKind(out3, 'wake')).toEqual([]); // the one asked for is still pending
    expect(ofKind(m.step({ kind: 'flush', nowMs: T0 + 6.9 }), 'fetch')).toEqual([]);
    const woken = m.step({ kind: 'flush', nowMs: T0 + 7 });
    expect(ofKind(woken, 'fetch').map((f) => f.keys)).toEqual([['b', 'c']]);
  });

  it('hands everything over when stopping: read back at once, unpaced, and sent past the window', () => {
    const m = machine(N1, { pushIntervalMs: 50, windowBatchesMax: 1, batchEntriesMax: 1 });
    boot(m, [], [N2]);
    const out1 = m.step({ kind: 'request', nowMs: T0 + 5, requestId: asRequestId(1), session: 1, op: setOp('a', '1') });
    const fetch1 = firstOfKind(out1, 'fetch');
    const out2 = m.step({ kind: 'request', nowMs: T0 + 6, requestId: asRequestId(2), session: 1, op: setOp('b', '2') });
    const out3 = m.step({ kind: 'request', nowMs: T0 + 7, requestId: asRequestId(3), session: 1, op: setOp('c', '3') });
    const [casA, casB, casC] = [out1, out2, out3].map((out) => firstOfKind(out, 'apply').cas);
    const first = m.step({ kind: 'fetched', nowMs: T0 + 8, token: fetch1.token, entries: [['a', entry('1', casA as bigint)]] });
    expect(sent(first, 'push').map((push) => push.to)).toEqual([N2]); // N3 is down: nothing queues for it
    expect(ofKind(first, 'fetch')).toEqual([]); // b and c wait for the next interval
    expect(m.handingOver()).toBe(false); // not stopping
    const stopping = m.step({ kind: 'stopping', nowMs: T0 + 9 });
    expect(ofKind(stopping, 'fetch').map((fetch) => fetch.keys)).toEqual([['b', 'c']]);
    expect(m.handingOver()).toBe(true);
    const token = firstOfKind(stopping, 'fetch').token;
    const last = m.step({ kind: 'fetched', nowMs: T0 + 10, token, entries: [['b', entry('2', casB as bigint)], ['c', entry('3', casC as bigint)]] });
    // One entry a batch and a window of one, a not yet acked: both go anyway, to the peer up.
    expect(sent(last, 'push').map((push) => [push.to, push.message.entries.map(([key]) => key)])).toEqual([[N2, ['b']], [N2, ['c']]]);
    expect(m.handingOver()).toBe(false);
  });

  it('reports status as a peer with the HLC and index size', () => {
    const m = machine();
    boot(m, [['a', entry('1', 5n)], ['b', entry('2', 6n)]]);
    const status = createEventual({
      self: N1, peers: [N2, N3], random: () => 0.5, heartbeatIntervalMs: 100, failureTimeoutMs: 400, persisted: [], nowMs: T0,
    }).status();
    expect(status).toMatchObject({ mode: 'eventual', role: 'peer', term: 0, leader: null, applied: '0', queueDepth: 0 });
    expect(m.status()).toMatchObject({ role: 'peer', applied: '2', committed: `${T0}.0` });
  });

  it('forgets what a read of every key lacks, in slices, when the index held keys before it', () => {
    // The start-up read over an empty index keeps no set of the keys it returned; a read of every
    // key after a flush_all must, or the index goes on claiming keys memcached no longer holds.
    const m = machine(N1, { pushIntervalMs: 1 });
    boot(m, [['a', entry('1', 5n)], ['b', entry('2', 6n)], ['c', entry('3', 7n)]]);
    const flushed = m.step({ kind: 'request', nowMs: T0 + 5, requestId: asRequestId(1), session: 1, op: { kind: 'flush_all', delayMs: 0 } });
    const readAll = firstOfKind(flushed, 'fetch');
    expect(readAll.keys).toBeNull();
    m.step({ kind: 'fetched', nowMs: T0 + 6, token: readAll.token, entries: [['b', entry('2', 6n)]], more: true });
    expect(m.status()).toMatchObject({ applied: '3' }); // nothing is forgotten before the last slice
    m.step({ kind: 'fetched', nowMs: T0 + 7, token: readAll.token, entries: [] });
    expect(m.status()).toMatchObject({ applied: '1' });
  });
});

describe('last writer wins', () => {
  const versions = [
    entry('first', packVersion({ physicalMs: T0, counter: 1 }, 0)),
    entry('second', packVersion({ physicalMs: T0, counter: 1 }, 2)),
    entry('third', packVersion({ physicalMs: T0 + 3, counter: 0 }, 1)),
    tombstone(packVersion({ physicalMs: T0 + 2, counter: 9 }, 0)),
  ];
  const permutations = <T>(items: T[]): T[][] =>
    items.length <= 1
      ? [items]
      : items.flatMap((item, i) => permutations([...items.slice(0, i), ...items.slice(i + 1)]).map((rest) => [item, ...rest]));

  it('ends with the greatest version in every arrival order', () => {
    const results = new Set<string>();
    for (const order of permutations(versions)) {
      const m = machine(N3);
      boot(m);
      const replica = new Map<string, Entry>();
      order.forEach((item, i) => {
        const out = m.step(message(i % 2 === 0 ? N1 : N2, { kind: 'push', batch: i, entries: [['k', item]] }));
        for (const put of ofKind(out, 'put')) {
          expect(put.how).toBe('merge');
          for (const [key, incoming] of put.entries) {
            const current = replica.get(key);
            if (current === undefined || current.cas < incoming.cas) replica.set(key, incoming);
          }
        }
      });
      expect(m.indexEntry('k')?.version).toBe(itemAt(versions, 2).cas);
      results.add(`${replica.get('k')?.value.toString()}@${replica.get('k')?.cas}`);
    }
    expect([...results]).toEqual([`third@${itemAt(versions, 2).cas}`]);
  });

  it('acks a push once its put is applied, and moves the clock past the versions received', () => {
    const m = machine();
    boot(m);
    const remote = packVersion({ physicalMs: T0 + 90_000, counter: 4 }, 1);
    const expiring = entry('e', remote - 1n, { expiresAtMs: T0 + 60_000 });
    const entries: KeyedEntry[] = [['k', entry('v', remote)], ['gone', tombstone(remote - 2n)], ['ttl', expiring]];
    const out = m.step(message(N2, { kind: 'push', batch: 17, entries }));
    const put = firstOfKind(out, 'put');
    expect(sent(out, 'push_ack')).toEqual([]);
    const acked = m.step({ kind: 'applied', nowMs: T0 + 11, token: put.token ?? -1 });
    // Only what may be collected one day (a tombstone, an expiring entry) is listed.
    const versions = [['gone', remote - 2n], ['ttl', remote - 1n]];
    expect(sent(acked, 'push_ack')).toEqual([{ to: N2, message: { kind: 'push_ack', batch: 17, versions } }]);
    const write = m.step({ kind: 'request', nowMs: T0 + 12, requestId: asRequestId(1), session: 1, op: setOp('k', 'mine') });
    expect(firstOfKind(write, 'apply').cas).toBeGreaterThan(remote);
  });

  it('drops malformed messages and messages from strangers', () => {
    const m = machine();
    boot(m);
    const garbage: unknown[] = [
      null, 'push', { kind: 'push', batch: 1, entries: 'x' }, { kind: 'push', batch: 1, entries: [['k', { value: 'not a buffer', cas: 1n }]] },
      { kind: 'ae_groups', round: 1, groups: [1, 2] }, { kind: 'nope' }, { kind: 'ae_keys', round: 1, buckets: [BUCKET_COUNT], versions: [] },
    ];
    // Dropped and counted; one note per peer (rate-limited), nothing else.
    const effects = garbage.flatMap((body) => m.step(message(N2, body as EventualMessage)));
    expect(effects).toEqual([expect.objectContaining({ kind: 'note', level: 'warn', meta: expect.objectContaining({ peer: N2 }) })]);
    const stranger = m.step(message(asPeerId('n9'), { kind: 'push', batch: 1, entries: [['k', entry('v', 5n)]] }));
    expect(stranger.map((effect) => effect.kind)).toEqual(['note']);
    expect(m.status().invalidPeerMessages).toBe(garbage.length + 1);
  });
});

describe('bounds', () => {
  it('caps push batches by entries and bytes, and unacked batches by the window', () => {
    const queues = new PushQueues([N2], {
      batchEntriesMax: 10, batchBytesMax: 1000, queueEntriesMax: 100, queueBytesMax: 1e9, windowBatchesMax: 2, ackTimeoutMs: 500,
    });
    for (let i = 0; i < 150; i += 1) queues.enqueue(N2, `k${i}`, entry('x'.repeat(i === 3 ? 5000 : 10), BigInt(i + 1)));
    expect(queues.depth()).toBe(100);
    expect(queues.dropped).toBe(50);
    const batches = queues.drain(N2, T0);
    expect(batches.map((b) => b.entries.length)).toEqual([3, 1]);
    expect(queues.drain(N2, T0)).toEqual([]);
    queues.onAck(N2, itemAt(batches, 0).batch);
    expect(queues.drain(N2, T0).map((b) => b.entries.length)).toEqual([10]);
    queues.expire(T0 + 500);
    expect(queues.drain(N2, T0 + 500).length).toBe(2);
  });

  it('keeps the greater version of a key queued twice', () => {
    const queues = new PushQueues([N2], {
      batchEntriesMax: 10, batchBytesMax: 1e6, queueEntriesMax: 10, queueBytesMax: 1e6, windowBatchesMax: 1, ackTimeoutMs: 500,
    });
    queues.enqueue(N2, 'k', entry('new', 9n));
    queues.enqueue(N2, 'k', entry('old', 3n));
    expect(itemAt(queues.drain(N2, T0), 0).entries).toEqual([['k', entry('new', 9n)]]);
  });

  it('drops a queued write superseded before its peer came back, and keeps the current ones', () => {
    const m = machine(N1);
    boot(m, [], [N3]);
    const writeAt = (key: string, nowMs: number): bigint => {
      const write = m.step({ kind: 'request', nowMs, requestId: asRequestId(nowMs), session: 1, op: setOp(key, 'old') });
      const fetch = firstOfKind(write, 'fetch');
      const cas = firstOfKind(write, 'apply').cas;
      m.step({ kind: 'fetched', nowMs: nowMs + 1, token: fetch.token, entries: [[key, entry('old', cas)]] });
      return cas;
    };
    const superseded = writeAt('a', T0 + 20);
    const kept = writeAt('b', T0 + 60);
    // N3 writes `a` later; merged here, it supersedes what still waits for N2.
    const merged = m.step(message(N3, { kind: 'push', batch: 5, entries: [['a', entry('newer', superseded + 16n)]] }, T0 + 100));
    m.step({ kind: 'applied', nowMs: T0 + 101, token: firstOfKind(merged, 'put').token ?? -1 });
    const back = m.step({ kind: 'tick', nowMs: T0 + 200, peersUp: [N2, N3] });
    const toN2 = sent(back, 'push').filter((push) => push.to === N2);
    expect(toN2.flatMap((push) => push.message.entries.map(([key, queued]) => `${key}@${queued.cas}`))).toEqual([`b@${kept}`]);
  });

  it('sends no pushes to a peer that is down, and reports them as queued', () => {
    const m = machine(N1);
    boot(m, [], [N3]);
    const write = m.step({ kind: 'request', nowMs: T0 + 20, requestId: asRequestId(1), session: 1, op: setOp('a', 'x') });
    const fetch = firstOfKind(write, 'fetch');
    const cas = firstOfKind(write, 'apply').cas;
    const out = m.step({ kind: 'fetched', nowMs: T0 + 21, token: fetch.token, entries: [['a', entry('x', cas)]] });
    expect(sent(out, 'push').map((p) => p.to)).toEqual([N3]);
    expect(m.status().queueDepth).toBe(1);
  });
});
