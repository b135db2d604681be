/**
 * The sequential-consistency search against brute force on random small histories rich in
 * indeterminate operations (the search places those lazily, so this is where it could go wrong),
 * and on a real fault run's history that the search once could not decide.
 *
 * Intuition: indeterminate operations that are alone in their process can go anywhere in a
 * sequential order, or nowhere; the generator makes many such "floating" operations, chained
 * appends ("1" → "1a" → "1ab"), and reads of values only they produce.
 *
 * The order-graph prover (which may only answer "violation") is held to brute force on random
 * histories whose written values are unique, the case its derived edges are for, and must prove a
 * real fault run's history with two reads swapped wrong in about a second, where the exact search
 * runs out of time.
 *
 * The first pass keeps every operation that may change the register after what returned before
 * it was called (reads stay free): a restriction, so only its "ok" may count. Hand-made histories
 * with a write whose client timed out and that took effect late check both verdicts, one needs
 * an order against real time (so the exact pass must decide it), random histories with
 * interleaved events hold the whole to brute force, and a window of a 45 s fault run that the
 * search could not decide in 10 s must now be decided at once.
 *
 * Invariants: generators are seeded, so a failing case reproduces; the brute force tries every
 * order that keeps process order, leaving any indeterminate operation out or in.
 */

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parseHistory, type Operation } from '../src/check/history.ts';
import { proveKeyViolation } from '../src/check/order-graph.ts';
import { checkKeyProcessOrder, checkSequential } from '../src/check/sequential.ts';
import { bruteForce, processOrder } from './support/brute-force.ts';
import { mulberry32 as random, picker } from '../src/runtime/random.ts';
import { itemAt } from '../src/runtime/item-at.ts';

const historiesDir = path.join(path.dirname(fileURLToPath(import.meta.url)), 'histories');
const TIMEOUT_MS = 5_000;


const FUNCTIONS = ['read', 'read', 'write', 'cas', 'append', 'append', 'delete'] as const;
const READABLE = [null, '1', '2', '3', '1a', '2a', '1ab', '3b', 'a'];

/** One process's operations as JSON-lines events; `floating` makes a single indeterminate op. */
function processEvents(process: number, floating: boolean, next: () => number): string[] {
  const pick = picker(next);
  const count = floating ? 1 : 1 + Math.floor(next() * 3);
  const lines: string[] = [];
  for (let index = 0; index < count; index++) {
    const f = pick(FUNCTIONS);
    const value = f === 'write' ? pick(['1', '2', '3']) : f === 'cas' ? [pick([null, '1', '2', '1a']), pick(['1', '2', '3'])]
      : f === 'append' ? pick(['a', 'b']) : null;
    lines.push(JSON.stringify({ process, type: 'invoke', f, key: 'k', value }));
    const last = index === count - 1;
    if (floating || (last && next() < 0.3)) {
      lines.push(JSON.stringify({ process, type: 'info', f, key: 'k' }));
      break;
    }
    const output = f === 'read' ? { value: pick(READABLE) } : { value, result: f === 'write' ? undefined : next() < 0.6 };
    lines.push(JSON.stringify({ process, type: 'ok', f, key: 'k', ...output }));
  }
  return lines;
}

/** A random single-key history without times (line order is time; each process runs alone). */
function randomHistory(seed: number): string {
  const next = random(seed);
  const processes = 1 + Math.floor(next() * 3);
  const floating = 1 + Math.floor(next() * 3);
  const lines: string[] = [];
  for (let process = 0; process < processes + floating; process++) {
    lines.push(...processEvents(process, process >= processes, next));
  }
  return lines.join('\n');
}


/** Checks the histories of seeds 1..`seeds` against brute force; how many were ok and how many not. */
function tallyAgainstBruteForce(history: (seed: number) => string, seeds: number): { ok: number; violation: number } {
  const tally = { ok: 0, violation: 0 };
  for (let seed = 1; seed <= seeds; seed++) {
    const text = history(seed);
    const parsed = parseHistory(text);
    if (!parsed.ok) throw new Error(`seed ${seed}: ${parsed.error}`);
    const expected = bruteForce(parsed.history.operations, processOrder) ? 'ok' : 'violation';
    expect(checkSequential(parsed.history, { timeoutMs: TIMEOUT_MS }).verdict, `seed ${seed}\n${text}`).toBe(expected);
    tally[expected]++;
  }
  return tally;
}

