/** The forwarded writes a node keeps after compacting them: for state transfers to their origin, and to know a duplicate. */
import { describe, expect, it } from 'vitest';
import { CompactedForwards } from '../src/consistency/log/compacted-forwards.ts';
import type { LogEntry } from '../src/consistency/log/types.ts';
import { asPeerId, asRequestId, type PeerId } from '../src/consistency/types.ts';

const [n1, n2, n3] = [asPeerId('n1'), asPeerId('n2'), asPeerId('n3')] as const;

const entry = (index: number, origin: PeerId, requestId: number | null): LogEntry => ({
  term: 1, index, nowMs: 0, op: null, origin, incarnation: 4, requestId: requestId === null ? null : asRequestId(requestId),
});

describe('CompactedForwards', () => {
  it('keeps the writes other nodes forwarded, and names those of one origin up to an index, newest first', () => {
    const kept = new CompactedForwards(1_000, 100);
    kept.note([entry(1, n1, 10), entry(2, n2, 20), entry(3, n2, null), entry(4, n3, 30), entry(5, n2, 21)], n1, 0);
    expect(kept.size).toBe(3); // not n1's own, not the no-op
    expect(kept.committedThrough(n2, 5, 0, 10)).toEqual([
      { incarnation: 4, requestId: 21, index: 5 },
      { incarnation: 4, requestId: 20, index: 2 },
    ]);
    expect(kept.committedThrough(n2, 4, 0, 10)).toEqual([{ incarnation: 4, requestId: 20, index: 2 }]);
    expect(kept.committedThrough(n2, 5, 0, 1)).toHaveLength(1);
    expect(kept.committedThrough(n3, 5, 0, 10)).toEqual([{ incarnation: 4, requestId: 30, index: 4 }]);
  });

  it('forgets a record once its origin has timed it out anyway, and keeps at most its limit, dropping the oldest', () => {
    const kept = new CompactedForwards(1_000, 3);
    kept.note([entry(1, n2, 1), entry(2, n2, 2)], n1, 0);
    kept.note([entry(3, n2, 3)], n1, 600);
    expect(kept.committedThrough(n2, 10, 1_000, 10).map((forward) => forward.index)).toEqual([3, 2, 1]);
    expect(kept.committedThrough(n2, 10, 1_001, 10).map((forward) => forward.index)).toEqual([3]);
    kept.note([entry(4, n2, 4), entry(5, n2, 5), entry(6, n2, 6)], n1, 1_100);
    expect(kept.size).toBe(3);
    expect(kept.committedThrough(n2, 10, 1_100, 10).map((forward) => forward.index)).toEqual([6, 5, 4]);
    expect(kept.committedThrough(n2, 10, 2_101, 10)).toEqual([]);
    expect(kept.size).toBe(0);
  });

  it('tells whether a forward was compacted lately (a duplicate of it must not be logged), as long as it keeps the record', () => {
    const kept = new CompactedForwards(1_000, 2);
    kept.note([entry(1, n2, 1), entry(2, n3, 1)], n1, 0);
    expect(kept.has(n2, 4, asRequestId(1), 0)).toBe(true);
    expect(kept.has(n2, 5, asRequestId(1), 0)).toBe(false); // another run of n2
    expect(kept.has(n2, 4, asRequestId(2), 0)).toBe(false);
    kept.note([entry(3, n2, 3)], n1, 500);
    expect(kept.has(n2, 4, asRequestId(1), 500)).toBe(false); // the oldest went, past the limit
    expect(kept.has(n3, 4, asRequestId(1), 1_000)).toBe(true);
    expect(kept.has(n3, 4, asRequestId(1), 1_001)).toBe(false);
    expect(kept.has(n2, 4, asRequestId(3), 1_500)).toBe(true);
  });
});
