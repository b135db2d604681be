/**
 * Turns the benchmark's raw samples into what a person reads: medians per target × workload,
 * ratios against direct memcached from the same round, goal verdicts, a text table, a JSON file
 * and a self-contained SVG bar chart.
 *
 * Intuition: the machine is shared and noisy, so absolute ops/s mean little; what carries over
 * is how a target compares with memcached measured seconds apart under the same noise. Each
 * round pairs every target with the direct-memcached run of that round; the ratio reported is
 * the median of those per-round ratios.
 *
 * Invariants: pure functions of the samples (no I/O except `writeReport`); a target × workload
 * with no successful sample has null statistics, never a made-up number; goals are
 * informational and never change the exit code.
 */

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { itemAt } from '../src/runtime/item-at.ts';
import type { LoadResult, WorkloadId } from './loadgen.ts';
import { parseWorkload } from './loadgen.ts';
import { targetLabel, TARGET_NAMES, type TargetName } from './targets.ts';
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

// ---------------------------------------------------------------------------------------------
// Statistics

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

// ---------------------------------------------------------------------------------------------
// Goals

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

// ---------------------------------------------------------------------------------------------
// Machine

/** Cores, CPU model (from /proc/cpuinfo), Node version, memory, load average. */
export function machineInfo(): MachineInfo {
  let model = os.cpus()[0]?.model ?? 'unknown';
  try {
    const line = readFileSync('/proc/cpuinfo', 'utf8')
      .split('\n')
      .find((candidate) => candidate.startsWith('model name'));
    if (line) model = line.slice(line.indexOf(':') + 1).trim();
  } catch {
    // not Linux: os.cpus() is the best we have
  }
  return {
    cores: os.cpus().length,
    model,
    nodeVersion: process.version,
    platform: `${os.platform()} ${os.release()}`,
    totalMemoryMb: Math.round(os.totalmem() / 2 ** 20),
    loadAverage: os.loadavg().map((value) => Math.round(value * 100) / 100),
  };
}

/** One line describing the machine. */
export function formatMachine(machine: MachineInfo): string {
  return `${machine.cores} cores, ${machine.model}, node ${machine.nodeVersion}, ${machine.platform}, ${machine.totalMemoryMb} MiB, load average ${machine.loadAverage.join(' ')}`;
}

// ---------------------------------------------------------------------------------------------
// Text

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

// ---------------------------------------------------------------------------------------------
// SVG

const COLORS: Record<TargetName, string> = {
  memcached: '#7f7f7f',
  twemproxy: '#bcbd22',
  'node-pipe': '#17becf',
  etcd: '#ff7f0e',
  linearizability: '#d62728',
  sequential: '#1f77b4',
  causal: '#9467bd',
  eventual: '#2ca02c',
};

