/**
 * mckv's fault-injecting test runner (Jepsen-like): start a real cluster, run concurrent clients
 * while a seeded nemesis injects faults, heal, then judge the recorded history against the
 * promise of the cluster's mode and write a report.
 *
 * Intuition: clients record what they asked and what they were told; the nemesis breaks things
 * on a schedule; at the end everything is healed and the cluster gets time to settle. Then
 * linearizability and sequential runs go to their checkers (after one last read of every key
 * through every controller, which catches lost writes), and eventual runs must converge: every
 * controller answers every key the same within a bounded wait.
 *
 * Invariants:
 * - Everything the run starts (cluster processes, proxies, sockets, timers) is stopped before
 *   `runJepsen` settles, on success, on error and on abort.
 * - Exit codes: 0 the promise held, 1 a violation, 2 the checker gave up (or the cluster never
 *   answered again, so nothing could be judged).
 */

import { setMaxListeners } from 'node:events';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { checkLinearizability } from '../check/linearizability.ts';
import { checkSequential } from '../check/sequential.ts';
import { checkCausal } from '../check/causal.ts';
import { HistoryRecorder, parseHistory, type CheckResult } from '../check/history.ts';
import { itemAt } from '../runtime/item-at.ts';
import { TextClient } from '../client/text-client.ts';
import { isOrderedMode, type Mode } from '../consistency/types.ts';
import type { WalSync } from '../config.ts';
import { Cluster, definedOnly, repoRoot } from './cluster.ts';
import { planNemesis, runNemesis, type FaultPlan, type FaultWindow, type NemesisKind } from './nemesis.ts';
import { countOutcomes, summarizeFaults, summarizeLatency, summarizeRefusals, writeReport, type RunSummary } from './report.ts';
import { BULK_DEPTH_MAX, bulkKeyName, createRandom, DEFAULT_OP_WEIGHTS, runBulkClient, runClient, sleep, type CallRecord, type ClientOptions, type JepsenWorkload, type WorkloadOp } from './workload.ts';

/** Options of one run; only `mode` is required. */
export interface JepsenOptions {
  mode: Mode;
  nemesis?: readonly NemesisKind[];
  /** How long clients run, in ms (default 10 s). */
  timeMs?: number;
  /** Concurrent clients, spread round-robin over the three controllers (default 6). */
  clients?: number;
  /** Number of keys the clients share (default 3). */
  keys?: number;
  /** Calls each client keeps in flight on its one connection (default 1: one at a time). */
  pipeline?: number;
  /**
   * 'mixed' (default): every client runs the mixed workload. 'bulk': the last `bulkClients` of
   * them are bulk loaders instead, each pipelining bursts of `bulkDepth` sets (see workload.ts).
   */
  workload?: JepsenWorkload;
  /** Bulk loaders in a bulk run (default: half the clients, rounded up). */
  bulkClients?: number;
  /** Sets in flight at once on each bulk loader's connection (default 256). */
  bulkDepth?: number;
  /** Seeds the workload and the nemesis schedule (default: from the clock). */
  seed?: number;
  /** Report folder (default reports/<mode>-<timestamp>/ under the repository). */
  reportDir?: string;
  backend?: 'memcache' | 'memory';
  /** false runs the deliberately broken cluster that does not replicate. */
  replication?: boolean;
  heartbeatIntervalMs?: number;
  failureTimeoutMs?: number;
  /** Compact each write-ahead log once this many applied entries follow its snapshot (default 10,000). */
  compactAfterEntries?: number;
  /** config.ini wal_sync (default write, as the product's). */
  walSync?: WalSync;
  /** config.ini read_leases (default true: on, as the product ships). */
  readLeases?: boolean;
  /** Memory of each memcached, MB (its -m; default 256): the `backend-fill` fault fills all of it. */
  memcachedMemoryMb?: number;
  /** A call with no reply after this long is indeterminate (default 1000). */
  callTimeoutMs?: number;
  /** Pause between a client's calls, drawn in [0, thinkMs] (default 10). */
  thinkMs?: number;
  /** Mean length of fault and heal windows (defaults 3000 and 2000). */
  faultMs?: number;
  healMs?: number;
  opWeights?: Readonly<Record<WorkloadOp, number>>;
  /** Checker budget (default 60 s); past it the verdict is unknown. */
  checkTimeoutMs?: number;
  /** How long every controller gets to answer again after the heal (default 20 s). */
  settleTimeoutMs?: number;
  /** Eventual mode: how long the replicas get to converge after the heal (default 15 s). */
  convergenceTimeoutMs?: number;
  /** Aborting stops the run early; everything is cleaned up and `runJepsen` rejects. */
  signal?: AbortSignal;
  /** Progress lines (default: none). */
  log?: (line: string) => void;
}

