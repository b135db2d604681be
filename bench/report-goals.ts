/**
 * The benchmark's stated performance goals (GOALS) and the verdict a run's summary earns on each:
 * met, not met, or not measured, with the numbers that decided it.
 *
 * Invariants: goals are informational and never change the exit code; a goal is judged only when
 * its target and workload were part of the run, and without a sample it is "not measured", never
 * met or missed; a ratio is shown rounded away from the goal, so a near miss never reads as the goal.
 */

import type { WorkloadId } from './loadgen.ts';
import type { CellSummary, GoalVerdict } from './report-types.ts';
import type { TargetName } from './targets.ts';

type Goal =
  | {
    kind: 'ratio';
    target: TargetName;
    workload: WorkloadId;
    ratioMin: number;
    /** p99 at most this multiple of direct memcached's p99, when set. */
    p99RatioMax: number | null;
  }
  /** The target's gets' p50 at most `multipleMax` × `of`'s, in the same workload of the same run. */
  | { kind: 'get_p50'; target: TargetName; workload: WorkloadId; of: TargetName; multipleMax: number }
  /** CPU per operation across the target's processes (an ordered write, in sets only). */
  | { kind: 'cpu'; target: TargetName; workload: WorkloadId; usPerOpMax: number };

const ratio = (target: TargetName, workload: WorkloadId, ratioMin: number, p99RatioMax: number | null = null): Goal =>
  ({ kind: 'ratio', target, workload, ratioMin, p99RatioMax });

/** The stated targets, with the workload they apply to: mostly ratios of ops/s against direct memcached. */
export const GOALS: readonly Goal[] = [
  ratio('eventual', 'mix-16x1', 0.6, 2),
  ratio('sequential', 'mix-16x1', 0.5),
  ratio('linearizability', 'mix-16x1', 0.35),
  { kind: 'get_p50', target: 'linearizability', workload: 'mix-16x1', of: 'sequential', multipleMax: 1.3 },
  ratio('eventual', 'set-16x1', 0.3),
  ratio('sequential', 'set-16x1', 0.2),
  ratio('linearizability', 'set-16x1', 0.2),
  { kind: 'cpu', target: 'sequential', workload: 'set-16x1', usPerOpMax: 150 },
  { kind: 'cpu', target: 'linearizability', workload: 'set-16x1', usPerOpMax: 150 },
  // A bulk load (3 connections pipelining 512 sets each) must also be taken whole, with no election.
  ratio('eventual', 'bulk', 0.25),
  ratio('sequential', 'bulk', 0.1),
  ratio('linearizability', 'bulk', 0.1),
];

function describeGoal(goal: Goal): string {
  switch (goal.kind) {
    case 'ratio': {
      const p99 = goal.p99RatioMax === null ? '' : ` and p99 ≤ ${goal.p99RatioMax}× direct's`;
      return `ops/s ≥ ${goal.ratioMin}× direct${p99} (${goal.workload})`;
    }
    case 'get_p50':
      return `get p50 ≤ ${goal.multipleMax}× ${goal.of}'s (${goal.workload})`;
    case 'cpu':
      return `CPU ≤ ${goal.usPerOpMax} µs per operation across the cluster (${goal.workload})`;
  }
}

/**
 * `value` with three decimals, rounded toward `direction`: a ratio just short of a goal (0.2988
 * against 0.3) then reads 0.298, never the goal itself.
 */
function towards(value: number, direction: 'down' | 'up'): string {
  const scaled = value * 1000;
  return ((direction === 'down' ? Math.floor(scaled) : Math.ceil(scaled)) / 1000).toFixed(3);
}

function judge(goal: Goal, summary: CellSummary[]): Pick<GoalVerdict, 'status' | 'detail'> {
  const cellOf = (target: TargetName): CellSummary | undefined =>
    summary.find((cell) => cell.target === target && cell.workload === goal.workload);
  const cell = cellOf(goal.target);
  if (goal.kind === 'get_p50') {
    const mine = cell?.byKind.get.p50Us ?? null;
    const theirs = cellOf(goal.of)?.byKind.get.p50Us ?? null;
    if (mine === null || theirs === null || theirs === 0) return { status: 'not measured', detail: `no get p50 of both ${goal.target} and ${goal.of}` };
    const multiple = mine / theirs;
    const detail = `${Math.round(mine)} µs against ${Math.round(theirs)} µs, ${towards(multiple, 'up')}×`;
    return { status: multiple <= goal.multipleMax ? 'met' : 'not met', detail };
  }
  if (goal.kind === 'cpu') {
    const usPerOp = cell?.cpuUsPerOp ?? null;
    if (usPerOp === null) return { status: 'not measured', detail: 'no CPU sample' };
    return { status: usPerOp <= goal.usPerOpMax ? 'met' : 'not met', detail: `${usPerOp.toFixed(1)} µs` };
  }
  if (!cell || cell.ratio === null) return { status: 'not measured', detail: 'no paired sample with direct memcached' };
  const parts = [`ratio ${towards(cell.ratio, 'down')}`];
  let met = cell.ratio >= goal.ratioMin;
  if (goal.p99RatioMax !== null) {
    parts.push(`p99 ${cell.p99Ratio === null ? '?' : towards(cell.p99Ratio, 'up')}× direct's`);
    met = met && cell.p99Ratio !== null && cell.p99Ratio <= goal.p99RatioMax;
  }
  if (cell.errors > 0) {
    parts.push(`${cell.errors} errors`);
    met = false;
  }
  if ((cell.termChanges ?? 0) > 0) {
    parts.push(`a term changed in ${cell.termChanges} round(s)`);
    met = false;
  }
  return { status: met ? 'met' : 'not met', detail: parts.join(', ') };
}

/** A verdict for every goal whose target and workload were part of the run. */
export function judgeGoals(summary: CellSummary[], targets: readonly TargetName[], workloads: readonly WorkloadId[]): GoalVerdict[] {
  const applies = (goal: Goal): boolean =>
    targets.includes(goal.target) && workloads.includes(goal.workload) && (goal.kind !== 'get_p50' || targets.includes(goal.of));
  return GOALS.filter(applies).map((goal) => ({
    target: goal.target,
    workload: goal.workload,
    goal: describeGoal(goal),
    ...judge(goal, summary),
  }));
}
