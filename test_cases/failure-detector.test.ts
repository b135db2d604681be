/** The pure failure detector: driven with explicit times, no clock, no timers. */

import { describe, expect, it } from 'vitest';
import { asPeerId } from '../src/consistency/types.ts';
import { FailureDetector } from '../src/peer/failure-detector.ts';

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
    expect(fd.view(1900)[0].lastHeardAgoMs).toBe(0);
  });

  it('asserts on programmer errors', () => {
    expect(() => detector().heard(asPeerId('n9'), 1000)).toThrow(/unknown peer n9/);
    expect(() => new FailureDetector({ peers: [n2], failureTimeoutMs: 0, nowMs: 0 })).toThrow(/failureTimeoutMs/);
    expect(() => new FailureDetector({ peers: [n2, n2], failureTimeoutMs: 10, nowMs: 0 })).toThrow(/distinct/);
  });
});
