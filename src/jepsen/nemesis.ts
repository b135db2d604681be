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

import { itemAt } from '../runtime/item-at.ts';
import type { HistoryRecorder } from '../check/history.ts';
import { WALL_CLOCK_REREAD_SECONDS } from './wall-clock.ts';
import { createRandom, pickIndex, sleep, type Random } from './workload.ts';

/**
 * The faults the runner can inject. `backend-restart` restarts one node's memcached (empty);
 * `backend-pause` stops every node's memcached at once (SIGSTOP) for the window, as when the
 * machine they share stalls: writes to every replica time out together. `backend-fill` has another
 * client fill every memcached until it refuses writes (see backend-fill.ts), and delete what it
 * wrote at the window's end: writes the controllers admit before they next poll memcached are
 * refused by every replica at once. `clock` steps every controller's wall clock by 1 s to about an
 * hour each (Jepsen's clock bump; libfaketime, see wall-clock.ts), forward and back alternately
 * around the nodes, and the other way round at the next clock window, so that within two windows
 * every controller, the leader included, has been stepped both ways; all go back in step at the
 * window's end. A controller keeps time on its monotonic clock: nothing may be refused. `slow`
 * delays every byte to and from one controller by 10 ms to 1.3 s (Jepsen's slow network; the
 * bytes arrive, late and in order), beyond the failure timeout at the long end. `stall` stops the
 * whole machine again and again: every controller and every memcached together (SIGSTOP) for
 * 0.2–1 s, then runs it 0.3–1 s, as a hypervisor, a throttled container or a long GC pause does.
 * No node sees another go silent while it runs itself: nothing may be refused. `disk-stall` makes
 * every write-ahead fsync of one controller, or of every one, wait 0.5–2 s first, as a disk with a
 * slow tail does: what waits for durability (acks, votes, replies) is late; nothing else is.
 * `power` cuts one node's power: its controller dies, its memcached restarts empty, and with
 * `wal_sync = write` its write-ahead file loses a random share of the records written since its
 * last fsync; it comes back in a new boot and recovers from its peers before it takes part again.
 * `power-two` cuts two nodes' power together, beyond the one machine at a time the product's
 * promise assumes: the first loses a random share of its unsynced records, the second none (its
 * page cache had reached the disk), so every acknowledged write is still on the node that stayed up
 * or on the second, and both must recover (a sound leader's log, or the most complete one) and
 * serve again without losing any.
 * `kill-all` kills every controller at once (kill -9) and starts them all again at the window's end,
 * their memcached and write-ahead files kept, as a deploy that restarts every controller or an
 * out-of-memory sweep does: no peer is left to catch the others up, each comes back from its own
 * file and its replica. `backend-kill` kills one node's memcached for the window (its port refuses
 * connections, as after a crash before its supervisor restarts it) and starts it again, empty, at
 * the window's end. `link-reset` drops every connection to and from one controller's peer port again
 * and again (every 0.1–0.4 s), new ones taken at once, as a NIC reset or a middlebox's failover does:
 * the peer is alive and redialled, so nothing may wait out a failure timeout.
 * `stop` stops one controller as an operator does (SIGTERM: it ends its clients' connections, tells
 * its peers it leaves, exits) and starts it again at the window's end: no write may wait out its
 * read lease, and a leader's followers elect another at once.
 */
export type NemesisKind =
  | 'kill' | 'pause' | 'partition' | 'backend-restart' | 'backend-pause' | 'backend-fill' | 'clock' | 'slow' | 'stall' | 'disk-stall'
  | 'power' | 'power-two' | 'kill-all' | 'backend-kill' | 'link-reset' | 'stop';

export const NEMESIS_KINDS: readonly NemesisKind[] = [
  'kill', 'pause', 'partition', 'backend-restart', 'backend-pause', 'backend-fill', 'clock', 'slow', 'stall', 'disk-stall', 'power',
  'kill-all', 'backend-kill', 'link-reset', 'power-two', 'stop',
];

/** Faults a cluster is expected to ride out without refusing a call (see report.ts, quiet refusals). */
export const UNNOTICED_KINDS: readonly NemesisKind[] = ['clock', 'stall'];

