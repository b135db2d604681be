/**
 * LossWatch: memcached's eviction and flush counters, compared poll to poll within one epoch, and
 * across a controller restart through the saved state.
 */

import { describe, expect, it } from 'vitest';
import { LossWatch } from '../src/store/loss-watch.ts';
import type { BackendHealth } from '../src/store/types.ts';

const poll = (epoch: string, evictions: number, total: number, ours: number): BackendHealth => ({ ok: true, detail: '', epoch, evictions, flushes: { total, ours } });

describe('LossWatch', () => {
  it('reports evictions and other clients\' flushes since the last poll of the same epoch', () => {
    const watch = new LossWatch('');
    expect(watch.observe(poll('e1', 5, 2, 0))).toEqual({ evicted: 0, flushedByOthers: 0 });
    expect(watch.observe(poll('e1', 8, 2, 0))).toEqual({ evicted: 3, flushedByOthers: 0 });
    expect(watch.observe(poll('e1', 8, 3, 0))).toEqual({ evicted: 0, flushedByOthers: 1 });
    // memcached restarted: its counters start again; the epoch check handles that, not this.
    expect(watch.observe(poll('e2', 0, 0, 0))).toEqual({ evicted: 0, flushedByOthers: 0 });
  });

  it('never takes its own flush for another client\'s, also while it is in flight', () => {
    const watch = new LossWatch('');
    watch.observe(poll('e1', 0, 4, 0));
    expect(watch.observe(poll('e1', 0, 4, 1)).flushedByOthers).toBe(0); // sent, not yet run
    expect(watch.observe(poll('e1', 0, 5, 1)).flushedByOthers).toBe(0); // run
    expect(watch.observe(poll('e1', 0, 6, 1)).flushedByOthers).toBe(1); // someone else's
  });

  it('compares a restarted controller\'s first poll with what it saved before', () => {
    const before = new LossWatch('');
    before.observe(poll('e1', 7, 3, 2));
    const saved = before.state();
    expect(new LossWatch(saved).observe(poll('e1', 7, 3, 0))).toEqual({ evicted: 0, flushedByOthers: 0 });
    expect(new LossWatch(saved).observe(poll('e1', 9, 4, 0))).toEqual({ evicted: 2, flushedByOthers: 1 });
    expect(new LossWatch('garbage').observe(poll('e1', 9, 4, 0))).toEqual({ evicted: 0, flushedByOthers: 0 });
  });
});
