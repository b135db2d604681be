/**
 * A node that lost its files: restarted (with --rejoin or, having no records at all, without) it
 * recovers its log from its peers before it takes part, and then serves every write acknowledged before; a node whose files were cut by a
 * power loss (a new boot, wal_sync = write) does the same on its own; two that lose power together
 * copy the third's log if it still leads, and otherwise continue with what they hold, so the cluster
 * serves again either way. Real processes, real memcached.
 */

import { rmSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Cluster } from '../src/jepsen/cluster.ts';
import { findLeader } from './support/fault-kit.ts';
import { requestUntilServed as request } from './support/text-request.ts';

const KEYS = Array.from({ length: 20 }, (_, index) => `rejoin-${index}`);

describe('a node that lost its records recovers them from its peers', () => {
  let cluster: Cluster | null = null;
  afterEach(async () => {
    await cluster?.stop();
    cluster = null;
  });

  async function writeKeys(running: Cluster): Promise<void> {
    const [first] = running.nodes;
    if (first === undefined) throw new Error('no node');
    for (const key of KEYS) {
      const reply = await request(first.clientPort, `set ${key} 0 0 ${key.length}\r\n${key}\r\n`, 'set');
      expect(reply.lines).toEqual(['STORED']);
    }
  }

  it.each([
    ['fsync', ['--rejoin']],
    ['write', ['--rejoin']],
    ['write', []],
  ] as const)('wal_sync = %s: its data_dir deleted, started with %j, it copies the leader\'s log before it serves', async (walSync, flags) => {
    cluster = await Cluster.start({ mode: 'linearizability', walSync, heartbeatIntervalMs: 50, failureTimeoutMs: 500 });
    await writeKeys(cluster);
    const leader = await findLeader(cluster, cluster.nodes.map((node) => node.id), 10_000);
    const lost = cluster.nodes.find((node) => node.id !== leader);
    if (lost === undefined) throw new Error('no follower');
    // A follower that took writes of its own clients before: its leader knows their forwards by its run.
    expect((await request(lost.clientPort, 'set before 0 0 1\r\nb\r\n', 'set')).lines).toEqual(['STORED']);
    await cluster.kill(lost.id);
    rmSync(path.join(cluster.dir, 'data', lost.id), { recursive: true, force: true });
    await cluster.restartBackend(lost.id);
    const from = cluster.logBytes(lost.id);
    await cluster.startController(lost.id, [...flags]);
    const log = (await cluster.logSince(lost.id, from, 'recovered: ', 20_000)) ?? '';
    expect(log).toContain('recovering from the peers');
    expect(log).toContain('recovering: copying the leader\'s log');
    expect(log).toContain('recovered: holds the leader\'s log');
    const reply = await request(lost.clientPort, `get ${KEYS.join(' ')}\r\n`, 'get');
    expect(reply.values).toEqual(KEYS.map((key) => `${key}=${key}`));
    // Its run's number starts again from nothing, yet its new writes are not taken for its lost run's.
    for (const value of ['1', '2']) {
      const stored = await request(lost.clientPort, `set after 0 0 1\r\n${value}\r\n`, 'set');
      // Should its writes time out, what each node said:
      if (stored.lines[0] !== 'STORED') console.log(cluster.logTails(60));
      expect(stored.lines).toEqual(['STORED']);
    }
    for (const node of cluster.nodes) expect((await request(node.clientPort, 'get before after\r\n', 'get')).values).toEqual(['before=b', 'after=2']);
  }, 90_000);

  it('wal_sync = write: a power loss cuts its file and it starts in a new boot; it recovers on its own', async () => {
    cluster = await Cluster.start({ mode: 'sequential', walSync: 'write', heartbeatIntervalMs: 50, failureTimeoutMs: 500 });
    await writeKeys(cluster);
    const lost = cluster.nodes[1];
    if (lost === undefined) throw new Error('no second node');
    const from = cluster.logBytes(lost.id);
    // None of the records written since the last fsync survive.
    await cluster.losePower(lost.id, 0);
    await cluster.powerOn(lost.id);
    const log = (await cluster.logSince(lost.id, from, 'recovered: ', 20_000)) ?? '';
    expect(log).toContain('records may be incomplete');
    expect(log).toContain('recovered: holds the leader\'s log');
    // Sequential reads are local: read until its replica has what the others hold.
    let values: string[] = [];
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      values = (await request(lost.clientPort, `get ${KEYS.join(' ')}\r\n`, 'get')).values;
      if (values.length === KEYS.length) break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(values).toEqual(KEYS.map((key) => `${key}=${key}`));
  }, 90_000);

  it.each(['leader', 'follower'] as const)('wal_sync = write: two machines lose power together and the %s stays up; the cluster serves again', async (kept) => {
    cluster = await Cluster.start({ mode: 'linearizability', walSync: 'write', heartbeatIntervalMs: 50, failureTimeoutMs: 500 });
    const running = cluster;
    await writeKeys(running);
    const ids = running.nodes.map((node) => node.id);
    const leader = await findLeader(running, ids, 10_000);
    const up = kept === 'leader' ? leader : (ids.find((id) => id !== leader) as string);
    const lost = ids.filter((id) => id !== up);
    // A linearizable read there: the node that stays up holds every acknowledged write.
    const upPort = running.node(up).clientPort;
    expect((await request(upPort, `get ${KEYS.join(' ')}\r\n`, 'get')).values).toHaveLength(KEYS.length);
    const from = new Map(lost.map((id) => [id, running.logBytes(id)]));
    await Promise.all(lost.map((id) => running.losePower(id, 0)));
    await Promise.all(lost.map((id) => running.startController(id)));
    const logs = await Promise.all(lost.map((id) => running.logSince(id, from.get(id) ?? 0, 'recovered: ', 20_000)));
    for (const log of logs) {
      expect(log ?? '').toContain('records may be incomplete');
      // It copies the log of the node that stayed up if that one still leads; otherwise it gives
      // up waiting and votes only for a log as complete as that node's.
      expect(log ?? '').toMatch(/recovered: (holds the leader's log|too few peers are sound to elect a leader)/);
    }
    if (kept === 'follower') expect(logs.join('\n')).toContain('recovered: too few peers are sound to elect a leader');
    // A leader again: a write is stored and read back (linearizable) at every node.
    const [first] = running.nodes;
    if (first === undefined) throw new Error('no node');
    expect((await request(first.clientPort, 'set after-power 0 0 2\r\nok\r\n', 'set')).lines).toEqual(['STORED']);
    for (const node of running.nodes) {
      expect((await request(node.clientPort, 'get after-power\r\n', 'get')).values, node.id).toEqual(['after-power=ok']);
    }
    // Nothing acknowledged is lost: the node that stayed up led the cluster on with its log.
    const reply = await request(first.clientPort, `get ${KEYS.join(' ')}\r\n`, 'get');
    expect(reply.values).toEqual(KEYS.map((key) => `${key}=${key}`));
  }, 90_000);
});
