/**
 * A cluster whose memcached servers fill up, as real processes over real memcached (-M, small):
 * writes that add data are refused with memcached's own "SERVER_ERROR out of memory storing object"
 * before any replica runs out, and the cluster keeps serving reads and deletes. (Before this guard
 * a write failed at every replica at once, no replica could rebuild another, and every node
 * refused everything from then on.) The leader decides for every write of the cluster, so clients
 * writing through all three controllers at once cannot together overshoot it (when each controller
 * checked only the writes it took itself, nine such clients did, with the same ending).
 */

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TextClient } from '../src/client/text-client.ts';
import type { Mode } from '../src/consistency/types.ts';
import { Cluster } from '../src/jepsen/cluster.ts';

const VALUE = 'x'.repeat(200_000);
const WRITES_MAX = 400;

async function lastLine(port: number, raw: string, verb: string): Promise<string> {
  const client = await TextClient.connect('127.0.0.1', port);
  try {
    const reply = await client.request(raw, verb);
    return reply.lines[reply.lines.length - 1];
  } finally {
    client.close();
  }
}

describe.each<Mode>(['sequential', 'eventual'])('%s: memcached full', (mode) => {
  let cluster: Cluster;

  beforeAll(async () => {
    cluster = await Cluster.start({ mode, memcachedMemoryMb: 16, compactAfterEntries: 20 });
  }, 60_000);

  afterAll(async () => {
    await cluster?.stop();
  });

  it('refuses writes that add data before a replica runs out, and keeps serving reads and deletes', async () => {
    const port = cluster.nodes[0].clientPort;
    const client = await TextClient.connect('127.0.0.1', port);
    const outcomes: string[] = [];
    try {
      for (let i = 0; i < WRITES_MAX; i++) {
        const reply = await client.request(`set big${i} 0 0 ${VALUE.length}\r\n${VALUE}\r\n`, 'set');
        const line = reply.lines[reply.lines.length - 1];
        outcomes.push(line);
        if (line !== 'STORED') break;
      }
    } finally {
      client.close();
    }
    const stored = outcomes.filter((line) => line === 'STORED').length;
    expect(stored).toBeGreaterThan(10);
    expect(outcomes[outcomes.length - 1]).toBe('SERVER_ERROR out of memory storing object');
    // Every controller polls its memcached once a second (and eventual pushes need a moment).
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    for (const node of cluster.nodes) {
      const read = await TextClient.connect('127.0.0.1', node.clientPort);
      try {
        const got = await read.request('get big0\r\n', 'get');
        expect(got.values.map((item) => item.value.length)).toEqual([VALUE.length]);
      } finally {
        read.close();
      }
      expect(await lastLine(node.clientPort, `set more 0 0 ${VALUE.length}\r\n${VALUE}\r\n`, 'set')).toBe('SERVER_ERROR out of memory storing object');
    }
    expect(await lastLine(cluster.nodes[1].clientPort, 'delete big1\r\n', 'delete')).toBe('DELETED');
  }, 120_000);
});

describe('sequential: memcached filled through every controller at once', () => {
  let cluster: Cluster;

  beforeAll(async () => {
    cluster = await Cluster.start({ mode: 'sequential', memcachedMemoryMb: 16, compactAfterEntries: 20 });
  }, 60_000);

  afterAll(async () => {
    await cluster?.stop();
  });

  it('refuses with out of memory, never with a backend error, and keeps serving', async () => {
    const clientsPerNode = 3;
    const writers = cluster.nodes.flatMap((node) => Array.from({ length: clientsPerNode }, () => node.clientPort));
    const outcomes = await Promise.all(
      writers.map(async (port, writer) => {
        const client = await TextClient.connect('127.0.0.1', port);
        const lines: string[] = [];
        try {
          for (let i = 0; i < WRITES_MAX && lines.filter((line) => line !== 'STORED').length < 3; i++) {
            const reply = await client.request(`set w${writer}_${i} 0 0 ${VALUE.length}\r\n${VALUE}\r\n`, 'set');
            lines.push(reply.lines[reply.lines.length - 1]);
          }
        } finally {
          client.close();
        }
        return lines;
      }),
    );
    const all = outcomes.flat();
    expect(all.filter((line) => line === 'STORED').length).toBeGreaterThan(10);
    expect(new Set(all.filter((line) => line !== 'STORED'))).toEqual(new Set(['SERVER_ERROR out of memory storing object']));
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    for (const node of cluster.nodes) {
      const read = await TextClient.connect('127.0.0.1', node.clientPort);
      try {
        const got = await read.request('get w0_0\r\n', 'get');
        expect(got.values.map((item) => item.value.length)).toEqual([VALUE.length]);
      } finally {
        read.close();
      }
    }
    expect(await lastLine(cluster.nodes[2].clientPort, 'delete w0_1\r\n', 'delete')).toBe('DELETED');
  }, 120_000);
});
