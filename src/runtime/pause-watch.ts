/**
 * Tells, from when a periodic timer actually runs, how long this process was not running.
 *
 * A timer due every `intervalMs` that runs much later means the process was stopped: the machine
 * or its hypervisor stalled, the container was throttled, a GC pause ran long. Timeouts that judge
 * peers by their silence must not count that time, or a stall of every node at once (nobody
 * silent but everybody late) becomes an election. Pure: the caller passes the time.
 *
 * Invariant: a gap up to `intervalMs + slackMs` is no pause; a longer one is a pause of the gap
 * less one interval (the part the timer was meant to wait anyway).
 */

export interface PauseWatchOptions {
  /** How often `observe` is meant to be called. */
  intervalMs: number;
  /** Lateness still taken as ordinary scheduling delay. Default: one interval. */
  slackMs?: number;
  nowMs: number;
}

export class PauseWatch {
  private readonly intervalMs: number;
  private readonly slackMs: number;
  private lastMs: number;
  /** The longest pause seen, and their sum, since start (for stats). */
  longestPauseMs = 0;
  totalPausedMs = 0;
  pauses = 0;

  constructor(options: PauseWatchOptions) {
    this.intervalMs = options.intervalMs;
    this.slackMs = options.slackMs ?? options.intervalMs;
    this.lastMs = options.nowMs;
  }

  /** How long the process was stopped since the previous call (0 when it was not). */
  observe(nowMs: number): number {
    const gapMs = nowMs - this.lastMs;
    this.lastMs = Math.max(this.lastMs, nowMs);
    if (gapMs <= this.intervalMs + this.slackMs) return 0;
    const pausedMs = gapMs - this.intervalMs;
    this.pauses += 1;
    this.totalPausedMs += pausedMs;
    this.longestPauseMs = Math.max(this.longestPauseMs, pausedMs);
    return pausedMs;
  }
}
