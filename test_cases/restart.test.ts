/**
 * Controllers that go away and come back, as real processes over real memcached, with a log that
 * compacts every few entries: a restarted controller replays its log onto the replica it kept
 * without applying anything twice (incr and append would show it), the whole cluster restarts
 * after compaction and still serves, every memcached emptied at once after compaction makes the
 * leader start over from the log (the replicas then agree and take writes), and a memcached emptied
 * while its controller was down is noticed at start and rebuilt from the peers. (In sequential
 * mode the nodes' views are compared once they agree: a node may serve a read before it has
 * applied a write that went through another, which sequential consistency allows. Read at once,
 * this failed now and then under load (once in seven loops of the scenario beside two busy
 * processes): a follower just rebuilt by a state transfer answered before applying the write that
 * followed the transfer's index.)
 */

import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TextClient } from '../src/client/text-client.ts';
import type { Mode } from '../src/consistency/types.ts';
import { Cluster, waitUntilServing } from '../src/jepsen/cluster.ts';
import { itemAt } from '../src/runtime/item-at.ts';
import { lastLineOf } from './support/text-request.ts';

async function command(port: number, raw: string, verb: string): Promise<string[]> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const client = await TextClient.connect('127.0.0.1', port);
    try {
      const reply = await client.request(raw, verb);
      const last = lastLineOf(reply);
      // Refused while an election or a catch-up is under way: retry within the deadline.
      if (!last.startsWith('SERVER_ERROR') || Date.now() > deadline) {
        return verb === 'get' ? reply.values.map((item) => `${item.key}=${item.value.toString()}`) : reply.lines;
      }
    } finally {
      client.close();
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * Every node's view of `keys`. Linearizable reads see every write that completed before them, so
 * one read each. A sequential read is served from the node's own replica, which may not have
 * applied the latest writes yet when the write went through another node (a read through a new
 * connection is a new client, which sequential consistency lets see an older state): read until
 * the three views agree, for at most 10 s, then return the last ones.
 */
async function readAll(cluster: Cluster, keys: string[], mode: Mode): Promise<string[][]> {
  const read = (): Promise<string[][]> => Promise.all(cluster.nodes.map((node) => command(node.clientPort, `get ${keys.join(' ')}\r\n`, 'get')));
  let views = await read();
  const deadline = Date.now() + 10_000;
  const agree = (): boolean => views.every((view) => JSON.stringify(view) === JSON.stringify(views[0]));
  while (mode === 'sequential' && !agree() && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    views = await read();
  }
  return views;
}

describe.each<Mode>(['linearizability', 'sequential'])('%s: restarts', (mode) => {
  let cluster: Cluster;
  const keys = ['counter', 'log', 'plain'];

  beforeAll(async () => {
    cluster = await Cluster.start({ mode, compactAfterEntries: 8 });
    await command(itemAt(cluster.nodes, 0).clientPort, 'set counter 0 0 1\r\n0\r\n', 'set');
    await command(itemAt(cluster.nodes, 1).clientPort, 'set log 0 0 1\r\n-\r\n', 'set');
  }, 60_000);

  afterAll(async () => {
    await cluster?.stop();
  });

  async function writeRound(round: number): Promise<void> {
    for (const [index, node] of cluster.nodes.entries()) {
      if (node.controller === null) continue;
      expect(await command(node.clientPort, 'incr counter 1\r\n', 'incr')).not.toEqual([expect.stringMatching(/ERROR/)]);
      await command(node.clientPort, `append log 0 0 1\r\n${index}\r\n`, 'append');
      await command(node.clientPort, `set plain 0 0 ${String(round).length}\r\n${round}\r\n`, 'set');
    }
  }

  it('a killed controller replays onto its kept replica without applying anything twice', async () => {
    for (let round = 0; round < 6; round++) await writeRound(round);
    await cluster.kill('n2');
    await writeRound(6);
    await cluster.startController('n2');
    await waitUntilServing(cluster.node('n2').clientPort, 30_000);
    const views = await readAll(cluster, keys, mode);
    // Six rounds through all three, then one through n1 and n3 while n2 was down.
    expect(views[0]).toEqual(['counter=20', `log=-${'012'.repeat(6)}02`, 'plain=6']);
    expect(views[1]).toEqual(views[0]);
    expect(views[2]).toEqual(views[0]);
  }, 60_000);

  it('the whole cluster restarts after compaction and serves the same data', async () => {
    const before = await readAll(cluster, keys, mode);
    for (const node of cluster.nodes) await cluster.kill(node.id);
    await Promise.all(cluster.nodes.map((node) => cluster.startController(node.id)));
    await Promise.all(cluster.nodes.map((node) => waitUntilServing(node.clientPort, 30_000)));
    const after = await readAll(cluster, keys, mode);
    expect(after).toEqual(before);
    await writeRound(7);
    const [first, ...others] = await readAll(cluster, keys, mode);
    expect(first).toEqual(['counter=23', `${itemAt(before, 0)[1]}012`, 'plain=7']);
    for (const view of others) expect(view).toEqual(first);
  }, 90_000);

  it('every memcached emptied while the controllers run: the cluster recovers, agrees, and takes writes again', async () => {
    await writeRound(8);
    await Promise.all(cluster.nodes.map((node) => cluster.restartBackend(node.id)));
    // Each controller notices its memcached restarted (at its next call or poll). Either a peer
    // that has not noticed yet serves the state from its value cache, or nobody can and the leader
    // starts over from the log after its snapshot: either way the replicas agree.
    await command(itemAt(cluster.nodes, 2).clientPort, 'set fresh 0 0 3\r\nnew\r\n', 'set');
    const views = await readAll(cluster, [...keys, 'fresh'], mode);
    expect(views[0]).toContain('fresh=new');
    expect(views[1]).toEqual(views[0]);
    expect(views[2]).toEqual(views[0]);
  }, 60_000);

  it('every memcached emptied while the controllers were down (after compaction): the leader starts over from the log, the others copy it', async () => {
    for (const node of cluster.nodes) await cluster.kill(node.id);
    await Promise.all(cluster.nodes.map((node) => cluster.restartBackend(node.id)));
    await Promise.all(cluster.nodes.map((node) => cluster.startController(node.id)));
    await Promise.all(cluster.nodes.map((node) => waitUntilServing(node.clientPort, 30_000)));
    await command(itemAt(cluster.nodes, 1).clientPort, 'set later 0 0 3\r\nyes\r\n', 'set');
    const views = await readAll(cluster, [...keys, 'later'], mode);
    expect(views[0]).toContain('later=yes');
    expect(views[1]).toEqual(views[0]);
    expect(views[2]).toEqual(views[0]);
    const logs = cluster.nodes.map((node) => readFileSync(cluster.logFile(node.id), 'utf8')).join('\n');
    expect(logs).toMatch(/starting over from an empty replica/);
  }, 90_000);

  it('a memcached emptied while its controller was down is rebuilt from the peers', async () => {
    const before = await readAll(cluster, keys, mode);
    await cluster.kill('n3');
    await cluster.restartBackend('n3');
    await cluster.startController('n3');
    await waitUntilServing(cluster.node('n3').clientPort, 30_000);
    const after = await readAll(cluster, keys, mode);
    expect(after[2]).toEqual(before[0]);
  }, 60_000);
});
