/**
 * The benchmark report's vocabulary: a run's raw samples (RunSample, ProcessCpu), what they are
 * summarized into (CellSummary, GoalVerdict), the machine they came from (MachineInfo) and the
 * whole of results.json (BenchReport). Users import these names from ./report.ts, which
 * re-exports every one.
 */

import type { LoadResult, WorkloadId } from './loadgen.ts';
import type { TargetName } from './targets.ts';
import type { EtcdComparison } from './versus-etcd.ts';

/** One load run of one target in one round. */
export interface RunSample {
  round: number;
  target: TargetName;
  workload: WorkloadId;
  /** Absent when the run itself failed (see `failure`). */
  result: LoadResult | null;
  failure: string | null;
  /** CPU the target's processes used during the measured window, and that window's length (0 when the CPU is unknown). */
  targetCpuMs: number;
  windowMs: number;
  /** CPU the load generator used in the same window (it shares the machine): 0 when unknown. */
  loadgenCpuMs: number;
  /** Context switches of every thread of the target's processes in the window; null when unknown. */
  targetSwitches: number | null;
  /** Each of the target's processes' CPU in the window (their sum is `targetCpuMs`); null when unknown. */
  processCpu: ProcessCpu[] | null;
  /** Targets that elect a leader: the controllers whose term changed over the run ("n1 1→2"); absent for others. */
  termChanges?: string[];
}

/** One process's CPU in a measured window, and its role then where the target reports one (a leader). */
export interface ProcessCpu {
  label: string;
  cpuMs: number;
  role: string | null;
}

/** Medians over rounds for one target × workload. */
export interface CellSummary {
  target: TargetName;
  workload: WorkloadId;
  rounds: number;
  opsPerSecond: number | null;
  /** Median over rounds of ops/s ÷ direct memcached's ops/s in the same round. */
  ratio: number | null;
  p50Us: number | null;
  p99Us: number | null;
  p999Us: number | null;
  /** Median of p99 ÷ direct memcached's p99 in the same round. */
  p99Ratio: number | null;
  /** Medians of the gets' and of the sets' own p50 and p99 (null when the workload has none). */
  byKind: { get: { p50Us: number | null; p99Us: number | null }; set: { p50Us: number | null; p99Us: number | null } };
  /** CPU of the target's processes in cores (CPU ms per wall ms). */
  cpuCores: number | null;
  cpuUsPerOp: number | null;
  /** Context switches of the target's threads per operation (wake-ups and preemptions). */
  switchesPerOp: number | null;
  /** CPU of the load generator in cores, while it drove this target. */
  loadgenCpuCores: number | null;
  /** Each process's median CPU µs per operation over rounds, in the target's order, with every role it had. */
  processes: Array<{ label: string; roles: string[]; cpuUsPerOp: number | null }>;
  errors: number;
  /** Rounds in which some controller's term changed (an election under load); absent where there are no terms. */
  termChanges?: number;
  /** Gets that found no value (every key was preloaded, so a miss is a replica behind or a lost write). */
  misses: number;
  failures: number;
}

/** A stated performance goal and whether this run met it (informational only). */
export interface GoalVerdict {
  target: TargetName;
  workload: WorkloadId;
  goal: string;
  status: 'met' | 'not met' | 'not measured';
  detail: string;
}

/** The machine the numbers came from. */
export interface MachineInfo {
  cores: number;
  model: string;
  nodeVersion: string;
  platform: string;
  totalMemoryMb: number;
  loadAverage: number[];
}

/** Everything results.json holds. */
export interface BenchReport {
  startedAt: string;
  finishedAt: string;
  machine: MachineInfo;
  settings: Record<string, unknown>;
  /** Targets not measured, with the reason. */
  unavailable: Array<{ target: TargetName; reason: string }>;
  samples: RunSample[];
  summary: CellSummary[];
  goals: GoalVerdict[];
  /** mckv linearizability against etcd, per workload where the run measured both. */
  versusEtcd: EtcdComparison[];
}