/** What a run found. */
export interface RunResult {
  exitCode: 0 | 1 | 2;
  check: CheckResult;
  summary: RunSummary;
  reportDir: string;
}

type Resolved = Required<Omit<JepsenOptions, 'signal' | 'reportDir'>> & { reportDir: string; signal: AbortSignal | undefined };

/** Process ids after an `info` start here, above every client number the run uses. */
const FRESH_PROCESS_BASE = 1_000_000;
/** Bulk loader c's slot s records as process BULK_PROCESS_BASE + c × bulkDepth + s. */
const BULK_PROCESS_BASE = 500_000;
/** Runs one fault-injection test and writes its report. */
export async function runJepsen(options: JepsenOptions): Promise<RunResult> {
  const resolved = resolveOptions(options);
  mkdirSync(resolved.reportDir, { recursive: true });
  const recorder = new HistoryRecorder({ file: path.join(resolved.reportDir, 'history.jsonl'), freshProcessBase: FRESH_PROCESS_BASE });
  let cluster: Cluster | null = null;
  try {
    resolved.log(`starting a ${resolved.mode} cluster (${resolved.backend}${resolved.replication ? '' : ', NO replication'})`);
    cluster = await Cluster.start({
      mode: resolved.mode, backend: resolved.backend, proxies: true, replication: resolved.replication,
      heartbeatIntervalMs: resolved.heartbeatIntervalMs, failureTimeoutMs: resolved.failureTimeoutMs,
      compactAfterEntries: resolved.compactAfterEntries, walSync: resolved.walSync,
      extraConfig: [`read_leases = ${resolved.readLeases ? 'on' : 'off'}`],
      memcachedMemoryMb: resolved.memcachedMemoryMb,
      wallClockSteps: resolved.nemesis.includes('clock'),
      diskStalls: resolved.nemesis.includes('disk-stall'),
    });
    throwIfAborted(resolved.signal);
    const phase = await runPhase(resolved, cluster, recorder);
    throwIfAborted(resolved.signal);
    const judged = await judge(resolved, cluster, recorder, phase.healedAt);
    await recorder.close();
    await stopCluster(cluster, resolved.reportDir);
    // Causal mode is judged twice: the replicas converged, and the history is causally consistent.
    const historyToo = judged.kind === 'history' || (resolved.mode === 'causal' && judged.check.verdict === 'ok');
    const check = historyToo ? checkHistory(resolved, recorder) : judged.check;
    return finish(resolved, phase, check, judged.convergenceMs);
  } finally {
    if (cluster) await stopCluster(cluster, resolved.reportDir);
    await recorder.close().catch(() => undefined);
  }
}

