/**
 * Sequential-consistency checker for register histories, per key: is there one total order of the
 * operations that keeps each process's (and connection's) own order and in which the register
 * model explains every output? Real time is ignored: a read may be stale.
 *
 * The search is the linearizability search with process order in place of real-time precedence;
 * the memo holds (per-process positions, register state). Gated passes first (an operation that
 * may change the register goes after whatever returned before it was called), then the exact
 * unrestricted pass, the only one that may answer "violation"; the order-graph prover
 * (order-graph.ts) proves violations the search cannot exhaust. Every pass's "ok" is exact.
 * Why each pruning is sound, and what it cost to leave one out: docs/checking.md, "How the
 * sequential search stays exact and fast".
 */

import { itemAt } from '../runtime/item-at.ts';
import { isIndeterminate, orderQueues, partitionByKey, type CheckResult, type History, type Operation, type RegisterValue } from './history.ts';
import { checkKeyLinearizable, checkPerKey, PREFIX_SHOWN_MAX, type CheckOptions, type KeyOutcome, type StuckPoint } from './linearizability.ts';
import { INITIAL_STATE, step } from './model.ts';
import { formatCycle, proveKeyViolation } from './order-graph.ts';

const DEADLINE_CHECK_INTERVAL = 1024;
/** The violation prover gets at most this fraction (1 / divisor) of the budget. */
const PROVER_BUDGET_DIVISOR = 4;
/** The quick first pass over every key gets at most this fraction (1 / divisor) of the budget. */
const QUICK_BUDGET_DIVISOR = 10;

/**
 * Check that a history is sequentially consistent, key by key. First the quick restricted pass
 * (pass 1 of `checkKeySequential`) looks at every key, smallest first, with at most a tenth of
 * the budget: a key it decides is sequentially consistent, and needs nothing more (on fault runs
 * it decides every key in about a second, where the prover alone spent 9 s per key finding
 * nothing). Then the order-graph prover (src/check/order-graph.ts) looks at the other keys with
 * at most a quarter of the budget: it only ever proves a violation, in well under a second where
 * the exact search would have to exhaust every order (a large run with two reads swapped stayed
 * undecided after 20 s). Then the passes of `checkKeySequential` decide what is left.
 */
export function checkSequential(history: History, options: CheckOptions): CheckResult {
  const quickDeadlineMs = performance.now() + options.timeoutMs / QUICK_BUDGET_DIVISOR;
  const keys = [...partitionByKey(history.operations)].sort((a, b) => a[1].length - b[1].length);
  const quick = new Map<string, KeyOutcome['verdict']>();
  keys.forEach(([key, ops], index) => {
    quick.set(key, searchChanges(orderQueues(ops), share(quickDeadlineMs, keys.length - index)).verdict);
  });
  const proverDeadlineMs = performance.now() + options.timeoutMs / PROVER_BUDGET_DIVISOR;
  for (const [key, ops] of keys) {
    if (quick.get(key) === 'ok') continue;
    const proof = proveKeyViolation(ops, proverDeadlineMs);
    if (proof.verdict === 'violation') return { verdict: 'violation', key, detail: formatCycle(key, proof.cycle, ops.length) };
  }
  const checkKey = (ops: Operation[], deadlineMs: number): KeyOutcome => {
    const verdict = quick.get(itemAt(ops, 0).key); // a key's operations: never none
    if (verdict === 'ok') return { verdict: 'ok' };
    return checkKeyPasses(ops, deadlineMs, verdict !== 'violation');
  };
  return checkPerKey(history, options, checkKey, 'sequentially consistent');
}


/**
 * Starvation pruning: a value that some unplaced operation needs to find in the register (a read
 * of it, a cas expecting it that succeeded) but that the register does not hold and no unplaced
 * operation can produce is a dead end, however the rest is ordered. Counts are kept per value;
 * `null` is produced by deletes. A value `p + s` may also be built by an unplaced append of `s`,
 * but only if `p` is in the register now or can itself still appear: the check follows these
 * prefix chains (an over-approximation of what can appear, so the pruning stays exact). Without
 * the chain, a read of "a+b" kept the search alive long after "a" was overwritten for good.
 */
