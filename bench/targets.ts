/**
 * The systems the benchmark measures, each started once per run and stopped at its end:
 * one memcached (the baseline), twemproxy in front of one memcached (what a plain proxy costs),
 * three Node processes that only relay bytes, each to its own memcached (what any front of three
 * Node processes costs here before it does any work), a three-member etcd cluster (what a
 * consistent store of another design costs: ./etcd-target.ts), and a fresh three-controller mckv
 * cluster per consistency mode.
 *
 * Intuition: every target is "some 127.0.0.1 ports that speak memcached (or etcd's API, as
 * `api` says), and the PIDs whose CPU is its cost". The driver does not care what is behind them.
 *
 * Invariants: every port is picked free; processes are stopped only by the PIDs this module
 * started (SIGTERM, then SIGKILL after a grace period); every wait is bounded; a target that
 * cannot run here (no nutcracker or etcd, a cluster that does not start) is a value saying why, never an
 * exception that aborts the whole benchmark.
 */

import { spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { isOrderedMode, type Mode } from '../src/consistency/types.ts';
import type { CpuScheduling, WalSync } from '../src/config.ts';
import { itemAt } from '../src/runtime/item-at.ts';
import { TextClient } from '../src/client/text-client.ts';
import { Cluster, freePort, repoRoot, spawnMemcached, stopMemcached, waitForMemcachedProtocol } from '../src/jepsen/cluster.ts';
import { ETCD_INSTALL_HINT, findEtcd, startEtcd } from './etcd-target.ts';
import type { LoadApi, WireProtocol } from './loadgen.ts';
import { findBinary, labelled, spawnLogged, stopChild, type TargetProcess } from './processes.ts';

export type { TargetProcess } from './processes.ts';

/** Every target, in the order a round visits them. */
export const TARGET_NAMES = ['memcached', 'twemproxy', 'node-pipe', 'ordered-pipe', 'etcd', 'linearizability', 'sequential', 'causal', 'eventual'] as const;
export type TargetName = (typeof TARGET_NAMES)[number];

/** A started target: where to send load and whose CPU to count. */
export interface RunningTarget {
  name: TargetName;
  /** Client ports on 127.0.0.1 (three for a cluster: load is spread over them). */
  ports: number[];
  /** What the ports speak: memcached unless said (etcd speaks its own gRPC API). */
  api?: LoadApi;
  /** A temporary folder holding the target's data, removed by `stop()`. */
  dataDir?: string;
  /** The processes whose CPU is this target's cost (memcached included). */
  processes(): TargetProcess[];
  /**
   * Each controller's role now, by process label (an ordered-mode cluster: which one leads); best
   * effort and bounded in time, an empty map when none answers.
   */
  roles?(): Promise<Map<string, string>>;
  /** Each controller's term (`mckv_term`), for targets that elect a leader: a bulk run must start none. */
  terms?(): Promise<Map<string, string>>;
  /** The ports front separate stores that do not replicate (keys are preloaded through each). */
  separateStores?: boolean;
  stop(): Promise<void>;
}

/** The outcome of trying to start a target. */
export type TargetStart =
  | { kind: 'started'; target: RunningTarget }
  | { kind: 'skipped'; reason: string }
  | { kind: 'failed'; reason: string };

/** Options shared by all targets. */
export interface TargetOptions {
  /** Folder for configs and logs (the run's report folder). */
  dir: string;
  protocol: WireProtocol;
  heartbeatIntervalMs: number;
  failureTimeoutMs: number;
  /** config.ini wal_sync of the mckv clusters (default fsync). */
  walSync?: WalSync;
  /** config.ini cpu_scheduling of the mckv clusters (default batch). */
  cpuScheduling?: CpuScheduling;
  /** config.ini read_leases of the mckv clusters (default true: on, as the product's). */
  readLeases?: boolean;
}

const READY_TIMEOUT_MS = 10_000;

/** A human label for tables and charts. */
export function targetLabel(name: TargetName): string {
  switch (name) {
    case 'memcached':
      return 'memcached (direct)';
    case 'twemproxy':
      return 'twemproxy';
    case 'node-pipe':
      return 'Node byte pipe ×3';
    case 'ordered-pipe':
      return 'Node ordered pipe ×3';
    case 'etcd':
      return 'etcd ×3';
    case 'linearizability':
    case 'sequential':
    case 'causal':
    case 'eventual':
      return `mckv ${name}`;
    default: {
      const unreachable: never = name;
      return unreachable;
    }
  }
}

/** Parses a target name; null when it is not one. */
export function parseTargetName(text: string): TargetName | null {
  return (TARGET_NAMES as readonly string[]).includes(text) ? (text as TargetName) : null;
}

// ---------------------------------------------------------------------------------------------
// Processes

/** Waits until `port` answers `version`, failing early if the process dies or cannot spawn. */
async function awaitReady(child: ChildProcess, port: number, what: string): Promise<void> {
  const spawnError = new Promise<never>((_, reject) => child.once('error', (error) => reject(new Error(`cannot start ${what}: ${error.message}`))));
  try {
    const alive = (): boolean => child.exitCode === null && child.signalCode === null;
    await Promise.race([waitForMemcachedProtocol(port, READY_TIMEOUT_MS, alive), spawnError]);
  } catch (error) {
    await stopChild(child);
    throw error;
  }
}

/** Starts memcached on a free 127.0.0.1 port (`-u root` when running as root, which it demands). */
export async function startMemcachedProcess(logFile: string): Promise<{ child: ChildProcess; port: number }> {
  const port = await freePort();
  return { child: await spawnMemcached(port, logFile), port };
}

/** The nutcracker (twemproxy) binary on PATH or in the sbin folders, or null if it is not installed. */
export function findNutcracker(): string | null {
  return findBinary('nutcracker');
}

function nutcrackerConfig(listenPort: number, memcachedPort: number): string {
  return [
    'bench:',
    `  listen: 127.0.0.1:${listenPort}`,
    '  hash: fnv1a_64',
    '  distribution: ketama',
    '  timeout: 2000',
    '  redis: false',
    '  auto_eject_hosts: false',
    '  servers:',
    `   - 127.0.0.1:${memcachedPort}:1`,
    '',
  ].join('\n');
}

// ---------------------------------------------------------------------------------------------
// Targets

async function startDirect(options: TargetOptions): Promise<RunningTarget> {
  const memcached = await startMemcachedProcess(path.join(options.dir, 'memcached-direct.log'));
  return {
    name: 'memcached',
    ports: [memcached.port],
    processes: () => labelled([['memcached', memcached.child]]),
    stop: () => stopMemcached(memcached.child),
  };
}

async function startTwemproxy(options: TargetOptions, binary: string): Promise<RunningTarget> {
  const memcached = await startMemcachedProcess(path.join(options.dir, 'memcached-twemproxy.log'));
  const listenPort = await freePort();
  const statsPort = await freePort();
  const configFile = path.join(options.dir, 'nutcracker.yml');
  writeFileSync(configFile, nutcrackerConfig(listenPort, memcached.port));
  const args = ['-c', configFile, '-o', path.join(options.dir, 'nutcracker.log'), '-s', String(statsPort), '-a', '127.0.0.1'];
  const proxy = spawnLogged(binary, args, path.join(options.dir, 'nutcracker.out'));
  try {
    await awaitReady(proxy, listenPort, 'nutcracker');
  } catch (error) {
    await stopMemcached(memcached.child);
    throw error;
  }
  return {
    name: 'twemproxy',
    ports: [listenPort],
    processes: () => labelled([['nutcracker', proxy], ['memcached', memcached.child]]),
    stop: async () => {
      await stopChild(proxy);
      await stopMemcached(memcached.child);
    },
  };
}

/** One of three yardstick Node processes: its name in logs and tables, and its arguments after the listen port and its memcached's. */
interface PipeSpec {
  script: string;
  what: string;
  label: (n: number) => string;
  args: (n: number) => string[];
}

/**
 * Three Node processes from bench/ (the byte or ordered pipes), each in front of a memcached of
 * its own, started one after another (`n` = 1, 2, 3), each once it answers `version`.
 */
async function startPipes(name: 'node-pipe' | 'ordered-pipe', spec: PipeSpec, options: TargetOptions, cleanUp = (): void => {}): Promise<RunningTarget> {
  const children: Array<[string, ChildProcess]> = [];
  const ports: number[] = [];
  const stopAll = async (): Promise<void> => {
    await Promise.all(children.map(([, child]) => stopChild(child)));
    cleanUp();
  };
  try {
    for (let n = 1; n <= 3; n++) {
      const memcached = await startMemcachedProcess(path.join(options.dir, `memcached-${name}${n}.log`));
      children.push([`memcached ${n}`, memcached.child]);
      const listenPort = await freePort();
      const args = ['--import', 'tsx', path.join(repoRoot, 'bench', spec.script), String(listenPort), String(memcached.port), ...spec.args(n)];
      const pipe = spawnLogged(process.execPath, args, path.join(options.dir, `${name}${n}.out`));
      children.push([spec.label(n), pipe]);
      await awaitReady(pipe, listenPort, spec.what);
      ports.push(listenPort);
    }
  } catch (error) {
    await stopAll();
    throw error;
  }
  return { name, ports, processes: () => labelled(children), stop: stopAll };
}

/** Three byte-relaying Node processes (./byte-pipe.ts), each in front of its own memcached. */
async function startNodePipes(options: TargetOptions): Promise<RunningTarget> {
  const spec = { script: 'byte-pipe.ts', what: 'the byte pipe', label: (n: number) => `pipe ${n}`, args: () => [] };
  return { ...(await startPipes('node-pipe', spec, options)), separateStores: true };
}

/**
 * Three Node processes passing sets through a leader (./ordered-pipe.ts), each in front of its own
 * memcached: the floor of sequential mode's write path, messages and file writes without the logic.
 */
async function startOrderedPipes(options: TargetOptions): Promise<RunningTarget> {
  const leaderPeerPort = await freePort();
  // Their files grow by every set (about 100 MB a process in a full run): kept only while they run.
  const fileDir = mkdtempSync(path.join(os.tmpdir(), 'mckv-ordered-pipe-'));
  const spec: PipeSpec = {
    script: 'ordered-pipe.ts',
    what: 'the ordered pipe',
    label: (n) => (n === 1 ? 'pipe 1 (leader)' : `pipe ${n}`),
    args: (n) => [String(n - 1), String(leaderPeerPort), path.join(fileDir, `ordered-pipe${n}.file`)],
  };
  return startPipes('ordered-pipe', spec, options, () => rmSync(fileDir, { recursive: true, force: true }));
}

async function startCluster(mode: Mode, options: TargetOptions): Promise<RunningTarget> {
  const cluster = await Cluster.start({
    mode,
    backend: 'memcache',
    proxies: false,
    heartbeatIntervalMs: options.heartbeatIntervalMs,
    failureTimeoutMs: options.failureTimeoutMs,
    walSync: options.walSync,
    cpuScheduling: options.cpuScheduling,
    extraConfig: [`read_leases = ${options.readLeases === false ? 'off' : 'on'}`],
  });
  const controllers = cluster.nodes.map((node) => ({ label: node.id, port: node.clientPort }));
  return {
    name: mode,
    ports: cluster.nodes.map((node) => node.clientPort),
    processes: () => labelled(cluster.nodes.flatMap((node) => [[node.id, node.controller], [`memcached ${node.id}`, node.memcached]] as const)),
    // Eventual and causal nodes are all peers; in the ordered modes the leader does more than the followers.
    roles: isOrderedMode(mode) ? () => controllerStat(controllers, 'mckv_role') : undefined,
    terms: isOrderedMode(mode) ? () => controllerStat(controllers, 'mckv_term') : undefined,
    stop: () => cluster.stop(),
  };
}

/** One stat (`mckv_role`, `mckv_term`) of each controller, asked of all at once; one that does not answer is left out. */
async function controllerStat(
  controllers: Array<{ label: string; port: number }>, name: string, timeoutMs = 1000,
): Promise<Map<string, string>> {
  const answers = await Promise.all(
    controllers.map(async ({ label, port }) => {
      const lines = await TextClient.requestOnce('127.0.0.1', port, 'stats\r\n', 'stats', timeoutMs).then(
        (reply) => reply.lines,
        () => [],
      );
      const value = lines.map((line) => (line.startsWith(`STAT ${name} `) ? line.slice(name.length + 6) : undefined)).find((found) => found !== undefined);
      return value === undefined ? [] : [[label, value] as const];
    }),
  );
  return new Map(answers.flat());
}

function describeError(error: unknown): string {
  return itemAt((error instanceof Error ? error.message : String(error)).split('\n'), 0);
}

/** Starts one target, or says why it was skipped or failed. */
export async function startTarget(name: TargetName, options: TargetOptions): Promise<TargetStart> {
  try {
    switch (name) {
      case 'memcached':
        return { kind: 'started', target: await startDirect(options) };
      case 'twemproxy': {
        if (options.protocol === 'binary') return { kind: 'skipped', reason: 'twemproxy speaks only the memcached text protocol' };
        const binary = findNutcracker();
        if (binary === null) return { kind: 'skipped', reason: 'nutcracker (twemproxy) is not installed: apt-get install nutcracker' };
        return { kind: 'started', target: await startTwemproxy(options, binary) };
      }
      case 'node-pipe':
        return { kind: 'started', target: await startNodePipes(options) };
      case 'ordered-pipe':
        if (options.protocol === 'binary') return { kind: 'skipped', reason: 'the ordered pipe speaks only the text protocol' };
        return { kind: 'started', target: await startOrderedPipes(options) };
      case 'etcd': {
        const binary = findEtcd();
        if (binary === null) return { kind: 'skipped', reason: ETCD_INSTALL_HINT };
        return { kind: 'started', target: await startEtcd(options, binary) };
      }
      case 'linearizability':
      case 'sequential':
      case 'causal':
      case 'eventual':
        return { kind: 'started', target: await startCluster(name, options) };
      default: {
        const unreachable: never = name;
        return unreachable;
      }
    }
  } catch (error) {
    return { kind: 'failed', reason: describeError(error) };
  }
}

// ---------------------------------------------------------------------------------------------
// CPU accounting

let clockTicksPerSecond: number | null = null;

function ticksPerSecond(): number {
  if (clockTicksPerSecond === null) {
    const answer = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
    const parsed = Number(answer.stdout?.trim());
    clockTicksPerSecond = Number.isInteger(parsed) && parsed > 0 ? parsed : 100;
  }
  return clockTicksPerSecond;
}

/**
 * The fields of a /proc/<pid>/stat line from field 3 (state) on, so that field N is at N - 3; null
 * if malformed. The command name (field 2) may hold spaces and parentheses, so fields are counted
 * after the last ')'.
 */
export function statFields(statLine: string): string[] | null {
  const close = statLine.lastIndexOf(')');
  return close === -1 ? null : statLine.slice(close + 2).split(' ');
}

/** utime + stime (fields 14 and 15) of a /proc/<pid>/stat line, in clock ticks; null if malformed. */
export function parseStatTicks(statLine: string): number | null {
  const fields = statFields(statLine);
  if (fields === null) return null;
  const userTicks = Number(fields[14 - 3]);
  const systemTicks = Number(fields[15 - 3]);
  if (!Number.isFinite(userTicks) || !Number.isFinite(systemTicks)) return null;
  return userTicks + systemTicks;
}

/**
 * Context switches so far (voluntary and not) of every thread of `pids` together; null if any
 * process is gone or this is not Linux. Each one is a wake-up or a preemption: what the
 * controllers' scheduling policy changes (README, `cpu_scheduling`).
 */
export function contextSwitchesOf(pids: number[]): number | null {
  let switches = 0;
  for (const pid of pids) {
    let threads: string[];
    try {
      threads = readdirSync(`/proc/${pid}/task`);
    } catch {
      return null;
    }
    for (const thread of threads) {
      let status: string;
      try {
        status = readFileSync(`/proc/${pid}/task/${thread}/status`, 'latin1');
      } catch {
        continue; // the thread ended meanwhile: its switches left with it
      }
      switches += Number(/^voluntary_ctxt_switches:\s*(\d+)/m.exec(status)?.[1] ?? 0);
      switches += Number(/^nonvoluntary_ctxt_switches:\s*(\d+)/m.exec(status)?.[1] ?? 0);
    }
  }
  return switches;
}

/** CPU used so far by each of `pids`, in milliseconds, in their order; null if any of them is gone or unreadable. */
export function cpuMsEach(pids: number[]): number[] | null {
  const each: number[] = [];
  for (const pid of pids) {
    let line: string;
    try {
      line = readFileSync(`/proc/${pid}/stat`, 'latin1');
    } catch {
      return null; // the process is gone (or this is not Linux): its CPU is unknown, not zero
    }
    const pidTicks = parseStatTicks(line);
    if (pidTicks === null) return null;
    each.push((pidTicks * 1000) / ticksPerSecond());
  }
  return each;
}

/** CPU used so far by `pids` together, in milliseconds; null if any of them is gone or unreadable. */
export function cpuMsOf(pids: number[]): number | null {
  return cpuMsEach(pids)?.reduce((sum, cpuMs) => sum + cpuMs, 0) ?? null;
}
