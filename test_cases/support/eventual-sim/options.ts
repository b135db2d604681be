/**
 * What a run of the eventual-mode simulator is asked to do (SimConfig and its defaults), what it
 * reports (SimReport), and the constants every part shares. Kept apart so tests and parts read the
 * contract without the machinery that carries it out.
 */

/** What a run may do. */
export interface SimConfig {
  seed: number;
  faultMs: number;
  settleMsMax: number;
  collectMsMax: number;
  keyCount: number;
  opGapMsMax: number;
  heartbeatIntervalMs: number;
  partitions: boolean;
  crashes: boolean;
  backendResets: boolean;
  /** Some faults fill a replica's memcached for a while: it refuses writes, keeping what it held. */
  refusals: boolean;
  /**
   * Some faults slow a replica's memcached for a while: each store effect then takes 1-30 ms, so
   * the machine's effects stay in flight for longer (a merge not yet applied, a fetch that reads
   * what later effects will change). As the real replica runs them: in the order issued on each
   * key, effects on other keys overlapping and completing in any order, and effects on every key
   * (a fetch of all keys, flush_all, reset) after everything issued before them and before
   * everything issued after.
   */
  slowBackends: boolean;
  /**
   * Chance that a message sent is followed by a malformed copy of it (see ../junk.ts): the receiver
   * must drop and count it, its clock unmoved (checked).
   */
  junkRate?: number;
  /** The mode the machines run: eventual (default) or causal, which replicates alike. */
  mode?: 'eventual' | 'causal';
  /**
   * Clients only increment one key, COUNTER_KEY, set to 0 on the first node at the start: the
   * report then gives the increments answered and what each replica reads.
   */
  countersOnly?: boolean;
}

/** The key of the countersOnly workload. */
export const COUNTER_KEY = 'ctr';

/** The outcome of a run. */
export interface SimReport {
  seed: number;
  /** null when every check passed. */
  problem: string | null;
  convergedAfterMs: number | null;
  stats: {
    ops: number; messages: number; dropped: number; crashes: number; resets: number; purged: number; refused: number; slowed: number;
    junk: number;
    /** Increments answered with a number (countersOnly). */
    incremented: number;
  };
  /** countersOnly: what each replica reads under COUNTER_KEY at the end. */
  counterReads?: Array<string | undefined>;
}

/** Simulated time at the start of a run (the faulty phase ends `faultMs` after it). */
export const START_MS = 1_700_000_000_000;

export const defaultConfig = (seed: number): SimConfig => ({
  seed,
  faultMs: 2500,
  settleMsMax: 5000,
  collectMsMax: 9000,
  keyCount: 10,
  opGapMsMax: 12,
  heartbeatIntervalMs: 50,
  partitions: true,
  crashes: true,
  backendResets: false,
  refusals: false,
  slowBackends: false,
});
