/**
 * The benchmark's bulk workload: its name and spec, that it is run only when named, that its
 * goals fail on errors and on an election during the run, and a short bulk load through a real
 * sequential cluster (one connection per controller): every set STORED, no term changed.
 * Behaviour only, never speed.
 */

import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseBenchArgs } from '../bench/cli.ts';
import { BULK_WORKLOAD, parseWorkload, runLoad, type LoadResult } from '../bench/loadgen.ts';
import { judgeGoals, summarize, type RunSample } from '../bench/report.ts';
import { startTarget } from '../bench/targets.ts';
import { itemAt } from '../src/runtime/item-at.ts';

const logDir = mkdtempSync(path.join(os.tmpdir(), 'mckv-bench-bulk-'));
afterAll(() => rmSync(logDir, { recursive: true, force: true }));

describe('the bulk workload', () => {
  it('is named bulk, is 0:1-3x512, and runs only when named', () => {
    expect(parseWorkload('bulk')).toEqual(BULK_WORKLOAD);
    expect(parseWorkload('0:1-3x512')).toEqual(BULK_WORKLOAD);
    expect(BULK_WORKLOAD).toMatchObject({ connections: 3, pipelineDepth: 512, getFraction: 0 });
    expect(parseWorkload('0:1-6x256')).toMatchObject({ id: '0:1-6x256', connections: 6, pipelineDepth: 256, getFraction: 0 });
    const defaults = parseBenchArgs([]);
    expect(defaults.kind === 'run' && defaults.settings.workloads.map((workload) => workload.id)).not.toContain('bulk');
    const named = parseBenchArgs(['--quick', '--workloads', 'bulk']);
    expect(named.kind === 'run' && named.settings.workloads).toEqual([BULK_WORKLOAD]);
  });

  it('misses its goal on errors or on a term changed during the run, whatever the ratio', () => {
    const result = (opsPerSecond: number, errors: number): LoadResult => ({
      ops: opsPerSecond, opsPerSecond, measuredMs: 1000, gets: 0, sets: opsPerSecond, hits: 0, misses: 0, errors, errorSamples: [],
      latency: { p50Us: 100, p99Us: 200, p999Us: 300, maxUs: 400, meanUs: 100 },
      latencyByKind: { get: null, set: { p50Us: 100, p99Us: 200, p999Us: 300, maxUs: 400, meanUs: 100 } },
      histogram: { buckets: [], valueMin: 0, valueMax: 0, sum: 0 }, preloadMs: 0, preloadErrors: 0, loadgenCpuMs: 0,
    });
    const sample = (target: RunSample['target'], ops: number, extra: Partial<RunSample> = {}): RunSample => ({
      round: 1, target, workload: 'bulk', result: result(ops, 0), failure: null, targetCpuMs: 0, windowMs: 0, loadgenCpuMs: 0, targetSwitches: null, processCpu: null, ...extra,
    });
    const summary = summarize([
      sample('memcached', 1000),
      sample('eventual', 500, { result: result(500, 3) }),
      sample('sequential', 500, { termChanges: ['n2 1→2'] }),
      sample('linearizability', 500, { termChanges: [] }),
    ]);
    expect(summary.find((cell) => cell.target === 'sequential')?.termChanges).toBe(1);
    const goals = judgeGoals(summary, ['memcached', 'eventual', 'sequential', 'linearizability'], ['bulk']);
    expect(goals.map((goal) => [goal.target, goal.status])).toEqual([
      ['eventual', 'not met'],
      ['sequential', 'not met'],
      ['linearizability', 'met'],
    ]);
    expect(itemAt(goals, 0).detail).toContain('3 errors');
    expect(itemAt(goals, 1).detail).toContain('a term changed in 1 round');
  });

  it('through a sequential cluster, one connection per controller: every set STORED, no term changed', async () => {
    // The shipped timings (config.ini): a busy machine (a full suite on two cores) can starve a
    // follower's acknowledgements past a shorter failure timeout, bulk load or not.
    const started = await startTarget('sequential', { dir: logDir, protocol: 'text', heartbeatIntervalMs: 100, failureTimeoutMs: 1000 });
    expect(started.kind, started.kind === 'started' ? '' : started.reason).toBe('started');
    if (started.kind !== 'started') return;
    const target = started.target;
    try {
      const termsBefore = await target.terms?.();
      expect(termsBefore?.size).toBe(3);
      const result = await runLoad({
        ports: target.ports, protocol: 'text', connections: BULK_WORKLOAD.connections, pipelineDepth: BULK_WORKLOAD.pipelineDepth,
        getFraction: 0, keyCount: 2000, valueBytes: 100, durationMs: 2500, warmupMs: 200, preload: false, seed: 26,
      });
      expect(result.errors, result.errorSamples.join('; ')).toBe(0);
      // More than one pipeline's worth: the load kept moving (2.5 s, room for a busy machine's stalls).
      expect(result.sets).toBeGreaterThan(BULK_WORKLOAD.pipelineDepth);
      expect(await target.terms?.()).toEqual(termsBefore);
    } finally {
      await target.stop();
    }
  }, 60_000);
});
