/**
 * Statistics over the benchmark's samples: medians per target × workload over rounds, and ratios
 * against direct memcached from the same round.
 *
 * Intuition: the machine is shared and noisy, so absolute ops/s mean little; what carries over
 * is how a target compares with memcached measured seconds apart under the same noise. Each
 * round pairs every target with the direct-memcached run of that round; the ratio reported is
 * the median of those per-round ratios.
 *
 * Invariants: pure functions of the samples; a target × workload with no successful sample has
 * null statistics, never a made-up number.
 */

import { itemAt } from '../src/runtime/item-at.ts';
import type { LoadResult, WorkloadId } from './loadgen.ts';
import type { CellSummary, RunSample } from './report-types.ts';
import { TARGET_NAMES, type TargetName } from './targets.ts';

/** The median of `values` (mean of the middle two for an even count); null when empty. */
export function median(values: number[]): number | null {
  const finite = values.filter((value) => Number.isFinite(value)).sort((left, right) => left - right);
  if (finite.length === 0) return null;
  const middle = Math.floor(finite.length / 2);
  return finite.length % 2 === 1 ? itemAt(finite, middle) : (itemAt(finite, middle - 1) + itemAt(finite, middle)) / 2;
}

function successful(samples: RunSample[], target: TargetName, workload: WorkloadId): Array<RunSample & { result: LoadResult }> {
  return samples.filter((sample): sample is RunSample & { result: LoadResult } =>
    sample.target === target && sample.workload === workload && sample.result !== null);
}

function pairedRatios(
  samples: RunSample[],
  cell: Array<RunSample & { result: LoadResult }>,
  pick: (result: LoadResult) => number,
): number[] {
  const ratios: number[] = [];
  for (const sample of cell) {
    const direct = samples.find((other) => other.target === 'memcached' && other.workload === sample.workload && other.round === sample.round && other.result !== null);
    const baseline = direct?.result ? pick(direct.result) : 0;
    if (baseline > 0) ratios.push(pick(sample.result) / baseline);
  }
  return ratios;
}

/** Medians over rounds of one kind of request's p50 and p99. */
function kindMedians(cell: Array<RunSample & { result: LoadResult }>, kind: 'get' | 'set'): { p50Us: number | null; p99Us: number | null } {
  const latencies = cell.flatMap((sample) => {
    const latency = sample.result.latencyByKind[kind];
    return latency === null ? [] : [latency];
  });
  return { p50Us: median(latencies.map((latency) => latency.p50Us)), p99Us: median(latencies.map((latency) => latency.p99Us)) };
}

function summarizeCell(samples: RunSample[], target: TargetName, workload: WorkloadId): CellSummary {
  const cell = successful(samples, target, workload);
  const all = samples.filter((sample) => sample.target === target && sample.workload === workload);
  return {
    target,
    workload,
    rounds: cell.length,
    opsPerSecond: median(cell.map((sample) => sample.result.opsPerSecond)),
    ratio: median(pairedRatios(samples, cell, (result) => result.opsPerSecond)),
    p50Us: median(cell.map((sample) => sample.result.latency.p50Us)),
    p99Us: median(cell.map((sample) => sample.result.latency.p99Us)),
    p999Us: median(cell.map((sample) => sample.result.latency.p999Us)),
    p99Ratio: median(pairedRatios(samples, cell, (result) => result.latency.p99Us)),
    byKind: { get: kindMedians(cell, 'get'), set: kindMedians(cell, 'set') },
    cpuCores: median(cell.filter((sample) => sample.windowMs > 0).map((sample) => sample.targetCpuMs / sample.windowMs)),
    cpuUsPerOp: median(cell
      .filter((sample) => sample.result.ops > 0 && sample.windowMs > 0)
      .map((sample) => (sample.targetCpuMs * 1000) / sample.result.ops)),
    switchesPerOp: median(cell
      .filter((sample) => sample.result.ops > 0 && sample.targetSwitches !== null)
      .map((sample) => (sample.targetSwitches as number) / sample.result.ops)),
    loadgenCpuCores: median(cell
      .filter((sample) => sample.windowMs > 0 && sample.loadgenCpuMs > 0)
      .map((sample) => sample.loadgenCpuMs / sample.windowMs)),
    processes: processMedians(cell),
    errors: cell.reduce((sum, sample) => sum + sample.result.errors, 0),
    ...(cell.some((sample) => sample.termChanges !== undefined)
      ? { termChanges: cell.filter((sample) => (sample.termChanges ?? []).length > 0).length }
      : {}),
    misses: cell.reduce((sum, sample) => sum + sample.result.misses, 0),
    failures: all.length - cell.length,
  };
}

/** Each process's median CPU per operation over the rounds that measured it; roles in the order first seen. */
function processMedians(cell: Array<RunSample & { result: LoadResult }>): CellSummary['processes'] {
  const byLabel = new Map<string, { roles: string[]; cpuUsPerOp: number[] }>();
  for (const sample of cell) {
    if (sample.processCpu === null || sample.result.ops === 0) continue;
    for (const { label, cpuMs, role } of sample.processCpu) {
      const entry = byLabel.get(label) ?? { roles: [], cpuUsPerOp: [] };
      byLabel.set(label, entry);
      entry.cpuUsPerOp.push((cpuMs * 1000) / sample.result.ops);
      if (role !== null && !entry.roles.includes(role)) entry.roles.push(role);
    }
  }
  return [...byLabel].map(([label, { roles, cpuUsPerOp }]) => ({ label, roles, cpuUsPerOp: median(cpuUsPerOp) }));
}

/** Medians for every target × workload that has at least one sample, in run order. */
export function summarize(samples: RunSample[]): CellSummary[] {
  const cells: CellSummary[] = [];
  for (const workload of new Set(samples.map((sample) => sample.workload))) {
    for (const target of TARGET_NAMES) {
      if (!samples.some((sample) => sample.target === target && sample.workload === workload)) continue;
      cells.push(summarizeCell(samples, target, workload));
    }
  }
  return cells;
}
