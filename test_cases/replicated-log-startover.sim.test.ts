/**
 * Seeded simulation of the replicated log's start-over path (`startOverIfEveryReplicaLost`):
 * every node's memcached restarts empty after the log was compacted, so no node can rebuild its
 * replica from a peer or from its log, and the leader starts over from an empty replica at its
 * snapshot index while the peers copy it by transfer.
 *
 * Intuition: what was applied only up to that snapshot is gone by design (memcached lost it); the
 * simulator (support/log-sim.ts, option `emptyAll`) rebases its reference to an empty state at the
 * snapshot index the start-over announces, and from there every usual check holds: one leader per
 * term, committed entries never change, every node applies the same ops, replies and reads agree
 * with the reference (linearizable or sequential), no start-over while some replica still holds a
 * state, every write acked at an index after the snapshot (so every write acked after the
 * start-over) is in the final sequence, and after faults the replicas converge to the reference
 * and serve every request.
 *
 * Liveness: writes submitted once every replica was emptied (and every node is up) succeed within
 * RECOVERY_BOUND_MS in the runs without other faults; with faults, the simulator's own bound on
 * convergence after the heal applies.
 *
 * MCKV_STARTOVER_SEEDS raises the seed count per case locally (MCKV_SIM_FIRST_SEED moves the start);
 * replay a failure with `simulate(seed, mode, { ...options named in the failing case })`.
 */

import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { SIM_FAILURE_TIMEOUT_MS, simulate, type EmptyAllOptions, type SimResult } from './support/log-sim.ts';

const SEEDS = Number(process.env.MCKV_STARTOVER_SEEDS ?? 40);
const FIRST_SEED = Number(process.env.MCKV_SIM_FIRST_SEED ?? 1);
const MODES = ['linearizability', 'sequential'] as const;
/** A sweep's time limit per case: the configured one for the usual count, more when MCKV_STARTOVER_SEEDS raises it. */
const SWEEP_TIMEOUT_MS = Math.max(30_000, SEEDS * 1_000);

/**
 * From the last emptying until a new write is acked: a peer asks the leader for a transfer on its
 * next tick and then once a failure timeout; the leader starts over once every peer asked; each
 * peer's next ask gets the transfer; then a write commits in a round trip. A few failure timeouts,
 * with room for an election when a follower's ask arrived late.
 */
const RECOVERY_BOUND_MS = 8 * SIM_FAILURE_TIMEOUT_MS;

/** Every replica lost; then the leader's alone, twice; then the leader crashes and every replica is lost. */
const LEADER_LOST_ALONE_THEN_CRASHED: EmptyAllOptions = {
  atMs: 1_500, windowMs: 0, crash: 'none', then: ['leader-alone', 'leader-alone', 'leader-crash'], whenHealthy: false,
};

interface Totals {
  runs: number;
  emptied: number;
  startOvers: number;
  recoveries: number[];
  candidaciesLost: number;
}

/**
 * Runs `seeds` seeds per mode with compaction every 8 entries and `safetyMs` of faulty phase (room
 * for every round of `emptyAll`); throws a SimulationFailure naming a seed. Yields between runs,
 * so a long sweep does not starve vitest's worker of its own messages.
 */
async function runSeeds(
  emptyAll: EmptyAllOptions,
  faults: boolean,
  seeds = SEEDS,
  safetyMs = 4_000,
  electionJitter: 'full' | 'narrow' = 'full',
): Promise<Totals> {
  const totals: Totals = { runs: 0, emptied: 0, startOvers: 0, recoveries: [], candidaciesLost: 0 };
  for (const mode of MODES) {
    for (let seed = FIRST_SEED; seed < FIRST_SEED + seeds; seed += 1) {
      const result: SimResult = simulate(seed, mode, { faults, safetyMs, compactionThresholdEntries: 8, emptyAll, electionJitter });
      totals.runs += 1;
      totals.candidaciesLost += result.candidaciesLost;
      if (result.emptyAllRan) totals.emptied += 1;
      totals.startOvers += result.startOvers;
      if (result.recoveryMs !== null) totals.recoveries.push(result.recoveryMs);
      if (result.startOvers > 0) expect(result.startOverIndex).toBeGreaterThan(0);
      await yieldToEventLoop();
    }
  }
  return totals;
}

