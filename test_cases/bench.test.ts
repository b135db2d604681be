/**
 * Smoke tests for the benchmark: the histogram's percentile math on known inputs, the reply
 * parsers, the report's paired ratios and goals, and a seconds-long load run against a real
 * memcached (in process and in the forked child, text and binary) that must measure real,
 * error-free operations with ordered percentiles. Behaviour only — never speed.
 */

import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freezeAllBut, parseBenchArgs } from '../bench/cli.ts';
import { bucketIndex, bucketRange, Histogram } from '../bench/histogram.ts';
import { LoadgenProcess, parseBinaryReply, parseTextReply, parseWorkload, runLoad, type LoadOptions, type LoadResult } from '../bench/loadgen.ts';
import { formatLatencyByKind, formatProcessCpu, formatTable, judgeGoals, median, renderChartSvg, summarize, type BenchReport, type CellSummary, type RunSample } from '../bench/report.ts';
import { contextSwitchesOf, cpuMsEach, cpuMsOf, findNutcracker, parseStatTicks, startMemcachedProcess, statFields, startTarget, type RunningTarget, type TargetStart } from '../bench/targets.ts';
import { eventually } from './support/fault-kit.ts';
import { itemAt } from '../src/runtime/item-at.ts';
import { lastLine, requestOnce } from './support/text-request.ts';

const logDir = mkdtempSync(path.join(os.tmpdir(), 'mckv-bench-test-'));
afterAll(() => rmSync(logDir, { recursive: true, force: true }));

describe('Histogram', () => {
  it('gives exact percentiles for small integers', () => {
    const histogram = new Histogram();
    for (let value = 1; value <= 100; value += 1) histogram.record(value);
    expect(histogram.count).toBe(100);
    expect(histogram.percentile(50)).toBe(50);
    expect(histogram.percentile(99)).toBe(99);
    expect(histogram.percentile(99.9)).toBe(100);
    expect(histogram.percentile(0)).toBe(1);
    expect(histogram.min).toBe(1);
    expect(histogram.max).toBe(100);
    expect(histogram.mean).toBe(50.5);
  });

  it('keeps large values within 1/128 relative error and percentiles ordered', () => {
    const histogram = new Histogram();
    for (let index = 0; index < 990; index += 1) histogram.record(200_000);
    for (let index = 0; index < 9; index += 1) histogram.record(5_000_000);
    histogram.record(80_000_000);
    const p50 = histogram.percentile(50);
    const p99 = histogram.percentile(99);
    const p999 = histogram.percentile(99.9);
    expect(Math.abs(p50 - 200_000) / 200_000).toBeLessThan(1 / 128);
    expect(Math.abs(p99 - 200_000) / 200_000).toBeLessThan(1 / 128);
    expect(Math.abs(p999 - 5_000_000) / 5_000_000).toBeLessThan(1 / 128);
    expect(histogram.percentile(100)).toBe(80_000_000);
    expect(p50).toBeLessThanOrEqual(p99);
    expect(p99).toBeLessThanOrEqual(p999);
  });

  it('maps every value into a bucket whose range holds it', () => {
    for (const value of [0, 1, 127, 128, 129, 255, 256, 1000, 4095, 4096, 123_456_789, 2 ** 39 + 12345]) {
      const { low, high } = bucketRange(bucketIndex(value));
      expect(low).toBeLessThanOrEqual(value);
      expect(high).toBeGreaterThanOrEqual(value);
      expect(high - low).toBeLessThanOrEqual(Math.max(0, low / 128));
    }
    expect(bucketIndex(128)).toBe(bucketIndex(127) + 1);
  });

  it('merges snapshots and is empty-safe', () => {
    const empty = new Histogram();
    expect(empty.percentile(99)).toBe(0);
    const left = new Histogram();
    const right = new Histogram();
    for (let value = 1; value <= 50; value += 1) left.record(value);
    for (let value = 51; value <= 100; value += 1) right.record(value);
    left.merge(right);
    const copy = Histogram.fromSnapshot(left.snapshot());
    expect(copy.count).toBe(100);
    expect(copy.percentile(50)).toBe(50);
    expect(copy.max).toBe(100);
    copy.mergeSnapshot({ buckets: [[-1, 5], [10, Number.NaN]], valueMin: 0, valueMax: 0, sum: 0 });
    expect(copy.count).toBe(100);
  });
});

