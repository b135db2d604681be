/**
 * The CI matrix of the fault runner, combined runs: every mode under every fault kind at once
 * (all but power), and the ordered modes again with pipelining clients. Windows are short enough
 * that each kind is injected at least once (the nemesis plans kinds in shuffled rounds).
 *
 * Invariants: runs go one after another (2 cores shared); each run asserts which faults actually
 * happened, so a silent no-op nemesis cannot pass. A failure carries the checker's explanation
 * and keeps the report folder.
 */

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { COMBINED_KINDS, COMBINED_TIME_MS, MODES, expectPassedUnder, explain, matrixRunner } from './support/fault-matrix.ts';

const run = matrixRunner('jepsen-matrix-combined');

describe('every mode keeps its promise under every fault together', () => {
  MODES.forEach((mode, index) => {
    it(`${mode} under kill, pause, partition, backend-restart, backend-pause, backend-fill, clock, slow, stall and disk-stall together`, async () => {
      const result = await run({ mode, nemesis: COMBINED_KINDS, timeMs: COMBINED_TIME_MS, seed: 100 + index });
      expectPassedUnder(result, COMBINED_KINDS);
    }, 150_000);
  });

  (['linearizability', 'sequential'] as const).forEach((mode, index) => {
    it(`${mode} with pipelining clients (4 calls in flight on each connection) under every fault together`, async () => {
      // Twice the keys: 24 calls in flight on 3 keys would leave the checker too many orders to search.
      const result = await run({ mode, nemesis: COMBINED_KINDS, timeMs: COMBINED_TIME_MS, seed: 300 + index, pipeline: 4, keys: 6 });
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
});
