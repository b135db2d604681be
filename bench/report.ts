/**
 * Turns the benchmark's raw samples into what a person reads: medians per target × workload,
 * ratios against direct memcached from the same round, goal verdicts, a text table, a JSON file
 * and a self-contained SVG bar chart.
 *
 * This file is the report's public API and owns its I/O: the machine description and the report
 * folder. The rest lives in its parts, re-exported here: ./report-types.ts (the vocabulary),
 * ./report-stats.ts (medians and ratios), ./report-goals.ts (goals and verdicts),
 * ./report-text.ts (the tables) and ./report-chart.ts (the SVG).
 *
 * Invariants: everything but `machineInfo` and `writeReport` is a pure function of the samples;
 * goals are informational and never change the exit code.
 */

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { renderChartSvg } from './report-chart.ts';
import type { BenchReport, MachineInfo } from './report-types.ts';

export { renderChartSvg } from './report-chart.ts';
export { GOALS, judgeGoals } from './report-goals.ts';
export { median, summarize } from './report-stats.ts';
export { formatGoals, formatLatencyByKind, formatProcessCpu, formatTable } from './report-text.ts';
export type { BenchReport, CellSummary, GoalVerdict, MachineInfo, ProcessCpu, RunSample } from './report-types.ts';

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