/** One planned fault. `nodes[0]` is the target; a one-way cut has `nodes = [from, to]`. */
export interface FaultPlan {
  kind: NemesisKind;
  /**
   * For partitions: `isolate` cuts a node off both ways, `one-way` cuts a single link, `bridge`
   * cuts the link between two nodes both ways while the third still reaches both (Jepsen's bridge).
   */
  variant: 'isolate' | 'one-way' | 'bridge' | null;
  /** For `clock`: the step of each of `nodes`' wall clocks, in seconds (negative: back). */
  stepsSeconds?: number[];
  /** For `slow`: how long the target's links hold each byte; for `disk-stall`: each fsync's wait; in ms. */
  delayMs?: number;
  /** For `stall`: each stop of the whole machine and the run after it, in ms. */
  stalls?: Array<{ stopMs: number; runMs: number }>;
  /** For `link-reset`: how long the links stay up after each reset, in ms. */
  resetGapsMs?: number[];
  /** For `power` and `power-two` (its first node): the share of the write-ahead records written since the last fsync that survive. */
  keptFraction?: number;
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
  /** SIGTERM: the controller stops gracefully (see Cluster.stopController). */
  stopController(id: string): Promise<void>;
  startController(id: string): Promise<void>;
  pause(id: string): void;
  resume(id: string): void;
  restartBackend(id: string): Promise<void>;
  /** Drops every connection to and from a node; new ones are taken at once. */
  resetLinks(id: string): void;
  /** Kills a node's memcached until startBackend starts it again, empty. */
  killBackend(id: string): Promise<void>;
  startBackend(id: string): Promise<void>;
  pauseBackend(id: string): void;
  resumeBackend(id: string): void;
  /** Sets a controller's wall clock `offsetSeconds` from the system's (0: back in step). */
  stepWallClock(id: string, offsetSeconds: number): void;
  fillBackend(id: string): Promise<void>;
  emptyBackend(id: string): Promise<void>;
  cut(a: string, b: string, oneWay?: boolean): void;
  isolate(id: string): void;
  /** Delays every byte to and from a node by `delayMs`; healAll ends it. */
  slow(id: string, delayMs: number): void;
  /** Delays every write-ahead fsync of a controller by `delayMs` (0: no more). */
  stallDisk(id: string, delayMs: number): void;
  /** Cuts a node's power (see `power`), keeping `keptFraction` of its unsynced records. */
  losePower(id: string, keptFraction: number): Promise<void>;
  /** Starts a controller after a power loss and waits until it has recovered from its peers. */
  powerOn(id: string): Promise<void>;
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
    const kind = itemAt(round, plans.length % kinds.length);
    const clockWindows = plans.filter((plan) => plan.kind === 'clock').length;
    plans.push({ kind, ...pickTargets(random, kind, nodes, clockWindows, lengthMs), startMs: atMs, endMs: atMs + lengthMs });
    atMs += lengthMs + jitter(random, healMs);
  }
  return plans;
}

/** A seeded shuffle (Fisher–Yates) of the kinds. */
function shuffled(random: Random, kinds: readonly NemesisKind[]): NemesisKind[] {
  const round = [...kinds];
  for (let last = round.length - 1; last > 0; last--) {
    const other = pickIndex(random, last + 1);
    const lastKind = itemAt(round, last);
    round[last] = itemAt(round, other);
    round[other] = lastKind;
  }
  return round;
}

/** The largest clock step is 2 to this power seconds. */
const CLOCK_STEP_DOUBLINGS_MAX = 12;
/** The longest delay of a slow network is 10 ms times 2 to this power. */
const SLOW_DOUBLINGS_MAX = 7;

/** Stops and runs that fill a window of `lengthMs` (at least one stop). */
function planStalls(random: Random, lengthMs: number): Array<{ stopMs: number; runMs: number }> {
  const between = (range: { min: number; max: number }): number => Math.round(range.min + random() * (range.max - range.min));
  const stalls: Array<{ stopMs: number; runMs: number }> = [];
  let usedMs = 0;
  do {
    const stall = { stopMs: between(STALL_STOP_MS), runMs: between(STALL_RUN_MS) };
    stalls.push(stall);
    usedMs += stall.stopMs + stall.runMs;
  } while (usedMs + STALL_STOP_MS.max + STALL_RUN_MS.max <= lengthMs);
  return stalls;
}

/** The gaps between resets of every link of a node that fill a window of `lengthMs` (at least one reset). */
function planResetGaps(random: Random, lengthMs: number): number[] {
  const gapsMs: number[] = [];
  let usedMs = 0;
  do {
    const gapMs = Math.round(RESET_GAP_MS.min + random() * (RESET_GAP_MS.max - RESET_GAP_MS.min));
    gapsMs.push(gapMs);
    usedMs += gapMs;
  } while (usedMs + RESET_GAP_MS.max <= lengthMs);
  return gapsMs;
}

/** How long a node's links stay up between two resets of a `link-reset`, in ms. */
const RESET_GAP_MS = { min: 100, max: 400 } as const;

function jitter(random: Random, ms: number): number {
  return Math.round(ms * (0.75 + random() * 0.5));
}

/** The shortest and longest wait before each fsync of a `disk-stall`, in ms. */
const DISK_STALL_MS = { min: 500, max: 2000 } as const;

