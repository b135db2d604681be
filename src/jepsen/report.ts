/**
 * The fault runner's report: numbers (verdict.json), a readable verdict (verdict.txt) and a
 * timeline (timeline.svg) of throughput and latency with the fault windows shaded.
 *
 * Intuition: a person opening the folder should see at a glance whether the promise held, when
 * faults happened, and how the cluster behaved during and after each one — throughput dips,
 * latency spikes, refused (fail) and indeterminate (info) calls.
 *
 * Invariants: the SVG is self-contained (no scripts, fonts or links outside it) and every text
 * is XML-escaped; all times are ms since the run started.
 */

import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { itemAt } from '../runtime/item-at.ts';
import type { CheckResult } from '../check/history.ts';
import { UNNOTICED_KINDS, type FaultWindow } from './nemesis.ts';
import type { CallOutcome, CallRecord } from './workload.ts';

/** Latency percentiles of completed calls, in ms. */
export interface LatencySummary {
  count: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
}

/** A fault window with how long the cluster took to answer a call successfully again. */
export interface FaultSummary extends FaultWindow {
  /** From the fault's start to the first ok call invoked after it (null: none). */
  firstOkAfterStartMs: number | null;
  /** From the heal to the first ok call invoked after it (null: none). */
  firstOkAfterHealMs: number | null;
}

/** Failed calls with one error, and how many of them came while no fault was on or healing. */
export interface RefusalSummary {
  error: string;
  count: number;
  /**
   * Of them, those that overlapped no fault window nor its first RECOVERY_GRACE_MS after the heal
   * (started after that, or ended before the fault began).
   */
  quiet: number;
}

/**
 * After a heal, how long refusals still count as the fault's: a returning controller catches up,
 * a new leader is elected. A refusal later than this, with no fault on, is worth a look.
 */
export const RECOVERY_GRACE_MS = 2000;

/** Everything verdict.json holds. */
export interface RunSummary {
  mode: string;
  nemesis: string[];
  seed: number;
  clients: number;
  /** Calls each client kept in flight on its connection. */
  pipeline: number;
  /** config.ini wal_sync of the cluster (absent from a summary that does not name it: fsync). */
  walSync?: 'fsync' | 'write';
  /** A linearizability run with config.ini read_leases = on (absent: off, or another mode, which ignores it). */
  readLeases?: true;
  keys: number;
  /** A bulk run: how many of the clients were bulk loaders, and the sets each kept in flight. */
  bulk?: { clients: number; depth: number };
  durationMs: number;
  verdict: CheckResult['verdict'];
  exitCode: 0 | 1 | 2;
  checker: string;
  detail: string | null;
  counts: Record<CallOutcome, number> & { total: number };
  latency: { ok: LatencySummary; all: LatencySummary };
  faults: FaultSummary[];
  /** Failed calls by error, most frequent first. */
  refusals: RefusalSummary[];
  /** Eventual mode: how long after the heal every replica answered the same (null: never, or not eventual). */
  convergenceMs: number | null;
}

/** Counts calls by outcome. */
export function countOutcomes(calls: readonly CallRecord[]): RunSummary['counts'] {
  const counts = { ok: 0, fail: 0, info: 0, total: calls.length };
  for (const call of calls) counts[call.outcome] += 1;
  return counts;
}

/** Nearest-rank percentiles of call latencies. */
export function summarizeLatency(calls: readonly CallRecord[]): LatencySummary {
  const sorted = calls.map((call) => call.endMs - call.startMs).sort((a, b) => a - b);
  const at = (fraction: number): number =>
    sorted.length === 0 ? 0 : round(itemAt(sorted, Math.min(sorted.length - 1, Math.ceil(fraction * sorted.length) - 1)));
  return { count: sorted.length, p50Ms: at(0.5), p90Ms: at(0.9), p99Ms: at(0.99), maxMs: at(1) };
}

