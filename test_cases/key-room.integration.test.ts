/**
 * A cluster asked to hold more keys than its controllers can index, as real processes over real
 * memcached: each controller runs in a small heap (`--max-old-space-size`), reports the most keys
 * it can index (`mckv_keys_max`), and a write of a new key past it is refused with memcached's own
 * "SERVER_ERROR out of memory storing object" while every controller keeps serving, overwrites of
 * held keys included. (Before, nothing refused: the key records grew until the heap ran out, a
 * fatal error, and the controller died again at each restart as it indexed the same memcached.)
 */

import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TextClient } from '../src/client/text-client.ts';
import type { Mode } from '../src/consistency/types.ts';
import { Cluster } from '../src/jepsen/cluster.ts';
import { itemAt } from '../src/runtime/item-at.ts';
import { stat } from './support/attack-kit.ts';

/** A heap small enough that its key bound is reached in seconds. */
const HEAP_MB = 96;
const BATCH = 1000;

/** One connection pipelining `count` sets of new keys, BATCH at a time; the reply lines, tallied. */
async function loadKeys(port: number, prefix: string, count: number): Promise<Map<string, number>> {
  const tally = new Map<string, number>();
  const socket = net.connect({ host: '127.0.0.1', port });
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  let pending = '';
  let waiting = 0;
  let wake: (() => void) | null = null;
  socket.on('data', (chunk: Buffer) => {
    const lines = (pending + chunk.toString('latin1')).split('\r\n');
    pending = lines.pop() ?? '';
    for (const line of lines) {
      tally.set(line, (tally.get(line) ?? 0) + 1);
      waiting -= 1;
    }
    if (waiting === 0) wake?.();
  });
  try {
    for (let sent = 0; sent < count; sent += BATCH) {
      const size = Math.min(BATCH, count - sent);
      let bytes = '';
      for (let i = sent; i < sent + size; i++) bytes += `set ${prefix}${i} 0 0 8\r\nvalue-42\r\n`;
      waiting = size;
      const answered = new Promise<void>((resolve) => (wake = resolve));
      socket.write(bytes);
      await Promise.race([answered, new Promise((_, reject) => setTimeout(() => reject(new Error(`no replies within 30 s at ${sent}`)), 30_000))]);
    }
  } finally {
    socket.destroy();
  }
  return tally;
}

describe.each<Mode>(['eventual', 'sequential'])('%s: more keys than the controllers can index', (mode) => {
  let cluster: Cluster;

  beforeAll(async () => {
    cluster = await Cluster.start({
      mode,
      controllerNodeArgs: [`--max-old-space-size=${HEAP_MB}`],
      extraConfig: ['cache_bytes_max = 4194304'],
    });
  }, 60_000);
  afterAll(async () => cluster?.stop());

  it('refuses new keys past the bound with out of memory, and every controller keeps serving', async () => {
    const ports = cluster.nodes.map((node) => node.clientPort);
    const keysMax = await stat(itemAt(ports, 0), 'mckv_keys_max');
    // The bound follows the heap: a 96 MiB heap indexes some tens of thousands of keys, not millions.
    expect(keysMax).toBeGreaterThan(20_000);
    expect(keysMax).toBeLessThan(400_000);

    const tally = await loadKeys(itemAt(ports, 0), 'k', Math.ceil(keysMax * 1.3));
    const stored = tally.get('STORED') ?? 0;
    const refusedCount = tally.get('SERVER_ERROR out of memory storing object') ?? 0;
    expect([...tally.keys()].sort()).toEqual(['SERVER_ERROR out of memory storing object', 'STORED']);
    expect(stored).toBeGreaterThan(keysMax * 0.8);
    expect(stored).toBeLessThanOrEqual(keysMax);
    expect(refusedCount).toBeGreaterThan(0);

    // Every controller is alive, serves reads, and takes an overwrite of a held key.
    for (const port of ports) {
      const client = await TextClient.connect('127.0.0.1', port);
      try {
        expect((await client.request('get k0\r\n', 'get')).values.length).toBe(1);
        expect((await client.request('set k1 0 0 3\r\nnew\r\n', 'set')).lines).toEqual(['STORED']);
      } finally {
        client.close();
      }
    }
    for (const node of cluster.nodes) expect(node.controller?.exitCode).toBeNull();
  }, 120_000);
});
