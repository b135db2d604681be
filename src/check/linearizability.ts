/**
 * Linearizability checker for register histories: the Wing & Gong search with Lowe's memoisation,
 * as in Porcupine's `checkSingle` (anishathalye/porcupine), written for mckv. It searches each key
 * alone (exact: linearizability is compositional), over a time-ordered doubly linked list of call
 * and return entries, memoising (linearized set, state). Indeterminate operations return at
 * +infinity; calls on one connection take effect in the order sent. How the search goes:
 * docs/checking.md, "The linearizability search".
 *
 * Invariants: entries are sorted by time with calls before returns at equal times (closed
 * intervals: equal times are concurrent); `lift` and `unlift` are exact inverses; the bitset, its
 * Zobrist hash and `remaining` always describe the operations on the `stack`.
 */

import { itemAt, wordAt } from '../runtime/item-at.ts';
import {
  describeOperation, isIndeterminate, partitionByKey, show,
  type CheckResult, type History, type Operation, type RegisterValue,
} from './history.ts';
import { INITIAL_STATE, step } from './model.ts';

export interface CheckOptions {
  /** Give up (verdict `unknown`) after this long; the budget is for the whole history. */
  timeoutMs: number;
}

/** What a per-key search found; shared by the linearizability and sequential checkers. */
export type KeyOutcome =
  | { verdict: 'ok' }
  /** Out of time, or (`memo`) the memo of explored states grew past MEMO_BYTES_MAX. */
  | { verdict: 'unknown'; memo?: true }
  | { verdict: 'violation'; stuck: StuckPoint };

/**
 * The deepest point the search reached: a valid prefix and the operations that could not follow.
 * Only the prefix's length and last operations are kept: copying all of it at every new depth
 * made a long history's search quadratic.
 */
export interface StuckPoint {
  prefixLength: number;
  /** The prefix's last operations (at most PREFIX_SHOWN_MAX), in order. */
  prefixEnd: Operation[];
  state: RegisterValue;
  /** Operations that were candidates to go next and all failed (or led to explored dead ends). */
  candidates: Operation[];
  /** For linearizability: the operation whose return was reached before it could be placed. */
  blocking: Operation | null;
}

/**
 * What the memo of explored states may take, roughly: past it, the search gives up (unknown)
 * rather than let the process run out of heap (V8's default limit here is about 4 GB).
 */
const MEMO_BYTES_MAX = 1 << 30;
/** How often the search looks at the clock and the memo's size, in iterations. */
const DEADLINE_CHECK_INTERVAL = 1024;
/** How many operations of the valid prefix a report shows. */
export const PREFIX_SHOWN_MAX = 10;

/** Check that a history is linearizable, key by key (smallest keys first). */
export function checkLinearizability(history: History, options: CheckOptions): CheckResult {
  return checkPerKey(history, options, checkKeyLinearizable, 'linearizable');
}

/**
 * Run a per-key search over every key before one deadline. A violation on any key wins; else an
 * unknown on any key makes the whole verdict unknown. Smaller keys go first so a short violation
 * is found even when a large key exhausts the budget.
 */
export function checkPerKey(
  history: History,
  options: CheckOptions,
  checkKey: (ops: Operation[], deadlineMs: number) => KeyOutcome,
  property: string,
  deadlineMs = performance.now() + options.timeoutMs,
): CheckResult {
  const keys = [...partitionByKey(history.operations)].sort((a, b) => a[1].length - b[1].length);
  let unknown: { key: string; memo: boolean } | null = null;
  for (const [key, ops] of keys) {
    const outcome = checkKey(ops, deadlineMs);
    if (outcome.verdict === 'violation') {
      return { verdict: 'violation', key, detail: formatStuck(key, property, outcome.stuck, ops.length) };
    }
    if (outcome.verdict === 'unknown' && unknown === null) unknown = { key, memo: outcome.memo === true };
  }
  if (unknown !== null) {
    const why = unknown.memo ? `explored more states than it keeps (${MEMO_BYTES_MAX >> 20} MB)` : `ran out of time (${options.timeoutMs} ms)`;
    return {
      verdict: 'unknown', key: unknown.key,
      detail: `the search for key ${JSON.stringify(unknown.key)} ${why}; no violation found on the keys checked`,
    };
  }
  return { verdict: 'ok', detail: `${keys.length} key(s), ${history.operations.length} operation(s): ${property}` };
}

