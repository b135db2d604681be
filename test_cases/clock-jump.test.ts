/**
 * The controllers' clock tells a suspend from its monotonic clock's point of view (see
 * src/runtime/clock.ts): the wall clock running ahead of the monotonic clock. Date.now is moved
 * here as a resume from a suspend moves it; the monotonic clock is left alone, as a suspend leaves it.
 */

import { performance } from 'node:perf_hooks';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { CLOCK_JUMP_MS_MIN, clockMs, takeClockJumpMs } from '../src/runtime/clock.ts';

const realNow = Date.now.bind(Date);

afterEach(() => {
  vi.restoreAllMocks();
  takeClockJumpMs();
});

function wallAhead(ms: number): void {
  vi.spyOn(Date, 'now').mockImplementation(() => realNow() + ms);
}

describe('the clock jump detector', () => {
  it('reports a forward jump once, and the controller clock does not move with it', () => {
    takeClockJumpMs();
    const before = clockMs();
    wallAhead(60_000);
    expect(clockMs() - before).toBeLessThan(1_000);
    const jumped = takeClockJumpMs();
    expect(jumped).toBeGreaterThan(60_000 - 50);
    expect(jumped).toBeLessThan(60_000 + 50);
    expect(takeClockJumpMs()).toBe(0);
  });

  it('counts a jump seen by any clock read, and ignores steps back and jitter below the minimum', () => {
    takeClockJumpMs();
    wallAhead(10_000);
    clockMs();
    wallAhead(0);
    expect(takeClockJumpMs()).toBeGreaterThan(9_000);
    wallAhead(-5_000);
    expect(takeClockJumpMs()).toBe(0);
    wallAhead(-5_000 + CLOCK_JUMP_MS_MIN - 2);
    expect(takeClockJumpMs()).toBe(0);
  });

  it('ignores a sample taken while the process was preempted between its reads of the two clocks', () => {
    takeClockJumpMs();
    const realMonotonic = performance.now.bind(performance);
    let calls = 0;
    // Each monotonic read 3 ms after the one before: the wall clock's read fell 3 ms late.
    vi.spyOn(performance, 'now').mockImplementation(() => realMonotonic() + 3 * calls++);
    wallAhead(10);
    clockMs();
    expect(takeClockJumpMs()).toBe(0);
    vi.restoreAllMocks();
    expect(takeClockJumpMs()).toBe(0);
  });
});
