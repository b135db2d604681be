/**
 * The fault runner, end to end on real processes: it must catch the deliberately broken cluster
 * (no replication: a read through one controller cannot see a write through another), pass a
 * real mode under kills, and leave a readable report. Plus the pure parts: the seeded fault
 * schedule, the reply classification and the SVG.
 */

import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseHistory } from '../src/check/history.ts';
import { TextClient } from '../src/client/text-client.ts';
import { BackendFiller } from '../src/jepsen/backend-fill.ts';
import { describeFault, parseNemesisKinds, planNemesis } from '../src/jepsen/nemesis.ts';
import { formatVerdict, renderTimeline, summarizeFaults, summarizeRefusals, type RunSummary } from '../src/jepsen/report.ts';
import { runJepsen } from '../src/jepsen/runner.ts';
import { classifyServerError, createRandom, type CallRecord } from '../src/jepsen/workload.ts';
import { startMemcached } from './support/memcached.ts';
import { lastLine } from './support/text-request.ts';
import { itemAt } from '../src/runtime/item-at.ts';

const scratch = mkdtempSync(path.join(os.tmpdir(), 'mckv-jepsen-test-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe('the backend-fill fault', () => {
  it('fills a memcached until it refuses writes of every small size, and deleting what it wrote gives the room back', async () => {
    const server = await startMemcached({ memoryMb: 16 });
    try {
      // Items like mckv's own: their size classes now have a page, with free chunks left.
      const sizes = [60, 5000, 100_000];
      for (const bytes of sizes) expect(await lastLine(server.port, `set mine${bytes} 0 0 ${bytes}\r\n${'m'.repeat(bytes)}\r\n`, 'set')).toBe('STORED');
      const filler = new BackendFiller({ port: server.port, tag: 'n1' });
      const written = await filler.fill();
      expect(written).toBeGreaterThan(0);
      expect(filler.items).toBe(written);
      // memcached has room for no more items of those sizes.
      for (const bytes of sizes) {
        expect(await lastLine(server.port, `set probe 0 0 ${bytes}\r\n${'p'.repeat(bytes)}\r\n`, 'set'), `${bytes} bytes`).toBe('SERVER_ERROR out of memory storing object');
      }
      await filler.empty();
      expect(filler.items).toBe(0);
      for (const bytes of sizes) {
        expect(await lastLine(server.port, `set probe 0 0 ${bytes}\r\n${'p'.repeat(bytes)}\r\n`, 'set'), `${bytes} bytes`).toBe('STORED');
      }
      const client = await TextClient.connect('127.0.0.1', server.port);
      try {
        const stats = await client.request('stats\r\n', 'stats');
        expect(stats.lines).toContain(`STAT curr_items ${sizes.length + 1}`); // ours and the probe: the filler's all gone
      } finally {
        client.close();
      }
    } finally {
      await server.stop();
    }
  }, 60_000);
});