/** Readable account of where the search got stuck. */
export function formatStuck(key: string, property: string, stuck: StuckPoint, opsTotal: number): string {
  const lines = [`key ${JSON.stringify(key)} is not ${property} (${opsTotal} operations on this key).`];
  lines.push(`Longest valid prefix found: ${stuck.prefixLength} operation(s); the register then holds ${show(stuck.state)}.`);
  const hidden = stuck.prefixLength - stuck.prefixEnd.length;
  if (hidden > 0) lines.push(`  … ${hidden} earlier operation(s)`);
  for (const op of stuck.prefixEnd) lines.push(`  ${describeOperation(op)}`);
  lines.push('No operation can go next. Candidates, each contradicted by the register or leading to explored dead ends:');
  for (const op of stuck.candidates) {
    const fits = step(stuck.state, op.input, op.output).ok;
    lines.push(`  ${describeOperation(op)}${fits ? '  (fits here, but every continuation fails)' : '  (contradicts the register)'}`);
  }
  if (stuck.blocking !== null) {
    lines.push(`and this operation returned before it could be placed: ${describeOperation(stuck.blocking)}`);
  }
  return lines.join('\n');
}

/** Doubly linked list of call/return entries over typed arrays; node `head` is a sentinel. */
interface EntryList {
  head: number;
  next: Int32Array;
  prev: Int32Array;
  /** Operation index (into the key's op array) of each node. */
  opOf: Int32Array;
  /** For a call node, its return node; -1 for return nodes. */
  match: Int32Array;
}

function buildEntryList(ops: Operation[]): EntryList {
  const entries: { op: number; isCall: boolean; time: number }[] = [];
  ops.forEach((op, index) => {
    entries.push({ op: index, isCall: true, time: op.call });
    entries.push({ op: index, isCall: false, time: op.return });
  });
  entries.sort((a, b) => (a.time !== b.time ? a.time - b.time : Number(b.isCall) - Number(a.isCall)));
  const size = entries.length + 1;
  const head = entries.length;
  const list: EntryList = {
    head, next: new Int32Array(size), prev: new Int32Array(size), opOf: new Int32Array(size), match: new Int32Array(size),
  };
  const returnNode = new Int32Array(ops.length);
  entries.forEach((entry, node) => {
    list.opOf[node] = entry.op;
    if (!entry.isCall) returnNode[entry.op] = node;
  });
  entries.forEach((entry, node) => {
    list.match[node] = entry.isCall ? slot(returnNode, entry.op) : -1;
    list.next[node] = node + 1 < entries.length ? node + 1 : -1;
    list.prev[node] = node === 0 ? head : node - 1;
  });
  list.next[head] = entries.length > 0 ? 0 : -1;
  list.prev[head] = -1;
  list.opOf[head] = -1;
  list.match[head] = -1;
  return list;
}

/** `array[index]` for a node of the list or an operation of the key, which the list itself holds. */
function slot(array: Int32Array, index: number): number {
  const value = array[index];
  if (value === undefined) throw new RangeError(`linearizability search: index ${index} outside its ${array.length} slots`);
  return value;
}

/** Remove a call node and its return node from the list (a call node has a node on each side). */
function lift(list: EntryList, call: number): void {
  const { next, prev } = list;
  const callPrev = slot(prev, call);
  const callNext = slot(next, call);
  next[callPrev] = callNext;
  prev[callNext] = callPrev;
  const ret = slot(list.match, call);
  const retPrev = slot(prev, ret);
  const retNext = slot(next, ret);
  next[retPrev] = retNext;
  if (retNext !== -1) prev[retNext] = retPrev;
}

/** Put back what `lift` removed, in reverse order. */
function unlift(list: EntryList, call: number): void {
  const { next, prev } = list;
  const ret = slot(list.match, call);
  const retNext = slot(next, ret);
  next[slot(prev, ret)] = ret;
  if (retNext !== -1) prev[retNext] = ret;
  next[slot(prev, call)] = call;
  prev[slot(next, call)] = call;
}

