/**
 * The controllers' clock tells a suspend from its monotonic clock's point of view (see
 * src/runtime/clock.ts): the wall clock running ahead of the monotonic clock. Date.now is moved
 * here as a resume from a suspend moves it; the monotonic clock is left alone, as a suspend leaves it.
 */

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
});
