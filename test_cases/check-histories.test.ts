/**
 * Hand-written histories with known verdicts under each model, the parser's errors, the
 * recorder, and a cross-check of both searches against brute force on random small histories.
 */

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { HistoryRecorder, isIndeterminate, parseHistory, type History } from '../src/check/history.ts';
import { checkLinearizability, searchKey, unobservedIndeterminate } from '../src/check/linearizability.ts';
import { step } from '../src/check/model.ts';
import { checkSequential } from '../src/check/sequential.ts';
import { checkSession } from '../src/check/session.ts';
import { bruteForce, processOrder, realTime } from './support/brute-force.ts';
import { mulberry32 as random, picker } from '../src/runtime/random.ts';
import { itemAt } from '../src/runtime/item-at.ts';

const historiesDir = path.join(path.dirname(fileURLToPath(import.meta.url)), 'histories');
const TIMEOUT_MS = 5_000;

function load(name: string): History {
  const parsed = parseHistory(readFileSync(path.join(historiesDir, name), 'utf8'));
  if (!parsed.ok) throw new Error(`${name}:${parsed.line}: ${parsed.error}`);
  return parsed.history;
}

type Verdict = 'ok' | 'violation';
/** file → [linearizability, sequential, session] */
const EXPECTED: Record<string, [Verdict, Verdict, Verdict]> = {
  'stale-read.jsonl': ['violation', 'ok', 'ok'],
  'lost-write.jsonl': ['violation', 'ok', 'violation'],
  'reordered-writes.jsonl': ['violation', 'violation', 'violation'],
  'cas-twice.jsonl': ['violation', 'violation', 'ok'],
  'never-written.jsonl': ['violation', 'violation', 'violation'],
  'own-write-unseen.jsonl': ['violation', 'violation', 'violation'],
  'multi-key-violation.jsonl': ['violation', 'ok', 'ok'],
  'concurrent-overlap.jsonl': ['ok', 'ok', 'ok'],
  'indeterminate-took-effect.jsonl': ['ok', 'ok', 'ok'],
  'indeterminate-never.jsonl': ['ok', 'ok', 'ok'],
  // No read saw the timed-out write of 2, yet only it explains the failed cas: it took effect.
  'indeterminate-unread-explains-failed-cas.jsonl': ['ok', 'ok', 'ok'],
  'aliases-and-noise.jsonl': ['ok', 'ok', 'ok'],
  // Two processes sharing one connection (`connection`): what a connection sends takes effect in that order.
  'pipelined-read-behind-write.jsonl': ['violation', 'violation', 'ok'],
  'pipelined-unanswered-write.jsonl': ['ok', 'ok', 'ok'],
};

