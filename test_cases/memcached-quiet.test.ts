/**
 * Quiet stores against a real memcached: a store sent quietly (setq, addq, replaceq) is taken as
 * done at once, and memcached answers it only if it fails. What must hold: every quiet store is
 * vouched for by a later reply or reported failed; a refused one is reported with memcached's
 * refusal, and no request behind it is answered from the key as the refusal left it; a memcached
 * that stops answering or goes away has its unvouched stores reported, never forgotten.
 */

import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { refused } from '../src/protocol/refusals.ts';
import { MemcachedBackend } from '../src/store/memcached.ts';
import { Replica } from '../src/store/replica.ts';
import { StoreError, type Entry } from '../src/store/types.ts';
import { startMemcached, type MemcachedInstance } from './support/memcached.ts';

const entry = (text: string, cas: bigint): Entry => ({ value: Buffer.from(text), flags: 0, expiresAtMs: 0, cas });
/** Over memcached's default item size limit (1 MiB): refused as too large. */
const tooLarge = (cas: bigint): Entry => ({ value: Buffer.alloc(2 * 1024 * 1024, 0x7a), flags: 0, expiresAtMs: 0, cas });

function failuresOf(backend: MemcachedBackend): StoreError[] {
  const failures: StoreError[] = [];
  backend.onQuietFailure = (error) => failures.push(error);
  return failures;
}

/** A backend whose connection is open and verified (setQuiet sends only on such a one). */
async function openBackend(
  server: MemcachedInstance,
  options: { opTimeoutMs?: number; inFlightMax?: number } = {},
): Promise<MemcachedBackend> {
  const { opTimeoutMs = 2000, inFlightMax } = options;
  const backend = new MemcachedBackend({ host: server.host, port: server.port, opTimeoutMs, inFlightMax });
  await backend.get('warm-up');
  return backend;
}

describe('quiet stores on a memcached that answers', () => {
  let server: MemcachedInstance;
  const opened: MemcachedBackend[] = [];

  beforeAll(async () => {
    server = await startMemcached();
  });

  afterEach(async () => {
    for (const backend of opened.splice(0)) await backend.close();
  });

  afterAll(async () => {
    await server?.stop();
  });

  it('stores each one, and settle resolves once a reply has vouched for them all', async () => {
    const backend = await openBackend(server);
    opened.push(backend);
    const failures = failuresOf(backend);
    for (let index = 0; index < 50; index++) expect(backend.setQuiet(`q${index}`, entry(`v${index}`, BigInt(index + 1)), false)).toBe(true);
    await backend.settle();
    for (let index = 0; index < 50; index += 7) expect((await backend.get(`q${index}`))?.value.toString()).toBe(`v${index}`);
    // A replace of a held key, quietly, in order with a get behind it on the same connection.
    expect(backend.setQuiet('q0', entry('newer', 100n), true)).toBe(true);
    expect((await backend.get('q0'))?.value.toString()).toBe('newer');
    expect(failures).toEqual([]);
  });

  it('keeps a window of 8 in flight moving: runs of quiet stores are vouched for as they go, none waits for the sweep', async () => {
    const backend = await openBackend(server, { inFlightMax: 8 });
    opened.push(backend);
    const failures = failuresOf(backend);
    for (let index = 0; index < 1000; index++) backend.setQuiet(`w${index}`, entry(`w${index}`, 1n), false);
    const startedMs = performance.now();
    await backend.settle();
    // The sweep runs every 500 ms here: settling 1000 stores through 8 slots did not wait for it.
    expect(performance.now() - startedMs).toBeLessThan(450);
    expect((await backend.get('w999'))?.value.toString()).toBe('w999');
    expect(failures).toEqual([]);
  });

  it('holds quiet stores only briefly: with nothing else to send, another client sees them within 250 ms, long before the sweep', async () => {
    // The sweep (opTimeoutMs / 4) runs every 5 s here: only the hold's own timer writes them.
    const backend = await openBackend(server, { opTimeoutMs: 20_000 });
    opened.push(backend);
    const failures = failuresOf(backend);
    const other = await openBackend(server);
    opened.push(other);
    for (let index = 0; index < 5; index++) expect(backend.setQuiet(`h${index}`, entry(`h${index}`, 1n), false)).toBe(true);
    const startedMs = performance.now();
    let seen: string | undefined;
    while (seen === undefined && performance.now() - startedMs < 2000) {
      seen = (await other.get('h4'))?.value.toString();
      if (seen === undefined) await new Promise((resolve) => setTimeout(resolve, 5));
    }
    expect(seen).toBe('h4');
    expect(performance.now() - startedMs).toBeLessThan(250);
    expect(failures).toEqual([]);
  });

  it('reports a refused one with memcached\'s refusal, and answers no request behind it from the key as the refusal left it', async () => {
    const backend = await openBackend(server);
    opened.push(backend);
    const failures = failuresOf(backend);
    await backend.set('held', entry('old', 1n), false);
    // Written in the same socket write: memcached refuses the replace, then does the get.
    expect(backend.setQuiet('held', tooLarge(2n), true)).toBe(true);
    const behind = backend.get('held').then((got) => got?.value.toString(), (error: unknown) => error);
    const read = await behind;
    expect(read).toBeInstanceOf(StoreError);
    expect((read as StoreError).code).toBe('BACKEND_DOWN');
    expect(failures).toHaveLength(1);
    expect(failures[0]).toMatchObject({ code: 'BACKEND_FAILED', untouched: true, refusal: refused('too_large') });
    // A new connection serves again; memcached kept what the key held.
    expect((await backend.get('held'))?.value.toString()).toBe('old');
  });

  it('sends nothing quietly while its connection is not open and verified, and says so', async () => {
    const backend = new MemcachedBackend({ host: server.host, port: server.port, opTimeoutMs: 2000 });
    opened.push(backend);
    expect(backend.setQuiet('cold', entry('v', 1n), false)).toBe(false);
    await backend.get('cold');
    expect(backend.setQuiet('cold', entry('v', 1n), false)).toBe(true);
    await backend.settle();
    expect((await backend.get('cold'))?.value.toString()).toBe('v');
  });
});

