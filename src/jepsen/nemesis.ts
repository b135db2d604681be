/**
 * The nemesis: a seeded schedule of faults and the loop that carries it out on a cluster.
 *
 * Intuition: time alternates between heal windows and fault windows of a few seconds each. The
 * schedule is planned up front from the seed (pure, so a seed replays the same faults); the
 * executor applies each fault at its start, undoes it at its end, and records both in the
 * history as `{"f":"nemesis"}` events (the checkers ignore them) and as windows for the report.
 *
 * Invariants:
 * - The run starts with a heal window, so every history has a fault-free baseline.
 * - At most one fault is active at a time, and every fault is undone before the next starts and
 *   when the run stops (also on abort): nothing stays killed, paused or cut.
 * - Faults touch only processes and proxies the cluster harness started.
 */

import type { HistoryRecorder } from '../check/history.ts';
import { createRandom, pickIndex, sleep, type Random } from './workload.ts';

/**
 * The faults the runner can inject. `backend-restart` restarts one node's memcached (empty);
 * `backend-pause` stops every node's memcached at once (SIGSTOP) for the window, as when the
 * machine they share stalls: writes to every replica time out together. `backend-fill` has another
 * client fill every memcached until it refuses writes (see backend-fill.ts), and delete what it
 * wrote at the window's end: writes the controllers admit before they next poll memcached are
 * refused by every replica at once.
 */
export type NemesisKind = 'kill' | 'pause' | 'partition' | 'backend-restart' | 'backend-pause' | 'backend-fill';

export const NEMESIS_KINDS: readonly NemesisKind[] = ['kill', 'pause', 'partition', 'backend-restart', 'backend-pause', 'backend-fill'];

/** One planned fault. `nodes[0]` is the target; a one-way cut has `nodes = [from, to]`. */
export interface FaultPlan {
  kind: NemesisKind;
  /** For partitions: `isolate` cuts a node off both ways, `one-way` cuts a single link. */
  variant: 'isolate' | 'one-way' | null;
  nodes: string[];
  startMs: number;
  endMs: number;
}

/** A fault as it happened: times in ms since the run started. */
export interface FaultWindow {
  kind: NemesisKind;
  label: string;
  nodes: string[];
  startMs: number;
  /** When the undo began (the fault window's end). */
  endMs: number;
  /** When the undo finished (a restarted controller answers again). */
  healedMs: number;
}

/** What the nemesis needs of a cluster (`Cluster` from cluster.ts has it). */
export interface FaultTarget {
  kill(id: string): Promise<void>;
  startController(id: string): Promise<void>;
  pause(id: string): void;
  resume(id: string): void;
  restartBackend(id: string): Promise<void>;
  pauseBackend(id: string): void;
  resumeBackend(id: string): void;
  fillBackend(id: string): Promise<void>;
  emptyBackend(id: string): Promise<void>;
  cut(a: string, b: string, oneWay?: boolean): void;
  isolate(id: string): void;
  healAll(): void;
}

export interface PlanOptions {
  kinds: readonly NemesisKind[];
  nodes: readonly string[];
  timeMs: number;
  seed: number;
  faultMs?: number;
  healMs?: number;
}

/** Parses `kill,pause,...` (or `none` / empty); unknown names come back as an error value. */
export function parseNemesisKinds(text: string): { ok: true; kinds: NemesisKind[] } | { ok: false; error: string } {
  const names = text.split(',').map((name) => name.trim()).filter((name) => name !== '' && name !== 'none');
  const unknown = names.filter((name) => !(NEMESIS_KINDS as readonly string[]).includes(name));
  if (unknown.length > 0) return { ok: false, error: `unknown nemesis ${unknown.join(', ')} (expected ${NEMESIS_KINDS.join(', ')} or none)` };
  return { ok: true, kinds: [...new Set(names)] as NemesisKind[] };
}

/**
 * Plans the faults: heal, fault, heal, fault… Window lengths vary by ±25% around `faultMs` and
 * `healMs` (defaults 3 s and 2 s); the last fault ends at least one heal window before `timeMs`.
 * The kinds come in rounds, each a seeded shuffle of all of them, so a run with room for as many
 * windows as kinds injects every kind it was asked for.
 */
export function planNemesis(options: PlanOptions): FaultPlan[] {
  const { kinds, nodes, timeMs } = options;
  const faultMs = options.faultMs ?? 3000;
  const healMs = options.healMs ?? 2000;
  const random = createRandom(options.seed ^ 0x5eed);
  const plans: FaultPlan[] = [];
  if (kinds.length === 0 || nodes.length < 2) return plans;
  let atMs = jitter(random, healMs);
  let round: NemesisKind[] = [];
  for (;;) {
    const lengthMs = jitter(random, faultMs);
    if (atMs + lengthMs + healMs / 2 > timeMs) break;
    if (plans.length % kinds.length === 0) round = shuffled(random, kinds);
    const kind = round[plans.length % kinds.length];
    plans.push({ kind, ...pickTargets(random, kind, nodes), startMs: atMs, endMs: atMs + lengthMs });
    atMs += lengthMs + jitter(random, healMs);
  }
  return plans;
}

