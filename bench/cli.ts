/**
 * `npm run bench`: measures direct memcached, twemproxy, Node byte pipes, etcd and mckv in each
 * consistency mode in one run, interleaved round by round, and reports ratios against direct
 * memcached (and mckv linearizability's against etcd where both ran).
 *
 * Intuition: on a shared, noisy machine only comparisons made close together in time mean
 * anything, so every round runs each workload against every target back to back (A B C … then
 * again), and each target's ops/s is divided by direct memcached's from the same round. While
 * one target is measured the others are frozen (SIGSTOP, then SIGCONT before their own run), so
 * no idle cluster's heartbeats and timers take CPU from it (`--idle-targets running` keeps them
 * going, as a machine shared with them would). The
 * load generator is a forked child process, so it never shares an event loop with this driver
 * or with what it measures; the driver only waits, samples /proc CPU at the edges of each
 * measured window, and writes the report.
 *
 * Invariants: every target is started once per run and stopped at the end (also on error and
 * on Ctrl-C), only by the PIDs we started; traffic goes only to 127.0.0.1; the run is bounded
 * (rounds × workloads × targets runs, each bounded in time); speed never fails the run — the
 * exit code is non-zero only for bad options or when nothing at all could be measured.
 */

import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { repoRoot } from '../src/jepsen/cluster.ts';
import { CPU_SCHEDULINGS, WAL_SYNCS, type CpuScheduling, type WalSync } from '../src/config.ts';
import { BULK_WORKLOAD, LoadgenProcess, NAMED_WORKLOADS, parseWorkload, STANDARD_WORKLOADS, WORKLOAD_LIMITS, WORKLOAD_SPEC, type LoadOptions, type Workload, type WireProtocol } from './loadgen.ts';
import { formatGoals, formatLatencyByKind, formatMachine, formatProcessCpu, formatTable, judgeGoals, machineInfo, reportFolderName, summarize, writeReport, type BenchReport, type RunSample } from './report.ts';
import { signalProcesses } from './processes.ts';
import { compareWithEtcd, ETCD_RATIO_MIN, formatEtcdComparison } from './versus-etcd.ts';
import { contextSwitchesOf, cpuMsEach, cpuMsOf, parseTargetName, startTarget, targetLabel, TARGET_NAMES, type RunningTarget, type TargetName } from './targets.ts';

/** Everything a run is configured by. */
export interface BenchSettings {
  targets: TargetName[];
  workloads: Workload[];
  rounds: number;
  durationMs: number;
  warmupMs: number;
  protocol: WireProtocol;
  keyCount: number;
  valueBytes: number;
  outDir: string | null;
  heartbeatIntervalMs: number;
  failureTimeoutMs: number;
  /** The mckv clusters' config.ini wal_sync. */
  walSync: WalSync;
  /** The mckv clusters' config.ini cpu_scheduling. */
  cpuScheduling: CpuScheduling;
  /** The mckv clusters' config.ini read_leases (true: on, linearizable reads under read leases). */
  readLeases: boolean;
  /** What the targets not being measured do meanwhile: frozen (SIGSTOP) or running idle. */
  idleTargets: IdleTargets;
}

export const IDLE_TARGETS = ['frozen', 'running'] as const;
export type IdleTargets = (typeof IDLE_TARGETS)[number];