/**
 * The operations linearized so far: a bitset with an incrementally maintained Zobrist hash (xor of
 * a fixed random word per operation).
 *
 * Intuition: a memo entry that copied the whole bitset would cost as much as the history is long,
 * at every step of the search. But the determinate operations are numbered in the order they
 * returned, and each must be linearized before it returned: behind the point the search has got
 * to, every bit is set, and ahead of it, none. So an entry keeps only the words between (the
 * operations in flight there: from `fullWords` to `frontier()`), and the indeterminate
 * operations' bits, kept in words of their own after the determinate ones.
 */
export class LinearizedSet {
  readonly bits: Uint32Array;
  hash = 0;
  /** Leading words with every bit set (maximal: the next word has a bit clear, or is not a determinate one). */
  fullWords = 0;
  /** Where the indeterminate operations' words start. */
  readonly determinateWords: number;
  /** The last determinate word with a bit set, or -1. */
  private lastSetWord = -1;
  private readonly zobrist: Uint32Array;

  /** Operations 0 … determinate − 1 are the determinate ones; those after them are not. */
  constructor(
    private readonly determinate: number,
    indeterminate: number,
  ) {
    this.determinateWords = Math.ceil(determinate / 32);
    this.bits = new Uint32Array(this.determinateWords + Math.ceil(indeterminate / 32));
    this.zobrist = zobristWords(determinate + indeterminate);
  }

  /** Where the memo's window of determinate words ends (exclusive). */
  frontier(): number {
    return Math.max(this.fullWords, this.lastSetWord + 1);
  }

  has(index: number): boolean {
    const bit = this.bitOf(index);
    return (wordAt(this.bits, bit >>> 5) & (1 << (bit & 31))) !== 0;
  }

  add(index: number): void {
    const bit = this.bitOf(index);
    const word = bit >>> 5;
    this.bits[word] = wordAt(this.bits, word) | (1 << (bit & 31));
    this.hash = (this.hash ^ wordAt(this.zobrist, index)) >>> 0;
    if (word >= this.determinateWords) return;
    this.lastSetWord = Math.max(this.lastSetWord, word);
    while (this.fullWords < this.determinateWords && this.bits[this.fullWords] === 0xffffffff) this.fullWords += 1;
  }

  remove(index: number): void {
    const bit = this.bitOf(index);
    const word = bit >>> 5;
    this.bits[word] = wordAt(this.bits, word) & ~(1 << (bit & 31));
    this.hash = (this.hash ^ wordAt(this.zobrist, index)) >>> 0;
    if (word >= this.determinateWords) return;
    this.fullWords = Math.min(this.fullWords, word);
    while (this.lastSetWord >= 0 && this.bits[this.lastSetWord] === 0) this.lastSetWord -= 1;
  }

  private bitOf(index: number): number {
    return index < this.determinate ? index : this.determinateWords * 32 + (index - this.determinate);
  }
}

/** Memo of (linearized set, state) pairs already explored. */
export class SearchCache {
  private readonly buckets = new Map<number, { fullWords: number; window: Uint32Array; state: RegisterValue }[]>();
  private readonly stateHashes = new Map<string, number>();
  /** What the entries take, roughly: their words, and about 100 bytes of objects each. */
  bytes = 0;

  /** Add the pair; false if it was already there. */
  add(set: LinearizedSet, state: RegisterValue): boolean {
    const key = (set.hash ^ this.hashState(state)) >>> 0;
    const { fullWords, bits, determinateWords } = set;
    const frontier = set.frontier();
    const windowWords = frontier - fullWords + (bits.length - determinateWords);
    const bucket = this.buckets.get(key);
    if (bucket !== undefined) {
      for (const entry of bucket) {
        const same = entry.state === state && entry.fullWords === fullWords && entry.window.length === windowWords;
        if (same && sameWindow(entry.window, set, frontier)) return false;
      }
    }
    const window = new Uint32Array(windowWords);
    window.set(bits.subarray(fullWords, frontier));
    window.set(bits.subarray(determinateWords), frontier - fullWords);
    const added = { fullWords, window, state };
    this.bytes += 100 + 4 * windowWords;
    if (bucket === undefined) this.buckets.set(key, [added]);
    else bucket.push(added);
    return true;
  }

