/**
 * The KVBackend contract, run against both adapters (in-memory and a real memcached through
 * memjs): entries round-trip exactly (flags, expiry, 64-bit cas, tombstone bit, binary values),
 * every key our protocol accepts is stored under its own name, delete/flush remove, health
 * reports a stable epoch, and the backend can list its keys.
 */

import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { clockMs } from '../src/runtime/clock.ts';
import { setWallClockOffset, wallClockEnv } from '../src/jepsen/wall-clock.ts';
import { decodeEntry, encodeEntry, EXPIRY_SLACK_SECONDS, keyFromMemcachedKey, memcachedExptimeSeconds, memcachedKey } from '../src/store/codec.ts';
import { MemcachedBackend } from '../src/store/memcached.ts';
import { MemoryBackend } from '../src/store/memory.ts';
import { StoreError, type Entry, type KVBackend } from '../src/store/types.ts';
import { startMemcached, type MemcachedInstance } from './support/memcached.ts';
import { refused } from '../src/protocol/refusals.ts';

type ListingBackend = KVBackend & { keys(): Promise<string[]> };

interface Harness {
  open(): Promise<ListingBackend>;
  close(): Promise<void>;
}

function memoryHarness(): Harness {
  return { open: async () => new MemoryBackend(), close: async () => {} };
}

function memcachedHarness(): Harness {
  let server: MemcachedInstance | null = null;
  const opened: MemcachedBackend[] = [];
  return {
    open: async () => {
      server ??= await startMemcached();
      const backend = new MemcachedBackend({ host: server.host, port: server.port, opTimeoutMs: 2000 });
      opened.push(backend);
      return backend;
    },
    close: async () => {
      for (const backend of opened) await backend.close();
      await server?.stop();
    },
  };
}

const allBytes = Buffer.from(Array.from({ length: 256 }, (_unused, byte) => byte));

const ENTRIES: Array<[name: string, entry: Entry]> = [
  ['a plain value', { value: Buffer.from('hello'), flags: 0, expiresAtMs: 0, cas: 1n }],
  ['every byte value and max flags', { value: allBytes, flags: 0xffffffff, expiresAtMs: 0, cas: 2n }],
  ['an empty value', { value: Buffer.alloc(0), flags: 7, expiresAtMs: 0, cas: 3n }],
  ['a 64-bit cas', { value: Buffer.from('x'), flags: 1, expiresAtMs: 0, cas: (1n << 64n) - 1n }],
  ['an expiry far ahead', { value: Buffer.from('e'), flags: 2, expiresAtMs: Date.now() + 3_600_000, cas: 5n }],
  ['a tombstone', { value: Buffer.alloc(0), flags: 0, expiresAtMs: 0, cas: 6n, tombstone: true }],
  ['a 100 KiB value', { value: Buffer.alloc(100 * 1024, 0x61), flags: 0, expiresAtMs: 0, cas: 7n }],
];

/** Keys our protocols accept: printable, with '%', binary-protocol bytes, and 250-byte keys. */
const KEYS: string[] = [
  'plain',
  'with%percent',
  '%41', // must not collide with 'A'
  'A',
  'space in key',
  'tab\tand\r\nnewline',
  'high\xff\x80bytes',
  'k'.repeat(250),
  '\xfe'.repeat(250),
  '\xfe'.repeat(249) + '\xfd',
  '%#looks-hashed',
];

