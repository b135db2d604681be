/**
 * The seeded client fuzz (./support/client-fuzz.ts, both protocols, no flush_all or stats reset)
 * against the client ports of a cluster of real controller processes over real memcached, in a log
 * mode and in both merging modes. Every command a controller takes is replicated (as an op or as the entry it
 * made), so one whose replication its peers refused would leave the replicas apart. After the
 * fuzz: every controller runs and serves, the keys written before read back through each, no peer
 * dropped a message as invalid, the fuzz's sets were taken, and its keys read the same through
 * every controller.
 */

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cluster } from '../src/jepsen/cluster.ts';
import { mulberry32 } from '../src/runtime/random.ts';
import { pollUntil, request, stat, Survivors } from './support/attack-kit.ts';
import { fuzzBytes, fuzzConnection } from './support/client-fuzz.ts';

const CONNECTIONS = 240;
const FUZZ_BUDGET_MS = 30_000;
/** The keys the fuzz's valid commands mostly write (see client-fuzz.ts). */
const FUZZ_KEYS = Array.from({ length: 21 }, (_, index) => `k${index}`);

describe.each(['sequential', 'causal', 'eventual'] as const)('%s: a seeded client fuzz against real controllers', (mode) => {
  let cluster: Cluster;
  let survivors: Survivors;

  beforeAll(async () => {
    cluster = await Cluster.start({ mode });
    survivors = new Survivors(cluster);
    await survivors.writeThroughEvery(3);
  }, 60_000);

  afterAll(async () => {
    await cluster?.stop();
  });

  /** Sets the controllers took, all told (the fuzz sends no stats reset). */
  const setsTaken = async (): Promise<number> => {
    const counts = await Promise.all(cluster.nodes.map((node) => stat(node.clientPort, 'cmd_set')));
    return counts.reduce((sum, count) => sum + count, 0);
  };

  /** What `port` holds of the fuzz's keys, as `key=value` lines. */
  const fuzzKeysAt = async (port: number): Promise<string[]> => {
    const reply = await request(port, `get ${FUZZ_KEYS.join(' ')}\r\n`, 'get');
    return reply.values.map((item) => `${item.key}=${item.value.toString('latin1')}`);
  };

  it('leaves every controller serving, nothing dropped by a peer, and the replicas agreeing', async () => {
    const setsBefore = await setsTaken();
    const random = mulberry32(1126);
    const startedMs = Date.now();
    let sent = 0;
    for (let connection = 0; connection < CONNECTIONS && Date.now() - startedMs < FUZZ_BUDGET_MS; connection++) {
      const node = cluster.nodes[connection % cluster.nodes.length];
      if (node === undefined) throw new Error('no node');
      await fuzzConnection(node.clientPort, random, fuzzBytes(random, connection % 2 === 1, false));
      sent += 1;
    }
    expect(sent).toBeGreaterThan(60);

    await survivors.expectIntact('after the client fuzz');
    for (const node of cluster.nodes) expect(await stat(node.clientPort, 'mckv_peer_messages_invalid'), node.id).toBe(0);
    const ports = cluster.nodes.map((node) => node.clientPort);
    const views = await pollUntil(
      async () => Promise.all(ports.map(fuzzKeysAt)),
      (each) => each.every((view) => JSON.stringify(view) === JSON.stringify(each[0])),
      10_000,
      100,
    );
    for (const view of views.slice(1)) expect(view).toEqual(views[0]);
    // The fuzz reached the modes: its sets were taken (its keys may all be gone again: deleted,
    // or stored with an expiry already past).
    // (About 110-140 of 240 connections' sets, on a quiet machine.)
    expect((await setsTaken()) - setsBefore).toBeGreaterThan(10);
  }, 120_000);
});