describe('quiet stores on a memcached that stops answering or goes away', () => {
  let server: MemcachedInstance;

  beforeAll(async () => {
    server = await startMemcached();
  });

  afterAll(async () => {
    await server?.stop();
  });

  it('reports the unvouched ones failed, outcome unknown, within about the reply timeout of a memcached that stopped', async () => {
    const backend = await openBackend(server, { opTimeoutMs: 400 });
    const failures = failuresOf(backend);
    process.kill(server.pid, 'SIGSTOP');
    try {
      for (let index = 0; index < 3; index++) backend.setQuiet(`s${index}`, entry('v', 1n), false);
      const startedMs = performance.now();
      while (failures.length < 3 && performance.now() - startedMs < 5000) await new Promise((resolve) => setTimeout(resolve, 20));
      expect(failures.map((failure) => failure.code)).toEqual(['BACKEND_TIMEOUT', 'BACKEND_TIMEOUT', 'BACKEND_TIMEOUT']);
      expect(performance.now() - startedMs).toBeLessThan(2000);
    } finally {
      process.kill(server.pid, 'SIGCONT');
      await backend.close();
    }
  });

  it('reports them failed when its connection is lost before anything vouched for them', async () => {
    const backend = await openBackend(server);
    const failures = failuresOf(backend);
    backend.setQuiet('lost', entry('v', 1n), false);
    await backend.close();
    expect(failures.map((failure) => failure.code)).toEqual(['BACKEND_DOWN']);
  });
});