describe('hand-written histories', () => {
  for (const [file, [linearizable, sequential, session]] of Object.entries(EXPECTED)) {
    it(`${file}: linearizability ${linearizable}, sequential ${sequential}, session ${session}`, () => {
      const history = load(file);
      expect(checkLinearizability(history, { timeoutMs: TIMEOUT_MS }).verdict).toBe(linearizable);
      expect(checkSequential(history, { timeoutMs: TIMEOUT_MS }).verdict).toBe(sequential);
      expect(checkSession(history).verdict).toBe(session);
    });
  }

  it('names the key and the stuck point of a violation', () => {
    const result = checkLinearizability(load('multi-key-violation.jsonl'), { timeoutMs: TIMEOUT_MS });
    expect(result.key).toBe('bad');
    expect(result.detail).toContain('Longest valid prefix found: 2 operation(s); the register then holds absent');
    expect(result.detail).toMatch(/#\d+ p1 read → "1" \(lines 9-10\)/);
  });

  it('reports a stale read with the write it missed', () => {
    const result = checkLinearizability(load('stale-read.jsonl'), { timeoutMs: TIMEOUT_MS });
    expect(result.detail).toContain('write "2"');
    expect(result.detail).toContain('p1 read → "1"');
  });

  it('says which session guarantee broke', () => {
    expect(checkSession(load('own-write-unseen.jsonl')).detail).toContain('read-your-writes violated by process 0');
    expect(checkSession(load('reordered-writes.jsonl')).detail).toContain('monotonic reads violated by process 1');
    expect(checkSession(load('never-written.jsonl')).detail).toContain('a value no operation wrote');
    expect(checkSession(load('aliases-and-noise.jsonl')).detail).toContain('keys with appends not checked: "a"');
  });

  it('parses aliases, times, noise and fail-with-result-false', () => {
    const { operations, timeUnit } = load('aliases-and-noise.jsonl');
    expect(timeUnit).toBe('ns');
    expect(operations.map((op) => op.f)).toEqual([
      'write', 'write', 'read', 'append', 'append', 'read', 'delete', 'delete', 'cas', 'read',
    ]);
    expect(operations[7]).toMatchObject({ status: 'fail-false', output: { kind: 'done', result: false }, call: 2500, return: 2600 });
    expect(itemAt(operations, 8).input).toEqual({ f: 'cas', expected: null, value: 'again' });
    expect(itemAt(operations, 2).output).toEqual({ kind: 'read', value: '5' });
  });

  it('drops failed operations and makes open or info ones indeterminate', () => {
    const { operations, timeUnit } = load('indeterminate-never.jsonl');
    expect(timeUnit).toBe('line');
    expect(operations.map((op) => `${op.f}:${op.status}`)).toEqual(['write:info', 'read:ok', 'read:ok', 'cas:fail-false', 'read:info']);
    expect(itemAt(operations, 0).return).toBe(Infinity);
    expect(operations.map((op) => op.id)).toEqual([0, 1, 2, 3, 4]);
  });
});

/** JSON lines of complete operations, one process each, in the given order of lines. */
function lines(ops: [number, string, unknown, Record<string, unknown>][]): string {
  return ops.flatMap(([process, f, value, completion]) => [
    JSON.stringify({ process, type: 'invoke', f, key: 'k', value }),
    JSON.stringify({ process, type: 'ok', f, key: 'k', ...completion }),
  ]).join('\n');
}

describe('sequential search with appends', () => {
  // p1 reads "2" and then "1a" (before anyone wrote, in real time, so only the sequential search
  // can explain it): "1a" must be built twice, once on each side of p0's write of "2".
  const rebuilt = (secondAppendResult: boolean): History => {
    const parsed = parseHistory(lines([
      [1, 'read', null, { value: '2' }], [1, 'read', null, { value: '1a' }],
      [0, 'write', '1', {}], [0, 'append', 'a', { result: true }], [0, 'write', '2', {}],
      [2, 'write', '1', {}], [2, 'append', 'a', { result: secondAppendResult }],
    ]));
    if (!parsed.ok) throw new Error(parsed.error);
    return parsed.history;
  };

  it('counts an append as a producer of every value ending in its suffix', () => {
    expect(checkSequential(rebuilt(true), { timeoutMs: TIMEOUT_MS }).verdict).toBe('ok');
  });

  it('finds the violation when the value cannot be built again', () => {
    expect(checkSequential(rebuilt(false), { timeoutMs: TIMEOUT_MS }).verdict).toBe('violation');
  });
});

describe('parser errors name the line', () => {
  const cases: [string, string, number, RegExp][] = [
    ['bad JSON', '{"process": 0, "type": "invoke", "f": "read", "key": "x"}\n{oops', 2, /not valid JSON/],
    ['completion without invoke', '{"process": 3, "type": "ok", "f": "read", "key": "x", "value": 1}', 1, /never invoked/],
    ['two open ops', '{"process": 0, "type": "invoke", "f": "read"}\n\n{"process": 0, "type": "invoke", "f": "read"}', 3, /still open/],
    ['op after info', '{"process": 0, "type": "invoke", "f": "write", "value": 1}\n{"process": 0, "type": "info", "f": "write"}\n{"process": 0, "type": "invoke", "f": "read"}', 3, /new process id/],
    ['bad cas value', '{"process": 0, "type": "invoke", "f": "cas", "value": 3}', 1, /\[old, new\]/],
    ['unknown f', '{"process": 0, "type": "invoke", "f": "frobnicate"}', 1, /unknown "f"/],
    ['unknown type', '{"process": 0, "type": "done", "f": "read"}', 1, /"type" must be/],
    ['mixed times', '{"process": 0, "type": "invoke", "f": "read", "time": 5}\n{"process": 0, "type": "ok", "f": "read", "value": null}', 2, /no "time"/],
    ['mismatched f', '{"process": 0, "type": "invoke", "f": "read"}\n{"process": 0, "type": "ok", "f": "write", "value": 1}', 2, /does not match/],
    ['read without value', '{"process": 0, "type": "invoke", "f": "read"}\n{"process": 0, "type": "ok", "f": "read"}', 2, /needs "value"/],
    ['negative process', '{"process": -1, "type": "invoke", "f": "read"}', 1, /non-negative integer/],
  ];
  for (const [name, text, line, message] of cases) {
    it(name, () => {
      const parsed = parseHistory(text);
      expect(parsed.ok).toBe(false);
      if (parsed.ok) return;
      expect(parsed.line).toBe(line);
      expect(parsed.error).toMatch(message);
    });
  }

  it('reads a failed cas as compare-failed only when asked', () => {
    const text = '{"process": 0, "type": "invoke", "f": "cas", "value": [1, 2]}\n{"process": 0, "type": "fail", "f": "cas"}';
    const plain = parseHistory(text);
    const etcd = parseHistory(text, { failedCasIsFalse: true });
    expect(plain.ok && plain.history.operations.length).toBe(0);
    expect(etcd.ok && itemAt(etcd.history.operations, 0).output).toEqual({ kind: 'done', result: false });
  });
});

describe('model', () => {
  it('follows memcached register rules', () => {
    const done = (result: boolean | undefined) => ({ kind: 'done' as const, result });
    expect(step(null, { f: 'append', value: 'x' }, done(true)).ok).toBe(false);
    expect(step(null, { f: 'append', value: 'x' }, done(false))).toEqual({ ok: true, state: null });
    expect(step('a', { f: 'append', value: 'b' }, done(true))).toEqual({ ok: true, state: 'ab' });
    expect(step(null, { f: 'cas', expected: null, value: 'v' }, done(true))).toEqual({ ok: true, state: 'v' });
    expect(step('v', { f: 'cas', expected: null, value: 'w' }, done(true)).ok).toBe(false);
    expect(step('v', { f: 'cas', expected: 'u', value: 'w' }, done(false))).toEqual({ ok: true, state: 'v' });
    expect(step('v', { f: 'cas', expected: 'v', value: 'w' }, { kind: 'indeterminate' })).toEqual({ ok: true, state: 'w' });
    expect(step('v', { f: 'delete' }, done(false)).ok).toBe(false);
    expect(step('v', { f: 'delete' }, done(undefined))).toEqual({ ok: true, state: null });
    expect(step('v', { f: 'read' }, { kind: 'read', value: 'v' }).ok).toBe(true);
    expect(step('v', { f: 'read' }, { kind: 'read', value: null }).ok).toBe(false);
  });
});

describe('HistoryRecorder', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'mckv-recorder-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('writes a history the parser reads back, with a new process after an info', async () => {
    const file = path.join(dir, 'h.jsonl');
    const recorder = new HistoryRecorder({ file });
    const write = recorder.invoke(7, 'set', 'k', 'v1');
    const read = recorder.invoke(8, 'get', 'k');
    recorder.ok(write, 'v1');
    recorder.ok(read, 'v1');
    const cas = recorder.invoke(7, 'cas', 'k', ['v0', 'v2']);
    recorder.fail(cas, null, { result: false });
    const lost = recorder.invoke(8, 'set', 'k', 'v3');
    recorder.info(lost, null, { error: 'timeout' });
    const after = recorder.invoke(8, 'get', 'k');
    recorder.ok(after, 'v3');
    expect(() => recorder.ok(after, 'v3')).toThrow(/completed twice/);
    await recorder.close();
    const parsed = parseHistory(readFileSync(file, 'utf8'));
    expect(parsed.ok).toBe(true);
    if (!parsed.ok) return;
    const ops = parsed.history.operations;
    expect(parsed.history.timeUnit).toBe('ns');
    expect(ops.map((op) => `${op.process}:${op.f}:${op.status}`)).toEqual([
      '7:write:ok', '8:read:ok', '7:cas:fail-false', '8:write:info', '1000:read:ok',
    ]);
    expect(() => recorder.invoke(1000, 'get', 'k')).toThrow(/must be an integer/);
    expect(itemAt(ops, 0).call).toBeLessThanOrEqual(itemAt(ops, 0).return);
    expect(recorder.lines()).toHaveLength(10);
    expect(checkLinearizability(parsed.history, { timeoutMs: TIMEOUT_MS }).verdict).toBe('ok');
  });

  it('notes nemesis events without a process id, and the parser skips them', () => {
    const recorder = new HistoryRecorder();
    const write = recorder.invoke(0, 'set', 'k', 'v1');
    recorder.note({ fault: 'kill', nodes: ['n1'], action: 'start' });
    recorder.ok(write, 'v1');
    recorder.note({ fault: 'kill', nodes: ['n1'], action: 'stop' });
    const noted = JSON.parse(itemAt(recorder.lines(), 1)) as Record<string, unknown>;
    expect(noted).toMatchObject({ process: 'nemesis', type: 'info', f: 'nemesis', value: { fault: 'kill', action: 'start' } });
    expect(typeof noted.time).toBe('number');
    const parsed = parseHistory(recorder.lines().join('\n'));
    expect(parsed.ok && parsed.history.operations.map((op) => `${op.process}:${op.f}:${op.status}`)).toEqual(['0:write:ok']);
  });
});


