/**
 * Replica: per-key ordering over a backend that answers out of order, concurrency across keys,
 * barriers (flush_all, reset, fetch of all keys), tombstones and purge, merge, flush_all with a
 * delay, gat; and against a real memcached: backend down, backend paused (timeout), backend
 * restarted (new epoch, replica keeps working) and rebuilding the key index with metadump.
 */

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { applyToEntry } from '../src/store/apply.ts';
import { MemcachedBackend } from '../src/store/memcached.ts';
import { MemoryBackend } from '../src/store/memory.ts';
import { Replica } from '../src/store/replica.ts';
import { cachedEntryBytes, ValueCache } from '../src/store/value-cache.ts';
import { StoreError, type Entry, type KeyedPair, type Op } from '../src/store/types.ts';
import type { Reply } from '../src/protocol/types.ts';
import { mulberry32 as seeded } from '../src/runtime/random.ts';
import { startMemcached, type MemcachedInstance } from './support/memcached.ts';
import { freePort } from '../src/jepsen/cluster.ts';
import { readFileSync } from 'node:fs';
import { refused } from '../src/protocol/refusals.ts';
import { itemAt } from '../src/runtime/item-at.ts';


/** Resolves once the process is really stopped (state T): kill() returns before every thread has stopped. */
async function untilStopped(pid: number): Promise<void> {
  const deadline = Date.now() + 2000;
  while (Date.now() < deadline) {
    const state = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '')[0];
    if (state === 'T') return;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  throw new Error(`process ${pid} did not stop`);
}

/** A MemoryBackend whose every call completes after a random delay, so completions reorder. */
class JitteryBackend extends MemoryBackend {
  constructor(private readonly random: () => number) {
    super();
  }
  async #jitter(): Promise<void> {
    await new Promise((resolve) => setTimeout(resolve, Math.floor(this.random() * 3)));
  }
  override async get(key: string): Promise<Entry | undefined> {
    await this.#jitter();
    return super.get(key);
  }
  override async set(key: string, entry: Entry): Promise<void> {
    await this.#jitter();
    return super.set(key, entry);
  }
  override async delete(key: string): Promise<void> {
    await this.#jitter();
    return super.delete(key);
  }
}

const setOp = (key: string, value: string, expiresAtMs = 0): Op => ({
  kind: 'store', verb: 'set', key, flags: 0, expiresAtMs, value: Buffer.from(value), casUnique: 0n,
});
const appendOp = (key: string, value: string): Op => ({ ...setOp(key, value), verb: 'append' }) as Op;
const incrOp = (key: string): Op => ({ kind: 'arith', verb: 'incr', key, delta: 1n, initial: 0n, expiresAtMs: 0 });
const getOp = (...keys: string[]): Op => ({ kind: 'get', keys });
const entry = (value: string, cas: bigint, extra: Partial<Entry> = {}): Entry => ({
  value: Buffer.from(value), flags: 0, expiresAtMs: 0, cas, ...extra,
});
const values = (reply: Reply): Array<[string, string]> =>
  reply.kind === 'values' ? reply.items.map((item) => [item.key, item.value.toString()]) : [];

const NOW = 1_000_000;