class ValueSupply {
  private readonly producers = new Map<RegisterValue, number>();
  private readonly consumers = new Map<RegisterValue, number>();
  /** Unplaced appends that may succeed, by suffix. */
  private readonly suffixes = new Map<string, number>();
  /** For a needed value or one of its prefix chain: the ways an append may build it. */
  private readonly builds = new Map<string, { prefix: string; suffix: string }[]>();
  /** The inverse of `builds`: the needed values (and chain members) built on a value or suffix. */
  private readonly builtOn = new Map<RegisterValue, string[]>();
  /** For each value, everything built on it transitively (filled on first use). */
  private readonly builtOnClosure = new Map<RegisterValue, string[]>();

  constructor(queues: Operation[][]) {
    const suffixLengths = new Set<number>();
    for (const queue of queues) {
      for (const op of queue) {
        this.count(op, 1);
        const suffix = appendedSuffix(op);
        if (suffix !== undefined) suffixLengths.add(suffix.length);
      }
    }
    const compared = queues.flat().map(comparedValue).filter((value) => value !== undefined);
    const pending = [...this.consumers.keys(), ...compared].filter((value) => value !== null);
    for (let value = pending.pop(); value !== undefined; value = pending.pop()) {
      if (this.builds.has(value)) continue;
      const ways: { prefix: string; suffix: string }[] = [];
      for (const length of suffixLengths) {
        if (length > value.length) continue;
        const suffix = value.slice(value.length - length);
        if (!this.suffixes.has(suffix)) continue;
        const prefix = value.slice(0, value.length - length);
        ways.push({ prefix, suffix });
        this.link(prefix, value);
        this.link(suffix, value);
        if (!this.builds.has(prefix)) pending.push(prefix);
      }
      this.builds.set(value, ways);
    }
  }

  /**
   * Whether some operation may tell `value` apart from any other present value: one reads it or
   * compares with it, or with a value appends may build on it. Registers holding two present
   * values that are not distinguishable this way have the same futures.
   */
  distinguishable(value: string): boolean {
    return this.builds.has(value);
  }

  private link(from: string, to: string): void {
    const list = this.builtOn.get(from);
    if (list) list.push(to);
    else this.builtOn.set(from, [to]);
  }

  /**
   * After `op` was placed (and counted out), turning the register from `before` into `state`:
   * whether some value still needed can no longer appear. Only values whose supply `op` changed
   * are looked at: the one it overwrote, the one it writes, the suffix it appends, and everything
   * built on those by appends.
   */
  starvedBy(op: Operation, before: RegisterValue, state: RegisterValue): boolean {
    if (this.starvedAround(before, state)) return true;
    const produced = producedValue(op);
    if (produced !== undefined && this.starvedAround(produced, state)) return true;
    const suffix = appendedSuffix(op);
    return suffix !== undefined && this.starvedAround(suffix, state);
  }

  /** Account for placing (`delta = -1`) or unplacing (`+1`) an operation. */
  count(op: Operation, delta: number): void {
    const produced = producedValue(op);
    if (produced !== undefined) this.producers.set(produced, (this.producers.get(produced) ?? 0) + delta);
    const needed = neededValue(op);
    if (needed !== undefined) this.consumers.set(needed, (this.consumers.get(needed) ?? 0) + delta);
    const suffix = appendedSuffix(op);
    if (suffix !== undefined) this.suffixes.set(suffix, (this.suffixes.get(suffix) ?? 0) + delta);
  }

  /** Whether `value`, or a needed value built on it, is starved. */
  private starvedAround(value: RegisterValue, state: RegisterValue): boolean {
    if (this.starved(value, state)) return true;
    return this.closure(value).some((built) => this.starved(built, state));
  }