function resolveOptions(options: JepsenOptions): Resolved {
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const resolved: Resolved = {
    nemesis: [], timeMs: 10_000, clients: 6, keys: 3, pipeline: 1, seed: Date.now() % 2 ** 31,
    workload: 'mixed', bulkClients: Math.ceil((options.clients ?? 6) / 2), bulkDepth: 256,
    backend: 'memcache', replication: true, heartbeatIntervalMs: 50, failureTimeoutMs: 500, compactAfterEntries: 10_000, walSync: 'write',
    readLeases: true, memcachedMemoryMb: 256, callTimeoutMs: 1000, thinkMs: 10, faultMs: 3000, healMs: 2000, opWeights: DEFAULT_OP_WEIGHTS,
    checkTimeoutMs: 60_000, settleTimeoutMs: 20_000, convergenceTimeoutMs: 15_000,
    log: () => undefined,
    ...definedOnly(options),
    reportDir: options.reportDir ?? path.join(repoRoot, 'reports', `${options.mode}-${stamp}`),
    signal: options.signal,
  };
  if (resolved.workload === 'mixed') resolved.bulkClients = 0;
  resolved.bulkClients = Math.min(resolved.clients, Math.max(0, Math.floor(resolved.bulkClients)));
  resolved.bulkDepth = Math.floor(resolved.bulkDepth);
  if (!(resolved.bulkDepth >= 1 && resolved.bulkDepth <= BULK_DEPTH_MAX)) throw new Error(`bulkDepth must be 1 to ${BULK_DEPTH_MAX}`);
  // Process ids: the mixed clients' slots, then one final reader per controller, below the bulk loaders'.
  const mixedProcesses = resolved.clients * resolved.pipeline + 3;
  if (mixedProcesses > BULK_PROCESS_BASE || BULK_PROCESS_BASE + resolved.clients * resolved.bulkDepth > FRESH_PROCESS_BASE) {
    throw new Error(`${resolved.clients} clients × pipeline ${resolved.pipeline} or bulk depth ${resolved.bulkDepth}: too many processes to number`);
  }
  return resolved;
}

/** The options that were given a value (an explicit `undefined` keeps the default). */
function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new Error('the run was aborted');
}

/** Stops the cluster, keeping its processes' logs in the report folder (`logs/`), for reading a failure. */
async function stopCluster(cluster: Cluster, reportDir: string): Promise<void> {
  await cluster.stop({ keepLogsIn: path.join(reportDir, 'logs') });
}

interface PhaseResult {
  calls: CallRecord[];
  windows: FaultWindow[];
  durationMs: number;
  /** performance.now() when every fault had been undone. */
  healedAt: number;
}

/** The longest the clients run past `timeMs` while a fault that overran its window is undone. */
const OVERRUN_WAIT_MAX_MS = 30_000;

/**
 * Clients and nemesis run for `timeMs` (or until aborted); then everything is healed. A fault that
 * overran its window (a fill or a restart slowed by a busy machine) is cut short at `timeMs`, and
 * the clients run on until half a heal window after it is undone: every run ends, as planNemesis
 * plans it, with time with no fault on, which is where refusals are judged.
 */
async function runPhase(options: Resolved, cluster: Cluster, recorder: HistoryRecorder): Promise<PhaseResult> {
  const startMs = performance.now();
  const clockMs = (): number => performance.now() - startMs;
  const stop = new AbortController();
  /** No new fault after this; aborted at `timeMs`, or with `stop`. */
  const faults = new AbortController();
  // Every client slot waits on it between calls (see sleep).
  setMaxListeners(options.clients * options.pipeline + options.bulkClients + 16, stop.signal);
  const onAbort = (): void => stop.abort();
  options.signal?.addEventListener('abort', onAbort, { once: true });
  stop.signal.addEventListener('abort', () => faults.abort(), { once: true });
  // A client or the nemesis that throws stops the whole phase; the error is rethrown after cleanup.
  let failure: { error: unknown } | null = null;
  const guard = (promise: Promise<unknown>): Promise<void> => promise.then(() => undefined, (error: unknown) => {
    failure ??= { error };
    stop.abort();
  });
  const calls: CallRecord[] = [];
  const clients = startClients(options, cluster, { recorder, clockMs, calls, stop: stop.signal }).map(guard);
  let windows: FaultWindow[] = [];
  const nemesis = guard(runNemesis({
    plans: planFor(options, cluster), target: cluster, recorder, clockMs, stop: faults.signal, onEvent: options.log,
  }).then((done) => { windows = done; }));
  try {
    await sleep(options.timeMs, stop.signal);
    faults.abort();
    await nemesis;
    const lastHealedMs = Math.max(0, ...windows.map((window) => window.healedMs));
    const tailEndMs = Math.min(lastHealedMs + options.healMs / 2, options.timeMs + OVERRUN_WAIT_MAX_MS);
    if (tailEndMs > clockMs()) options.log(`a fault overran its window: clients run on until ${(tailEndMs / 1000).toFixed(1)} s`);
    await sleep(tailEndMs - clockMs(), stop.signal);
  } finally {
    stop.abort();
    options.signal?.removeEventListener('abort', onAbort);
  }
  await Promise.all([nemesis, ...clients]);
  const durationMs = clockMs();
  await healEverything(cluster);
  if (failure !== null) throw (failure as { error: unknown }).error;
  options.log(`clients stopped after ${(durationMs / 1000).toFixed(1)} s: ${calls.length} calls`);
  return { calls, windows, durationMs, healedAt: performance.now() };
}