/**
 * A random small single-key history as JSON lines, with ties in time and indeterminate ops. Appends
 * add "a" or "b", and reads may see appended values, so the append-aware pruning is exercised.
 */
function randomHistory(seed: number): string {
  const next = random(seed);
  const pick = picker(next);
  const values = ['1', '2', '3'];
  const readable = [null, '1', '2', '3', '1a', '1a', '2b', '1ab'];
  const events: { time: number; line: string }[] = [];
  const processes = 1 + Math.floor(next() * 3);
  for (let process = 0; process < processes; process++) {
    let time = Math.floor(next() * 4);
    const count = 1 + Math.floor(next() * 4);
    for (let index = 0; index < count; index++) {
      const f = pick(['read', 'read', 'read', 'write', 'cas', 'append', 'append', 'delete']);
      const value = inputValue(f, pick, values);
      const call = time;
      const ret = call + Math.floor(next() * 6);
      events.push({ time: call, line: JSON.stringify({ process, type: 'invoke', f, key: 'k', value, time: call }) });
      if (index === count - 1 && next() < 0.25) {
        events.push({ time: ret, line: JSON.stringify({ process, type: 'info', f, key: 'k', time: ret }) });
        break;
      }
      const output = f === 'read' ? { value: pick(readable) } : { value, result: f === 'write' ? undefined : next() < 0.6 };
      events.push({ time: ret, line: JSON.stringify({ process, type: 'ok', f, key: 'k', time: ret, ...output }) });
      time = ret + Math.floor(next() * 3);
    }
  }
  return events.map((event) => event.line).join('\n');
}