  private closure(value: RegisterValue): string[] {
    const known = this.builtOnClosure.get(value);
    if (known !== undefined) return known;
    const found = new Set<string>();
    const pending = [...(this.builtOn.get(value) ?? [])];
    for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
      if (found.has(next)) continue;
      found.add(next);
      pending.push(...(this.builtOn.get(next) ?? []));
    }
    const list = [...found];
    this.builtOnClosure.set(value, list);
    return list;
  }

  /** Whether `value` is needed later but can no longer appear, given the register holds `state`. */
  private starved(value: RegisterValue, state: RegisterValue): boolean {
    return value !== state && (this.consumers.get(value) ?? 0) > 0 && !this.producible(value, state);
  }

  /** Whether some unplaced operations may still leave `value` in the register. */
  private producible(value: RegisterValue, state: RegisterValue): boolean {
    if ((this.producers.get(value) ?? 0) > 0) return true;
    if (value === null) return false;
    for (const { prefix, suffix } of this.builds.get(value) ?? []) {
      if ((this.suffixes.get(suffix) ?? 0) > 0 && (prefix === state || this.producible(prefix, state))) return true;
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
    case 'delete': return op.output.kind === 'done' && op.output.result === false ? undefined : null;
    case 'read':
    case 'append': return undefined;
    default: {
      const unreachable: never = op.input;
      return unreachable;
    }
  }
}

/** The value a cas compares the register with, when the outcome is not a needed value. */
function comparedValue(op: Operation): RegisterValue | undefined {
  return op.input.f === 'cas' && neededValue(op) === undefined ? op.input.expected : undefined;
}

/** The value an operation must find in the register, if one (a delete or append that returned false needs absent). */
function neededValue(op: Operation): RegisterValue | undefined {
  if (op.output.kind === 'read') return op.output.value;
  if (op.output.kind !== 'done') return undefined;
  if (op.input.f === 'cas' && op.output.result === true) return op.input.expected;
  if ((op.input.f === 'delete' || op.input.f === 'append') && op.output.result === false) return null;
  return undefined;
}

/** The search's position: how far each process has got, the register, and what is placed. */
interface Position {
  queues: Operation[][];
  positions: Int32Array;
  state: RegisterValue;
  supply: ValueSupply;
  /** Explored positions reached with any next move allowed. */
  visited: Memo;
  /** Explored positions reached just after an indeterminate operation (next moves restricted). */
  visitedAfterInfo: Memo;
  /** Bit of each indeterminate operation (by id), and the bits of those placed. */
  infoBits: Map<number, bigint>;
  infoPlaced: bigint;
  gate: RealTimeGate | null;
  /** The indeterminate operation placed last, and the register before it; `null` otherwise. */
  afterInfo: { op: Operation; before: RegisterValue } | null;
}

type Frame = { process: number; rank: number; state: RegisterValue };

/**
 * Whether some queue has an operation invoked at or before the return of the one before it: a
 * process's at the very time (real time treats equal times as concurrent, process order does not),
 * or a pipelining connection's (its calls overlap). Then a linearization need not respect the
 * queues' order.
 */
function hasProcessTie(queues: Operation[][]): boolean {
  return queues.some((queue) => queue.some((op, index) => {
    const previous = queue[index - 1];
    return previous !== undefined && previous.return >= op.call;
  }));
}

/**
 * Depth-first search over per-process positions for one key, in up to four passes, each with a
 * share of the remaining budget:
 * 1. the process-order search with every operation that may change the register (and every
 *    indeterminate one) kept after what returned before it was called (`RealTimeGate` over
 *    `mayChangeState`), a quarter: a restriction, so only its "ok" counts. Reads stay free. It
 *    stops a fresh process's first delete or write being spent seconds too early (fault runs
 *    stayed undecided after 60 s); on them it decides each key in about a second;
 * 2. the same with only indeterminate operations kept so (`RealTimeGate` over
 *    `isIndeterminate`), a third: also a restriction. It stops a floating one being spent far
 *    too early, which left the search a dead branch to climb back through (a 15 s fault run
 *    stayed undecided);
 * 3. the linearizability search, a tenth: a linearizable key is sequentially consistent (a
 *    linearization respects process order when no process has a time tie). It used to go first,
 *    but on a key that is not linearizable it spends its whole share giving up;
 * 4. the unrestricted process-order search, the rest: exact.
 */