describe('a replica applying quietly', () => {
  let server: MemcachedInstance;

  beforeAll(async () => {
    server = await startMemcached();
  });

  afterAll(async () => {
    await server?.stop();
  });

  it('answers at once, serves the value from its cache, and turns suspect, telling the controller, when a store it sent was refused', async () => {
    const backend = await openBackend(server);
    const replica = new Replica(backend, { tombstones: false, replay: 'skip-applied', quietApplies: true });
    const lost: StoreError[] = [];
    replica.onStoreLost = (error) => lost.push(error);
    try {
      await replica.reset(); // the index is complete: the replica knows which keys memcached holds
      const ctx = (cas: bigint) => ({ cas, nowMs: Date.now() });
      const set = (value: Buffer) => ({ kind: 'store', verb: 'set', key: 'k', flags: 0, expiresAtMs: 0, value, casUnique: 0n } as const);
      expect(await replica.apply(set(Buffer.from('one')), ctx(1n))).toMatchObject({ kind: 'stored' });
      expect(await replica.apply(set(Buffer.from('two')), ctx(2n))).toMatchObject({ kind: 'stored' });
      expect(replica.readNow({ kind: 'get', keys: ['k'] }, Date.now())).toMatchObject({ kind: 'values', items: [{ key: 'k', value: Buffer.from('two') }] });
      // What a fetch returns is what memcached holds: it waits until a reply vouched for the stores.
      expect((await replica.fetch(['k'])).map(([key, held]) => [key, held.value.toString()])).toEqual([['k', 'two']]);
      expect((await backend.get('k'))?.value.toString()).toBe('two');
      expect(lost).toEqual([]);

      // memcached refuses the next one (too large): answered, then the replica may have missed it.
      expect(await replica.apply(set(tooLarge(3n).value), ctx(3n))).toMatchObject({ kind: 'stored' });
      const fetched = await replica.fetch(['k']).then(() => null, (error: unknown) => error);
      expect(fetched).toBeInstanceOf(StoreError);
      expect(replica.suspect).not.toBeNull();
      expect(lost.map((error) => error.code)).toContain('BACKEND_FAILED');
      expect(replica.readNow({ kind: 'get', keys: ['k'] }, Date.now())).toBeNull();
    } finally {
      await backend.close();
    }
  });

  it('applies at once, without a promise, what needs no reply from memcached, and gives the same replies and writes as apply', async () => {
    const backend = await openBackend(server);
    const replica = new Replica(backend, { tombstones: false, replay: 'skip-applied', quietApplies: true });
    try {
      await replica.reset();
      const ctx = (cas: bigint) => ({ cas, nowMs: Date.now() });
      const store = (verb: 'set' | 'add' | 'append', key: string, text: string) =>
        ({ kind: 'store', verb, key, flags: 0, expiresAtMs: 0, value: Buffer.from(text), casUnique: 0n } as const);
      expect(replica.applyNow(store('set', 'a', 'one'), ctx(1n))).toMatchObject({ kind: 'stored' });
      // Its entry known, an add is refused and an append extends it, at once.
      expect(replica.applyNow(store('add', 'a', 'x'), ctx(2n))).toMatchObject({ kind: 'not_stored' });
      expect(replica.applyNow(store('append', 'a', '+two'), ctx(3n))).toMatchObject({ kind: 'stored' });
      // Applied already (a replay): answered as such, nothing sent.
      expect(replica.applyNow(store('set', 'a', 'old'), ctx(3n))).not.toBeNull();
      expect(replica.readNow({ kind: 'get', keys: ['a'] }, Date.now())).toMatchObject({ items: [{ value: Buffer.from('one+two') }] });
      // A delete is not sent quietly: left to apply, which then runs as before.
      expect(replica.applyNow({ kind: 'delete', key: 'a', casUnique: 0n }, ctx(4n))).toBeNull();
      // A key with a call still running is left to apply too, and keeps its order.
      const pending = replica.apply(store('set', 'b', 'first'), { cas: 5n, nowMs: Date.now() });
      const later = replica.apply({ kind: 'delete', key: 'b', casUnique: 0n }, ctx(6n));
      expect(replica.applyNow(store('set', 'b', 'second'), ctx(7n))).toBeNull();
      await Promise.all([pending, later]);
      expect(await replica.apply({ kind: 'delete', key: 'a', casUnique: 0n }, ctx(8n))).toMatchObject({ kind: 'deleted' });
      await backend.settle();
      expect(await backend.get('a')).toBeUndefined();
      expect(await backend.get('b')).toBeUndefined();
      expect(replica.suspect).toBeNull();
    } finally {
      await backend.close();
    }
  });
});