/** Adds to each window the time to the first successful call after its start and after its heal. */
export function summarizeFaults(windows: readonly FaultWindow[], calls: readonly CallRecord[]): FaultSummary[] {
  const oks = calls.filter((call) => call.outcome === 'ok');
  const firstAfter = (fromMs: number): number | null => {
    let best: number | null = null;
    for (const call of oks) if (call.startMs >= fromMs && (best === null || call.endMs < best)) best = call.endMs;
    return best === null ? null : round(best - fromMs);
  };
  return windows.map((window) => ({
    ...window,
    firstOkAfterStartMs: firstAfter(window.startMs),
    firstOkAfterHealMs: firstAfter(window.healedMs),
  }));
}

/** Counts failed calls by error, and those of them that came while no fault was on or healing. */
export function summarizeRefusals(windows: readonly FaultWindow[], calls: readonly CallRecord[]): RefusalSummary[] {
  const byError = new Map<string, RefusalSummary>();
  // A call that was still waiting when a fault began may have failed because of it; faults the
  // cluster must not notice (a clock step) excuse nothing.
  const excusing = windows.filter((window) => !UNNOTICED_KINDS.includes(window.kind));
  const quiet = (call: CallRecord): boolean =>
    excusing.every((window) => call.endMs < window.startMs || call.startMs > window.healedMs + RECOVERY_GRACE_MS);
  for (const call of calls) {
    if (call.outcome !== 'fail') continue;
    const error = call.error ?? 'no error recorded';
    let summary = byError.get(error);
    if (summary === undefined) {
      summary = { error, count: 0, quiet: 0 };
      byError.set(error, summary);
    }
    summary.count += 1;
    if (quiet(call)) summary.quiet += 1;
  }
  return [...byError.values()].sort((a, b) => b.count - a.count);
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}

/** Writes verdict.json, verdict.txt and timeline.svg into `dir` (history.jsonl is the recorder's). */
export function writeReport(dir: string, summary: RunSummary, calls: readonly CallRecord[]): void {
  writeFileSync(path.join(dir, 'verdict.json'), `${JSON.stringify(summary, null, 2)}\n`);
  writeFileSync(path.join(dir, 'verdict.txt'), formatVerdict(summary));
  writeFileSync(path.join(dir, 'timeline.svg'), renderTimeline(summary, calls));
}

/** The readable verdict, also printed by the CLI. */
export function formatVerdict(summary: RunSummary): string {
  const { counts, latency } = summary;
  const headline: Record<RunSummary['verdict'], string> = {
    ok: `PASS: the ${summary.mode} promise held (${summary.checker})`,
    violation: `FAIL: the ${summary.mode} promise was violated (${summary.checker})`,
    unknown: `UNKNOWN: the checker gave up (${summary.checker})`,
  };
  const quiet = summary.refusals.reduce((total, refusal) => total + refusal.quiet, 0);
  const lines = [
    headline[summary.verdict],
    // The checkers judge what was answered; a call refused while every node should serve is an
    // outage they pass, so it is named here.
    ...(quiet > 0 ? [`note: ${quiet} call${quiet === 1 ? '' : 's'} refused while no fault was on, nor healed less than ${RECOVERY_GRACE_MS / 1000} s before (by error below)`] : []),
    `run: ${(summary.durationMs / 1000).toFixed(1)} s, ${summary.clients} clients${summary.pipeline > 1 ? ` × ${summary.pipeline} calls in flight` : ''}${summary.bulk ? ` (${summary.bulk.clients} of them bulk loaders × ${summary.bulk.depth} sets in flight)` : ''}, ${summary.keys} keys, seed ${summary.seed}, nemesis ${summary.nemesis.join(',') || 'none'}${summary.walSync === undefined ? '' : `, wal_sync ${summary.walSync}`}${summary.readLeases ? ', read leases' : ''}`,
    `calls: ${counts.total} (ok ${counts.ok}, fail ${counts.fail}, info ${counts.info})`,
    `latency of ok calls: p50 ${latency.ok.p50Ms} ms, p90 ${latency.ok.p90Ms} ms, p99 ${latency.ok.p99Ms} ms, max ${latency.ok.maxMs} ms`,
  ];
  if (summary.refusals.length > 0) lines.push(`refused calls by error (in brackets: while no fault was on, nor healed less than ${RECOVERY_GRACE_MS / 1000} s before):`);
  for (const refusal of summary.refusals.slice(0, REFUSALS_SHOWN_MAX)) lines.push(`  ${refusal.count} (${refusal.quiet}) ${refusal.error}`);
  if (summary.convergenceMs !== null) lines.push(`converged ${summary.convergenceMs} ms after the heal`);
  if (summary.faults.length > 0) lines.push('faults:');
  for (const fault of summary.faults) {
    const afterStart = fault.firstOkAfterStartMs === null ? 'none' : `${fault.firstOkAfterStartMs} ms`;
    const afterHeal = fault.firstOkAfterHealMs === null ? 'none' : `${fault.firstOkAfterHealMs} ms`;
    lines.push(`  ${seconds(fault.startMs)}–${seconds(fault.endMs)} ${fault.label}: first ok after start ${afterStart}, after heal ${afterHeal}`);
  }
  if (summary.detail) lines.push('', summary.detail);
  return `${lines.join('\n')}\n`;
}

