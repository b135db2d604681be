/**
 * The CI matrix of the fault runner, eventual under each fault kind alone: one short run per
 * kind, so that a failure names the fault. A clock step and a stall of the whole machine must go
 * unnoticed: nothing refused.
 *
 * Invariants: runs go one after another (2 cores shared); each run asserts that its fault
 * actually happened. A failure carries the checker's explanation and keeps the report folder.
 */

import { describe, expect, it } from 'vitest';
import { NEMESIS_KINDS } from '../src/jepsen/nemesis.ts';
import { SINGLE_TIME_MS, explain, matrixRunner } from './support/fault-matrix.ts';

const run = matrixRunner('jepsen-matrix-eventual');

describe('eventual keeps its promise under each fault', () => {
  NEMESIS_KINDS.forEach((kind, index) => {
    it(`eventual under ${kind} alone`, async () => {
      // Clock steps go both ways at each node within two windows, and must go unnoticed.
      const windows = kind === 'clock' ? 2 : 1;
      const result = await run({ mode: 'eventual', nemesis: [kind], timeMs: windows * SINGLE_TIME_MS, seed: 200 + index });
      expect(result.exitCode, explain(result)).toBe(0);
      const kinds = result.summary.faults.map((fault) => fault.kind);
      expect(kinds.length).toBeGreaterThanOrEqual(windows);
      expect(new Set(kinds)).toEqual(new Set([kind]));
      if (kind === 'clock' || kind === 'stall') expect(result.summary.refusals, explain(result)).toEqual([]);
    }, 120_000);
  });
});