export function checkKeySequential(ops: Operation[], deadlineMs: number): KeyOutcome {
  return checkKeyPasses(ops, deadlineMs, true);
}

/** The passes of `checkKeySequential`; pass 1 is left out when it is known to fail. */
function checkKeyPasses(ops: Operation[], deadlineMs: number, firstPass: boolean): KeyOutcome {
  const queues = orderQueues(ops);
  if (searchGated(queues, deadlineMs, firstPass).verdict === 'ok') return { verdict: 'ok' };
  if (!hasProcessTie(queues) && checkKeyLinearizable(ops, share(deadlineMs, 10)).verdict === 'ok') return { verdict: 'ok' };
  return searchOrders(queues, deadlineMs, null);
}

/**
 * The process-order search alone (passes 1, 2 and 4, no linearizability search), for one key's
 * operations. Exported so tests can reach it on histories the linearizability search decides.
 */
export function checkKeyProcessOrder(ops: Operation[], deadlineMs: number): KeyOutcome {
  const queues = orderQueues(ops);
  const gated = searchGated(queues, deadlineMs);
  return gated.verdict === 'ok' ? gated : searchOrders(queues, deadlineMs, null);
}

/**
 * Pass 1: every operation that may change the register waits for what returned before it was
 * called. A restriction: its "violation" only means that no such order exists.
 */
function searchChanges(queues: Operation[][], deadlineMs: number): KeyOutcome {
  return searchOrders(queues, deadlineMs, new RealTimeGate(queues, mayChangeState));
}

/** Pass 2: indeterminate operations wait so. A restriction too. */
function searchFloating(queues: Operation[][], deadlineMs: number): KeyOutcome {
  return searchOrders(queues, deadlineMs, new RealTimeGate(queues, isIndeterminate));
}

/** Passes 1 (unless known to fail) and 2, restricted searches: only an "ok" means anything; else "unknown". */
function searchGated(queues: Operation[][], deadlineMs: number, firstPass = true): KeyOutcome {
  if (firstPass && searchChanges(queues, share(deadlineMs, 4)).verdict === 'ok') return { verdict: 'ok' };
  return searchFloating(queues, share(deadlineMs, 3)).verdict === 'ok' ? { verdict: 'ok' } : { verdict: 'unknown' };
}

/**
 * Whether some placement of `op` may change the register: it is indeterminate, or it writes,
 * deletes, appends or swaps and did not return false.
 */
function mayChangeState(op: Operation): boolean {
  return isIndeterminate(op) || producedValue(op) !== undefined || appendedSuffix(op) !== undefined;
}

/** The deadline that leaves `1 / divisor` of what remains before `deadlineMs`. */
function share(deadlineMs: number, divisor: number): number {
  const now = performance.now();
  return now + Math.max(0, deadlineMs - now) / divisor;
}

