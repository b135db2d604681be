/**
 * mckv in linearizability mode against etcd, where one run measured both: the ops/s of mckv as a
 * multiple of etcd's, and the calls each refused or failed. Issue 27's target is at least 3× etcd's
 * ops/s with no more refused calls than etcd; like every goal here it is informational.
 *
 * Intuition: both are three Raft peers on the same two cores under the same closed-loop load, so
 * the pair is compared round by round (each ratio of two runs seconds apart) and the median over
 * rounds is reported, as the ratios to direct memcached are.
 *
 * Invariants: pure functions of the samples; a workload where either side has no successful run
 * gives no comparison, never a made-up number.
 */

import { median, type RunSample } from './report.ts';
import type { LoadResult, WorkloadId } from './loadgen.ts';

/** mckv linearizability's ops/s must be at least this multiple of etcd's. */
export const ETCD_RATIO_MIN = 3;

/** One workload's comparison. */
export interface EtcdComparison {
  workload: WorkloadId;
  /** Rounds in which both were measured. */
  rounds: number;
  /** Median over those rounds of mckv linearizability's ops/s ÷ etcd's in the same round. */
  ratio: number | null;
  /** Refused or failed calls over every measured run of each (the table's errors). */
  mckvErrors: number;
  etcdErrors: number;
  status: 'met' | 'not met' | 'not measured';
}

type Measured = RunSample & { result: LoadResult };

function measured(samples: RunSample[], target: RunSample['target'], workload: WorkloadId): Measured[] {
  return samples.filter((sample): sample is Measured => sample.target === target && sample.workload === workload && sample.result !== null);
}

/** A comparison for each workload in which both linearizability and etcd ran, in run order. */
export function compareWithEtcd(samples: RunSample[]): EtcdComparison[] {
  const workloads = [...new Set(samples.map((sample) => sample.workload))];
  return workloads
    .filter((workload) => samples.some((sample) => sample.workload === workload && sample.target === 'etcd'))
    .filter((workload) => samples.some((sample) => sample.workload === workload && sample.target === 'linearizability'))
    .map((workload) => {
      const mckv = measured(samples, 'linearizability', workload);
      const etcd = measured(samples, 'etcd', workload);
      const ratios = mckv.flatMap((sample) => {
        const other = etcd.find((candidate) => candidate.round === sample.round);
        return other !== undefined && other.result.opsPerSecond > 0 ? [sample.result.opsPerSecond / other.result.opsPerSecond] : [];
      });
      const ratio = median(ratios);
      const mckvErrors = mckv.reduce((sum, sample) => sum + sample.result.errors, 0);
      const etcdErrors = etcd.reduce((sum, sample) => sum + sample.result.errors, 0);
      const status = ratio === null ? 'not measured' : ratio >= ETCD_RATIO_MIN && mckvErrors <= etcdErrors ? 'met' : 'not met';
      return { workload, rounds: ratios.length, ratio, mckvErrors, etcdErrors, status };
    });
}

/**
 * One line per workload, the ratio rounded down (2.999 reads 2.99, not the target), e.g.
 * "met          mix-16x1: mckv linearizability 3.42× etcd's ops/s (2 rounds); refused calls: mckv 0, etcd 0".
 */
export function formatEtcdComparison(comparisons: EtcdComparison[]): string {
  if (comparisons.length === 0) return '(not measured: the run needs both the linearizability and the etcd target)';
  return comparisons
    .map(({ workload, rounds, ratio, mckvErrors, etcdErrors, status }) => {
      const multiple = ratio === null ? 'no round measured both' : `mckv linearizability ${(Math.floor(ratio * 100) / 100).toFixed(2)}× etcd's ops/s (${rounds} round${rounds === 1 ? '' : 's'})`;
      return `${status.padEnd(12)} ${workload}: ${multiple}; refused calls: mckv ${mckvErrors}, etcd ${etcdErrors}`;
    })
    .join('\n');
}