const USAGE = `usage: npm run bench -- [options]

  --quick               a seconds-long smoke run: 1 round, 1 s, workload mix-16x1,
                        targets memcached,twemproxy,node-pipe,eventual (other options still apply)
  --targets LIST        comma-separated, from: ${TARGET_NAMES.join(', ')} (default: all)
  --workloads LIST      comma-separated: ${STANDARD_WORKLOADS.map((workload) => workload.id).join(', ')} (default: all four),
                        ${BULK_WORKLOAD.id} (only when named), or your own as ${WORKLOAD_SPEC};
                        a bulk load of another shape is 0:1-CONNECTIONSxPIPELINE (connection i goes to
                        controller i mod 3)
  --rounds N            rounds; each runs every workload on every target in turn (default 3)
  --duration-s S        measured seconds per run (default 5)
  --warmup-s S          unmeasured warm-up seconds per run (default 1)
  --protocol P          text or binary (default text; twemproxy is skipped for binary)
  --keys N              key count, preloaded into each target before its first run (default 10000)
  --value-bytes N       value size (default 100)
  --wal-sync S          the mckv clusters' wal_sync: fsync or write (default write, as the product's; see the README)
  --cpu-scheduling S    the mckv controllers' cpu_scheduling: batch or normal (default batch; the
                        other targets always run with the system's default; see the README)
  --read-leases S       the mckv clusters' read_leases: on or off (default on, as the product's; see the README)
  --idle-targets S      the targets not being measured: frozen (SIGSTOP until their own run; default)
                        or running (idle, their heartbeats and timers sharing the cores)
  --out DIR             report folder (default reports/bench-<timestamp>)
  --help                this text

Workloads: ${NAMED_WORKLOADS.map((workload) => `${workload.id} = ${workload.label}`).join('; ')}.
twemproxy needs nutcracker (apt-get install nutcracker) and etcd needs etcd (apt-get install etcd-server);
without them those targets are skipped. etcd is driven through the etcd3 client whatever --protocol says.`;

type Parsed = { kind: 'run'; settings: BenchSettings } | { kind: 'help' } | { kind: 'invalid'; message: string };

/** A comma-separated list, each item parsed and kept once (by `identity`), or what is wrong with it. */
function parseList<T>(
  text: string,
  parse: (item: string) => T | null,
  what: string,
  options: { identity?: (item: T) => unknown; expected?: string } = {},
): T[] | string {
  const identity = options.identity ?? ((item: T) => item);
  const items: T[] = [];
  for (const raw of text.split(',').map((item) => item.trim()).filter((item) => item !== '')) {
    const parsed = parse(raw);
    if (parsed === null) return `unknown ${what} "${raw}"${options.expected === undefined ? '' : ` (expected ${options.expected})`}`;
    if (!items.some((item) => identity(item) === identity(parsed))) items.push(parsed);
  }
  return items.length === 0 ? `no ${what} given` : items;
}

/** Why `value` is not one of `choices`, or null when it is. */
function choiceProblem(value: string, choices: readonly string[], name: string): string | null {
  return choices.includes(value) ? null : `--${name} must be ${choices.join(' or ')}, not "${value}"`;
}

function parsePositive(text: string | undefined, fallback: number, name: string, integer: boolean): number | string {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isFinite(value) || value <= 0 || (integer && !Number.isInteger(value))) return `--${name} must be a positive ${integer ? 'integer' : 'number'}`;
  return value;
}

