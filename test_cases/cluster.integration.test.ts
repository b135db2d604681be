/**
 * Three real controller processes over three real memcached, driven by memjs (the binary
 * protocol) and raw text-protocol sockets, as a user would: values written through one controller
 * are read through the others, `show` reports the peers, bad input harms nothing.
 */

import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import memjs from 'memjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TextClient } from '../src/client/text-client.ts';
import { Cluster, freePort, repoRoot, spawnMemcached } from '../src/jepsen/cluster.ts';
import { SCHED_BATCH, threadPolicies } from './support/proc.ts';
import { endsAfter, exchange } from './support/raw.ts';
import { itemAt } from '../src/runtime/item-at.ts';
import { CONTROLLER_NODE_FLAGS } from '../src/runtime/node-flags.ts';

async function eventually<T>(probe: () => Promise<T>, accept: (value: T) => boolean, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: T = await probe();
  while (!accept(last)) {
    if (Date.now() > deadline) return last;
    await new Promise((resolve) => setTimeout(resolve, 50));
    last = await probe();
  }
  return last;
}

async function show(port: number): Promise<string[]> {
  const client = await TextClient.connect('127.0.0.1', port);
  try {
    return (await client.request('show\r\n', 'show')).lines;
  } finally {
    client.close();
  }
}