describe('reply parsers', () => {
  it('parse text replies and wait for incomplete ones', () => {
    const hit = Buffer.from('VALUE k 0 3\r\nabc\r\nEND\r\nSTORED\r\nEND\r\nSERVER_ERROR out of memory\r\n');
    const first = parseTextReply(hit, 0);
    expect(first).toMatchObject({ kind: 'reply', outcome: 'hit', valueBytes: 3 });
    const second = parseTextReply(hit, first?.kind === 'reply' ? first.next : 0);
    expect(second).toMatchObject({ kind: 'reply', outcome: 'stored' });
    const third = parseTextReply(hit, second?.kind === 'reply' ? second.next : 0);
    expect(third).toMatchObject({ kind: 'reply', outcome: 'miss' });
    const fourth = parseTextReply(hit, third?.kind === 'reply' ? third.next : 0);
    expect(fourth).toMatchObject({ kind: 'reply', outcome: 'error', message: 'SERVER_ERROR out of memory' });
    const whole = Buffer.from('VALUE k 0 3\r\nabc\r\nEND\r\n');
    for (let cut = 0; cut < whole.length; cut += 1) expect(parseTextReply(whole.subarray(0, cut), 0)).toBeNull();
    expect(parseTextReply(Buffer.from('VALUE k 0 3\r\nabcdEND\r\n'), 0)).toMatchObject({ kind: 'fatal' });
  });

  it('parse binary responses', () => {
    const header = (opcode: number, status: number, bodyBytes: number, extrasBytes: number): Buffer => {
      const buffer = Buffer.alloc(24);
      buffer[0] = 0x81;
      buffer[1] = opcode;
      buffer[4] = extrasBytes;
      buffer.writeUInt16BE(status, 6);
      buffer.writeUInt32BE(bodyBytes, 8);
      return buffer;
    };
    const hit = Buffer.concat([header(0x00, 0, 4 + 5, 4), Buffer.alloc(4), Buffer.from('hello')]);
    expect(parseBinaryReply(hit, 0)).toMatchObject({ kind: 'reply', outcome: 'hit', valueBytes: 5, next: hit.length });
    expect(parseBinaryReply(hit.subarray(0, hit.length - 1), 0)).toBeNull();
    expect(parseBinaryReply(Buffer.concat([header(0x00, 1, 9, 0), Buffer.from('Not found')]), 0)).toMatchObject({ outcome: 'miss' });
    expect(parseBinaryReply(header(0x01, 0, 0, 0), 0)).toMatchObject({ outcome: 'stored' });
    expect(parseBinaryReply(header(0x01, 0x82, 0, 0), 0)).toMatchObject({ outcome: 'error' });
    expect(parseBinaryReply(Buffer.alloc(24, 0x45), 0)).toMatchObject({ kind: 'fatal' });
  });
});

describe('CPU accounting', () => {
  it('reads utime + stime past a command name with spaces and parentheses', () => {
    const line = '1234 (tsx (node) x) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 37 0 0 20 0 11 0 100 0 0';
    expect(parseStatTicks(line)).toBe(287);
    expect(parseStatTicks('garbage')).toBeNull();
    expect(cpuMsOf([process.pid])).toBeGreaterThan(0);
    expect(cpuMsOf([process.pid, 2 ** 30])).toBeNull();
  });

  it('counts the context switches of every thread of a process', async () => {
    const before = contextSwitchesOf([process.pid]);
    expect(before).not.toBeNull();
    for (let i = 0; i < 5; i += 1) await new Promise((resolve) => setTimeout(resolve, 2)); // each sleep is a switch
    expect(contextSwitchesOf([process.pid]) as number).toBeGreaterThanOrEqual((before as number) + 5);
    expect(contextSwitchesOf([process.pid, 2 ** 30])).toBeNull();
  });
});