describe('Replica ordering', () => {
  it('applies calls on one key in call order even when the backend answers out of order', async () => {
    const random = seeded(7);
    const replica = new Replica(new JitteryBackend(random), { tombstones: false });
    const keys = ['a', 'b', 'c', 'd'];
    const ops: Op[] = [];
    for (let index = 0; index < 300; index += 1) {
      const key = itemAt(keys, Math.floor(random() * keys.length));
      const choice = random();
      ops.push(choice < 0.3 ? setOp(key, String(index)) : choice < 0.6 ? appendOp(key, `,${index}`) : choice < 0.9 ? incrOp(key) : { kind: 'delete', key });
    }
    const replies = await Promise.all(ops.map((op, index) => replica.apply(op, { cas: BigInt(index + 1), nowMs: NOW })));

    // The same ops, one after another, on a plain map.
    const model = new Map<string, Entry>();
    const expected = ops.map((op, index) => {
      if (op.kind !== 'store' && op.kind !== 'arith' && op.kind !== 'delete') throw new Error('unexpected');
      const { write, reply } = applyToEntry(model.get(op.key), op, { cas: BigInt(index + 1), nowMs: NOW });
      if (write === null) model.delete(op.key);
      else if (write !== undefined) model.set(op.key, write);
      return reply;
    });
    expect(replies).toEqual(expected);
    const fetched = await replica.fetch(keys);
    expect(fetched).toEqual([...model].sort(([left], [right]) => left.localeCompare(right)));
  });

  it('runs different keys concurrently', async () => {
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => (release = resolve));
    class GatedBackend extends MemoryBackend {
      // A plain set only writes (no read first), so the gate is on the write.
      override async set(key: string, stored: Entry): Promise<void> {
        if (key === 'slow') await gate;
        return super.set(key, stored);
      }
    }
    const replica = new Replica(new GatedBackend(), { tombstones: false });
    let slowDone = false;
    const slow = replica.apply(setOp('slow', 's'), { cas: 1n, nowMs: NOW }).then((reply) => {
      slowDone = true;
      return reply;
    });
    const queuedOnSlow = replica.read(getOp('slow'), NOW);
    expect(await replica.apply(setOp('fast', 'f'), { cas: 2n, nowMs: NOW })).toEqual({ kind: 'stored', cas: 2n });
    expect(values(await replica.read(getOp('fast'), NOW))).toEqual([['fast', 'f']]);
    expect(slowDone).toBe(false);
    release();
    expect(await slow).toEqual({ kind: 'stored', cas: 1n });
    expect(values(await queuedOnSlow)).toEqual([['slow', 's']]);
  });

  it('orders flush_all, fetch(null) and reset against every key', async () => {
    const replica = new Replica(new JitteryBackend(seeded(3)), { tombstones: false });
    const calls: Array<Promise<unknown>> = [];
    for (let index = 0; index < 20; index += 1) calls.push(replica.apply(setOp(`old${index}`, 'v'), { cas: BigInt(index + 1), nowMs: NOW }));
    const flushed = replica.apply({ kind: 'flush_all', delayMs: 0 }, { cas: 100n, nowMs: NOW });
    for (let index = 0; index < 5; index += 1) calls.push(replica.apply(setOp(`new${index}`, 'v'), { cas: BigInt(200 + index), nowMs: NOW }));
    const all = replica.fetch(null);
    const late = replica.apply(setOp('late', 'v'), { cas: 300n, nowMs: NOW });
    expect(await flushed).toEqual({ kind: 'ok' });
    expect((await all).map(([key]) => key)).toEqual(['new0', 'new1', 'new2', 'new3', 'new4']);
    await Promise.all([...calls, late]);
    expect(replica.keyCount()).toBe(6);
    const reset = replica.reset();
    const afterReset = replica.apply(setOp('after', 'v'), { cas: 400n, nowMs: NOW });
    await reset;
    await afterReset;
    expect((await replica.fetch(null)).map(([key]) => key)).toEqual(['after']);
  });

  it('refuses, after a reset is acknowledged, the calls that were issued before it', async () => {
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => (release = resolve));
    class GatedBackend extends MemoryBackend {
      override async set(key: string, stored: Entry): Promise<void> {
        await gate;
        return super.set(key, stored);
      }
    }
    const replica = new Replica(new GatedBackend(), { tombstones: false, cacheBytesMax: 0 });
    const first = replica.apply(setOp('k', 'one'), { cas: 1n, nowMs: NOW });
    // Queued behind the first on the same key: issued for the replica as it was before the reset.
    const second = replica.apply({ kind: 'arith', verb: 'incr', key: 'k', delta: 1n, initial: null, expiresAtMs: 0 }, { cas: 2n, nowMs: NOW });
    replica.acknowledgeReset();
    release();
    await first.catch(() => undefined);
    await expect(second).rejects.toMatchObject({ code: 'BACKEND_RESET' });
    expect(await replica.apply(setOp('k', 'three'), { cas: 3n, nowMs: NOW })).toEqual({ kind: 'stored', cas: 3n });
  });

  it('refuses everything after a failed write until the reset is acknowledged, then works again', async () => {
    let failNext = true;
    class FlakyBackend extends MemoryBackend {
      override async set(key: string, stored: Entry): Promise<void> {
        if (failNext) {
          failNext = false;
          throw new StoreError('BACKEND_DOWN', 'injected');
        }
        return super.set(key, stored);
      }
    }
    const replica = new Replica(new FlakyBackend(), { tombstones: false });
    const failed = replica.apply(setOp('k', 'one'), { cas: 1n, nowMs: NOW });
    const next = replica.apply(setOp('k', 'two'), { cas: 2n, nowMs: NOW });
    await expect(failed).rejects.toMatchObject({ name: 'StoreError', code: 'BACKEND_DOWN' });
    // The replica may have missed a write: nothing is served from it, not even a read.
    await expect(next).rejects.toMatchObject({ name: 'StoreError', code: 'BACKEND_RESET' });
    await expect(replica.read(getOp('k'), NOW)).rejects.toMatchObject({ code: 'BACKEND_RESET' });
    expect(replica.suspect).toMatch(/injected/);
    replica.acknowledgeReset();
    expect(replica.suspect).toBeNull();
    expect(await replica.apply(setOp('k', 'three'), { cas: 3n, nowMs: NOW })).toEqual({ kind: 'stored', cas: 3n });
    expect(values(await replica.read(getOp('k'), NOW))).toEqual([['k', 'three']]);
  });
});