/** A seeded shuffle (Fisher–Yates) of the kinds. */
function shuffled(random: Random, kinds: readonly NemesisKind[]): NemesisKind[] {
  const round = [...kinds];
  for (let last = round.length - 1; last > 0; last--) {
    const other = pickIndex(random, last + 1);
    [round[last], round[other]] = [round[other], round[last]];
  }
  return round;
}

function jitter(random: Random, ms: number): number {
  return Math.round(ms * (0.75 + random() * 0.5));
}

function pickTargets(random: Random, kind: NemesisKind, nodes: readonly string[]): Pick<FaultPlan, 'variant' | 'nodes'> {
  const target = nodes[pickIndex(random, nodes.length)];
  if (kind === 'backend-pause' || kind === 'backend-fill') return { variant: null, nodes: [...nodes] };
  if (kind !== 'partition') return { variant: null, nodes: [target] };
  if (random() < 2 / 3) return { variant: 'isolate', nodes: [target] };
  const others = nodes.filter((node) => node !== target);
  return { variant: 'one-way', nodes: [target, others[pickIndex(random, others.length)]] };
}

/** A short human label: `kill n2`, `partition n1 isolated`, `cut n1→n3`. */
export function describeFault(plan: Pick<FaultPlan, 'kind' | 'variant' | 'nodes'>): string {
  switch (plan.kind) {
    case 'kill': return `kill ${plan.nodes[0]}`;
    case 'pause': return `pause ${plan.nodes[0]}`;
    case 'backend-restart': return `restart memcached ${plan.nodes[0]}`;
    case 'backend-pause': return 'pause every memcached';
    case 'backend-fill': return 'fill every memcached';
    case 'partition':
      return plan.variant === 'one-way' ? `cut ${plan.nodes[0]}→${plan.nodes[1]}` : `isolate ${plan.nodes[0]}`;
    default: {
      const unreachable: never = plan.kind;
      return String(unreachable);
    }
  }
}

export interface NemesisRun {
  plans: readonly FaultPlan[];
  target: FaultTarget;
  recorder: HistoryRecorder;
  clockMs: () => number;
  stop: AbortSignal;
  /** Told about each fault as it starts and ends (for console progress). */
  onEvent?: (message: string) => void;
}

/** Carries out the plan; resolves with the windows once the last fault is undone. */
export async function runNemesis(run: NemesisRun): Promise<FaultWindow[]> {
  const windows: FaultWindow[] = [];
  for (const plan of run.plans) {
    await sleep(plan.startMs - run.clockMs(), run.stop);
    if (run.stop.aborted) break;
    const label = describeFault(plan);
    run.recorder.note({ fault: plan.kind, label, nodes: plan.nodes, action: 'start' });
    const startMs = run.clockMs();
    run.onEvent?.(`nemesis: ${label}`);
    try {
      await applyFault(run.target, plan);
      await sleep(plan.endMs - run.clockMs(), run.stop);
    } finally {
      const endMs = run.clockMs();
      await undoFault(run.target, plan);
      const healedMs = run.clockMs();
      run.recorder.note({ fault: plan.kind, label, nodes: plan.nodes, action: 'stop' });
      run.onEvent?.(`nemesis: healed ${label}`);
      windows.push({ kind: plan.kind, label, nodes: plan.nodes, startMs, endMs, healedMs });
    }
  }
  return windows;
}

async function applyFault(target: FaultTarget, plan: FaultPlan): Promise<void> {
  const [node, other] = plan.nodes;
  switch (plan.kind) {
    case 'kill': return target.kill(node);
    case 'pause': return target.pause(node);
    case 'backend-restart': return target.restartBackend(node);
    case 'backend-pause':
      for (const each of plan.nodes) target.pauseBackend(each);
      return;
    case 'backend-fill':
      await Promise.all(plan.nodes.map((each) => target.fillBackend(each)));
      return;
    case 'partition':
      if (plan.variant === 'one-way') target.cut(node, other, true);
      else target.isolate(node);
      return;
    default: {
      const unreachable: never = plan.kind;
      throw new Error(`unknown fault ${String(unreachable)}`);
    }
  }
}

async function undoFault(target: FaultTarget, plan: FaultPlan): Promise<void> {
  switch (plan.kind) {
    case 'kill': return target.startController(plan.nodes[0]);
    case 'pause': return target.resume(plan.nodes[0]);
    case 'backend-restart': return; // the restart is the whole fault; the controller rebuilds
    case 'backend-pause':
      for (const each of plan.nodes) target.resumeBackend(each);
      return;
    case 'backend-fill':
      await Promise.all(plan.nodes.map((each) => target.emptyBackend(each)));
      return;
    case 'partition': return target.healAll();
    default: {
      const unreachable: never = plan.kind;
      throw new Error(`unknown fault ${String(unreachable)}`);
    }
  }
}