  private hashState(state: RegisterValue): number {
    if (state === null) return 0x5bd1e995;
    let hash = this.stateHashes.get(state);
    if (hash === undefined) {
      hash = 0x811c9dc5;
      for (let index = 0; index < state.length; index++) {
        hash = Math.imul(hash ^ state.charCodeAt(index), 0x01000193);
      }
      hash = Math.imul(hash ^ (hash >>> 15), 0x2c1b3c6d) >>> 0;
      this.stateHashes.set(state, hash);
    }
    return hash;
  }
}

/** Whether a memo window holds `set`'s words from its full words to `frontier`, then its indeterminate words. */
function sameWindow(window: Uint32Array, set: LinearizedSet, frontier: number): boolean {
  const { bits, fullWords, determinateWords } = set;
  let at = 0;
  for (let word = fullWords; word < frontier; word++) if (window[at++] !== bits[word]) return false;
  for (let word = determinateWords; word < bits.length; word++) if (window[at++] !== bits[word]) return false;
  return true;
}

/** Fixed pseudo-random words (xorshift32 from a constant seed): the search is deterministic. */
export function zobristWords(count: number): Uint32Array {
  const words = new Uint32Array(count);
  let x = 0x9e3779b9;
  for (let index = 0; index < count; index++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    words[index] = x >>> 0;
  }
  return words;
}

/**
 * One key: every operation, within half of what is left of the budget; if that does not decide,
 * again without the indeterminate writes whose values nothing observed.
 *
 * Intuition: an indeterminate operation stays a candidate from its call to the end of the history,
 * so each one multiplies the (linearized set, state) pairs the search may explore; a few dozen of
 * them in a long one-key history can exhaust any budget. Leaving some out is always sound for an
 * "ok": an order without them is an order of the whole history in which they never took effect,
 * which is allowed. But only an "ok" counts from that second search: when no order exists without
 * them (a failed cas, say, that only such a write explains), it says "violation" only after
 * exhausting every order, the costliest thing a search does; hence it comes second.
 */
export function checkKeyLinearizable(allOps: Operation[], deadlineMs: number): KeyOutcome {
  const ops = allOps.filter((op) => !(op.f === 'read' && isIndeterminate(op)));
  const unseen = unobservedIndeterminate(ops);
  if (unseen.size === 0) return searchKey(ops, deadlineMs);
  const whole = searchKey(ops, performance.now() + (deadlineMs - performance.now()) / 2);
  if (whole.verdict !== 'unknown') return whole;
  const withoutUnseen = searchKey(ops.filter((op) => !unseen.has(op)), deadlineMs);
  if (withoutUnseen.verdict === 'ok') return withoutUnseen;
  return whole;
}

/**
 * The indeterminate writes, cas and appends whose value no completed read returned (or, for an
 * append, contained) and no cas expected. Deletes are never among them: an absent key shows no
 * value to look for.
 */
export function unobservedIndeterminate(ops: readonly Operation[]): Set<Operation> {
  const observed = new Set<string>();
  for (const op of ops) {
    if (op.output.kind === 'read' && op.output.value !== null) observed.add(op.output.value);
    if (op.input.f === 'cas' && op.input.expected !== null) observed.add(op.input.expected);
  }
  const observedValues = [...observed];
  const unseen = new Set<Operation>();
  for (const op of ops) {
    if (!isIndeterminate(op)) continue;
    const { input } = op;
    if ((input.f === 'write' || input.f === 'cas') && !observed.has(input.value)) unseen.add(op);
    if (input.f === 'append' && !observedValues.some((value) => value.includes(input.value))) unseen.add(op);
  }
  return unseen;
}

