/**
 * Differential test: the same malformed and edge-case byte sequences go to a real memcached 1.6 and
 * to a ProtocolServer; replies must match byte for byte where the decoder alone answers, and in
 * shape where mckv differs on purpose (version string, refusals memcached silently accepts).
 */

import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ProtocolServer } from '../src/protocol/server.ts';
import { DEFAULT_LIMITS } from '../src/protocol/types.ts';
import type { Reply } from '../src/protocol/types.ts';

const MEMCACHED = '/usr/bin/memcached';

/** Replies as memcached gives them on an empty cache, so cases that reach the handler agree too. */
function emptyCacheReply(command: Parameters<ConstructorParameters<typeof ProtocolServer>[0]['handler']>[0]): Reply {
  switch (command.kind) {
    case 'get': case 'gat': return { kind: 'values', items: [] };
    case 'delete': case 'touch': case 'arith': return { kind: 'not_found' };
    case 'store': return command.verb === 'cas' ? { kind: 'not_found' } : command.verb === 'set' ? { kind: 'stored' } : { kind: 'not_stored' };
    case 'stats': return command.group === '' ? { kind: 'stats', stats: [] } : { kind: 'error' };
    case 'show': return { kind: 'text', lines: ['mckv status'] };
    default: return { kind: 'ok' };
  }
}

