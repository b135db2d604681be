/**
 * The key listing (src/store/memcached-metadump.ts) against a fake memcached that answers
 * `lru_crawler metadump all` as the test says: every key of a dump cut into chunks anywhere, each
 * decoded byte by byte; BUSY tried again; a refusal, an endless line and silence are StoreErrors;
 * and a dump of a million keys is read whole (kept as one string, it took minutes and timed out);
 * past the most keys its caller can index, the listing stops with a StoreError. A walk of the hash
 * table that memcached does not know (before 1.6.9) is null, for the caller to walk the LRUs.
 */

import * as net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { metadump } from '../src/store/memcached-metadump.ts';
import { MemcachedBackend } from '../src/store/memcached.ts';
import { mulberry32 } from '../src/runtime/random.ts';
import { StoreError } from '../src/store/types.ts';

const servers: net.Server[] = [];

afterEach(async () => {
  for (const server of servers.splice(0)) await new Promise<void>((resolve) => server.close(() => resolve()));
});

/** The commands the fake memcacheds were sent. */
const commands: string[] = [];

/** A fake memcached: each metadump request gets the next of `answers`, written in the chunks `cut` makes. */
async function fakeMemcached(answers: Array<Buffer | null>, cut: (bytes: Buffer) => Buffer[] = (bytes) => [bytes]): Promise<number> {
  let next = 0;
  const server = net.createServer((socket) => {
    socket.on('error', () => {});
    socket.once('data', (command: Buffer) => {
      commands.push(command.toString('latin1'));
      const answer = answers[Math.min(next, answers.length - 1)] ?? null;
      next += 1;
      if (answer === null) return; // silence
      for (const chunk of cut(answer)) socket.write(chunk);
    });
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as net.AddressInfo).port;
}

const dumpOf = (keys: readonly string[]): Buffer =>
  Buffer.from(`${keys.map((key) => `key=${key} exp=-1 la=1 cas=1 fetch=no cls=1 size=70\n`).join('')}END\r\n`, 'latin1');

describe('memcached key listing (metadump)', () => {
  it('reads every key of a dump cut anywhere into chunks, decoding each byte by byte', async () => {
    const random = mulberry32(5);
    const keys = ['plain', 'caf%25E9', 'other%E9%FF', 'bad%Zz', ...Array.from({ length: 500 }, (_, index) => `k${index}`)];
    const cut = (bytes: Buffer): Buffer[] => {
      const chunks: Buffer[] = [];
      for (let at = 0; at < bytes.length; ) {
        const size = 1 + Math.floor(random() * 50);
        chunks.push(bytes.subarray(at, at + size));
        at += size;
      }
      return chunks;
    };
    const port = await fakeMemcached([dumpOf(keys)], cut);
    const listed = (await metadump({ host: '127.0.0.1', port, timeoutMs: 2000, walk: 'lrus' })) ?? [];
    expect(listed.slice(0, 4)).toEqual(['plain', 'caf%E9', 'other\u00e9\u00ff', 'bad%Zz']);
    expect(listed).toHaveLength(keys.length);
    const edges = await fakeMemcached([dumpOf(['x%', 'a%4', '%%41', '%41%42c', '%e9%E9', '%g1'])]);
    expect(await metadump({ host: '127.0.0.1', port: edges, timeoutMs: 2000, walk: 'lrus' }))
      .toEqual(['x%', 'a%4', '%A', 'ABc', '\u00e9\u00e9', '%g1']);
  });

  it('tries again while the crawler is busy; a refusal, an endless line and silence are StoreErrors', async () => {
    const busyThenDump = await fakeMemcached([Buffer.from('BUSY currently processing crawler request\r\n'), dumpOf(['a', 'b'])]);
    expect(await metadump({ host: '127.0.0.1', port: busyThenDump, timeoutMs: 2000, walk: 'lrus' })).toEqual(['a', 'b']);
    const refusing = await fakeMemcached([Buffer.from('CLIENT_ERROR lru crawler disabled\r\n')]);
    await expect(metadump({ host: '127.0.0.1', port: refusing, timeoutMs: 2000, walk: 'lrus' })).rejects.toMatchObject({ code: 'BACKEND_FAILED' });
    const endless = await fakeMemcached([Buffer.alloc(200 * 1024, 0x6b)]);
    const failure = await metadump({ host: '127.0.0.1', port: endless, timeoutMs: 2000, walk: 'lrus' }).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(StoreError);
    expect(failure).toMatchObject({ code: 'BACKEND_FAILED' });
    const silent = await fakeMemcached([null]);
    await expect(metadump({ host: '127.0.0.1', port: silent, timeoutMs: 300, walk: 'lrus' })).rejects.toMatchObject({ code: 'BACKEND_TIMEOUT' });
  });

  it('walks the hash table or the LRUs as asked; a memcached that cannot walk its hash table says so (null)', async () => {
    commands.length = 0;
    const port = await fakeMemcached([dumpOf(['a']), dumpOf(['b']), Buffer.from('BADCLASS invalid class id\r\n')]);
    expect(await metadump({ host: '127.0.0.1', port, timeoutMs: 2000, walk: 'hash' })).toEqual(['a']);
    expect(await metadump({ host: '127.0.0.1', port, timeoutMs: 2000, walk: 'lrus' })).toEqual(['b']);
    expect(await metadump({ host: '127.0.0.1', port, timeoutMs: 2000, walk: 'hash' })).toBeNull();
    await expect(metadump({ host: '127.0.0.1', port, timeoutMs: 2000, walk: 'lrus' })).rejects.toMatchObject({ code: 'BACKEND_FAILED' });
    expect(commands).toEqual(['lru_crawler metadump hash\r\n', 'lru_crawler metadump all\r\n', 'lru_crawler metadump hash\r\n', 'lru_crawler metadump all\r\n']);
  });

  it("lists a memcached's keys by its hash table, or where it cannot, by the union of LRU listings until one adds nothing", async () => {
    commands.length = 0;
    const modern = new MemcachedBackend({ host: '127.0.0.1', port: await fakeMemcached([dumpOf(['a', 'b', 'c'])]) });
    expect((await modern.keys()).sort()).toEqual(['a', 'b', 'c']);
    expect(commands).toEqual(['lru_crawler metadump hash\r\n']);
    commands.length = 0;
    const old = new MemcachedBackend({
      host: '127.0.0.1',
      port: await fakeMemcached([Buffer.from('BADCLASS invalid class id\r\n'), dumpOf(['a', 'b']), dumpOf(['b', 'c']), dumpOf(['a', 'c'])]),
    });
    expect((await old.keys()).sort()).toEqual(['a', 'b', 'c']);
    expect(commands).toEqual(['lru_crawler metadump hash\r\n', ...Array<string>(3).fill('lru_crawler metadump all\r\n')]);
    // Told once that it cannot, it is not asked again.
    commands.length = 0;
    expect((await old.keys()).sort()).toEqual(['a', 'c']);
    expect(commands).toEqual(Array<string>(2).fill('lru_crawler metadump all\r\n'));
    await Promise.all([modern.close(), old.close()]);
  });

  it('reads a dump of a million keys whole', async () => {
    const keys = Array.from({ length: 1_000_000 }, (_, index) => `key:${index}:${'x'.repeat(20)}`);
    const port = await fakeMemcached([dumpOf(keys)], (bytes) => {
      const chunks: Buffer[] = [];
      for (let at = 0; at < bytes.length; at += 64 * 1024) chunks.push(bytes.subarray(at, at + 64 * 1024));
      return chunks;
    });
    const listed = (await metadump({ host: '127.0.0.1', port, timeoutMs: 10_000, walk: 'lrus' })) ?? [];
    expect(listed).toHaveLength(keys.length);
    expect(listed.at(-1)).toBe(keys.at(-1));
  }, 60_000);

  it('stops listing past the most keys its caller can index, with a StoreError naming the bound', async () => {
    const port = await fakeMemcached([dumpOf(Array.from({ length: 5000 }, (_, index) => `k${index}`))]);
    await expect(metadump({ host: '127.0.0.1', port, timeoutMs: 2000, keysMax: 4999, walk: 'lrus' }))
      .rejects.toMatchObject({ code: 'BACKEND_FAILED', message: expect.stringContaining('more than 4999 keys') });
    expect(await metadump({ host: '127.0.0.1', port, timeoutMs: 2000, keysMax: 5000, walk: 'lrus' })).toHaveLength(5000);
  });
});
