/**
 * A real three-controller cluster (linearizability, memcached) whose leader's disk stalls: every
 * write-ahead fsync there waits 1.5 s (the disk-stall fault's delay file), three times the failure
 * timeout. Nothing waits for that disk on the event loop, and the leader's pings leave without it,
 * so: no election (every term stays), every peer stays up in `show`, a write through a follower
 * completes without that disk (the two followers hold it), one through the leader once the fsync
 * does, and `stats` and `show` report the slow fsync.
 */

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TextClient } from '../src/client/text-client.ts';
import { Cluster } from '../src/jepsen/cluster.ts';
import { itemAt } from '../src/runtime/item-at.ts';

const STALL_MS = 1500;

async function ask(port: number, command: string, verb: string): Promise<string[]> {
  return (await TextClient.requestOnce('127.0.0.1', port, `${command}\r\n`, verb, 10_000)).lines;
}

async function stats(port: number): Promise<Map<string, string>> {
  const lines = await ask(port, 'stats', 'stats');
  return new Map(lines.filter((line) => line.startsWith('STAT ')).map((line) => {
    const [, name, ...value] = line.split(' ');
    return [name, value.join(' ')] as [string, string];
  }));
}

describe('a leader whose disk stalls for 1.5 s at every fsync', () => {
  let cluster: Cluster;

  beforeAll(async () => {
    cluster = await Cluster.start({ mode: 'linearizability', backend: 'memcache', diskStalls: true, walSync: 'fsync' });
  }, 90_000);

  afterAll(async () => {
    await cluster?.stop();
  });

  it("keeps its leadership and its peers; a follower's write completes without its disk, its own once the fsync does", async () => {
    // A write first, so that every node knows the leader and has fsynced once.
    const first = itemAt(cluster.nodes, 0);
    expect(await ask(first.clientPort, 'set warm 0 0 1\r\nw', 'set')).toEqual(['STORED']);
    const roles = await Promise.all(cluster.nodes.map(async (node) => ({ node, stats: await stats(node.clientPort) })));
    const leader = roles.find((each) => each.stats.get('mckv_role') === 'leader');
    expect(leader).toBeDefined();
    const terms = roles.map((each) => each.stats.get('mckv_term'));
    const follower = cluster.nodes.find((node) => node !== leader?.node) ?? first;

    cluster.stallDisk(leader?.node.id ?? '', STALL_MS);
    try {
      const startedMs = performance.now();
      // The leader sends a new entry before its own record's fsync: the two followers hold the
      // follower's write, durably, and it commits there without the leader's disk (followers
      // share holds, consistency/log/follower-holds.ts).
      expect(await ask(follower.clientPort, 'set stalled 0 0 1\r\nv', 'set')).toEqual(['STORED']);
      expect(performance.now() - startedMs).toBeLessThan(STALL_MS - 300);
      // Its own client's write the leader answers once its record is durable.
      const viaLeader = ask(leader?.node.clientPort ?? 0, 'set stalled2 0 0 1\r\nw', 'set');
      // While the leader's fsync waits, everyone still sees everyone: heartbeats flow.
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, startedMs + STALL_MS / 2 - performance.now())));
      for (const node of cluster.nodes) {
        const lines = await ask(node.clientPort, 'show', 'show');
        const peerRows = lines.filter((line) => /^n\d\s+(up|down)\b/.test(line));
        expect(peerRows, `${node.id}: ${lines.join('\n')}`).toHaveLength(2);
        expect(peerRows.every((line) => /^n\d\s+up\b/.test(line)), `${node.id}: ${lines.join('\n')}`).toBe(true);
      }
      expect(Number((await stats(leader?.node.clientPort ?? 0)).get('mckv_wal_records_waiting'))).toBeGreaterThan(0);
      expect(await viaLeader).toEqual(['STORED']);
      // The fsync's delay, give or take a few ms.
      expect(performance.now() - startedMs).toBeGreaterThan(STALL_MS - 300);
    } finally {
      cluster.stallDisk(leader?.node.id ?? '', 0);
    }

    // No election: every node is in the term it was in, under the same leader.
    const after = await Promise.all(cluster.nodes.map((node) => stats(node.clientPort)));
    expect(after.map((each) => each.get('mckv_term'))).toEqual(terms);
    expect(after.map((each) => each.get('mckv_role'))).toEqual(roles.map((each) => each.stats.get('mckv_role')));
    const leaderStats = itemAt(after, cluster.nodes.indexOf(leader?.node ?? first));
    expect(Number(leaderStats.get('mckv_wal_fsync_slowest_recent_ms'))).toBeGreaterThanOrEqual(STALL_MS);
    expect(Number(leaderStats.get('mckv_wal_fsyncs'))).toBeGreaterThan(0);
    for (const node of cluster.nodes) {
      const { values } = await TextClient.requestOnce('127.0.0.1', node.clientPort, 'get stalled stalled2\r\n', 'get', 10_000);
      expect(values.map((value) => value.value.toString()), node.id).toEqual(['v', 'w']);
    }
    // `show` names the slow fsync next to the leader (its own row, and as its peers heard it).
    const show = await ask(leader?.node.clientPort ?? 0, 'show', 'show');
    expect(show.find((line) => /\bself\b/.test(line))).toMatch(/\s1[5-9]\d\dms\s/);
  }, 60_000);
});