/** The depth-first search itself; with a `gate`, indeterminate ops wait for it. */
function searchOrders(queues: Operation[][], deadlineMs: number, gate: RealTimeGate | null): KeyOutcome {
  const search: Position = {
    queues, positions: new Int32Array(queues.length), state: INITIAL_STATE, supply: new ValueSupply(queues),
    visited: new Memo(), visitedAfterInfo: new Memo(), afterInfo: null, infoBits: infoBitsOf(queues), infoPlaced: 0n, gate,
  };
  const stack: Frame[] = [];
  let remaining = queues.reduce((sum, queue) => sum + queue.filter((op) => !isIndeterminate(op)).length, 0);
  let tryFrom = 0;
  let deepest: StuckPoint | null = null;
  let iterations = 0;
  while (remaining > 0) {
    if (++iterations % DEADLINE_CHECK_INTERVAL === 0 && performance.now() > deadlineMs) return { verdict: 'unknown' };
    const placed = placeNext(search, tryFrom);
    if (placed !== null) {
      stack.push({ process: placed.process, rank: placed.rank, state: placed.before });
      search.afterInfo = isIndeterminate(placed.op) ? { op: placed.op, before: placed.before } : null;
      if (!isIndeterminate(placed.op)) remaining--;
      tryFrom = 0;
      continue;
    }
    if (deepest === null || stack.length > deepest.prefixLength) deepest = stuckAt(search, stack);
    const top = stack.pop();
    if (top === undefined) return { verdict: 'violation', stuck: deepest };
    const position = positionOf(search, top.process) - 1;
    search.positions[top.process] = position;
    const undone = opAt(search, top.process, position);
    search.infoPlaced &= ~(search.infoBits.get(undone.id) ?? 0n);
    gate?.unplace(undone);
    search.supply.count(undone, 1);
    search.state = top.state;
    if (!isIndeterminate(undone)) remaining++;
    search.afterInfo = lastInfo(search, stack);
    tryFrom = top.rank + 1;
  }
  return { verdict: 'ok' };
}

/**
 * The processes that still have operations, by the call time of their next one: trying the
 * real-time order first finds an order quickly when the history is nearly linearizable.
 */
function candidateOrder(search: Position): number[] {
  const { queues } = search;
  const order: number[] = [];
  for (let process = 0; process < queues.length; process++) {
    if (positionOf(search, process) < (queues[process]?.length ?? 0)) order.push(process);
  }
  return order.sort((a, b) => nextOf(search, a).call - nextOf(search, b).call);
}

/** How many operations of its queue `process` has placed. */
function positionOf(search: Position, process: number): number {
  const position = search.positions[process];
  if (position === undefined) throw new RangeError(`sequential search: no process ${process}`);
  return position;
}

/** The operation at `position` of `process`'s queue, which the caller knows is there. */
function opAt(search: Position, process: number, position: number): Operation {
  const op = search.queues[process]?.[position];
  if (op === undefined) throw new RangeError(`sequential search: process ${process} has no operation ${position}`);
  return op;
}

/** The operation `process` places next, which the caller knows it has. */
function nextOf(search: Position, process: number): Operation {
  return opAt(search, process, positionOf(search, process));
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
    if (interchangeableEarlier(search, order, rank)) continue;
    const placed = tryPlace(search, itemAt(order, rank), before);
    if (placed !== null) return { ...placed, rank };
  }
  return null;
}

/**
 * Symmetry: indeterminate deletes are interchangeable, and so are indeterminate writes of values
 * no operation can tell apart (see `ValueSupply.distinguishable`), when each is next in its
 * process (and so last: nothing waits for it). Any order using one of them now can use the one
 * ranked first instead, and the other later. So only the first of each kind is tried.
 */
function interchangeableEarlier(search: Position, order: number[], rank: number): boolean {
  const kind = interchangeableKind(search, itemAt(order, rank));
  if (kind === null) return false;
  for (let earlier = 0; earlier < rank; earlier++) {
    if (interchangeableKind(search, itemAt(order, earlier)) === kind) return true;
  }
  return false;
}