describe('runJepsen on real clusters', () => {
  it('finds the violation in a cluster that does not replicate', async () => {
    const result = await runJepsen({
      mode: 'linearizability', replication: false, backend: 'memory', nemesis: [],
      timeMs: 3000, clients: 6, keys: 2, seed: 1, reportDir: path.join(scratch, 'broken'), checkTimeoutMs: 10_000,
    });
    expect(result.check.verdict).toBe('violation');
    expect(result.exitCode).toBe(1);
    expect(result.check.detail).toMatch(/not linearizable/);
    expect(readFileSync(path.join(result.reportDir, 'verdict.txt'), 'utf8')).toMatch(/^FAIL/);
  }, 40_000);

  const killDir = path.join(scratch, 'kill');

  it('passes linearizability while a controller is killed and restarted', async () => {
    const result = await runJepsen({
      mode: 'linearizability', backend: 'memcache', nemesis: ['kill'], timeMs: 6000, clients: 6, keys: 3, seed: 7,
      faultMs: 2000, healMs: 1500, reportDir: killDir, checkTimeoutMs: 15_000,
    });
    expect(result.check.detail ?? '').not.toMatch(/not linearizable/);
    expect(result.exitCode).toBe(0);
    expect(result.summary.faults.length).toBeGreaterThanOrEqual(1);
    expect(result.summary.faults.every((fault) => fault.kind === 'kill')).toBe(true);
    expect(result.summary.counts.ok).toBeGreaterThan(100);
  }, 60_000);

  it('leaves history, verdicts, a timeline with the fault windows and the processes\' logs', () => {
    for (const file of ['history.jsonl', 'verdict.txt', 'verdict.json', 'timeline.svg']) {
      expect(existsSync(path.join(killDir, file)), file).toBe(true);
    }

    const history = readFileSync(path.join(killDir, 'history.jsonl'), 'utf8');
    expect(history).toMatch(/"f":"nemesis"/);
    expect(parseHistory(history).ok).toBe(true);
    const verdict = JSON.parse(readFileSync(path.join(killDir, 'verdict.json'), 'utf8')) as RunSummary;
    // The controllers' logs: each kill shows as one more "controller started" line (the restart).
    const starts = ['n1', 'n2', 'n3'].map((node) => readFileSync(path.join(killDir, 'logs', `${node}.log`), 'utf8').split('\n').filter((line) => line.includes('"message":"controller started"')).length);
    expect(starts.reduce((sum, count) => sum + count, 0)).toBe(3 + verdict.faults.length);
    expect(verdict.counts.total).toBe(verdict.counts.ok + verdict.counts.fail + verdict.counts.info);
    expect(verdict.latency.ok.p50Ms).toBeLessThanOrEqual(verdict.latency.ok.p99Ms);
    const svg = readFileSync(path.join(killDir, 'timeline.svg'), 'utf8');
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg.trim().endsWith('</svg>')).toBe(true);
    expect(svg.match(/<rect class="fault"/g)?.length).toBe(verdict.faults.length);
    expect(svg).toMatch(/kill n\d/);
    expect(svg).not.toMatch(/<script/);
  });
});

