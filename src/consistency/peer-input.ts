/**
 * What a machine does with a peer message it cannot use: drop it, count it, and say so — at most
 * once a second per peer, so a peer sending junk in a loop cannot flood the log.
 *
 * A peer's frame is input from outside the process: never a programmer error. Each machine checks
 * a message against its schema (and its own state) before acting on it; what fails comes here.
 * Time is the event's `nowMs`, so the machines stay deterministic.
 */

import type { Effect, PeerId } from './types.ts';

/** Notes of dropped messages from one peer are at most this often. */
export const DROP_NOTE_INTERVAL_MS = 1000;
/** Peers whose last note time is remembered; a peer id beyond these is one of many bad senders anyway. */
const NOTED_PEERS_MAX = 64;

/** Counts dropped peer messages and rate-limits the notes about them. */
export class DroppedPeerMessages {
  /** Peer messages dropped since the machine started. */
  count = 0;
  private readonly notedMs = new Map<string, number>();

  /** Counts one dropped message; returns the note to emit, or null when `from` had one within the interval. */
  drop<M>(from: PeerId, reason: string, nowMs: number): Extract<Effect<M>, { kind: 'note' }> | null {
    this.count += 1;
    const key = String(from);
    const lastMs = this.notedMs.get(key);
    if (lastMs !== undefined && nowMs - lastMs < DROP_NOTE_INTERVAL_MS) return null;
    this.notedMs.delete(key);
    this.notedMs.set(key, nowMs);
    if (this.notedMs.size > NOTED_PEERS_MAX) this.notedMs.delete(this.notedMs.keys().next().value as string);
    return {
      kind: 'note',
      level: 'warn',
      message: 'peer message dropped',
      meta: { peer: key.slice(0, 64), reason, dropped: this.count },
    };
  }
}
