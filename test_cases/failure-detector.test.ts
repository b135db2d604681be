/** The pure failure detector: driven with explicit times, no clock, no timers. */

import { describe, expect, it } from 'vitest';
import { asPeerId } from '../src/consistency/types.ts';
import { FailureDetector } from '../src/peer/failure-detector.ts';
import { PauseWatch } from '../src/runtime/pause-watch.ts';
import { itemAt } from '../src/runtime/item-at.ts';

const n2 = asPeerId('n2');
const n3 = asPeerId('n3');

function detector(nowMs = 1000): FailureDetector {
  return new FailureDetector({ peers: [n2, n3], failureTimeoutMs: 150, nowMs });
}

describe('FailureDetector', () => {
  it('starts with every peer down and never heard from', () => {
    const fd = detector();
    expect(fd.up(1000)).toEqual([]);
    expect(fd.view(1000)).toEqual([
      { peer: n2, up: false, lastHeardAgoMs: null },
      { peer: n3, up: false, lastHeardAgoMs: null },
    ]);
    expect(fd.transitions(1000)).toEqual([]);
  });

  it('marks a peer up when heard and down exactly one failure timeout later', () => {
    const fd = detector();
    fd.heard(n2, 1010);
    expect(fd.isUp(n2, 1010)).toBe(true);
    expect(fd.isUp(n2, 1159)).toBe(true);
    expect(fd.isUp(n2, 1160)).toBe(false);
    expect(fd.isUp(n3, 1010)).toBe(false);
    expect(fd.up(1100)).toEqual([n2]);
  });

  it('keeps a peer up while heartbeats keep arriving', () => {
    const fd = detector();
    for (let nowMs = 1000; nowMs <= 2000; nowMs += 20) {
      fd.heard(n3, nowMs);
      expect(fd.isUp(n3, nowMs + 19)).toBe(true);
    }
    expect(fd.view(2050)).toEqual([
      { peer: n2, up: false, lastHeardAgoMs: null },
      { peer: n3, up: true, lastHeardAgoMs: 50 },
    ]);
  });

  it('reports each up and down transition once', () => {
    const fd = detector();
    fd.heard(n2, 1000);
    fd.heard(n3, 1000);
    expect(fd.transitions(1001)).toEqual([
      { peer: n2, up: true },
      { peer: n3, up: true },
    ]);
    expect(fd.transitions(1002)).toEqual([]);
    fd.heard(n3, 1100);
    expect(fd.transitions(1200)).toEqual([{ peer: n2, up: false }]);
    expect(fd.transitions(1210)).toEqual([]);
    expect(fd.transitions(1300)).toEqual([{ peer: n3, up: false }]);
    fd.heard(n2, 1400);
    expect(fd.transitions(1400)).toEqual([{ peer: n2, up: true }]);
  });

  it('misses a blip shorter than the check interval, as the caller samples it', () => {
    const fd = detector();
    fd.heard(n2, 1000);
    expect(fd.transitions(1000)).toEqual([{ peer: n2, up: true }]);
    fd.heard(n2, 1300); // down between 1150 and 1300, but nobody asked in between
    expect(fd.transitions(1300)).toEqual([]);
  });

  it('never moves the last-heard time backwards', () => {
    const fd = detector();
    fd.heard(n2, 2000);
    fd.heard(n2, 1500);
    expect(fd.view(2100)[0]).toEqual({ peer: n2, up: true, lastHeardAgoMs: 100 });
    expect(itemAt(fd.view(1900), 0).lastHeardAgoMs).toBe(0);
  });

  it('asserts on programmer errors', () => {
    expect(() => detector().heard(asPeerId('n9'), 1000)).toThrow(/unknown peer n9/);
    expect(() => new FailureDetector({ peers: [n2], failureTimeoutMs: 0, nowMs: 0 })).toThrow(/failureTimeoutMs/);
    expect(() => new FailureDetector({ peers: [n2, n2], failureTimeoutMs: 10, nowMs: 0 })).toThrow(/distinct/);
  });
});

describe('FailureDetector.excusePause', () => {
  it('does not blame peers for a stall of this node: heard 100 ms before a 400 ms stall, still up after it', () => {
    const fd = detector();
    fd.heard(n2, 1000);
    fd.transitions(1000);
    // Stopped from 1100 to 1500; the first thing this node does on waking is excuse the pause.
    fd.excusePause(400, 1500);
    expect(fd.isUp(n2, 1500)).toBe(true);
    expect(fd.transitions(1500)).toEqual([]);
    // A peer that stays silent after the stall is down one failure timeout of running time later.
    expect(fd.isUp(n2, 1549)).toBe(true);
    expect(fd.isUp(n2, 1550)).toBe(false);
  });

  it('never moves a last-heard time past now, and leaves never-heard peers down', () => {
    const fd = detector();
    fd.heard(n2, 1000);
    fd.excusePause(10_000, 1200);
    expect(fd.view(1200)).toEqual([
      { peer: n2, up: true, lastHeardAgoMs: 0 },
      { peer: n3, up: false, lastHeardAgoMs: null },
    ]);
    expect(fd.isUp(n2, 1350)).toBe(false);
  });

  it('ignores a zero, negative or NaN pause', () => {
    const fd = detector();
    fd.heard(n2, 1000);
    for (const pausedMs of [0, -50, Number.NaN]) fd.excusePause(pausedMs, 1100);
    expect(fd.isUp(n2, 1150)).toBe(false);
  });
});

describe('PauseWatch', () => {
  it('takes lateness up to one interval of slack as scheduling, and more as a pause less one interval', () => {
    const watch = new PauseWatch({ intervalMs: 100, nowMs: 0 });
    expect(watch.observe(100)).toBe(0);
    expect(watch.observe(300)).toBe(0); // 200 ms gap: within interval + slack
    expect(watch.observe(1000)).toBe(600); // 700 ms gap: stopped for 600 ms beyond the interval
    expect(watch.observe(1050)).toBe(0);
    expect(watch.pauses).toBe(1);
    expect(watch.longestPauseMs).toBe(600);
  });

  it('never reports a pause when time goes back', () => {
    const watch = new PauseWatch({ intervalMs: 50, slackMs: 10, nowMs: 1000 });
    expect(watch.observe(500)).toBe(0);
    expect(watch.observe(1040)).toBe(0);
    expect(watch.observe(1200)).toBe(110);
  });
});
