/**
 * Eventual mode's anti-entropy, which makes replicas converge when pushes were lost: the digest
 * index (bucket and group digests always equal to a recomputation, keys spread over the buckets),
 * and the descent between machines with model replicas. Only differing buckets are listed and only
 * missing or older entries shipped, nothing beyond group digests when replicas agree, merges
 * memcached refused are got again, and an emptied replica is repaired in bounded rounds.
 */

import { describe, expect, it } from 'vitest';
import type { EventualMachine, EventualMessage } from '../src/consistency/eventual.ts';
import {
  BUCKET_COUNT,
  bucketOfKey,
  BUCKETS_PER_GROUP,
  GROUP_COUNT,
  groupOfBucket,
  hashKeyVersion,
  VersionIndex,
  type IndexEntry,
} from '../src/consistency/eventual/digest.ts';
import { asRequestId, type Event, type KeyedEntry, type PeerId } from '../src/consistency/types.ts';
import { purgeRemoves } from '../src/store/apply.ts';
import type { Entry } from '../src/store/types.ts';
import type { EventualTuning } from '../src/consistency/eventual/tuning.ts';
import { mulberry32 } from './support/eventual-sim.ts';
import { itemAt } from '../src/runtime/item-at.ts';
import { must } from './support/must.ts';
import {
  ALL, boot, entry, firstOfKind, machine, message, N1, N2, N3, ofKind, type Out, sent, T0, tombstone,
} from './support/eventual-kit.ts';

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
      // Updated in place: the bucket lists the key once, at its latest version.
      expect(index.get(key)?.version).toBe(version);
      const listed = [...index.bucketEntries(bucketOfKey(key))].filter(([listedKey]) => listedKey === key);
      expect(listed).toEqual([[key, index.get(key)]]);
    }
    for (let b = 0; b < BUCKET_COUNT; b += 1) {
      expect(index.bucketDigest(b)).toBe(buckets[b]);
      expect(index.bucketSize(b)).toBe([...index.bucketEntries(b)].length);
    }
    expect([...index.keys()].sort()).toEqual([...truth.keys()].sort());
    for (let g = 0; g < GROUP_COUNT; g += 1) {
      let digest = 0;
      for (let b = g * BUCKETS_PER_GROUP; b < (g + 1) * BUCKETS_PER_GROUP; b += 1) digest = (digest ^ itemAt(buckets, b)) >>> 0;
      expect(index.groupDigest(g)).toBe(digest);
      expect(groupOfBucket(g * BUCKETS_PER_GROUP)).toBe(g);
    }
    for (const key of truth.keys()) index.delete(key);
    expect(index.groupDigestList()).toEqual(new Array(GROUP_COUNT).fill(0));
  });

  it('lists a bucket in the order its keys came, as a Map would, and keeps every field', () => {
    const index = new VersionIndex();
    const inBucket = (bucket: number): string[] => [...index.bucketEntries(bucket)].map(([key]) => key);
    const keys = Array.from({ length: 5000 }, (_, i) => `k${i}`); // past the first capacity: the arrays grow
    const entry = (version: bigint): IndexEntry => ({
      version, tombstone: false, expiresAtMs: 0, heldByMask: 0, touchedSeq: 0, claimedSeq: 0,
    });
    for (const key of keys) index.set(key, entry(1n));
    const order = new Map<number, string[]>();
    for (const key of keys) order.set(bucketOfKey(key), [...(order.get(bucketOfKey(key)) ?? []), key]);
    const [bucket, listed] = must([...order].find(([, bucketKeys]) => bucketKeys.length >= 3), 'a bucket of three keys');
    expect(inBucket(bucket)).toEqual(listed);
    const first = itemAt(listed, 0);
    const second = itemAt(listed, 1);
    const full = {
      tombstone: true, expiresAtMs: 1_800_000_000_000, heldByMask: 6, touchedSeq: 4, claimedSeq: 5, resetVersion: 2n ** 64n - 1n,
    };
    index.set(first, { ...entry(9n), ...full });
    expect(inBucket(bucket)).toEqual(listed); // an update keeps its place
    expect(index.get(first)).toEqual({ version: 9n, ...full });
    expect(index.get(second)).not.toHaveProperty('resetVersion');
    index.touch(second, 7);
    index.markHeld(second, 2);
    index.markHeld(second, 4);
    expect(index.get(second)).toMatchObject({ touchedSeq: 7, heldByMask: 6, version: 1n });
    index.delete(first);
    index.set(first, entry(3n)); // back after a delete: last, as in a Map
    expect(inBucket(bucket)).toEqual([...listed.slice(1), first]);
    expect(index.versionOf(first)).toBe(3n);
    index.clear();
    expect(index.size).toBe(0);
    expect(inBucket(bucket)).toEqual([]);
    index.set('again', entry(5n));
    expect([...index.bucketEntries(bucketOfKey('again'))]).toEqual([['again', entry(5n)]]);
    expect(index.groupDigestList().some((digest) => digest !== 0)).toBe(true);
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
  /** Messages lost on the way (logged, not delivered). */
  lose: (from: PeerId, to: PeerId, message: EventualMessage) => boolean = () => false;

  /** `seeds`: each machine's seed for its randomness (default: one seed for all). */
  constructor(contents: Map<PeerId, KeyedEntry[]>, tuning: Partial<EventualTuning> = {}, seeds?: ReadonlyMap<PeerId, number>) {
    for (const [id, entries] of contents) {
      const m = machine(id, tuning, seeds?.get(id));
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
        const delivered = this.machines.has(effect.to) && !this.lose(id, effect.to, effect.message);
        if (delivered) queue.push([effect.to, message(id, effect.message, this.nowMs)]);
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

  /** One tick of `stepMs` at every machine, each run to the end. */
  tickAll(stepMs: number): void {
    this.nowMs += stepMs;
    for (const [id, m] of this.machines) {
      this.run(id, m.step({ kind: 'tick', nowMs: this.nowMs, peersUp: [...this.machines.keys()].filter((p) => p !== id) }));
    }
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

  it('rebuilds an emptied replica in rounds that follow each other at once, then goes back to the interval', () => {
    const keys = 20_000;
    const aeKeysMax = 256;
    const full = many(keys);
    const seeds = new Map([[N1, 1], [N2, 2], [N3, 3]]);
    const cluster = new Cluster(new Map([[N1, full], [N2, full], [N3, full]]), { aeKeysMax }, seeds);
    const n3 = cluster.machines.get(N3) as EventualMachine;
    cluster.replicas.get(N3)?.clear();
    cluster.run(N3, n3.step({ kind: 'backend_reset', nowMs: cluster.nowMs }));
    for (let i = 0; i < 60 && (cluster.replicas.get(N3)?.size ?? 0) < keys; i += 1) cluster.tickAll(50);
    // Rounds only every antiEntropyIntervalMs (300 ms here) would have carried at most
    // 3 nodes × (3000 ms / 300 ms) rounds × aeKeysMax = 7,680 keys by now.
    expect(cluster.replicas.get(N3)?.size).toBe(keys);
    expect(n3.status().applied).toBe(String(keys));
    // Once rebuilt, rounds carry nothing and come at their interval again, not at every tick.
    const before = cluster.log.length;
    for (let i = 0; i < 30; i += 1) cluster.tickAll(50);
    const after = cluster.log.slice(before);
    expect(after.filter((item) => item.message.kind === 'ae_keys')).toEqual([]);
    expect(after.filter((item) => item.message.kind === 'ae_groups').length).toBeLessThanOrEqual(3 * (1500 / 300 + 1) + 3);
  });

  it('walks the buckets of an emptied peer from its own point of the ring, so two responders ship different keys', () => {
    const aeKeysMax = 256;
    const full = many(20_000);
    const shippedBy = (seeds: [number, number]): Array<Set<string>> => {
      const seedOf = new Map([[N1, seeds[0]], [N2, seeds[1]], [N3, 3]]);
      const cluster = new Cluster(new Map([[N1, full], [N2, full], [N3, []]]), { aeKeysMax }, seedOf);
      const step = (id: PeerId, event: Event<EventualMessage>): Out => must(cluster.machines.get(id), id).step(event);
      const groups = ofKind(step(N3, { kind: 'tick', nowMs: cluster.nowMs + 1000, peersUp: [N1, N2] }), 'send')[0];
      const first = must(groups, 'a round started').to;
      const buckets = ofKind(step(first, message(N3, must(groups, 'ae_groups').message, cluster.nowMs + 1000)), 'send')[0];
      const list = ofKind(step(N3, message(first, must(buckets, 'ae_buckets').message, cluster.nowMs + 1000)), 'send')[0];
      expect(list?.message.kind).toBe('ae_keys');
      // The same key list goes to both full peers; each ships what the list lacks, up to aeKeysMax.
      return [N1, N2].map((id) => {
        const fetch = firstOfKind(step(id, message(N3, must(list, 'ae_keys').message, cluster.nowMs + 1000)), 'fetch');
        return new Set(fetch.keys ?? []);
      });
    };
    const [a, b] = shippedBy([1, 2]);
    expect(a?.size).toBe(aeKeysMax);
    expect(b?.size).toBe(aeKeysMax);
    expect([...(a ?? [])].filter((key) => b?.has(key))).toEqual([]);
    // Starting at the same point (the same seed), both would ship the same keys.
    const [c, d] = shippedBy([1, 1]);
    expect([...(c ?? [])].filter((key) => d?.has(key)).length).toBe(aeKeysMax);
  });

  it('lists other buckets next when the ones it listed stay different: one stuck bucket holds no other back', () => {
    const cluster = new Cluster(new Map([[N1, many(20_000)], [N2, []]]), { aeKeysMax: 256 });
    // N1's entries never reach N2, so every bucket N1 lists stays different.
    cluster.lose = (from, _to, sent) => from === N1 && sent.kind === 'push';
    for (let i = 0; i < 40; i += 1) cluster.tickAll(50);
    const listed = new Set(cluster.log
      .filter((item) => item.from === N1 && item.message.kind === 'ae_keys')
      .flatMap((item) => (item.message as Extract<EventualMessage, { kind: 'ae_keys' }>).buckets));
    // About 19 keys a bucket, 13 buckets a list, a list every round (300 ms): lists that always
    // started at one point would name the same 13 buckets.
    expect(listed.size).toBeGreaterThan(50);
  });

  it('keeps the due rounds with every peer while a peer that carries nothing stays different', () => {
    const m = machine(N1, { aeKeysMax: 256 });
    boot(m, many(20_000));
    // N2 differs in every bucket, and never asks for anything (it purged what it lacks, say).
    const allGroups = Array.from({ length: GROUP_COUNT }, (_, group) => group);
    const allBuckets: Array<[number, number]> = Array.from({ length: BUCKET_COUNT }, (_, bucket) => [bucket, 0xdead]);
    const roundsWith = new Map<PeerId, number>([[N2, 0], [N3, 0]]);
    const answer = (out: Out): void => {
      for (const started of sent(out, 'ae_groups')) {
        roundsWith.set(started.to, (roundsWith.get(started.to) ?? 0) + 1);
        if (started.to !== N2) continue;
        const reply = { kind: 'ae_buckets' as const, round: started.message.round, groups: allGroups, buckets: allBuckets };
        answer(m.step(message(N2, reply, T0 + 1)));
      }
    };
    for (let nowMs = T0 + 50; nowMs <= T0 + 1500; nowMs += 50) answer(m.step({ kind: 'tick', nowMs, peersUp: [N2, N3] }));
    // A round every 300 ms, round-robin: five in 1.5 s, two or three of them with N3.
    expect(roundsWith.get(N3)).toBeGreaterThanOrEqual(2);
    expect(roundsWith.get(N2)).toBeLessThanOrEqual(3);
  });
});
