/**
 * The table of refusals (src/protocol/refusals.ts): each reason renders to the text line and the
 * binary status clients have always been sent, and a history's text maps back to its reason.
 */

import { describe, expect, it } from 'vitest';
import {
  isRefusalReason, parseRefusalText, refusalBinary, refusalChangedNothing, refusalText, refused, type RefusalReason,
} from '../src/protocol/refusals.ts';
import { classifyServerError } from '../src/jepsen/workload.ts';

/** Every reason, with a refusal as a producer sends it, its text, binary status and whether a refused write changed nothing. */
const CASES: ReadonlyArray<[RefusalReason, string | undefined, string, number, boolean]> = [
  ['busy', 'request queue full', 'busy: request queue full', 0x85, true],
  ['no_quorum', 'no leader reachable', 'no quorum: no leader reachable', 0x86, true],
  ['not_caught_up', 'replica is rebuilding (write refused)', 'not caught up: replica is rebuilding (write refused)', 0x86, true],
  ['timeout', 'write outcome unknown, no quorum answered in time', 'timeout: write outcome unknown, no quorum answered in time', 0x86, false],
  ['outcome_unknown', 'leader lost before it committed; retry', 'write outcome unknown: leader lost before it committed; retry', 0x86, false],
  ['result_unknown', 'replica replaced by a state transfer',
    'write committed, but its result is unknown here: replica replaced by a state transfer', 0x86, false],
  ['out_of_memory', undefined, 'out of memory storing object', 0x82, true],
  ['too_large', undefined, 'object too large for cache', 0x03, true],
  ['shutting_down', undefined, 'controller shutting down', 0x86, false],
  ['controller_timeout', undefined, 'timed out waiting for the cluster', 0x86, false],
  ['backend', 'write failed or timed out', 'backend: write failed or timed out', 0x86, false],
  ['unknown_op', 'not applied', 'unknown operation: not applied', 0x86, false],
  ['internal', 'backend exploded', 'backend exploded', 0x86, false],
];

describe('refusals', () => {
  it('renders each reason as the text and binary status clients are sent', () => {
    for (const [reason, detail, text, status] of CASES) {
      const refusal = refused(reason, detail);
      expect(refusalText(refusal), reason).toBe(text);
      expect(refusalText(refusal), reason).not.toMatch(/[\r\n]/);
      expect(refusalBinary(refusal).status, reason).toBe(status);
    }
    // memcached's own "too large" goes with its own body; the rest carry the text line.
    expect(refusalBinary(refused('too_large')).body).toBeUndefined();
    expect(refusalBinary(refused('busy', 'replica still loading')).body).toBe('busy: replica still loading');
  });

  it('maps a rendered text back to its reason, and says which refused writes changed nothing', () => {
    for (const [reason, detail, text, , changedNothing] of CASES) {
      if (reason === 'internal') {
        expect(parseRefusalText(text)).toBeNull();
        continue;
      }
      expect(parseRefusalText(text), text).toEqual(refused(reason, detail));
      expect(refusalChangedNothing(refused(reason)), reason).toBe(changedNothing);
      expect(classifyServerError(text, false), text).toBe(changedNothing ? 'fail' : 'info');
      expect(classifyServerError(text, true), text).toBe('fail');
    }
    expect(parseRefusalText('shutting down')).toBeNull();
    expect(parseRefusalText('no quorumish')).toBeNull();
  });

  it('renders any detail as printable ASCII on one line: arrows and ellipses spelled out, the rest as ?', () => {
    const detail = 'memcached restarted empty (epoch 1@2 \u2192 3@4) (set key "k\u2026")\r\nEND\xff';
    const text = refusalText(refused('backend', detail));
    expect(text).toBe('backend: memcached restarted empty (epoch 1@2 -> 3@4) (set key "k...")??END?');
    expect(refusalText(refused('internal', '\u00e9t\u00e9'))).toBe('?t?');
    expect(refusalBinary(refused('internal', 'a\nb')).body).toBe('a?b');
  });

  it('knows its reasons (a peer message is checked against them)', () => {
    for (const [reason] of CASES) expect(isRefusalReason(reason)).toBe(true);
    expect(isRefusalReason('server_error')).toBe(false);
    expect(isRefusalReason('toString')).toBe(false);
    expect(isRefusalReason(undefined)).toBe(false);
  });
});
