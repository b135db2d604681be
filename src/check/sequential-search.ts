/**
 * The depth-first search behind the sequential checker (sequential.ts), for one key: it places
 * operations in process order, each next operation of some process in turn, where the register
 * model explains its output, and backtracks when no move is left. The memo holds (per-process
 * positions, register state), indeterminate operations counted as unplaced with dominance.
 *
 * Invariants: the placed operations of each process are the first of its queue; `stack` holds
 * one frame per placed operation, with the register before it; every move undone restores
 * positions, register, supply counts, placed indeterminate bits and gate exactly. An "ok" is a
 * valid sequential order; a "violation" is exact only without a gate. The pruning (starvation,
 * free operations, lazy indeterminate ones, interchangeable ones) and why it is exact:
 * docs/checking.md, "How the sequential search stays exact and fast".
 */

import { itemAt } from '../runtime/item-at.ts';
import { isIndeterminate, type Operation, type RegisterValue } from './history.ts';
import { PREFIX_SHOWN_MAX, type KeyOutcome, type StuckPoint } from './linearizability.ts';
import { INITIAL_STATE, step } from './model.ts';
import { RealTimeGate } from './real-time-gate.ts';
import { equivalent, ValueSupply } from './value-supply.ts';

const DEADLINE_CHECK_INTERVAL = 1024;

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
 * The depth-first search itself; with `gated`, the operations it picks wait for a RealTimeGate.
 * Past `deadlineMs` it builds nothing and answers "unknown".
 */
export function searchOrders(queues: Operation[][], deadlineMs: number, gated: ((op: Operation) => boolean) | null): KeyOutcome {
  if (performance.now() > deadlineMs) return { verdict: 'unknown' };
  const search: Position = {
    queues, positions: new Int32Array(queues.length), state: INITIAL_STATE, supply: new ValueSupply(queues),
    visited: new Memo(), visitedAfterInfo: new Memo(), afterInfo: null, infoBits: infoBitsOf(queues), infoPlaced: 0n,
    gate: gated === null ? null : new RealTimeGate(queues, gated),
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
    search.gate?.unplace(undone);
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
