/**
 * One closed-loop load run in this process: validate the options, open the run's channels
 * (memcached sockets or etcd clients), optionally preload every key, then warm up, measure and
 * drain, and summarize what the sink counted into a LoadResult.
 *
 * Intuition: `next()` hands out a random get or set until the run stops, so every channel keeps
 * its pipeline full and the offered load adapts to what the target serves.
 *
 * Invariants: every phase is bounded in time (connect, preload, warm-up, duration, drain); a
 * reply is counted only if its request was sent inside the measured window; requests still
 * unanswered after the drain timeout are counted as errors; the histograms are fixed-size.
 */

import { performance } from 'node:perf_hooks';
import { Histogram } from './histogram.ts';
import { memcachedChannels } from './load-client.ts';
import type { LatencySummary, LoadOptions, LoadPhase, LoadResult, OpenChannels, ReplySink, Request } from './load-types.ts';
import { mulberry32 } from '../src/runtime/random.ts';

const ERROR_SAMPLES_MAX = 5;
const PRELOAD_DEPTH = 64;
const PRELOAD_CONNECTIONS_MAX = 4;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Resolves with `promise`'s completion or after `ms`, whichever is first. */
async function within(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([promise, new Promise((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}

function validateOptions(options: LoadOptions): string | null {
  if (options.ports.length === 0) return 'no target ports';
  const positive: Array<[string, number]> = [
    ['connections', options.connections],
    ['pipelineDepth', options.pipelineDepth],
    ['keyCount', options.keyCount],
    ['durationMs', options.durationMs],
  ];
  for (const [name, value] of positive) if (!Number.isInteger(value) || value <= 0) return `${name} must be a positive integer`;
  if (!(options.getFraction >= 0 && options.getFraction <= 1)) return 'getFraction must be within 0..1';
  if (!Number.isInteger(options.valueBytes) || options.valueBytes < 0) return 'valueBytes must be a non-negative integer';
  if (!(options.warmupMs >= 0)) return 'warmupMs must be ≥ 0';
  return null;
}

/** The channel opener for the run's API; the etcd client is loaded only for a run that needs it. */
async function channelsFor(options: LoadOptions): Promise<OpenChannels> {
  const api = options.api ?? 'memcached';
  switch (api) {
    case 'memcached':
      return memcachedChannels(options);
    case 'etcd':
      return (await import('./etcd-load.ts')).etcdChannels(options);
    default: {
      const unreachable: never = api;
      return unreachable;
    }
  }
}

async function preload(options: LoadOptions, ports: number[], open: OpenChannels): Promise<{ preloadMs: number; preloadErrors: number }> {
  const startedMs = performance.now();
  let nextKey = 0;
  let stored = 0;
  let preloadErrors = 0;
  const next = (): Request | null => (nextKey < options.keyCount ? { kind: 'set', key: nextKey++ } : null);
  const sink: ReplySink = {
    reply: (_kind, outcome) => (outcome === 'stored' ? (stored += 1) : (preloadErrors += 1)),
    error: () => (preloadErrors += 1),
  };
  const connections = await open({
    ports, count: Math.min(PRELOAD_CONNECTIONS_MAX, options.connections), depth: PRELOAD_DEPTH, next, sink,
  });
  for (const connection of connections) connection.start();
  await within(Promise.all(connections.map((connection) => connection.idle())), options.preloadTimeoutMs ?? 60_000);
  for (const connection of connections) connection.close();
  const unanswered = Math.max(0, options.keyCount - stored - preloadErrors);
  return { preloadMs: performance.now() - startedMs, preloadErrors: preloadErrors + unanswered };
}

/** What the sink counts while measuring: the counters of a LoadResult plus the histogram. */
type Tally = Pick<LoadResult, 'ops' | 'gets' | 'sets' | 'hits' | 'misses' | 'errors' | 'errorSamples'> & {
  histogram: Histogram;
  byKind: { get: Histogram; set: Histogram };
};

function measuringSink(tally: Tally, window: { startMs: number; endMs: number }): ReplySink {
  const inWindow = (sentAtMs: number): boolean => sentAtMs >= window.startMs && sentAtMs < window.endMs;
  return {
    reply(kind, outcome, sentAtMs, receivedAtMs) {
      if (!inWindow(sentAtMs)) return;
      tally.ops += 1;
      const latencyNs = (receivedAtMs - sentAtMs) * 1e6;
      tally.histogram.record(latencyNs);
      tally.byKind[kind].record(latencyNs);
      if (kind === 'get') tally.gets += 1;
      else tally.sets += 1;
      if (outcome === 'hit') tally.hits += 1;
      if (outcome === 'miss') tally.misses += 1;
    },
    error(message, sentAtMs) {
      if (sentAtMs < window.startMs) return;
      tally.errors += 1;
      if (tally.errorSamples.length < ERROR_SAMPLES_MAX) tally.errorSamples.push(message);
    },
  };
}

function summarize(histogram: Histogram): LatencySummary {
  const toUs = (ns: number): number => Math.round(ns / 10) / 100;
  return {
    p50Us: toUs(histogram.percentile(50)),
    p99Us: toUs(histogram.percentile(99)),
    p999Us: toUs(histogram.percentile(99.9)),
    maxUs: toUs(histogram.max),
    meanUs: toUs(histogram.mean),
  };
}

/**
 * Runs one closed-loop load against 127.0.0.1 `ports` in this process: optional preload,
 * warm-up, measured window, drain. Rejects only if the options are invalid or a connection
 * cannot be opened; errors during the run are counted in the result.
 */
export async function runLoad(options: LoadOptions, onPhase: (phase: LoadPhase) => void = () => {}): Promise<LoadResult> {
  const invalid = validateOptions(options);
  if (invalid !== null) throw new Error(`invalid load options: ${invalid}`);
  const cpuBefore = process.cpuUsage();
  const open = await channelsFor(options);
  const preloaded = { preloadMs: 0, preloadErrors: 0 };
  if (options.preload) {
    for (const ports of options.preloadEachPort === true ? options.ports.map((port) => [port]) : [options.ports]) {
      const one = await preload(options, ports, open);
      preloaded.preloadMs += one.preloadMs;
      preloaded.preloadErrors += one.preloadErrors;
    }
  }
  const tally: Tally = {
    histogram: new Histogram(), byKind: { get: new Histogram(), set: new Histogram() },
    ops: 0, gets: 0, sets: 0, hits: 0, misses: 0, errors: 0, errorSamples: [],
  };
  // Set once the channels are open, before any request is sent: opening them is not measured.
  const window = { startMs: Number.POSITIVE_INFINITY, endMs: Number.POSITIVE_INFINITY };
  const random = mulberry32(options.seed);
  let stopping = false;
  const next = (): Request | null => {
    if (stopping) return null;
    const key = Math.floor(random() * options.keyCount);
    return { kind: random() < options.getFraction ? 'get' : 'set', key };
  };
  const sink = measuringSink(tally, window);
  const connections = await open({ ports: options.ports, count: options.connections, depth: options.pipelineDepth, next, sink });
  window.startMs = performance.now() + options.warmupMs;
  window.endMs = window.startMs + options.durationMs;
  for (const connection of connections) connection.start();
  await sleep(options.warmupMs);
  onPhase('measuring');
  await sleep(Math.max(0, window.endMs - performance.now()));
  stopping = true;
  onPhase('draining');
  const measuredMs = performance.now() - window.startMs;
  await within(Promise.all(connections.map((connection) => connection.idle())), options.drainTimeoutMs ?? 5000);
  const lostInDrain = connections.reduce((sum, connection) => sum + connection.outstanding, 0);
  for (const connection of connections) connection.close();
  const cpu = process.cpuUsage(cpuBefore);
  return {
    ops: tally.ops,
    opsPerSecond: tally.ops / (options.durationMs / 1000),
    measuredMs,
    gets: tally.gets,
    sets: tally.sets,
    hits: tally.hits,
    misses: tally.misses,
    errors: tally.errors + lostInDrain,
    errorSamples: lostInDrain > 0 ? [...tally.errorSamples, `${lostInDrain} requests unanswered after the drain timeout`] : tally.errorSamples,
    latency: summarize(tally.histogram),
    latencyByKind: {
      get: tally.byKind.get.count > 0 ? summarize(tally.byKind.get) : null,
      set: tally.byKind.set.count > 0 ? summarize(tally.byKind.set) : null,
    },
    histogram: tally.histogram.snapshot(),
    preloadMs: preloaded.preloadMs,
    preloadErrors: preloaded.preloadErrors,
    loadgenCpuMs: (cpu.user + cpu.system) / 1000,
  };
}
