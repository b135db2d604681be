/**
 * The CI matrix of the fault runner, causal mode: under every fault together (all but power, which
 * the durability file runs), under every controller killed at once, and with 300 keys under
 * memcached restarts, kills and partitions. With few keys most "absent" reads are explained by a
 * delete; with many, a read answering "absent" for a write in its connection's causal past (a
 * replica read before its rebuild) is caught (WriteCOInitRead).
 */

import { describe, it } from 'vitest';
import type { NemesisKind } from '../src/jepsen/nemesis.ts';
import { COMBINED_KINDS, COMBINED_TIME_MS, expectPassedUnder, matrixRunner } from './support/fault-matrix.ts';

const run = matrixRunner('jepsen-matrix-causal');
const RESTARTS: readonly NemesisKind[] = ['backend-restart', 'kill', 'partition'];

describe('causal mode keeps its promise under faults', () => {
  it('under kill, pause, partition, backend-restart, backend-pause, backend-fill, clock, slow, stall and disk-stall together', async () => {
    const result = await run({ mode: 'causal', nemesis: COMBINED_KINDS, timeMs: COMBINED_TIME_MS, seed: 103 });
    expectPassedUnder(result, COMBINED_KINDS);
  }, 150_000);

  it('under every controller killed at once and restarted together', async () => {
    const result = await run({ mode: 'causal', nemesis: ['kill-all'], timeMs: 8_000, seed: 104, windows: { faultMs: 1000, healMs: 2500 } });
    expectPassedUnder(result, ['kill-all']);
  }, 120_000);

  it('with 300 keys under memcached restarts, kills and partitions', async () => {
    const result = await run({ mode: 'causal', nemesis: RESTARTS, timeMs: 16_000, seed: 509, keys: 300 });
    expectPassedUnder(result, RESTARTS);
  }, 150_000);
});
