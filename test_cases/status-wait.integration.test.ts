/**
 * `mckv status --wait`, as a rolling restart uses it, on a real cluster: after a controller that
 * missed writes is restarted, the wait returns 0 only once that controller has applied every
 * write committed before its restart; with a controller down it gives up after its time, exit 1,
 * saying which. And each controller's `/readyz`, a load balancer's view of the same: 503 while the
 * restarted one catches up or while a lone one has no majority, 200 once it serves.
 */

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { endpointStatuses, runStatus } from '../src/client/status.ts';
import { loadConfig, type ClusterConfig } from '../src/config.ts';
import { Cluster } from '../src/jepsen/cluster.ts';
import { pollUntil } from './support/attack-kit.ts';
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
    const readiness = watchReadiness(cluster.node('n3').httpPort);
    const waited: string[] = [];
    const started = performance.now();
    expect(await runStatus({ config, timeoutMs: 2000, json: false, waitMs: 30_000, out: (line) => waited.push(line) })).toBe(0);
    // Its health check sent clients away while it caught up, and takes them once it has.
    const answers = await readiness.stop();
    expect(answers[0]).toMatch(/^503 not ready: (catching up|recovering its log from its peers)$/);
    expect(answers.at(-1)).toBe('200 ok');
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

  it('says 503 at a controller left without a majority, and 200 again once a peer is back', async () => {
    expect(await runStatus({ config, timeoutMs: 2000, json: false, waitMs: 30_000, out: () => {} })).toBe(0);
    for (const id of ['n1', 'n2', 'n3']) expect(await readyz(cluster.node(id).httpPort)).toBe('200 ok');
    await cluster.stopController('n2');
    await cluster.stopController('n3');
    const alone = await pollUntil(() => readyzOrError(cluster.node('n1').httpPort), (answer) => answer.startsWith('503'), 15_000);
    expect(alone).toMatch(/^503 not ready: (no leader: an election is on|leader without a majority: it sees no peer|does not see its leader n[23])$/);
    // A stopped controller's health check is gone with it: the connection is refused.
    await expect(readyz(cluster.node('n2').httpPort)).rejects.toThrow();
    await cluster.startController('n2');
    expect(await pollUntil(() => readyzOrError(cluster.node('n1').httpPort), (answer) => answer === '200 ok', 15_000)).toBe('200 ok');
    expect(await pollUntil(() => readyzOrError(cluster.node('n2').httpPort), (answer) => answer === '200 ok', 15_000)).toBe('200 ok');
    await cluster.startController('n3');
  }, 90_000);
});

/** `/readyz` of the controller whose HTTP port is `port`, as "STATUS BODY". */
async function readyz(port: number): Promise<string> {
  const response = await fetch(`http://127.0.0.1:${port}/readyz`, { signal: AbortSignal.timeout(2000) });
  return `${response.status} ${(await response.text()).trim()}`;
}

/** `readyz`, or the error it failed with (a port that refuses connections, say), as text. */
function readyzOrError(port: number): Promise<string> {
  return readyz(port).catch((error: unknown) => `error ${String(error)}`);
}

/** Polls `/readyz` every 20 ms until stopped; the distinct answers in the order they came. */
function watchReadiness(port: number): { stop(): Promise<string[]> } {
  const answers: string[] = [];
  let running = true;
  const polling = (async () => {
    for (let polls = 0; running && polls < 3000; polls += 1) {
      const answer = await readyzOrError(port);
      if (answers.at(-1) !== answer) answers.push(answer);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  })();
  return {
    async stop() {
      running = false;
      await polling;
      return answers;
    },
  };
}
