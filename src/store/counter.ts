/**
 * Counters that never lose an increment (eventual and causal modes): an observed-reset PN-counter
 * in an entry's metadata, and the merge of two versions of one entry.
 *
 * A store (set, append, touch, delete…) is a *reset* at its version (`resetCas`, else `cas`).
 * incr/decr keep the reset and grow the acting node's own totals, so concurrent increments on two
 * nodes both count. Read: v = base + Σincs − Σdecs, unbounded; v mod 2^64 when v ≥ 0, else 0. A
 * decr records only what it took off the value its node saw, so one node alone reads exactly
 * what memcached would (incr wraps, decr stops at 0); concurrent decrements that overdraw read 0
 * everywhere, and the next incr on a node that sees it pays the overdraft back.
 * Merge: the greater reset wins; on one reset, each node's totals are the maximum of both. The
 * result keeps an input's cas when it is that input with the greater cas, else takes `joinCas`,
 * fresh and above both: every new state has a new version, so version digests see it.
 * Invariants: merge is commutative, associative, idempotent on (reset, base, totals); a node's
 * totals only grow within one reset.
 */

import type { Entry } from './types.ts';

/** Per-node totals since the reset: (node index, total), node indices distinct and ascending. */
export type NodeTotals = ReadonlyArray<readonly [node: number, total: bigint]>;

/** The counter part of an entry: the value at the reset and what each node added and took since. */
export interface CounterState {
  base: bigint;
  incs: NodeTotals;
  decs: NodeTotals;
}

/** Node indices a counter may name (a version's node bits). */
export const COUNTER_NODES_MAX = 16;
/** A node's total stays below this (it would take 2^64 increments of 2^64 − 1 to reach). */
export const COUNTER_TOTAL_LIMIT = 1n << 128n;
const U64_MODULUS = 1n << 64n;

/** The version of the reset an entry counts from. */
export function resetOf(entry: Entry): bigint {
  return entry.resetCas ?? entry.cas;
}

/** v = base + Σincs − Σdecs, unbounded. */
function rawValue(counter: CounterState): bigint {
  let value = counter.base;
  for (const [, total] of counter.incs) value += total;
  for (const [, total] of counter.decs) value -= total;
  return value;
}

/** What a reader sees: v mod 2^64, or 0 when concurrent decrements overdrew. */
export function counterValue(counter: CounterState): bigint {
  const value = rawValue(counter);
  return value < 0n ? 0n : value % U64_MODULUS;
}

function totalOf(totals: NodeTotals, node: number): bigint {
  for (const [index, total] of totals) if (index === node) return total;
  return 0n;
}

/** `totals` with `node`'s replaced; a zero total is left out, so equal states look alike. */
function withTotal(totals: NodeTotals, node: number, total: bigint): NodeTotals {
  if (total === 0n) return totals;
  const out = totals.filter(([index]) => index !== node);
  out.push([node, total]);
  return out.sort((left, right) => left[0] - right[0]);
}

/**
 * One node's incr or decr of `delta` on a counter whose value is `current` (parsed from the live
 * entry; `counter` absent means the entry was just stored). Returns the new state and the value a
 * reader sees, or null when a total would pass COUNTER_TOTAL_LIMIT (the caller then stores the
 * result as a plain value, a reset).
 */
export function counterStep(options: {
  counter: CounterState | undefined;
  current: bigint;
  node: number;
  verb: 'incr' | 'decr';
  delta: bigint;
}): { counter: CounterState; value: bigint } | null {
  const { current, node, verb, delta } = options;
  const counter = options.counter ?? { base: current, incs: [], decs: [] };
  if (verb === 'incr') {
    // An overdraft (v < 0, read as 0) is paid back, so this incr reads as memcached's from 0.
    const overdraft = rawValue(counter) < 0n ? -rawValue(counter) : 0n;
    const total = totalOf(counter.incs, node) + delta + overdraft;
    if (total >= COUNTER_TOTAL_LIMIT) return null;
    const next = { ...counter, incs: withTotal(counter.incs, node, total) };
    return { counter: next, value: counterValue(next) };
  }
  const taken = delta > current ? current : delta;
  const total = totalOf(counter.decs, node) + taken;
  if (total >= COUNTER_TOTAL_LIMIT) return null;
  const next = { ...counter, decs: withTotal(counter.decs, node, total) };
  return { counter: next, value: counterValue(next) };
}

