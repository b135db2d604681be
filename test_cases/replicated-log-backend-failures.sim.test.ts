/**
 * Seeded simulation of the replicated log when writes to a backend fail (support/log-sim.ts,
 * option `storeFailures`): an apply, put or fetch errors or times out mid-write, so the replica is
 * merely untrusted — it may or may not hold that write, and may still hold everything else. As
 * the controller does, the replica then refuses every store effect until the machine is told
 * (`backend_reset`, `emptied: false`) a few milliseconds later; the machine rebuilds it, by a
 * replay onto an emptied replica while its log is not compacted, else by a state transfer.
 *
 * Intuition: the usual checks (one leader per term, committed entries never change, every node
 * applies the same ops, replies and reads agree with the linearizable or sequential reference,
 * replicas converge and then serve every request) must hold as under any other fault, and three
 * more, specific to a replica that is not emptied:
 * 1. once told, a node runs no read (nor apply, put or fetch) on that replica until a reset has
 *    emptied it (the simulator fails the run at the first such effect);
 * 2. with one replica left valid (the simulator fails a write only while another node could rebuild
 *    the failing one), the cluster converges and serves again within LIVENESS_BOUND_MS of the
 *    failures stopping;
 * 3. when every replica is merely untrusted after compaction, nobody starts over (such a replica
 *    may hold data nobody else has): the cluster stays unavailable, the machine's documented choice;
 * 4. unless the failures were timeouts (`kept`: memcached refused nothing, so each failed write took
 *    effect whole or not at all): then the machine replays its log onto the replica it kept, as a
 *    restarted node does, and the cluster converges and serves again, also when every replica's
 *    writes timed out at once.
 *
 * MCKV_BACKEND_FAILURE_SEEDS raises the seed count per case locally (MCKV_SIM_FIRST_SEED moves the
 * start); replay a failure with `simulate(seed, mode, { ...options named in the failing case })`,
 * or `simulateStall` for the every-replica cases.
 */

import { describe, expect, it } from 'vitest';
import { SIM_FAILURE_TIMEOUT_MS, simulate, simulateStall, type SimOptions, type StoreFailureOptions } from './support/log-sim.ts';

const SEEDS = Number(process.env.MCKV_BACKEND_FAILURE_SEEDS ?? 36);
const FIRST_SEED = Number(process.env.MCKV_SIM_FIRST_SEED ?? 1);
const MODES = ['linearizability', 'sequential'] as const;
type Mode = (typeof MODES)[number];

/** Compacting every 8 entries makes rebuilds need transfers; never compacting, replays from index 1. */
const COMPACTIONS = [
  { name: 'compaction every 8 entries', thresholdEntries: 8 },
  { name: 'no compaction', thresholdEntries: 1_000_000 },
] as const;

/**
 * From the end of the faulty phase until the cluster converged: a rebuild asks for a transfer on
 * its next tick, then once a failure timeout; after network faults, an election or two first.
 */
const LIVENESS_BOUND_MS = 10 * SIM_FAILURE_TIMEOUT_MS;

/** Every node's writes may fail (one at a time stays rebuildable); a fifth of failing nodes crash. */
const RANDOM_FAILURES: StoreFailureOptions = { nodes: [0, 1, 2], rate: 0.02, crashChance: 0.2, everyNodeAtMs: null };

interface Totals {
  failures: number;
  refused: number;
  resets: number;
  keptReplays: number;
  transfers: number;
  crashesWhileUntrusted: number;
  convergedAfterHealMs: number[];
}

function runRandomFailures(
  mode: Mode,
  compactionThresholdEntries: number,
  faults: boolean,
  storeFailures = RANDOM_FAILURES,
  seeds = SEEDS,
): Totals {
  const totals: Totals = {
    failures: 0, refused: 0, resets: 0, keptReplays: 0, transfers: 0, crashesWhileUntrusted: 0, convergedAfterHealMs: [],
  };
  const options: Partial<SimOptions> = {
    faults, safetyMs: 3_000, livenessMs: LIVENESS_BOUND_MS, compactionThresholdEntries, storeFailures,
  };
  for (let seed = FIRST_SEED; seed < FIRST_SEED + seeds; seed += 1) {
    const result = simulate(seed, mode, options);
    totals.failures += result.storeFailures;
    totals.refused += result.storeEffectsRefused;
    totals.resets += result.untrustedResets;
    totals.keptReplays += result.keptReplays;
    totals.transfers += result.transfers;
    totals.crashesWhileUntrusted += result.crashesWhileUntrusted;
    if (result.convergedAfterHealMs !== null) totals.convergedAfterHealMs.push(result.convergedAfterHealMs);
    expect(result.startOvers).toBe(0);
  }
  return totals;
}

