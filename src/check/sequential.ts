/**
 * Sequential-consistency checker for register histories, per key: is there one total order of the
 * operations that keeps each process's (and connection's) own order and in which the register
 * model explains every output? Real time is ignored: a read may be stale.
 *
 * This file holds the passes and their budgets; the search they run is sequential-search.ts
 * (with value-supply.ts and real-time-gate.ts). Gated passes first (an operation that may change
 * the register goes after whatever returned before it was called), then the exact unrestricted
 * pass, the only one that may answer "violation"; the order-graph prover (order-graph.ts) proves
 * violations the search cannot exhaust. Every pass's "ok" is exact. Why each pruning is sound,
 * and what it cost to leave one out: docs/checking.md, "How the sequential search stays exact
 * and fast".
 */

import { itemAt } from '../runtime/item-at.ts';
import { isIndeterminate, orderQueues, partitionByKey, type CheckResult, type History, type Operation } from './history.ts';
import { checkKeyLinearizable, checkPerKey, type CheckOptions, type KeyOutcome } from './linearizability.ts';
import { formatCycle, proveKeyViolation } from './order-graph.ts';
import { searchOrders } from './sequential-search.ts';
import { appendedSuffix, producedValue } from './value-supply.ts';

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
 * undecided after 20 s). Then the passes of `checkKeySequential` decide what is left, by the
 * deadline the check began with: the budget covers every pass.
 */
export function checkSequential(history: History, options: CheckOptions): CheckResult {
  const startedMs = performance.now();
  const deadlineMs = startedMs + options.timeoutMs;
  const quickDeadlineMs = startedMs + options.timeoutMs / QUICK_BUDGET_DIVISOR;
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
    if (performance.now() > deadlineMs) return { verdict: 'unknown' }; // no pass would start
    return checkKeyPasses(ops, deadlineMs, verdict !== 'violation');
  };
  return checkPerKey(history, options, checkKey, 'sequentially consistent', deadlineMs);
}

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
  return searchOrders(queues, deadlineMs, mayChangeState);
}

/** Pass 2: indeterminate operations wait so. A restriction too. */
function searchFloating(queues: Operation[][], deadlineMs: number): KeyOutcome {
  return searchOrders(queues, deadlineMs, isIndeterminate);
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