describe('the nemesis schedule', () => {
  const options = { kinds: ['kill', 'pause', 'partition'] as const, nodes: ['n1', 'n2', 'n3'], timeMs: 30_000, seed: 42 };

  it('is the same for the same seed and differs for another', () => {
    expect(planNemesis(options)).toEqual(planNemesis(options));
    expect(planNemesis({ ...options, seed: 43 })).not.toEqual(planNemesis(options));
  });

  it('starts healed, never overlaps faults and ends before the run does', () => {
    const plans = planNemesis(options);
    expect(plans.length).toBeGreaterThanOrEqual(3);
    expect(itemAt(plans, 0).startMs).toBeGreaterThan(0);
    for (let index = 1; index < plans.length; index++) expect(itemAt(plans, index).startMs).toBeGreaterThan(itemAt(plans, index - 1).endMs);
    expect(itemAt(plans, plans.length - 1).endMs).toBeLessThan(options.timeMs);
    for (const plan of plans) expect(options.kinds).toContain(plan.kind);
  });

  it('injects every kind in each round of as many windows as kinds', () => {
    const kinds = ['kill', 'pause', 'partition', 'backend-restart'] as const;
    for (let seed = 1; seed <= 20; seed++) {
      const plans = planNemesis({ kinds, nodes: ['n1', 'n2', 'n3'], timeMs: 9000, faultMs: 1000, healMs: 700, seed });
      expect(plans.length, `seed ${seed}`).toBeGreaterThanOrEqual(kinds.length);
      expect(new Set(plans.slice(0, kinds.length).map((plan) => plan.kind)).size, `seed ${seed}`).toBe(kinds.length);
    }
  });

  it('cuts a node off, one link one way, or two nodes apart with the third reaching both', () => {
    const plans = planNemesis({ kinds: ['partition'], nodes: ['n1', 'n2', 'n3'], timeMs: 100_000, faultMs: 1000, healMs: 700, seed: 3 });
    const variants = new Set(plans.map((plan) => plan.variant));
    expect(variants).toEqual(new Set(['isolate', 'one-way', 'bridge']));
    for (const plan of plans) expect(plan.nodes).toHaveLength(plan.variant === 'isolate' ? 1 : 2);
    expect(describeFault({ kind: 'partition', variant: 'bridge', nodes: ['n1', 'n3'] })).toBe('cut n1↔n3');
    expect(describeFault({ kind: 'partition', variant: 'one-way', nodes: ['n1', 'n3'] })).toBe('cut n1→n3');
  });

  it('kills every controller at once in a kill-all, one memcached in a backend-kill, and says so', () => {
    const plans = planNemesis({ kinds: ['kill-all', 'kill'], nodes: ['n1', 'n2', 'n3'], timeMs: 30_000, faultMs: 1000, healMs: 700, seed: 6 });
    const killAlls = plans.filter((plan) => plan.kind === 'kill-all');
    expect(killAlls.length).toBeGreaterThan(0);
    for (const plan of killAlls) expect(plan.nodes).toEqual(['n1', 'n2', 'n3']);
    for (const plan of plans.filter((each) => each.kind === 'kill')) expect(plan.nodes).toHaveLength(1);
    expect(describeFault({ kind: 'kill-all', variant: null, nodes: ['n1', 'n2', 'n3'] })).toBe('kill every controller');
    const downs = planNemesis({ kinds: ['backend-kill'], nodes: ['n1', 'n2', 'n3'], timeMs: 30_000, faultMs: 1000, healMs: 700, seed: 6 });
    expect(downs.length).toBeGreaterThan(0);
    for (const plan of downs) expect(plan.nodes).toHaveLength(1);
    expect(describeFault({ kind: 'backend-kill', variant: null, nodes: ['n2'] })).toBe('kill memcached n2');
  });

  it('slows one node by 10 ms to 1.3 s, and says so', () => {
    const plans = planNemesis({ kinds: ['slow'], nodes: ['n1', 'n2', 'n3'], timeMs: 100_000, faultMs: 1000, healMs: 700, seed: 5 });
    const delays = plans.map((plan) => plan.delayMs ?? 0);
    expect(delays.every((delay) => delay >= 10 && delay <= 1280)).toBe(true);
    expect(delays.some((delay) => delay < 40) && delays.some((delay) => delay > 500)).toBe(true);
    for (const plan of plans) expect(plan.nodes).toHaveLength(1);
    expect(describeFault({ kind: 'slow', variant: null, nodes: ['n2'], delayMs: 160 })).toBe('slow n2 by 160 ms');
  });

  it('stalls the whole machine again and again, 0.2–1 s each, filling the window', () => {
    const plans = planNemesis({ kinds: ['stall'], nodes: ['n1', 'n2', 'n3'], timeMs: 60_000, faultMs: 3000, healMs: 700, seed: 9 });
    expect(plans.length).toBeGreaterThan(5);
    for (const plan of plans) {
      expect(plan.nodes).toEqual(['n1', 'n2', 'n3']);
      const stalls = plan.stalls ?? [];
      expect(stalls.length).toBeGreaterThanOrEqual(1);
      for (const stall of stalls) {
        expect(stall.stopMs).toBeGreaterThanOrEqual(200);
        expect(stall.stopMs).toBeLessThanOrEqual(1000);
        expect(stall.runMs).toBeGreaterThanOrEqual(300);
      }
      expect(stalls.reduce((sum, stall) => sum + stall.stopMs + stall.runMs, 0)).toBeLessThanOrEqual(plan.endMs - plan.startMs + 2000);
    }
    expect(plans.some((plan) => (plan.stalls ?? []).length > 1)).toBe(true);
    expect(describeFault({ kind: 'stall', variant: null, nodes: ['n1'], stalls: [{ stopMs: 300, runMs: 500 }, { stopMs: 700, runMs: 400 }] })).toBe('stall the machine 2× (300, 700 ms)');
  });

  it('stalls the disk of one controller, or of every one: each fsync waits 0.5–2 s, and says so', () => {
    const nodes = ['n1', 'n2', 'n3'];
    const plans = planNemesis({ kinds: ['disk-stall'], nodes, timeMs: 100_000, faultMs: 1000, healMs: 700, seed: 11 });
    expect(plans.length).toBeGreaterThan(30);
    const delays = plans.map((plan) => plan.delayMs ?? 0);
    expect(delays.every((delay) => delay >= 500 && delay <= 2000)).toBe(true);
    expect(delays.some((delay) => delay < 800) && delays.some((delay) => delay > 1700)).toBe(true);
    expect(new Set(plans.map((plan) => plan.nodes.length))).toEqual(new Set([1, 3]));
    expect(describeFault({ kind: 'disk-stall', variant: null, nodes: ['n2'], delayMs: 1200 })).toBe('stall the disk of n2: each fsync waits 1200 ms');
  });

  it('steps every clock by 1 s to 68 min, each node both ways within two windows, and says so', () => {
    const nodes = ['n1', 'n2', 'n3'];
    const plans = planNemesis({ kinds: ['clock', 'kill'], nodes, timeMs: 200_000, faultMs: 1000, healMs: 700, seed: 9 }).filter((plan) => plan.kind === 'clock');
    expect(plans.length).toBeGreaterThan(30);
    for (const plan of plans) expect(plan.nodes).toEqual(nodes);
    const steps = plans.flatMap((plan) => plan.stepsSeconds ?? []);
    expect(steps).toHaveLength(plans.length * nodes.length);
    expect(steps.every((step) => Math.abs(step) >= 1 && Math.abs(step) <= 4096)).toBe(true);
    expect(steps.some((step) => Math.abs(step) > 600) && steps.some((step) => Math.abs(step) < 10)).toBe(true);
    for (let index = 1; index < plans.length; index++) {
      const previous = itemAt(plans, index - 1).stepsSeconds;
      const current = itemAt(plans, index).stepsSeconds;
      nodes.forEach((node, at) => expect(Math.sign(current?.[at] ?? 0), node).toBe(-Math.sign(previous?.[at] ?? 0)));
    }
    expect(describeFault({ kind: 'clock', variant: null, nodes: ['n1', 'n2'], stepsSeconds: [8, -120] })).toBe('clock n1 +8 s, n2 -120 s');
  });

  it('plans nothing for no kinds and rejects unknown ones', () => {
    expect(planNemesis({ ...options, kinds: [] })).toEqual([]);
    expect(parseNemesisKinds('none')).toEqual({ ok: true, kinds: [] });
    expect(parseNemesisKinds('kill,flood')).toMatchObject({ ok: false, error: expect.stringMatching(/flood/) });
  });
});

