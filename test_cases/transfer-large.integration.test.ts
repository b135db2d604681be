/**
 * Whole replicas larger than a peer connection's send queue (16 MiB; about 24 MiB here) still get
 * through, a window at a time, on real three-controller clusters over memcached:
 * - sequential: a follower comes back after the log it lacks was compacted away, and its state
 *   transfer rebuilds it;
 * - causal: a controller whose memcached restarted empty gets its peers' snapshots back.
 * Sent all at once, the parts past the queue were dropped, the transfer or snapshot never
 * completed, and it was asked for again, for ever.
 */

import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TextClient } from '../src/client/text-client.ts';
import { Cluster } from '../src/jepsen/cluster.ts';
import { itemAt } from '../src/runtime/item-at.ts';
import { eventually } from './support/fault-kit.ts';

const VALUE = 'v'.repeat(1024);

/** Pipelines `set key:<i>` for i in [from, from + count) through `port`; resolves once all are answered STORED. */
async function load(port: number, from: number, count: number): Promise<void> {
  const socket = net.connect(port, '127.0.0.1');
  try {
    await new Promise<void>((resolve, reject) => {
      let stored = 0;
      let pending = '';
      socket.on('error', reject);
      socket.on('data', (data: Buffer) => {
        const lines = (pending + data.toString('latin1')).split('\r\n');
        pending = lines.pop() ?? '';
        for (const line of lines) {
          if (line !== 'STORED') return reject(new Error(`set refused: ${line}`));
          stored += 1;
        }
        if (stored === count) resolve();
      });
      socket.on('connect', () => {
        void (async () => {
          for (let start = from; start < from + count; start += 500) {
            const batch: string[] = [];
            for (let i = start; i < Math.min(start + 500, from + count); i += 1) batch.push(`set key:${i} 0 0 ${VALUE.length}\r\n${VALUE}\r\n`);
            if (!socket.write(batch.join(''))) await new Promise((drained) => socket.once('drain', drained));
          }
        })();
      });
    });
  } finally {
    socket.destroy();
  }
}

async function read(port: number, key: string): Promise<string | null> {
  const reply = await TextClient.requestOnce('127.0.0.1', port, `get ${key}\r\n`, 'get', 10_000);
  return reply.values[0]?.value.toString('latin1') ?? null;
}

/** memcached's item count at `port`. */
async function items(port: number): Promise<number> {
  const lines = (await TextClient.requestOnce('127.0.0.1', port, 'stats\r\n', 'stats', 10_000)).lines;
  return Number(lines.find((line) => line.startsWith('STAT curr_items '))?.slice('STAT curr_items '.length) ?? -1);
}

/** Polls `probe` every 200 ms until it holds (a failed probe does not), for at most `timeoutMs`; whether it did. */
async function until(probe: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  return (await eventually(() => probe().catch(() => false), (held) => held, { timeoutMs, intervalMs: 200 })).ok;
}

async function role(port: number): Promise<string | undefined> {
  const lines = (await TextClient.requestOnce('127.0.0.1', port, 'stats\r\n', 'stats', 10_000)).lines;
  return lines.find((line) => line.startsWith('STAT mckv_role '))?.slice('STAT mckv_role '.length);
}

describe('a state transfer larger than a peer connection queues', () => {
  let cluster: Cluster;

  beforeAll(async () => {
    cluster = await Cluster.start({ mode: 'sequential', backend: 'memcache', compactAfterEntries: 2_000 });
  }, 90_000);

  afterAll(async () => {
    await cluster?.stop();
  });

  it('gets through, and the follower serves again', async () => {
    const roles = await Promise.all(cluster.nodes.map((node) => role(node.clientPort)));
    const leader = itemAt(cluster.nodes, Math.max(0, roles.indexOf('leader')));
    const follower = itemAt(cluster.nodes.filter((node) => node !== leader), 0);
    await load(leader.clientPort, 0, 20_000);

    await cluster.kill(follower.id);
    // Once it is silent for ten failure timeouts (1 s each), what it lacks may be compacted away.
    await new Promise((resolve) => setTimeout(resolve, 10_500));
    await load(leader.clientPort, 20_000, 5_000);

    const logFrom = cluster.logBytes(follower.id);
    await cluster.startController(follower.id);
    // Writes go on meanwhile, more than a compaction's worth: the leader keeps the entries after
    // the transfer's index, so the follower continues from them, with no second transfer.
    const writing = load(leader.clientPort, 25_000, 10_000);
    const deadline = Date.now() + 30_000;
    let value: string | null = null;
    while (value === null && Date.now() < deadline) {
      value = await read(follower.clientPort, 'key:24999').catch(() => null);
      if (value === null) await new Promise((resolve) => setTimeout(resolve, 200));
    }
    await writing;
    expect(value).toBe(VALUE);
    expect(await read(follower.clientPort, 'key:0')).toBe(VALUE);
    expect(await until(async () => (await read(follower.clientPort, 'key:34999')) === VALUE, 10_000)).toBe(true);
    const log = await cluster.logSince(follower.id, logFrom, 'state transfer received', 1_000);
    expect(log?.match(/state transfer received/g)).toHaveLength(1);
  }, 90_000);
});

describe('a causal snapshot larger than a peer connection queues', () => {
  let cluster: Cluster;

  beforeAll(async () => {
    cluster = await Cluster.start({ mode: 'causal', backend: 'memcache' });
  }, 90_000);

  afterAll(async () => {
    await cluster?.stop();
  });

  it('gets through, and the emptied replica holds every key again', async () => {
    const [writer, , emptied] = [itemAt(cluster.nodes, 0), itemAt(cluster.nodes, 1), itemAt(cluster.nodes, 2)];
    await load(writer.clientPort, 0, 24_000);
    expect(await until(async () => (await items(emptied.memcachedPort)) === 24_000, 30_000)).toBe(true);

    await cluster.restartBackend(emptied.id);
    expect(await until(async () => (await items(emptied.memcachedPort)) === 24_000, 60_000)).toBe(true);
    expect(await read(emptied.clientPort, 'key:23999')).toBe(VALUE);
  }, 120_000);
});
