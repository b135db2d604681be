/**
 * The fault runner's bulk workload on real clusters (memcached backends), every mode: half the
 * clients are bulk loaders, one per controller, each pipelining bursts of 256 sets, beside the
 * mixed clients. Each run must pass its mode's checker, refuse nothing (no fault is on, so every
 * refusal would be a quiet one), and the bulk loaders' keys must have been written and judged.
 * Then ordered runs with kills and partitions, and with power losses and memcached restarts (a
 * controller recovering its log or rebuilding its replica holds writes: none is refused for it).
 */

import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Mode } from '../src/consistency/types.ts';
import type { NemesisKind } from '../src/jepsen/nemesis.ts';
import { parseArguments } from '../src/jepsen/args.ts';
import { runJepsen, type RunResult } from '../src/jepsen/runner.ts';
import { bulkKeyName } from '../src/jepsen/workload.ts';

const scratch = mkdtempSync(path.join(os.tmpdir(), 'mckv-jepsen-bulk-'));
let unfinished = 0;
afterAll(() => {
  if (unfinished === 0) rmSync(scratch, { recursive: true, force: true });
  else process.stderr.write(`jepsen bulk: reports kept in ${scratch}\n`);
});

const BULK_DEPTH = 256;

async function bulkRun(mode: Mode, nemesis: readonly NemesisKind[], timeMs: number, seed: number): Promise<RunResult> {
  const reportDir = path.join(scratch, `${mode}-${nemesis.join('+') || 'none'}-${seed}`);
  mkdirSync(reportDir, { recursive: true });
  const log = (line: string): void => appendFileSync(path.join(reportDir, 'progress.log'), `${line}\n`);
  unfinished++;
  const result = await runJepsen({
    mode, nemesis, timeMs, seed, clients: 6, keys: 3, workload: 'bulk', bulkDepth: BULK_DEPTH, backend: 'memcache', reportDir, log,
    faultMs: 1000, healMs: 700, checkTimeoutMs: 20_000, settleTimeoutMs: 15_000, convergenceTimeoutMs: 10_000,
  });
  if (result.exitCode === 0) unfinished--;
  return result;
}

function explain(result: RunResult): string {
  return `${result.summary.mode} bulk (seed ${result.summary.seed}): ${result.check.verdict}\n${result.check.detail ?? ''}\n`
    + `refusals: ${JSON.stringify(result.summary.refusals)}\nreport: ${result.reportDir}`;
}

/** Completions of the bulk loaders' sets in the history, by type (ok, fail, info). */
function bulkCompletions(result: RunResult): Record<string, number> {
  const counts: Record<string, number> = { ok: 0, fail: 0, info: 0 };
  for (const event of bulkWriteCompletions(result)) counts[event.type] = (counts[event.type] ?? 0) + 1;
  return counts;
}

function bulkWriteCompletions(result: RunResult): Array<{ type: string; error?: string }> {
  const events: Array<{ type: string; error?: string }> = [];
  for (const line of readFileSync(path.join(result.reportDir, 'history.jsonl'), 'utf8').split('\n')) {
    if (!line.includes('jepsen-bulk-')) continue;
    const event = JSON.parse(line) as { type: string; f: string; error?: string };
    if (event.f === 'write' && event.type !== 'invoke') events.push(event);
  }
  return events;
}

describe('the bulk workload\'s flags', () => {
  it('--workload bulk with its defaults, or with loaders and depth given; bad values refused in one line', async () => {
    expect(await parseArguments(['--cons', 'eventual'])).toMatchObject({ ok: true, options: { workload: 'mixed', bulkDepth: 256 } });
    expect(await parseArguments(['--cons', 'eventual', '--workload', 'bulk'])).toMatchObject({ ok: true, options: { workload: 'bulk', bulkDepth: 256, bulkClients: undefined } });
    expect(await parseArguments(['--cons', 'sequential', '--workload', 'bulk', '--bulk-clients', '2', '--bulk-depth', '500'])).toMatchObject({
      ok: true,
      options: { workload: 'bulk', bulkClients: 2, bulkDepth: 500 },
    });
    expect(await parseArguments(['--cons', 'sequential', '--workload', 'heavy'])).toMatchObject({ ok: false, error: expect.stringMatching(/workload/) });
    expect(await parseArguments(['--cons', 'sequential', '--workload', 'bulk', '--bulk-depth', '2000'])).toEqual({ ok: false, error: '--bulk-depth must be an integer from 1 to 1024' });
    expect(await parseArguments(['--cons', 'sequential', '--workload', 'bulk', '--bulk-clients', '7'])).toEqual({ ok: false, error: '--bulk-clients must be an integer from 1 to --clients' });
  });
});

describe('the bulk workload', () => {
  (['eventual', 'sequential', 'linearizability'] as const).forEach((mode, index) => {
    it(`${mode}: three bulk loaders × ${BULK_DEPTH} sets in flight beside mixed clients; the checker passes and nothing is refused`, async () => {
      const result = await bulkRun(mode, [], 4000, 600 + index);
      expect(result.exitCode, explain(result)).toBe(0);
      expect(result.summary.bulk).toEqual({ clients: 3, depth: BULK_DEPTH });
      // No fault was on: any refusal would be a quiet one.
      expect(result.summary.refusals, explain(result)).toEqual([]);
      const bulk = bulkCompletions(result);
      expect(bulk.ok, JSON.stringify(bulk)).toBeGreaterThanOrEqual(2 * 3 * BULK_DEPTH);
      expect(bulk.fail).toBe(0);
      // The final reads and the convergence check cover the bulk loaders' keys too.
      const history = readFileSync(path.join(result.reportDir, 'history.jsonl'), 'utf8');
      if (mode !== 'eventual') expect(history).toContain(`"key":"${bulkKeyName(5, BULK_DEPTH - 1)}","value":null,"client"`);
    }, 120_000);
  });

  it('sequential: bulk loaders under kills and partitions; the checker passes', async () => {
    const result = await bulkRun('sequential', ['kill', 'partition'], 6000, 610);
    expect(result.exitCode, explain(result)).toBe(0);
    expect(result.summary.faults.length).toBeGreaterThanOrEqual(2);
    expect(result.summary.refusals.filter((refusal) => refusal.quiet > 0), explain(result)).toEqual([]);
    expect(bulkCompletions(result).ok).toBeGreaterThanOrEqual(3 * BULK_DEPTH);
  }, 120_000);

  it('linearizability: bulk loaders through power losses and memcached restarts; writes at a recovering or rebuilding controller wait, none is refused for it', async () => {
    const result = await bulkRun('linearizability', ['power', 'backend-restart'], 6000, 611);
    expect(result.exitCode, explain(result)).toBe(0);
    expect(result.summary.faults.length).toBeGreaterThanOrEqual(2);
    const waited = bulkWriteCompletions(result).filter((event) => event.type === 'fail' && /not caught up|no leader reachable/.test(event.error ?? ''));
    expect(waited, explain(result)).toEqual([]);
    expect(bulkCompletions(result).ok).toBeGreaterThanOrEqual(3 * BULK_DEPTH);
  }, 120_000);
});