describe('replicated log: every replica lost after compaction (start-over)', () => {
  it('all emptied at once: the leader starts over, writes succeed again within the bound, replicas converge', async () => {
    const totals = await runSeeds({ atMs: 1_500, windowMs: 0, crash: 'none', whenHealthy: false }, false);
    expect(totals.emptied).toBe(totals.runs);
    // Nearly every run compacted on every node by then (a node that did not replays its log instead).
    expect(totals.startOvers).toBeGreaterThanOrEqual(Math.floor(totals.runs * 0.9));
    expect(totals.recoveries.length).toBe(totals.runs);
    for (const recoveryMs of totals.recoveries) expect(recoveryMs).toBeLessThanOrEqual(RECOVERY_BOUND_MS);
  }, SWEEP_TIMEOUT_MS);

  it('emptied one by one within 200 ms: a start-over or a transfer from a node not yet emptied, never a loss of what is kept', async () => {
    const totals = await runSeeds({ atMs: 1_500, windowMs: 200, crash: 'none', whenHealthy: false }, false);
    expect(totals.emptied).toBe(totals.runs);
    expect(totals.startOvers).toBeGreaterThan(0);
    expect(totals.recoveries.length).toBe(totals.runs);
    for (const recoveryMs of totals.recoveries) expect(recoveryMs).toBeLessThanOrEqual(RECOVERY_BOUND_MS);
  }, SWEEP_TIMEOUT_MS);

  it('a node crashing just before or just after its own emptying, with and without network faults: safe, and converges', async () => {
    for (const crash of ['before', 'after'] as const) {
      for (const faults of [false, true]) {
        const totals = await runSeeds({ atMs: 1_500, windowMs: 200, crash, whenHealthy: false }, faults, Math.ceil(SEEDS / 4));
        expect(totals.emptied).toBeGreaterThan(0);
      }
    }
  }, SWEEP_TIMEOUT_MS);

  it('every node restarted with its memcached emptied while it was down (a whole-cluster restart): safe, and converges', async () => {
    for (const faults of [false, true]) {
      const totals = await runSeeds({ atMs: 1_500, windowMs: 200, crash: 'all', whenHealthy: faults }, faults, Math.ceil(SEEDS / 4));
      expect(totals.emptied).toBeGreaterThan(0);
      expect(totals.startOvers).toBeGreaterThan(0);
      if (!faults) for (const recoveryMs of totals.recoveries) expect(recoveryMs).toBeLessThanOrEqual(RECOVERY_BOUND_MS);
    }
  }, SWEEP_TIMEOUT_MS);

  it('every replica lost twice from a running cluster, then a whole-cluster restart with memcached emptied: safe, and converges', async () => {
    for (const faults of [false, true]) {
      const emptyAll: EmptyAllOptions = { atMs: 1_500, windowMs: 200, crash: 'none', then: ['none', 'all'], whenHealthy: faults };
      const totals = await runSeeds(emptyAll, faults, Math.ceil(SEEDS / 4), 6_000);
      expect(totals.emptied).toBeGreaterThan(0);
      expect(totals.startOvers).toBeGreaterThan(totals.runs);
      if (!faults) for (const recoveryMs of totals.recoveries) expect(recoveryMs).toBeLessThanOrEqual(RECOVERY_BOUND_MS);
    }
  }, SWEEP_TIMEOUT_MS);

  it('rounds of emptying with a node crashing in each, and elections that split (narrow jitter): safe, and converges', async () => {
    let candidaciesLost = 0;
    for (const faults of [false, true]) {
      const emptyAll: EmptyAllOptions = { atMs: 1_500, windowMs: 0, crash: 'before', then: ['after', 'before'], whenHealthy: faults };
      const totals = await runSeeds(emptyAll, faults, Math.ceil(SEEDS / 4), 6_000, 'narrow');
      expect(totals.emptied).toBeGreaterThan(0);
      // Three rounds of emptying: more than one start-over a run. With message faults, rounds
      // whose losses overlap are repaired by one, so at least three in four runs have one (the
      // seeds from 1, 101 and 201 give 19 to 35 start-overs in 20 runs).
      expect(totals.startOvers).toBeGreaterThan(faults ? totals.runs * 0.75 : totals.runs);
      candidaciesLost += totals.candidaciesLost;
      if (!faults) for (const recoveryMs of totals.recoveries) expect(recoveryMs).toBeLessThanOrEqual(RECOVERY_BOUND_MS);
    }
    expect(candidaciesLost).toBeGreaterThan(SEEDS / 2);
  }, SWEEP_TIMEOUT_MS);

  it('a leader that lost its replica alone twice crashes, and every replica is lost while the others elect a new one (split elections): safe, and converges', async () => {
    // The new leader has lost its replica fewer times since its boot than the last one: a node
    // that stood in the new leader's term and lost must not ask by the last leader's replica epoch.
    const totals = await runSeeds(LEADER_LOST_ALONE_THEN_CRASHED, false, SEEDS, 8_000, 'narrow');
    expect(totals.emptied).toBe(totals.runs);
    expect(totals.recoveries.length).toBe(totals.runs);
    for (const recoveryMs of totals.recoveries) expect(recoveryMs).toBeLessThanOrEqual(RECOVERY_BOUND_MS);
    expect(totals.candidaciesLost).toBeGreaterThan(SEEDS / 2);
    const faulty = await runSeeds({ ...LEADER_LOST_ALONE_THEN_CRASHED, whenHealthy: true }, true, Math.ceil(SEEDS / 2), 8_000, 'narrow');
    expect(faulty.emptied).toBeGreaterThan(0);
  }, SWEEP_TIMEOUT_MS);

  const underFaults =
    'under message loss, delay, duplication and partitions (emptied from a healthy cluster): safe, and converges after the heal';
  it(underFaults, async () => {
    const totals = await runSeeds({ atMs: 1_500, windowMs: 200, crash: 'none', whenHealthy: true }, true);
    // The cluster was healthy (and room was left before the heal) in most runs.
    expect(totals.emptied).toBeGreaterThan(totals.runs * 0.7);
    expect(totals.startOvers).toBeGreaterThan(0);
  }, SWEEP_TIMEOUT_MS);
});