async function freePort(): Promise<number> {
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as net.AddressInfo;
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

async function waitForPort(port: number, deadlineMs: number): Promise<void> {
  while (Date.now() < deadlineMs) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, '127.0.0.1', () => { socket.destroy(); resolve(true); });
      socket.on('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`memcached did not listen on ${port}`);
}

/** A get of a key nobody sets: both answer `END`, which marks the end of a text case's replies. */
const SENTINEL = Buffer.from('get differential-sentinel\r\n');
const SETTLE_MS = 30;
const CASE_TIMEOUT_MS = 3000;

/**
 * Sends `bytes` (plus the sentinel for text cases) on a fresh connection; returns what came back
 * once the reply ends with the sentinel's END and the peer stays quiet briefly, or the peer closes,
 * or CASE_TIMEOUT_MS passes.
 */
async function replyTo(port: number, bytes: Buffer, withSentinel = true): Promise<{ text: string; closed: boolean }> {
  const socket = net.connect(port, '127.0.0.1');
  const chunks: Buffer[] = [];
  return new Promise((resolve) => {
    let settle: NodeJS.Timeout | undefined;
    const deadline = setTimeout(() => finish(false), CASE_TIMEOUT_MS);
    const finish = (closed: boolean): void => {
      clearTimeout(deadline);
      clearTimeout(settle);
      socket.destroy();
      resolve({ text: Buffer.concat(chunks).toString('latin1'), closed });
    };
    socket.on('data', (chunk) => {
      chunks.push(chunk);
      clearTimeout(settle);
      const text = Buffer.concat(chunks).toString('latin1');
      if (!withSentinel || text.endsWith('END\r\n')) settle = setTimeout(() => finish(false), SETTLE_MS);
    });
    socket.on('close', () => finish(true));
    socket.on('error', () => undefined);
    socket.write(withSentinel ? Buffer.concat([bytes, SENTINEL]) : bytes);
  });
}

let memcached: ChildProcess | null = null;
let memcachedPort = 0;
let server: ProtocolServer;
let serverPort = 0;

beforeAll(async () => {
  expect(existsSync(MEMCACHED), `${MEMCACHED} is needed for the differential test`).toBe(true);
  memcachedPort = await freePort();
  const runAsRoot = process.getuid?.() === 0 ? ['-u', 'root'] : [];
  memcached = spawn(MEMCACHED, ['-p', String(memcachedPort), '-U', '0', '-l', '127.0.0.1', ...runAsRoot], { stdio: 'ignore' });
  await waitForPort(memcachedPort, Date.now() + 5000);
  server = new ProtocolServer({ host: '127.0.0.1', port: 0, limits: DEFAULT_LIMITS, handler: emptyCacheReply });
  serverPort = await server.listen();
});

afterAll(async () => {
  await server?.close();
  if (memcached?.pid !== undefined) process.kill(memcached.pid, 'SIGTERM');
});

/**
 * Cases that only the decoder (or an empty cache) answers: identical bytes expected. They run in
 * order on one memcached, so a case that stores uses a key no later case reads.
 */
const SAME: Array<[string, string | Buffer]> = [
  ['unknown command', 'frobnicate\r\n'],
  ['empty line', '\r\n'],
  ['only spaces', '   \r\n'],
  ['upper-case command', 'GET a\r\n'],
  ['meta-looking garbage', '\x00\x01\x02\xff garbage\r\n'],
  ['get without keys', 'get\r\n'],
  ['odd spacing', 'get   a  b \r\n'],
  ['bare newline', 'get a\n'],
  ['251-byte get key', `get ${'k'.repeat(251)}\r\n`],
  ['251-byte set key (data read as a command)', `set ${'k'.repeat(251)} 0 0 1\r\na\r\n`],
  ['set with too few tokens', 'set k 0 0\r\n'],
  ['set with too many tokens', 'set k 0 0 1 noreply extra\r\na\r\n'],
  ['set with a junk last token', 'set junk1 0 0 1 junk\r\na\r\n'],
  ['bad flags', 'set k abc 0 1\r\na\r\n'],
  ['negative flags', 'set k -1 0 1\r\na\r\n'],
  ['hex flags', 'set k 0x1 0 1\r\na\r\n'],
  ['bad exptime', 'set k 0 abc 1\r\na\r\n'],
  ['negative length', 'set k 0 0 -1\r\na\r\n'],
  ['bad length', 'set k 0 0 abc\r\na\r\n'],
  ['signed length', 'set signed1 0 0 +1\r\na\r\n'],
  ['data block too long', 'set k 0 0 1\r\nab\r\n'],
  ['data block without CRLF', 'set k 0 0 1\r\naXY'],
  ['bad data chunk, noreply', 'set k 0 0 1 noreply\r\nab\r\n'],
  ['bad number, noreply', 'set k abc 0 1 noreply\r\na\r\n'],
  ['value over the item size', `set k 0 0 2000000\r\n${'a'.repeat(2000000)}\r\nget k\r\n`],
  ['value over the item size, noreply', `set k 0 0 2000000 noreply\r\n${'a'.repeat(2000000)}\r\nget k\r\n`],
  ['cas without its unique', 'cas k 0 0 1\r\na\r\n'],
  ['cas with a bad unique', 'cas k 0 0 1 abc\r\na\r\n'],
  ['cas on a missing key', 'cas k 0 0 1 1\r\na\r\n'],
  ['incr abc', 'incr k abc\r\n'],
  ['incr negative', 'incr k -1\r\n'],
  ['incr over u64', 'incr k 18446744073709551616\r\n'],
  ['incr without delta', 'incr k\r\n'],
  ['incr abc noreply', 'incr k abc noreply\r\n'],
  ['decr on a missing key', 'decr k 1\r\n'],
  ['delete k 0', 'delete k 0\r\n'],
  ['delete k 5', 'delete k 5\r\n'],
  ['delete k x', 'delete k x\r\n'],
  ['delete k 0 noreply', 'delete k 0 noreply\r\n'],
  ['delete k 5 noreply', 'delete k 5 noreply\r\n'],
  ['delete without key', 'delete\r\n'],
  ['delete with too many tokens', 'delete a b c d\r\n'],
  ['touch abc', 'touch k abc\r\n'],
  ['touch without exptime', 'touch k\r\n'],
  ['touch negative', 'touch k -1\r\n'],
  ['gat abc', 'gat abc k\r\n'],
  ['gat without keys', 'gat 10\r\n'],
  ['gats', 'gats 10 k\r\n'],
  ['flush_all abc', 'flush_all abc\r\n'],
  ['flush_all negative', 'flush_all -1\r\n'],
  ['flush_all noreply', 'flush_all noreply\r\n'],
  ['flush_all 1 2', 'flush_all 1 2\r\n'],
  ['flush_all noreply noreply', 'flush_all noreply noreply\r\n'],
  ['verbosity without level', 'verbosity\r\n'],
  ['verbosity x', 'verbosity x\r\n'],
  ['verbosity 1', 'verbosity 1\r\n'],
  ['verbosity 1 noreply', 'verbosity 1 noreply\r\n'],
  ['stats of an unknown group', 'stats nonsense\r\n'],
  ['quit', 'quit\r\nget a\r\n'],
  ['many tokens', 'a b c d e f g h i j k l m n o p q r s t u v w x y z\r\n'],
];

/** Cases where mckv differs on purpose: both must be closed/refused alike, or replies share a shape. */
const SHAPE: Array<[string, string, RegExp, RegExp]> = [
  ['version', 'version\r\n', /^VERSION 1\.6\.\d+\r\n$/, /^VERSION \S+\r\n$/],
  ['flags over u32 (memcached wraps, mckv refuses)', 'set k 4294967296 0 1\r\na\r\n', /^STORED\r\n$/, /^CLIENT_ERROR bad command line format\r\nERROR\r\n$/],
  ['control character key (memcached accepts)', 'get a\x01b\r\n', /^END\r\n$/, /^CLIENT_ERROR bad command line format\r\n$/],
  ['show (mckv extension)', 'show\r\n', /^ERROR\r\n$/, /^mckv status\r\nEND\r\n$/],
];

describe('differential: mckv decoder vs memcached 1.6', () => {
  it.each(SAME)('same bytes for %s', async (_name, input) => {
    const bytes = Buffer.from(input as string, 'latin1');
    const [expected, actual] = await Promise.all([replyTo(memcachedPort, bytes), replyTo(serverPort, bytes)]);
    expect(expected.text.endsWith('END\r\n') || expected.closed, 'memcached answered the whole case').toBe(true);
    expect(actual.text).toBe(expected.text);
    expect(actual.closed).toBe(expected.closed);
  });

  it.each(SHAPE)('same shape for %s', async (_name, input, memcachedShape, mckvShape) => {
    const bytes = Buffer.from(input, 'latin1');
    const [expected, actual] = await Promise.all([replyTo(memcachedPort, bytes), replyTo(serverPort, bytes)]);
    const withoutSentinel = (text: string): string => {
      expect(text.endsWith('END\r\n'), 'the sentinel was answered').toBe(true);
      return text.slice(0, -'END\r\n'.length);
    };
    expect(withoutSentinel(expected.text)).toMatch(memcachedShape);
    expect(withoutSentinel(actual.text)).toMatch(mckvShape);
  });

  it('both close on a long line without a newline (mckv says why first)', async () => {
    const bytes = Buffer.alloc(10000, 0x78);
    const [expected, actual] = await Promise.all([replyTo(memcachedPort, bytes, false), replyTo(serverPort, bytes, false)]);
    expect(expected).toEqual({ text: '', closed: true });
    expect(actual).toEqual({ text: 'CLIENT_ERROR line too long\r\n', closed: true });
  });

  it('both answer binary garbage the same way', async () => {
    const unknownOpcode = Buffer.concat([Buffer.from([0x80, 0xee]), Buffer.alloc(13), Buffer.from([5]), Buffer.alloc(8)]);
    const badGet = Buffer.concat([Buffer.from([0x80, 0x00]), Buffer.alloc(9), Buffer.from([1]), Buffer.alloc(12), Buffer.from('k')]);
    for (const bytes of [unknownOpcode, badGet]) {
      const [expected, actual] = await Promise.all([replyTo(memcachedPort, bytes, false), replyTo(serverPort, bytes, false)]);
      expect(actual.text.length).toBeGreaterThan(0);
      expect(actual).toEqual(expected);
    }
  });
});
