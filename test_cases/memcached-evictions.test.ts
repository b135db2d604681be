/**
 * A memcached that evicts (started without -M, as a user's own may be) throws away items a replica
 * was trusted to hold when something else fills it. Real processes: a cluster over
 * three small memcached servers that evict (sequential: rebuilt by a state transfer; eventual: by
 * anti-entropy after the index is reloaded); another client of one of them writes three times its
 * memory, so it evicts our keys among others. That controller must notice (memcached's
 * `evictions` counter grows), rebuild its replica from its peers, and hold and serve every key
 * again. Without the rebuild the evicted keys stay gone from that replica.
 */

import { readFileSync } from 'node:fs';
import { setTimeout as delay } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TextClient } from '../src/client/text-client.ts';
import type { Mode } from '../src/consistency/types.ts';
import { Cluster } from '../src/jepsen/cluster.ts';
import { exchange } from './support/raw.ts';
import { itemAt } from '../src/runtime/item-at.ts';

const KEYS = 300;
const VALUE = 'v'.repeat(100);
const FOREIGN_BATCHES = 250;
const FOREIGN_BATCH = 1000;

/** Sends raw text-protocol lines to memcached and returns the reply once it ends with `until`. */
async function rawRequest(port: number, request: string, until: RegExp): Promise<string> {
  const reply = await exchange(port, request, (received) => until.test(received.toString('latin1')), 10_000);
  return reply.toString('latin1');
}

async function memcachedStat(port: number, name: string): Promise<number> {
  const reply = await rawRequest(port, 'stats\r\n', /END\r\n$/);
  const line = reply.split('\r\n').find((candidate) => candidate.startsWith(`STAT ${name} `));
  return Number(line?.split(' ')[2]);
}

/** How many of our keys memcached itself holds (plain keys are stored under their own names). */
async function keysHeld(port: number): Promise<number> {
  const names = Array.from({ length: KEYS }, (_, i) => `k${i}`);
  let held = 0;
  for (let start = 0; start < names.length; start += 100) {
    const reply = await rawRequest(port, `get ${names.slice(start, start + 100).join(' ')}\r\n`, /END\r\n$/);
    held += reply.split('\r\n').filter((line) => line.startsWith('VALUE ')).length;
  }
  return held;
}

/** A reply that says the controller is rebuilding its replica (a refusal, not a miss). */
function refusedWhileRebuilding(lines: readonly string[]): boolean {
  return lines.some((line) => line.startsWith('SERVER_ERROR not caught up'));
}

/** Writes about three times a 16 MB memcached's memory in items of about our entries' size. */
async function fillAsAnotherClient(port: number, prefix: string): Promise<void> {
  for (let batch = 0; batch < FOREIGN_BATCHES; batch++) {
    let request = '';
    for (let i = 0; i < FOREIGN_BATCH; i++) {
      const value = 'f'.repeat(90 + ((batch * FOREIGN_BATCH + i) % 60));
      request += `set ${prefix}:${batch}:${i} 0 0 ${value.length} noreply\r\n${value}\r\n`;
    }
    await rawRequest(port, `${request}mn\r\n`, /MN\r\n$/);
  }
}

async function writeKeys(port: number): Promise<void> {
  const writer = await TextClient.connect('127.0.0.1', port);
  try {
    for (let i = 0; i < KEYS; i++) {
      const reply = await writer.request(`set k${i} 0 0 ${VALUE.length}\r\n${VALUE}\r\n`, 'set');
      expect(reply.lines[reply.lines.length - 1]).toBe('STORED');
    }
  } finally {
    writer.close();
  }
}

describe.each<Mode>(['sequential', 'eventual'])('%s over memcached servers that evict', (mode) => {
  let cluster: Cluster;

  beforeAll(async () => {
    cluster = await Cluster.start({ mode, memcachedMemoryMb: 16, memcachedEvicts: true });
  }, 60_000);

  afterAll(async () => {
    await cluster?.stop();
  });

  it('a controller whose memcached evicted our items rebuilds its replica and serves every key', async () => {
    await writeKeys(itemAt(cluster.nodes, 0).clientPort);
    const victim = itemAt(cluster.nodes, 1);
    // (Counted, not fetched: a get would mark our items active and shield them from eviction.)
    await expect.poll(() => memcachedStat(victim.memcachedPort, 'curr_items'), { timeout: 10_000 }).toBe(KEYS);

    // Another client of that memcached writes about three times its memory in items of about our
    // size: memcached evicts the least recently used, ours among them.
    await fillAsAnotherClient(victim.memcachedPort, 'a');
    expect(await memcachedStat(victim.memcachedPort, 'evictions')).toBeGreaterThan(0);

    // The controller polls memcached once a second, then rebuilds the replica by a state transfer.
    await expect.poll(() => keysHeld(victim.memcachedPort), { timeout: 20_000, interval: 250 }).toBe(KEYS);
    const reader = await TextClient.connect('127.0.0.1', victim.clientPort);
    try {
      await expect.poll(async () => (await reader.request('get k0\r\n', 'get')).values.length, { timeout: 10_000 }).toBe(1);
      // Writing our items back evicts the other client's, which memcached's counters cannot tell
      // from ours: the controller may rebuild again, refusing reads meanwhile. A refusal is retried;
      // a miss is a lost item.
      for (let i = 0; i < KEYS; i++) {
        let reply = await reader.request(`get k${i}\r\n`, 'get');
        for (let tries = 0; tries < 50 && refusedWhileRebuilding(reply.lines); tries++) {
          await delay(100);
          reply = await reader.request(`get k${i}\r\n`, 'get');
        }
        expect(reply.values.map((item) => item.value.toString()), reply.lines.join(' ')).toEqual([VALUE]);
      }
    } finally {
      reader.close();
    }
    const log = readFileSync(cluster.logFile(victim.id), 'utf8');
    expect(log).toMatch(/memcached evicts items when full \(started without -M\)/);
    expect(log).toMatch(/memcached evicted items this replica held/);
  }, 120_000);
});