describe.each([
  ['memory', memoryHarness],
  ['memcached', memcachedHarness],
])('KVBackend contract: %s', (_name, makeHarness) => {
  const harness = makeHarness();
  let backend: ListingBackend;

  beforeAll(async () => {
    backend = await harness.open();
  });

  afterAll(async () => {
    await harness.close();
  });

  beforeEach(async () => {
    await backend.flush();
  });

  it('reads a missing key as undefined', async () => {
    expect(await backend.get('missing')).toBeUndefined();
  });

  it.each(ENTRIES)('round-trips %s', async (_entryName, entry) => {
    await backend.set('k', entry);
    expect(await backend.get('k')).toEqual(entry);
  });

  it('stores every accepted key under its own name', async () => {
    for (const [position, key] of KEYS.entries()) {
      await backend.set(key, { value: Buffer.from(String(position)), flags: position, expiresAtMs: 0, cas: BigInt(position + 1) });
    }
    for (const [position, key] of KEYS.entries()) {
      const entry = await backend.get(key);
      expect(entry?.value.toString(), JSON.stringify(key)).toBe(String(position));
      expect(entry?.cas).toBe(BigInt(position + 1));
    }
    expect((await backend.keys()).sort()).toEqual([...KEYS].sort());
  });

  it('reads many keys in one call as it reads each: absent ones, every accepted key, every kind of entry', async () => {
    const written = [...KEYS, ...ENTRIES.map(([name]) => `entry: ${name}`)];
    for (const [position, key] of KEYS.entries()) {
      await backend.set(key, { value: Buffer.from(String(position)), flags: position, expiresAtMs: 0, cas: BigInt(position + 1) });
    }
    for (const [name, entry] of ENTRIES) await backend.set(`entry: ${name}`, entry);
    const asked = [...written, 'missing', '%#missing-hashed', 'x'.repeat(250)];
    const one = await Promise.all(asked.map((key) => backend.get(key)));
    expect(one.filter((entry) => entry !== undefined)).toHaveLength(written.length);
    expect(await backend.getMany?.(asked)).toEqual(one);
    expect(await backend.getMany?.([])).toEqual([]);
  });

  it('overwrites, deletes and flushes', async () => {
    await backend.set('a', { value: Buffer.from('1'), flags: 0, expiresAtMs: 0, cas: 1n });
    await backend.set('a', { value: Buffer.from('2'), flags: 0, expiresAtMs: 0, cas: 2n });
    await backend.set('b', { value: Buffer.from('3'), flags: 0, expiresAtMs: 0, cas: 3n });
    expect((await backend.get('a'))?.value.toString()).toBe('2');
    await backend.delete('a');
    await backend.delete('never-there');
    expect(await backend.get('a')).toBeUndefined();
    expect(await backend.get('b')).toBeDefined();
    await backend.flush();
    expect(await backend.get('b')).toBeUndefined();
    expect(await backend.keys()).toEqual([]);
  });

  it('does not share stored entries with the caller', async () => {
    const entry: Entry = { value: Buffer.from('v'), flags: 0, expiresAtMs: 0, cas: 1n };
    await backend.set('k', entry);
    entry.cas = 99n;
    const read = await backend.get('k');
    expect(read?.cas).toBe(1n);
    if (read !== undefined) read.cas = 42n;
    expect((await backend.get('k'))?.cas).toBe(1n);
  });

  it('runs many calls at once', async () => {
    const count = 500;
    await Promise.all(
      Array.from({ length: count }, (_unused, index) =>
        backend.set(`key${index}`, { value: Buffer.from(`v${index}`), flags: 0, expiresAtMs: 0, cas: BigInt(index) }),
      ),
    );
    const read = await Promise.all(Array.from({ length: count }, (_unused, index) => backend.get(`key${index}`)));
    expect(read.map((entry) => entry?.value.toString())).toEqual(Array.from({ length: count }, (_unused, index) => `v${index}`));
  });

  it('sets a batch in one call (setMany), each key as a set would', async () => {
    const batch = Array.from({ length: 200 }, (_unused, index): [string, Entry] => [
      `batch:${index}`, { value: Buffer.from(`b${index}`), flags: index, expiresAtMs: 0, cas: BigInt(index + 1) },
    ]);
    await backend.setMany(batch.slice(0, 1));
    await backend.setMany(batch);
    await backend.setMany([]);
    const read = await Promise.all(batch.map(([key]) => backend.get(key)));
    expect(read).toEqual(batch.map(([, entry]) => entry));
  });

  it('writes the entry whatever the presence hint says (a hint, not a condition)', async () => {
    const entry = (text: string, cas: bigint): Entry => ({ value: Buffer.from(text), flags: 0, expiresAtMs: 0, cas });
    await backend.set('held', entry('old', 1n));
    await backend.set('held', entry('new', 2n), false);
    await backend.set('absent', entry('first', 3n), true);
    await backend.set('held', entry('newer', 4n), true);
    await backend.setMany([['absent', entry('second', 5n)], ['fresh', entry('f', 6n)], ['held', entry('last', 7n)]], [false, true, undefined]);
    expect((await backend.get('held'))?.value.toString()).toBe('last');
    expect((await backend.get('absent'))?.value.toString()).toBe('second');
    expect((await backend.get('fresh'))?.value.toString()).toBe('f');
  });

  it('reports health with an epoch that stays put', async () => {
    const first = await backend.health();
    const second = await backend.health();
    expect(first.ok).toBe(true);
    expect(first.epoch).not.toBe('');
    expect(second.epoch).toBe(first.epoch);
    expect(first.detail.length).toBeGreaterThan(0);
  });
});