function fakeResult(opsPerSecond: number, p99Us: number): LoadResult {
  return {
    ops: opsPerSecond,
    opsPerSecond,
    measuredMs: 1000,
    gets: opsPerSecond,
    sets: 0,
    hits: opsPerSecond,
    misses: 0,
    errors: 0,
    errorSamples: [],
    latency: { p50Us: p99Us / 2, p99Us, p999Us: p99Us * 2, maxUs: p99Us * 3, meanUs: p99Us / 2 },
    latencyByKind: { get: { p50Us: p99Us / 2, p99Us, p999Us: p99Us * 2, maxUs: p99Us * 3, meanUs: p99Us / 2 }, set: null },
    histogram: { buckets: [], valueMin: 0, valueMax: 0, sum: 0 },
    preloadMs: 0,
    preloadErrors: 0,
    loadgenCpuMs: 0,
  };
}

describe('report', () => {
  it('pairs each round with direct memcached and takes medians', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 2, 3])).toBe(2.5);
    expect(median([])).toBeNull();
    const sample = (round: number, target: RunSample['target'], ops: number, p99Us: number): RunSample => ({
      round,
      target,
      workload: 'mix-16x1',
      result: fakeResult(ops, p99Us),
      failure: null,
      targetCpuMs: 500,
      windowMs: 1000,
      loadgenCpuMs: 800,
      targetSwitches: ops / 4,
      // n1 led in rounds 1 and 3 and followed in round 2; its memcached reports no role.
      processCpu: [
        { label: 'n1', cpuMs: 400, role: round === 2 ? 'follower' : 'leader' },
        { label: 'memcached n1', cpuMs: round === 2 ? 10 : 100, role: null },
      ],
    });
    // Direct memcached drifts (noise); eventual stays at 0.7× of each round's direct.
    const samples = [
      sample(1, 'memcached', 100, 100),
      sample(1, 'eventual', 70, 150),
      sample(2, 'memcached', 50, 100),
      sample(2, 'eventual', 35, 300),
      sample(3, 'memcached', 200, 100),
      sample(3, 'eventual', 140, 150),
    ];
    const summary = summarize(samples);
    const eventual = summary.find((cell) => cell.target === 'eventual');
    expect(eventual?.ratio).toBeCloseTo(0.7, 10);
    expect(eventual?.p99Ratio).toBeCloseTo(1.5, 10);
    expect(eventual?.opsPerSecond).toBe(70);
    expect(eventual?.cpuCores).toBe(0.5);
    expect(eventual?.loadgenCpuCores).toBe(0.8);
    expect(eventual?.switchesPerOp).toBe(0.25);
    const table = formatTable(summary).split('\n');
    expect(table[0]).toMatch(/CPU µs\/op +switches\/op +loadgen cores/);
    expect(table.find((line) => line.includes('eventual'))).toMatch(/0\.25 +0\.80 +0 +0 +3$/);
    // Each kind of request's own latency: medians over rounds; none where the run had none.
    expect(eventual?.byKind.get.p99Us).toBe(150);
    expect(eventual?.byKind.set.p99Us).toBeNull();
    const byKind = formatLatencyByKind(summary).split('\n');
    expect(byKind[0]).toMatch(/get p50 µs +get p99 µs +set p50 µs +set p99 µs/);
    expect(byKind.find((line) => line.includes('eventual'))).toMatch(/75 +150 +— +—$/);
    // Each process's CPU per operation: 400 ms over 70, 35 and 140 ops (5714, 11429, 2857 µs), median 5714.3;
    // memcached 100, 10 and 100 ms (1428.6, 285.7, 714.3 µs), median 714.3. Roles in the order first seen.
    expect(eventual?.processes).toEqual([
      { label: 'n1', roles: ['leader', 'follower'], cpuUsPerOp: expect.closeTo(400_000 / 70, 6) },
      { label: 'memcached n1', roles: [], cpuUsPerOp: expect.closeTo(100_000 / 140, 6) },
    ]);
    const perProcess = formatProcessCpu(summary).split('\n');
    expect(perProcess[0]).toMatch(/workload +target +CPU µs\/op of each process/);
    expect(perProcess.find((line) => line.includes('eventual'))).toMatch(/n1 \(leader\/follower\) 5714\.3 · memcached n1 714\.3$/);
    expect(formatProcessCpu(summarize([{ ...sample(1, 'memcached', 100, 100), processCpu: null }]))).toBe('(no process CPU was measured)');
    const goals = judgeGoals(summary, ['memcached', 'eventual', 'sequential'], ['mix-16x1']);
    expect(goals.map((goal) => [goal.target, goal.status])).toEqual([
      ['eventual', 'met'],
      ['sequential', 'not measured'],
    ]);
    expect(itemAt(goals, 0).detail).toBe("ratio 0.700, p99 1.500× direct's");
    // Just short of a goal reads short of it, not as the goal rounded: 0.5996 is not 0.600.
    const short = summarize([sample(1, 'memcached', 10_000, 100), sample(1, 'eventual', 5_996, 200.1)]);
    const shortGoal = itemAt(judgeGoals(short, ['memcached', 'eventual'], ['mix-16x1']), 0);
    expect(shortGoal.status).toBe('not met');
    expect(shortGoal.detail).toBe("ratio 0.599, p99 2.001× direct's");
    const svg = renderChartSvg(summary, ['a <note> & more']);
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg).toContain('0.70');
    expect(svg).not.toContain('<note>');
  });

  it("judges a linearizable get's p50 against a sequential get's, and an ordered write's CPU", () => {
    const cell = (target: CellSummary['target'], workload: CellSummary['workload'], getP50Us: number | null, cpuUsPerOp: number | null): CellSummary => ({
      target, workload, rounds: 1, opsPerSecond: 1000, ratio: 0.5, p50Us: 100, p99Us: 200, p999Us: 300, p99Ratio: 2,
      byKind: { get: { p50Us: getP50Us, p99Us: null }, set: { p50Us: null, p99Us: null } },
      cpuCores: 1, cpuUsPerOp, switchesPerOp: 1, loadgenCpuCores: 0.5, processes: [], errors: 0, misses: 0, failures: 0,
    });
    const summary = [
      cell('linearizability', 'mix-16x1', 520, 90), cell('sequential', 'mix-16x1', 400, 80),
      cell('linearizability', 'set-16x1', null, 240), cell('sequential', 'set-16x1', null, 149.5),
    ];
    const verdicts = judgeGoals(summary, ['linearizability', 'sequential'], ['mix-16x1', 'set-16x1']).filter((goal) => !goal.goal.startsWith('ops/s'));
    expect(verdicts.map((goal) => [goal.target, goal.workload, goal.status, goal.detail])).toEqual([
      ['linearizability', 'mix-16x1', 'met', '520 µs against 400 µs, 1.300×'],
      ['sequential', 'set-16x1', 'met', '149.5 µs'],
      ['linearizability', 'set-16x1', 'not met', '240.0 µs'],
    ]);
    // Without the sequential run there is nothing to compare with: the goal does not apply.
    expect(judgeGoals(summary, ['linearizability'], ['mix-16x1']).map((goal) => goal.goal)).toEqual(['ops/s ≥ 0.35× direct (mix-16x1)']);
  });

  it('parses options, with --quick as a small run and bad values as messages', () => {
    const quick = parseBenchArgs(['--quick']);
    expect(quick.kind).toBe('run');
    if (quick.kind === 'run') {
      expect(quick.settings.rounds).toBe(1);
      expect(quick.settings.durationMs).toBe(1000);
      expect(quick.settings.workloads.map((workload) => workload.id)).toEqual(['mix-16x1']);
      expect(quick.settings.targets).toEqual(['memcached', 'twemproxy', 'node-pipe', 'eventual']);
    }
    expect(parseBenchArgs(['--targets', 'memcached,redis'])).toMatchObject({ kind: 'invalid' });
    expect(parseBenchArgs(['--rounds', '0'])).toMatchObject({ kind: 'invalid' });
    expect(parseBenchArgs(['--protocol', 'udp'])).toMatchObject({ kind: 'invalid' });
    expect(parseBenchArgs(['--wal-sync', 'never'])).toMatchObject({ kind: 'invalid', message: '--wal-sync must be fsync or write, not "never"' });
    expect(parseBenchArgs(['--cpu-scheduling', 'fifo'])).toMatchObject({ kind: 'invalid', message: '--cpu-scheduling must be batch or normal, not "fifo"' });
    expect(parseBenchArgs(['--cpu-scheduling', 'normal'])).toMatchObject({ kind: 'run', settings: { cpuScheduling: 'normal', walSync: 'write', protocol: 'text' } });
    expect(parseBenchArgs(['--bogus'])).toMatchObject({ kind: 'invalid' });
    expect(parseBenchArgs([])).toMatchObject({ kind: 'run', settings: { idleTargets: 'frozen' } });
    expect(parseBenchArgs(['--idle-targets', 'running'])).toMatchObject({ kind: 'run', settings: { idleTargets: 'running' } });
    expect(parseBenchArgs(['--idle-targets', 'paused'])).toMatchObject({ kind: 'invalid', message: '--idle-targets must be frozen or running, not "paused"' });
  });

  it('takes workloads by name or as GETS:SETS-CONNECTIONSxPIPELINE, within limits', () => {
    const parsed = parseBenchArgs(['--workloads', '1:1-32x4,0:1-2x8,1:0-1x1,set-16x1,9:1-16x1,1:1-32x4']);
    expect(parsed.kind).toBe('run');
    const workloads = parsed.kind === 'run' ? parsed.settings.workloads : [];
    // In the order given, each once; a spec equal to a standard workload is that workload (its goals apply).
    expect(workloads.map((workload) => workload.id)).toEqual(['1:1-32x4', '0:1-2x8', '1:0-1x1', 'set-16x1', 'mix-16x1']);
    expect(workloads[0]).toEqual({ id: '1:1-32x4', label: '1:1 get:set, 32 conns × pipeline 4', connections: 32, pipelineDepth: 4, getFraction: 0.5 });
    expect(workloads[1]).toMatchObject({ label: 'sets only, 2 conns × pipeline 8', getFraction: 0 });
    expect(workloads[2]).toMatchObject({ label: 'gets only, 1 conns × pipeline 1', getFraction: 1 });
    expect(parseWorkload('3:1-8x2')?.getFraction).toBe(0.75);
    for (const bad of ['0:0-4x1', '1:1-0x1', '1:1-4x0', '1:1-1025x1', '1:1-4x1025', '1001:1-4x1', '1:1-4', 'mix-8x1', '-1:1-4x1', '1.5:1-4x1']) {
      expect(parseWorkload(bad), bad).toBeNull();
    }
    const refused = parseBenchArgs(['--workloads', 'mix-16x1,1:1-2000x1']);
    expect(refused.kind).toBe('invalid');
    expect(refused.kind === 'invalid' && refused.message).toMatch(/^unknown workload "1:1-2000x1" \(expected mix-4x1, .* GETS:SETS-CONNECTIONSxPIPELINE.*at most 1024 connections/);
    // A report of custom workloads keeps their order and labels them in the chart.
    const sample = (workload: string, target: RunSample['target'], ops: number): RunSample => ({ round: 1, target, workload, result: fakeResult(ops, 100), failure: null, targetCpuMs: 0, windowMs: 0, loadgenCpuMs: 0, targetSwitches: null, processCpu: null });
    const summary = summarize([sample('1:1-32x4', 'memcached', 100), sample('1:1-32x4', 'eventual', 50), sample('0:1-2x8', 'memcached', 10)]);
    expect(summary.map((cell) => [cell.workload, cell.target, cell.ratio])).toEqual([['1:1-32x4', 'memcached', 1], ['1:1-32x4', 'eventual', 0.5], ['0:1-2x8', 'memcached', 1]]);
    expect(renderChartSvg(summary, [])).toContain('1:1 get:set, 32 conns × pipeline 4');
  });
});

