/**
 * The causal checker (src/check/causal.ts) on small hand-made histories: ones causal convergence
 * allows, and one that fails for each bad pattern, each named in the verdict.
 *
 * Histories are written as steps `[process, f, key, value, result?]` in line order (the checker
 * ignores real time); `info` as the result makes the call indeterminate.
 */

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { checkCausal } from '../src/check/causal.ts';
import { parseHistory } from '../src/check/history.ts';
import { parseCheckArgs, runCheck } from '../src/check/cli.ts';
import { itemAt } from '../src/runtime/item-at.ts';

type Step = [process: number, f: 'read' | 'write' | 'delete' | 'cas' | 'append', key: string, value: unknown, result?: boolean | 'info', connection?: string];

function lines(steps: Step[]): string {
  return steps
    .flatMap(([process, f, key, value, result, connection]) => {
      const on = connection === undefined ? {} : { connection };
      const invoke = { process, type: 'invoke', f, key, value: f === 'read' ? null : value, ...on };
      if (result === 'info') return [invoke, { process, type: 'info', f, key, ...on }];
      const done = { process, type: 'ok', f, key, value, ...(result === undefined ? {} : { result }), ...on };
      return [invoke, done];
    })
    .map((event) => JSON.stringify(event))
    .join('\n');
}

function check(steps: Step[]): { verdict: string; detail: string } {
  const parsed = parseHistory(lines(steps));
  if (!parsed.ok) throw new Error(parsed.error);
  const result = checkCausal(parsed.history);
  return { verdict: result.verdict, detail: result.detail ?? '' };
}

describe('causal checker: histories causal convergence allows', () => {
  it.each<[string, Step[]]>([
    ['a chain of causes, read in order', [
      [1, 'write', 'x', '1'], [2, 'read', 'x', '1'], [2, 'write', 'y', '2'], [3, 'read', 'y', '2'], [3, 'read', 'x', '1'],
    ]],
    ['a stale read of a concurrent write', [[1, 'write', 'x', '1'], [2, 'read', 'x', null]]],
    ['concurrent writes seen in one order by everyone', [
      [1, 'write', 'x', '1'], [2, 'write', 'x', '2'], [3, 'read', 'x', '1'], [3, 'read', 'x', '2'], [4, 'read', 'x', '1'], [4, 'read', 'x', '2'],
    ]],
    ['a read of a timed-out write (it happened)', [[1, 'write', 'x', '1', 'info'], [2, 'read', 'x', '1']]],
    ['a timed-out write nobody read (it may not have happened)', [[1, 'write', 'x', '1'], [2, 'write', 'x', '2', 'info'], [3, 'read', 'x', '1']]],
    ['absent after a delete', [[1, 'write', 'x', '1'], [1, 'delete', 'x', null], [1, 'read', 'x', null], [2, 'read', 'x', '1']]],
    ['a cas reads and writes at once', [[1, 'write', 'x', '1'], [2, 'cas', 'x', ['1', '2']], [2, 'read', 'x', '2'], [3, 'read', 'x', '2'], [3, 'read', 'y', null]]],
    ['an append read before the value it extends, elsewhere', [[1, 'write', 'x', 'a'], [1, 'append', 'x', '+b', true], [2, 'read', 'x', 'a+b'], [3, 'read', 'x', 'a']]],
    ['a cas that failed says nothing', [[1, 'write', 'x', '1'], [2, 'cas', 'x', ['5', '6'], false], [2, 'read', 'x', '1']]],
    // A delete that found nothing wrote nothing: read as a write of "absent", it was arbitrated
    // before x's write, which with y's concurrent writes made a false CyclicCF (found by 300-key runs).
    ['a delete that found nothing, concurrent with the write of its key', [
      [2, 'write', 'x', '1'], [2, 'write', 'z', '1'], [5, 'read', 'z', '1'], [5, 'write', 'y', '5'],
      [4, 'write', 'y', '4'], [4, 'delete', 'x', null, false], [4, 'write', 'w', '4'],
      [6, 'read', 'w', '4'], [6, 'read', 'x', '1'], [7, 'read', 'y', '5'], [7, 'read', 'y', '4'],
    ]],
  ])('%s', (_name, steps) => {
    expect(check(steps)).toMatchObject({ verdict: 'ok' });
  });

  it('names the appends a value read was built by', () => {
    const steps: Step[] = [[1, 'write', 'x', 'a'], [1, 'append', 'x', '+b', true], [2, 'append', 'x', '+c', true], [3, 'read', 'x', 'a+b+c'], [3, 'read', 'x', 'a+b+c']];
    expect(check(steps).verdict).toBe('ok');
    // The read of "a+b" after one of "a+b+c" went back past the append of "+c".
    expect(check([...steps, [3, 'read', 'x', 'a+b']]).detail.startsWith('WriteCORead:')).toBe(true);
  });

  it('names appends of suffixes of different lengths, and none where two suffixes end a value', () => {
    const steps: Step[] = [
      [1, 'write', 'x', 'a'], [1, 'append', 'x', '+b', true], [2, 'append', 'x', '+cc', true], [2, 'append', 'x', '+ddd', true],
      [3, 'read', 'x', 'a+b+cc+ddd'], [3, 'read', 'x', 'a+b+cc+ddd'],
    ];
    expect(check(steps).verdict).toBe('ok');
    // Back past the append of "+ddd", found by its length among the others'.
    expect(check([...steps, [3, 'read', 'x', 'a+b+cc']]).detail.startsWith('WriteCORead:')).toBe(true);
    // "dd" and "+ddd" both end "a+ddd": which append wrote it is unknown, so nothing does.
    const twoEndings: Step[] = [[1, 'write', 'x', 'a'], [1, 'append', 'x', '+ddd', true], [2, 'append', 'x', 'dd', true], [3, 'read', 'x', 'a+ddd']];
    expect(check(twoEndings).detail.startsWith('ThinAirRead:')).toBe(true);
  });
});

