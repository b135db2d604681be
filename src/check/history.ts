/**
 * Histories: reading and writing the JSON-lines format of docs/history-format.md.
 *
 * A history is a list of events, one JSON object a line: an `invoke` and then at most one
 * completion (`ok`, `fail`, `info`) per operation and process. `parseHistory` pairs them into
 * `Operation`s with a call and a return time; `HistoryRecorder` writes them while a test runs.
 *
 * Intuition: the checkers only need, per operation, what it asked (input), what it was told
 * (output) and the interval in which it may have taken effect. Everything else is dropped here so
 * the checkers stay small.
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

import { createWriteStream, type WriteStream } from 'node:fs';

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

export type ParseResult =
  | { ok: true; history: History }
  | { ok: false; error: string; line: number };

export interface ParseOptions {
  /** Read a `fail` of a cas as "compare failed" (returned false), as the etcd histories need. */
  failedCasIsFalse?: boolean;
}

const ALIASES: Readonly<Record<string, OpFunction>> = {
  read: 'read', get: 'read',
  write: 'write', set: 'write', put: 'write',
  cas: 'cas', delete: 'delete', append: 'append',
};
const IGNORED_FUNCTIONS = new Set(['meta', 'nemesis']);
/** Key used when events carry none (single-register histories such as the etcd ones). */
export const DEFAULT_KEY = 'register';

/** Thrown inside the parser only; `parseHistory` turns it into a value. */
class LineError extends Error {
  constructor(readonly line: number, message: string) { super(message); }
}

interface RawEvent {
  line: number;
  process: number;
  type: 'invoke' | 'ok' | 'fail' | 'info';
  f: OpFunction | undefined;
  key: string | undefined;
  value: unknown;
  result: unknown;
  time: number | undefined;
  connection: string | undefined;
}

interface OpenOp { op: Operation }

/** Parse a JSON-lines history. Malformed input is returned as an error naming the line. */
export function parseHistory(text: string, options: ParseOptions = {}): ParseResult {
  try {
    const events = readEvents(text);
    return { ok: true, history: pairEvents(events, options) };
  } catch (error) {
    if (error instanceof LineError) return { ok: false, error: error.message, line: error.line };
    throw error;
  }
}

function readEvents(text: string): RawEvent[] {
  const events: RawEvent[] = [];
  const lines = text.split('\n');
  for (const [index, line] of lines.entries()) {
    const source = line.trim();
    if (source === '') continue;
    const event = readEvent(source, index + 1);
    if (event !== null) events.push(event);
  }
  return events;
}