/** The Wing & Gong / Lowe search for one key's operations (indeterminate reads already left out). */
export function searchKey(keyOps: Operation[], deadlineMs: number, memoBytesMax = MEMO_BYTES_MAX): KeyOutcome {
  // Determinate operations first, by return (see LinearizedSet); the indeterminate ones after them.
  const byReturn = (a: Operation, b: Operation): number => a.return - b.return || a.id - b.id;
  const determinate = keyOps.filter((op) => !isIndeterminate(op)).sort(byReturn);
  const ops = [...determinate, ...keyOps.filter(isIndeterminate)];
  const list = buildEntryList(ops);
  const sentAfter = connectionPredecessors(ops);
  const linearized = new LinearizedSet(determinate.length, ops.length - determinate.length);
  const cache = new SearchCache();
  const stack: { call: number; state: RegisterValue }[] = [];
  let remaining = determinate.length;
  let state = INITIAL_STATE;
  let entry = slot(list.next, list.head);
  let deepest: StuckPoint | null = null;
  let iterations = 0;
  while (remaining > 0) {
    if (++iterations % DEADLINE_CHECK_INTERVAL === 0) {
      if (performance.now() > deadlineMs) return { verdict: 'unknown' };
      if (cache.bytes > memoBytesMax) return { verdict: 'unknown', memo: true };
    }
    if (entry === -1) throw new Error('linearizability search ran off the entry list with operations remaining');
    const index = slot(list.opOf, entry);
    const before = slot(sentAfter, index);
    if (list.match[entry] !== -1 && before !== -1 && !linearized.has(before)) {
      entry = slot(list.next, entry); // its connection's earlier call is not linearized yet
      continue;
    }
    if (list.match[entry] !== -1) {
      const op = itemAt(ops, index);
      const result = step(state, op.input, op.output);
      linearized.add(index);
      if (result.ok && cache.add(linearized, result.state)) {
        stack.push({ call: entry, state });
        state = result.state;
        if (!isIndeterminate(op)) remaining--;
        lift(list, entry);
        entry = slot(list.next, list.head);
      } else {
        linearized.remove(index);
        entry = slot(list.next, entry);
      }
      continue;
    }
    if (deepest === null || stack.length > deepest.prefixLength) deepest = stuckAt(list, ops, stack, state, entry);
    const top = stack.pop();
    if (top === undefined) return { verdict: 'violation', stuck: deepest };
    const topIndex = slot(list.opOf, top.call);
    linearized.remove(topIndex);
    state = top.state;
    if (!isIndeterminate(itemAt(ops, topIndex))) remaining++;
    unlift(list, top.call);
    entry = slot(list.next, top.call);
  }
  return { verdict: 'ok' };
}

/**
 * For each operation, the one sent before it on its client connection (its index), which it must
 * follow, or -1: none named, or that one got no answer (it may not have happened, as in
 * sequential.ts's queues). `ops` may be in any order: each one's `id` is its place in invoke order.
 */
function connectionPredecessors(ops: readonly Operation[]): Int32Array {
  const before = new Int32Array(ops.length).fill(-1);
  const inInvokeOrder = ops.map((op, index) => ({ op, index })).sort((a, b) => a.op.id - b.op.id);
  const lastOnConnection = new Map<string, { op: Operation; index: number }>();
  for (const entry of inInvokeOrder) {
    if (entry.op.connection === undefined) continue;
    const previous = lastOnConnection.get(entry.op.connection);
    if (previous !== undefined && !isIndeterminate(previous.op)) before[entry.index] = previous.index;
    lastOnConnection.set(entry.op.connection, entry);
  }
  return before;
}

function stuckAt(
  list: EntryList, ops: Operation[], stack: { call: number }[], state: RegisterValue, returnEntry: number,
): StuckPoint {
  const candidates: Operation[] = [];
  const opAt = (node: number): Operation => itemAt(ops, slot(list.opOf, node));
  for (let node = slot(list.next, list.head); node !== returnEntry && node !== -1; node = slot(list.next, node)) {
    if (list.match[node] !== -1) candidates.push(opAt(node));
  }
  return {
    prefixLength: stack.length,
    prefixEnd: stack.slice(-PREFIX_SHOWN_MAX).map((frame) => opAt(frame.call)),
    state,
    candidates,
    blocking: opAt(returnEntry),
  };
}