describe('replicated log: backend writes that fail (a replica untrusted, not emptied)', () => {
  for (const mode of MODES) {
    for (const compaction of COMPACTIONS) {
      for (const faults of [false, true]) {
        it(`${mode}, ${compaction.name}, ${faults ? 'with' : 'without'} network faults: safe, nothing served from an untrusted replica, serves again within the bound`, () => {
          const totals = runRandomFailures(mode, compaction.thresholdEntries, faults);
          // Failures struck, suspect replicas refused what followed, machines were told and rebuilt.
          expect(totals.failures).toBeGreaterThan(SEEDS);
          expect(totals.refused).toBeGreaterThan(totals.failures);
          expect(totals.resets).toBeGreaterThan(SEEDS / 2);
          expect(totals.crashesWhileUntrusted).toBeGreaterThan(0);
          if (compaction.thresholdEntries < 100) expect(totals.transfers).toBeGreaterThan(SEEDS / 2);
          expect(totals.convergedAfterHealMs.length).toBe(SEEDS);
          for (const convergedMs of totals.convergedAfterHealMs) expect(convergedMs).toBeLessThanOrEqual(LIVENESS_BOUND_MS);
        });
      }
    }
  }

  it('one node whose writes fail often (1 in 10): its peers keep serving and it is rebuilt each time', () => {
    const runs = Math.ceil(SEEDS / 4);
    for (const mode of MODES) {
      let resets = 0;
      for (let seed = FIRST_SEED; seed < FIRST_SEED + runs; seed += 1) {
        const result = simulate(seed, mode, {
          safetyMs: 3_000,
          livenessMs: LIVENESS_BOUND_MS,
          compactionThresholdEntries: 8,
          storeFailures: { nodes: [0], rate: 0.1, crashChance: 0, everyNodeAtMs: null },
        });
        resets += result.untrustedResets;
        expect(result.convergedAfterHealMs).not.toBeNull();
      }
      expect(resets).toBeGreaterThan(runs * 3);
    }
  });

  it('the same seed replays the same run', () => {
    const options: Partial<SimOptions> = { safetyMs: 2_000, compactionThresholdEntries: 8, storeFailures: RANDOM_FAILURES };
    expect(simulate(5, 'linearizability', options)).toEqual(simulate(5, 'linearizability', options));
  });
});

describe('replicated log: every replica merely untrusted after compaction', () => {
  for (const mode of MODES) {
    for (const faults of [false, true]) {
      it(`${mode}, ${faults ? 'with' : 'without'} network faults: no start-over, nothing served, safe`, () => {
        let everyUntrusted = 0;
        for (let seed = FIRST_SEED; seed < FIRST_SEED + SEEDS; seed += 1) {
          const result = simulateStall(seed, mode, {
            faults,
            safetyMs: 3_000,
            livenessMs: 2_000,
            compactionThresholdEntries: 8,
            storeFailures: { nodes: [], rate: 0, crashChance: 0, everyNodeAtMs: 1_000 },
          });
          // The simulator also fails the run at a start-over while any replica is merely untrusted.
          expect(result.startOvers).toBe(0);
          if (!result.everyReplicaUntrusted) continue;
          everyUntrusted += 1;
          // No replica is valid, so nothing can be applied or read: every request is refused.
          expect(result.repliesOkAfterEveryUntrusted).toBe(0);
          expect(result.repliesRefused).toBeGreaterThan(0);
        }
        // Most runs got there (else a node was rebuilt from one whose failure had not struck yet).
        expect(everyUntrusted).toBeGreaterThanOrEqual(Math.ceil(SEEDS * 0.7));
      });
    }
  }
});

describe('replicated log: backend writes that time out (kept: replayed onto the replica)', () => {
  const seeds = Math.ceil(SEEDS / 2);
  for (const mode of MODES) {
    for (const faults of [false, true]) {
      it(`${mode}, compaction every 8 entries, ${faults ? 'with' : 'without'} network faults: safe, replays instead of transfers, serves again within the bound`, () => {
        const totals = runRandomFailures(mode, 8, faults, { ...RANDOM_FAILURES, kept: true }, seeds);
        expect(totals.failures).toBeGreaterThan(seeds);
        // A reset of a replica whose state is known (no failed put) replays onto it.
        expect(totals.keptReplays).toBeGreaterThan(totals.resets * 0.8);
        expect(totals.convergedAfterHealMs.length).toBe(seeds);
        for (const convergedMs of totals.convergedAfterHealMs) expect(convergedMs).toBeLessThanOrEqual(LIVENESS_BOUND_MS);
      });
    }
  }

  it('every replica\'s writes time out at once after compaction: each replays onto its own, and the cluster serves again', () => {
    let everyNodeReplayed = 0;
    for (const mode of MODES) {
      for (let seed = FIRST_SEED; seed < FIRST_SEED + seeds; seed += 1) {
        const result = simulate(seed, mode, {
          safetyMs: 3_000,
          livenessMs: LIVENESS_BOUND_MS,
          compactionThresholdEntries: 8,
          storeFailures: { nodes: [], rate: 0, crashChance: 0, everyNodeAtMs: 1_000, kept: true },
        });
        expect(result.startOvers).toBe(0);
        expect(result.convergedAfterHealMs, `seed ${seed}`).not.toBeNull();
        if (result.keptReplays >= 3) everyNodeReplayed += 1;
      }
    }
    // Most runs got there (in the others a node was rebuilt by a transfer first, or its failed effect was a put).
    expect(everyNodeReplayed).toBeGreaterThanOrEqual(Math.ceil(2 * seeds * 0.5));
  });
});

