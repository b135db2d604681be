/**
 * The benchmark report as text: the medians table, the gets' and sets' own latencies, each
 * process's CPU per operation, and one line per goal verdict. Columns are padded to their widest
 * cell; a statistic that was not measured reads "—".
 */

import { itemAt } from '../src/runtime/item-at.ts';
import type { CellSummary, GoalVerdict } from './report-types.ts';
import { targetLabel } from './targets.ts';

function formatNumber(value: number | null, digits: number): string {
  return value === null ? '—' : value.toFixed(digits);
}

/** Columns padded to their widest cell: the first `textColumns` aligned left (labels), the rest right (numbers). */
function padTable(rows: string[][], textColumns = 2): string {
  const widths = itemAt(rows, 0).map((_, column) => Math.max(...rows.map((row) => itemAt(row, column).length)));
  const pad = (cell: string, column: number): string =>
    (column < textColumns ? cell.padEnd(itemAt(widths, column)) : cell.padStart(itemAt(widths, column)));
  return rows.map((row) => row.map(pad).join('  ').trimEnd()).join('\n');
}

/** The medians table: one row per target × workload. */
export function formatTable(summary: CellSummary[]): string {
  const header = ['workload', 'target', 'ops/s', '×direct', 'p50 µs', 'p99 µs', 'p999 µs', 'p99×direct', 'CPU cores', 'CPU µs/op', 'switches/op', 'loadgen cores', 'errors', 'misses', 'rounds'];
  const rows = summary.map((cell) => [
    cell.workload,
    targetLabel(cell.target),
    formatNumber(cell.opsPerSecond, 0),
    formatNumber(cell.ratio, 2),
    formatNumber(cell.p50Us, 0),
    formatNumber(cell.p99Us, 0),
    formatNumber(cell.p999Us, 0),
    formatNumber(cell.p99Ratio, 2),
    formatNumber(cell.cpuCores, 2),
    formatNumber(cell.cpuUsPerOp, 1),
    formatNumber(cell.switchesPerOp, 2),
    formatNumber(cell.loadgenCpuCores, 2),
    String(cell.errors),
    String(cell.misses),
    cell.failures > 0 ? `${cell.rounds} (+${cell.failures} failed)` : String(cell.rounds),
  ]);
  return padTable([header, ...rows]);
}

/** What a read and a write cost in each target: the gets' and the sets' own latencies, one row per target × workload. */
export function formatLatencyByKind(summary: CellSummary[]): string {
  const header = ['workload', 'target', 'get p50 µs', 'get p99 µs', 'set p50 µs', 'set p99 µs'];
  const rows = summary.map((cell) => [
    cell.workload,
    targetLabel(cell.target),
    formatNumber(cell.byKind.get.p50Us, 0),
    formatNumber(cell.byKind.get.p99Us, 0),
    formatNumber(cell.byKind.set.p50Us, 0),
    formatNumber(cell.byKind.set.p99Us, 0),
  ]);
  return padTable([header, ...rows]);
}

/**
 * Where each target's CPU goes: one row per target × workload, each process's median CPU µs per
 * operation, with the role it had in brackets where the target reports one (which node led).
 */
export function formatProcessCpu(summary: CellSummary[]): string {
  const rows = summary
    .filter((cell) => cell.processes.length > 0)
    .map((cell) => [
      cell.workload,
      targetLabel(cell.target),
      cell.processes
        .map(({ label, roles, cpuUsPerOp }) => `${label}${roles.length > 0 ? ` (${roles.join('/')})` : ''} ${formatNumber(cpuUsPerOp, 1)}`)
        .join(' · '),
    ]);
  return rows.length === 0 ? '(no process CPU was measured)' : padTable([['workload', 'target', 'CPU µs/op of each process'], ...rows], 3);
}

/** One line per goal: met / not met / not measured. */
export function formatGoals(goals: GoalVerdict[]): string {
  if (goals.length === 0) return '(no goal applies to the targets and workloads of this run)';
  return goals.map((verdict) => `${verdict.status.padEnd(12)} ${targetLabel(verdict.target).padEnd(20)} ${verdict.goal}: ${verdict.detail}`).join('\n');
}