type Shared = Pick<ClientOptions, 'recorder' | 'clockMs' | 'calls' | 'stop'>;

/**
 * Client i talks to controller i mod 3; its operations are drawn from its own seeded stream. The
 * last `bulkClients` clients are bulk loaders (so with 6 clients and 3 loaders, one per controller).
 */
function startClients(options: Resolved, cluster: Cluster, shared: Shared): Promise<void>[] {
  return Array.from({ length: options.clients }, (_, client) => {
    const node = itemAt(cluster.nodes, client % cluster.nodes.length);
    if (isBulkLoader(options, client)) {
      return runBulkClient({
        ...shared, client, node: node.id, port: node.clientPort, random: createRandom(options.seed * 31 + client),
        callTimeoutMs: options.callTimeoutMs, thinkMs: options.thinkMs, depth: options.bulkDepth,
        processBase: BULK_PROCESS_BASE + client * options.bulkDepth,
      });
    }
    return runClient({
      ...shared, client, node: node.id, port: node.clientPort, keys: keyNames(options.keys),
      random: createRandom(options.seed * 31 + client), weights: options.opWeights,
      callTimeoutMs: options.callTimeoutMs, thinkMs: options.thinkMs, pipeline: options.pipeline,
    });
  });
}

/** The fault schedule; the embedded store cannot be restarted, paused or filled, so those are left out there. */
function planFor(options: Resolved, cluster: Cluster): FaultPlan[] {
  const memcachedOnly: readonly NemesisKind[] = ['backend-restart', 'backend-pause', 'backend-fill'];
  return planNemesis({
    kinds: options.backend === 'memory' ? options.nemesis.filter((kind) => !memcachedOnly.includes(kind)) : options.nemesis,
    nodes: cluster.nodes.map((node) => node.id), timeMs: options.timeMs, seed: options.seed,
    faultMs: options.faultMs, healMs: options.healMs,
  });
}

function isBulkLoader(options: Resolved, client: number): boolean {
  return client >= options.clients - options.bulkClients;
}

/** Every key the bulk loaders write (none in a mixed run). */
function bulkKeys(options: Resolved): string[] {
  const keys: string[] = [];
  for (let client = options.clients - options.bulkClients; client < options.clients; client++) {
    for (let slot = 0; slot < options.bulkDepth; slot++) keys.push(bulkKeyName(client, slot));
  }
  return keys;
}

/** Every key the final reads and the convergence check look at: the shared ones, then the bulk loaders'. */
function judgedKeys(options: Resolved): string[] {
  return [...keyNames(options.keys), ...bulkKeys(options)];
}

/** Key names shared by the clients. */
export function keyNames(count: number): string[] {
  return Array.from({ length: Math.max(1, count) }, (_, index) => `jepsen-k${index}`);
}

/** Undo any fault: heal every link, resume every node, restart any controller that is down. */
async function healEverything(cluster: Cluster): Promise<void> {
  cluster.healAll();
  for (const node of cluster.nodes) cluster.resume(node.id);
  for (const node of cluster.nodes) {
    const child = node.controller;
    if (child === null || child.exitCode !== null || child.signalCode !== null) await cluster.startController(node.id);
  }
}

type Judged =
  | { kind: 'history'; convergenceMs: null }
  | { kind: 'done'; check: CheckResult; convergenceMs: number | null };

