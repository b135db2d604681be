/**
 * The CI matrix of the fault runner: every consistency mode under every fault kind, on real
 * clusters (memcached backends), each short. A failure here means a mode broke its promise under
 * a fault (or the checker could not decide): the message carries the checker's explanation and
 * the report folder is kept.
 *
 * Intuition: one run per mode with all six faults (kill, pause, partition, backend-restart,
 * backend-pause, backend-fill), with windows short enough that each kind is injected at least once
 * (the nemesis plans kinds in shuffled rounds), then one short single-fault run per mode × fault,
 * so a failure names the fault.
 *
 * Invariants: runs go one after another (2 cores shared); every run cleans up its cluster;
 * each run asserts which faults actually happened, so a silent no-op nemesis cannot pass.
 */

import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { WalSync } from '../src/config.ts';
import type { Mode } from '../src/consistency/types.ts';
import { NEMESIS_KINDS, type NemesisKind } from '../src/jepsen/nemesis.ts';
import { RECOVERY_GRACE_MS } from '../src/jepsen/report.ts';
import { runJepsen, type RunResult } from '../src/jepsen/runner.ts';

const scratch = mkdtempSync(path.join(os.tmpdir(), 'mckv-jepsen-matrix-'));
/** Runs that did not pass (or never finished): their reports are kept for reading. */
let unfinished = 0;
afterAll(() => {
  if (unfinished === 0) rmSync(scratch, { recursive: true, force: true });
  else process.stderr.write(`jepsen matrix: reports kept in ${scratch}\n`);
});

const MODES: readonly Mode[] = ['linearizability', 'sequential', 'eventual'];
/** The faults of the combined runs: all but `power`, which runs with wal_sync = write below, where it cuts records. */
const COMBINED_KINDS = NEMESIS_KINDS.filter((kind) => kind !== 'power');
/**
 * A run's client time: ten 1 s faults with 0.7 s heals between them fit in 19 s (planNemesis, these
 * seeds); the rest is room for the heals that restart a process, which take seconds on a busy machine.
 */
const COMBINED_TIME_MS = 24_000;
const SINGLE_TIME_MS = 2600;

/** Fault and heal windows' mean lengths: short, so that every kind fits in a short run. */
const SHORT_WINDOWS = { faultMs: 1000, healMs: 700 };

/** Runs default to wal_sync = fsync, so that disk-stall (which delays fsyncs) bites; wal_sync = write has its own runs below. */
async function run(
  mode: Mode, nemesis: readonly NemesisKind[], timeMs: number, seed: number, pipeline = 1, keys = 3, walSync: WalSync = 'fsync', windows = SHORT_WINDOWS,
): Promise<RunResult> {
  const reportDir = path.join(scratch, `${mode}-${nemesis.join('+')}-${seed}${pipeline > 1 ? `-pipeline${pipeline}` : ''}-${walSync}`);
  mkdirSync(reportDir, { recursive: true });
  const startMs = performance.now();
  const log = (line: string): void => appendFileSync(path.join(reportDir, 'progress.log'), `${((performance.now() - startMs) / 1000).toFixed(1)}s ${line}\n`);
  unfinished++;
  const result = await runJepsen({
    mode, nemesis, timeMs, seed, clients: 6, keys, pipeline, backend: 'memcache', reportDir, log, walSync,
    // Small memcacheds, so that the backend-fill fault fills all three in well under a fault window
    // on a busy two-core machine (256 MB each took about 6 s together, 64 MB still 3 s in a full suite).
    memcachedMemoryMb: 16,
    ...windows, checkTimeoutMs: 20_000, settleTimeoutMs: 15_000, convergenceTimeoutMs: 10_000,
  });
  log(`done: exit ${result.exitCode}`);
  if (result.exitCode === 0) unfinished--;
  return result;
}

function explain(result: RunResult): string {
  return `${result.summary.mode} under ${result.summary.nemesis.join(',')} (seed ${result.summary.seed}): `
    + `${result.check.verdict}\n${result.check.detail ?? ''}\nreport: ${result.reportDir}`;
}

