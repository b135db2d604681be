/**
 * Replica against its backend: calls on one key applied in call order over a backend that answers
 * out of order, different keys run concurrently, barriers (flush_all, reset, fetch of all keys),
 * a fetch of a large replica in key order without holding the event loop.
 * After a write that failed or was refused, or a reset, it may have missed a write, so it serves
 * only what it can still vouch for until the reset is acknowledged. Against a real memcached:
 * down, paused (timeout), restarted (new epoch), calls queued beyond inFlightMax, and the key index
 * rebuilt with metadump.
 */

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { applyToEntry } from '../src/store/apply.ts';
import { MemcachedBackend } from '../src/store/memcached.ts';
import { MemoryBackend } from '../src/store/memory.ts';
import { Replica } from '../src/store/replica.ts';
import { StoreError, type Entry, type KeyedEntry, type KeyedPair, type Op } from '../src/store/types.ts';
import { mulberry32 as seeded } from '../src/runtime/random.ts';
import { startMemcached, type MemcachedInstance } from './support/memcached.ts';
import { freePort } from '../src/jepsen/cluster.ts';
import { readFileSync } from 'node:fs';
import * as net from 'node:net';
import { refused } from '../src/protocol/refusals.ts';
import { itemAt } from '../src/runtime/item-at.ts';
import { appendOp, entry, getOp, incrOp, NOW, setOp, values } from './support/replica-kit.ts';
import { countTurns } from './support/turns.ts';

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

/** The in-memory backend, whose next set fails with `failNext` when one is given. */
class FlakyBackend extends MemoryBackend {
  failNext: StoreError | null = null;
  override async set(key: string, stored: Entry): Promise<void> {
    const failure = this.failNext;
    this.failNext = null;
    if (failure !== null) throw failure;
    return super.set(key, stored);
  }
}

