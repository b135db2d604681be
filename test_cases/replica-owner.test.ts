/**
 * An ordered mode takes only its own replica: one an eventual or causal run wrote, or one that held
 * keys before the node had a log, is refused while it holds keys and rebuilt from the log and peers
 * once emptied. Without that, a linearizability cluster started over replicas an eventual run left
 * different answered one key differently at different nodes, with no fault at all. The decision
 * alone, then real processes over real memcached.
 */

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { foreignReplicaRefusal, readReplicaMarker, REPLICA_MODE_FILE, replicaAtStart, writeReplicaMarker } from '../src/controller/replica-owner.ts';
import { Cluster } from '../src/jepsen/cluster.ts';
import { requestOnce as request, requestUntilServed as requestServed } from './support/text-request.ts';

describe('which replica an ordered mode takes as its own', () => {
  const ran = (mode: 'eventual' | 'causal' | 'sequential' | 'linearizability') => ({ kind: 'mode', mode }) as const;
  const none = { kind: 'none' } as const;
  const fresh = { logRecords: false, rejoin: false };
  const logged = { logRecords: true, rejoin: false };

  it('refuses one that eventual or causal mode served, or that held keys before there was a log, while it holds keys', () => {
    expect(replicaAtStart('linearizability', ran('eventual'), { ...logged, keys: 5 })).toMatchObject({ kind: 'refuse', why: expect.stringContaining('eventual mode served it last') });
    expect(replicaAtStart('sequential', ran('causal'), { ...fresh, keys: 1 })).toMatchObject({ kind: 'refuse', why: expect.stringContaining('causal mode') });
    expect(replicaAtStart('linearizability', none, { ...fresh, keys: 3 })).toMatchObject({ kind: 'refuse', why: expect.stringContaining('no log yet') });
    expect(replicaAtStart('linearizability', { kind: 'unreadable', text: 'garbage' }, { ...logged, keys: 3 })).toMatchObject({ kind: 'refuse' });
  });

  it('tells a node with no log that held keys to start with --rejoin if it lost its data_dir', () => {
    const fresh = replicaAtStart('sequential', none, { logRecords: false, rejoin: false, keys: 2 });
    expect(fresh.kind).toBe('refuse');
    if (fresh.kind !== 'refuse') return;
    expect(foreignReplicaRefusal('127.0.0.1:11211', 2, fresh.why, 'sequential')).toMatch(/holds 2 keys.*--rejoin instead/);
    expect(foreignReplicaRefusal('127.0.0.1:11211', 2, 'eventual mode served it last', 'sequential')).not.toMatch(/--rejoin/);
  });

  it('rebuilds such a replica once empty if its log thinks it full; takes it as it is when there is nothing to mend', () => {
    expect(replicaAtStart('linearizability', ran('eventual'), { ...logged, keys: 0 })).toMatchObject({ kind: 'rebuild' });
    expect(replicaAtStart('linearizability', ran('eventual'), { ...fresh, keys: 0 })).toEqual({ kind: 'own' });
    expect(replicaAtStart('linearizability', none, { ...fresh, keys: 0 })).toEqual({ kind: 'own' });
  });

  it('takes the ordered modes\' own, a data_dir from before the marker, a rejoining node\'s, and anything in eventual or causal mode', () => {
    expect(replicaAtStart('linearizability', ran('sequential'), { ...logged, keys: 9 })).toEqual({ kind: 'own' });
    expect(replicaAtStart('sequential', ran('linearizability'), { ...logged, keys: 9 })).toEqual({ kind: 'own' });
    expect(replicaAtStart('linearizability', none, { ...logged, keys: 9 })).toEqual({ kind: 'own' });
    expect(replicaAtStart('linearizability', none, { logRecords: false, rejoin: true, keys: 9 })).toEqual({ kind: 'own' });
    expect(replicaAtStart('eventual', ran('linearizability'), { ...logged, keys: 9 })).toEqual({ kind: 'own' });
    expect(replicaAtStart('causal', none, { ...fresh, keys: 9 })).toEqual({ kind: 'own' });
  });

  it('reads back the mode it wrote, and takes anything else in the file as unreadable', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'mckv-replica-mode-'));
    try {
      expect(readReplicaMarker(dir)).toEqual({ kind: 'none' });
      writeReplicaMarker(dir, 'causal');
      expect(readReplicaMarker(dir)).toEqual({ kind: 'mode', mode: 'causal' });
      expect(readFileSync(path.join(dir, REPLICA_MODE_FILE), 'utf8')).toBe('causal\n');
      writeFileSync(path.join(dir, REPLICA_MODE_FILE), 'eventually\n');
      expect(readReplicaMarker(dir)).toMatchObject({ kind: 'unreadable', text: 'eventually\n' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/** Until `port` reads `expected` (key=value) for its key, for at most 5 s (eventual pushes every 25 ms). */
async function untilHeld(port: number, expected: string): Promise<void> {
  const key = expected.split('=')[0] ?? '';
  const deadline = Date.now() + 5_000;
  while ((await request(port, `get ${key}\r\n`, 'get')).values[0] !== expected && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

describe('switching a cluster from eventual mode to linearizability over kept memcached servers', () => {
  let cluster: Cluster | null = null;
  afterEach(async () => {
    await cluster?.stop();
    cluster = null;
  });

  it('refuses the replicas an eventual run left different, then rebuilds them from the log once emptied', async () => {
    cluster = await Cluster.start({ mode: 'linearizability', heartbeatIntervalMs: 50, failureTimeoutMs: 500 });
    const running = cluster;
    const ids = running.nodes.map((node) => node.id);
    const [first] = running.nodes;
    if (first === undefined) throw new Error('no node');
    // Written through the log.
    expect((await requestServed(first.clientPort, 'set logged 0 0 3\r\nlin\r\n', 'set')).lines).toEqual(['STORED']);
    for (const id of ids) await running.kill(id);

    // An eventual run over the same data_dir and memcached servers: a write every node took, then
    // one only n1 took.
    for (const id of ids) await running.startController(id, [], 'eventual');
    expect((await request(first.clientPort, 'set base 0 0 2\r\nv0\r\n', 'set')).lines).toEqual(['STORED']);
    for (const node of running.nodes) await untilHeld(node.clientPort, 'base=v0');
    for (const id of ids.slice(1)) await running.kill(id);
    expect((await request(first.clientPort, 'set base 0 0 5\r\nalone\r\n', 'set')).lines).toEqual(['STORED']);
    await running.kill(first.id);

    // Linearizability again: every node's memcached holds what no log made: each refuses to start.
    for (const id of ids) {
      const from = running.logBytes(id);
      await expect(running.startController(id, [], 'linearizability'), id).rejects.toThrow(/exited before answering/);
      const said = (await running.logSince(id, from, 'holds', 5_000)) ?? '';
      expect(said).toContain('eventual mode served it last');
      expect(said).toContain('flush_all');
    }

    // Emptied, each starts; the log puts back what it holds, and every node answers alike.
    for (const id of ids) await running.restartBackend(id);
    for (const id of ids) await running.startController(id, [], 'linearizability');
    for (const node of running.nodes) {
      const reply = await requestServed(node.clientPort, 'get logged base\r\n', 'get');
      expect(reply.values).toEqual(['logged=lin']);
    }
    expect(readReplicaMarker(path.join(running.dir, 'data', first.id))).toEqual({ kind: 'mode', mode: 'linearizability' });
  }, 120_000);
});
