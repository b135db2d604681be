/**
 * The order of a node's forwards (src/consistency/log/forward-order.ts): the leader takes a
 * stream's writes only in order, reports a gap at most once a heartbeat interval while it lasts,
 * adopts a newer stream (or term, or run of its origin) from its first number, and drops an older
 * one; the origin numbers on within a stream and starts from 1 in a new one or a new term.
 */

import { describe, expect, it } from 'vitest';
import { ForwardIntake, ForwardNumbering } from '../src/consistency/log/forward-order.ts';
import { asPeerId } from '../src/consistency/types.ts';
import { logMessageProblem } from '../src/consistency/log/validate.ts';
import { LOG_LIMITS } from './support/peer-fuzz-kit.ts';

const n2 = asPeerId('n2');
const n3 = asPeerId('n3');

const at = (stream: number, seq: number, term = 3, incarnation = 1, count = 1) => ({ incarnation, term, stream, seq, count });

describe('the leader\'s intake of forwards', () => {
  it('takes a stream in order, skips what it took already, and drops a forward past a gap', () => {
    const intake = new ForwardIntake();
    expect(intake.admit(n2, at(0, 1, 3, 1, 3), 0, 50)).toEqual({ kind: 'take', skip: 0 });
    // A duplicate of writes 2 and 3 with a fourth: the first two are skipped.
    expect(intake.admit(n2, at(0, 2, 3, 1, 3), 0, 50)).toEqual({ kind: 'take', skip: 2 });
    expect(intake.admit(n2, at(0, 7), 0, 50)).toEqual({ kind: 'gap', expected: 5, report: true });
  });

  it('reports a gap once per heartbeat interval while it lasts, and a new gap at once', () => {
    const intake = new ForwardIntake();
    expect(intake.admit(n2, at(0, 3), 100, 50)).toEqual({ kind: 'gap', expected: 1, report: true });
    expect(intake.admit(n2, at(0, 4), 149, 50)).toEqual({ kind: 'gap', expected: 1, report: false });
    expect(intake.admit(n2, at(0, 5), 150, 50)).toEqual({ kind: 'gap', expected: 1, report: true });
    expect(intake.admit(n2, at(0, 1), 151, 50)).toEqual({ kind: 'take', skip: 0 });
    expect(intake.admit(n2, at(0, 5), 152, 50)).toEqual({ kind: 'gap', expected: 2, report: true });
  });

  it('adopts a newer stream or term, or another run, from number 1, drops an older stream or term, and keeps origins apart', () => {
    const intake = new ForwardIntake();
    intake.admit(n2, at(0, 1, 3, 1, 9), 0, 50);
    expect(intake.admit(n3, at(0, 1), 0, 50)).toEqual({ kind: 'take', skip: 0 });
    expect(intake.admit(n2, at(1, 1, 3, 1, 2), 0, 50)).toEqual({ kind: 'take', skip: 0 });
    expect(intake.admit(n2, at(0, 10), 0, 50)).toEqual({ kind: 'stale' });
    expect(intake.admit(n2, at(1, 3), 0, 50)).toEqual({ kind: 'take', skip: 0 });
    expect(intake.admit(n2, at(0, 2, 4), 0, 50)).toEqual({ kind: 'gap', expected: 1, report: true });
    expect(intake.admit(n2, at(5, 1, 3), 0, 50)).toEqual({ kind: 'stale' });
    expect(intake.admit(n2, at(0, 1, 2, 2), 0, 50)).toEqual({ kind: 'take', skip: 0 });
    // Back to run 1 (a node that lost its data_dir rejoins numbering its runs from 1): afresh, not stale.
    expect(intake.admit(n2, at(3, 4, 9, 1), 0, 50)).toEqual({ kind: 'gap', expected: 1, report: true });
    expect(intake.admit(n2, at(3, 1, 9, 1), 0, 50)).toEqual({ kind: 'take', skip: 0 });
  });
});

describe('the origin\'s numbering', () => {
  it('numbers on within a stream; a new stream or a new term starts from 1', () => {
    const numbering = new ForwardNumbering();
    expect(numbering.take(3, 2)).toEqual({ stream: 0, seq: 1 });
    expect(numbering.take(3, 1)).toEqual({ stream: 0, seq: 3 });
    expect(numbering.isCurrent(3, 0)).toBe(true);
    numbering.restart(3);
    expect(numbering.isCurrent(3, 0)).toBe(false);
    expect(numbering.take(3, 4)).toEqual({ stream: 1, seq: 1 });
    expect(numbering.take(4, 1)).toEqual({ stream: 0, seq: 1 });
    expect(numbering.isCurrent(3, 1)).toBe(false);
  });
});

describe('the messages, as a peer sends them', () => {
  it('a forward must carry its stream and a first number of at least 1; a gap report its stream and expected number', () => {
    const forward = { kind: 'forward', term: 3, incarnation: 1, stream: 0, seq: 1, requests: [] };
    expect(logMessageProblem(forward, LOG_LIMITS)).toBeNull();
    for (const bad of [{ stream: undefined }, { seq: 0 }, { seq: -1 }, { stream: 1.5 }, { seq: '2' }]) {
      expect(logMessageProblem({ ...forward, ...bad }, LOG_LIMITS)).toBe('forward: bad fields');
    }
    const gap = { kind: 'forward_gap', term: 3, incarnation: 1, stream: 2, expected: 5 };
    expect(logMessageProblem(gap, LOG_LIMITS)).toBeNull();
    for (const bad of [{ expected: 0 }, { stream: -1 }, { incarnation: undefined }, { expected: 2 ** 60 }]) {
      expect(logMessageProblem({ ...gap, ...bad }, LOG_LIMITS)).toBe('forward_gap: bad fields');
    }
  });
});
