/**
 * Followers sharing holds: linearizability with read leases, three nodes. A write taken by a
 * follower crosses client → follower → leader → both followers; without this it then waited for
 * both acks at the leader and the leader's commit notice, two more hops. Here the follower that
 * accepts an append carrying the other follower's writes tells that follower itself (`held`),
 * which commits them on its own copy and that word: the two followers are a majority (Raft §5.4),
 * and with the leader, which made the entries, every lease holder holds them, so every later lease
 * read of their keys waits for them (./lease.ts).
 *
 * The leader's side: its read index covers what it sent both followers, acked or not (they may
 * have committed it between themselves, see ReadIndex.readIndexNow), and a bare commit notice
 * to a follower told of its own writes this way may wait, as a deferred append does.
 *
 * Owns: a follower's latest `held` from the other follower (its term and index).
 * Invariant: a follower commits on a `held` only entries of its current term that its own log
 * holds, and only from the other follower of that term (never its leader).
 */

import type { PeerId } from '../types.ts';
import type { LogCore } from './core.ts';
import type { Progress, ProgressTracker } from './progress.ts';
import type { LogMessage } from './types.ts';

/** The most newly committed entries a deferred notice looks through before it just leaves. */
const NOTICE_SCAN_MAX = 64;

export class FollowerHolds {
  /** The other follower's latest `held`: how far it holds its term's leader's log. */
  private peerHeld: { term: number; matchIndex: number } | null = null;

  constructor(
    private readonly core: LogCore,
    private readonly progress: ProgressTracker,
  ) {}

  /**
   * A follower accepted `message` from `leader`, up to `matchIndex`: tell the other follower if it
   * carried that one's writes (sent after the entries' record, as the ack is: it claims no more),
   * and commit what the other's last `held` covers now that our log may hold more.
   */
  accepted(leader: PeerId, message: Extract<LogMessage, { kind: 'append' }>, matchIndex: number): void {
    if (message.entries.length > 0) {
      for (const peer of this.core.peers) {
        if (peer === leader) continue;
        if (message.entries.some((entry) => entry.origin === peer)) this.core.send(peer, { kind: 'held', term: message.term, matchIndex });
      }
    }
    this.commitHeld();
  }

  /**
   * The other follower holds our leader's log up to `matchIndex`. Where our own log has an entry
   * of this term at or below it, both logs match the leader's up to there (Raft's log matching):
   * it is committed. Our own copy is durable before any effect of this step (the durability gate).
   */
  onHeld(from: PeerId, message: Extract<LogMessage, { kind: 'held' }>): void {
    const core = this.core;
    if (message.term !== core.term || core.role !== 'follower' || core.leader === null || core.leader === from) return;
    const known = this.peerHeld;
    if (known === null || known.term !== message.term || known.matchIndex < message.matchIndex) {
      this.peerHeld = { term: message.term, matchIndex: message.matchIndex };
    }
    this.commitHeld();
  }

  /** Commits what the other follower's `held` covers of our log: it may come before the entries. */
  private commitHeld(): void {
    const core = this.core;
    const known = this.peerHeld;
    if (known === null || known.term !== core.term || core.role !== 'follower') return;
    const held = Math.min(known.matchIndex, core.log.lastIndex());
    if (held > core.commitIndex && core.log.termAt(held) === core.term) core.commitIndex = held;
  }

  /**
   * The leader's side: whether a send to `peer` now would be a bare commit notice that may wait.
   * The writes the follower's own clients wait for it commits on the other follower's `held`;
   * the notice only lets it apply the others' writes (a lease read of their keys waits for
   * those). So it may wait if each of the follower's own writes committed since its last notice
   * was acked by the other follower, which sent the `held` beside that ack.
   */
  noticeMayWait(peer: PeerId, progress: Progress): boolean {
    const core = this.core;
    const log = core.log;
    if (progress.sentIndex < log.lastIndex() || progress.commitSent >= core.commitIndex) return false;
    let otherMatch = Number.POSITIVE_INFINITY;
    for (const other of core.peers) if (other !== peer) otherMatch = Math.min(otherMatch, this.progress.get(other)?.matchIndex ?? 0);
    const first = Math.max(progress.commitSent, log.snapshotIndex) + 1;
    if (core.commitIndex - first >= NOTICE_SCAN_MAX) return false;
    for (let index = first; index <= core.commitIndex; index += 1) {
      if (index > otherMatch && log.entryAt(index).origin === peer) return false;
    }
    return true;
  }
}
