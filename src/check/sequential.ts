/**
 * Sequential-consistency checker for register histories, per key.
 *
 * Intuition: a history is sequentially consistent if there is one total order of its operations
 * that keeps each process's own order and in which the register model explains every output.
 * Real time is ignored: a read may return a stale value as long as everyone sees the writes in
 * one order. The search is the linearizability search with "process order" in place of real-time
 * precedence: the candidates to go next are the next unplaced operation of each process. A
 * placed prefix is described exactly by how far each process has got, so the memo is a set of
 * (per-process positions, register state) pairs: reaching one twice means its future was already
 * explored.
 *
 * What is checked is per-key sequential consistency. Unlike linearizability, sequential
 * consistency is not compositional: every key can be sequentially consistent on its own while no
 * single order explains all keys together (e.g. p1 writes x then reads y absent, p2 writes y then
 * reads x absent). A whole-store check would search over all keys at once, which is far more
 * costly; per-key checking finds every per-key violation and is what mckv's tests ask for.
 *
 * Pruning, all exact: a value still needed but no longer producible ends a branch (ValueSupply;
 * an append counts as a producer of every value ending in its suffix, and placing one re-checks
 * the needed values that end in it); an operation that can never change the register is placed
 * greedily with no branching (placeFree); candidates are tried in call-time order, so nearly
 * linearizable histories are decided at once. Without the starvation check at every place where
 * a value can disappear, one process stuck early (a stale read whose value was just overwritten)
 * let the search run every other process to the end before backtracking: a 15 s fault run's
 * ~2,400 operations per key took more than 60 s; with it they take about 0.1 s. On Porcupine's etcd histories this decides 101 of 102 in about 2 s of budget
 * each (the 23 linearizable ones and 78 stale-read ones are sequentially consistent).
 *
 * Indeterminate operations are last in their process (the parser enforces it) and may be left
 * out: the search succeeds once every determinate operation is placed. Indeterminate reads are
 * dropped, as they constrain nothing.
 */

import { isIndeterminate, type CheckResult, type History, type Operation, type RegisterValue } from './history.ts';
import { checkKeyLinearizable, checkPerKey, type CheckOptions, type KeyOutcome, type StuckPoint } from './linearizability.ts';
import { INITIAL_STATE, step } from './model.ts';

const DEADLINE_CHECK_INTERVAL = 1024;

/** Check that a history is sequentially consistent, key by key. */
export function checkSequential(history: History, options: CheckOptions): CheckResult {
  return checkPerKey(history, options, checkKeySequential, 'sequentially consistent');
}

/** Each process's operations on one key, in the process's order. */
function byProcess(ops: Operation[]): Operation[][] {
  const queues = new Map<number, Operation[]>();
  for (const op of ops) {
    if (op.f === 'read' && isIndeterminate(op)) continue;
    const queue = queues.get(op.process);
    if (queue) queue.push(op);
    else queues.set(op.process, [op]);
  }
  return [...queues.values()].map((queue) => queue.sort((a, b) => a.id - b.id));
}

/**
 * Starvation pruning: a value that some unplaced operation needs to find in the register (a read
 * of it, a cas expecting it that succeeded) but that the register does not hold and no unplaced
 * operation can produce is a dead end, however the rest is ordered. Counts are kept per value;
 * `null` is produced by deletes. An append may build any value that ends in its suffix (an
 * over-approximation, so the pruning stays exact).
 */
class ValueSupply {
  private readonly producers = new Map<RegisterValue, number>();
  private readonly consumers = new Map<RegisterValue, number>();
  /** Unplaced appends that may succeed, by suffix; a value ending in one may still appear. */
  private readonly suffixes = new Map<string, number>();
  private readonly suffixLengths = new Set<number>();

  /** Needed values by each append suffix they end with: placing that append may starve them. */
  private readonly neededBySuffix = new Map<string, RegisterValue[]>();

  constructor(queues: Operation[][]) {
    for (const queue of queues) for (const op of queue) this.count(op, 1);
    for (const value of this.consumers.keys()) {
      if (value === null) continue;
      for (const length of this.suffixLengths) {
        const suffix = value.slice(Math.max(0, value.length - length));
        if (!this.suffixes.has(suffix)) continue;
        const values = this.neededBySuffix.get(suffix);
        if (values) values.push(value);
        else this.neededBySuffix.set(suffix, [value]);
      }
    }
  }

