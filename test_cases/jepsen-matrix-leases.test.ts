/**
 * The CI matrix of the fault runner with read leases off (linearizability; sequential ignores
 * them): the other matrix files run linearizability as it ships, under leases, so these runs keep
 * the read-index path under faults: every fault kind but power together, then kill, pause,
 * partition and power loss with wal_sync = write. Every linearizable read then asks the leader for
 * a read index, and a stale one under a partition, a pause or a leader change is what the checker
 * would catch.
 *
 * Invariants: runs go one after another (2 cores shared); each run asserts which faults actually
 * happened and that it ran without leases. A failure keeps the report folder.
 */

import { describe, expect, it } from 'vitest';
import { COMBINED_KINDS, COMBINED_TIME_MS, POWER_KINDS, POWER_TIME_MS, expectPassedUnder, matrixRunner } from './support/fault-matrix.ts';

const run = matrixRunner('jepsen-matrix-leases');

describe('linearizability with read leases off (read index) keeps its promise under every fault', () => {
  it('under kill, pause, partition, backend-restart, backend-pause, backend-fill, clock, slow, stall and disk-stall together', async () => {
    const result = await run({ mode: 'linearizability', nemesis: COMBINED_KINDS, timeMs: COMBINED_TIME_MS, seed: 700, readLeases: false });
    expectPassedUnder(result, COMBINED_KINDS);
    expect(result.summary.readLeases).toBeUndefined();
  }, 150_000);

  it('with wal_sync = write under kill, pause, partition and power loss', async () => {
    const result = await run({ mode: 'linearizability', nemesis: POWER_KINDS, timeMs: POWER_TIME_MS, seed: 710, walSync: 'write', readLeases: false });
    expectPassedUnder(result, POWER_KINDS);
    expect(result.summary.readLeases).toBeUndefined();
  }, 120_000);
});