/** How many kinds of refusal the readable verdict lists (verdict.json has them all). */
const REFUSALS_SHOWN_MAX = 6;

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)}s`;
}

// ------------------------------------------------------------------ timeline.svg

const WIDTH = 1000;
const MARGIN = { left: 70, right: 20, top: 50 };
const PANEL_HEIGHT = 170;
const PANEL_GAP = 50;
const BUCKET_MS = 250;
const COLORS = { ok: '#2e7d32', fail: '#ef6c00', info: '#c62828', fault: '#ffcdd2', p50: '#1565c0', max: '#90caf9' };

interface Bucket {
  ok: number;
  fail: number;
  info: number;
  latenciesMs: number[];
}

interface Scale {
  x: (ms: number) => number;
  endMs: number;
}

/** Renders the timeline: throughput (top) and latency (bottom) per 250 ms bucket. */
export function renderTimeline(summary: RunSummary, calls: readonly CallRecord[]): string {
  const endMs = Math.max(summary.durationMs, maxOf(calls, (call) => call.endMs), 1);
  const plotWidth = WIDTH - MARGIN.left - MARGIN.right;
  const scale: Scale = { x: (ms) => MARGIN.left + (ms / endMs) * plotWidth, endMs };
  const buckets = bucketCalls(calls, endMs);
  const throughputTop = MARGIN.top;
  const latencyTop = throughputTop + PANEL_HEIGHT + PANEL_GAP;
  const height = latencyTop + PANEL_HEIGHT + 60;
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="sans-serif" font-size="11">`,
    `<title>mckv ${escapeXml(summary.mode)} run: ${summary.verdict}</title>`,
    `<rect x="0" y="0" width="${WIDTH}" height="${height}" fill="white"/>`,
    `<text x="${MARGIN.left}" y="22" font-size="15" font-weight="bold">${escapeXml(title(summary))}</text>`,
    ...faultRects(summary.faults, scale, throughputTop, latencyTop + PANEL_HEIGHT),
    ...throughputPanel(buckets, scale, throughputTop),
    ...latencyPanel(buckets, calls, scale, latencyTop),
    ...timeAxis(scale, latencyTop + PANEL_HEIGHT),
    ...legend(height - 18),
    '</svg>',
  ];
  return `${parts.join('\n')}\n`;
}

function title(summary: RunSummary): string {
  const verdict = { ok: 'PASS', violation: 'VIOLATION', unknown: 'UNKNOWN' }[summary.verdict];
  return `${summary.mode} — ${verdict} — ${summary.counts.total} calls (ok ${summary.counts.ok}, fail ${summary.counts.fail}, info ${summary.counts.info})`;
}