/**
 * Seeds that found faults in the start-over path, kept as they were found. Before any fix: a
 * lagging peer that never asked (A), a restart forgetting that its backend was emptied (B), a
 * stale ask counted after the asker was rebuilt by another node (C), a compaction fetch and a
 * transfer fetch sharing a token (D), the node that started over restarting before it trusted its
 * replica and asking as if it held data. Against first versions of the fixes: a transfer still in
 * flight when the leader's own replica was lost (E), a peer taken for lagging from a reply's hint
 * (F), a restart after a start-over and a compaction. Found by review: an ask the leader counted
 * before losing its replica a second time (seed 259, with store failures). Found by a wider sweep:
 * a transfer from the node that started over telling a peer its writes committed up to the
 * start-over's index were stored, although every replica had lost them (G). Found by a change of
 * the random paths: a peer whose log ran past the leader's snapshot but disagreed with it there,
 * never compacted, so it replayed its log onto its emptied replica and never asked (seed 1).
 */
describe('replicated log start-over: seeds that found faults', () => {
  const cases: Array<[name: string, seed: number, mode: (typeof MODES)[number], faults: boolean, crash: EmptyAllOptions['crash']]> = [
    ['A', 18, 'linearizability', true, 'none'],
    ['B', 3, 'linearizability', false, 'after'],
    ['C', 2, 'linearizability', false, 'before'],
    ['D', 114, 'linearizability', false, 'after'],
    ['E', 102, 'sequential', true, 'after'],
    ['F', 32, 'sequential', true, 'before'],
    ['restart of the node that started over, before it trusted its replica', 129, 'linearizability', false, 'after'],
    ['restart after a start-over and a compaction', 79, 'sequential', false, 'after'],
    ['G', 42, 'linearizability', false, 'none'],
    ['G', 56, 'linearizability', false, 'none'],
    ['G', 275, 'linearizability', false, 'none'],
    ['G', 84, 'sequential', false, 'none'],
  ];
  it('an ask counted before the leader lost its replica a second time: seed 259, sequential, with store failures', () => {
    const result = simulate(259, 'sequential', {
      faults: true, safetyMs: 4_000, compactionThresholdEntries: 8,
      emptyAll: { atMs: 1_500, windowMs: 100, crash: 'none', whenHealthy: false },
      storeFailures: { nodes: [0, 1, 2], rate: 0.1, crashChance: 0.2, everyNodeAtMs: null },
    });
    expect(result.emptyAllRan).toBe(true);
  });

  it('a candidate that lost in its own term asked by the last leader\'s replica epoch, so the new leader never started over: seeds 33 (sequential) and 41 (linearizability), split elections', () => {
    for (const [seed, mode] of [[33, 'sequential'], [41, 'linearizability']] as const) {
      const result = simulate(seed, mode, {
        faults: false, safetyMs: 8_000, compactionThresholdEntries: 8, emptyAll: LEADER_LOST_ALONE_THEN_CRASHED, electionJitter: 'narrow',
      });
      expect(result.emptyAllRan).toBe(true);
      expect(result.recoveryMs).not.toBeNull();
    }
  });

  it('a peer whose log ran past the snapshot but refused the leader\'s append there never counted as lost, so nobody started over: seed 1, sequential, every replica lost twice with message faults', () => {
    const emptyAll: EmptyAllOptions = { atMs: 1_500, windowMs: 200, crash: 'none', then: ['none', 'all'], whenHealthy: true };
    const result = simulate(1, 'sequential', { faults: true, safetyMs: 6_000, compactionThresholdEntries: 8, emptyAll, electionJitter: 'full' });
    expect(result.emptyAllRan).toBe(true);
    expect(result.startOvers).toBeGreaterThan(0);
  });

  for (const [name, seed, mode, faults, crash] of cases) {
    it(`${name}: seed ${seed}, ${mode}, faults ${faults}, crash ${crash}`, () => {
      const emptyAll = { atMs: 1_500, windowMs: 200, crash, whenHealthy: false };
      const result = simulate(seed, mode, { faults, safetyMs: 4_000, compactionThresholdEntries: 8, emptyAll });
      expect(result.emptyAllRan).toBe(true);
    });
  }
});
