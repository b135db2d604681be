/**
 * The fault-runner matrix's one short run (real clusters over memcached), its failure text and
 * the per-mode single-fault runs, shared by the jepsen-matrix-*.test.ts files. The matrix is
 * split over several files so that the test runner's two workers share its minutes instead of
 * one worker ending the suite alone.
 *
 * Invariants: every run cleans up its cluster; a run that did not pass keeps its report folder
 * (its path is printed when the file ends).
 */

import { appendFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { WalSync } from '../../src/config.ts';
import type { Mode } from '../../src/consistency/types.ts';
import { NEMESIS_KINDS, type NemesisKind } from '../../src/jepsen/nemesis.ts';
import { runJepsen, type RunResult } from '../../src/jepsen/runner.ts';

export const MODES: readonly Mode[] = ['linearizability', 'sequential', 'eventual'];
/**
 * The faults of the combined runs. Not `power`, which runs with wal_sync = write, where it cuts
 * records; `kill-all`, `backend-kill` and `link-reset` run alone and in runs of their own (a
 * kill-all's restarts take seconds of these short heals, and a kind more would reshuffle every
 * seed's plan).
 */
export const COMBINED_KINDS: readonly NemesisKind[] = [
  'kill', 'pause', 'partition', 'backend-restart', 'backend-pause', 'backend-fill', 'clock', 'slow', 'stall', 'disk-stall',
];
/**
 * A combined run's client time: ten 1 s faults with 0.7 s heals between them fit in 19 s
 * (planNemesis, the matrix's seeds); the rest is room for the heals that restart a process, which
 * take seconds on a busy machine.
 */
export const COMBINED_TIME_MS = 24_000;
/** The faults of the wal_sync = write runs: a kill keeps the page cache's records, a power loss cuts them. */
export const POWER_KINDS: readonly NemesisKind[] = ['kill', 'pause', 'partition', 'power'];
/**
 * Their client time: a kill's and a power loss's heals restart a controller, which takes seconds
 * on a busy machine (a full suite), and the partition and pause that follow must still start.
 */
export const POWER_TIME_MS = 16_000;
const SINGLE_TIME_MS = 2600;

/** Fault and heal windows' mean lengths: short, so that every kind fits in a short run. */
const SHORT_WINDOWS = { faultMs: 1000, healMs: 700 };

/** Runs for one test file, its reports in a scratch folder removed after the file unless a run failed. */
export function matrixRunner(name: string): (options: RunOptions) => Promise<RunResult> {
  const scratch = mkdtempSync(path.join(os.tmpdir(), `mckv-${name}-`));
  let unfinished = 0;
  afterAll(() => {
    if (unfinished === 0) rmSync(scratch, { recursive: true, force: true });
    else process.stderr.write(`${name}: reports kept in ${scratch}\n`);
  });
  return async (options) => {
    unfinished++;
    const result = await run(scratch, options);
    if (result.exitCode === 0) unfinished--;
    return result;
  };
}

export interface RunOptions {
  mode: Mode;
  nemesis: readonly NemesisKind[];
  timeMs: number;
  seed: number;
  pipeline?: number;
  keys?: number;
  /** Runs default to `fsync`, so that disk-stall (which delays fsyncs) bites. */
  walSync?: WalSync;
  windows?: { faultMs: number; healMs: number };
  /** linearizability: config.ini read_leases (default on, as the product ships). */
  readLeases?: boolean;
}

async function run(scratch: string, options: RunOptions): Promise<RunResult> {
  const { mode, nemesis, timeMs, seed, pipeline = 1, keys = 3, walSync = 'fsync', windows = SHORT_WINDOWS, readLeases = true } = options;
  const reportDir = path.join(scratch, `${mode}-${nemesis.join('+')}-${seed}${pipeline > 1 ? `-pipeline${pipeline}` : ''}-${walSync}${readLeases ? '' : '-no-leases'}`);
  mkdirSync(reportDir, { recursive: true });
  const startMs = performance.now();
  const log = (line: string): void => appendFileSync(path.join(reportDir, 'progress.log'), `${((performance.now() - startMs) / 1000).toFixed(1)}s ${line}\n`);
  const result = await runJepsen({
    mode, nemesis, timeMs, seed, clients: 6, keys, pipeline, backend: 'memcache', reportDir, log, walSync, readLeases,
    // Small memcacheds, so that the backend-fill fault fills all three in well under a fault window
    // on a busy two-core machine (256 MB each took about 6 s together, 64 MB still 3 s in a full suite).
    memcachedMemoryMb: 16,
    ...windows, checkTimeoutMs: 20_000, settleTimeoutMs: 15_000, convergenceTimeoutMs: 10_000,
  });
  log(`done: exit ${result.exitCode}`);
  return result;
}

/** The run passed its checker, injected every one of `kinds` (a silent no-op nemesis cannot pass) and answered over 100 calls. */
export function expectPassedUnder(result: RunResult, kinds: readonly NemesisKind[]): void {
  expect(result.exitCode, explain(result)).toBe(0);
  expect(new Set(result.summary.faults.map((fault) => fault.kind))).toEqual(new Set(kinds));
  expect(result.summary.counts.ok).toBeGreaterThan(100);
}

export function explain(result: RunResult): string {
  return `${result.summary.mode} under ${result.summary.nemesis.join(',')} (seed ${result.summary.seed}): `
    + `${result.check.verdict}\n${result.check.detail ?? ''}\nreport: ${result.reportDir}`;
}

/**
 * One short run of `mode` per fault kind, so that a failure names the fault; a clock step, a
 * stall of the whole machine and reset connections must go unnoticed (nothing refused; after
 * resets, no call timed out either). A file of its own per mode.
 */
export function describeSingleFaults(mode: Mode): void {
  const run = matrixRunner(`jepsen-matrix-${mode}`);
  describe(`${mode} keeps its promise under each fault`, () => {
    NEMESIS_KINDS.forEach((kind, index) => {
      it(`${mode} under ${kind} alone`, async () => {
        // Clock steps go both ways at each node within two windows, and must go unnoticed.
        const windows = kind === 'clock' ? 2 : 1;
        // Reset connections with pipelining clients: a write lost with them has later ones in flight behind it.
        const pipeline = kind === 'link-reset' ? 4 : 1;
        const result = await run({ mode, nemesis: [kind], timeMs: windows * SINGLE_TIME_MS, seed: 200 + index, pipeline });
        expect(result.exitCode, explain(result)).toBe(0);
        const kinds = result.summary.faults.map((fault) => fault.kind);
        expect(kinds.length).toBeGreaterThanOrEqual(windows);
        expect(new Set(kinds)).toEqual(new Set([kind]));
        if (kind === 'clock' || kind === 'stall' || kind === 'link-reset') expect(result.summary.refusals, explain(result)).toEqual([]);
        // A forward lost with a reset connection is sent again, with the ones after it: no call is left without an answer.
        if (kind === 'link-reset') expect(result.summary.counts.info, explain(result)).toBe(0);
      }, 120_000);
    });
  });
}