describe('Replica refused writes (memcached out of memory)', () => {
  /** memcached with no room for 'full': it refuses its writes and keeps what it held. */
  class FullBackend extends MemoryBackend {
    #refusal(): StoreError {
      return new StoreError('BACKEND_FAILED', 'injected: no memory', { untouched: true, refusal: refused('out_of_memory') });
    }
    override async set(key: string, stored: Entry): Promise<void> {
      if (key === 'full' && stored.value.toString() !== 'old') throw this.#refusal();
      return super.set(key, stored);
    }
    override async setMany(entries: readonly KeyedPair[]): Promise<void> {
      if (entries.some(([key]) => key === 'full')) {
        await super.setMany(entries.filter(([key]) => key !== 'full'));
        throw this.#refusal();
      }
      return super.setMany(entries);
    }
  }

  for (const keepsTrust of [true, false]) {
    it(`${keepsTrust ? 'keeps' : 'loses'} trust when memcached refused a write and left the key as it was${keepsTrust ? ', which reads as before' : ''}`, async () => {
      const replica = new Replica(new FullBackend(), { tombstones: true, refusalsKeepTrust: keepsTrust });
      await replica.loadIndex();
      await replica.apply(setOp('full', 'old'), { cas: 1n, nowMs: NOW });
      expect(values(await replica.read(getOp('full'), NOW))).toEqual([['full', 'old']]); // cached
      await expect(replica.apply(setOp('full', 'new'), { cas: 2n, nowMs: NOW })).rejects.toMatchObject({ untouched: true });
      if (!keepsTrust) {
        expect(replica.suspect).toMatch(/no memory/);
        return;
      }
      await expect(replica.put([['other', entry('o1', 3n)], ['full', entry('pushed', 4n)]], 'merge')).rejects.toMatchObject({ untouched: true });
      expect(replica.suspect).toBeNull();
      // Neither the refused value nor the stale cached one: what memcached holds, and the rest.
      expect(values(await replica.read(getOp('full', 'other'), NOW))).toEqual([['full', 'old'], ['other', 'o1']]);
      expect((await replica.fetch(['full'])).map(([key, stored]) => [key, stored.cas])).toEqual([['full', 1n]]);
      // A later merge of the key is decided by what memcached holds, not by the refused version.
      await replica.put([['full', entry('old', 5n)]], 'merge');
      expect(itemAt(await replica.fetch(['full']), 0)[1].cas).toBe(5n);
    });
  }

  it('purges, with a tombstone memcached refused, the older value it kept in its place', async () => {
    // Eventual mode may collect a tombstone while its merge is in flight here (peers count it as
    // held); memcached refuses it and keeps the value the tombstone deleted everywhere else.
    const replica = new Replica(new FullBackend(), { tombstones: true, refusalsKeepTrust: true });
    await replica.loadIndex();
    await replica.apply(setOp('full', 'old'), { cas: 1n, nowMs: NOW });
    await replica.apply(setOp('newer', 'n'), { cas: 9n, nowMs: NOW });
    const refused = replica.put([['full', { value: Buffer.alloc(0), flags: 0, expiresAtMs: 0, cas: 4n, tombstone: true }]], 'merge');
    const purged = replica.purge([['full', 4n], ['newer', 4n]]);
    await expect(refused).rejects.toMatchObject({ untouched: true });
    await purged;
    expect(values(await replica.read(getOp('full', 'newer'), NOW))).toEqual([['newer', 'n']]);
    expect((await replica.fetch(['full', 'newer'])).map(([key, stored]) => [key, stored.cas])).toEqual([['newer', 9n]]);
  });
});

