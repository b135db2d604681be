/**
 * Every memcached stalls at once (SIGSTOP for longer than the controllers' 1 s operation timeout,
 * as when the machine they share stalls), while a client writes: every replica's writes time out
 * together, so none is left to rebuild another from. A write that timed out took effect whole or
 * not at all, and memcached kept everything it acknowledged, so each controller replays its log
 * onto its own replica (skipping what it holds), as after a restart, and the writes caught in the
 * stall (committed) are answered once the replay applied them. Before, each asked its peers for a
 * state transfer that none could give, and the cluster refused everything for good.
 */

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TextClient } from '../src/client/text-client.ts';
import type { Mode } from '../src/consistency/types.ts';
import { Cluster } from '../src/jepsen/cluster.ts';
import { lastLine, lastLineOf } from './support/text-request.ts';
import { itemAt } from '../src/runtime/item-at.ts';

const KEYS = 20;
const STALL_MS = 2_500;

describe.each<Mode>(['sequential', 'linearizability'])('%s: every memcached stalls at once', (mode) => {
  let cluster: Cluster;

  beforeAll(async () => {
    // Compaction every 50 entries: the replicas are past their snapshots, so replaying the log
    // from index 1 is no way out; a state transfer was the only one.
    cluster = await Cluster.start({ mode, compactAfterEntries: 50 });
  }, 60_000);

  afterAll(async () => {
    await cluster?.stop();
  });

  it('each controller replays its log onto its own replica; the cluster serves again and the replicas agree', async () => {
    const client = await TextClient.connect('127.0.0.1', itemAt(cluster.nodes, 0).clientPort);
    let stopped = false;
    const errors: string[] = [];
    let storedAfterStall = 0;
    let resumed = false;
    const writing = (async () => {
      for (let i = 0; !stopped && i < 1_000_000; i++) {
        const value = `v${i}`;
        const reply = await client.request(`set k${i % KEYS} 0 0 ${value.length}\r\n${value}\r\n`, 'set');
        const line = lastLineOf(reply);
        if (line !== 'STORED') errors.push(line);
        if (resumed && line === 'STORED') storedAfterStall += 1;
      }
    })();
    try {
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      const pids = cluster.nodes.map((node) => node.memcached?.pid).filter((pid): pid is number => pid !== undefined);
      expect(pids).toHaveLength(3);
      for (const pid of pids) process.kill(pid, 'SIGSTOP');
      await new Promise((resolve) => setTimeout(resolve, STALL_MS));
      for (const pid of pids) process.kill(pid, 'SIGCONT');
      resumed = true;
      await expect.poll(() => storedAfterStall, { timeout: 15_000, interval: 200 }).toBeGreaterThan(100);
    } finally {
      stopped = true;
      await writing;
      client.close();
    }
    // Writes caught in the stall are committed: their replies waited for the replay and carry
    // its result, rather than an error saying the replica may have missed them.
    expect(errors.filter((line) => /missed writes|outcome unknown/.test(line))).toEqual([]);
    for (const node of cluster.nodes) {
      await expect.poll(() => lastLine(node.clientPort, 'set probe 0 0 2\r\nok\r\n', 'set'), { timeout: 10_000 }).toBe('STORED');
    }
    const valuesAt = async (port: number): Promise<string[]> => {
      const reader = await TextClient.connect('127.0.0.1', port);
      try {
        const keys = Array.from({ length: KEYS }, (_, i) => `k${i}`).join(' ');
        const reply = await reader.request(`get ${keys}\r\n`, 'get');
        return reply.values.map((item) => `${item.key}=${item.value.toString()}`);
      } finally {
        reader.close();
      }
    };
    const atFirst = await valuesAt(itemAt(cluster.nodes, 0).clientPort);
    expect(atFirst).toHaveLength(KEYS);
    for (const node of cluster.nodes.slice(1)) {
      await expect.poll(() => valuesAt(node.clientPort), { timeout: 5_000 }).toEqual(atFirst);
    }
  }, 90_000);
});