/** After the heal: settle, then final reads (linearizability, sequential) or convergence (eventual). */
async function judge(options: Resolved, cluster: Cluster, recorder: HistoryRecorder, healedAt: number): Promise<Judged> {
  const settled = await waitUntilServing(cluster, options.settleTimeoutMs, options.callTimeoutMs);
  options.log(settled.length === 0 ? 'every controller serves again' : `not serving after the heal: ${settled.join(', ')}`);
  // Eventual and causal modes: convergence (causal mode's history is checked afterwards too).
  if (!isOrderedMode(options.mode)) return checkConvergence(options, cluster, healedAt);
  await finalReads(options, cluster, recorder);
  return { kind: 'history', convergenceMs: null };
}

/** One `get` through a fresh connection; the value, `null` for absent, or an error reply. */
async function readKey(
  port: number,
  key: string,
  timeoutMs: number,
): Promise<{ ok: true; value: string | null } | { ok: false; error: string }> {
  try {
    const reply = await TextClient.requestOnce('127.0.0.1', port, `get ${key}\r\n`, 'get', timeoutMs);
    const last = reply.lines[reply.lines.length - 1] ?? '';
    if (last !== 'END') return { ok: false, error: last };
    const found = reply.values.find((value) => value.key === key);
    return { ok: true, value: found ? found.value.toString('latin1') : null };
  } catch (error) {
    return { ok: false, error: error instanceof Error ? error.message : String(error) };
  }
}

/** Waits until every controller answers a read; returns the ones that never did. */
async function waitUntilServing(cluster: Cluster, timeoutMs: number, callTimeoutMs: number): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  let waiting = cluster.nodes.map((node) => node.id);
  while (waiting.length > 0 && Date.now() < deadline) {
    const answers = await Promise.all(waiting.map((id) => readKey(cluster.node(id).clientPort, 'jepsen-probe', callTimeoutMs)));
    waiting = waiting.filter((_, index) => !itemAt(answers, index).ok);
    if (waiting.length > 0) await sleep(100);
  }
  return waiting;
}

/** Every controller reads every key once, recorded: a lost acknowledged write shows here. */
async function finalReads(options: Resolved, cluster: Cluster, recorder: HistoryRecorder): Promise<void> {
  await Promise.all(cluster.nodes.map(async (node, index) => {
    const client = options.clients * options.pipeline + index;
    for (const key of judgedKeys(options)) {
      const handle = recorder.invoke(client, 'read', key, null, `final.${node.id}.${key}`); // a connection of its own
      const answer = await readKey(node.clientPort, key, options.callTimeoutMs * 2);
      if (answer.ok) recorder.ok(handle, answer.value, { node: node.id, final: true });
      else recorder.info(handle, null, { node: node.id, final: true, error: answer.error });
    }
  }));
}

/** Eventual mode: every controller must answer every key the same, within the bound. */
async function checkConvergence(options: Resolved, cluster: Cluster, healedAt: number): Promise<Judged> {
  const deadlineMs = performance.now() + options.convergenceTimeoutMs;
  let differences: string[] = [];
  for (;;) {
    differences = await compareReplicas(options, cluster);
    if (differences.length === 0) {
      const convergenceMs = Math.round(performance.now() - healedAt);
      options.log(`replicas converged ${convergenceMs} ms after the heal`);
      return { kind: 'done', check: { verdict: 'ok' }, convergenceMs };
    }
    if (performance.now() > deadlineMs) break;
    await sleep(100);
  }
  const unreadable = differences.some((line) => line.includes('unreadable'));
  const detail = `replicas did not converge within ${options.convergenceTimeoutMs} ms after the heal:\n${differences.map((line) => `  ${line}`).join('\n')}`;
  return { kind: 'done', check: { verdict: unreadable ? 'unknown' : 'violation', detail }, convergenceMs: null };
}

/** Keys one convergence read asks for at once (a bulk run has hundreds). */
const COMPARE_KEYS_PER_GET = 100;