describe('causal checker: one history per bad pattern', () => {
  it.each<[string, Step[]]>([
    ['ThinAirRead', [[1, 'write', 'x', '1'], [2, 'read', 'x', '5']]],
    ['CyclicCO', [
      [1, 'read', 'x', '2'], [1, 'write', 'y', '1'], [2, 'read', 'y', '1'], [2, 'write', 'x', '2'],
    ]],
    ['WriteCOInitRead', [
      [1, 'write', 'x', '1'], [1, 'write', 'y', '1'], [2, 'read', 'y', '1'], [2, 'read', 'x', null],
    ]],
    ['WriteCOInitRead', [[1, 'write', 'x', '1'], [2, 'read', 'x', '1'], [2, 'delete', 'x', null, false]]],
    ['WriteCORead', [
      [1, 'write', 'x', '1'], [2, 'read', 'x', '1'], [2, 'write', 'x', '2'], [3, 'read', 'x', '2'], [3, 'read', 'x', '1'],
    ]],
    ['CyclicCF', [
      [1, 'write', 'x', '1'], [2, 'write', 'x', '2'], [3, 'read', 'x', '1'], [3, 'read', 'x', '2'], [4, 'read', 'x', '2'], [4, 'read', 'x', '1'],
    ]],
  ])('%s', (pattern, steps) => {
    const result = check(steps);
    expect(result.verdict).toBe('violation');
    expect(result.detail.startsWith(`${pattern}:`)).toBe(true);
  });

  it('an answer read before its question (another key) is WriteCOInitRead', () => {
    const result = check([[1, 'write', 'q', 'question'], [2, 'read', 'q', 'question'], [2, 'write', 'a', 'answer'], [3, 'read', 'a', 'answer'], [3, 'read', 'q', null]]);
    expect(result.detail.startsWith('WriteCOInitRead:')).toBe(true);
  });

  it('a read after a cas of its value, in the cas\'s session, is WriteCORead', () => {
    const result = check([[1, 'write', 'x', '1'], [2, 'cas', 'x', ['1', '2']], [2, 'read', 'x', '1']]);
    expect(result.detail.startsWith('WriteCORead:')).toBe(true);
  });

  it('a value written twice blames only when every writer is overwritten', () => {
    const ok = check([[1, 'write', 'x', '1'], [1, 'write', 'x', '2'], [2, 'write', 'x', '1'], [1, 'read', 'x', '1']]);
    expect(ok.verdict).toBe('ok');
    const bad = check([[1, 'write', 'x', '1'], [2, 'write', 'x', '1'], [2, 'write', 'y', 'y1'], [1, 'read', 'y', 'y1'], [1, 'write', 'x', '2'], [1, 'read', 'x', '1']]);
    expect(bad.detail.startsWith('WriteCORead:')).toBe(true);
  });
});