/** The shortest and longest whole-machine stop of a `stall`, and of the run between two, in ms. */
const STALL_STOP_MS = { min: 200, max: 1000 } as const;
const STALL_RUN_MS = { min: 300, max: 1000 } as const;

/** `clockWindows`: how many clock faults were planned before this one. */
function pickTargets(
  random: Random, kind: NemesisKind, nodes: readonly string[], clockWindows: number, lengthMs: number,
): Pick<FaultPlan, 'variant' | 'nodes' | 'stepsSeconds' | 'delayMs' | 'stalls' | 'resetGapsMs' | 'keptFraction'> {
  const target = itemAt(nodes, pickIndex(random, nodes.length));
  if (kind === 'power') return { variant: null, nodes: [target], keptFraction: random() };
  if (kind === 'power-two') {
    const others = nodes.filter((node) => node !== target);
    return { variant: null, nodes: [target, itemAt(others, pickIndex(random, others.length))], keptFraction: random() };
  }
  if (kind === 'backend-pause' || kind === 'backend-fill' || kind === 'kill-all') return { variant: null, nodes: [...nodes] };
  if (kind === 'stall') return { variant: null, nodes: [...nodes], stalls: planStalls(random, lengthMs) };
  if (kind === 'link-reset') return { variant: null, nodes: [target], resetGapsMs: planResetGaps(random, lengthMs) };
  if (kind === 'disk-stall') {
    const delayMs = Math.round(DISK_STALL_MS.min + random() * (DISK_STALL_MS.max - DISK_STALL_MS.min));
    // One disk in two windows of three, every disk in the third.
    return { variant: null, nodes: random() < 2 / 3 ? [target] : [...nodes], delayMs };
  }
  if (kind === 'clock') {
    // 1 s to 68 min, as likely within each power of two; the sign alternates by node and window.
    const stepsSeconds = nodes.map((_, index) => {
      const magnitude = Math.round(2 ** (random() * CLOCK_STEP_DOUBLINGS_MAX));
      return (index + clockWindows) % 2 === 0 ? magnitude : -magnitude;
    });
    return { variant: null, nodes: [...nodes], stepsSeconds };
  }
  // 10 ms to 1.3 s, as likely within each power of two.
  if (kind === 'slow') return { variant: null, nodes: [target], delayMs: Math.round(10 * 2 ** (random() * SLOW_DOUBLINGS_MAX)) };
  if (kind !== 'partition') return { variant: null, nodes: [target] };
  const shape = random();
  if (shape < 1 / 2) return { variant: 'isolate', nodes: [target] };
  const others = nodes.filter((node) => node !== target);
  return { variant: shape < 3 / 4 ? 'one-way' : 'bridge', nodes: [target, itemAt(others, pickIndex(random, others.length))] };
}

