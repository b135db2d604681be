/**
 * Seeded simulation of concurrent increments on one key through every node, in eventual and in
 * causal mode, with drops, delays, duplicates and partitions: once healed, every replica reads the
 * number of increments answered. Replay one seed: COUNTER_SEED=<seed>.
 */

import { describe, expect, it } from 'vitest';
import { runEventualSim, type SimReport } from './support/eventual-sim.ts';

const SEEDS = 40;

function problems(mode: 'eventual' | 'causal'): string[] {
  const only = process.env.COUNTER_SEED;
  const seeds = only === undefined ? Array.from({ length: SEEDS }, (_, index) => 20_000 + index) : [Number(only)];
  const reports: SimReport[] = seeds.map((seed) =>
    runEventualSim({ seed, mode, countersOnly: true, crashes: false, backendResets: false, refusals: false, slowBackends: false }),
  );
  return reports.flatMap((report) => {
    const expected = String(report.stats.incremented);
    const wrong = report.counterReads?.some((read) => read !== expected) ?? true;
    if (report.problem === null && !wrong && report.stats.incremented > 0) return [];
    const reads = JSON.stringify(report.counterReads);
    return [`seed ${report.seed}: ${report.problem ?? 'ok'}; ${report.stats.incremented} increments answered, replicas read ${reads}`];
  });
}

describe('counters under a simulated, faulty network', () => {
  it('eventual mode: every replica reads the number of increments answered', () => {
    expect(problems('eventual')).toEqual([]);
  }, 120_000);

  it('causal mode: every replica reads the number of increments answered', () => {
    expect(problems('causal')).toEqual([]);
  }, 120_000);
});
