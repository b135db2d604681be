/**
 * When the peers' snapshots last showed signs of life, for the rules of ./merging.ts that keep a
 * snapshot from being asked for, or taken, on top of one already on its way. A snapshot is a
 * whole replica: asking for another while one comes starts it over (a barrier on the sender's
 * replica), and taking two at once holds two replicas in this heap.
 *
 * Owns three clocks, each judged against one window (the causal tuning's resyncAfterMs): per peer,
 * when it was last asked for a snapshot or sent part of one, and when a part of its snapshot was
 * last taken to be assembled; and when a part last came from any peer (or the replica was last
 * emptied, which gives the peers a window to send on their own).
 */

import type { PeerId } from '../types.ts';

export class SnapshotTimes {
  private readonly askedOrSentMs = new Map<PeerId, number>();
  private readonly takenMs = new Map<PeerId, number>();
  private partMs = Number.NEGATIVE_INFINITY;

  constructor(private readonly windowMs: number) {}

  /** A part of `from`'s snapshot came (whether or not it is taken). */
  partCame(from: PeerId, nowMs: number): void {
    this.askedOrSentMs.set(from, nowMs);
    this.partMs = nowMs;
  }

  /** A part of `from`'s snapshot was taken to be assembled. */
  partTaken(from: PeerId, nowMs: number): void {
    this.takenMs.set(from, nowMs);
  }

  /**
   * Whether `peer` may be asked for a snapshot now: not if it was asked, or sent part of one,
   * within the window. A true answer counts as the ask.
   */
  mayAsk(peer: PeerId, nowMs: number): boolean {
    if (nowMs - (this.askedOrSentMs.get(peer) ?? Number.NEGATIVE_INFINITY) < this.windowMs) return false;
    this.askedOrSentMs.set(peer, nowMs);
    return true;
  }

  /** Whether a part of `peer`'s snapshot was taken within the window. */
  takenLately(peer: PeerId, nowMs: number): boolean {
    return nowMs - (this.takenMs.get(peer) ?? Number.NEGATIVE_INFINITY) < this.windowMs;
  }

  /** Whether a part of any peer's snapshot came within the window (or the replica was emptied). */
  partLately(nowMs: number): boolean {
    return nowMs - this.partMs < this.windowMs;
  }

  /**
   * The replica was emptied: the asks before count no more (what was on its way then is not what
   * is owed now), and the peers get a window to send snapshots on their own.
   */
  replicaEmptied(nowMs: number): void {
    this.askedOrSentMs.clear();
    this.partMs = nowMs;
  }
}