describe('memcached: a whole replica written in one setMany', () => {
  it('lets the event loop run between slices, and stores every entry', async () => {
    const server = await startMemcached();
    const backend = new MemcachedBackend({ host: server.host, port: server.port, opTimeoutMs: 5000 });
    try {
      const order: string[] = [];
      const count = 30_000;
      const entries = Array.from({ length: count }, (_unused, index): [string, Entry] => {
        const entry: Entry = { value: Buffer.from(`v${index}`), flags: 0, expiresAtMs: 0, cas: BigInt(index + 1) };
        if (index < count - 1) return [`many:${index}`, entry];
        // The last entry notes when its frame is encoded.
        const value = entry.value;
        return [`many:${index}`, { ...entry, get value(): Buffer { order.push('last encoded'); return value; } }];
      });
      const written = backend.setMany(entries);
      setImmediate(() => order.push('event loop ran'));
      await written;
      expect(order[0]).toBe('event loop ran');
      const sample = [0, 8191, 8192, 20_000, count - 1];
      expect((await Promise.all(sample.map((index) => backend.get(`many:${index}`)))).map((entry) => entry?.value.toString()))
        .toEqual(sample.map((index) => `v${index}`));
    } finally {
      await backend.close();
      await server.stop();
    }
  });
});

describe('memcached: this process not running for a while', () => {
  it('counts a connect that completed meanwhile, not as a timeout', async () => {
    const server = await startMemcached();
    const backend = new MemcachedBackend({ host: server.host, port: server.port, opTimeoutMs: 200, connectTimeoutMs: 200 });
    try {
      await backend.set('k', { value: Buffer.from('v'), flags: 0, expiresAtMs: 0, cas: 1n });
      await backend.close();
      // A new backend connects for this get; the event loop then stops for twice the connect timeout.
      const fresh = new MemcachedBackend({ host: server.host, port: server.port, opTimeoutMs: 200, connectTimeoutMs: 200 });
      const read = fresh.get('k');
      for (const until = performance.now() + 400; performance.now() < until;) {
        // busy: the timers of the connect and the request are due before the socket is polled
      }
      expect((await read)?.value.toString()).toBe('v');
      await fresh.close();
    } finally {
      await server.stop();
    }
  });
});

describe('memcached refusing a write for want of memory (-M)', () => {
  let server: MemcachedInstance;
  let backend: MemcachedBackend;
  const big = (cas: bigint): Entry => ({ value: Buffer.alloc(200_000, 0x62), flags: 0, expiresAtMs: 0, cas });
  const small = (text: string, cas: bigint): Entry => ({ value: Buffer.from(text), flags: 0, expiresAtMs: 0, cas });

  beforeAll(async () => {
    server = await startMemcached({ memoryMb: 8 });
    backend = new MemcachedBackend({ host: server.host, port: server.port, opTimeoutMs: 2000 });
    await backend.set('kept', small('old', 1n));
    await backend.set('unknown', small('old', 2n));
    // Fill memcached with values of the size written below until it refuses one.
    let refused: unknown = null;
    for (let index = 0; index < 200 && refused === null; index++) {
      refused = await backend.set(`fill${index}`, big(10n), false).then(() => null, (error: unknown) => error);
    }
    expect(refused).toBeInstanceOf(StoreError);
  });

  afterAll(async () => {
    await backend?.close();
    await server?.stop();
  });

  it('leaves the key as it was when the key was known to be held, and says so', async () => {
    const error = await backend.set('kept', big(3n), true).then(() => null, (failure: unknown) => failure);
    expect(error).toBeInstanceOf(StoreError);
    expect((error as StoreError).code).toBe('BACKEND_FAILED');
    expect((error as StoreError).untouched).toBe(true);
    expect((error as StoreError).refusal).toEqual(refused('out_of_memory')); // memcached's out of memory
    expect((await backend.get('kept'))?.value.toString()).toBe('old');
  });

  it('leaves the key as it was when nothing was known of it, too', async () => {
    const error = await backend.set('unknown', big(4n)).then(() => null, (failure: unknown) => failure);
    expect((error as StoreError).code).toBe('BACKEND_FAILED');
    expect((error as StoreError).untouched).toBe(true);
    expect((await backend.get('unknown'))?.value.toString()).toBe('old');
  });
});