describe('sequential search with floating indeterminate operations', () => {
  it('agrees with brute force, 3000 seeds', () => {
    const tally = tallyAgainstBruteForce(randomHistory, 3000);
    expect(tally.ok).toBeGreaterThan(300);
    expect(tally.violation).toBeGreaterThan(300);
  });
});

/**
 * The same processes with their events interleaved at random (each process's own order kept), so
 * that real time, which the first pass's gate follows, differs from process order.
 */
function interleavedHistory(seed: number): string {
  const next = random(seed);
  const byProcess = new Map<number, string[]>();
  for (const line of randomHistory(seed).split('\n')) {
    const { process } = JSON.parse(line) as { process: number };
    byProcess.set(process, [...(byProcess.get(process) ?? []), line]);
  }
  const queues = [...byProcess.values()];
  const lines: string[] = [];
  while (queues.some((queue) => queue.length > 0)) {
    const ready = queues.filter((queue) => queue.length > 0);
    lines.push(itemAt(ready, Math.floor(next() * ready.length)).shift() ?? '');
  }
  return lines.join('\n');
}

describe('sequential search on interleaved histories', () => {
  it('agrees with brute force, 2000 seeds', () => {
    const tally = tallyAgainstBruteForce(interleavedHistory, 2000);
    expect(tally.ok).toBeGreaterThan(200);
    expect(tally.violation).toBeGreaterThan(200);
  });
});

type Step = [process: number, type: 'invoke' | 'ok' | 'info', f: string, value: string | null, timeMs: number];

/** A one-key history from events given as tuples (times in milliseconds). */
function timed(steps: Step[]): string {
  return steps.map(([process, type, f, value, timeMs]) => JSON.stringify({ process, type, f, key: 'k', value, time: timeMs * 1e6 }))
    .join('\n');
}

/**
 * A write of "b" whose client timed out (p1, called at 3 ms, given up at 13 ms) took effect after
 * the write of "c" (5-6 ms): p2 reads "c", then "b" twice. p3, a fresh process, reads the stale
 * "a" at the end, so the key is not linearizable.
 */
const LATE_WRITE: Step[] = [
  [0, 'invoke', 'write', 'a', 1], [0, 'ok', 'write', 'a', 2],
  [1, 'invoke', 'write', 'b', 3],
  [0, 'invoke', 'write', 'c', 5], [0, 'ok', 'write', 'c', 6],
  [2, 'invoke', 'read', null, 7], [2, 'ok', 'read', 'c', 8],
  [1, 'info', 'write', null, 13],
  [2, 'invoke', 'read', null, 14], [2, 'ok', 'read', 'b', 15],
  [2, 'invoke', 'read', null, 16], [2, 'ok', 'read', 'b', 17],
  [3, 'invoke', 'read', null, 20], [3, 'ok', 'read', 'a', 21],
];

describe('a write that took effect after its client gave up', () => {
  const check = (steps: Step[]): string => {
    const parsed = parseHistory(timed(steps));
    if (!parsed.ok) throw new Error(parsed.error);
    const ops = parsed.history.operations;
    const verdict = checkSequential(parsed.history, { timeoutMs: TIMEOUT_MS }).verdict;
    expect(verdict, 'brute force').toBe(bruteForce(ops, processOrder) ? 'ok' : 'violation');
    expect(checkKeyProcessOrder(ops, performance.now() + TIMEOUT_MS).verdict).toBe(verdict);
    return verdict;
  };

  it('is sequentially consistent when read after the write it followed', () => {
    expect(check(LATE_WRITE)).toBe('ok');
  });

  it('is sequentially consistent when never read (left out)', () => {
    expect(check(LATE_WRITE.filter(([process]) => process !== 2))).toBe('ok');
  });

  // p2 sees "b" before "c", p4 sees "c" before "b": each value is written once, so no order fits.
  it('is a violation when two processes see it on either side of a later write', () => {
    const swapped: Step[] = [
      ...LATE_WRITE.filter(([process]) => process !== 2),
      [2, 'invoke', 'read', null, 14], [2, 'ok', 'read', 'b', 15],
      [2, 'invoke', 'read', null, 16], [2, 'ok', 'read', 'c', 17],
      [4, 'invoke', 'read', null, 18], [4, 'ok', 'read', 'c', 19],
      [4, 'invoke', 'read', null, 22], [4, 'ok', 'read', 'b', 23],
    ];
    expect(check(swapped)).toBe('violation');
  });

  // A process that saw "b" before "c" and then "a" again: "a" is written once, before "c" in p0.
  it('is a violation when a process goes back to a value overwritten before the late write', () => {
    expect(check([...LATE_WRITE, [2, 'invoke', 'read', null, 18], [2, 'ok', 'read', 'a', 19]])).toBe('violation');
  });
});

