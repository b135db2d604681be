/**
 * The request histogram keeps its own series, so its exposition is checked against prom-client's
 * own Histogram given the same observations: the same text, line for line, and the same JSON.
 */

import { describe, expect, it } from 'vitest';
import { Histogram, Registry } from 'prom-client';
import { RequestHistogram } from '../src/http/request-histogram.ts';

const buckets = [0.00005, 0.0001, 0.00025, 0.001, 0.5, 15];

function pair(): { ours: RequestHistogram; theirs: Histogram<'command' | 'outcome'>; oursRegistry: Registry; theirsRegistry: Registry } {
  const oursRegistry = new Registry();
  const theirsRegistry = new Registry();
  for (const registry of [oursRegistry, theirsRegistry]) registry.setDefaultLabels({ node: 'n1' });
  const config = { name: 'mckv_request_duration_seconds', help: 'Request latency.', buckets };
  const ours = new RequestHistogram({ ...config, registers: [oursRegistry] });
  const theirs = new Histogram({ ...config, labelNames: ['command', 'outcome'], registers: [theirsRegistry] });
  return { ours, theirs, oursRegistry, theirsRegistry };
}

describe('RequestHistogram', () => {
  it("exposes what prom-client's Histogram exposes for the same observations", async () => {
    const { ours, theirs, oursRegistry, theirsRegistry } = pair();
    // Seeded values across every bucket, on the bounds themselves and above the last.
    let seed = 7;
    const next = (): number => (seed = (seed * 48271) % 2147483647) / 2147483647;
    const labels: Array<[string, string]> = [['get', 'values'], ['set', 'stored'], ['get', 'refused'], ['delete', 'not_found']];
    for (let index = 0; index < 2000; index++) {
      const [command, outcome] = labels[index % labels.length] as [string, string];
      const value = index % 50 === 0 ? (buckets[index % buckets.length] as number) : index % 97 === 0 ? 20 : next() * next() * 0.6;
      ours.series(command, outcome).observe(value);
      theirs.labels(command, outcome).observe(value);
    }
    const lines = (text: string): string[] => text.split('\n').sort();
    expect(lines(await oursRegistry.metrics())).toEqual(lines(await theirsRegistry.metrics()));
    expect(await oursRegistry.getMetricsAsJSON()).toEqual(await theirsRegistry.getMetricsAsJSON());
  });

  it('finds one series per pair and forgets them all on a reset', async () => {
    const { ours, oursRegistry } = pair();
    expect(ours.series('get', 'values')).toBe(ours.series('get', 'values'));
    expect(ours.series('get', 'values')).not.toBe(ours.series('get', 'miss'));
    ours.series('get', 'values').observe(0.0002);
    expect(await oursRegistry.metrics()).toContain('mckv_request_duration_seconds_count{node="n1",command="get",outcome="values"} 1');
    oursRegistry.resetMetrics();
    expect(await oursRegistry.metrics()).not.toContain('_count{');
  });
});