function readEvent(source: string, line: number): RawEvent | null {
  let json: unknown;
  try {
    json = JSON.parse(source);
  } catch {
    throw new LineError(line, `not valid JSON: ${truncate(source)}`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new LineError(line, 'an event must be a JSON object');
  }
  const object = json as Record<string, unknown>;
  const fName = object.f;
  if (typeof fName === 'string' && IGNORED_FUNCTIONS.has(fName)) return null;
  if (object.process === 'nemesis' || object.process === ':nemesis') return null;
  const type = object.type;
  if (type !== 'invoke' && type !== 'ok' && type !== 'fail' && type !== 'info') {
    throw new LineError(line, `"type" must be invoke, ok, fail or info, got ${JSON.stringify(type)}`);
  }
  return {
    line,
    process: readProcess(object.process, line),
    type,
    f: readFunction(fName, line),
    key: readKey(object.key, line),
    value: object.value,
    result: object.result,
    time: readTime(object.time, line),
    connection: readConnection(object.connection, line),
  };
}

function readConnection(connection: unknown, line: number): string | undefined {
  if (connection === undefined || connection === null) return undefined;
  if (typeof connection === 'string' || (typeof connection === 'number' && Number.isFinite(connection))) return String(connection);
  throw new LineError(line, `"connection" must be a string or a number, got ${JSON.stringify(connection)}`);
}

function readProcess(process: unknown, line: number): number {
  const number = typeof process === 'string' && /^\d+$/.test(process) ? Number(process) : process;
  if (typeof number !== 'number' || !Number.isSafeInteger(number) || number < 0) {
    throw new LineError(line, `"process" must be a non-negative integer, got ${JSON.stringify(process)}`);
  }
  return number;
}

function readFunction(fName: unknown, line: number): OpFunction | undefined {
  if (fName === undefined) return undefined;
  if (typeof fName !== 'string' || !(fName in ALIASES)) {
    throw new LineError(line, `unknown "f" ${JSON.stringify(fName)} (expected read/get, write/set/put, cas, delete, append)`);
  }
  return ALIASES[fName];
}

function readKey(key: unknown, line: number): string | undefined {
  if (key === undefined) return undefined;
  if (typeof key === 'string') return key;
  if (typeof key === 'number') return String(key);
  throw new LineError(line, `"key" must be a string or a number, got ${JSON.stringify(key)}`);
}

function readTime(time: unknown, line: number): number | undefined {
  if (time === undefined || time === null) return undefined;
  if (typeof time !== 'number' || !Number.isFinite(time)) {
    throw new LineError(line, `"time" must be a number of nanoseconds, got ${JSON.stringify(time)}`);
  }
  return time;
}

function pairEvents(events: RawEvent[], options: ParseOptions): History {
  const timed = events.some((event) => event.time !== undefined);
  const operations: Operation[] = [];
  const dropped = new Set<Operation>();
  const open = new Map<number, OpenOp>();
  const lastReturn = new Map<number, number>(); // process → time of its last completion
  const retired = new Map<number, number>(); // process → line of its indeterminate completion
  for (const event of events) {
    if (timed && event.time === undefined) {
      throw new LineError(event.line, 'this event has no "time" but others do');
    }
    const time = timed ? (event.time as number) : event.line;
    if (event.type === 'invoke') {
      if (time < (lastReturn.get(event.process) ?? -Infinity)) {
        throw new LineError(event.line, `process ${event.process} invoked before its previous operation completed (time goes back)`);
      }
      operations.push(invoke(event, time, open, retired, operations.length));
    } else {
      lastReturn.set(event.process, time);
      const op = complete(event, time, open, retired, options);
      if (op !== null) dropped.add(op);
    }
  }
  const kept = operations.filter((op) => !dropped.has(op));
  kept.forEach((op, index) => { op.id = index; });
  return { operations: kept, timeUnit: timed ? 'ns' : 'line' };
}

function invoke(
  event: RawEvent, time: number, open: Map<number, OpenOp>, retired: Map<number, number>, id: number,
): Operation {
  const { line, process } = event;
  const busy = open.get(process);
  if (busy) throw new LineError(line, `process ${process} invoked while its operation from line ${busy.op.callLine} is still open`);
  const retiredAt = retired.get(process);
  if (retiredAt !== undefined) {
    throw new LineError(line, `process ${process} invoked after its indeterminate operation (line ${retiredAt}); a client must take a new process id after an info`);
  }
  if (event.f === undefined) throw new LineError(line, 'an invoke needs "f"');
  const op: Operation = {
    id, process, key: event.key ?? DEFAULT_KEY, f: event.f,
    input: readInput(event.f, event.value, line),
    output: { kind: 'indeterminate' }, call: time, return: Infinity, status: 'info',
    callLine: line, returnLine: null,
    ...(event.connection === undefined ? {} : { connection: event.connection }),
  };
  open.set(process, { op });
  return op;
}

function readInput(f: OpFunction, value: unknown, line: number): OpInput {
  switch (f) {
    case 'read': return { f };
    case 'delete': return { f };
    case 'write':
    case 'append': return { f, value: requireValue(value, line, `a ${f} needs a "value"`) };
    case 'cas': {
      if (!Array.isArray(value) || value.length !== 2) {
        throw new LineError(line, `a cas needs "value": [old, new], got ${JSON.stringify(value)}`);
      }
      return { f, expected: canonicalValue(value[0], line), value: requireValue(value[1], line, 'a cas needs a new value') };
    }
    default: {
      const unreachable: never = f;
      throw new Error(`unreachable ${String(unreachable)}`);
    }
  }
}

function requireValue(value: unknown, line: number, message: string): string {
  const canonical = canonicalValue(value, line);
  if (canonical === null) throw new LineError(line, message);
  return canonical;
}

/** Canonical register value: strings as they are, numbers and booleans as their text. */
export function canonicalValue(value: unknown, line = 0): RegisterValue {
  if (value === null || value === undefined) return null;
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  throw new LineError(line, `a value must be a string, number, boolean or null, got ${truncate(JSON.stringify(value))}`);
}

/** Pair a completion with its invoke; returns the operation if it must be dropped, else null. */
function complete(
  event: RawEvent, time: number, open: Map<number, OpenOp>, retired: Map<number, number>, options: ParseOptions,
): Operation | null {
  const { line, process } = event;
  const entry = open.get(process);
  if (!entry) throw new LineError(line, `process ${process} completed an operation it never invoked`);
  const { op } = entry;
  if (event.f !== undefined && event.f !== op.f) {
    throw new LineError(line, `completion f "${event.f}" does not match the invoke's "${op.f}" (line ${op.callLine})`);
  }
  if (event.key !== undefined && event.key !== op.key) {
    throw new LineError(line, `completion key "${event.key}" does not match the invoke's "${op.key}" (line ${op.callLine})`);
  }
  if (time < op.call) throw new LineError(line, `completion time is before its invoke (line ${op.callLine})`);
  open.delete(process);
  op.returnLine = line;
  switch (event.type) {
    case 'ok':
      op.status = 'ok';
      op.return = time;
      op.output = readOkOutput(op.f, event, line);
      return null;
    case 'fail':
      return completeFailed(op, event, time, options) ? null : op;
    case 'info':
      retired.set(process, line);
      return null;
    case 'invoke':
      throw new Error('unreachable: invoke passed to complete');
    default: {
      const unreachable: never = event.type;
      throw new Error(`unreachable ${String(unreachable)}`);
    }
  }
}

function readOkOutput(f: OpFunction, event: RawEvent, line: number): OpOutput {
  if (f === 'read') {
    if (event.value === undefined) throw new LineError(line, 'an ok read needs "value" (null for absent)');
    return { kind: 'read', value: canonicalValue(event.value, line) };
  }
  const result = readResult(event.result, line);
  const defaultResult = f === 'cas' || f === 'append' ? true : undefined;
  return { kind: 'done', result: result ?? defaultResult };
}

function readResult(result: unknown, line: number): boolean | undefined {
  if (result === undefined || result === null) return undefined;
  if (typeof result !== 'boolean') throw new LineError(line, `"result" must be true or false, got ${JSON.stringify(result)}`);
  return result;
}

/** A `fail` that returned false becomes an operation; any other `fail` did not happen (false). */
function completeFailed(op: Operation, event: RawEvent, time: number, options: ParseOptions): boolean {
  const result = readResult(event.result, event.line);
  const returnedFalse = op.f !== 'read' && op.f !== 'write'
    && (result === false || (op.f === 'cas' && options.failedCasIsFalse === true && result === undefined));
  if (returnedFalse) {
    op.status = 'fail-false';
    op.return = time;
    op.output = { kind: 'done', result: false };
  }
  return returnedFalse;
}

function truncate(text: string): string {
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
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

/** Names one invoked operation for `HistoryRecorder.ok/fail/info`. */
export interface RecordHandle {
  readonly process: number;
  readonly client: number;
  readonly f: string;
  readonly key: string;
  completed: boolean;
}

export interface HistoryRecorderOptions {
  /** File to write JSON lines to as events happen; omit to keep them in memory only. */
  file?: string;
  /** Process ids given to clients after an `info` start here; client numbers must stay below. */
  freshProcessBase?: number;
}

/**
 * Records a history while clients run, in the JSON-lines format.
 *
 * A client's process id is its own number until one of its operations ends in `info`; from then
 * on it records under a fresh id (`freshProcessBase`, +1, ...), as Jepsen does, so a recorded
 * history always satisfies "no operation after an indeterminate one". Every event also carries
 * `client`. Times are `process.hrtime.bigint()` nanoseconds relative to the recorder's creation
 * (so they stay exact as JSON numbers).
 */
export class HistoryRecorder {
  private readonly startNs = process.hrtime.bigint();
  private readonly stream: WriteStream | null;
  private readonly recorded: string[] = [];
  private readonly processOfClient = new Map<number, number>();
  private readonly freshProcessBase: number;
  private nextFreshProcess: number;

  constructor(options: HistoryRecorderOptions = {}) {
    this.stream = options.file === undefined ? null : createWriteStream(options.file, { flags: 'w' });
    this.freshProcessBase = options.freshProcessBase ?? 1000;
    this.nextFreshProcess = this.freshProcessBase;
  }

  /**
   * Record an invoke; `value` is the written value, `[old, new]` for a cas, `null` for a read.
   * `connection` names the client connection it is sent on, when several processes share one.
   */
  invoke(client: number, f: string, key: string, value: unknown = null, connection?: string): RecordHandle {
    if (!Number.isSafeInteger(client) || client < 0 || client >= this.freshProcessBase) {
      throw new Error(`client ${client} must be an integer in [0, ${this.freshProcessBase})`);
    }
    const processId = this.processOfClient.get(client) ?? client;
    const handle: RecordHandle = { process: processId, client, f, key, completed: false };
    this.write({ process: processId, type: 'invoke', f, key, value, client, ...(connection === undefined ? {} : { connection }) });
    return handle;
  }

  /** The operation succeeded; `value` is what a read returned (or the written value). */
  ok(handle: RecordHandle, value: unknown = null, extra: Record<string, unknown> = {}): void {
    this.completeWith(handle, 'ok', value, extra);
  }

  /** The operation certainly did not happen (or, with `{ result: false }`, returned false). */
  fail(handle: RecordHandle, value: unknown = null, extra: Record<string, unknown> = {}): void {
    this.completeWith(handle, 'fail', value, extra);
  }

  /** The outcome is unknown (timeout, connection lost); the client gets a new process id. */
  info(handle: RecordHandle, value: unknown = null, extra: Record<string, unknown> = {}): void {
    this.completeWith(handle, 'info', value, extra);
    this.processOfClient.set(handle.client, this.nextFreshProcess++);
  }

  /**
   * Record an event that is not an operation (a fault starting or ending): written as
   * `{"process": "nemesis", "type": "info", "f": "nemesis", "value": event, "time": ...}`, the
   * Jepsen shape the parser ignores. Takes no client number and changes no process id.
   */
  note(event: Record<string, unknown>): void {
    this.write({ process: 'nemesis', type: 'info', f: 'nemesis', value: event });
  }

  /** The lines recorded so far. */
  lines(): readonly string[] {
    return this.recorded;
  }

  /** Flush and close the file, if any. */
  close(): Promise<void> {
    const stream = this.stream;
    if (stream === null) return Promise.resolve();
    return new Promise((resolve, reject) => {
      stream.once('error', reject);
      stream.end(() => resolve());
    });
  }

  private completeWith(handle: RecordHandle, type: 'ok' | 'fail' | 'info', value: unknown, extra: Record<string, unknown>): void {
    if (handle.completed) throw new Error(`operation of process ${handle.process} completed twice`);
    handle.completed = true;
    this.write({ ...extra, process: handle.process, type, f: handle.f, key: handle.key, value, client: handle.client });
  }

  private write(event: Record<string, unknown>): void {
    const time = Number(process.hrtime.bigint() - this.startNs);
    const line = JSON.stringify({ ...event, time });
    this.recorded.push(line);
    this.stream?.write(`${line}\n`);
  }
}