describe('processes that shared one client connection (a pipelining client)', () => {
  const verdictOf = (lines: object[]): string => {
    const parsed = parseHistory(lines.map((line) => JSON.stringify(line)).join('\n'));
    if (!parsed.ok) throw new Error(parsed.error);
    return checkSequential(parsed.history, { timeoutMs: TIMEOUT_MS }).verdict;
  };
  // p0 sends a write and p1 a read right behind it, on one connection: the read must see it.
  const pipelined = (readValue: string | null, writeEnds: 'ok' | 'info', connection: (process: number) => object): object[] => [
    { process: 0, type: 'invoke', f: 'write', key: 'k', value: '1', time: 1, ...connection(0) },
    { process: 1, type: 'invoke', f: 'read', key: 'k', value: null, time: 2, ...connection(1) },
    { process: 0, type: writeEnds, f: 'write', key: 'k', value: '1', time: 3 },
    { process: 1, type: 'ok', f: 'read', key: 'k', value: readValue, time: 4 },
  ];
  const shared = (): object => ({ connection: '7.1' });

  it('keeps the connection\'s order: a read sent behind a write that misses it is a violation', () => {
    expect(verdictOf(pipelined(null, 'ok', shared))).toBe('violation');
    expect(verdictOf(pipelined('1', 'ok', shared))).toBe('ok');
    // Without the connection, two processes: the read may go first.
    expect(verdictOf(pipelined(null, 'ok', () => ({})))).toBe('ok');
    // Two connections: the same.
    expect(verdictOf(pipelined(null, 'ok', (process) => ({ connection: `7.${process}` })))).toBe('ok');
  });

  it('the order-graph prover keeps the connection\'s order too', () => {
    const prove = (lines: object[]): string => {
      const parsed = parseHistory(lines.map((line) => JSON.stringify(line)).join('\n'));
      if (!parsed.ok) throw new Error(parsed.error);
      return proveKeyViolation(parsed.history.operations, performance.now() + TIMEOUT_MS).verdict;
    };
    expect(prove(pipelined(null, 'ok', shared))).toBe('violation');
    expect(prove(pipelined(null, 'ok', () => ({})))).not.toBe('violation');
  });

  it('leaves a call that got no answer out of the connection\'s order: it may not have happened', () => {
    expect(verdictOf(pipelined(null, 'info', shared))).toBe('ok');
    expect(verdictOf(pipelined('1', 'info', shared))).toBe('ok');
  });
});

describe('an order against real time between writes', () => {
  // p2 reads "2" then "1": the write of "1" must follow the write of "2", though it returned before
  // "2" was called. The first pass cannot find that order; the later passes must.
  it('is still found: the restricted first pass only ever counts its ok', () => {
    const steps: Step[] = [
      [0, 'invoke', 'write', '1', 0], [0, 'ok', 'write', '1', 1],
      [1, 'invoke', 'write', '2', 2], [1, 'ok', 'write', '2', 3],
      [2, 'invoke', 'read', null, 4], [2, 'ok', 'read', '2', 5],
      [2, 'invoke', 'read', null, 6], [2, 'ok', 'read', '1', 7],
      [0, 'invoke', 'read', null, 8], [0, 'ok', 'read', '1', 9],
    ];
    const parsed = parseHistory(timed(steps));
    if (!parsed.ok) throw new Error(parsed.error);
    expect(checkSequential(parsed.history, { timeoutMs: TIMEOUT_MS }).verdict).toBe('ok');
    expect(checkKeyProcessOrder(parsed.history.operations, performance.now() + TIMEOUT_MS).verdict).toBe('ok');
  });
});

/** A one-key history file's operations. */
function loadOps(name: string): Operation[] {
  const parsed = parseHistory(readFileSync(path.join(historiesDir, name), 'utf8'));
  if (!parsed.ok) throw new Error(`${name}:${parsed.line}: ${parsed.error}`);
  return parsed.history.operations;
}

