/**
 * A seeded simulator for the replicated log (in the spirit of TigerBeetle's VOPR): three machines
 * over a simulated network that drops, delays, duplicates and reorders messages, cuts links,
 * crashes and restarts nodes (from their durable records) and empties their replicas, while
 * clients submit random ops. Every effect is carried out on a small model replica per node.
 *
 * Intuition: everything random comes from one PRNG seeded by `seed`, and time is simulated, so a
 * failing seed replays the run exactly. A machine's internal state runs ahead of what is durable
 * (a leader counts its own copy not yet durable toward a commit), so the checks judge what is externally
 * visible: effects carried out, and a node's beliefs once all its records are durable.
 *
 * The parts live in ./log-sim/: options.ts (what a run is asked and reports), simulation.ts (its
 * phases and turn), controller.ts and disk.ts (effects, the durability gate), node.ts, network.ts,
 * store.ts, clients.ts, checks.ts and reference.ts (what is checked), faults.ts,
 * store-failures.ts and every-replica-lost.ts (what each fault option does). This file is the
 * entry point the tests import.
 */

import type { LogMode } from '../../src/consistency/replicated-log.ts';
import { mulberry32 } from '../../src/runtime/random.ts';
import { FAILURE_TIMEOUT_MS, SIM_DEFAULTS, type SimOptions, type SimResult } from './log-sim/options.ts';
import { LogSimulation } from './log-sim/simulation.ts';

export { mulberry32 };
export {
  SIM_DEFAULTS,
  SimulationFailure,
  type EmptyAllOptions,
  type SimOptions,
  type SimResult,
  type StoreFailureOptions,
  type SuspendOptions,
} from './log-sim/options.ts';
export { LogSimulation };

/** Measures failover (see `LogSimulation.failover`) for one seed, without other faults. */
export function measureFailover(seed: number, mode: LogMode): ReturnType<LogSimulation['failover']> {
  return new LogSimulation({ ...SIM_DEFAULTS, seed, mode, faults: false }).failover();
}

export const SIM_FAILURE_TIMEOUT_MS = FAILURE_TIMEOUT_MS;

/** Runs one seed with defaults; convenient for replaying a failure. */
export function simulate(seed: number, mode: LogMode, overrides: Partial<SimOptions> = {}): SimResult {
  return new LogSimulation({ ...SIM_DEFAULTS, seed, mode, ...overrides }).run();
}

/** Runs one seed through `LogSimulation.stall` (no convergence demanded), for `storeFailures.everyNodeAtMs`. */
export function simulateStall(seed: number, mode: LogMode, overrides: Partial<SimOptions> = {}): SimResult {
  return new LogSimulation({ ...SIM_DEFAULTS, seed, mode, ...overrides }).stall();
}
