/**
 * Unit tests of eventual mode: the hybrid logical clock, last-writer-wins merging in any
 * arrival order, the digest index and the anti-entropy descent, tombstone collection (only once
 * every peer holds the tombstone), bounds, start-up and resets.
 */

import { describe, expect, it } from 'vitest';
import { createEventual, EventualMachine, type EventualMessage } from '../src/consistency/eventual.ts';
import {
  BUCKET_COUNT,
  bucketOfKey,
  BUCKETS_PER_GROUP,
  GROUP_COUNT,
  groupOfBucket,
  hashKeyVersion,
  VersionIndex,
} from '../src/consistency/eventual/digest.ts';
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
import {
  asPeerId,
  asRequestId,
  type Effect,
  type Event,
  type KeyedEntry,
  type PeerId,
} from '../src/consistency/types.ts';
import type { EventualTuning } from '../src/consistency/eventual/tuning.ts';
import { purgeRemoves } from '../src/store/apply.ts';
import type { Entry, Op } from '../src/store/types.ts';
import { mulberry32 } from './support/eventual-sim.ts';
import { itemAt } from '../src/runtime/item-at.ts';
import { must } from './support/must.ts';

const T0 = 1_700_000_000_000;
const N1 = asPeerId('n1');
const N2 = asPeerId('n2');
const N3 = asPeerId('n3');
const ALL = [N1, N2, N3];

type Out = Effect<EventualMessage>[];

function machine(self: PeerId = N1, tuning: Partial<EventualTuning> = {}): EventualMachine {
  return new EventualMachine(
    {
      self,
      peers: ALL.filter((id) => id !== self),
      random: mulberry32(7),
      heartbeatIntervalMs: 100,
      failureTimeoutMs: 400,
      persisted: [],
      nowMs: T0,
    },
    tuning,
  );
}

const entry = (value: string, cas: bigint, extra: Partial<Entry> = {}): Entry => ({
  value: Buffer.from(value),
  flags: 0,
  expiresAtMs: 0,
  cas,
  ...extra,
});

const tombstone = (cas: bigint): Entry => ({ value: Buffer.alloc(0), flags: 0, expiresAtMs: 0, cas, tombstone: true });

const setOp = (key: string, value: string): Op => ({
  kind: 'store', verb: 'set', key, flags: 0, expiresAtMs: 0, value: Buffer.from(value), casUnique: 0n,
});

function ofKind<K extends Effect<EventualMessage>['kind']>(out: Out, kind: K): Array<Extract<Effect<EventualMessage>, { kind: K }>> {
  return out.filter((effect): effect is Extract<Effect<EventualMessage>, { kind: K }> => effect.kind === kind);
}

/** The first effect of `kind` in `out`, which the test expects to be there. */
function firstOfKind<K extends Effect<EventualMessage>['kind']>(out: Out, kind: K): Extract<Effect<EventualMessage>, { kind: K }> {
  return must(ofKind(out, kind)[0], `a ${kind} effect`);
}

function sent<K extends EventualMessage['kind']>(out: Out, kind: K): Array<{ to: PeerId; message: Extract<EventualMessage, { kind: K }> }> {
  return ofKind(out, 'send')
    .filter((effect) => effect.message.kind === kind)
    .map((effect) => ({ to: effect.to, message: effect.message as Extract<EventualMessage, { kind: K }> }));
}

/** First step (rebuild fetch) answered with `stored`; returns the effects of the answer. */
function boot(m: EventualMachine, stored: KeyedEntry[] = [], peersUp: PeerId[] = [N2, N3]): Out {
  const first = m.step({ kind: 'tick', nowMs: T0 + 1, peersUp });
  const rebuild = firstOfKind(first, 'fetch');
  expect(rebuild.keys).toBeNull();
  return m.step({ kind: 'fetched', nowMs: T0 + 2, token: rebuild.token, entries: stored });
}

