/**
 * Items longer than memcached takes, as real processes over real memcached servers with their
 * default item size limit (-I 1m, as a user's own may have), and mckv's default value_bytes_max
 * (1 MiB): a value too long for memcached is refused as memcached refuses it, and an append that
 * would grow a value past value_bytes_max answers NOT_STORED, as memcached does past its limit.
 * Before, each was taken, failed at every replica at once, and every node refused everything
 * from then on.
 */

import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TextClient } from '../src/client/text-client.ts';
import { Cluster } from '../src/jepsen/cluster.ts';
import { lastLine } from './support/text-request.ts';
import { itemAt } from '../src/runtime/item-at.ts';

describe('sequential: items longer than memcached takes', () => {
  let cluster: Cluster;

  beforeAll(async () => {
    cluster = await Cluster.start({ mode: 'sequential' });
    // Every controller polls its memcached once a second; the first poll reads its limits.
    await new Promise((resolve) => setTimeout(resolve, 1_200));
  }, 60_000);

  afterAll(async () => {
    await cluster?.stop();
  });

  it('refuses a value memcached cannot hold with memcached\'s own error, and keeps serving', async () => {
    const value = 'v'.repeat(1024 * 1024);
    expect(await lastLine(itemAt(cluster.nodes, 1).clientPort, `set whole 0 0 ${value.length}\r\n${value}\r\n`, 'set')).toBe('SERVER_ERROR object too large for cache');
    for (const node of cluster.nodes) {
      expect(await lastLine(node.clientPort, 'set after 0 0 2\r\nok\r\n', 'set')).toBe('STORED');
      expect(await lastLine(node.clientPort, 'get whole\r\n', 'get')).toBe('END');
    }
    const log = readFileSync(cluster.logFile(itemAt(cluster.nodes, 1).id), 'utf8');
    expect(log).toMatch(/memcached takes shorter items than value_bytes_max allows/);
  }, 60_000);

  it('answers NOT_STORED to an append past value_bytes_max and keeps the value', async () => {
    const port = itemAt(cluster.nodes, 0).clientPort;
    const piece = 'p'.repeat(100_000);
    expect(await lastLine(port, 'set grown 0 0 1\r\na\r\n', 'set')).toBe('STORED');
    const replies: string[] = [];
    for (let i = 0; i < 12 && !replies.includes('NOT_STORED'); i++) {
      replies.push(await lastLine(port, `append grown 0 0 ${piece.length}\r\n${piece}\r\n`, 'append'));
    }
    expect(replies).toEqual([...Array.from({ length: 10 }, () => 'STORED'), 'NOT_STORED']);
    for (const node of cluster.nodes) {
      const client = await TextClient.connect('127.0.0.1', node.clientPort);
      try {
        await expect.poll(async () => (await client.request('get grown\r\n', 'get')).values.map((item) => item.value.length), { timeout: 5_000 }).toEqual([1 + 10 * piece.length]);
      } finally {
        client.close();
      }
      expect(await lastLine(node.clientPort, 'set later 0 0 2\r\nok\r\n', 'set')).toBe('STORED');
    }
  }, 60_000);
});
