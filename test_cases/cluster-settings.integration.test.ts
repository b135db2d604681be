/**
 * A real three-controller cluster (sequential, memcached) one of whose controllers is restarted in
 * another mode, as `npx mckv -c config.ini -p PORT` without the cluster's `-cons` would: its peers
 * refuse it at the handshake, so it takes no part (its clients' writes are refused, the other two
 * serve on) and the logs name both settings. Restarted in the cluster's mode, it joins again.
 */

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TextClient } from '../src/client/text-client.ts';
import { Cluster } from '../src/jepsen/cluster.ts';
import { itemAt } from '../src/runtime/item-at.ts';
import { eventually } from './support/fault-kit.ts';

async function ask(port: number, command: string, verb: string): Promise<string[]> {
  return (await TextClient.requestOnce('127.0.0.1', port, `${command}\r\n`, verb, 10_000)).lines;
}

/** The value `get key` reads through the controller at `port`, or null if none. */
async function read(port: number, key: string): Promise<string | null> {
  const reply = await TextClient.requestOnce('127.0.0.1', port, `get ${key}\r\n`, 'get', 10_000);
  return reply.values[0]?.value.toString('latin1') ?? null;
}

/** What `key` reads through `port` once it is `expected`, polling for up to 5 s (another node may lag in sequential mode). */
async function readEventually(port: number, key: string, expected: string): Promise<string | null> {
  return (await eventually(() => read(port, key), (value) => value === expected, { timeoutMs: 5_000 })).value;
}

async function stat(port: number, name: string): Promise<string | undefined> {
  const line = (await ask(port, 'stats', 'stats')).find((each) => each.startsWith(`STAT ${name} `));
  return line?.slice(`STAT ${name} `.length);
}

describe('a controller restarted in another mode than its peers', () => {
  let cluster: Cluster;

  beforeAll(async () => {
    cluster = await Cluster.start({ mode: 'sequential', backend: 'memcache' });
  }, 90_000);

  afterAll(async () => {
    await cluster?.stop();
  });

  it('stays out, its peers naming both modes, and joins once restarted in the cluster mode', async () => {
    const [outsider, first, second] = [itemAt(cluster.nodes, 0), itemAt(cluster.nodes, 1), itemAt(cluster.nodes, 2)];
    expect(await ask(outsider.clientPort, 'set before 0 0 1\r\nb', 'set')).toEqual(['STORED']);

    await cluster.kill(outsider.id);
    const logFrom = cluster.logBytes(first.id);
    await cluster.startController(outsider.id, [], 'linearizability');
    const refusal = await cluster.logSince(first.id, logFrom, 'runs with', 10_000);
    expect(refusal).toMatch(
      new RegExp(`"${outsider.id}" runs with "mode=linearizability read_leases=on .*", this node with "mode=sequential value_bytes_max=\\d+"`),
    );
    expect(Number(await stat(first.clientPort, 'mckv_peer_handshakes_refused'))).toBeGreaterThanOrEqual(1);

    // It never hears a leader: its clients' writes are refused; the other two serve on.
    expect((await ask(outsider.clientPort, 'set during 0 0 1\r\nd', 'set'))[0]).toMatch(/^SERVER_ERROR /);
    expect(await ask(first.clientPort, 'set during 0 0 1\r\ne', 'set')).toEqual(['STORED']);
    expect(await readEventually(second.clientPort, 'during', 'e')).toBe('e');
    expect(await stat(outsider.clientPort, 'mckv_role')).not.toBe('leader');

    await cluster.kill(outsider.id);
    await cluster.startController(outsider.id);
    const deadline = Date.now() + 15_000;
    let reply: string[] = [];
    while (Date.now() < deadline) {
      reply = await ask(outsider.clientPort, 'set after 0 0 1\r\na', 'set');
      if (reply[0] === 'STORED') break;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    expect(reply).toEqual(['STORED']);
    expect(await read(outsider.clientPort, 'during')).toBe('e');
    expect(await readEventually(second.clientPort, 'after', 'a')).toBe('a');
  }, 60_000);
});