function inputValue(f: string, pick: <T>(items: T[]) => T, values: string[]): unknown {
  switch (f) {
    case 'write': return pick(values);
    case 'cas': return [pick([null, ...values, '1a']), pick(values)];
    case 'append': return pick(['a', 'b']);
    default: return null;
  }
}



describe('searches agree with brute force on random small histories', () => {
  it('linearizability and sequential, 1000 seeds', () => {
    const tally = { linearizable: 0, notLinearizable: 0, sequential: 0, notSequential: 0 };
    for (let seed = 1; seed <= 1000; seed++) {
      const parsed = parseHistory(randomHistory(seed));
      if (!parsed.ok) throw new Error(`seed ${seed}: ${parsed.error}`);
      const ops = parsed.history.operations;
      const linearizable = bruteForce(ops, realTime);
      const sequential = bruteForce(ops, processOrder);
      const context = `seed ${seed}\n${randomHistory(seed)}`;
      expect(checkLinearizability(parsed.history, { timeoutMs: TIMEOUT_MS }).verdict, context).toBe(linearizable ? 'ok' : 'violation');
      expect(checkSequential(parsed.history, { timeoutMs: TIMEOUT_MS }).verdict, context).toBe(sequential ? 'ok' : 'violation');
      tally[linearizable ? 'linearizable' : 'notLinearizable']++;
      tally[sequential ? 'sequential' : 'notSequential']++;
    }
    // The generator must exercise both outcomes of both checks.
    for (const count of Object.values(tally)) expect(count).toBeGreaterThan(30);
  });

  it('gives up, rather than run out of heap, once its memo of explored states outgrows its bound', () => {
    // Four processes, 400 concurrent-ish writes and reads each: thousands of memo entries.
    const events: string[] = [];
    for (let round = 0; round < 400; round++) {
      for (let process = 0; process < 4; process++) {
        const value = `${process}.${round}`;
        events.push(JSON.stringify({ process, type: 'invoke', f: 'write', key: 'k', value, time: round * 10 + process }));
      }
      for (let process = 0; process < 4; process++) {
        events.push(JSON.stringify({ process, type: 'ok', f: 'write', key: 'k', value: `${process}.${round}`, time: round * 10 + 5 + process }));
      }
    }
    const parsed = parseHistory(events.join('\n'));
    if (!parsed.ok) throw new Error(parsed.error);
    const ops = parsed.history.operations;
    expect(searchKey(ops, Number.POSITIVE_INFINITY).verdict).toBe('ok');
    expect(searchKey(ops, Number.POSITIVE_INFINITY, 10_000)).toEqual({ verdict: 'unknown', memo: true });
  });

  it('an order found without the unanswered writes nothing observed is an order of the whole history', () => {
    const tally = { foundWithout: 0, neededThem: 0 };
    for (let seed = 1; seed <= 1000; seed++) {
      const parsed = parseHistory(randomHistory(seed));
      if (!parsed.ok) throw new Error(`seed ${seed}: ${parsed.error}`);
      const ops = parsed.history.operations.filter((op) => !(op.f === 'read' && isIndeterminate(op)));
      const unseen = unobservedIndeterminate(ops);
      if (unseen.size === 0) continue;
      const without = searchKey(ops.filter((op) => !unseen.has(op)), Number.POSITIVE_INFINITY).verdict;
      const linearizable = bruteForce(parsed.history.operations, realTime);
      if (without === 'ok') {
        expect(linearizable, `seed ${seed}\n${randomHistory(seed)}`).toBe(true);
        tally.foundWithout++;
      } else if (linearizable) {
        tally.neededThem++; // no order without them, yet the whole history has one: why it comes second
      }
    }
    expect(tally.foundWithout).toBeGreaterThan(10);
    expect(tally.neededThem).toBeGreaterThan(0);
  });
});