describe('causal checker: size', () => {
  it('judges a history of 30,000 operations, as a 30 s fault run records, rather than giving up', () => {
    const steps: Step[] = [];
    for (let round = 0; steps.length < 30_000; round++) {
      for (let process = 1; process <= 6; process++) {
        const key = `k${(round + process) % 3}`;
        steps.push([process, 'write', key, `${process}-${round}`], [process, 'read', key, `${process}-${round}`]);
      }
    }
    expect(check(steps).verdict).toBe('ok');
    // One read of a value its own process had overwritten since, at the end: WriteCORead.
    expect(check([...steps, [1, 'read', 'k0', '1-2']]).detail.startsWith('WriteCORead:')).toBe(true);
  });

  it('judges 200,000 operations, as a long pipelined run records, and gives up only past its clock budget', () => {
    // 64 clients (16 pipelining 4), some calls timing out: the client goes on as a new process,
    // which starts a new chain.
    const steps: Step[] = [];
    const processOf = Array.from({ length: 65 }, (_, client) => client);
    for (let round = 0; steps.length < 200_000; round++) {
      for (let client = 1; client <= 64; client++) {
        const process = itemAt(processOf, client);
        const key = `k${(round * 7 + client) % 1000}`;
        if ((round * 64 + client) % 4999 === 0) {
          steps.push([process, 'write', key, `${client}-${round}`, 'info']);
          processOf[client] = process + 1000;
        } else {
          steps.push([process, 'write', key, `${client}-${round}`], [process, 'read', key, `${client}-${round}`]);
        }
      }
    }
    const started = Date.now();
    expect(check(steps).verdict).toBe('ok');
    expect(Date.now() - started).toBeLessThan(60_000);
    expect(check([...steps, [1, 'read', 'k8', '1-1']]).detail.startsWith('WriteCORead:')).toBe(true);
    const parsed = parseHistory(lines(steps));
    if (!parsed.ok) throw new Error(parsed.error);
    const tooMany = checkCausal(parsed.history, { clockEntriesMax: 1_000_000 });
    expect(tooMany.verdict).toBe('unknown');
    expect(tooMany.detail).toMatch(/^\d{6} operations in \d+ session chains: more than the causal checker takes/);
  }, 120_000);

  it('judges as well with a chain too long for two-byte clock entries (4-byte entries then)', () => {
    // One process writes 70,000 values (a chain past 65,534 places), then another reads the
    // newest of one key and, after it, an older one: WriteCORead; without that read, causal.
    const writes: Step[] = Array.from({ length: 70_000 }, (_unused, index): Step => [1, 'write', `k${index % 10}`, `v${index}`]);
    const newest: Step = [2, 'read', 'k1', 'v69991'];
    expect(check([...writes, newest]).verdict).toBe('ok');
    const verdict = check([...writes, newest, [2, 'read', 'k1', 'v1']]);
    expect(verdict.verdict).toBe('violation');
    expect(verdict.detail.startsWith('WriteCORead:')).toBe(true);
  }, 60_000);

  it('gives no clock column to sessions whose calls nothing follows: thousands of unanswered writes fit the budget', () => {
    // 3,000 sessions that each made one write and got no answer (as every fault leaves), on keys
    // that others read, beside the WriteCORead of 'an overwritten value read after its overwrite'.
    const unanswered: Step[] = Array.from({ length: 3_000 }, (_unused, index): Step => [100 + index, 'write', 'x', `lost${index}`, 'info']);
    const causal: Step[] = [[1, 'write', 'x', '1'], [1, 'write', 'x', '2'], [2, 'read', 'x', '2']];
    const parsed = (steps: Step[]) => {
      const result = parseHistory(lines(steps));
      if (!result.ok) throw new Error(result.error);
      return result.history;
    };
    // 3,003 operations × 3,002 chains would be 9 million clock entries; two columns are needed.
    const budget = { clockEntriesMax: 100_000 };
    expect(checkCausal(parsed([...unanswered, ...causal]), budget).verdict).toBe('ok');
    const violation = checkCausal(parsed([...unanswered, ...causal, [2, 'read', 'x', '1']]), budget);
    expect(violation.verdict).toBe('violation');
    expect(violation.detail?.startsWith('WriteCORead:')).toBe(true);
    // One of them read: it may have happened, and orders the reader after it.
    const read = checkCausal(parsed([...unanswered, ...causal, [3, 'read', 'x', 'lost7'], [3, 'read', 'x', null]]), budget);
    expect(read.verdict).toBe('violation');
    expect(read.detail?.startsWith('WriteCOInitRead:')).toBe(true);
  });

  it('gives up, without failing, on more session chains than one call can take as arguments', () => {
    // 150,000 sessions that each write a key and read it back: every write is followed, so each
    // session keeps its chain; far past the clock budget, the answer is unknown, not a crash.
    const steps: Step[] = [];
    for (let i = 0; i < 150_000; i++) steps.push([i, 'write', `s${i}`, `v${i}`], [i, 'read', `s${i}`, `v${i}`]);
    const parsed = parseHistory(lines(steps));
    if (!parsed.ok) throw new Error(parsed.error);
    expect(checkCausal(parsed.history)).toMatchObject({ verdict: 'unknown' });
  }, 120_000);

  it('sets aside sessions that only write keys nobody reads (a bulk load), and judges the rest whatever their number', () => {
    // 70,000 blind writes (more than the checker takes) on keys no one reads, each its own process
    // on one of 100 connections (a pipelining loader's calls are concurrent), some timed out.
    const bulk: Step[] = [];
    for (let i = 0; i < 70_000; i++) bulk.push([100 + i, 'write', `bulk${i % 700}`, `b${i}`, i % 97 === 0 ? 'info' : undefined, `L${i % 100}`]);
    const violation: Step[] = [[1, 'write', 'x', '1'], [1, 'write', 'x', '2'], [1, 'read', 'x', '1']];
    const bad = check([...bulk, ...violation]);
    expect(bad.verdict).toBe('violation');
    expect(bad.detail).toContain('WriteCORead');
    expect(bad.detail).toContain('70000 writes set aside');
    expect(check([...bulk, [1, 'write', 'x', '1'], [1, 'read', 'x', '1']])).toMatchObject({ verdict: 'ok' });
    // A connection that also reads, or one that writes a key someone reads, is kept whole (700 each).
    expect(check([...bulk, [99, 'read', 'x', null, undefined, 'L7']]).detail).toContain('69300 writes set aside');
    expect(check([...bulk, [1, 'read', 'bulk0', null]]).detail).toContain('69300 writes set aside');
  }, 120_000); // four checks of 70,000 operations: about 11 s alone, three times that beside a busy suite

  it('keeps a blind write in a session that does more: a timed-out write orders nothing after it, and leaving it out would', () => {
    // On connection A the write of z timed out, so the write of y after it does not follow the read
    // of x before it in CO; setting aside the z write (nobody reads z) would join them: WriteCORead.
    const steps: Step[] = [
      [1, 'write', 'x', '1'], [2, 'read', 'x', '1', undefined, 'A'], [2, 'write', 'z', 'zz', 'info', 'A'], [5, 'write', 'y', '1', undefined, 'A'],
      [3, 'read', 'y', '1'], [3, 'write', 'x', '2'], [4, 'read', 'x', '2'], [4, 'read', 'x', '1'],
    ];
    expect(check(steps)).toMatchObject({ verdict: 'ok' });
    expect(check(steps.filter(([, , key]) => key !== 'z')).detail.startsWith('WriteCORead:')).toBe(true);
  });
});

describe('mckv check --model causal', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'mckv-check-causal-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('takes the model and exits 1 on a violation, 0 on a causal history', async () => {
    expect(parseCheckArgs(['h.jsonl', '--model', 'causal'])).toMatchObject({ ok: true, options: { model: 'causal' } });
    const bad = path.join(dir, 'bad.jsonl');
    writeFileSync(bad, lines([[1, 'write', 'x', '1'], [1, 'read', 'x', null]]));
    const out: string[] = [];
    expect(await runCheck({ file: bad, model: 'causal', timeoutMs: 1000, out: (line) => out.push(line) })).toBe(1);
    expect(out[0]).toBe('VIOLATION: causal (key "x")');
    const good = path.join(dir, 'good.jsonl');
    writeFileSync(good, lines([[1, 'write', 'x', '1'], [1, 'read', 'x', '1']]));
    expect(await runCheck({ file: good, model: 'causal', timeoutMs: 1000, out: () => {} })).toBe(0);
  });
});