function expectRealMeasurement(result: LoadResult, options: LoadOptions): void {
  expect(result.errors, result.errorSamples.join('; ')).toBe(0);
  expect(result.preloadErrors).toBe(0);
  expect(result.ops).toBeGreaterThan(0);
  expect(result.gets + result.sets).toBe(result.ops);
  expect(result.hits + result.misses).toBe(result.gets);
  expect(result.misses).toBe(0); // every key was preloaded into this one memcached
  if (options.getFraction < 1) expect(result.sets).toBeGreaterThan(0);
  expect(Histogram.fromSnapshot(result.histogram).count).toBe(result.ops);
  expect(result.latency.p50Us).toBeGreaterThan(0);
  expect(result.latency.p50Us).toBeLessThanOrEqual(result.latency.p99Us);
  expect(result.latency.p99Us).toBeLessThanOrEqual(result.latency.p999Us);
  expect(result.latency.p999Us).toBeLessThanOrEqual(result.latency.maxUs);
  for (const [kind, count] of [['get', result.gets], ['set', result.sets]] as const) {
    const latency = result.latencyByKind[kind];
    if (count === 0) expect(latency, kind).toBeNull();
    else expect(latency !== null && latency.p50Us > 0 && latency.p50Us <= latency.p99Us && latency.p99Us <= latency.maxUs, kind).toBe(true);
  }
}