describe('Replica semantics', () => {
  it('keeps deletes as tombstones and purges only unchanged ones', async () => {
    const replica = new Replica(new MemoryBackend(), { tombstones: true });
    await replica.apply(setOp('a', '1'), { cas: 1n, nowMs: NOW });
    await replica.apply(setOp('b', '2'), { cas: 2n, nowMs: NOW });
    expect(await replica.apply({ kind: 'delete', key: 'a' }, { cas: 3n, nowMs: NOW })).toEqual({ kind: 'deleted' });
    expect(await replica.apply({ kind: 'delete', key: 'a' }, { cas: 4n, nowMs: NOW })).toEqual({ kind: 'not_found' });
    expect(values(await replica.read(getOp('a', 'b'), NOW))).toEqual([['b', '2']]);
    expect(await replica.fetch(['a'])).toEqual([['a', { value: Buffer.alloc(0), flags: 0, expiresAtMs: 0, cas: 3n, tombstone: true }]]);
    expect(replica.keyCount()).toBe(2);
    await replica.purge([['a', 2n], ['b', 2n]]); // wrong cas for a; b is no tombstone
    expect((await replica.fetch(null)).map(([key]) => key)).toEqual(['a', 'b']);
    await replica.purge([['a', 3n]]);
    expect((await replica.fetch(null)).map(([key]) => key)).toEqual(['b']);
    expect(await replica.apply({ kind: 'flush_all', delayMs: 0 }, { cas: 9n, nowMs: NOW })).toEqual({ kind: 'ok' });
    expect(await replica.fetch(null)).toEqual([['b', { value: Buffer.alloc(0), flags: 0, expiresAtMs: 0, cas: 9n, tombstone: true }]]);
    expect(await replica.apply({ kind: 'store', verb: 'add', key: 'b', flags: 0, expiresAtMs: 0, value: Buffer.from('x'), casUnique: 0n }, { cas: 10n, nowMs: NOW })).toEqual({ kind: 'stored', cas: 10n });
  });

  it('a conditional (header cas) append or delete changes nothing on a mismatch; the reply carries the new cas', async () => {
    for (const replay of ['plain', 'skip-applied'] as const) {
      const replica = new Replica(new MemoryBackend(), { tombstones: replay === 'plain', replay });
      expect(await replica.apply(setOp('k', 'v'), { cas: 1n, nowMs: NOW })).toEqual({ kind: 'stored', cas: 1n });
      const append = (casUnique: bigint): Op => ({ ...setOp('k', '+'), verb: 'append', casUnique }) as Op;
      expect(await replica.apply(append(7n), { cas: 2n, nowMs: NOW })).toEqual({ kind: 'exists' });
      expect(await replica.apply({ kind: 'delete', key: 'k', casUnique: 7n }, { cas: 3n, nowMs: NOW })).toEqual({ kind: 'exists' });
      expect(itemAt(await replica.fetch(['k']), 0)[1]).toMatchObject({ value: Buffer.from('v'), cas: 1n });
      expect(await replica.apply(append(1n), { cas: 4n, nowMs: NOW })).toEqual({ kind: 'stored', cas: 4n });
      expect((await replica.read(getOp('k'), NOW))).toEqual({ kind: 'values', items: [{ key: 'k', flags: 0, value: Buffer.from('v+'), cas: 4n }] });
      expect(await replica.apply({ kind: 'delete', key: 'k', casUnique: 4n }, { cas: 5n, nowMs: NOW })).toEqual({ kind: 'deleted' });
      expect(values(await replica.read(getOp('k'), NOW))).toEqual([]);
    }
  });

  it('merges by greatest cas, overwrites on request', async () => {
    const replica = new Replica(new MemoryBackend(), { tombstones: true });
    await replica.put([['k', entry('five', 5n)]], 'merge');
    await replica.put([['k', entry('three', 3n)], ['k', entry('five-again', 5n)], ['j', entry('j', 1n)]], 'merge');
    expect(values(await replica.read(getOp('k', 'j'), NOW))).toEqual([['k', 'five'], ['j', 'j']]);
    await replica.put([['k', entry('', 8n, { tombstone: true })]], 'merge');
    expect(values(await replica.read(getOp('k'), NOW))).toEqual([]);
    await replica.put([['k', entry('old', 1n)]], 'overwrite');
    expect(values(await replica.read(getOp('k'), NOW))).toEqual([['k', 'old']]);
  });

  it('decides a merge from a complete index without reading, and reads when the index cannot tell', async () => {
    const backend = new CountingBackend();
    await backend.set('old', entry('before the replica', 9n));
    const replica = new Replica(backend, { tombstones: true });
    // Index not complete yet: a key it has no record of must be read.
    await replica.put([['old', entry('older', 4n)]], 'merge');
    expect(backend.gets).toBe(1);
    expect(values(await replica.read(getOp('old'), NOW))).toEqual([['old', 'before the replica']]);
    await replica.loadIndex();
    backend.gets = 0;
    await replica.put([['k', entry('five', 5n)], ['old', entry('older', 4n)]], 'merge');
    await replica.put([['k', entry('three', 3n)]], 'merge');
    expect(backend.gets).toBe(0);
    expect(values(await replica.read(getOp('k', 'old'), NOW))).toEqual([['k', 'five'], ['old', 'before the replica']]);
    // A failed write leaves the record unsettled: the next merge reads what the backend holds.
    backend.failNextSetBeforeStoring = true;
    await expect(replica.put([['k', entry('nine', 9n)]], 'merge')).rejects.toBeInstanceOf(StoreError);
    replica.acknowledgeReset();
    backend.gets = 0;
    await replica.put([['k', entry('seven', 7n)]], 'merge');
    expect(backend.gets).toBe(1);
    expect(values(await replica.read(getOp('k'), NOW))).toEqual([['k', 'seven']]);
  });

  it('merges distinct idle keys in one backend call; a repeated or busy key goes alone, in order', async () => {
    const backend = new CountingBackend();
    const replica = new Replica(backend, { tombstones: true });
    await replica.loadIndex(); // the index is complete: no merge needs a read
    await replica.put([['a', entry('a1', 1n)], ['b', entry('b1', 1n)], ['c', entry('c1', 1n)]], 'merge');
    expect([backend.batches, backend.sets, backend.gets]).toEqual([1, 3, 0]);
    backend.batches = 0;
    backend.sets = 0;
    // 'a' twice (alone, in order), 'b' older than what is held (not written), 'd' new (the batch).
    await replica.put([['a', entry('a3', 3n)], ['a', entry('a2', 2n)], ['b', entry('b0', 0n)], ['d', entry('d1', 1n)]], 'merge');
    expect([backend.batches, backend.sets]).toEqual([1, 2]);
    // A merge issued while a write on its key runs waits for it, then loses to its greater cas.
    const applying = replica.apply(setOp('e', 'e5'), { cas: 5n, nowMs: NOW });
    await replica.put([['e', entry('e4', 4n)], ['f', entry('f1', 1n)]], 'merge');
    await applying;
    expect(values(await replica.read(getOp('a', 'b', 'c', 'd', 'e', 'f'), NOW))).toEqual([
      ['a', 'a3'], ['b', 'b1'], ['c', 'c1'], ['d', 'd1'], ['e', 'e5'], ['f', 'f1'],
    ]);
    // A failing batch leaves the replica suspect, as a failing single write does.
    backend.failNextSetBeforeStoring = true;
    await expect(replica.put([['g', entry('g1', 1n)], ['h', entry('h1', 1n)]], 'merge')).rejects.toBeInstanceOf(StoreError);
    expect(replica.suspect).not.toBeNull();
  });

  it('flush_all with a delay caps every live expiry', async () => {
    const replica = new Replica(new MemoryBackend(), { tombstones: false });
    await replica.apply(setOp('never', 'v'), { cas: 1n, nowMs: NOW });
    await replica.apply(setOp('soon', 'v', NOW + 1000), { cas: 2n, nowMs: NOW });
    await replica.apply(setOp('later', 'v', NOW + 60_000), { cas: 3n, nowMs: NOW });
    await replica.apply({ kind: 'flush_all', delayMs: 5000 }, { cas: 4n, nowMs: NOW });
    const fetched = new Map(await replica.fetch(null));
    expect(fetched.get('never')).toMatchObject({ expiresAtMs: NOW + 5000, cas: 4n });
    expect(fetched.get('soon')).toMatchObject({ expiresAtMs: NOW + 1000, cas: 2n });
    expect(fetched.get('later')).toMatchObject({ expiresAtMs: NOW + 5000, cas: 4n });
    expect(values(await replica.read(getOp('never', 'soon'), NOW + 999))).toHaveLength(2);
    expect(values(await replica.read(getOp('never', 'soon', 'later'), NOW + 4999))).toEqual([['never', 'v'], ['later', 'v']]);
    expect(values(await replica.read(getOp('never', 'soon', 'later'), NOW + 5000))).toEqual([]);
  });

  it('gat reads, sets the expiry and gives a new cas; get skips expired items', async () => {
    const replica = new Replica(new MemoryBackend(), { tombstones: false });
    await replica.apply(setOp('a', '1'), { cas: 1n, nowMs: NOW });
    await replica.apply(setOp('gone', '2', NOW - 1), { cas: 2n, nowMs: NOW });
    const reply = await replica.apply({ kind: 'gat', keys: ['a', 'gone', 'missing', 'a'], expiresAtMs: NOW + 10 }, { cas: 7n, nowMs: NOW });
    expect(reply).toEqual({
      kind: 'values',
      items: [
        { key: 'a', flags: 0, value: Buffer.from('1'), cas: 7n },
        { key: 'a', flags: 0, value: Buffer.from('1'), cas: 7n },
      ],
    });
    expect(values(await replica.apply(getOp('a'), { cas: 8n, nowMs: NOW + 10 }))).toEqual([]);
    expect(() => replica.read(setOp('a', 'x'), NOW)).toThrow();
  });
});