function joinTotals(left: NodeTotals, right: NodeTotals): NodeTotals {
  let out = left;
  for (const [node, total] of right) if (total > totalOf(out, node)) out = withTotal(out, node, total);
  return out;
}

function sameTotals(left: NodeTotals, right: NodeTotals): boolean {
  const nonZero = (totals: NodeTotals): NodeTotals => totals.filter(([, total]) => total !== 0n);
  const a = nonZero(left);
  const b = nonZero(right);
  return a.length === b.length && a.every(([node, total], index) => b[index]?.[0] === node && b[index]?.[1] === total);
}

const EMPTY: CounterState = { base: 0n, incs: [], decs: [] };

/** Whether `left`'s counts cover `right`'s (same reset assumed). */
function covers(left: Entry, right: Entry): boolean {
  const a = left.counter ?? EMPTY;
  const b = right.counter ?? EMPTY;
  return sameTotals(joinTotals(a.incs, b.incs), a.incs) && sameTotals(joinTotals(a.decs, b.decs), a.decs);
}

/**
 * The merge of the entry a replica holds and one a peer sent (see the header). `joinCas` must be
 * greater than both cas values; it is used only when the result is neither input as it is.
 */
export function mergeEntries(current: Entry, incoming: Entry, joinCas: bigint): Entry {
  const greater = incoming.cas > current.cas ? incoming : current;
  const resetCurrent = resetOf(current);
  const resetIncoming = resetOf(incoming);
  if (resetCurrent !== resetIncoming) {
    const winner = resetIncoming > resetCurrent ? incoming : current;
    if (winner === greater) return winner;
    return { ...winner, cas: joinCas, resetCas: resetOf(winner) };
  }
  const currentCovers = covers(current, incoming);
  const incomingCovers = covers(incoming, current);
  if (currentCovers && incomingCovers) return greater;
  if (currentCovers && greater === current) return current;
  if (incomingCovers && greater === incoming) return incoming;
  const dominant = currentCovers ? current : incomingCovers ? incoming : greater;
  const base = (current.counter ?? incoming.counter ?? EMPTY).base;
  const counter: CounterState = {
    base,
    incs: joinTotals(current.counter?.incs ?? [], incoming.counter?.incs ?? []),
    decs: joinTotals(current.counter?.decs ?? [], incoming.counter?.decs ?? []),
  };
  const value = currentCovers || incomingCovers ? dominant.value : digits(counterValue(counter));
  return { ...dominant, value, cas: joinCas, resetCas: resetCurrent, counter };
}

function digits(value: bigint): Buffer {
  return Buffer.from(value.toString(), 'latin1');
}

/** An entry without counter metadata (for a store that replaces the value: a reset at its cas). */
export function plainEntry(entry: Entry): Entry {
  if (entry.counter === undefined && entry.resetCas === undefined) return entry;
  const { counter: _counter, resetCas: _resetCas, ...plain } = entry;
  return plain;
}

/** True when `value` is NodeTotals a peer may send: distinct ascending nodes, totals in range. */
function isNodeTotals(value: unknown): value is NodeTotals {
  if (!Array.isArray(value) || value.length > COUNTER_NODES_MAX) return false;
  let previous = -1;
  for (const item of value) {
    if (!Array.isArray(item) || item.length !== 2) return false;
    const [node, total] = item as unknown[];
    if (typeof node !== 'number' || !Number.isInteger(node) || node <= previous || node >= COUNTER_NODES_MAX) return false;
    if (typeof total !== 'bigint' || total < 0n || total >= COUNTER_TOTAL_LIMIT) return false;
    previous = node;
  }
  return true;
}

/** Why the counter fields of an entry from outside this process are bad, or null. */
export function counterFieldsProblem(entry: Record<string, unknown>): string | null {
  const { resetCas, counter } = entry;
  if (resetCas !== undefined && (typeof resetCas !== 'bigint' || resetCas < 0n || resetCas >= U64_MODULUS)) return 'bad resetCas';
  if (counter === undefined) return null;
  if (typeof counter !== 'object' || counter === null) return 'bad counter';
  const { base, incs, decs } = counter as Record<string, unknown>;
  if (typeof base !== 'bigint' || base < 0n || base >= U64_MODULUS) return 'bad counter base';
  return isNodeTotals(incs) && isNodeTotals(decs) ? null : 'bad counter totals';
}