function interchangeableKind(search: Position, process: number): 'delete' | 'write' | null {
  const op = nextOf(search, process);
  if (!isIndeterminate(op)) return null;
  if (op.input.f === 'delete') return 'delete';
  if (op.input.f === 'write' && !search.supply.distinguishable(op.input.value)) return 'write';
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
  const before = search.state;
  for (const process of order) {
    const op = nextOf(search, process);
    if (!neverChangesState(op) || !step(before, op.input, op.output).ok || !mayFollowInfo(search, op)) continue;
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
  const { positions, supply, visited, visitedAfterInfo } = search;
  const position = positionOf(search, process);
  const op = opAt(search, process, position);
  const result = step(before, op.input, op.output);
  if (!result.ok || !mayFollowInfo(search, op) || (search.gate !== null && !search.gate.allows(op))) return null;
  // An indeterminate op that changes nothing here is better left out.
  if (isIndeterminate(op) && equivalent(supply, result.state, before)) return null;
  positions[process] = position + 1;
  supply.count(op, -1);
  const bit = search.infoBits.get(op.id) ?? 0n;
  const placedInfo = search.infoPlaced | bit;
  const dead = supply.starvedBy(op, before, result.state);
  const key = `${determinateKey(search, placedInfo)}|${stateKey(supply, result.state)}`;
  // After an indeterminate op the next moves are restricted, so that visit is weaker than a free one.
  const infoKey = bit !== 0n ? `${key}|${op.id}|${before === null ? '' : `=${before}`}` : null;
  const explored = visited.covers(key, placedInfo) || (infoKey !== null && visitedAfterInfo.covers(infoKey, placedInfo));
  if (!dead && !explored) {
    if (infoKey === null) visited.add(key, placedInfo);
    else visitedAfterInfo.add(infoKey, placedInfo);
    search.state = result.state;
    search.infoPlaced = placedInfo;
    search.gate?.place(op);
    return { process, op, before };
  }
  supply.count(op, 1);
  positions[process] = position;
  return null;
}

/**
 * Keeps each gated operation (indeterminate ones, or every one that may change the register)
 * after every determinate one that returned before it was called. Determinate ops are ranked by
 * return time; `frontier` is how many of the first ones in that order are all placed. This never
 * deadlocks a search on its own: what an operation waits for returned before it was called, so
 * before its process-order predecessors, and the real-time order is acyclic.
 */
class RealTimeGate {
  private readonly rankOf = new Map<number, number>();
  private readonly placed: Uint8Array;
  private readonly needed = new Map<number, number>();
  private frontier = 0;

  constructor(queues: Operation[][], gated: (op: Operation) => boolean) {
    const determinate = queues.flat().filter((op) => !isIndeterminate(op)).sort((a, b) => a.return - b.return);
    determinate.forEach((op, rank) => this.rankOf.set(op.id, rank));
    this.placed = new Uint8Array(determinate.length);
    for (const op of queues.flat()) {
      if (!gated(op)) continue;
      let low = 0;
      let high = determinate.length;
      while (low < high) {
        const middle = (low + high) >> 1;
        if (itemAt(determinate, middle).return < op.call) low = middle + 1;
        else high = middle;
      }
      this.needed.set(op.id, low);
    }
  }

  allows(op: Operation): boolean {
    return this.frontier >= (this.needed.get(op.id) ?? 0);
  }

  place(op: Operation): void {
    const rank = this.rankOf.get(op.id);
    if (rank === undefined) return;
    this.placed[rank] = 1;
    while (this.frontier < this.placed.length && this.placed[this.frontier] === 1) this.frontier++;
  }

  unplace(op: Operation): void {
    const rank = this.rankOf.get(op.id);
    if (rank === undefined) return;
    this.placed[rank] = 0;
    if (rank < this.frontier) this.frontier = rank;
  }
}

/**
 * Explored positions, with dominance on indeterminate operations: a position is keyed by where
 * each process stands, not counting its indeterminate operation, plus the register; with it go
 * the sets of indeterminate operations placed on the ways there. Having placed fewer of them is
 * never worse (an unplaced one may still be placed later, or never), so a position is explored
 * if it was reached before with a subset of its placed indeterminate operations.
 */
class Memo {
  private readonly seen = new Map<string, bigint[]>();

  covers(key: string, placed: bigint): boolean {
    const sets = this.seen.get(key);
    return sets !== undefined && sets.some((set) => (set & ~placed) === 0n);
  }

  add(key: string, placed: bigint): void {
    const sets = this.seen.get(key);
    if (sets) sets.push(placed);
    else this.seen.set(key, [placed]);
  }

  get size(): number { return this.seen.size; }
}

/** A bit for each indeterminate operation. */
function infoBitsOf(queues: Operation[][]): Map<number, bigint> {
  const bits = new Map<number, bigint>();
  for (const queue of queues) for (const op of queue) if (isIndeterminate(op)) bits.set(op.id, 1n << BigInt(bits.size));
  return bits;
}

/** The register in a memo key: a present value no operation can tell apart from others is just "present". */
function stateKey(supply: ValueSupply, state: RegisterValue): string {
  if (state === null) return '';
  return supply.distinguishable(state) ? `=${state}` : '+';
}

/** Where each process stands, an indeterminate operation counted as not placed. */
function determinateKey(search: Position, placedInfo: bigint): string {
  const { queues, infoBits } = search;
  let key = '';
  for (let process = 0; process < queues.length; process++) {
    let position = positionOf(search, process);
    const last = queues[process]?.[position - 1];
    if (last !== undefined && ((infoBits.get(last.id) ?? 0n) & placedInfo) !== 0n) position--;
    key += `${position},`;
  }
  return key;
}

/**
 * Lazy placement of indeterminate operations. Such an operation `info` is the last of its process,
 * so in any valid order it can be moved later past an operation `next` that fits without it and
 * commutes with it (same register after both), or dropped when `next` fits without it and leaves
 * the register as it would have after both (a write overwrites it). Repeating this turns every
 * valid order into one where each indeterminate operation is directly followed by an operation
 * that needs it: one that does not fit without it, or whose outcome it changes. Only such orders
 * are searched. (Swaps between two indeterminate operations are not made, so that the rewriting
 * ends: after an indeterminate operation, another one is refused only when it overwrites it.)
 */
function mayFollowInfo(search: Position, next: Operation): boolean {
  if (search.afterInfo === null) return true;
  const { op: info, before } = search.afterInfo;
  const alone = step(before, next.input, next.output);
  if (!alone.ok) return true;
  const withInfo = step(step(before, info.input, info.output).state, next.input, next.output);
  if (equivalent(search.supply, withInfo.state, alone.state)) return false;
  if (isIndeterminate(next)) return true;
  return !equivalent(search.supply, step(alone.state, info.input, info.output).state, withInfo.state);
}

/** Whether two registers have the same futures: equal, or both present and not distinguishable. */
function equivalent(supply: ValueSupply, a: RegisterValue, b: RegisterValue): boolean {
  if (a === b) return true;
  return a !== null && b !== null && !supply.distinguishable(a) && !supply.distinguishable(b);
}

/** The indeterminate operation on top of the stack (with the register before it), if the top is one. */
function lastInfo(search: Position, stack: Frame[]): Position['afterInfo'] {
  const top = stack.at(-1);
  if (top === undefined) return null;
  const op = opAt(search, top.process, positionOf(search, top.process) - 1); // the top's, placed
  return isIndeterminate(op) ? { op, before: top.state } : null;
}

function stuckAt(search: Position, stack: { process: number }[]): StuckPoint {
  const { queues, positions, state } = search;
  // Each process's placed operations are the first of its queue: walk back from where each got to.
  const reached = Array.from(positions);
  const prefixEnd = stack.slice(-PREFIX_SHOWN_MAX).reverse().map((frame) => {
    const position = itemAt(reached, frame.process) - 1;
    reached[frame.process] = position;
    return itemAt(itemAt(queues, frame.process), position);
  }).reverse();
  const candidates = queues.map((queue, process) => queue[itemAt(positions, process)]).filter((op) => op !== undefined);
  return { prefixLength: stack.length, prefixEnd, state, candidates, blocking: null };
}