/** A short human label: `kill n2`, `isolate n1`, `cut n1→n3` (one way), `cut n1↔n3`, `clock n1 +8 s, n2 -120 s`, `slow n2 by 160 ms`. */
export function describeFault(
  plan: Pick<FaultPlan, 'kind' | 'variant' | 'nodes' | 'stepsSeconds' | 'delayMs' | 'stalls' | 'resetGapsMs'>,
): string {
  switch (plan.kind) {
    case 'kill': return `kill ${plan.nodes[0]}`;
    case 'stop': return `stop ${plan.nodes[0]}`;
    case 'power': return `power loss ${plan.nodes[0]}`;
    case 'power-two': return `power loss ${plan.nodes.join(' and ')} together`;
    case 'kill-all': return 'kill every controller';
    case 'pause': return `pause ${plan.nodes[0]}`;
    case 'backend-restart': return `restart memcached ${plan.nodes[0]}`;
    case 'backend-kill': return `kill memcached ${plan.nodes[0]}`;
    case 'link-reset': return `reset the links of ${plan.nodes[0]} ${(plan.resetGapsMs ?? []).length}×`;
    case 'backend-pause': return 'pause every memcached';
    case 'backend-fill': return 'fill every memcached';
    case 'slow': return `slow ${plan.nodes[0]} by ${plan.delayMs ?? 0} ms`;
    case 'disk-stall': return `stall the disk of ${plan.nodes.join(', ')}: each fsync waits ${plan.delayMs ?? 0} ms`;
    case 'stall': {
      const stops = (plan.stalls ?? []).map((stall) => stall.stopMs);
      return `stall the machine ${stops.length}× (${stops.join(', ')} ms)`;
    }
    case 'clock': {
      const steps = plan.nodes.map((node, index) => {
        const step = plan.stepsSeconds?.[index] ?? 0;
        return `${node} ${step >= 0 ? '+' : ''}${step} s`;
      });
      return `clock ${steps.join(', ')}`;
    }
    case 'partition':
      if (plan.variant === 'one-way') return `cut ${plan.nodes[0]}→${plan.nodes[1]}`;
      if (plan.variant === 'bridge') return `cut ${plan.nodes[0]}↔${plan.nodes[1]}`;
      return `isolate ${plan.nodes[0]}`;
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
      await applyFault(run.target, plan, run.stop);
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

async function applyFault(target: FaultTarget, plan: FaultPlan, stop: AbortSignal): Promise<void> {
  // A plan names its target first, and a partition's other side second (pickTargets).
  const node = (): string => itemAt(plan.nodes, 0);
  switch (plan.kind) {
    case 'slow':
      target.slow(node(), plan.delayMs ?? 0);
      return;
    case 'disk-stall':
      for (const each of plan.nodes) target.stallDisk(each, plan.delayMs ?? 0);
      return;
    case 'clock':
      plan.nodes.forEach((each, index) => target.stepWallClock(each, plan.stepsSeconds?.[index] ?? 0));
      // The steps reach the controllers within this: the window holds them at least that long.
      await sleep(WALL_CLOCK_REREAD_SECONDS * 1000, stop);
      return;
    case 'stall':
      for (const stall of plan.stalls ?? []) {
        if (stop.aborted) return;
        stallMachine(target, plan.nodes, 'stop');
        try {
          await sleep(stall.stopMs, stop);
        } finally {
          stallMachine(target, plan.nodes, 'run');
        }
        await sleep(stall.runMs, stop);
      }
      return;
    case 'link-reset':
      for (const gapMs of plan.resetGapsMs ?? []) {
        if (stop.aborted) return;
        target.resetLinks(node());
        await sleep(gapMs, stop);
      }
      return;
    case 'kill': return target.kill(node());
    case 'stop': return target.stopController(node());
    case 'power': return target.losePower(node(), plan.keptFraction ?? 0);
    case 'power-two':
      await Promise.all([target.losePower(node(), plan.keptFraction ?? 0), target.losePower(itemAt(plan.nodes, 1), 1)]);
      return;
    case 'kill-all':
      await Promise.all(plan.nodes.map((each) => target.kill(each)));
      return;
    case 'pause': return target.pause(node());
    case 'backend-restart': return target.restartBackend(node());
    case 'backend-kill': return target.killBackend(node());
    case 'backend-pause':
      for (const each of plan.nodes) target.pauseBackend(each);
      return;
    case 'backend-fill':
      await Promise.all(plan.nodes.map((each) => target.fillBackend(each)));
      return;
    case 'partition':
      if (plan.variant === 'isolate') target.isolate(node());
      else target.cut(node(), itemAt(plan.nodes, 1), plan.variant === 'one-way');
      return;
    default: {
      const unreachable: never = plan.kind;
      throw new Error(`unknown fault ${String(unreachable)}`);
    }
  }
}

/** Stops (or runs again) every controller and memcached of `nodes`, back to back. */
function stallMachine(target: FaultTarget, nodes: readonly string[], action: 'stop' | 'run'): void {
  for (const node of nodes) {
    if (action === 'stop') {
      target.pause(node);
      target.pauseBackend(node);
    } else {
      target.resumeBackend(node);
      target.resume(node);
    }
  }
}

async function undoFault(target: FaultTarget, plan: FaultPlan): Promise<void> {
  switch (plan.kind) {
    case 'kill':
    case 'stop':
      return target.startController(itemAt(plan.nodes, 0));
    case 'power': return target.powerOn(itemAt(plan.nodes, 0));
    case 'power-two':
      // Together: each recovers only once every peer answers.
      await Promise.all(plan.nodes.map((each) => target.powerOn(each)));
      return;
    case 'kill-all':
      await Promise.all(plan.nodes.map((each) => target.startController(each)));
      return;
    case 'pause': return target.resume(itemAt(plan.nodes, 0));
    case 'stall': return stallMachine(target, plan.nodes, 'run');
    case 'backend-restart': return; // the restart is the whole fault; the controller rebuilds
    case 'backend-kill': return target.startBackend(itemAt(plan.nodes, 0));
    case 'backend-pause':
      for (const each of plan.nodes) target.resumeBackend(each);
      return;
    case 'backend-fill':
      await Promise.all(plan.nodes.map((each) => target.emptyBackend(each)));
      return;
    case 'partition':
    case 'slow':
      return target.healAll();
    case 'link-reset': return; // each reset was the whole fault: the links took new connections at once
    case 'clock':
      for (const each of plan.nodes) target.stepWallClock(each, 0);
      return;
    case 'disk-stall':
      for (const each of plan.nodes) target.stallDisk(each, 0);
      return;
    default: {
      const unreachable: never = plan.kind;
      throw new Error(`unknown fault ${String(unreachable)}`);
    }
  }
}