/** One line per key on which the controllers disagree (or cannot be read). */
async function compareReplicas(options: Resolved, cluster: Cluster): Promise<string[]> {
  const differences: string[] = [];
  const keys = judgedKeys(options);
  for (let start = 0; start < keys.length; start += COMPARE_KEYS_PER_GET) {
    const batch = keys.slice(start, start + COMPARE_KEYS_PER_GET);
    const answers = await Promise.all(cluster.nodes.map((node) => readKeys(node.clientPort, batch, options.callTimeoutMs)));
    for (const key of batch) {
      const shown = answers.map((answer, index) => {
        const value = answer.ok ? answer.values.get(key) ?? null : null;
        return `${itemAt(cluster.nodes, index).id}=${answer.ok ? (value === null ? 'absent' : JSON.stringify(value)) : `unreadable (${answer.error})`}`;
      });
      const values = new Set(answers.map((answer) => (answer.ok ? `v:${answer.values.get(key) ?? null}` : 'error')));
      if (values.size !== 1 || values.has('error')) differences.push(`${key}: ${shown.join(', ')}`);
    }
  }
  return differences;
}

/** One multi-key `get` through a fresh connection: the values found, or an error reply. */
async function readKeys(
  port: number, keys: readonly string[], timeoutMs: number,
): Promise<{ ok: true; values: Map<string, string> } | { ok: false; error: string }> {
  try {
    const reply = await TextClient.requestOnce('127.0.0.1', port, `get ${keys.join(' ')}\r\n`, 'get', timeoutMs);
    const last = reply.lines[reply.lines.length - 1] ?? '';
    if (last !== 'END') return { ok: false, error: last };
    return { ok: true, values: new Map(reply.values.map((value) => [value.key, value.value.toString('latin1')])) };
  } catch (error) {
    return { ok: false, error: error instanceof Error ? error.message : String(error) };
  }
}

/** Runs the mode's checker on the recorded history. */
function checkHistory(options: Resolved, recorder: HistoryRecorder): CheckResult {
  const parsed = parseHistory(recorder.lines().join('\n'));
  if (!parsed.ok) return { verdict: 'unknown', detail: `the recorded history does not parse (line ${parsed.line}): ${parsed.error}` };
  options.log(`checking ${parsed.history.operations.length} operations for ${options.mode}`);
  const checkOptions = { timeoutMs: options.checkTimeoutMs };
  if (options.mode === 'causal') return checkCausal(parsed.history);
  return options.mode === 'sequential' ? checkSequential(parsed.history, checkOptions) : checkLinearizability(parsed.history, checkOptions);
}

function checkerName(mode: Resolved['mode']): string {
  if (mode === 'eventual') return 'convergence after heal';
  if (mode === 'causal') return 'convergence after heal, then causal checker';
  return `${mode === 'sequential' ? 'sequential' : 'linearizability'} checker`;
}

function finish(options: Resolved, phase: PhaseResult, check: CheckResult, convergenceMs: number | null): RunResult {
  const exitCode = ({ ok: 0, violation: 1, unknown: 2 } as const)[check.verdict];
  const summary: RunSummary = {
    mode: options.mode, nemesis: [...options.nemesis], seed: options.seed, clients: options.clients, pipeline: options.pipeline,
    keys: options.keys, walSync: options.walSync, ...(options.readLeases && options.mode === 'linearizability' ? { readLeases: true as const } : {}),
    ...(options.bulkClients > 0 ? { bulk: { clients: options.bulkClients, depth: options.bulkDepth } } : {}),
    durationMs: Math.round(phase.durationMs), verdict: check.verdict, exitCode,
    checker: checkerName(options.mode),
    detail: check.detail ?? null,
    counts: countOutcomes(phase.calls),
    latency: { ok: summarizeLatency(phase.calls.filter((call) => call.outcome === 'ok')), all: summarizeLatency(phase.calls) },
    faults: summarizeFaults(phase.windows, phase.calls),
    refusals: summarizeRefusals(phase.windows, phase.calls),
    convergenceMs,
  };
  writeReport(options.reportDir, summary, phase.calls);
  return { exitCode, check, summary, reportDir: options.reportDir };
}