function bucketCalls(calls: readonly CallRecord[], endMs: number): Bucket[] {
  const buckets: Bucket[] = Array.from({ length: Math.ceil(endMs / BUCKET_MS) }, () => ({ ok: 0, fail: 0, info: 0, latenciesMs: [] }));
  for (const call of calls) {
    const bucket = itemAt(buckets, Math.min(buckets.length - 1, Math.floor(call.endMs / BUCKET_MS)));
    bucket[call.outcome] += 1;
    if (call.outcome === 'ok') bucket.latenciesMs.push(call.endMs - call.startMs);
  }
  return buckets;
}

function faultRects(faults: readonly FaultSummary[], scale: Scale, top: number, bottom: number): string[] {
  return faults.flatMap((fault, index) => {
    const x = scale.x(fault.startMs);
    const width = Math.max(1, scale.x(fault.endMs) - x);
    const labelY = top - 6 - (index % 2) * 12;
    const healX = scale.x(fault.endMs);
    const healWidth = Math.max(0, scale.x(fault.healedMs) - healX);
    return [
      `<rect class="healing" x="${fmt(healX)}" y="${top}" width="${fmt(healWidth)}" height="${bottom - top}" fill="${COLORS.fault}" fill-opacity="0.25"><title>${escapeXml(`undoing ${fault.label}`)}</title></rect>`,
      `<rect class="fault" data-kind="${fault.kind}" x="${fmt(x)}" y="${top}" width="${fmt(width)}" height="${bottom - top}" fill="${COLORS.fault}" fill-opacity="0.6"><title>${escapeXml(fault.label)}</title></rect>`,
      `<text x="${fmt(x + 2)}" y="${labelY}" fill="#b71c1c">${escapeXml(fault.label)}</text>`,
    ];
  });
}

function throughputPanel(buckets: readonly Bucket[], scale: Scale, top: number): string[] {
  const perSecond = (count: number): number => count * (1000 / BUCKET_MS);
  const maxRate = niceCeiling(Math.max(1, ...buckets.map((bucket) => perSecond(bucket.ok + bucket.fail + bucket.info))));
  const y = (rate: number): number => top + PANEL_HEIGHT - (rate / maxRate) * PANEL_HEIGHT;
  const bars: string[] = [];
  buckets.forEach((bucket, index) => {
    const x = scale.x(index * BUCKET_MS);
    const width = Math.max(0.5, scale.x((index + 1) * BUCKET_MS) - x - 0.5);
    let base = 0;
    for (const outcome of ['ok', 'fail', 'info'] as const) {
      const rate = perSecond(bucket[outcome]);
      if (rate === 0) continue;
      bars.push(`<rect class="calls-${outcome}" x="${fmt(x)}" y="${fmt(y(base + rate))}" width="${fmt(width)}" height="${fmt(y(base) - y(base + rate))}" fill="${COLORS[outcome]}"/>`);
      base += rate;
    }
  });
  return [...panelFrame(top, 'calls / s', maxRate, (value) => String(value)), ...bars];
}

