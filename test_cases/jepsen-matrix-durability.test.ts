/**
 * The CI matrix of the fault runner, durability and memory: the ordered modes with
 * wal_sync = write under kill, pause, partition and power loss, under a power loss and a kill of
 * every controller, and under two machines losing power together; eventual and causal under kill
 * and power loss; and every mode taking writes again once a fill of every memcached is healed.
 *
 * Invariants: runs go one after another (2 cores shared); each run asserts which faults actually
 * happened. A failure carries the checker's explanation and keeps the report folder.
 */

import { describe, expect, it } from 'vitest';
import { RECOVERY_GRACE_MS } from '../src/jepsen/report.ts';
import { MODES, POWER_KINDS, POWER_TIME_MS, expectPassedUnder, explain, matrixRunner } from './support/fault-matrix.ts';

const run = matrixRunner('jepsen-matrix-durability');

describe('every mode keeps its promise through power loss and a full memory', () => {
  (['linearizability', 'sequential'] as const).forEach((mode, index) => {
    it(`${mode} with wal_sync = write (records reach the operating system, not the disk) under kill, pause, partition and power loss`, async () => {
      // A killed controller's records are in the page cache: kill -9 loses none of them. A power
      // loss cuts the records written since the last fsync; the node recovers from its peers.
      const result = await run({ mode, nemesis: POWER_KINDS, timeMs: POWER_TIME_MS, seed: 400 + index, walSync: 'write' });
      expectPassedUnder(result, POWER_KINDS);
      expect(result.summary.walSync).toBe('write');
    }, 120_000);
  });

  (['linearizability', 'sequential'] as const).forEach((mode, index) => {
    it(`${mode} with wal_sync = write under a power loss and every controller killed at once`, async () => {
      // After a kill of all three no peer can catch another up: each comes back from its own file
      // (in the page cache) and its replica, the one that lost power included once it recovered.
      const kinds = ['power', 'kill-all'] as const;
      const result = await run({ mode, nemesis: kinds, timeMs: POWER_TIME_MS, seed: 420 + index, walSync: 'write', windows: { faultMs: 1000, healMs: 1500 } });
      expectPassedUnder(result, kinds);
    }, 120_000);
  });

  (['linearizability', 'sequential'] as const).forEach((mode, index) => {
    it(`${mode} with wal_sync = write: two machines lose power together, and the cluster serves again with every acknowledged write`, async () => {
      // Beyond one machine at a time: the two recover together (from a sound leader, or by giving
      // up and electing the most complete log), and no acknowledged write is lost (see nemesis.ts).
      const result = await run({ mode, nemesis: ['power-two'], timeMs: POWER_TIME_MS / 2, seed: 430 + index, walSync: 'write', windows: { faultMs: 1000, healMs: 1500 } });
      expectPassedUnder(result, ['power-two']);
      expect(result.summary.faults.length).toBeGreaterThanOrEqual(2);
    }, 120_000);
  });

  (['eventual', 'causal'] as const).forEach((mode, index) => {
    it(`${mode} under kill and power loss (no write-ahead log: the emptied replica is refilled by its peers)`, async () => {
      const result = await run({ mode, nemesis: ['kill', 'power'], timeMs: POWER_TIME_MS / 2, seed: 410 + index, walSync: 'write' });
      expectPassedUnder(result, ['kill', 'power']);
    }, 120_000);
  });

  MODES.forEach((mode, index) => {
    it(`${mode}: once a fill of every memcached is healed, writes are taken again (none refused while no fault is on)`, async () => {
      // One fill (the plan: heal 4.5-7.5 s, fill 1.1-1.9 s, then nothing more fits in 12 s), then
      // at least a second with no fault on past the grace after the heal: the clients run at least
      // half a heal window past it, even when the fill overran its window.
      const result = await run({ mode, nemesis: ['backend-fill'], timeMs: 12_000, seed: 500 + index, windows: { faultMs: 1500, healMs: 6000 } });
      expect(result.exitCode, explain(result)).toBe(0);
      expect(result.summary.faults).toHaveLength(1);
      const fill = result.summary.faults[0]!;
      expect(result.summary.durationMs - (fill.healedMs + RECOVERY_GRACE_MS)).toBeGreaterThan(500);
      // Refused during the fill, as they must be; none after it.
      expect(result.summary.refusals.find((refusal) => refusal.error.includes('out of memory'))?.count ?? 0).toBeGreaterThan(0);
      expect(result.summary.refusals.filter((refusal) => refusal.quiet > 0), explain(result)).toEqual([]);
    }, 120_000);
  });
});