/**
 * A MemoryBackend that counts its calls, and can fail the next set before storing it (it never
 * arrived) or after (the reply was lost).
 */
class CountingBackend extends MemoryBackend {
  gets = 0;
  sets = 0;
  failNextSetBeforeStoring = false;
  failNextSetAfterStoring = false;
  override async get(key: string): Promise<Entry | undefined> {
    this.gets += 1;
    return super.get(key);
  }
  override async set(key: string, stored: Entry): Promise<void> {
    this.sets += 1;
    if (this.failNextSetBeforeStoring) {
      this.failNextSetBeforeStoring = false;
      throw new StoreError('BACKEND_DOWN', 'injected');
    }
    await super.set(key, stored);
    if (this.failNextSetAfterStoring) {
      this.failNextSetAfterStoring = false;
      throw new StoreError('BACKEND_TIMEOUT', 'injected: stored, reply lost');
    }
  }
  /** One batch: counted (and failed on request) as its sets. */
  override async setMany(entries: readonly KeyedPair[]): Promise<void> {
    this.batches += 1;
    for (const [key, stored] of entries) await this.set(key, stored);
  }
  batches = 0;
}

describe('ValueCache (CLOCK eviction)', () => {
  const sized = (value: string, cas = 1n): Entry => entry(value, cas);

  it('keeps its byte bound, dropping the oldest entries not used since they were inserted', () => {
    const cost = cachedEntryBytes('a', sized('x'.repeat(10)));
    const cache = new ValueCache(3 * cost);
    for (const key of ['a', 'b', 'c']) cache.set(key, sized('x'.repeat(10)));
    expect(cache.get('a')).toBeDefined(); // a gets a second chance
    cache.set('d', sized('x'.repeat(10)));
    expect(cache.bytes).toBeLessThanOrEqual(cache.bytesMax);
    expect(['a', 'b', 'c', 'd'].filter((key) => cache.get(key) !== undefined)).toEqual(['a', 'c', 'd']);
  });

  it('evicts even when every entry was used, and never holds one larger than the bound', () => {
    const cost = cachedEntryBytes('a', sized('y'));
    const cache = new ValueCache(2 * cost);
    cache.set('a', sized('y'));
    cache.set('b', sized('y'));
    cache.get('a');
    cache.get('b');
    cache.set('c', sized('y'));
    expect(cache.size).toBe(2);
    expect(cache.bytes).toBe(2 * cost);
    cache.set('huge', sized('z'.repeat(10 * cost)));
    expect(cache.get('huge')).toBeUndefined();
    expect(cache.bytes).toBeLessThanOrEqual(cache.bytesMax);
  });

  it('replaces an entry in place with the right byte count, and forgets deleted ones', () => {
    const cache = new ValueCache(1 << 20);
    cache.set('k', sized('short', 1n));
    cache.set('k', sized('a longer value', 2n));
    expect(cache.get('k')?.cas).toBe(2n);
    expect(cache.bytes).toBe(cachedEntryBytes('k', sized('a longer value')));
    cache.delete('k');
    expect(cache.bytes).toBe(0);
    expect(cache.size).toBe(0);
  });

  it('misses a withheld key until its next set, charging only its slot meanwhile', () => {
    const cache = new ValueCache(1 << 20);
    cache.set('k', sized('a value', 1n));
    cache.withhold('k');
    expect(cache.get('k')).toBeUndefined();
    expect(cache.bytes).toBe(cachedEntryBytes('k', sized('')));
    cache.withhold('k'); // twice changes nothing
    expect(cache.bytes).toBe(cachedEntryBytes('k', sized('')));
    cache.set('k', sized('another value', 2n));
    expect(cache.get('k')?.cas).toBe(2n);
    expect(cache.bytes).toBe(cachedEntryBytes('k', sized('another value')));
    cache.withhold('k');
    cache.delete('k');
    expect([cache.bytes, cache.size]).toEqual([0, 0]);
    cache.withhold('absent');
    expect(cache.size).toBe(0);
  });

  it('holds its bound over a long seeded run of sets, gets, withholds and deletes', () => {
    const random = seeded(11);
    const cache = new ValueCache(4096);
    const withheld = new Set<string>();
    for (let step = 0; step < 20_000; step += 1) {
      const key = `k${Math.floor(random() * 200)}`;
      const roll = random();
      if (roll < 0.45) {
        cache.set(key, sized('v'.repeat(Math.floor(random() * 100))));
        withheld.delete(key);
      } else if (roll < 0.55) {
        cache.withhold(key);
        withheld.add(key);
      } else if (roll < 0.9) {
        const found = cache.get(key);
        if (withheld.has(key) && found !== undefined) throw new Error(`withheld ${key} answered at step ${step}`);
      } else {
        cache.delete(key);
        withheld.delete(key);
      }
      if (cache.bytes > cache.bytesMax) throw new Error(`bound broken at step ${step}`);
    }
    expect(cache.size).toBeGreaterThan(0);
    // The byte count stayed exact: forgetting every key brings it back to zero.
    for (let i = 0; i < 200; i += 1) cache.delete(`k${i}`);
    expect([cache.bytes, cache.size]).toEqual([0, 0]);
  });
});

