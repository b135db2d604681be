/**
 * The pace of eventual and causal modes' read-backs of the keys written lately (their "dirty
 * fetches", whose results become the pushes and batches peers get): at most one per interval, and
 * when one is wanted before its time, one wake-up asked for, at that time.
 *
 * Invariant: at most one wake-up is outstanding, and it is never later than the next allowed fetch.
 */

import type { Effect } from './types.ts';

export class FetchPacer {
  /** The next fetch may go from this time on. */
  private nextAtMs = 0;
  /** When the wake-up asked for is due; null when none is pending. */
  private wakeAtMs: number | null = null;

  constructor(private readonly intervalMs: number) {}

  /** Time has come to `nowMs`: a wake-up due by then has come, and the next may be asked for. */
  advance(nowMs: number): void {
    if (this.wakeAtMs !== null && nowMs >= this.wakeAtMs) this.wakeAtMs = null;
  }

  /** A fetch is wanted at `nowMs`: true if it may go now (the next is paced from now); else a wake-up is asked for in `out`. */
  mayFetch<M>(nowMs: number, out: Effect<M>[]): boolean {
    if (nowMs >= this.nextAtMs) {
      this.nextAtMs = nowMs + this.intervalMs;
      return true;
    }
    if (this.wakeAtMs !== null && this.wakeAtMs <= this.nextAtMs) return false;
    this.wakeAtMs = this.nextAtMs;
    out.push({ kind: 'wake', afterMs: this.nextAtMs - nowMs });
    return false;
  }
}