  /**
   * After `op` was placed (and counted out), turning the register from `before` into `state`:
   * whether some value still needed can no longer appear. Only the values `op` could have
   * supplied are looked at: the one it overwrote, the one it writes, and for an append every
   * needed value ending in its suffix.
   */
  starvedBy(op: Operation, before: RegisterValue, state: RegisterValue): boolean {
    if (this.starved(before, state)) return true;
    const produced = producedValue(op);
    if (produced !== undefined && this.starved(produced, state)) return true;
    const suffix = appendedSuffix(op);
    if (suffix === undefined) return false;
    return (this.neededBySuffix.get(suffix) ?? []).some((value) => this.starved(value, state));
  }

  /** Account for placing (`delta = -1`) or unplacing (`+1`) an operation. */
  count(op: Operation, delta: number): void {
    const produced = producedValue(op);
    if (produced !== undefined) this.producers.set(produced, (this.producers.get(produced) ?? 0) + delta);
    const needed = neededValue(op);
    if (needed !== undefined) this.consumers.set(needed, (this.consumers.get(needed) ?? 0) + delta);
    const suffix = appendedSuffix(op);
    if (suffix !== undefined) {
      this.suffixes.set(suffix, (this.suffixes.get(suffix) ?? 0) + delta);
      this.suffixLengths.add(suffix.length);
    }
  }

  /** Whether `value` is needed later but can no longer appear, given the register holds `state`. */
  private starved(value: RegisterValue, state: RegisterValue): boolean {
    return value !== state && (this.consumers.get(value) ?? 0) > 0 && !this.producible(value);
  }

  /** Whether some unplaced operation may still leave `value` in the register. */
  private producible(value: RegisterValue): boolean {
    if ((this.producers.get(value) ?? 0) > 0) return true;
    if (value === null) return false;
    for (const length of this.suffixLengths) {
      if (length <= value.length && (this.suffixes.get(value.slice(value.length - length)) ?? 0) > 0) return true;
    }
    return false;
  }
}

/** The suffix an append may add (not one that returned false). */
function appendedSuffix(op: Operation): string | undefined {
  if (op.input.f !== 'append') return undefined;
  return op.output.kind === 'done' && op.output.result === false ? undefined : op.input.value;
}

/** The value an operation may leave in the register, if it writes one. */
function producedValue(op: Operation): RegisterValue | undefined {
  switch (op.input.f) {
    case 'write': return op.input.value;
    case 'cas': return op.output.kind === 'done' && op.output.result === false ? undefined : op.input.value;
    case 'delete': return null;
    case 'read':
    case 'append': return undefined;
    default: {
      const unreachable: never = op.input;
      return unreachable;
    }
  }
}

/** The value an operation must find in the register, if one. */
function neededValue(op: Operation): RegisterValue | undefined {
  if (op.output.kind === 'read') return op.output.value;
  if (op.input.f === 'cas' && op.output.kind === 'done' && op.output.result === true) return op.input.expected;
  return undefined;
}

/** The search's position: how far each process has got, the register, and what is placed. */
interface Position {
  queues: Operation[][];
  positions: Int32Array;
  state: RegisterValue;
  supply: ValueSupply;
  visited: Set<string>;
}

/**
 * Whether some process invoked an operation at the very time its previous one returned. Real
 * time treats equal times as concurrent, process order does not, so then a linearization need
 * not respect process order.
 */
function hasProcessTie(queues: Operation[][]): boolean {
  return queues.some((queue) => queue.some((op, index) => index > 0 && queue[index - 1].return >= op.call));
}

/**
 * Depth-first search over per-process positions for one key. A linearizable key is sequentially
 * consistent (a linearization respects process order when no process has a time tie), so the
 * faster real-time search runs first, with a tenth of the remaining budget (a history that is
 * sequentially consistent but not linearizable can make that search slow to give up; the
 * process-order search usually decides it at once).
 */