// The process-order search is called directly: the linearizability pre-check would decide them.
describe('real fault runs of the sequential mode', () => {
  // Key "jepsen-k0" of an 8.5 s run under kill, pause, partition and backend-restart (6 clients,
  // new process ids after indeterminate ops), cut after the first ~1,150 operations. The search
  // used to run out of time on it: a read of "a+b" kept a branch alive after "a" was overwritten
  // for good, and floating indeterminate writes were tried at every point of the dead branch.
  it('decides seq101-k0-prefix.jsonl: sequentially consistent', () => {
    const ops = loadOps('seq101-k0-prefix.jsonl');
    expect(ops.length).toBeGreaterThan(1000);
    expect(checkKeyProcessOrder(ops, performance.now() + 15_000).verdict).toBe('ok');
  }, 20_000);

  // Key "jepsen-k0" of a 15 s run (seed 2), cut after ~1,580 operations. A floating indeterminate
  // delete fits a read of absent at operation 63, where the real order just had a write and a
  // delete the other way round; spent there, it is missing 1,500 operations later, and the exact
  // search could not climb back in time. The first pass keeps it after what returned before it.
  it('decides seq-seed2-k0-prefix.jsonl: sequentially consistent', () => {
    const ops = loadOps('seq-seed2-k0-prefix.jsonl');
    expect(ops.length).toBeGreaterThan(1500);
    expect(checkKeyProcessOrder(ops, performance.now() + 15_000).verdict).toBe('ok');
  }, 20_000);
});

/**
 * A random single-key history whose writes and cas write unique values ("w<process>.<index>", or
 * an earlier value with the appended suffix),
 * with reads and cas expecting values written anywhere in it (or absent), appends, deletes and
 * indeterminate last operations: the histories the prover's derived edges are meant for.
 */
function uniqueValueHistory(seed: number): string {
  const next = random(seed);
  const pick = picker(next);
  const processes = 2 + Math.floor(next() * 3);
  const plans: { process: number; f: string; value: string }[][] = [];
  const written: string[] = [];
  for (let process = 0; process < processes; process++) {
    const count = 1 + Math.floor(next() * 3);
    plans.push(Array.from({ length: count }, (_, index) => {
      const f = pick(['read', 'read', 'read', 'write', 'write', 'cas', 'append', 'delete']);
      // Some writes write what an append could also build ("w0.1+x"): that value has two producers.
      const built = written.length > 0 && next() < 0.3 ? `${pick(written)}+x` : undefined;
      const value = built !== undefined && !written.includes(built) ? built : `w${process}.${index}`;
      if (f === 'write' || f === 'cas') written.push(value);
      return { process, f, value };
    }));
  }
  const observable = [null, ...written, ...written.map((value) => `${value}+x`)];
  const lines: string[] = [];
  for (const plan of plans) {
    plan.forEach(({ process, f, value }, index) => {
      const input = f === 'write' ? value : f === 'cas' ? [pick(observable), value] : f === 'append' ? '+x' : null;
      lines.push(JSON.stringify({ process, type: 'invoke', f, key: 'k', value: input }));
      if (index === plan.length - 1 && next() < 0.2) {
        lines.push(JSON.stringify({ process, type: 'info', f, key: 'k' }));
        return;
      }
      const output = f === 'read' ? { value: pick(observable) } : { value: input, result: f === 'write' ? undefined : next() < 0.6 };
      lines.push(JSON.stringify({ process, type: 'ok', f, key: 'k', ...output }));
    });
  }
  return lines.join('\n');
}

describe('a 45 s fault run under pause faults', () => {
  // Key "jepsen-k0" of a 45 s run of the sequential mode with nodes paused (SIGSTOP) and resumed:
  // its last ~9,000 operations, compacted (no times, so line order is time; processes and values
  // renamed; a read repeating its process's previous read, and reads of values written before
  // the window, left out). Clients that timed out go on as new processes, whose first delete or
  // append the search used to spend seconds too early; it stayed undecided after 10 s (and the
  // whole run after 60 s). The first pass keeps such changes after what returned before them.
  it('decides seq-pause-k0-window.jsonl in well under a second: sequentially consistent', () => {
    const ops = loadOps('seq-pause-k0-window.jsonl');
    expect(ops.length).toBeGreaterThan(8000);
    const startedMs = performance.now();
    expect(checkKeyProcessOrder(ops, performance.now() + 15_000).verdict).toBe('ok');
    expect(performance.now() - startedMs).toBeLessThan(3_000);
  }, 20_000);
});

