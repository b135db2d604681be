/**
 * Large values pipelined through a follower: every one is forwarded to the leader, and a forward
 * has no other copy. The follower's peer connection queued at most 16 MiB, while its client port
 * may hold controller_request_bytes_max of requests (16 MiB by default, 32 here): when the leader
 * read more slowly, the forwards past the queue were dropped, and their writes timed out
 * (`SERVER_ERROR timeout: write outcome unknown`, 8 to 14 of 2,400 sets of 1 MiB by default). The
 * queue now holds what the client port may (peer/network.ts, sendQueueBytesFor).
 */

import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cluster } from '../src/jepsen/cluster.ts';
import { itemAt } from '../src/runtime/item-at.ts';
import { leaderOf } from './support/attack-kit.ts';

const VALUE = Buffer.alloc(1000 * 1024, 'v');

/** Pipelines `count` sets of 1 MiB through `port` on one connection; resolves with every reply line. */
function load(port: number, prefix: string, count: number): Promise<string[]> {
  const socket = net.connect(port, '127.0.0.1');
  return new Promise<string[]>((resolve, reject) => {
    const lines: string[] = [];
    let pending = '';
    const timer = setTimeout(() => reject(new Error(`${lines.length} of ${count} replies within 60 s`)), 60_000);
    socket.on('error', reject);
    socket.on('data', (data: Buffer) => {
      const parts = (pending + data.toString('latin1')).split('\r\n');
      pending = parts.pop() ?? '';
      lines.push(...parts);
      if (lines.length >= count) {
        clearTimeout(timer);
        resolve(lines);
      }
    });
    socket.on('connect', () => {
      void (async () => {
        for (let n = 0; n < count; n += 1) {
          const written = socket.write(Buffer.concat([Buffer.from(`set ${prefix}${n % 20} 0 0 ${VALUE.length}\r\n`), VALUE, Buffer.from('\r\n')]));
          if (!written) await new Promise((drained) => socket.once('drain', drained));
        }
      })();
    });
  }).finally(() => socket.destroy());
}

describe('large values pipelined through a follower', () => {
  let cluster: Cluster;

  beforeAll(async () => {
    cluster = await Cluster.start({ mode: 'sequential', backend: 'memcache', extraConfig: ['controller_request_bytes_max = 33554432'],
      // config.ini's timing: a request waits up to 4 s (the harness's 0.5 s would give it 2 s, about what 32 MiB takes here).
      failureTimeoutMs: 1000, heartbeatIntervalMs: 100,
    });
  }, 90_000);

  afterAll(async () => {
    await cluster?.stop();
  });

  it('are all stored: no forward is dropped at the peer connection', async () => {
    const leader = await leaderOf(cluster);
    const follower = itemAt(cluster.nodes.filter((node) => node.id !== leader), 0);
    const replies = await Promise.all(['a', 'b', 'c'].map((prefix) => load(follower.clientPort, prefix, 100)));
    const refused = replies.flat().filter((line) => line !== 'STORED');
    expect(refused.slice(0, 3)).toEqual([]);
    expect(replies.flat().length).toBe(300);
  }, 120_000);
});
