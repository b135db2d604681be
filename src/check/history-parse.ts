/**
 * Reading a history: the JSON-lines format of docs/history-format.md into a `History`.
 *
 * A history is a list of events, one JSON object a line: an `invoke` and then at most one
 * completion (`ok`, `fail`, `info`) per operation and process. `parseHistory` pairs them into
 * `Operation`s with a call and a return time and enforces the invariants listed in history.ts.
 * Function aliases (get, set, put) are resolved; Jepsen's `meta` and `nemesis` events are skipped.
 *
 * Input comes from a file, so malformed input is a value naming the line, never an exception out
 * of `parseHistory`.
 */

import type { History, OpFunction, OpInput, OpOutput, Operation, RegisterValue } from './history.ts';

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