describe('order-graph violation prover', () => {
  it('never proves a violation where brute force finds an order, 4000 seeds', () => {
    const tally = { proved: 0, violation: 0, ok: 0 };
    for (let seed = 1; seed <= 4000; seed++) {
      const text = uniqueValueHistory(seed);
      const parsed = parseHistory(text);
      if (!parsed.ok) throw new Error(`seed ${seed}: ${parsed.error}`);
      const ops = parsed.history.operations;
      const valid = bruteForce(ops, processOrder);
      tally[valid ? 'ok' : 'violation']++;
      if (proveKeyViolation(ops, performance.now() + TIMEOUT_MS).verdict !== 'violation') continue;
      tally.proved++;
      expect(valid, `seed ${seed}: proved a violation, but brute force finds an order\n${text}`).toBe(false);
    }
    expect(tally.ok).toBeGreaterThan(200);
    // The prover is incomplete, but it must catch a good share of the real violations.
    expect(tally.proved).toBeGreaterThan(tally.violation / 4);
  });

  // 20,000 operations, each of 8 processes writing a value of its own and reading it back: one
  // round of the prover's rules visits every value against every operation, about 10 s here.
  it('gives up at its deadline within a round of its rules, and at once for a key past its size bound', () => {
    const ownReads = (count: number): Operation[] => {
      const lines: string[] = [];
      for (let index = 0; lines.length < count * 2; index++) {
        const process = index % 8;
        const value = `v${index}`;
        lines.push(JSON.stringify({ process, type: 'invoke', f: 'write', key: 'k', value }), JSON.stringify({ process, type: 'ok', f: 'write', key: 'k', value }));
        lines.push(JSON.stringify({ process, type: 'invoke', f: 'read', key: 'k', value: null }), JSON.stringify({ process, type: 'ok', f: 'read', key: 'k', value }));
      }
      const parsed = parseHistory(lines.join('\n'));
      if (!parsed.ok) throw new Error(parsed.error);
      return parsed.history.operations;
    };
    const timed = (ops: Operation[], budgetMs: number): { verdict: string; tookMs: number } => {
      const startedMs = performance.now();
      const { verdict } = proveKeyViolation(ops, startedMs + budgetMs);
      return { verdict, tookMs: performance.now() - startedMs };
    };
    const midRound = timed(ownReads(20_000), 200);
    expect(midRound.verdict).toBe('unknown');
    expect(midRound.tookMs).toBeLessThan(3_000);
    // 50,000 operations: a reachability matrix of 312 MB, past its bound; not even built.
    const past = timed(ownReads(50_000), TIMEOUT_MS);
    expect(past.verdict).toBe('unknown');
    expect(past.tookMs).toBeLessThan(1_000);
  });

  it('proves nothing on the real runs, which are sequentially consistent', () => {
    for (const name of ['seq101-k0-prefix.jsonl', 'seq-seed2-k0-prefix.jsonl']) {
      expect(proveKeyViolation(loadOps(name), performance.now() + TIMEOUT_MS).verdict, name).toBe('unknown');
    }
  });

  // seq101's key with one process's two reads swapped (it now sees "c0.340", then the older
  // "c2.326"). The exact search ran out of time on it (20 s on the whole run, 8 s on this
  // prefix); the prover finds a cycle in well under a second.
  it('reports seq101-k0-prefix.jsonl with two reads swapped as a violation, quickly', () => {
    const text = swapReadValues(readFileSync(path.join(historiesDir, 'seq101-k0-prefix.jsonl'), 'utf8'), 1321, 1324);
    const parsed = parseHistory(text);
    if (!parsed.ok) throw new Error(`${parsed.line}: ${parsed.error}`);
    const startedMs = performance.now();
    const result = checkSequential(parsed.history, { timeoutMs: 20_000 });
    expect(performance.now() - startedMs).toBeLessThan(2_000);
    expect(result.verdict).toBe('violation');
    expect(result.detail).toContain('would each have to come before the next');
    expect(result.detail).toMatch(/"c2\.326"|"c0\.340"/);
  }, 25_000);
});

/** Swap the values returned by two reads of one process, given the lines of their completions. */
function swapReadValues(text: string, firstLine: number, secondLine: number): string {
  const lines = text.split('\n');
  const first = JSON.parse(itemAt(lines, firstLine - 1)) as Record<string, unknown>;
  const second = JSON.parse(itemAt(lines, secondLine - 1)) as Record<string, unknown>;
  expect([first.type, first.f, second.type, second.f]).toEqual(['ok', 'read', 'ok', 'read']);
  expect(first.process).toBe(second.process);
  expect([first.value, second.value]).toEqual(['c2.326', 'c0.340']);
  [first.value, second.value] = [second.value, first.value];
  lines[firstLine - 1] = JSON.stringify(first);
  lines[secondLine - 1] = JSON.stringify(second);
  return lines.join('\n');
}