describe('every mode keeps its promise under every fault', () => {
  MODES.forEach((mode, index) => {
    it(`${mode} under kill, pause, partition, backend-restart, backend-pause, backend-fill, clock, slow, stall and disk-stall together`, async () => {
      const result = await run(mode, COMBINED_KINDS, COMBINED_TIME_MS, 100 + index);
      expect(result.exitCode, explain(result)).toBe(0);
      expect(new Set(result.summary.faults.map((fault) => fault.kind))).toEqual(new Set(COMBINED_KINDS));
      expect(result.summary.counts.ok).toBeGreaterThan(100);
    }, 150_000);
  });

  (['linearizability', 'sequential'] as const).forEach((mode, index) => {
    it(`${mode} with pipelining clients (4 calls in flight on each connection) under every fault together`, async () => {
      // Twice the keys: 24 calls in flight on 3 keys would leave the checker too many orders to search.
      const result = await run(mode, COMBINED_KINDS, COMBINED_TIME_MS, 300 + index, 4, 6);
      expect(result.exitCode, explain(result)).toBe(0);
      expect(result.summary.pipeline).toBe(4);
      expect(result.summary.counts.ok).toBeGreaterThan(100);
      // Every call names its connection, which four processes share: the sequential checker keeps
      // each connection's order (check/sequential.ts), not only each process's.
      const invokes = readFileSync(path.join(result.reportDir, 'history.jsonl'), 'utf8').split('\n')
        .filter((line) => line.includes('"type":"invoke"')).map((line) => JSON.parse(line) as { process: number; connection?: string });
      expect(invokes.every((event) => typeof event.connection === 'string')).toBe(true);
      const processesOf = new Map<string, Set<number>>();
      for (const { process, connection } of invokes) {
        processesOf.set(connection as string, (processesOf.get(connection as string) ?? new Set()).add(process));
      }
      expect(Math.max(...[...processesOf.values()].map((processes) => processes.size))).toBeGreaterThanOrEqual(4);
    }, 150_000);
  });

  (['linearizability', 'sequential'] as const).forEach((mode, index) => {
    it(`${mode} with wal_sync = write (records reach the operating system, not the disk) under kill, pause, partition and power loss`, async () => {
      // A killed controller's records are in the page cache: kill -9 loses none of them. A power
      // loss cuts the records written since the last fsync; the node recovers from its peers.
      // 16 s: a kill's and a power loss's heals restart a controller, which takes seconds on a
      // busy machine (a full suite), and the partition and pause that follow must still start.
      const result = await run(mode, ['kill', 'pause', 'partition', 'power'], 16_000, 400 + index, 1, 3, 'write');
      expect(result.exitCode, explain(result)).toBe(0);
      expect(result.summary.walSync).toBe('write');
      expect(new Set(result.summary.faults.map((fault) => fault.kind))).toEqual(new Set(['kill', 'pause', 'partition', 'power']));
      expect(result.summary.counts.ok).toBeGreaterThan(100);
    }, 120_000);
  });

  MODES.forEach((mode, index) => {
    it(`${mode}: once a fill of every memcached is healed, writes are taken again (none refused while no fault is on)`, async () => {
      // One fill (the plan: heal 4.5-7.5 s, fill 1.1-1.9 s, then nothing more fits in 12 s), then
      // at least a second with no fault on past the grace after the heal: the clients run at least
      // half a heal window past it, even when the fill overran its window.
      const result = await run(mode, ['backend-fill'], 12_000, 500 + index, 1, 3, 'fsync', { faultMs: 1500, healMs: 6000 });
      expect(result.exitCode, explain(result)).toBe(0);
      expect(result.summary.faults).toHaveLength(1);
      const fill = result.summary.faults[0]!;
      expect(result.summary.durationMs - (fill.healedMs + RECOVERY_GRACE_MS)).toBeGreaterThan(500);
      // Refused during the fill, as they must be; none after it.
      expect(result.summary.refusals.find((refusal) => refusal.error.includes('out of memory'))?.count ?? 0).toBeGreaterThan(0);
      expect(result.summary.refusals.filter((refusal) => refusal.quiet > 0), explain(result)).toEqual([]);
    }, 120_000);
  });

  for (const mode of MODES) {
    NEMESIS_KINDS.forEach((kind, index) => {
      it(`${mode} under ${kind} alone`, async () => {
        // Clock steps go both ways at each node within two windows, and must go unnoticed.
        const windows = kind === 'clock' ? 2 : 1;
        const result = await run(mode, [kind], windows * SINGLE_TIME_MS, 200 + index);
        expect(result.exitCode, explain(result)).toBe(0);
        const kinds = result.summary.faults.map((fault) => fault.kind);
        expect(kinds.length).toBeGreaterThanOrEqual(windows);
        expect(new Set(kinds)).toEqual(new Set([kind]));
        // A clock step and a stall of the whole machine must go unnoticed: nothing refused.
        if (kind === 'clock' || kind === 'stall') expect(result.summary.refusals, explain(result)).toEqual([]);
      }, 120_000);
    });
  }
});