describe('Replica value cache', () => {
  it('answers a get at once (readNow) only when nothing earlier on its keys is running', async () => {
    const backend = new CountingBackend();
    const replica = new Replica(backend, { tombstones: false });
    await replica.apply(setOp('k', '1'), { cas: 1n, nowMs: NOW });
    await new Promise((resolve) => setImmediate(resolve)); // the call's bookkeeping settles
    expect(replica.readNow(getOp('k'), NOW)).toMatchObject({ kind: 'values', items: [expect.objectContaining({ key: 'k' })] });
    const write = replica.apply(setOp('k', '2'), { cas: 2n, nowMs: NOW });
    expect(replica.readNow(getOp('k'), NOW)).toBeNull(); // the write is still running
    await write;
    await new Promise((resolve) => setImmediate(resolve));
    expect(values(replica.readNow(getOp('k'), NOW) as Reply)).toEqual([['k', '2']]);
    // A key neither cached nor known absent needs the backend: not now.
    await backend.set('elsewhere', entry('v', 9n));
    expect(replica.readNow(getOp('elsewhere'), NOW)).toBeNull();
  });

  it('serves gets and read-modify-writes of entries it wrote without a backend read', async () => {
    const backend = new CountingBackend();
    const replica = new Replica(backend, { tombstones: false });
    await replica.apply(setOp('k', '1'), { cas: 1n, nowMs: NOW });
    for (let round = 0; round < 5; round += 1) expect(values(await replica.read(getOp('k', 'k'), NOW))).toEqual([['k', '1'], ['k', '1']]);
    expect(await replica.apply(incrOp('k'), { cas: 2n, nowMs: NOW })).toEqual({ kind: 'number', value: 2n, cas: 2n });
    expect(await replica.apply(appendOp('k', 'x'), { cas: 3n, nowMs: NOW })).toEqual({ kind: 'stored', cas: 3n });
    expect(values(await replica.read(getOp('k'), NOW))).toEqual([['k', '2x']]);
    expect(backend.gets).toBe(0);
    expect(backend.sets).toBe(3);
    // A key it never saw is read from the backend once, then cached.
    await backend.set('other', entry('v', 9n));
    expect(values(await replica.read(getOp('other'), NOW))).toEqual([['other', 'v']]);
    expect(values(await replica.read(getOp('other'), NOW))).toEqual([['other', 'v']]);
    expect(backend.gets).toBe(1);
    expect(replica.cacheUsage()).toMatchObject({ entries: 2 });
  });

  it('keeps no trace of a write whose outcome is unknown', async () => {
    const backend = new CountingBackend();
    const replica = new Replica(backend, { tombstones: false });
    await replica.apply(setOp('k', 'one'), { cas: 1n, nowMs: NOW });
    await replica.apply(setOp('j', 'one'), { cas: 2n, nowMs: NOW });
    expect(replica.cacheUsage().entries).toBe(2);
    backend.failNextSetAfterStoring = true;
    await expect(replica.apply(setOp('k', 'two'), { cas: 3n, nowMs: NOW })).rejects.toMatchObject({ code: 'BACKEND_TIMEOUT' });
    expect(replica.cacheUsage()).toMatchObject({ entries: 0, bytes: 0 });
    replica.acknowledgeReset();
    // The backend did store it: the next read must ask the backend, not answer "one".
    const getsBefore = backend.gets;
    expect(values(await replica.read(getOp('k', 'j'), NOW))).toEqual([['k', 'two'], ['j', 'one']]);
    expect(backend.gets).toBe(getsBefore + 2);
  });

  it('stays within its byte bound, evicting the least recently used', async () => {
    const backend = new CountingBackend();
    const cacheBytesMax = 4000;
    const replica = new Replica(backend, { tombstones: false, cacheBytesMax });
    const value = 'v'.repeat(100);
    for (let index = 0; index < 100; index += 1) {
      await replica.apply(setOp(`key${index}`, value), { cas: BigInt(index + 1), nowMs: NOW });
      expect(replica.cacheUsage().bytes).toBeLessThanOrEqual(cacheBytesMax);
    }
    const held = replica.cacheUsage().entries;
    expect(held).toBeGreaterThan(0);
    expect(held).toBeLessThan(100);
    // The most recent ones are held; the oldest were evicted and are read back from the backend.
    expect(values(await replica.read(getOp('key99'), NOW))).toEqual([['key99', value]]);
    expect(backend.gets).toBe(0);
    expect(values(await replica.read(getOp('key0'), NOW))).toEqual([['key0', value]]);
    expect(backend.gets).toBe(1);
    expect(replica.cacheUsage().bytes).toBeLessThanOrEqual(cacheBytesMax);
    // An entry larger than the bound is never cached, and is still stored.
    await replica.apply(setOp('big', 'b'.repeat(cacheBytesMax)), { cas: 200n, nowMs: NOW });
    expect(itemAt(values(await replica.read(getOp('big'), NOW)), 0)[1]).toHaveLength(cacheBytesMax);
    expect(backend.gets).toBe(2);
  });

  it('is emptied by reset, flush_all and acknowledgeReset', async () => {
    const backend = new CountingBackend();
    const replica = new Replica(backend, { tombstones: true });
    await replica.apply(setOp('a', '1'), { cas: 1n, nowMs: NOW });
    await replica.reset();
    expect(replica.cacheUsage().entries).toBe(0);
    expect(values(await replica.read(getOp('a'), NOW))).toEqual([]);
    await replica.apply(setOp('b', '1'), { cas: 2n, nowMs: NOW });
    await replica.apply({ kind: 'delete', key: 'b' }, { cas: 3n, nowMs: NOW });
    // The tombstone is cached: the delete read nothing, and neither does this get.
    expect(values(await replica.read(getOp('b'), NOW))).toEqual([]);
    expect(backend.gets).toBe(0);
    expect(await replica.fetch(['b'])).toEqual([['b', entry('', 3n, { tombstone: true })]]);
    replica.acknowledgeReset();
    expect(replica.cacheUsage().entries).toBe(0);
  });

  it('does not trust a cached entry that has expired by the wall clock', async () => {
    const backend = new CountingBackend();
    const replica = new Replica(backend, { tombstones: false });
    // Expired by the wall clock, live at the op's time: the backend decides, as without a cache.
    await replica.apply(setOp('t', 'x', Date.now() - 1), { cas: 1n, nowMs: NOW });
    expect(values(await replica.read(getOp('t'), NOW))).toEqual([['t', 'x']]);
    expect(backend.gets).toBe(1);
    expect(values(await replica.read(getOp('t'), Date.now()))).toEqual([]);
  });
});