/** Parses the command line; malformed options come back as a message, not an exception. */
export function parseBenchArgs(argv: string[]): Parsed {
  let values;
  try {
    values = parseArgs({
      args: argv,
      options: {
        quick: { type: 'boolean' },
        help: { type: 'boolean' },
        targets: { type: 'string' },
        workloads: { type: 'string' },
        rounds: { type: 'string' },
        'duration-s': { type: 'string' },
        'warmup-s': { type: 'string' },
        protocol: { type: 'string' },
        keys: { type: 'string' },
        'value-bytes': { type: 'string' },
        out: { type: 'string' },
        'wal-sync': { type: 'string' },
        'cpu-scheduling': { type: 'string' },
        'read-leases': { type: 'string' },
        'idle-targets': { type: 'string' },
      },
    }).values;
  } catch (error) {
    return { kind: 'invalid', message: error instanceof Error ? error.message : String(error) };
  }
  if (values.help) return { kind: 'help' };
  const quick = values.quick === true;
  const targets = parseList(values.targets ?? (quick ? 'memcached,twemproxy,node-pipe,eventual' : TARGET_NAMES.join(',')), parseTargetName, 'target');
  const workloads = parseList(values.workloads ?? (quick ? 'mix-16x1' : STANDARD_WORKLOADS.map((workload) => workload.id).join(',')), parseWorkload, 'workload', {
    identity: (workload) => workload.id,
    expected: `${NAMED_WORKLOADS.map((workload) => workload.id).join(', ')} or ${WORKLOAD_SPEC}, at most ${WORKLOAD_LIMITS.connectionsMax} connections × pipeline ${WORKLOAD_LIMITS.pipelineDepthMax}`,
  });
  const rounds = parsePositive(values.rounds, quick ? 1 : 3, 'rounds', true);
  const durationS = parsePositive(values['duration-s'], quick ? 1 : 5, 'duration-s', false);
  const warmupS = values['warmup-s'] === '0' ? 0 : parsePositive(values['warmup-s'], quick ? 0.3 : 1, 'warmup-s', false);
  const keyCount = parsePositive(values.keys, 10_000, 'keys', true);
  const valueBytes = parsePositive(values['value-bytes'], 100, 'value-bytes', true);
  const protocol = values.protocol ?? 'text';
  const walSync = values['wal-sync'] ?? 'write';
  const readLeases = values['read-leases'] ?? 'on';
  const cpuScheduling = values['cpu-scheduling'] ?? 'batch';
  const idleTargets = values['idle-targets'] ?? 'frozen';
  const choices = [
    choiceProblem(protocol, ['text', 'binary'], 'protocol'), choiceProblem(walSync, WAL_SYNCS, 'wal-sync'), choiceProblem(cpuScheduling, CPU_SCHEDULINGS, 'cpu-scheduling'),
    choiceProblem(readLeases, ['on', 'off'], 'read-leases'), choiceProblem(idleTargets, IDLE_TARGETS, 'idle-targets'),
  ];
  for (const problem of [targets, workloads, rounds, durationS, warmupS, keyCount, valueBytes, ...choices]) {
    if (typeof problem === 'string') return { kind: 'invalid', message: problem };
  }
  return {
    kind: 'run',
    settings: {
      targets: targets as TargetName[],
      workloads: workloads as Workload[],
      rounds: rounds as number,
      durationMs: Math.round((durationS as number) * 1000),
      warmupMs: Math.round((warmupS as number) * 1000),
      protocol: protocol as WireProtocol,
      keyCount: keyCount as number,
      valueBytes: valueBytes as number,
      outDir: values.out ?? null,
      heartbeatIntervalMs: 100,
      failureTimeoutMs: 1000,
      walSync: walSync as WalSync,
      cpuScheduling: cpuScheduling as CpuScheduling,
      readLeases: readLeases === 'on',
      idleTargets: idleTargets as IdleTargets,
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Running

interface Started {
  running: RunningTarget[];
  unavailable: Array<{ target: TargetName; reason: string }>;
}

async function startTargets(settings: BenchSettings, dir: string): Promise<Started> {
  const started: Started = { running: [], unavailable: [] };
  for (const name of settings.targets) {
    process.stdout.write(`starting ${targetLabel(name)} … `);
    const outcome = await startTarget(name, {
      dir, protocol: settings.protocol, heartbeatIntervalMs: settings.heartbeatIntervalMs, failureTimeoutMs: settings.failureTimeoutMs,
      walSync: settings.walSync, cpuScheduling: settings.cpuScheduling, readLeases: settings.readLeases,
    });
    if (outcome.kind === 'started') {
      started.running.push(outcome.target);
      console.log(`ports ${outcome.target.ports.join(', ')}, pids ${outcome.target.processes().map(({ label, pid }) => `${pid} (${label})`).join(', ')}`);
    } else {
      started.unavailable.push({ target: name, reason: `${outcome.kind}: ${outcome.reason}` });
      console.log(`${outcome.kind === 'skipped' ? 'SKIPPED' : 'FAILED'}: ${outcome.reason}`);
    }
  }
  return started;
}

/**
 * Load options for one run. Keys are preloaded only on a target's first run: no target evicts
 * (memcached runs with -M), so later runs find them still there, and on a slow mode a 10,000-key
 * preload per run would cost more time than the measurement itself.
 */
function loadOptions(
  settings: BenchSettings,
  target: RunningTarget,
  workload: Workload,
  run: { seed: number; preload: boolean },
): LoadOptions {
  return {
    ports: target.ports,
    api: target.api ?? 'memcached',
    protocol: settings.protocol,
    connections: workload.connections,
    pipelineDepth: workload.pipelineDepth,
    getFraction: workload.getFraction,
    keyCount: settings.keyCount,
    valueBytes: settings.valueBytes,
    durationMs: settings.durationMs,
    warmupMs: settings.warmupMs,
    preload: run.preload,
    preloadEachPort: target.separateStores === true,
    seed: run.seed,
  };
}

/** One load run with the target's CPU sampled at the start and end of the measured window. */
async function measure(loadgen: LoadgenProcess, target: RunningTarget, options: LoadOptions, identity: Pick<RunSample, 'round' | 'workload'>): Promise<RunSample> {
  const processes = target.processes();
  const pids = processes.map(({ pid }) => pid);
  const window = {
    cpuStartMs: null as number[] | null, cpuEndMs: null as number[] | null,
    loadgenStartMs: null as number | null, loadgenEndMs: null as number | null,
    switchesStart: null as number | null, switchesEnd: null as number | null, wallStartMs: 0, wallEndMs: 0,
  };
  const loadgenPids = loadgen.pid === undefined ? [] : [loadgen.pid];
  const onPhase = (phase: 'measuring' | 'draining'): void => {
    if (phase === 'measuring') {
      window.cpuStartMs = cpuMsEach(pids);
      window.switchesStart = contextSwitchesOf(pids);
      window.loadgenStartMs = cpuMsOf(loadgenPids);
      window.wallStartMs = performance.now();
    } else {
      window.cpuEndMs = cpuMsEach(pids);
      window.switchesEnd = contextSwitchesOf(pids);
      window.loadgenEndMs = cpuMsOf(loadgenPids);
      window.wallEndMs = performance.now();
    }
  };
  const base = { ...identity, target: target.name };
  try {
    const termsBefore = await target.terms?.();
    const result = await loadgen.run(options, onPhase);
    const termsAfter = await target.terms?.();
    const roles = (await target.roles?.()) ?? new Map<string, string>();
    // A window counts only if both edges were seen and every PID was readable at both (none died).
    const { cpuStartMs, cpuEndMs } = window;
    const processCpu =
      cpuStartMs !== null && cpuEndMs !== null && window.wallEndMs > window.wallStartMs
        ? processes.map(({ label }, index) => ({
          label, cpuMs: cpuSpentMs(cpuStartMs[index], cpuEndMs[index]), role: roles.get(label) ?? null,
        }))
        : null;
    const cpuKnown = processCpu !== null && processCpu.every(({ cpuMs }) => cpuMs >= 0);
    const targetCpuMs = cpuKnown ? processCpu.reduce((sum, { cpuMs }) => sum + cpuMs, 0) : 0;
    const loadgenKnown = cpuKnown && loadgenPids.length > 0 && window.loadgenStartMs !== null && window.loadgenEndMs !== null;
    const loadgenCpuMs = loadgenKnown ? (window.loadgenEndMs as number) - (window.loadgenStartMs as number) : 0;
    const switchesKnown = cpuKnown && window.switchesStart !== null && window.switchesEnd !== null;
    const targetSwitches = switchesKnown ? (window.switchesEnd as number) - (window.switchesStart as number) : null;
    return {
      ...base, result, failure: null, targetCpuMs, windowMs: cpuKnown ? window.wallEndMs - window.wallStartMs : 0,
      loadgenCpuMs, targetSwitches, processCpu: cpuKnown ? processCpu : null,
      ...(termsBefore === undefined || termsAfter === undefined ? {} : { termChanges: termChanges(termsBefore, termsAfter) }),
    };
  } catch (error) {
    return {
      ...base, result: null, failure: error instanceof Error ? error.message : String(error),
      targetCpuMs: 0, windowMs: 0, loadgenCpuMs: 0, targetSwitches: null, processCpu: null,
    };
  }
}

/** "n1 1→2" for each controller whose term differs (or that answered only once) between two readings. */
function termChanges(before: Map<string, string>, after: Map<string, string>): string[] {
  const labels = [...new Set([...before.keys(), ...after.keys()])];
  return labels.filter((label) => before.get(label) !== after.get(label)).map((label) => `${label} ${before.get(label) ?? '?'}→${after.get(label) ?? '?'}`);
}

function progressLine(sample: RunSample, rounds: number): string {
  const head = `round ${sample.round}/${rounds} ${sample.workload.padEnd(8)} ${targetLabel(sample.target).padEnd(20)}`;
  if (sample.result === null) return `${head} FAILED: ${sample.failure}`;
  const { result } = sample;
  const cpu = sample.windowMs > 0 ? (sample.targetCpuMs / sample.windowMs).toFixed(2) : '?';
  const loadgenCpu = sample.windowMs > 0 && sample.loadgenCpuMs > 0 ? (sample.loadgenCpuMs / sample.windowMs).toFixed(2) : '?';
  const errors = result.errors > 0 ? `, errors ${result.errors} (${result.errorSamples[0] ?? ''})` : '';
  const misses = result.misses > 0 ? `, misses ${result.misses}` : '';
  const terms = (sample.termChanges ?? []).length > 0 ? `, TERM CHANGED (${(sample.termChanges ?? []).join(', ')})` : '';
  const preload = result.preloadMs > 0 ? `, preload ${(result.preloadMs / 1000).toFixed(1)} s${result.preloadErrors > 0 ? ` (${result.preloadErrors} failed)` : ''}` : '';
  return `${head} ${Math.round(result.opsPerSecond)} ops/s, p50 ${result.latency.p50Us.toFixed(0)} µs, p99 ${result.latency.p99Us.toFixed(0)} µs, CPU ${cpu} cores (load generator ${loadgenCpu})${errors}${misses}${terms}${preload}`;
}

async function runRounds(
  settings: BenchSettings,
  loadgen: LoadgenProcess,
  running: RunningTarget[],
  interrupted: () => boolean,
): Promise<RunSample[]> {
  const samples: RunSample[] = [];
  const preloaded = new Set<TargetName>();
  for (let round = 1; round <= settings.rounds; round += 1) {
    for (const [workloadIndex, workload] of settings.workloads.entries()) {
      for (const target of running) {
        if (interrupted()) return samples;
        if (settings.idleTargets === 'frozen') freezeAllBut(running, target);
        const run = { seed: round * 1000 + workloadIndex, preload: !preloaded.has(target.name) };
        const sample = await measure(loadgen, target, loadOptions(settings, target, workload, run), { round, workload: workload.id });
        if (interrupted()) {
          console.log(`round ${round}/${settings.rounds} ${workload.id} ${targetLabel(target.name)}: discarded (interrupted; Ctrl-C also reaches the targets)`);
          return samples;
        }
        if (sample.result !== null && sample.result.preloadErrors === 0) preloaded.add(target.name);
        samples.push(sample);
        console.log(progressLine(sample, settings.rounds));
      }
    }
  }
  return samples;
}

/** Resumes `measured` and freezes every other target (a frozen target's next run resumes it). */
export function freezeAllBut(running: readonly RunningTarget[], measured: RunningTarget): void {
  for (const target of running) {
    if (target !== measured) signalProcesses(target.processes(), 'SIGSTOP');
  }
  signalProcesses(measured.processes(), 'SIGCONT');
}

async function stopAll(running: RunningTarget[], loadgen: LoadgenProcess | null): Promise<void> {
  await loadgen?.stop();
  for (const target of running) signalProcesses(target.processes(), 'SIGCONT'); // a frozen process would not see SIGTERM
  for (const target of running) {
    try {
      await target.stop();
    } catch (error) {
      console.error(`stopping ${targetLabel(target.name)}: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
}

function reportText(report: BenchReport): string {
  const lines = [
    `machine: ${formatMachine(report.machine)}`,
    `settings: ${JSON.stringify(report.settings)}`,
    ...report.unavailable.map((entry) => `not measured: ${targetLabel(entry.target)} (${entry.reason})`),
    '',
    'Medians over rounds. ×direct = median of per-round (ops/s ÷ direct memcached ops/s in the same round).',
    'Quote the ratios, not the absolute numbers: the machine is shared and noisy.',
    '',
    formatTable(report.summary),
    '',
    'What a read and a write cost: the gets\' and the sets\' own latencies (medians over rounds; — where the workload has none).',
    '',
    formatLatencyByKind(report.summary),
    '',
    'Where the CPU goes: each process\'s CPU µs per operation (medians over rounds; its role in brackets where the target reports one).',
    '',
    formatProcessCpu(report.summary),
    '',
    'Goals (informational; the benchmark never fails on speed):',
    formatGoals(report.goals),
    ...([...report.samples, ...report.unavailable].some(({ target }) => target === 'etcd')
      ? ['', `mckv linearizability against etcd (goal: ≥ ${ETCD_RATIO_MIN}× etcd's ops/s, no more refused calls than etcd; informational):`, formatEtcdComparison(report.versusEtcd)]
      : []),
  ];
  return lines.join('\n');
}

/** Runs the whole benchmark; resolves with the process exit code. */
export async function runBench(settings: BenchSettings): Promise<number> {
  const startedAt = new Date();
  const machine = machineInfo();
  const dir = settings.outDir !== null ? path.resolve(settings.outDir) : path.join(repoRoot, 'reports', reportFolderName(startedAt));
  console.log(`machine: ${formatMachine(machine)}`);
  const runs = settings.rounds * settings.workloads.length * settings.targets.length;
  console.log(`plan: ${settings.rounds} round(s) × ${settings.workloads.length} workload(s) × ${settings.targets.length} target(s) = ${runs} runs of ${(settings.warmupMs + settings.durationMs) / 1000} s (+ preload)`);
  let interrupted = false;
  let interruptedAtMs = 0;
  const onSignal = (): void => {
    // npm forwards the terminal's SIGINT to us again, so one Ctrl-C often arrives twice at once.
    if (interrupted && Date.now() - interruptedAtMs > 1000) process.exit(130);
    if (interrupted) return;
    interrupted = true;
    interruptedAtMs = Date.now();
    console.log('\ninterrupted: finishing the current run, then stopping everything (Ctrl-C again to quit at once)');
  };
  process.on('SIGINT', onSignal);
  let loadgen: LoadgenProcess | null = null;
  let started: Started = { running: [], unavailable: [] };
  let samples: RunSample[] = [];
  try {
    mkdirSync(path.join(dir, 'logs'), { recursive: true });
    started = await startTargets(settings, path.join(dir, 'logs'));
    loadgen = await LoadgenProcess.start();
    console.log(`load generator: a forked child process (pid ${loadgen.pid}), its own event loop, talking over IPC`);
    if (started.running.length > 0) samples = await runRounds(settings, loadgen, started.running, () => interrupted);
  } finally {
    await stopAll(started.running, loadgen);
    process.off('SIGINT', onSignal);
  }
  const summary = summarize(samples);
  const report: BenchReport = {
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    machine,
    settings: { ...settings, workloads: settings.workloads.map((workload) => workload.id), loadgen: 'forked child process (node:child_process fork, tsx)' },
    unavailable: started.unavailable,
    samples,
    summary,
    goals: judgeGoals(summary, settings.targets, settings.workloads.map((workload) => workload.id)),
    versusEtcd: compareWithEtcd(samples),
  };
  const text = reportText(report);
  console.log(`\n${text}\n`);
  const files = writeReport(dir, report, text);
  console.log(`results: ${files.json}\nchart:   ${files.svg}\nsummary: ${files.text}`);
  return samples.some((sample) => sample.result !== null) ? 0 : 1;
}

/** CPU time between two readings of one process; NaN (not known: its window does not count) when one is missing. */
function cpuSpentMs(startMs: number | undefined, endMs: number | undefined): number {
  return startMs === undefined || endMs === undefined ? Number.NaN : endMs - startMs;
}

async function main(): Promise<void> {
  const parsed = parseBenchArgs(process.argv.slice(2));
  switch (parsed.kind) {
    case 'help':
      console.log(USAGE);
      return;
    case 'invalid':
      console.error(`bench: ${parsed.message} (see --help)`);
      process.exitCode = 2;
      return;
    case 'run':
      process.exitCode = await runBench(parsed.settings);
      return;
    default: {
      const unreachable: never = parsed;
      return unreachable;
    }
  }
}

const invokedDirectly = process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
if (invokedDirectly) await main();