function escapeXml(text: string): string {
  return text.replace(/[<>&"']/g, (character) => `&#${character.charCodeAt(0)};`);
}

interface ChartLayout {
  left: number;
  top: number;
  plotWidth: number;
  plotHeight: number;
  ratioMax: number;
}

function axisSvg(layout: ChartLayout): string[] {
  const parts: string[] = [];
  const steps = Math.ceil(layout.ratioMax / 0.25);
  for (let step = 0; step <= steps; step += 1) {
    const ratio = step * 0.25;
    const y = layout.top + layout.plotHeight - (ratio / layout.ratioMax) * layout.plotHeight;
    const isOne = Math.abs(ratio - 1) < 1e-9;
    parts.push(
      `<line x1="${layout.left}" x2="${layout.left + layout.plotWidth}" y1="${y.toFixed(1)}" y2="${y.toFixed(1)}" stroke="${isOne ? '#333' : '#ddd'}"${isOne ? ' stroke-dasharray="6 4"' : ''}/>`,
      `<text x="${layout.left - 8}" y="${(y + 4).toFixed(1)}" text-anchor="end" font-size="12">${ratio.toFixed(2)}</text>`,
    );
  }
  return parts;
}

function barsSvg(summary: CellSummary[], workloads: WorkloadId[], targets: TargetName[], layout: ChartLayout): string[] {
  const parts: string[] = [];
  const groupWidth = layout.plotWidth / workloads.length;
  const barWidth = (groupWidth * 0.8) / targets.length;
  workloads.forEach((workload, group) => {
    const groupLeft = layout.left + group * groupWidth + groupWidth * 0.1;
    targets.forEach((target, index) => {
      const ratio = summary.find((cell) => cell.target === target && cell.workload === workload)?.ratio ?? null;
      if (ratio === null) return;
      const height = (Math.min(ratio, layout.ratioMax) / layout.ratioMax) * layout.plotHeight;
      const x = groupLeft + index * barWidth;
      const y = layout.top + layout.plotHeight - height;
      parts.push(
        `<rect x="${x.toFixed(1)}" y="${y.toFixed(1)}" width="${(barWidth - 2).toFixed(1)}" height="${height.toFixed(1)}" fill="${COLORS[target]}"><title>${escapeXml(`${targetLabel(target)}, ${workload}: ${ratio.toFixed(2)}× direct`)}</title></rect>`,
        `<text x="${(x + barWidth / 2 - 1).toFixed(1)}" y="${(y - 4).toFixed(1)}" text-anchor="middle" font-size="10">${ratio.toFixed(2)}</text>`,
      );
    });
    const label = parseWorkload(workload)?.label ?? workload;
    parts.push(`<text x="${(layout.left + (group + 0.5) * groupWidth).toFixed(1)}" y="${layout.top + layout.plotHeight + 18}" text-anchor="middle" font-size="12">${escapeXml(label)}</text>`);
  });
  return parts;
}

const LEGEND_ITEM_WIDTH = 170;

function legendSvg(targets: TargetName[], layout: ChartLayout, y: number): string[] {
  const perRow = Math.max(1, Math.floor(layout.plotWidth / LEGEND_ITEM_WIDTH));
  return targets.flatMap((target, index) => {
    const x = layout.left + (index % perRow) * LEGEND_ITEM_WIDTH;
    const rowY = y + Math.floor(index / perRow) * 20;
    return [
      `<rect x="${x}" y="${rowY}" width="12" height="12" fill="${COLORS[target]}"/>`,
      `<text x="${x + 18}" y="${rowY + 11}" font-size="12">${escapeXml(targetLabel(target))}</text>`,
    ];
  });
}

/** A self-contained SVG bar chart: ops/s ratio against direct memcached per target per workload. */
export function renderChartSvg(summary: CellSummary[], notes: string[]): string {
  const workloads = [...new Set(summary.map((cell) => cell.workload))];
  const targets = TARGET_NAMES.filter((target) => summary.some((cell) => cell.target === target));
  const ratios = summary.map((cell) => cell.ratio ?? 0);
  const layout: ChartLayout = {
    left: 60,
    top: 40 + 14 * notes.length,
    plotWidth: Math.max(720, workloads.length * 220),
    plotHeight: 320,
    ratioMax: Math.max(1.25, Math.ceil(Math.max(...ratios, 0) / 0.25) * 0.25),
  };
  const width = layout.left + layout.plotWidth + 20;
  const legendRows = Math.ceil(targets.length / Math.max(1, Math.floor(layout.plotWidth / LEGEND_ITEM_WIDTH)));
  const height = layout.top + layout.plotHeight + 50 + 20 * legendRows;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${layout.left}" y="22" font-size="16" font-weight="bold">mckv: ops/s relative to direct memcached</text>`,
    ...notes.map((note, index) => `<text x="${layout.left}" y="${40 + 14 * index}" font-size="11" fill="#555">${escapeXml(note)}</text>`),
    ...axisSvg(layout),
    ...barsSvg(summary, workloads, targets, layout),
    ...legendSvg(targets, layout, layout.top + layout.plotHeight + 36),
    '</svg>',
    '',
  ].join('\n');
}

// ---------------------------------------------------------------------------------------------
// Files

/** A folder name for a run started at `date`: bench-YYYYMMDD-HHMMSS. */
export function reportFolderName(date: Date): string {
  const pad = (value: number): string => String(value).padStart(2, '0');
  return `bench-${date.getFullYear()}${pad(date.getMonth() + 1)}${pad(date.getDate())}-${pad(date.getHours())}${pad(date.getMinutes())}${pad(date.getSeconds())}`;
}

/** Writes results.json, chart.svg and summary.txt into `dir`; returns their paths. */
export function writeReport(dir: string, report: BenchReport, summaryText: string): { json: string; svg: string; text: string } {
  mkdirSync(dir, { recursive: true });
  const files = { json: path.join(dir, 'results.json'), svg: path.join(dir, 'chart.svg'), text: path.join(dir, 'summary.txt') };
  writeFileSync(files.json, `${JSON.stringify(report, null, 2)}\n`);
  const rounds = Math.max(0, ...report.samples.map((sample) => sample.round));
  const notes = [
    `Median over ${rounds} round(s) of (target ops/s ÷ direct memcached ops/s in the same round). Higher is better; 1.00 = memcached.`,
    formatMachine(report.machine),
    `run started ${report.startedAt}`,
  ];
  writeFileSync(files.svg, renderChartSvg(report.summary, notes));
  writeFileSync(files.text, `${summaryText}\n`);
  return files;
}
