/**
 * The controllers' clock: the wall clock as it read when the process started, advanced by the
 * monotonic clock since, in whole milliseconds.
 *
 * Intuition: a controller times elections, its leader's silence, check-quorum and request
 * deadlines, and stamps writes for their expiry and (eventual mode) their versions. Read from the
 * wall clock, a step of the system clock (an operator, NTP) moved every timer with it: an hour
 * ahead and a leader found its followers' last acks an hour old and stepped down; an hour back and
 * followers waited an hour to replace a dead leader. memcached keeps time the same way: it reads
 * the wall clock once, at start, and counts on its monotonic clock (expiry times are relative to
 * that start, absolute ones included).
 *
 * Invariants: never goes back; between two reads it advances as real time does, whatever the
 * wall clock does meanwhile. A step is seen only at the next start (as by memcached).
 */

import { performance } from 'node:perf_hooks';

const wallAtStartMs = Date.now();
const monotonicAtStartMs = performance.now();

/** Now, in ms since the epoch as the wall clock counted at start. */
export function clockMs(): number {
  return wallAtStartMs + Math.floor(performance.now() - monotonicAtStartMs);
}
