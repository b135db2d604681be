/**
 * Session-guarantee checker: read-your-writes and monotonic reads, per process and key.
 *
 * A *writer* of a value is an operation that may have left it (a write, a cas that did not return
 * false, a delete, the initial `null`); writer x is *known older* than y when x returned before y
 * was called. A read violates a guarantee exactly when every writer of its value was acknowledged
 * before the process's *floor*: the latest call time among what it must not go behind (its own
 * writes, and for each read the earliest-invoked writer of the value read). A read of a value no
 * operation wrote is reported too. The definitions in full, the assumption about write order and
 * why a read is never blamed wrongly: docs/checking.md, "The session-guarantee checker".
 *
 * Keys with appends are skipped (an appended value has no single writer); the result says so.
 */

import {
  describeOperation, partitionByKey, show,
  type CheckResult, type History, type Operation, type RegisterValue,
} from './history.ts';

/** One possible origin of a value: the interval in which it was written. */
interface Writer {
  call: number;
  return: number;
  op: Operation | null; // null: the initial state
}

const INITIAL_WRITER: Writer = { call: -Infinity, return: -Infinity, op: null };

/** Why a process must not go behind its floor. */
interface Floor {
  call: number;
  reason: 'own-write' | 'read';
  cause: Operation;
}

/** Check read-your-writes and monotonic reads for every process and key. */
export function checkSession(history: History): CheckResult {
  const skipped: string[] = [];
  for (const [key, ops] of partitionByKey(history.operations)) {
    if (ops.some((op) => op.f === 'append')) {
      skipped.push(key);
      continue;
    }
    const violation = checkKey(key, ops);
    if (violation !== null) return violation;
  }
  const note = skipped.length > 0 ? `; keys with appends not checked: ${skipped.map((key) => JSON.stringify(key)).join(', ')}` : '';
  return { verdict: 'ok', detail: `read-your-writes and monotonic reads hold for every process${note}` };
}

function checkKey(key: string, ops: Operation[]): CheckResult | null {
  const writers = writersByValue(ops);
  const byProcess = new Map<number, Operation[]>();
  for (const op of ops) {
    const list = byProcess.get(op.process);
    if (list) list.push(op);
    else byProcess.set(op.process, [op]);
  }
  for (const processOps of byProcess.values()) {
    const violation = checkProcess(key, processOps.sort((a, b) => a.id - b.id), writers);
    if (violation !== null) return violation;
  }
  return null;
}

function writersByValue(ops: Operation[]): Map<RegisterValue, Writer[]> {
  const writers = new Map<RegisterValue, Writer[]>([[null, [INITIAL_WRITER]]]);
  for (const op of ops) {
    const value = writtenValue(op);
    if (value === undefined) continue;
    const list = writers.get(value);
    const writer = { call: op.call, return: op.return, op };
    if (list) list.push(writer);
    else writers.set(value, [writer]);
  }
  return writers;
}

/** The value an operation may have written; `undefined` if it writes nothing. */
function writtenValue(op: Operation): RegisterValue | undefined {
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

function checkProcess(key: string, ops: Operation[], writers: Map<RegisterValue, Writer[]>): CheckResult | null {
  let floor: Floor | null = null;
  for (const op of ops) {
    if (op.output.kind === 'read') {
      const candidates = writers.get(op.output.value) ?? [];
      if (candidates.length === 0) return neverWritten(key, op, op.output.value);
      if (floor !== null && candidates.reduce((latest, writer) => Math.max(latest, writer.return), -Infinity) < floor.call) {
        return wentBack(key, op, floor, candidates);
      }
      const earliest = candidates.reduce((soonest, writer) => Math.min(soonest, writer.call), Infinity);
      if (floor === null || earliest > floor.call) floor = { call: earliest, reason: 'read', cause: op };
      continue;
    }
    const ownWrite = op.status === 'ok' && writtenValue(op) !== undefined;
    if (ownWrite && (floor === null || op.call > floor.call)) floor = { call: op.call, reason: 'own-write', cause: op };
  }
  return null;
}

function neverWritten(key: string, read: Operation, value: RegisterValue): CheckResult {
  return {
    verdict: 'violation', key,
    detail: [
      `key ${JSON.stringify(key)}: process ${read.process} read ${show(value)}, a value no operation wrote.`,
      `  ${describeOperation(read)}`,
    ].join('\n'),
  };
}

function wentBack(key: string, read: Operation, floor: Floor, writers: Writer[]): CheckResult {
  const guarantee = floor.reason === 'own-write' ? 'read-your-writes' : 'monotonic reads';
  const because = floor.reason === 'own-write' ? 'after its own write' : 'after it had read a newer value';
  const lines = [
    `key ${JSON.stringify(key)}: ${guarantee} violated by process ${read.process}: it read an older value ${because}.`,
    `  ${describeOperation(floor.cause)}`,
    `  ${describeOperation(read)}`,
    'every operation that could have written the value read was acknowledged before that point:',
  ];
  for (const writer of writers) {
    lines.push(writer.op === null ? '  (the initial state: absent)' : `  ${describeOperation(writer.op)}`);
  }
  return { verdict: 'violation', key, detail: lines.join('\n') };
}