describe('recording replies', () => {
  it('fails only explicit refusals of writes and treats timeouts as indeterminate', () => {
    expect(classifyServerError('no quorum: no leader reachable', false)).toBe('fail');
    expect(classifyServerError('not caught up: replica is rebuilding (write refused)', false)).toBe('fail');
    expect(classifyServerError('timeout: write outcome unknown, no quorum answered in time', false)).toBe('info');
    expect(classifyServerError('shutting down', false)).toBe('info');
    expect(classifyServerError('timeout: read', true)).toBe('fail');
  });

  it('draws a seeded sequence', () => {
    const first = createRandom(5);
    const second = createRandom(5);
    const values = Array.from({ length: 5 }, () => first());
    expect(values).toEqual(Array.from({ length: 5 }, () => second()));
    expect(values.every((value) => value >= 0 && value < 1)).toBe(true);
  });

  it('measures the time to the first success after a fault', () => {
    const calls: CallRecord[] = [
      { client: 0, node: 'n1', f: 'read', startMs: 900, endMs: 950, outcome: 'ok' },
      { client: 0, node: 'n1', f: 'write', startMs: 1000, endMs: 2000, outcome: 'info' },
      { client: 1, node: 'n2', f: 'read', startMs: 1200, endMs: 1300, outcome: 'ok' },
      { client: 1, node: 'n2', f: 'read', startMs: 3100, endMs: 3150, outcome: 'ok' },
    ];
    const fault = itemAt(summarizeFaults([{ kind: 'pause', label: 'pause n1', nodes: ['n1'], startMs: 1000, endMs: 3000, healedMs: 3000 }], calls), 0);
    expect(fault.firstOkAfterStartMs).toBe(300);
    expect(fault.firstOkAfterHealMs).toBe(150);
  });

  it('counts refused calls by error, and those that came while no fault was on or healing', () => {
    const oom = 'SERVER_ERROR out of memory storing object';
    const noQuorum = 'SERVER_ERROR no quorum: no leader reachable';
    const refused = (startMs: number, error: string): CallRecord => ({ client: 0, node: 'n1', f: 'write', startMs, endMs: startMs + 1, outcome: 'fail', error });
    const window = { kind: 'backend-fill' as const, label: 'fill every memcached', nodes: ['n1', 'n2', 'n3'], startMs: 1000, endMs: 3000, healedMs: 3100 };
    const calls = [refused(500, oom), refused(1500, oom), refused(4000, noQuorum), refused(5200, oom), refused(9000, oom)];
    // Started before the fault, still waiting when it began: not counted as refused while quiet.
    calls.push({ client: 2, node: 'n3', f: 'read', startMs: 990, endMs: 1800, outcome: 'fail', error: noQuorum });
    calls.push({ client: 1, node: 'n2', f: 'read', startMs: 9000, endMs: 9001, outcome: 'ok' });
    const refusals = summarizeRefusals([window], calls);
    // 1500 is in the window, 4000 within the grace after its heal; 500, 5200 and 9000 are quiet.
    expect(refusals).toEqual([{ error: oom, count: 4, quiet: 3 }, { error: noQuorum, count: 2, quiet: 0 }]);
    // A clock step excuses nothing: a controller must not notice one.
    const step = { ...window, kind: 'clock' as const, label: 'clock n1 +60 s, n2 -4 s, n3 +900 s' };
    expect(summarizeRefusals([step], calls)).toEqual([{ error: oom, count: 4, quiet: 4 }, { error: noQuorum, count: 2, quiet: 2 }]);
    const summary = {
      mode: 'linearizability', nemesis: ['backend-fill'], seed: 1, clients: 2, pipeline: 1, keys: 1, durationMs: 10_000, verdict: 'ok', exitCode: 0,
      checker: 'test', detail: null, counts: { ok: 1, fail: 6, info: 0, total: 7 },
      latency: { ok: { count: 1, p50Ms: 1, p90Ms: 1, p99Ms: 1, maxMs: 1 }, all: { count: 7, p50Ms: 1, p90Ms: 1, p99Ms: 1, maxMs: 1 } },
      faults: summarizeFaults([window], calls), refusals, convergenceMs: null,
    } satisfies RunSummary;
    expect(formatVerdict(summary)).toContain(`  4 (3) ${oom}\n`);
    expect(formatVerdict(summary).split('\n').slice(0, 2)).toEqual([
      'PASS: the linearizability promise held (test)',
      'note: 3 calls refused while no fault was on, nor healed less than 2 s before (by error below)',
    ]);
    const healthy = { ...summary, refusals: [{ error: noQuorum, count: 2, quiet: 0 }] };
    expect(formatVerdict(healthy)).not.toContain('note:');
  });

  it('escapes labels in the SVG', () => {
    const summary = {
      mode: 'linearizability', nemesis: [], seed: 1, clients: 1, pipeline: 1, keys: 1, durationMs: 1000, verdict: 'ok', exitCode: 0,
      checker: 'test', detail: null, counts: { ok: 0, fail: 0, info: 0, total: 0 },
      latency: { ok: { count: 0, p50Ms: 0, p90Ms: 0, p99Ms: 0, maxMs: 0 }, all: { count: 0, p50Ms: 0, p90Ms: 0, p99Ms: 0, maxMs: 0 } },
      faults: [{ kind: 'partition', label: 'cut <n1>&n2', nodes: ['n1'], startMs: 100, endMs: 500, healedMs: 600, firstOkAfterStartMs: null, firstOkAfterHealMs: null }],
      refusals: [],
      convergenceMs: null,
    } satisfies RunSummary;
    const svg = renderTimeline(summary, []);
    expect(svg).toContain('cut &lt;n1&gt;&amp;n2');
    expect(svg).not.toContain('<n1>');
    // A long pipelined run records hundreds of thousands of calls: the chart still renders.
    const many: CallRecord[] = Array.from({ length: 300_000 }, (_, index) => ({
      client: index % 48, node: 'n1', f: 'read', startMs: index / 300, endMs: index / 300 + (index === 123_456 ? 950 : 2), outcome: 'ok',
    }));
    const long = renderTimeline({ ...summary, durationMs: 1000 }, many);
    expect(long).toContain('</svg>');
  });
});
