/**
 * `mckv status --wait`, as a rolling restart uses it, on a real cluster: after a controller that
 * missed writes is restarted, the wait returns 0 only once that controller has applied every
 * write committed before its restart; with a controller down it gives up after its time, exit 1,
 * saying which.
 */

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { endpointStatuses, runStatus } from '../src/client/status.ts';
import { loadConfig, type ClusterConfig } from '../src/config.ts';
import { Cluster } from '../src/jepsen/cluster.ts';
import { pipelinedSets } from './support/pipelined-sets.ts';

describe('mckv status --wait', () => {
  let cluster: Cluster;
  let config: ClusterConfig;

  beforeAll(async () => {
    cluster = await Cluster.start({ mode: 'sequential' });
    config = loadConfig(cluster.configFile);
  }, 60_000);

  afterAll(async () => {
    await cluster?.stop();
  });

  it('returns once a restarted controller has applied what was committed while it was away', async () => {
    const lines: string[] = [];
    expect(await runStatus({ config, timeoutMs: 2000, json: false, waitMs: 10_000, out: (line) => lines.push(line) })).toBe(0);

    await cluster.stopController('n3');
    await pipelinedSets(cluster.node('n1').clientPort, 20_000, 'missed-');
    const before = await endpointStatuses(config, 2000);
    const committed = Math.max(...before.map((status) => Number(status.summary?.committed ?? 0)));
    expect(committed).toBeGreaterThanOrEqual(20_000);

    await cluster.startController('n3');
    const waited: string[] = [];
    const started = performance.now();
    expect(await runStatus({ config, timeoutMs: 2000, json: false, waitMs: 30_000, out: (line) => waited.push(line) })).toBe(0);
    expect(performance.now() - started).toBeLessThan(30_000);
    const after = await endpointStatuses(config, 2000);
    const n3 = after.find((status) => status.node === 'n3')?.summary;
    expect(n3?.caughtUp).toBe(true);
    expect(Number(n3?.applied)).toBeGreaterThanOrEqual(committed);
    expect(waited.filter((line) => line.startsWith('| n'))).toHaveLength(3);
    expect(waited.join('\n')).not.toContain('catching up');
  }, 90_000);

  it('gives up after its time, exit 1, naming the controller that does not answer', async () => {
    await cluster.stopController('n2');
    const lines: string[] = [];
    const started = performance.now();
    expect(await runStatus({ config, timeoutMs: 500, json: false, waitMs: 1500, out: (line) => lines.push(line) })).toBe(1);
    const tookMs = performance.now() - started;
    expect(tookMs).toBeGreaterThanOrEqual(1000);
    expect(tookMs).toBeLessThan(6000);
    expect(lines.at(-1)).toMatch(/^not ready after 1.5 s: .*n2 does not answer/);
    await cluster.startController('n2');
    expect(await runStatus({ config, timeoutMs: 2000, json: false, waitMs: 30_000, out: () => {} })).toBe(0);
  }, 90_000);
});