describe('load generator against a real memcached', () => {
  let memcached: Awaited<ReturnType<typeof startMemcachedProcess>>;
  let options: LoadOptions;

  beforeAll(async () => {
    memcached = await startMemcachedProcess(path.join(logDir, 'memcached.log'));
    options = {
      ports: [memcached.port],
      protocol: 'text',
      connections: 4,
      pipelineDepth: 4,
      getFraction: 0.9,
      keyCount: 1000,
      valueBytes: 100,
      durationMs: 500,
      warmupMs: 100,
      preload: true,
      seed: 7,
    };
  });

  afterAll(async () => {
    if (memcached?.child.exitCode === null) {
      const exited = new Promise((resolve) => memcached.child.once('exit', resolve));
      memcached.child.kill('SIGTERM');
      await exited;
    }
  });

  it('measures real text-protocol operations in process', async () => {
    const phases: string[] = [];
    const result = await runLoad(options, (phase) => phases.push(phase));
    expect(phases).toEqual(['measuring', 'draining']);
    expectRealMeasurement(result, options);
  });

  it('measures real binary-protocol operations from the forked child, over two ports', async () => {
    const loadgen = await LoadgenProcess.start();
    try {
      expect(loadgen.pid).not.toBe(process.pid);
      const binary = { ...options, protocol: 'binary' as const, ports: [memcached.port, memcached.port], pipelineDepth: 1 };
      expectRealMeasurement(await loadgen.run(binary), binary);
    } finally {
      await loadgen.stop();
    }
  });

  it('counts error replies as errors', async () => {
    const server = net.createServer((socket) => socket.on('data', (chunk) => socket.write('SERVER_ERROR busy\r\n'.repeat(chunk.toString('latin1').split('\r\n').length - 1))));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as net.AddressInfo;
    try {
      const result = await runLoad({ ...options, ports: [port], getFraction: 1, preload: false, durationMs: 200 });
      expect(result.errors).toBeGreaterThan(0);
      expect(result.ops).toBe(0);
      expect(result.errorSamples[0]).toContain('SERVER_ERROR busy');
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

/** Runs `check` on a target that must have started, then stops it: every process it started must be gone. */
async function whileStarted(started: TargetStart, check: (target: RunningTarget) => Promise<void>): Promise<void> {
  expect(started.kind, started.kind === 'started' ? '' : started.reason).toBe('started');
  const target = (started as { target: RunningTarget }).target;
  try {
    await check(target);
  } finally {
    await target.stop();
  }
  expect(target.processes().every(({ pid }) => cpuMsOf([pid]) === null)).toBe(true);
}

describe('targets not being measured', () => {
  it('are frozen while another runs, and resumed for their own run', async () => {
    const started = await Promise.all([1, 2].map((i) => startMemcachedProcess(path.join(logDir, `memcached-freeze${i}.log`))));
    const targets = started.map(({ child, port }, i): RunningTarget => ({
      name: i === 0 ? 'memcached' : 'twemproxy',
      ports: [port],
      processes: () => [{ label: 'memcached', pid: child.pid as number }],
      stop: async () => undefined,
    }));
    const state = (i: number): string | undefined => statFields(readFileSync(`/proc/${started[i]?.child.pid}/stat`, 'latin1'))?.[0];
    const [first, second] = [itemAt(targets, 0), itemAt(targets, 1)];
    try {
      freezeAllBut(targets, first);
      expect((await eventually(async () => state(1), (seen) => seen === 'T', { timeoutMs: 2000 })).value).toBe('T');
      expect(state(0)).not.toBe('T');
      freezeAllBut(targets, second);
      expect((await eventually(async () => state(0), (seen) => seen === 'T', { timeoutMs: 2000 })).value).toBe('T');
      expect(state(1)).not.toBe('T');
      // The resumed one answers again.
      const reply = await new Promise<string>((resolve, reject) => {
        const socket = net.connect({ host: '127.0.0.1', port: itemAt(itemAt(targets, 1).ports, 0) }, () => socket.write('version\r\n'));
        socket.setTimeout(2000, () => reject(new Error('no answer from the resumed memcached')));
        socket.once('data', (chunk) => {
          socket.destroy();
          resolve(chunk.toString());
        });
        socket.once('error', reject);
      });
      expect(reply).toMatch(/^VERSION /);
    } finally {
      for (const { child } of started) {
        child.kill('SIGCONT');
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        await exited;
      }
    }
  });
});

describe('twemproxy target', () => {
  it('runs load through nutcracker, or says how to install it', async () => {
    const started = await startTarget('twemproxy', { dir: logDir, protocol: 'text', heartbeatIntervalMs: 100, failureTimeoutMs: 1000 });
    if (findNutcracker() === null) {
      expect(started).toMatchObject({ kind: 'skipped' });
      expect(started.kind === 'skipped' && started.reason).toContain('apt-get install nutcracker');
      return;
    }
    await whileStarted(started, async (target) => {
      expect(target.processes().map(({ label }) => label)).toEqual(['nutcracker', 'memcached']);
      const options: LoadOptions = { ports: target.ports, protocol: 'text', connections: 2, pipelineDepth: 2, getFraction: 0.9, keyCount: 500, valueBytes: 100, durationMs: 300, warmupMs: 50, preload: true, seed: 3 };
      expectRealMeasurement(await runLoad(options), options);
    });
  });
});

describe('Node byte pipe target', () => {
  it('relays real memcached traffic through three processes, each to its own memcached, all preloaded', async () => {
    const started = await startTarget('node-pipe', { dir: logDir, protocol: 'text', heartbeatIntervalMs: 100, failureTimeoutMs: 1000 });
    await whileStarted(started, async (target) => {
      expect(target.ports).toHaveLength(3);
      expect(target.processes().map(({ label }) => label)).toEqual(['memcached 1', 'pipe 1', 'memcached 2', 'pipe 2', 'memcached 3', 'pipe 3']);
      expect(target.separateStores).toBe(true);
      const options: LoadOptions = { ports: target.ports, protocol: 'binary', connections: 3, pipelineDepth: 2, getFraction: 1, keyCount: 300, valueBytes: 100, durationMs: 300, warmupMs: 50, preload: true, preloadEachPort: true, seed: 5 };
      // No get misses (checked there): every key was preloaded into each of the three stores.
      expectRealMeasurement(await runLoad(options), options);
    });
  });
});

describe('Node ordered pipe target', () => {
  it('orders sets through a leader: one taken at any of the three is read back at all three', async () => {
    const started = await startTarget('ordered-pipe', { dir: logDir, protocol: 'text', heartbeatIntervalMs: 100, failureTimeoutMs: 1000 });
    await whileStarted(started, async (target) => {
      expect(target.processes().map(({ label }) => label)).toEqual(['memcached 1', 'pipe 1 (leader)', 'memcached 2', 'pipe 2', 'memcached 3', 'pipe 3']);
      for (const [n, port] of target.ports.entries()) expect(await lastLine(port, `set k${n} 0 0 2\r\nv${n}\r\n`, 'set')).toBe('STORED');
      // The follower that did not take a set hears of it within 8 ms (the appends it need not have yet wait).
      for (const port of target.ports) {
        const { value: read } = await eventually(
          async () => (await requestOnce(port, 'get k0 k1 k2\r\n', 'get')).values,
          (values) => values.length === 3,
          { timeoutMs: 2000, intervalMs: 10 },
        );
        expect(read).toEqual(['k0=v0', 'k1=v1', 'k2=v2']);
      }
      const options: LoadOptions = { ports: target.ports, protocol: 'text', connections: 3, pipelineDepth: 2, getFraction: 0.9, keyCount: 300, valueBytes: 100, durationMs: 300, warmupMs: 50, preload: true, seed: 7 };
      expectRealMeasurement(await runLoad(options), options);
    });
    // The binary protocol is declined rather than garbled.
    const binary = await startTarget('ordered-pipe', { dir: logDir, protocol: 'binary', heartbeatIntervalMs: 100, failureTimeoutMs: 1000 });
    expect(binary).toMatchObject({ kind: 'skipped' });
  });
});

describe('mckv cluster target', () => {
  it('names each controller and memcached, and reports which controller leads', async () => {
    const started = await startTarget('sequential', { dir: logDir, protocol: 'text', heartbeatIntervalMs: 50, failureTimeoutMs: 500 });
    await whileStarted(started, async (target) => {
      const processes = target.processes();
      expect(processes.map(({ label }) => label)).toEqual(['n1', 'memcached n1', 'n2', 'memcached n2', 'n3', 'memcached n3']);
      // Per process, then summed: the same CPU either way (each read of /proc is in whole ticks).
      const each = cpuMsEach(processes.map(({ pid }) => pid));
      expect(each).toHaveLength(6);
      expect(each?.every((cpuMs) => cpuMs >= 0)).toBe(true);
      // The cluster answers once it has elected a leader; roles are read through each controller's stats.
      const { value: roles } = await eventually(
        async () => (await target.roles?.()) ?? new Map<string, string>(),
        (seen) => [...seen.values()].includes('leader'),
        { timeoutMs: 5000, intervalMs: 100 },
      );
      expect([...roles.keys()].sort()).toEqual(['n1', 'n2', 'n3']);
      expect([...roles.values()].sort()).toEqual(['follower', 'follower', 'leader']);
    });
  });
});

describe('npm run bench, end to end', () => {
  it('measures direct memcached and a sequential cluster from the command line, and writes its report', async () => {
    const out = path.join(logDir, 'smoke-report');
    const args = ['--import', 'tsx', path.join('bench', 'cli.ts'), '--rounds', '1', '--duration-s', '0.5', '--warmup-s', '0', '--keys', '200', '--targets', 'memcached,sequential', '--workloads', '1:1-2x1', '--out', out];
    const child = spawn(process.execPath, args, { cwd: path.join(import.meta.dirname, '..'), stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const code = await new Promise<number | null>((resolve) => {
      const timer = setTimeout(() => child.kill('SIGKILL'), 90_000);
      child.once('exit', (exitCode) => {
        clearTimeout(timer);
        resolve(exitCode);
      });
    });
    expect(code, output).toBe(0);
    const report = JSON.parse(readFileSync(path.join(out, 'results.json'), 'utf8')) as BenchReport;
    expect(report.samples.map((sample) => [sample.target, sample.workload])).toEqual([['memcached', '1:1-2x1'], ['sequential', '1:1-2x1']]);
    for (const sample of report.samples) {
      expect(sample.failure).toBeNull();
      expect(sample.result?.ops).toBeGreaterThan(0);
      expect(sample.result?.errors).toBe(0);
      expect(sample.result?.sets).toBeGreaterThan(0);
    }
    // Each process's CPU, the controllers with the role each had: one led.
    const cluster = itemAt(report.samples, 1).processCpu ?? [];
    expect(cluster.map(({ label }) => label)).toEqual(['n1', 'memcached n1', 'n2', 'memcached n2', 'n3', 'memcached n3']);
    expect(cluster.filter(({ role }) => role === 'leader')).toHaveLength(1);
    expect(report.summary.find((cell) => cell.target === 'sequential')?.ratio).toBeGreaterThan(0);
    expect(readFileSync(path.join(out, 'chart.svg'), 'utf8')).toMatch(/^<svg[\s\S]*1:1 get:set, 2 conns × pipeline 1[\s\S]*<\/svg>\n?$/);
    expect(readFileSync(path.join(out, 'summary.txt'), 'utf8')).toContain('CPU µs/op of each process');
    // Everything it started is stopped: no process of the run's report folder is left.
    expect(output).toMatch(/pids (\d+ \(memcached\))/);
    const pids = [...output.matchAll(/(\d+) \((?:memcached|n\d|memcached n\d)\)/g)].map((match) => Number(match[1]));
    expect(pids.length).toBe(7);
    expect(pids.every((pid) => cpuMsOf([pid]) === null)).toBe(true);
  }, 120_000);
});