function latencyPanel(buckets: readonly Bucket[], calls: readonly CallRecord[], scale: Scale, top: number): string[] {
  const maxLatency = niceCeiling(Math.max(1, maxOf(calls, (call) => call.endMs - call.startMs)));
  const y = (ms: number): number => top + PANEL_HEIGHT - (ms / maxLatency) * PANEL_HEIGHT;
  const middle = (index: number): number => scale.x((index + 0.5) * BUCKET_MS);
  const line = (pick: (sorted: number[]) => number, color: string, name: string): string => {
    const points = buckets
      .map((bucket, index) => ({ bucket, index }))
      .filter(({ bucket }) => bucket.latenciesMs.length > 0)
      .map(({ bucket, index }) => `${fmt(middle(index))},${fmt(y(pick([...bucket.latenciesMs].sort((a, b) => a - b))))}`);
    return `<polyline class="latency-${name}" points="${points.join(' ')}" fill="none" stroke="${color}" stroke-width="1.5"/>`;
  };
  const marks = calls
    .filter((call) => call.outcome !== 'ok')
    .map((call) => {
      const x = fmt(scale.x(call.endMs));
      const markY = fmt(y(call.endMs - call.startMs));
      return call.outcome === 'info'
        ? `<circle class="mark-info" cx="${x}" cy="${markY}" r="2.5" fill="${COLORS.info}"/>`
        : `<path class="mark-fail" d="M${x} ${markY} m-2.5 -2.5 l5 5 m0 -5 l-5 5" stroke="${COLORS.fail}" stroke-width="1.3"/>`;
    });
  return [
    ...panelFrame(top, 'latency (ms)', maxLatency, (value) => String(value)),
    line((sorted) => itemAt(sorted, sorted.length - 1), COLORS.max, 'max'),
    line((sorted) => itemAt(sorted, Math.floor((sorted.length - 1) / 2)), COLORS.p50, 'p50'),
    ...marks,
  ];
}

function panelFrame(top: number, label: string, maxValue: number, format: (value: number) => string): string[] {
  const left = MARGIN.left;
  const right = WIDTH - MARGIN.right;
  const bottom = top + PANEL_HEIGHT;
  const parts = [`<rect x="${left}" y="${top}" width="${right - left}" height="${PANEL_HEIGHT}" fill="none" stroke="#999"/>`];
  for (let step = 0; step <= 4; step++) {
    const value = (maxValue * step) / 4;
    const y = bottom - (PANEL_HEIGHT * step) / 4;
    parts.push(`<line x1="${left}" y1="${fmt(y)}" x2="${right}" y2="${fmt(y)}" stroke="#eee"/>`);
    parts.push(`<text x="${left - 6}" y="${fmt(y + 4)}" text-anchor="end">${escapeXml(format(Math.round(value)))}</text>`);
  }
  parts.push(`<text transform="translate(16 ${top + PANEL_HEIGHT / 2}) rotate(-90)" text-anchor="middle">${escapeXml(label)}</text>`);
  return parts;
}

function timeAxis(scale: Scale, top: number): string[] {
  const stepMs = niceCeiling(scale.endMs / 10);
  const parts: string[] = [];
  for (let ms = 0; ms <= scale.endMs; ms += stepMs) {
    parts.push(`<text x="${fmt(scale.x(ms))}" y="${top + 14}" text-anchor="middle">${(ms / 1000).toFixed(1)}s</text>`);
  }
  return parts;
}

function legend(y: number): string[] {
  const items: Array<[string, string]> = [
    [COLORS.ok, 'ok'], [COLORS.fail, 'fail (refused)'], [COLORS.info, 'info (indeterminate)'],
    [COLORS.p50, 'p50 latency'], [COLORS.max, 'max latency'], [COLORS.fault, 'fault window'],
  ];
  return items.map(([color, name], index) => {
    const x = MARGIN.left + index * 145;
    return `<rect x="${x}" y="${y - 9}" width="12" height="10" fill="${color}"/><text x="${x + 16}" y="${y}">${escapeXml(name)}</text>`;
  });
}

/** 1, 2, 5 × 10^n at or above `value`. */
function niceCeiling(value: number): number {
  const power = 10 ** Math.floor(Math.log10(value));
  for (const factor of [1, 2, 5, 10]) if (factor * power >= value) return factor * power;
  return 10 * power;
}

function fmt(value: number): string {
  return value.toFixed(1);
}

/** Escapes text for XML content and attributes. */
export function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** The greatest `measure` of `items` (−Infinity for none), without spreading them into arguments (a long run has hundreds of thousands). */
function maxOf<T>(items: readonly T[], measure: (item: T) => number): number {
  let greatest = Number.NEGATIVE_INFINITY;
  for (const item of items) greatest = Math.max(greatest, measure(item));
  return greatest;
}
