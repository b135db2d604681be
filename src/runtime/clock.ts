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
 *
 * One exception: Linux's monotonic clock stands still while the machine is suspended, when real
 * time does not. Read leases rest on each controller's clock keeping pace with real time, so every
 * read also compares the two clocks: the wall clock running ahead of the monotonic clock by more
 * than its whole-millisecond steps and NTP's slewing explain means a suspend (or a forward step of
 * the wall clock), and `takeClockJumpMs` reports it. A paused virtual machine whose clocks both
 * stop shows nothing here (see the README's lease assumption).
 */

import { performance } from 'node:perf_hooks';

const wallAtStartMs = Date.now();
const monotonicAtStartMs = performance.now();

/**
 * A forward jump of the wall clock against the monotonic one smaller than this is its 1 ms
 * granularity or NTP's slewing (at most 0.5 ms a second); read_lease_margin_ms covers it.
 */
export const CLOCK_JUMP_MS_MIN = 5;
/** Longest a sample of the two clocks may take (see `lookForJump`), ms. */
const SAMPLE_GAP_MS_MAX = 0.5;
/** How far the wall clock was ahead of the monotonic clock at the last look, ms. */
let wallLeadMs = wallAtStartMs - monotonicAtStartMs;
/** Forward jumps seen since the last `takeClockJumpMs`, ms; and how many since start. */
let jumpedMs = 0;
let jumps = 0;

/**
 * Compares the two clocks read around `monotonicMs`. A sample is used only if no time passed
 * between the wall clock's read and the monotonic reads around it: a process preempted between
 * two reads would otherwise see the wall clock jump ahead (a machine this busy is where it does).
 */
function lookForJump(monotonicMs: number): void {
  const wallMs = Date.now();
  if (performance.now() - monotonicMs > SAMPLE_GAP_MS_MAX) return;
  const leadMs = wallMs - monotonicMs;
  if (leadMs - wallLeadMs > CLOCK_JUMP_MS_MIN) {
    jumpedMs += leadMs - wallLeadMs;
    jumps += 1;
  }
  wallLeadMs = leadMs;
}

/** Forward jumps of the wall clock against the monotonic one seen since start (for `stats`). */
export function clockJumpsSeen(): number {
  return jumps;
}

/** Now, in ms since the epoch as the wall clock counted at start. */
export function clockMs(): number {
  const monotonicMs = performance.now();
  lookForJump(monotonicMs);
  return wallAtStartMs + Math.floor(monotonicMs - monotonicAtStartMs);
}

/**
 * How far, in ms, the wall clock jumped ahead of the monotonic clock since the last call (0: it
 * did not): the machine was suspended that long, or the wall clock was stepped forward.
 */
export function takeClockJumpMs(): number {
  lookForJump(performance.now());
  const taken = Math.round(jumpedMs);
  jumpedMs = 0;
  return taken;
}
