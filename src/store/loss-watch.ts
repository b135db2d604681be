/**
 * What memcached threw away behind this controller's back, read from its counters at each health
 * poll: items it evicted for room (`evictions`), and `flush_all`s that another client sent
 * (`cmd_flush` grown by more than the flushes this controller sent itself). Either means the replica
 * no longer holds what it was trusted to hold: an eviction lost some of it, a flush all of it.
 *
 * Intuition: both counters run from memcached's start, so only their growth within one epoch (one
 * memcached process) means anything. The last values read are saved (by the caller, as the text
 * `state()` returns) so that what happened while the controller was down counts at its restart;
 * a restarted controller has sent no flush yet, so a flush its previous process sent after the last
 * save counts as another client's: a rebuild more than needed, never one too few.
 *
 * Invariants: nothing is reported against a different epoch (a restarted memcached is the epoch
 * check's business); a counter memcached does not report is ignored.
 */

import type { BackendHealth } from './types.ts';

/** What was lost since the last poll. */
export interface Losses {
  evicted: number;
  flushedByOthers: number;
}

interface Seen {
  epoch: string;
  evictions: number | null;
  /** memcached's flush count at that poll (what is saved). */
  flushes: number | null;
  /**
   * The highest (memcached's flushes − ours) seen in this epoch. One of ours counts here when sent,
   * in memcached when it runs, so the difference dips while ours is in flight and rises above
   * its highest only for a flush we did not send.
   */
  highest: number | null;
}

const NOTHING: Losses = { evicted: 0, flushedByOthers: 0 };

function count(text: string | undefined): number | null {
  const value = Number(text);
  return text !== undefined && text !== '' && Number.isSafeInteger(value) && value >= 0 ? value : null;
}

export class LossWatch {
  #seen: Seen | null = null;

  /** `saved`: what `state()` returned before a restart ("epoch evictions flushes"), or "". */
  constructor(saved: string) {
    const [epoch, evictions, flushes] = saved.trim().split(' ');
    // This process has sent no flush yet: memcached's count alone is the difference.
    if (epoch !== undefined && epoch !== '') this.#seen = { epoch, evictions: count(evictions), flushes: count(flushes), highest: count(flushes) };
  }

  /** Compares a poll's counters with the last poll's (same epoch) and remembers them. */
  observe(health: BackendHealth): Losses {
    const seen = this.#seen;
    const evictions = health.evictions ?? null;
    const flushes = health.flushes?.total ?? null;
    const balance = flushes === null ? null : flushes - (health.flushes?.ours ?? 0);
    const sameEpoch = seen !== null && seen.epoch === health.epoch;
    const highest = sameEpoch && seen.highest !== null && balance !== null ? Math.max(seen.highest, balance) : balance;
    this.#seen = { epoch: health.epoch, evictions, flushes, highest };
    if (!sameEpoch) return NOTHING;
    const evicted = evictions !== null && seen.evictions !== null ? Math.max(0, evictions - seen.evictions) : 0;
    const flushedByOthers = balance !== null && seen.highest !== null ? Math.max(0, balance - seen.highest) : 0;
    return { evicted, flushedByOthers };
  }

  /** The text to save, so a restarted controller compares with what this one saw last. */
  state(): string {
    const seen = this.#seen;
    return seen === null ? '' : `${seen.epoch} ${seen.evictions ?? ''} ${seen.flushes ?? ''}`;
  }
}