describe('Replica on a real memcached', () => {
  let memcached: MemcachedInstance;
  let backend: MemcachedBackend;

  beforeAll(async () => {
    memcached = await startMemcached();
    backend = new MemcachedBackend({ host: memcached.host, port: memcached.port, opTimeoutMs: 300 });
  });

  afterAll(async () => {
    await backend?.close();
    await memcached?.stop();
  });

  it('rejects with BACKEND_DOWN when nothing listens', async () => {
    const port = await freePort();
    const down = new MemcachedBackend({ host: '127.0.0.1', port, opTimeoutMs: 500 });
    const replica = new Replica(down, { tombstones: false });
    const startedMs = Date.now();
    const failure = await replica.apply(setOp('k', 'v'), { cas: 1n, nowMs: NOW }).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(StoreError);
    expect(failure).toMatchObject({ code: 'BACKEND_DOWN' });
    expect((failure as Error).message).toContain(`127.0.0.1:${port}`);
    expect(Date.now() - startedMs).toBeLessThan(2000);
    expect((await replica.health()).ok).toBe(false);
    await down.close();
  });

  it('rejects with BACKEND_TIMEOUT when memcached is paused, then recovers', async () => {
    const replica = new Replica(backend, { tombstones: false });
    await replica.apply(setOp('p', 'before'), { cas: 1n, nowMs: NOW });
    process.kill(memcached.pid, 'SIGSTOP');
    await untilStopped(memcached.pid);
    try {
      // p is cached (the replica wrote it); q must be read from memcached.
      expect(values(await replica.read(getOp('p'), NOW))).toEqual([['p', 'before']]);
      await expect(replica.read(getOp('q'), NOW)).rejects.toMatchObject({ code: 'BACKEND_TIMEOUT' });
    } finally {
      process.kill(memcached.pid, 'SIGCONT');
    }
    expect(values(await replica.read(getOp('p'), NOW))).toEqual([['p', 'before']]);
  });

  it('never serves from a restarted (emptied) memcached until the reset is acknowledged', async () => {
    const replica = new Replica(backend, { tombstones: false });
    await replica.apply(setOp('r', 'before'), { cas: 1n, nowMs: NOW });
    const before = await replica.health();
    expect(before.ok).toBe(true);
    await memcached.restart();
    // The next backend call reconnects, finds a new epoch, and is refused; from then on the replica
    // refuses everything, cached entries included (r would read as absent from memcached).
    await expect(replica.read(getOp('q'), NOW)).rejects.toMatchObject({ code: 'BACKEND_RESET' });
    await expect(replica.read(getOp('r'), NOW)).rejects.toMatchObject({ code: 'BACKEND_RESET' });
    await expect(replica.apply(setOp('s', 'after'), { cas: 2n, nowMs: NOW })).rejects.toMatchObject({ code: 'BACKEND_RESET' });
    const after = await replica.health();
    expect(after.ok).toBe(true);
    expect(after.epoch).not.toBe(before.epoch);
    replica.acknowledgeReset();
    expect(await replica.apply(setOp('s', 'after'), { cas: 2n, nowMs: NOW })).toEqual({ kind: 'stored', cas: 2n });
    expect(values(await replica.read(getOp('r', 's'), NOW))).toEqual([['s', 'after']]);
    expect((await replica.health()).epoch).toBe(after.epoch);
  });

  it('queues calls beyond inFlightMax and completes them all, in order per key', async () => {
    const narrow = new MemcachedBackend({ host: memcached.host, port: memcached.port, inFlightMax: 2 });
    const replica = new Replica(narrow, { tombstones: false });
    const replies = await Promise.all(
      Array.from({ length: 200 }, (_unused, index) => replica.apply(incrOp(`n${index % 4}`), { cas: BigInt(index + 1), nowMs: NOW })),
    );
    const counts = replies.map((reply) => (reply.kind === 'number' ? Number(reply.value) : -1));
    // initial 0 creates the key holding 0; each later incr adds one, per key in call order.
    expect(counts).toEqual(Array.from({ length: 200 }, (_unused, index) => Math.floor(index / 4)));
    await narrow.close();
  });

  it('rebuilds its key index from memcached with metadump', async () => {
    const writer = new Replica(backend, { tombstones: true });
    await writer.reset();
    await writer.apply(setOp('x', '1'), { cas: 1n, nowMs: NOW });
    await writer.apply(setOp('y z', '2'), { cas: 2n, nowMs: NOW });
    await writer.apply({ kind: 'delete', key: 'x' }, { cas: 3n, nowMs: NOW });
    await writer.apply(setOp('\xff'.repeat(250), '3'), { cas: 4n, nowMs: NOW });
    const restarted = new Replica(backend, { tombstones: true });
    expect(restarted.keyCount()).toBe(0);
    expect(await restarted.loadIndex()).toBe(3);
    expect(await restarted.fetch(null)).toEqual(await writer.fetch(null));
  });
});