describe('sequential: memcached evicted our items while the controller was down', () => {
  let cluster: Cluster;

  beforeAll(async () => {
    // Compaction after 20 entries: replaying the log at restart cannot bring the keys back.
    cluster = await Cluster.start({ mode: 'sequential', memcachedMemoryMb: 16, memcachedEvicts: true, compactAfterEntries: 20 });
  }, 60_000);

  afterAll(async () => {
    await cluster?.stop();
  });

  it('the restarted controller compares with the eviction count it saved, and rebuilds', async () => {
    await writeKeys(itemAt(cluster.nodes, 0).clientPort);
    // Larger items last: the log's tail, replayed at restart, writes to another size class than
    // the one evicted, so nothing but the saved count can tell the controller what happened.
    const large = 'L'.repeat(2000);
    const writer = await TextClient.connect('127.0.0.1', itemAt(cluster.nodes, 0).clientPort);
    try {
      for (let i = 0; i < 40; i++) expect((await writer.request(`set large${i} 0 0 ${large.length}\r\n${large}\r\n`, 'set')).lines.at(-1)).toBe('STORED');
    } finally {
      writer.close();
    }
    const victim = itemAt(cluster.nodes, 2);
    await expect.poll(() => memcachedStat(victim.memcachedPort, 'curr_items'), { timeout: 10_000 }).toBe(KEYS + 40);
    await new Promise((resolve) => setTimeout(resolve, 1_500)); // a poll reads (and saves) the count
    await cluster.kill(victim.id);
    await fillAsAnotherClient(victim.memcachedPort, 'b');
    expect(await keysHeld(victim.memcachedPort)).toBeLessThan(KEYS);
    await cluster.startController(victim.id);
    await expect.poll(() => keysHeld(victim.memcachedPort), { timeout: 20_000, interval: 250 }).toBe(KEYS);
    expect(readFileSync(cluster.logFile(victim.id), 'utf8')).toMatch(/memcached evicted items this replica held/);
  }, 120_000);
});

describe('sequential: another client flushes one replica\'s memcached', () => {
  let cluster: Cluster;

  beforeAll(async () => {
    // The product's own timings (heartbeat 100 ms, failure timeout 1 s: a write waits up to 4 s),
    // not the fault tests' short ones: on a machine busy with the whole suite, a compaction's fsync
    // can hold a write past 2 s, and this test is about flushes, not timeouts.
    cluster = await Cluster.start({ mode: 'sequential', compactAfterEntries: 20, heartbeatIntervalMs: 100, failureTimeoutMs: 1000 });
  }, 60_000);

  afterAll(async () => {
    await cluster?.stop();
  });

  it('the controller notices (memcached counts more flushes than it sent), counts the replica emptied and rebuilds it', async () => {
    await writeKeys(itemAt(cluster.nodes, 0).clientPort);
    const victim = itemAt(cluster.nodes, 1);
    await expect.poll(() => memcachedStat(victim.memcachedPort, 'curr_items'), { timeout: 10_000 }).toBe(KEYS);
    await rawRequest(victim.memcachedPort, 'flush_all\r\n', /OK\r\n$/);
    await expect.poll(() => keysHeld(victim.memcachedPort), { timeout: 20_000, interval: 250 }).toBe(KEYS);
    const log = readFileSync(cluster.logFile(victim.id), 'utf8');
    expect(log).toMatch(/memcached was flushed by another client/);
    // Its own flushes (the rebuild's reset) are not taken for another client's: one rebuild only.
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    const rebuilds = readFileSync(cluster.logFile(victim.id), 'utf8').match(/backend lost its contents/g) ?? [];
    expect(rebuilds).toHaveLength(1);
  }, 60_000);
});