export function checkKeySequential(ops: Operation[], deadlineMs: number): KeyOutcome {
  const queues = byProcess(ops);
  const now = performance.now();
  if (!hasProcessTie(queues) && checkKeyLinearizable(ops, now + (deadlineMs - now) / 10).verdict === 'ok') {
    return { verdict: 'ok' };
  }
  const search: Position = {
    queues, positions: new Int32Array(queues.length), state: INITIAL_STATE, supply: new ValueSupply(queues), visited: new Set(),
  };
  const stack: { process: number; rank: number; state: RegisterValue }[] = [];
  let remaining = queues.reduce((sum, queue) => sum + queue.filter((op) => !isIndeterminate(op)).length, 0);
  let tryFrom = 0;
  let deepest: StuckPoint | null = null;
  let iterations = 0;
  while (remaining > 0) {
    if (++iterations % DEADLINE_CHECK_INTERVAL === 0 && performance.now() > deadlineMs) return { verdict: 'unknown' };
    const placed = placeNext(search, tryFrom);
    if (placed !== null) {
      stack.push({ process: placed.process, rank: placed.rank, state: placed.before });
      if (!isIndeterminate(placed.op)) remaining--;
      tryFrom = 0;
      continue;
    }
    if (deepest === null || stack.length > deepest.prefix.length) deepest = stuckAt(search, stack);
    const top = stack.pop();
    if (top === undefined) return { verdict: 'violation', stuck: deepest };
    const undone = queues[top.process][--search.positions[top.process]];
    search.supply.count(undone, 1);
    search.state = top.state;
    if (!isIndeterminate(undone)) remaining++;
    tryFrom = top.rank + 1;
  }
  return { verdict: 'ok' };
}

/**
 * The processes that still have operations, by the call time of their next one: trying the
 * real-time order first finds an order quickly when the history is nearly linearizable.
 */
function candidateOrder(search: Position): number[] {
  const { queues, positions } = search;
  const order: number[] = [];
  for (let process = 0; process < queues.length; process++) {
    if (positions[process] < queues[process].length) order.push(process);
  }
  return order.sort((a, b) => queues[a][positions[a]].call - queues[b][positions[b]].call);
}

/**
 * Place the next operation of the first candidate (from rank `tryFrom`) that fits the register,
 * starves no value, and leads to an unexplored (positions, state) pair.
 */
function placeNext(search: Position, tryFrom: number): PlaceResult | null {
  const before = search.state;
  const order = candidateOrder(search);
  if (tryFrom === 0) {
    const forced = placeFree(search, order);
    if (forced !== undefined) return forced;
  }
  for (let rank = tryFrom; rank < order.length; rank++) {
    const placed = tryPlace(search, order[rank], before);
    if (placed !== null) return { ...placed, rank };
  }
  return null;
}

/**
 * An operation that fits and can never change the register (a read, a cas or delete or append
 * that returned false) can always go next: moving it earlier changes no other step. (A write of
 * the value the register holds is not such an operation: placed later, it may change it.) So when
 * one exists it is the only move tried here (`rank` past every candidate), which removes most
 * branching on reads. Returns `undefined` when there is no such operation, `null` when there is
 * one but its position was already explored.
 */
function placeFree(search: Position, order: number[]): PlaceResult | null | undefined {
  const { queues, positions } = search;
  const before = search.state;
  for (const process of order) {
    const op = queues[process][positions[process]];
    if (!neverChangesState(op) || !step(before, op.input, op.output).ok) continue;
    const placed = tryPlace(search, process, before);
    return placed === null ? null : { ...placed, rank: order.length };
  }
  return undefined;
}

/** Whether every valid placement of `op` leaves the register as it was. */
function neverChangesState(op: Operation): boolean {
  if (op.output.kind === 'read') return true;
  if (op.output.kind !== 'done') return false;
  if (op.output.result === false) return op.f !== 'write';
  return op.input.f === 'cas' && op.input.expected === op.input.value;
}

type PlaceResult = { process: number; rank: number; op: Operation; before: RegisterValue };

/** Place `process`'s next operation if it fits, starves nothing and reaches an unexplored position. */
function tryPlace(search: Position, process: number, before: RegisterValue): Omit<PlaceResult, 'rank'> | null {
  const { queues, positions, supply, visited } = search;
  const op = queues[process][positions[process]];
  const result = step(before, op.input, op.output);
  if (!result.ok) return null;
  positions[process]++;
  supply.count(op, -1);
  const dead = supply.starvedBy(op, before, result.state);
  const key = `${positions.join(',')}|${result.state === null ? '' : `=${result.state}`}`;
  if (!dead && !visited.has(key)) {
    visited.add(key);
    search.state = result.state;
    return { process, op, before };
  }
  supply.count(op, 1);
  positions[process]--;
  return null;
}

function stuckAt(search: Position, stack: { process: number }[]): StuckPoint {
  const { queues, positions, state } = search;
  const seen = new Int32Array(queues.length);
  const prefix = stack.map((frame) => queues[frame.process][seen[frame.process]++]);
  const candidates = queues.map((queue, process) => queue[positions[process]]).filter((op) => op !== undefined);
  return { prefix, state, candidates, blocking: null };
}