describe('sequential: a follower whose disk stalls for 1.5 s at every fsync', () => {
  let cluster: Cluster;

  beforeAll(async () => {
    cluster = await Cluster.start({ mode: 'sequential', backend: 'memcache', diskStalls: true, walSync: 'fsync' });
  }, 90_000);

  afterAll(async () => {
    await cluster?.stop();
  });

  it("a connection reads its own write after it; another connection's read does not wait for that disk", async () => {
    const first = itemAt(cluster.nodes, 0);
    expect(await ask(first.clientPort, 'set seen 0 0 3\r\nold', 'set')).toEqual(['STORED']);
    const roles = await Promise.all(cluster.nodes.map(async (node) => ({ node, role: (await stats(node.clientPort)).get('mckv_role') })));
    const follower = roles.find((each) => each.role === 'follower')?.node ?? first;
    // Every node holds `seen` before the stall (a sequential read may lag; wait until it does not).
    await expectEventually(async () => (await valueOf(follower.clientPort, 'seen')) === 'old');

    cluster.stallDisk(follower.id, STALL_MS);
    try {
      const writer = await TextClient.connect('127.0.0.1', follower.clientPort);
      try {
        // One write of both: the get must see the set before it, held as its apply is.
        const pipelined = writer.request('set mine 0 0 3\r\nnew\r\nget mine\r\n', 'get');
        await new Promise((resolve) => setTimeout(resolve, 100));
        let otherAnsweredFirst = false;
        const other = valueOf(follower.clientPort, 'seen').then((value) => {
          otherAnsweredFirst = true;
          return value;
        });
        const reply = await pipelined;
        expect(reply.lines).toContain('STORED');
        expect(reply.values.map((item) => `${item.key}=${item.value.toString()}`)).toEqual(['mine=new']);
        expect(await other).toBe('old');
        // The other connection was answered from the replica while the writer's apply waited.
        expect(otherAnsweredFirst).toBe(true);
      } finally {
        writer.close();
      }
    } finally {
      cluster.stallDisk(follower.id, 0);
    }
  }, 60_000);
});

async function valueOf(port: number, key: string): Promise<string | null> {
  const reply = await TextClient.requestOnce('127.0.0.1', port, `get ${key}\r\n`, 'get', 10_000);
  return reply.values[0]?.value.toString() ?? null;
}

async function expectEventually(condition: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await condition())) {
    if (performance.now() > deadline) throw new Error(`not true within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