describe('a three-controller cluster (linearizability, memcached)', () => {
  let cluster: Cluster;
  const clients: memjs.Client[] = [];

  beforeAll(async () => {
    cluster = await Cluster.start({ mode: 'linearizability', backend: 'memcache' });
    for (const node of cluster.nodes) {
      clients.push(memjs.Client.create(`127.0.0.1:${node.clientPort}`, { retries: 0, timeout: 5, logger: { log: () => {} } }));
    }
  }, 90_000);

  afterAll(async () => {
    for (const client of clients) client.close();
    await cluster?.stop();
  });

  it('serves the nc example from the README byte for byte', async () => {
    const port = itemAt(cluster.nodes, 0).clientPort;
    const reply = await exchange(port, 'set nc-key 0 0 1\r\nv\r\nget nc-key\r\n', endsAfter('END\r\n'), 10_000);
    expect(reply.toString('latin1')).toBe('STORED\r\nVALUE nc-key 0 1\r\nv\r\nEND\r\n');
  });

  it('reads through every controller what memjs wrote through one', async () => {
    await itemAt(clients, 0).set('shared', 'from-n1', { expires: 0 });
    for (const client of clients) {
      const { value } = await client.get('shared');
      expect(value?.toString()).toBe('from-n1');
    }
    await itemAt(clients, 1).delete('shared');
    for (const client of clients) {
      expect((await client.get('shared')).value).toBeNull();
    }
  });

  it('runs incr, append and cas identically on every replica', async () => {
    await itemAt(clients, 2).set('counter', '41', { expires: 0 });
    const incremented = await itemAt(clients, 0).increment('counter', 1);
    expect(incremented).toEqual({ success: true, value: 42 });
    await itemAt(clients, 1).append('counter', '0');
    for (const client of clients) expect((await client.get('counter')).value?.toString()).toBe('420');

    const text = await TextClient.connect('127.0.0.1', itemAt(cluster.nodes, 1).clientPort);
    try {
      const gets = await text.request('gets counter\r\n', 'gets');
      const token = itemAt(gets.values, 0).cas;
      expect(token).not.toBeNull();
      expect((await text.request(`cas counter 0 0 1 ${token}\r\nx\r\n`, 'cas')).lines).toEqual(['STORED']);
      expect((await text.request(`cas counter 0 0 1 ${token}\r\ny\r\n`, 'cas')).lines).toEqual(['EXISTS']);
    } finally {
      text.close();
    }
  });

  it('memjs with many calls in flight on one connection (it pipelines them) reads exactly its own earlier writes, as memcached does', async () => {
    const memcachedPort = await freePort();
    const memcachedLog = path.join(os.tmpdir(), `mckv-memjs-pipeline-${process.pid}.log`);
    const memcached = await spawnMemcached(memcachedPort, memcachedLog);
    const reference = memjs.Client.create(`127.0.0.1:${memcachedPort}`, { retries: 0, timeout: 5, logger: { log: () => {} } });
    try {
      // Concurrent calls on one client leave on one connection, in call order, before any reply.
      const script = (client: memjs.Client): Array<Promise<string>> => {
        const calls: Array<Promise<string>> = [];
        for (let round = 0; round < 40; round += 1) {
          const key = `memjs-pipe-${round % 3}`;
          calls.push(client.set(key, `v${round}`, { expires: 0 }).then((stored) => `set ${String(stored)}`));
          calls.push(client.get(key).then(({ value }) => `get ${value?.toString() ?? 'miss'}`));
          if (round % 4 === 0) calls.push(client.append(key, '+').then((done) => `append ${String(done)}`));
          if (round % 5 === 0) calls.push(client.delete(`memjs-pipe-${(round + 1) % 3}`).then((done) => `delete ${String(done)}`));
          calls.push(client.get(`memjs-pipe-${(round + 1) % 3}`).then(({ value }) => `get ${value?.toString() ?? 'miss'}`));
        }
        return calls;
      };
      const expected = await Promise.all(script(reference));
      for (const client of clients) {
        for (let key = 0; key < 3; key += 1) await client.delete(`memjs-pipe-${key}`);
        expect(await Promise.all(script(client))).toEqual(expected);
      }
    } finally {
      reference.close();
      memcached.kill('SIGTERM');
      rmSync(memcachedLog, { force: true });
    }
  });

  it('runs every controller thread as SCHED_BATCH (cpu_scheduling = batch, the default)', () => {
    for (const node of cluster.nodes) {
      const pid = node.controller?.pid;
      expect(pid).toBeDefined();
      const policies = threadPolicies(pid as number);
      expect(policies.length).toBeGreaterThan(1);
      expect(new Set(policies), node.id).toEqual(new Set([SCHED_BATCH]));
    }
  });

  it("runs every controller with the controller's node flags", () => {
    for (const node of cluster.nodes) {
      const cmdline = readFileSync(`/proc/${node.controller?.pid}/cmdline`, 'latin1').split('\0');
      for (const flag of CONTROLLER_NODE_FLAGS) expect(cmdline, node.id).toContain(flag);
    }
  });

  it('show lists every peer up', async () => {
    const lines = await eventually(
      () => show(itemAt(cluster.nodes, 0).clientPort),
      (rows) => rows.filter((line) => /^n[23]\s+up\b/.test(line)).length === 2,
      5000,
    );
    expect(lines.some((line) => /^n1\s+self\b/.test(line))).toBe(true);
    expect(lines.filter((line) => /^n[23]\s+up\b/.test(line))).toHaveLength(2);
    // Each replica's memcached, with how full it is (what the memory guard counts).
    expect(lines.filter((line) => /^n[123]\s.*\bok, \d+% of \d+ MB\b/.test(line))).toHaveLength(3);
  });

  it('keeps serving after bad input, and loses nothing stored', async () => {
    const port = itemAt(cluster.nodes, 0).clientPort;
    await itemAt(clients, 0).set('precious', 'kept', { expires: 0 });
    const bad: Array<[string, string | Buffer, RegExp]> = [
      ['long key', `get ${'k'.repeat(251)}\r\n`, /^CLIENT_ERROR/],
      ['control char in key', 'set a\x01b 0 0 1\r\nx\r\n', /^(CLIENT_ERROR|ERROR)/],
      ['unknown command', 'frobnicate\r\n', /^ERROR\r\n/],
      ['bad number', 'set k 0 0 abc\r\nx\r\n', /^CLIENT_ERROR/],
      ['wrong data length', 'set k 0 0 1\r\nxyz\r\n', /^CLIENT_ERROR bad data chunk/],
      ['value over the limit', `set big 0 0 ${2 * 1024 * 1024}\r\n`, /^SERVER_ERROR object too large for cache/],
      ['binary garbage', Buffer.from([0x80, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), /.*/s],
    ];
    for (const [, bytes, expected] of bad) {
      const reply = await exchange(port, bytes, (received) => received.includes('\r\n') || received.length >= 24, 5000);
      expect(reply.toString('latin1')).toMatch(expected);
    }
    // A line over the limit with no newline: the connection is answered or closed, never buffered forever.
    const flood = await exchange(port, Buffer.alloc(64 * 1024, 'a'), () => false, 5000).catch(() => Buffer.alloc(0));
    expect(flood.length).toBeLessThan(1024);
    const { value } = await itemAt(clients, 1).get('precious');
    expect(value?.toString()).toBe('kept');
  });

  it('disconnects a client that never reads its replies, and nobody else notices', async () => {
    const port = itemAt(cluster.nodes, 2).clientPort;
    await itemAt(clients, 2).set('big-value', Buffer.alloc(512 * 1024, 'v'), { expires: 0 });
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.pause(); // never read
    await new Promise((resolve) => socket.once('connect', resolve));
    const request = Buffer.from('get big-value\r\n'.repeat(200));
    const closed = new Promise<boolean>((resolve) => {
      socket.once('close', () => resolve(true));
      setTimeout(() => resolve(false), 20_000);
    });
    for (let round = 0; round < 20 && !socket.destroyed; round++) socket.write(request);
    const { value } = await itemAt(clients, 0).get('big-value');
    expect(value?.length).toBe(512 * 1024);
    socket.destroy();
    expect(await closed).toBe(true);
  });

  it('reports a killed controller down within the failure timeout', async () => {
    await cluster.kill('n3');
    const started = Date.now();
    const lines = await eventually(
      () => show(itemAt(cluster.nodes, 0).clientPort),
      (rows) => rows.some((line) => /^n3\s+down\b/.test(line)),
      cluster.options.failureTimeoutMs * 4,
    );
    expect(lines.some((line) => /^n3\s+down\b/.test(line))).toBe(true);
    expect(Date.now() - started).toBeLessThan(cluster.options.failureTimeoutMs * 4);
    // The two others go on (n3 may have been the sequencer: writes are refused until one is elected).
    const stored = await eventually(
      () => itemAt(clients, 0).set('after-kill', 'yes', { expires: 0 }).then(() => true, () => false),
      (ok) => ok,
      cluster.options.failureTimeoutMs * 6,
    );
    expect(stored).toBe(true);
    expect((await itemAt(clients, 1).get('after-kill')).value?.toString()).toBe('yes');
  });
});

describe('bad configuration', () => {
  const run = (...args: string[]): { status: number | null; stderr: string } => {
    const result = spawnSync(process.execPath, [...CONTROLLER_NODE_FLAGS, '--import', 'tsx', path.join(repoRoot, 'main.ts'), ...args], {
      cwd: repoRoot,
      encoding: 'utf8',
      timeout: 30_000,
    });
    return { status: result.status, stderr: result.stderr };
  };

  it('names an unknown mode in one line and exits non-zero', () => {
    const result = run('-c', 'config.ini', '-p', '8000', '-cons', 'strong', '--kvtype', 'memory');
    expect(result.status).not.toBe(0);
    expect(result.stderr.trim().split('\n')).toHaveLength(1);
    expect(result.stderr).toMatch(/unknown consistency mode 'strong'/);
  });

  it('names a missing config file', () => {
    const result = run('-c', 'no-such.ini', '-p', '8000');
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/cannot read config file no-such\.ini/);
  });

  it('names a client port that is already in use', async () => {
    const holder = net.createServer();
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', () => resolve()));
    const taken = (holder.address() as net.AddressInfo).port;
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mckv-config-'));
    const config = path.join(dir, 'config.ini');
    const [peer1, peer2] = [await freePort(), await freePort()];
    writeFileSync(
      config,
      `[node.n1]\nclient = 127.0.0.1:${taken}\npeer = 127.0.0.1:${peer1}\nmemcached = 127.0.0.1:1\n` +
        `[node.n2]\nclient = 127.0.0.1:${await freePort()}\npeer = 127.0.0.1:${peer2}\nmemcached = 127.0.0.1:1\n`,
    );
    writeFileSync(path.join(dir, 'cluster.secret'), randomBytes(32).toString('base64'), { mode: 0o600 });
    try {
      const result = run('-c', config, '-p', String(taken), '--kvtype', 'memory');
      expect(result.status).toBe(1);
      expect(result.stderr.trim().split('\n')).toHaveLength(1);
      expect(result.stderr).toMatch(new RegExp(`port ${taken} .*already in use`));
    } finally {
      holder.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('names a port no node has', () => {
    const result = run('-c', 'config.ini', '-p', '1234', '--kvtype', 'memory');
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/no node has client port 1234/);
  });
});