/** An in-memory backend whose writes of the key `slow` wait until `release` is called. */
function gatedOnSlowKey(): { backend: MemoryBackend; release: () => void } {
  let release: () => void = () => {};
  const gate = new Promise<void>((resolve) => (release = resolve));
  class GatedBackend extends MemoryBackend {
    // A plain set only writes (no read first), so the gate is on the write.
    override async set(key: string, stored: Entry): Promise<void> {
      if (key === 'slow') await gate;
      return super.set(key, stored);
    }
  }
  return { backend: new GatedBackend(), release };
}

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
    const { backend, release } = gatedOnSlowKey();
    const replica = new Replica(backend, { tombstones: false });
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

  it('settles once every earlier call has, holding up no later call on the same keys (a compaction)', async () => {
    const { backend, release } = gatedOnSlowKey();
    const replica = new Replica(backend, { tombstones: false });
    await replica.apply(setOp('done', 'd1'), { cas: 1n, nowMs: NOW });
    const slow = replica.apply(setOp('slow', 's'), { cas: 2n, nowMs: NOW });
    let settled = false;
    const settling = replica.settled().then(() => {
      settled = true;
    });
    // A later write of a key the settle covers runs at once (a fetch of that key would hold it
    // up until the slow write is done); a later write of the slow key waits for that one only.
    expect(await replica.apply(setOp('done', 'd2'), { cas: 3n, nowMs: NOW })).toEqual({ kind: 'stored', cas: 3n });
    expect(values(await replica.read(getOp('done'), NOW))).toEqual([['done', 'd2']]);
    const later = replica.apply(setOp('slow', 's2'), { cas: 4n, nowMs: NOW });
    await new Promise((resolve) => setTimeout(resolve, 5));
    expect(settled).toBe(false);
    release();
    await Promise.all([slow, settling, later]);
    expect(settled).toBe(true);
    expect(values(await replica.read(getOp('slow'), NOW))).toEqual([['slow', 's2']]);
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

  it('puts entries issued behind a reset (a state transfer, a snapshot) as one batch once the reset is done', async () => {
    for (const how of ['overwrite', 'merge'] as const) await putsBehindReset(how);
  });

  async function putsBehindReset(how: 'overwrite' | 'merge'): Promise<void> {
    const calls: string[] = [];
    class CountingBackend extends JitteryBackend {
      override async set(key: string, stored: Entry): Promise<void> {
        calls.push(`set ${key}`);
        return super.set(key, stored);
      }
      override async setMany(entries: readonly KeyedPair[]): Promise<void> {
        calls.push(`setMany ${entries.length}`);
        return super.setMany(entries);
      }
      override async flush(): Promise<void> {
        calls.push('flush');
        return super.flush();
      }
    }
    const replica = new Replica(new CountingBackend(seeded(5)), { tombstones: false });
    await replica.apply(setOp('k0', 'old'), { cas: 1n, nowMs: NOW });
    const reset = replica.reset();
    const transferred = Array.from({ length: 500 }, (_, index): [string, Entry] => [`k${index}`, entry(`v${index}`, BigInt(10 + index))]);
    const put = replica.put(transferred, how);
    const later = replica.apply(setOp('k0', 'newest'), { cas: 1000n, nowMs: NOW });
    await Promise.all([reset, put, later]);
    expect(calls.slice(1), how).toEqual(['flush', 'setMany 500', 'set k0']);
    expect(values(await replica.read(getOp('k0', 'k499'), NOW))).toEqual([['k0', 'newest'], ['k499', 'v499']]);
    expect(replica.keyCount()).toBe(500);
  }

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

  it('after a reset that kept the backend (a failed write), a fetch of the whole replica still lists every key it holds', async () => {
    const backend = new FlakyBackend();
    const replica = new Replica(backend, { tombstones: false });
    for (let index = 0; index < 5; index += 1) await replica.apply(setOp(`k${index}`, `v${index}`), { cas: BigInt(index + 1), nowMs: NOW });
    backend.failNext = new StoreError('BACKEND_FAILED', 'injected: out of memory');
    await expect(replica.apply(setOp('k9', 'lost'), { cas: 10n, nowMs: NOW })).rejects.toMatchObject({ code: 'BACKEND_FAILED' });
    // The log replays onto the kept replica what came after its last good point: here k9 only.
    replica.acknowledgeReset();
    await replica.apply(setOp('k9', 'again'), { cas: 10n, nowMs: NOW });
    // A state transfer (or a snapshot) read now must carry k0..k4, which memcached still holds.
    const fetched = await replica.fetch(null);
    expect(fetched.map(([key, entry]) => [key, entry.value.toString()])).toEqual([
      ['k0', 'v0'], ['k1', 'v1'], ['k2', 'v2'], ['k3', 'v3'], ['k4', 'v4'], ['k9', 'again'],
    ]);
  });

  it('refuses everything after a failed write until the reset is acknowledged, then works again', async () => {
    const backend = new FlakyBackend();
    backend.failNext = new StoreError('BACKEND_DOWN', 'injected');
    const replica = new Replica(backend, { tombstones: false });
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

describe('Replica over a large replica', () => {
  it('reads every key back in key order, letting the event loop turn every few thousand keys', async () => {
    const backend = new MemoryBackend();
    const replica = new Replica(backend, { tombstones: false });
    await replica.loadIndex();
    const count = 60_000;
    const keys = Array.from({ length: count }, (_, i) => `k${(i * 7919) % count}`);
    // Pipelined without awaiting each: the index and the value cache know every key.
    await Promise.all(keys.map((key, i) => replica.apply(setOp(key, 'v'), { cas: BigInt(i + 1), nowMs: NOW })));
    const turns = countTurns();
    const fetched = await replica.fetch(null);
    expect(fetched.length).toBe(count);
    const order = fetched.map(([key]) => key);
    expect(order).toEqual([...keys].sort());
    // 60,000 known keys read in one turn would let no timer run meanwhile.
    expect(turns.stop()).toBeGreaterThanOrEqual(3);
  });
});

describe('Replica read paced by its reader', () => {
  /** A MemoryBackend that counts the keys read from it. */
  class CountingBackend extends MemoryBackend {
    keysRead = 0;
    override async getMany(keys: readonly string[]): Promise<Array<Entry | undefined>> {
      this.keysRead += keys.length;
      return super.getMany(keys);
    }
  }

  it('reads each slice only when asked, in key order, each key as it is when its slice is read', async () => {
    const backend = new CountingBackend();
    // No value cache: every value is read from the backend.
    const replica = new Replica(backend, { tombstones: false, replay: 'skip-applied', cacheBytesMax: 0 });
    await replica.loadIndex();
    const count = 60_000;
    const key = (index: number): string => `k${String(index).padStart(5, '0')}`;
    await Promise.all(Array.from({ length: count }, (_, i) => replica.apply(setOp(key((i * 7919) % count), 'v'), { cas: BigInt(i + 1), nowMs: NOW })));
    const read = replica.readPaced();
    const first = await read.next();
    expect(first.done).toBe(false);
    expect(first.entries.length).toBeGreaterThan(0);
    expect(first.entries.length).toBeLessThan(count / 2);
    // Not asked: nothing more is read, however long it waits.
    const readSoFar = backend.keysRead;
    for (let turn = 0; turn < 50; turn += 1) await new Promise((resolve) => setImmediate(resolve));
    expect(backend.keysRead).toBe(readSoFar);
    // A key written now, before its slice is read, is read as written.
    await replica.apply(setOp(key(count - 1), 'late'), { cas: BigInt(count + 1), nowMs: NOW });
    const slices = [first];
    for (let guard = 0; guard < 100 && !(slices.at(-1)?.done ?? true); guard += 1) slices.push(await read.next());
    const entries = slices.flatMap((slice) => slice.entries);
    expect(entries.map(([each]) => each)).toEqual(Array.from({ length: count }, (_, i) => key(i)));
    expect(entries.at(-1)?.[1].value.toString()).toBe('late');
  });
});

describe('Replica over a large put in key order', () => {
  const COUNT = 60_000;
  const key = (index: number): string => `p${String(index).padStart(5, '0')}`;
  const entries = (value: string): KeyedEntry[] =>
    Array.from({ length: COUNT }, (_, index) => [key(index), entry(value, BigInt(index + 1))]);

  it('puts in slices, the event loop turning between them; a later call on one of its keys waits for all of it, one on another key does not', async () => {
    const replica = new Replica(new MemoryBackend(), { tombstones: false });
    await replica.loadIndex();
    const order: string[] = [];
    const turns = countTurns();
    const put = replica.put(entries('bulk'), 'merge').then(() => order.push('put'));
    const last = replica.read(getOp(key(COUNT - 1)), NOW).then((reply) => {
      order.push('read of its last key');
      return values(reply);
    });
    const other = replica.apply(setOp('other', 'o'), { cas: 1n, nowMs: NOW }).then(() => order.push('write of another key'));
    await Promise.all([put, last, other]);
    const turned = turns.stop();
    expect(order).toEqual(['write of another key', 'put', 'read of its last key']);
    expect(await last).toEqual([[key(COUNT - 1), 'bulk']]);
    // 60,000 entries decided and written in one turn would let nothing else run meanwhile.
    expect(turned).toBeGreaterThanOrEqual(3);
    expect((await replica.fetch(null)).length).toBe(COUNT + 1);
  });

  it('waits for the calls issued before it on its keys', async () => {
    const { backend, release } = gatedOnSlowKey();
    const replica = new Replica(backend, { tombstones: false });
    await replica.loadIndex();
    const early = replica.apply(setOp('slow', 'early'), { cas: 1n, nowMs: NOW });
    const bulk: KeyedEntry[] = [...entries('bulk'), ['slow', entry('bulk', 2n)]];
    const put = replica.put(bulk, 'overwrite');
    await new Promise((resolve) => setTimeout(resolve, 20));
    release();
    await Promise.all([early, put]);
    expect(values(await replica.read(getOp('slow'), NOW))).toEqual([['slow', 'bulk']]);
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

  it('lists its keys, and its index loads, beside a key another client wrote in bytes that are not UTF-8', async () => {
    // metadump URI-encodes the key's bytes: read as UTF-8 (decodeURIComponent), they threw out
    // of the socket's data handler and ended the process.
    const foreign = net.connect(memcached.port, memcached.host);
    await new Promise((resolve) => foreign.once('connect', resolve));
    foreign.write(Buffer.concat([Buffer.from('set other', 'latin1'), Buffer.from([0xe9, 0xff]), Buffer.from(' 0 0 1\r\nx\r\n')]));
    expect(String(await new Promise((resolve) => foreign.once('data', resolve)))).toBe('STORED\r\n');
    foreign.destroy();
    const replica = new Replica(backend, { tombstones: false });
    await replica.apply(setOp('plain', 'p'), { cas: 1n, nowMs: NOW });
    await replica.apply(setOp('caf\u00e9', 'c'), { cas: 2n, nowMs: NOW });
    const keys = await backend.keys();
    expect(keys).toEqual(expect.arrayContaining(['plain', 'caf\u00e9', 'other\u00e9\u00ff']));
    const reloaded = new Replica(backend, { tombstones: false });
    expect(await reloaded.loadIndex()).toBeGreaterThanOrEqual(2);
    expect(values(await reloaded.read(getOp('caf\u00e9'), NOW))).toEqual([['caf\u00e9', 'c']]);
  });

  it('reads every key back at start for its versions only: no value held, each key settled in the index', async () => {
    // A controller restarted beside millions of keys held every value until the read was in, only
    // for the mode to learn the versions (eventual and causal mode, at start).
    const writer = new Replica(backend, { tombstones: true });
    const keys = Array.from({ length: 300 }, (_, index) => `versions-${String(index).padStart(3, '0')}`);
    await Promise.all(keys.map((key, index) => writer.apply(setOp(key, `value-${index}`), { cas: BigInt(1000 + index), nowMs: NOW })));
    const restarted = new Replica(backend, { tombstones: true });
    await restarted.loadIndex();
    expect(restarted.indexRecord('versions-007')).toMatchObject({ listed: true, settled: false });
    const mine = (entries: KeyedEntry[]): KeyedEntry[] => entries.filter(([key]) => key.startsWith('versions-'));
    const versions = mine(await restarted.fetch(null, { versionsOnly: true }));
    expect(versions.map(([key]) => key)).toEqual(keys);
    expect(versions.every(([, held]) => held.value.length === 0)).toBe(true);
    expect(versions.map(([, held]) => held.cas)).toEqual(keys.map((_, index) => BigInt(1000 + index)));
    expect(restarted.indexRecord('versions-007')).toMatchObject({ listed: false, settled: true, cas: 1007n });
    // The values are still there for a read that wants them.
    const whole = mine(await restarted.fetch(null));
    expect(whole.map(([, held]) => held.value.toString())).toEqual(keys.map((_, index) => `value-${index}`));
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

  it('sends nothing on a new connection before its epoch check: two gets in one tick after a restart are both refused', async () => {
    const fresh = new MemcachedBackend({ host: memcached.host, port: memcached.port, opTimeoutMs: 300 });
    await fresh.set('q', entry('before', 1n), undefined);
    await fresh.health(); // the epoch is known: a new connection is checked against it
    await memcached.restart();
    await new Promise((resolve) => setTimeout(resolve, 50)); // the old connection has seen its close
    // The first opens a connection and starts its check; the second must wait for that check, not
    // be pipelined behind it (the emptied memcached would answer "not found": q read as absent).
    const both = await Promise.allSettled([fresh.get('q'), fresh.get('q')]);
    expect(both.map((outcome) => (outcome.status === 'rejected' ? (outcome.reason as { code?: string }).code : outcome.value))).toEqual([
      'BACKEND_RESET',
      'BACKEND_RESET',
    ]);
    await fresh.close();
    // The suite's shared backend takes the new epoch too.
    await backend.health();
    backend.acknowledgeReset();
  });

  it('takes the first connection\'s epoch when none is known yet: a restart before the first poll is still seen', async () => {
    const fresh = new MemcachedBackend({ host: memcached.host, port: memcached.port, opTimeoutMs: 300 });
    await fresh.set('p', entry('before', 1n), undefined); // no health() and no expectEpoch: nothing known
    await memcached.restart();
    await new Promise((resolve) => setTimeout(resolve, 50)); // the old connection has seen its close
    await expect(fresh.get('p')).rejects.toMatchObject({ code: 'BACKEND_RESET' });
    expect((await fresh.health()).detail).toMatch(/restarted empty/);
    await fresh.close();
    // The suite's shared backend takes the new epoch too.
    await backend.health();
    backend.acknowledgeReset();
  });

  it('after a restart found empty, merges a rebuild by its index, reading no key from memcached', async () => {
    class CountingBackend extends MemcachedBackend {
      gets = 0;
      override get(key: string): Promise<Entry | undefined> {
        this.gets += 1;
        return super.get(key);
      }
    }
    const counting = new CountingBackend({ host: memcached.host, port: memcached.port, opTimeoutMs: 300 });
    const replica = new Replica(counting, { tombstones: false });
    await replica.apply(setOp('r', 'before'), { cas: 1n, nowMs: NOW });
    await replica.health();
    await memcached.restart();
    await expect(replica.read(getOp('q'), NOW)).rejects.toMatchObject({ code: 'BACKEND_RESET' });
    await replica.health();
    replica.acknowledgeReset();
    const rebuilt = Array.from({ length: 300 }, (_, index): [string, Entry] => [`m${index}`, entry(`v${index}`, BigInt(10 + index))]);
    const before = counting.gets;
    await replica.put(rebuilt, 'merge');
    expect(counting.gets - before).toBe(0);
    expect(values(await replica.read(getOp('m0', 'm299', 'r'), NOW))).toEqual([['m0', 'v0'], ['m299', 'v299']]);
    // A reset the backend cannot vouch for (a failed write, say) knows nothing: a merge reads first.
    replica.acknowledgeReset();
    await replica.put([['m1', entry('older', 5n)]], 'merge');
    expect(counting.gets - before).toBe(1);
    expect(values(await replica.read(getOp('m1'), NOW))).toEqual([['m1', 'v1']]);
    await counting.close();
    // The suite's shared backend takes the new epoch too.
    await backend.health();
    backend.acknowledgeReset();
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

  it('indexes every key right after a load of 300,000, and right after reading them all', async () => {
    // memcached's crawler, walking its LRUs, misses items its maintainer moves between them: 20-35
    // keys right after a load, thousands right after they were all read (the union of listings
    // until one found nothing new once missed 5,190), and the complete index made of it read them
    // as absent. The hash table's walk lists them all.
    const large = await startMemcached({ memoryMb: 256 });
    const loaded = new MemcachedBackend({ host: large.host, port: large.port });
    try {
      const count = 300_000;
      const value = entry('v'.repeat(100), 1n);
      for (let start = 0; start < count; start += 10_000) {
        await loaded.setMany(Array.from({ length: 10_000 }, (_, i): KeyedPair => [`user:${start + i}:profile`, value]));
      }
      const restarted = new Replica(loaded, { tombstones: false });
      expect(await restarted.loadIndex()).toBe(count);
      // loadIndex read every key: the maintainer now moves them from one LRU to another.
      expect(await loaded.keys()).toHaveLength(count);
      expect(await new Replica(loaded, { tombstones: false }).loadIndex()).toBe(count);
    } finally {
      await loaded.close();
      await large.stop();
    }
  }, 60_000);
});