const message = (from: PeerId, body: EventualMessage, nowMs = T0 + 10): Event<EventualMessage> => ({
  kind: 'message', nowMs, from, message: body,
});

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

  it('reports status as a peer with the HLC and index size', () => {
    const m = machine();
    boot(m, [['a', entry('1', 5n)], ['b', entry('2', 6n)]]);
    const status = createEventual({
      self: N1, peers: [N2, N3], random: () => 0.5, heartbeatIntervalMs: 100, failureTimeoutMs: 400, persisted: [], nowMs: T0,
    }).status();
    expect(status).toMatchObject({ mode: 'eventual', role: 'peer', term: 0, leader: null, applied: '0', queueDepth: 0 });
    expect(m.status()).toMatchObject({ role: 'peer', applied: '2', committed: `${T0}.0` });
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

describe('digest index', () => {
  it('keeps bucket and group digests equal to a recomputation, whatever the order of changes', () => {
    const random = mulberry32(3);
    const index = new VersionIndex();
    const truth = new Map<string, bigint>();
    for (let i = 0; i < 3000; i += 1) {
      const key = `key${Math.floor(random() * 500)}`;
      if (random() < 0.25) {
        index.delete(key);
        truth.delete(key);
      } else {
        const version = BigInt(Math.floor(random() * 1e9));
        index.set(key, { version, tombstone: false, expiresAtMs: 0, heldByMask: 0, touchedSeq: 0, claimedSeq: 0 });
        truth.set(key, version);
      }
    }
    const buckets = new Array<number>(BUCKET_COUNT).fill(0);
    for (const [key, version] of truth) {
      const bucket = bucketOfKey(key);
      buckets[bucket] = (itemAt(buckets, bucket) ^ hashKeyVersion(key, version)) >>> 0;
    }
    expect(index.size).toBe(truth.size);
    for (const [key, version] of truth) {
      // Updated in place: the bucket lists the very entry the key maps to, at its latest version.
      expect(index.get(key)?.version).toBe(version);
      expect(index.bucketEntries(bucketOfKey(key)).get(key)).toBe(index.get(key));
    }
    for (let b = 0; b < BUCKET_COUNT; b += 1) expect(index.bucketDigest(b)).toBe(buckets[b]);
    for (let g = 0; g < GROUP_COUNT; g += 1) {
      let digest = 0;
      for (let b = g * BUCKETS_PER_GROUP; b < (g + 1) * BUCKETS_PER_GROUP; b += 1) digest = (digest ^ itemAt(buckets, b)) >>> 0;
      expect(index.groupDigest(g)).toBe(digest);
      expect(groupOfBucket(g * BUCKETS_PER_GROUP)).toBe(g);
    }
    for (const key of truth.keys()) index.delete(key);
    expect(index.groupDigestList()).toEqual(new Array(GROUP_COUNT).fill(0));
  });

  it('spreads keys over the buckets and tells versions apart', () => {
    const counts = new Array<number>(BUCKET_COUNT).fill(0);
    for (let i = 0; i < 100_000; i += 1) {
      const bucket = bucketOfKey(`user:${i}`);
      counts[bucket] = itemAt(counts, bucket) + 1;
    }
    expect(Math.min(...counts)).toBeGreaterThan(40);
    expect(Math.max(...counts)).toBeLessThan(200);
    expect(hashKeyVersion('k', 1n)).not.toBe(hashKeyVersion('k', 2n));
    expect(hashKeyVersion('k', 1n)).toBe(hashKeyVersion('k', 1n));
  });
});

/** Two or three machines with model replicas and synchronous, lossless delivery. */
class Cluster {
  readonly machines = new Map<PeerId, EventualMachine>();
  readonly replicas = new Map<PeerId, Map<string, Entry>>();
  readonly log: Array<{ from: PeerId; to: PeerId; message: EventualMessage }> = [];
  nowMs = T0 + 100;

  constructor(contents: Map<PeerId, KeyedEntry[]>) {
    for (const [id, entries] of contents) {
      const m = machine(id);
      this.machines.set(id, m);
      this.replicas.set(id, new Map(entries));
      const rebuild = firstOfKind(m.step({ kind: 'tick', nowMs: T0 + 1, peersUp: ALL.filter((p) => p !== id) }), 'fetch');
      this.run(id, m.step({ kind: 'fetched', nowMs: T0 + 2, token: rebuild.token, entries }));
    }
  }

  run(id: PeerId, out: Out): void {
    const replica = this.replicas.get(id) ?? new Map<string, Entry>();
    const queue: Array<[PeerId, Event<EventualMessage>]> = [];
    for (const effect of out) {
      if (effect.kind === 'send') {
        this.log.push({ from: id, to: effect.to, message: effect.message });
        if (this.machines.has(effect.to)) queue.push([effect.to, message(id, effect.message, this.nowMs)]);
      } else if (effect.kind === 'put') {
        for (const [key, incoming] of effect.entries) {
          const current = replica.get(key);
          if (current === undefined || current.cas < incoming.cas) replica.set(key, incoming);
        }
        if (effect.token !== null) queue.push([id, { kind: 'applied', nowMs: this.nowMs, token: effect.token }]);
      } else if (effect.kind === 'fetch') {
        const keys = effect.keys ?? [...replica.keys()];
        const entries = keys.flatMap((key): KeyedEntry[] => (replica.has(key) ? [[key, replica.get(key) as Entry]] : []));
        queue.push([id, { kind: 'fetched', nowMs: this.nowMs, token: effect.token, entries }]);
      } else if (effect.kind === 'purge') {
        for (const [key, cas] of effect.tombstones) {
          const stored = replica.get(key);
          if (stored !== undefined && purgeRemoves(stored, cas)) replica.delete(key);
        }
      }
    }
    for (const [to, event] of queue) this.run(to, this.machines.get(to)?.step(event) ?? []);
  }

  /** Step time forward until `id` starts an anti-entropy round, and run it to the end. */
  round(id: PeerId): void {
    const m = this.machines.get(id) as EventualMachine;
    for (let i = 0; i < 20; i += 1) {
      this.nowMs += 100;
      const out = m.step({ kind: 'tick', nowMs: this.nowMs, peersUp: [...this.machines.keys()].filter((p) => p !== id) });
      const started = sent(out, 'ae_groups').length > 0;
      this.run(id, out);
      if (started) return;
    }
    throw new Error('no round started');
  }
}

describe('anti-entropy', () => {
  const many = (count: number): KeyedEntry[] => Array.from({ length: count }, (_, i) => [`key${i}`, entry(`value${i}`, BigInt(1000 + i))]);

  it('lists only the differing buckets and ships only what is missing or older', () => {
    const shared = many(5000);
    const onlyN1: KeyedEntry[] = [['fresh', entry('new', 90_000n)], ['key7', entry('newer', 90_001n)]];
    const n1 = [...shared.filter(([key]) => key !== 'key7'), ...onlyN1];
    const n2 = [...shared, ['gone-from-n1', entry('x', 90_002n)] as KeyedEntry];
    const cluster = new Cluster(new Map([[N1, n1], [N2, n2]]));
    cluster.round(N1);
    const keys = must(
      cluster.log.filter((item) => item.message.kind === 'ae_keys').map((item) => item.message as Extract<EventualMessage, { kind: 'ae_keys' }>)[0],
      'an ae_keys message',
    );
    expect(keys.buckets.length).toBeLessThanOrEqual(3);
    expect(keys.versions.length).toBeLessThan(5000 / BUCKET_COUNT * 3 * 4);
    const pushed = cluster.log
      .filter((item) => item.message.kind === 'push')
      .flatMap((item) => (item.message as Extract<EventualMessage, { kind: 'push' }>).entries.map(([key]) => `${item.from}>${key}`));
    expect(pushed.sort()).toEqual(['n1>fresh', 'n1>key7', 'n2>gone-from-n1']);
    const describeReplica = (id: PeerId) => [...(cluster.replicas.get(id) ?? [])].map(([k, e]) => `${k}=${e.value}@${e.cas}`).sort();
    expect(describeReplica(N1)).toEqual(describeReplica(N2));
    expect(cluster.replicas.get(N2)?.get('key7')?.value.toString()).toBe('newer');
  });

  it('sends nothing beyond the group digests when the replicas agree', () => {
    const cluster = new Cluster(new Map([[N1, many(300)], [N2, many(300)]]));
    cluster.round(N1);
    expect(cluster.log.map((item) => item.message.kind)).toEqual(['ae_groups', 'ae_buckets']);
    const reply = must(cluster.log.find((item) => item.message.kind === 'ae_buckets'), 'an ae_buckets message');
    expect(reply.message).toMatchObject({ groups: [], buckets: [] });
  });

  it('re-reads only the keys whose merge memcached refused, serving meanwhile, and gets the write again by anti-entropy', () => {
    // n1 holds a newer key7 and pushes it; n2's memcached has no room for it (its put is not run).
    const n1 = many(300).map(([key, stored]): KeyedEntry => [key, key === 'key7' ? entry('newer', 90_000n) : stored]);
    const cluster = new Cluster(new Map([[N1, n1], [N2, many(300)]]));
    const n2 = cluster.machines.get(N2) as EventualMachine;
    const merging = n2.step(message(N1, { kind: 'push', batch: 1, entries: [['key7', entry('newer', 90_000n)]] }, cluster.nowMs));
    const put = firstOfKind(merging, 'put');
    expect(n2.counters().acksAwaitingApply).toBe(1);
    const refused = n2.step({ kind: 'refused', nowMs: cluster.nowMs, keys: ['key7', 'key7'], token: put.token });
    expect(ofKind(refused, 'fetch').map((effect) => effect.keys)).toEqual([['key7']]);
    expect(n2.counters().acksAwaitingApply).toBe(0); // never acknowledged, and not kept for ever
    expect(n2.readsLocally()).toBe(true); // nothing held: no rebuild
    cluster.run(N2, refused);
    cluster.round(N2);
    expect(cluster.replicas.get(N2)?.get('key7')?.value.toString()).toBe('newer');
    expect(n2.status().applied).toBe('300');
  });

  it('forgets a version whose merge memcached refused, even when a flush_all came before the re-read returned', () => {
    // n2's memcached refuses the push of k; n2 re-reads k, a client's flush_all comes, and the
    // re-read finds k absent. The index must not go on claiming the refused version: its digests
    // would then match the peers' and anti-entropy would never bring k.
    const n2 = machine(N2);
    boot(n2, [], [N1, N3]);
    expect(ofKind(n2.step(message(N1, { kind: 'push', batch: 1, entries: [['k', entry('w', 90_000n)]] })), 'put')).toHaveLength(1);
    expect(n2.indexEntry('k')?.version).toBe(90_000n);
    const reread = firstOfKind(n2.step({ kind: 'refused', nowMs: T0 + 11, keys: ['k'] }), 'fetch');
    const flush = n2.step({ kind: 'request', nowMs: T0 + 12, requestId: asRequestId(1), session: 1, op: { kind: 'flush_all', delayMs: 0 } });
    expect(ofKind(flush, 'apply')).toHaveLength(1);
    n2.step({ kind: 'fetched', nowMs: T0 + 13, token: reread.token, entries: [] });
    expect(n2.indexEntry('k')).toBeUndefined();
  });

  it('removes what a refused tombstone or expiring entry supersedes: a peer may have counted it as held', () => {
    const n2 = machine(N2);
    boot(n2, [['gone', entry('old', 100n)], ['short', entry('old', 101n)], ['kept', entry('old', 102n)]], [N1, N3]);
    const pushed: KeyedEntry[] = [['gone', tombstone(90_000n)], ['short', entry('s', 90_001n, { expiresAtMs: T0 + 60_000 })], ['kept', entry('k', 90_002n)]];
    const put = firstOfKind(n2.step(message(N1, { kind: 'push', batch: 1, entries: pushed })), 'put');
    const refused = n2.step({ kind: 'refused', nowMs: T0 + 11, keys: ['gone', 'short', 'kept'], token: put.token });
    // The purge goes first, so the re-read sees what is left; a live entry's older value stays.
    expect(refused.map((effect) => effect.kind)).toEqual(['purge', 'fetch']);
    expect(firstOfKind(refused, 'purge').tombstones).toEqual([['gone', 90_000n], ['short', 90_001n]]);
  });

  it('forgets a version whose merge memcached refused, even when an older version merged before the re-read returned', () => {
    // n2's memcached refuses W; before the re-read returns, n3 pushes X (older than W), which n2's
    // memcached takes. The re-read (ordered before X) finds what k held before both. The index
    // must let W go, and learn X by reading k again.
    const n2 = machine(N2);
    boot(n2, [['k', entry('old', 100n)]], [N1, N3]);
    const refusedPut = firstOfKind(n2.step(message(N1, { kind: 'push', batch: 1, entries: [['k', entry('w', 90_000n)]] })), 'put');
    const reread = firstOfKind(n2.step({ kind: 'refused', nowMs: T0 + 11, keys: ['k'], token: refusedPut.token }), 'fetch');
    expect(ofKind(n2.step(message(N3, { kind: 'push', batch: 1, entries: [['k', entry('x', 50_000n)]] }, T0 + 12)), 'put')).toHaveLength(1);
    expect(n2.indexEntry('k')?.version).toBe(90_000n);
    const again = firstOfKind(n2.step({ kind: 'fetched', nowMs: T0 + 13, token: reread.token, entries: [['k', entry('old', 100n)]] }), 'fetch');
    expect(n2.indexEntry('k')?.version).toBe(100n);
    expect(again.keys).toEqual(['k']);
    n2.step({ kind: 'fetched', nowMs: T0 + 14, token: again.token, entries: [['k', entry('x', 50_000n)]] });
    expect(n2.indexEntry('k')?.version).toBe(50_000n);
  });

  it('repairs an emptied replica, in rounds bounded by aeKeysMax', () => {
    const cluster = new Cluster(new Map([[N1, many(3000)], [N2, many(3000)]]));
    const n2 = cluster.machines.get(N2) as EventualMachine;
    cluster.replicas.get(N2)?.clear();
    cluster.run(N2, n2.step({ kind: 'backend_reset', nowMs: cluster.nowMs }));
    expect(n2.status().applied).toBe('0');
    for (let i = 0; i < 4; i += 1) cluster.round(N2);
    expect(cluster.replicas.get(N2)?.size).toBe(3000);
    expect(n2.status().applied).toBe('3000');
  });
});

describe('tombstones', () => {
  function deleted(): { m: EventualMachine; version: bigint; out: Out } {
    const m = machine();
    boot(m, [['k', entry('v', 5n)]]);
    const del = m.step({ kind: 'request', nowMs: T0 + 20, requestId: asRequestId(1), session: 1, op: { kind: 'delete', key: 'k' } });
    const version = firstOfKind(del, 'apply').cas;
    const fetch = firstOfKind(del, 'fetch');
    const out = m.step({ kind: 'fetched', nowMs: T0 + 21, token: fetch.token, entries: [['k', tombstone(version)]] });
    return { m, version, out };
  }

  it('pushes the tombstone and purges it only after every peer acked it', () => {
    const { m, version, out } = deleted();
    const pushes = sent(out, 'push');
    expect(pushes.map((p) => p.message.entries)).toEqual([[['k', tombstone(version)]], [['k', tombstone(version)]]]);
    const byPeer = new Map(pushes.map((p) => [p.to, p.message.batch]));
    const first = m.step(message(N2, { kind: 'push_ack', batch: byPeer.get(N2) ?? -1, versions: [['k', version]] }));
    expect(ofKind(first, 'purge')).toEqual([]);
    expect(m.indexEntry('k')?.tombstone).toBe(true);
    const older = m.step(message(N3, { kind: 'push_ack', batch: byPeer.get(N3) ?? -1, versions: [['k', version - 1n]] }));
    expect(ofKind(older, 'purge')).toEqual([]);
    const second = m.step(message(N3, { kind: 'push_ack', batch: byPeer.get(N3) ?? -1, versions: [['k', version]] }));
    expect(ofKind(second, 'purge')).toEqual([{ kind: 'purge', tombstones: [['k', version]] }]);
    expect(m.indexEntry('k')).toBeUndefined();
  });

  it('does not resurrect a purged key from a late copy: acks it and answers with the tombstone', () => {
    const { m, version, out } = deleted();
    for (const push of sent(out, 'push')) m.step(message(push.to, { kind: 'push_ack', batch: push.message.batch, versions: [['k', version]] }));
    expect(m.indexEntry('k')).toBeUndefined();
    const late = m.step(message(N2, { kind: 'push', batch: 99, entries: [['k', entry('v', 5n)]] }));
    expect(ofKind(late, 'put')).toEqual([]);
    expect(sent(late, 'push_ack')).toEqual([{ to: N2, message: { kind: 'push_ack', batch: 99, versions: [] } }]);
    // N2 missed the delete (say its replica was emptied): it gets the tombstone back.
    expect(sent(late, 'push').map((p) => [p.to, p.message.entries])).toEqual([[N2, [['k', tombstone(version)]]]]);
    const newer = m.step(message(N2, { kind: 'push', batch: 100, entries: [['k', entry('w', version + 1n)]] }));
    expect(ofKind(newer, 'put')).toHaveLength(1);
  });

  it('learns from matching digests that a peer holds the tombstone', () => {
    const { m, version, out } = deleted();
    const ackN2 = sent(out, 'push').find((p) => p.to === N2);
    m.step(message(N2, { kind: 'push_ack', batch: ackN2?.message.batch ?? -1, versions: [['k', version]] }));
    const twin = new VersionIndex();
    twin.set('k', { version, tombstone: true, expiresAtMs: 0, heldByMask: 0, touchedSeq: 0, claimedSeq: 0 });
    const different = m.step(message(N3, { kind: 'ae_groups', round: 1, groups: new Array(GROUP_COUNT).fill(0) }));
    expect(ofKind(different, 'purge')).toEqual([]);
    const matching = m.step(message(N3, { kind: 'ae_groups', round: 2, groups: twin.groupDigestList() }));
    expect(ofKind(matching, 'purge')).toEqual([{ kind: 'purge', tombstones: [['k', version]] }]);
    expect(itemAt(sent(matching, 'ae_buckets'), 0).message).toMatchObject({ groups: [], buckets: [] });
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

describe('expiry', () => {
  it('collects an entry expired longer than the grace, once every peer holds it, and not before', () => {
    const m = machine(N1, { expiredGraceMs: 1000, sweepBucketsPerTick: BUCKET_COUNT });
    const expiring = entry('v', 77n, { expiresAtMs: T0 + 500 });
    boot(m, [['k', expiring]]);
    m.step(message(N2, { kind: 'push_ack', batch: 0, versions: [['k', 77n]] }));
    m.step(message(N3, { kind: 'push_ack', batch: 0, versions: [['k', 77n]] }));
    expect(m.indexEntry('k')?.heldByMask).toBe(0b110);
    const early = m.step({ kind: 'tick', nowMs: T0 + 1400, peersUp: [N2, N3] });
    expect(ofKind(early, 'purge')).toEqual([]);
    const late = m.step({ kind: 'tick', nowMs: T0 + 1500, peersUp: [N2, N3] });
    expect(ofKind(late, 'purge')).toEqual([{ kind: 'purge', tombstones: [['k', 77n]] }]);
    expect(m.indexEntry('k')).toBeUndefined();
  });
});
