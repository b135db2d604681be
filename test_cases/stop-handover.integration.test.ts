/**
 * A controller of eventual or causal mode stopped with SIGTERM right after its clients' last
 * writes hands them to its peers before it exits: every write it acknowledged can be read at the
 * other two while it is gone. (Without the handover, the writes of its last push interval stayed
 * in its own memcached until it came back.)
 */

import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runStatus } from '../src/client/status.ts';
import { loadConfig } from '../src/config.ts';
import type { Mode } from '../src/consistency/types.ts';
import { Cluster } from '../src/jepsen/cluster.ts';
import { pipelinedSets, pipelinedValue } from './support/pipelined-sets.ts';
import { requestOnce } from './support/text-request.ts';

const KEYS = 400;

describe.each<Mode>(['eventual', 'causal'])('%s: a stopped controller hands over its last writes', (mode) => {
  let cluster: Cluster;

  /** Until every controller sees the others: a stopping one hands its writes only to the peers it sees up. */
  async function connected(): Promise<void> {
    const config = loadConfig(cluster.configFile);
    expect(await runStatus({ config, timeoutMs: 2000, json: false, waitMs: 20_000, out: () => {} })).toBe(0);
  }

  beforeAll(async () => {
    cluster = await Cluster.start({ mode });
    await connected();
  }, 60_000);

  afterAll(async () => {
    await cluster?.stop();
  });

  // Without the handover a round lost writes about every other time (the stop fell inside a push
  // interval or not): three rounds, a different controller stopped in each.
  it.each(['n1', 'n2', 'n3'])('every write acknowledged just before %s stops is at both peers', async (stopped) => {
    const prefix = `last-${stopped}-`;
    await pipelinedSets(cluster.node(stopped).clientPort, KEYS, prefix);
    const logBytes = cluster.logBytes(stopped);
    await cluster.stopController(stopped);
    expect(readFileSync(cluster.logFile(stopped), 'utf8').slice(logBytes)).toContain('local writes handed to the peers up');
    const keys = Array.from({ length: KEYS }, (_, index) => `${prefix}${index}`);
    const wanted = keys.map((key, index) => `${key}=${pipelinedValue(index)}`);
    for (const peer of cluster.nodes.filter((node) => node.id !== stopped)) {
      const values: string[] = [];
      for (let from = 0; from < KEYS; from += 100) {
        const reply = await requestOnce(peer.clientPort, `get ${keys.slice(from, from + 100).join(' ')}\r\n`, 'get');
        values.push(...reply.values);
      }
      expect(values, peer.id).toEqual(wanted);
    }
    // The next round's peers must see this one again, or they hand it nothing.
    await cluster.startController(stopped);
    await connected();
  }, 60_000);
});
