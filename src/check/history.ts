/**
 * Histories as the checkers see them: the `Operation` model, `CheckResult` and the queries every
 * checker shares. The parser (history-parse.ts) and the recorder (history-recorder.ts) of the
 * JSON-lines format are re-exported here, so other modules import histories from this one place.
 *
 * Intuition: a checker needs, per operation, only what it asked (input), what it was told (output)
 * and the interval in which it may have taken effect; the parser drops everything else.
 *
 * Invariants of a parsed history:
 * - `call <= return`; an indeterminate operation (`info`, or never completed) has
 *   `return = Infinity` and `output.kind = 'indeterminate'`.
 * - A process has at most one open operation, and none after an indeterminate one, so each
 *   process's operations are totally ordered by `call`.
 * - Values are canonical strings (`17` and `"17"` are the same register value, as memcached
 *   stores bytes); `null` means absent.
 * - Operations that certainly did not happen (`fail` without `"result": false`) are dropped.
 * - `connection` (an extra field of mckv's recorder, on invokes): operations that went over one
 *   client connection, whose server keeps their order (memcached's, and mckv's, promise), even
 *   when several processes shared it with their calls in flight together (a pipelining client).
 */

export { DEFAULT_KEY, canonicalValue, parseHistory, type ParseOptions, type ParseResult } from './history-parse.ts';
export { HistoryRecorder, type HistoryRecorderOptions, type RecordHandle } from './history-recorder.ts';

/** The operations a register history may contain (after aliases are resolved). */
export type OpFunction = 'read' | 'write' | 'cas' | 'delete' | 'append';

/** A register's value: a canonical string, or `null` when the key is absent. */
export type RegisterValue = string | null;

/** What an operation asked for. `cas.expected = null` means add-if-absent. */
export type OpInput =
  | { f: 'read' }
  | { f: 'write'; value: string }
  | { f: 'cas'; expected: RegisterValue; value: string }
  | { f: 'delete' }
  | { f: 'append'; value: string };

/**
 * What an operation was told. `read` carries the value read; the others carry the boolean result
 * when one was reported (`undefined` for a write, or a delete that did not say).
 */
export type OpOutput =
  | { kind: 'indeterminate' }
  | { kind: 'read'; value: RegisterValue }
  | { kind: 'done'; result: boolean | undefined };

/** `ok` completed; `info` indeterminate; `fail-false` a `fail` that counts as returning false. */
export type OpStatus = 'ok' | 'info' | 'fail-false';

/** One operation of a history, invoke and completion paired. */
export interface Operation {
  /** Index in `History.operations`, in order of invocation. */
  id: number;
  process: number;
  key: string;
  f: OpFunction;
  input: OpInput;
  output: OpOutput;
  /** Invoke time: nanoseconds, or the line number when the history has no times. */
  call: number;
  /** Completion time in the same unit; `Infinity` when indeterminate. */
  return: number;
  status: OpStatus;
  /** 1-based line of the invoke event, and of the completion (`null` if none). */
  callLine: number;
  returnLine: number | null;
  /**
   * The client connection it was sent on, when the history says (`connection`): a connection's
   * operations take effect in the order they were sent, which is the order of their invokes.
   */
  connection?: string;
}

export interface History {
  operations: Operation[];
  /** `ns` when events carry `time`, else `line` (line order is time). */
  timeUnit: 'ns' | 'line';
}

/** The verdict of any checker in src/check/. */
export interface CheckResult {
  verdict: 'ok' | 'violation' | 'unknown';
  /** The key where the violation was found (or where the search gave up). */
  key?: string;
  /** Readable explanation, several lines. */
  detail?: string;
}

/** Whether the operation's outcome is unknown (it may have taken effect or not). */
export function isIndeterminate(op: Operation): boolean {
  return op.output.kind === 'indeterminate';
}

/**
 * One key's operations as the queues whose order every valid order keeps: each process's in its
 * order, or, for operations that name a client connection, each connection's in the order of their
 * invokes (the order they were sent, which the server keeps, even when several processes shared
 * the connection with calls in flight together). An indeterminate operation ends its queue, as in
 * a process: it may have taken effect or not, so it may be left out only when it is last; a later
 * call on the same connection that did get its reply starts a new queue, unordered against it.
 * Indeterminate reads constrain nothing and are left out.
 */
export function orderQueues(ops: readonly Operation[]): Operation[][] {
  const orders = new Map<string, Operation[]>();
  for (const op of ops) {
    if (op.f === 'read' && isIndeterminate(op)) continue;
    const order = op.connection === undefined ? `process ${op.process}` : `connection ${op.connection}`;
    const list = orders.get(order);
    if (list) list.push(op);
    else orders.set(order, [op]);
  }
  const queues: Operation[][] = [];
  for (const list of orders.values()) {
    list.sort((a, b) => a.id - b.id);
    let queue: Operation[] = [];
    for (const op of list) {
      queue.push(op);
      if (isIndeterminate(op)) {
        queues.push(queue);
        queue = [];
      }
    }
    if (queue.length > 0) queues.push(queue);
  }
  return queues;
}

/** Group operations by key, each group in invocation order. */
export function partitionByKey(operations: readonly Operation[]): Map<string, Operation[]> {
  const byKey = new Map<string, Operation[]>();
  for (const op of operations) {
    const group = byKey.get(op.key);
    if (group) group.push(op);
    else byKey.set(op.key, [op]);
  }
  return byKey;
}

/** One line describing an operation for reports, e.g. `#7 p2 cas "1"→"2" → false (lines 13-15)`. */
export function describeOperation(op: Operation): string {
  const lines = op.returnLine === null ? `line ${op.callLine}, never completed` : `lines ${op.callLine}-${op.returnLine}`;
  return `#${op.id} p${op.process} ${describeInput(op.input)} → ${describeOutput(op.output)} (${lines})`;
}

function describeInput(input: OpInput): string {
  switch (input.f) {
    case 'read': return 'read';
    case 'delete': return 'delete';
    case 'write': return `write ${show(input.value)}`;
    case 'append': return `append ${show(input.value)}`;
    case 'cas': return `cas ${show(input.expected)}→${show(input.value)}`;
    default: {
      const unreachable: never = input;
      return String(unreachable);
    }
  }
}

function describeOutput(output: OpOutput): string {
  switch (output.kind) {
    case 'indeterminate': return '? (indeterminate)';
    case 'read': return show(output.value);
    case 'done': return output.result === undefined ? 'ok' : String(output.result);
    default: {
      const unreachable: never = output;
      return String(unreachable);
    }
  }
}

/** A register value for reports: quoted, or `absent`. */
export function show(value: RegisterValue): string {
  return value === null ? 'absent' : JSON.stringify(value);
}