/**
 * A fake memcached speaking the binary protocol's framing: each request is answered with only a
 * header, whose status `statusOf` picks from the request's opcode and key (stats, with success).
 */
async function fakeMemcached(
  statusOf: (opcode: number, key: string) => number,
): Promise<{ backend: MemcachedBackend; opcodes: number[]; close(): Promise<void> }> {
  const opcodes: number[] = [];
  const server = net.createServer((socket) => {
    let pending = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 24 && pending.length >= 24 + pending.readUInt32BE(8)) {
        const opcode = pending.readUInt8(1);
        const key = pending.toString('latin1', 24 + pending.readUInt8(4), 24 + pending.readUInt8(4) + pending.readUInt16BE(2));
        const reply = Buffer.alloc(24);
        reply[0] = 0x81;
        reply[1] = opcode;
        // A new connection's epoch check (stats) ends at once: an empty reply ends the list.
        reply.writeUInt16BE(opcode === STAT ? 0 : statusOf(opcode, key), 6);
        pending.copy(reply, 12, 12, 16); // opaque
        if (opcode !== STAT) opcodes.push(opcode);
        socket.write(reply);
        pending = pending.subarray(24 + pending.readUInt32BE(8));
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const backend = new MemcachedBackend({ host: '127.0.0.1', port: (server.address() as net.AddressInfo).port, opTimeoutMs: 2000 });
  return {
    backend,
    opcodes,
    close: async () => {
      await backend.close();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

const STAT = 0x10;
const ADD = 0x02;
const REPLACE = 0x03;
const SET = 0x01;
const EXISTS = 0x0002;
const NOT_FOUND = 0x0001;
const OUT_OF_MEMORY = 0x0082;
const value = (cas: bigint): Entry => ({ value: Buffer.from('v'), flags: 0, expiresAtMs: 0, cas });

describe('memcached finding the key otherwise than the replica thought', () => {
  it('sends an add as a replace and back at most twice, then as a set: a client that keeps changing the key cannot loop it', async () => {
    // The key is always where the last command did not expect it.
    const fake = await fakeMemcached((opcode) => (opcode === ADD ? EXISTS : opcode === REPLACE ? NOT_FOUND : 0));
    try {
      await fake.backend.set('k', value(1n), true);
      expect(fake.opcodes).toEqual([REPLACE, ADD, REPLACE, SET]);
      fake.opcodes.length = 0;
      await fake.backend.setMany([['a', value(2n)]], [false]);
      expect(fake.opcodes).toEqual([ADD, REPLACE, ADD, SET]);
    } finally {
      await fake.close();
    }
  });
});

describe('memcached whose wall clock is an hour ahead of the controller', () => {
  it('keeps a value that expires in ten minutes (its expiry is sent relative, counted on its own clock)', async () => {
    // libfaketime sets memcached's wall clock at its start, as a step of the system clock between
    // memcached's start and the controller's would. An absolute exptime was an hour in its past.
    const offsetFile = path.join(mkdtempSync(path.join(os.tmpdir(), 'mckv-clock-')), 'offset');
    const env = wallClockEnv(offsetFile);
    setWallClockOffset(offsetFile, 3600);
    const server = await startMemcached({ env });
    const backend = new MemcachedBackend({ host: server.host, port: server.port, opTimeoutMs: 2000 });
    try {
      const entry: Entry = { value: Buffer.from('ten minutes'), flags: 0, expiresAtMs: clockMs() + 600_000, cas: 1n };
      await backend.set('ttl', entry, false);
      expect(await backend.get('ttl')).toEqual(entry);
    } finally {
      await backend.close();
      await server.stop();
      rmSync(path.dirname(offsetFile), { recursive: true, force: true });
    }
  });
});

describe('memcached refusing part of a batch', () => {
  it('says the batch left its keys untouched only when every refusal in it did', async () => {
    // No memory: 'a' is refused as a replace (kept as it was); 'b' is found otherwise at each try
    // until it goes as a set, whose refusal drops the key's old item.
    const fake = await fakeMemcached((opcode, key) => (key === 'b' && opcode === ADD ? EXISTS : key === 'b' && opcode === REPLACE ? NOT_FOUND : OUT_OF_MEMORY));
    try {
      // 'a' is answered first, untouched; 'b' three round trips later, as a refused set.
      const mixed = await fake.backend.setMany([['a', value(1n)], ['b', value(2n)]], [true, false]).then(() => null, (error: unknown) => error);
      expect(mixed).toMatchObject({ code: 'BACKEND_FAILED', untouched: false });
      const untouched = await fake.backend.setMany([['a', value(3n)], ['c', value(4n)]], [true, true]).then(() => null, (error: unknown) => error);
      expect(untouched).toMatchObject({ code: 'BACKEND_FAILED', untouched: true, refusal: refused('out_of_memory') });
    } finally {
      await fake.close();
    }
  });
});

describe('codec', () => {
  it('round-trips an entry with a kept key', () => {
    const entry: Entry = { value: Buffer.from('value'), flags: 9, expiresAtMs: 1234.5, cas: 77n, tombstone: true };
    expect(decodeEntry(encodeEntry(entry, 'key\xff'))).toEqual({ entry, keptKey: 'key\xff' });
    expect(decodeEntry(encodeEntry({ ...entry, tombstone: undefined }, null))?.entry.tombstone).toBeUndefined();
  });

  it('refuses values it did not write', () => {
    expect(decodeEntry(Buffer.from('plain memcached value, not ours'))).toBeNull();
    expect(decodeEntry(Buffer.alloc(3))).toBeNull();
    const truncatedKey = encodeEntry({ value: Buffer.alloc(0), flags: 0, expiresAtMs: 0, cas: 1n }, 'abcdef').subarray(0, 27);
    expect(decodeEntry(truncatedKey)).toBeNull();
  });

  it('maps keys injectively into printable memcached keys of at most 250 bytes', () => {
    const seen = new Set<string>();
    for (const key of KEYS) {
      const mapped = memcachedKey(key);
      expect(mapped.key.length).toBeLessThanOrEqual(250);
      expect(mapped.key).toMatch(/^[\x21-\x7e]+$/);
      expect(seen.has(mapped.key)).toBe(false);
      seen.add(mapped.key);
      if (!mapped.hashed) expect(keyFromMemcachedKey(mapped.key)).toBe(key);
    }
    expect(memcachedKey('\xfe'.repeat(250)).hashed).toBe(true);
    expect(memcachedKey('plain').key).toBe('plain');
  });

  it('sets memcached expiry in seconds from now with slack, absolute beyond 30 days, or never', () => {
    const nowMs = Date.UTC(2030, 0, 1);
    const day = 86_400_000;
    expect(memcachedExptimeSeconds(0, nowMs)).toBe(0);
    expect(memcachedExptimeSeconds(nowMs + 10_000, nowMs)).toBe(10 + EXPIRY_SLACK_SECONDS);
    expect(memcachedExptimeSeconds(nowMs + 29 * day, nowMs)).toBe(29 * 86_400 + EXPIRY_SLACK_SECONDS);
    expect(memcachedExptimeSeconds(nowMs - day, nowMs)).toBe(1); // long expired: memcached drops it at once
    expect(memcachedExptimeSeconds(nowMs + 31 * day, nowMs)).toBe((nowMs + 31 * day) / 1000 + EXPIRY_SLACK_SECONDS);
    expect(memcachedExptimeSeconds(nowMs + 1e13, nowMs)).toBe(0); // beyond 32 bits: never
  });
});
