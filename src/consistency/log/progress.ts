/**
 * The leader's view of each follower (etcd-io/raft's tracker/progress.go): how far its log
 * matches ours, what was sent to it and not yet acked (the in-flight window), when it last acked
 * or answered a ping, and which read-confirming round it acked; with read leases (./lease.ts), until
 * when its lease is honoured and which of our sends it acked last. The counts a leader decides by —
 * check-quorum, the commit index, the confirmed round — are majorities over these; the commit index
 * is also held to what every honoured peer acked.
 *
 * Invariants: matchIndex ≤ sentIndex; only the leader of the current term holds any (cleared when
 * leadership is lost); peers are iterated in the order they were listed.
 */

import { itemAt } from '../../runtime/item-at.ts';
import type { PeerId } from '../types.ts';
import type { LeaseAsk } from './types.ts';

/** The leader's view of one follower. */
export interface Progress {
  matchIndex: number;
  /** Entries up to here were sent (maybe not acked yet). */
  sentIndex: number;
  /** The greatest `sentIndex` of this term (it never rewinds): the follower holds nothing of ours past it. */
  sentMax: number;
  commitSent: number;
  lastAckMs: number;
  /** Its last pong: alive, its acks maybe held by its disk (check-quorum counts it, rounds do not). */
  lastPongMs: number;
  ackedRound: number;
  seq: number;
  /** Rejections of appends sent before this seq are stale. */
  rewindSeq: number;
  /** Replies to appends sent before this seq came from before the peer restarted: ignored. */
  restartedSeq: number;
  transferStartedMs: number;
  /** The greatest replica epoch of ours the peer has acknowledged seeing. */
  replicaEpochSeen: number;
  /**
   * The greatest last log index the peer has replied with in this term (−1 before its first
   * reply): a peer whose log ends before our snapshot can only be rebuilt by a transfer.
   */
  lastIndex: number;
  /**
   * Our replica epoch as the peer had seen it when it last refused, in this term, an append we
   * sent at or before our snapshot index (−1: none): its log lacks our snapshot's entry, so, like
   * a log ending before the snapshot, it can only be rebuilt by a transfer.
   */
  refusedAtSnapshotEpoch: number;
  /** Read leases: until then (our clock) nothing is committed that this peer has not acked. */
  honorUntilMs: number;
  /** Read leases: its last ask, granted on our next append to it (null: none to grant). */
  leaseAsk: LeaseAsk | null;
  /** Read leases: the latest `sentMs` of ours it echoed in this term (dates our own lease). */
  ackedSentMs: number;
  /** Since when (our clock) entries it need not have yet wait for it, or null (see Replication.appendCanWait). */
  deferredSinceMs: number | null;
}

export class ProgressTracker {
  readonly #byPeer = new Map<PeerId, Progress>();
  /** Reused by #majorityOf: this node's value and each peer's, greatest first. */
  readonly #majorityScratch: number[] = [];

  constructor(private readonly options: { majority: number; failureTimeoutMs: number }) {}

  /**
   * A new leader's view: every follower presumed alive now, sent up to our last index, and (read
   * leases) honoured until `honorUntilMs`, for any lease an earlier leader may have granted.
   */
  reset(peers: readonly PeerId[], lastIndex: number, nowMs: number, honorUntilMs = Number.NEGATIVE_INFINITY): void {
    this.#byPeer.clear();
    for (const peer of peers) {
      this.#byPeer.set(peer, {
        matchIndex: 0,
        sentIndex: lastIndex,
        sentMax: lastIndex,
        commitSent: 0,
        lastAckMs: nowMs,
        lastPongMs: Number.NEGATIVE_INFINITY,
        ackedRound: 0,
        seq: 0,
        rewindSeq: 0,
        restartedSeq: 0,
        transferStartedMs: Number.NEGATIVE_INFINITY,
        replicaEpochSeen: 0,
        lastIndex: -1,
        refusedAtSnapshotEpoch: -1,
        honorUntilMs,
        leaseAsk: null,
        ackedSentMs: Number.NEGATIVE_INFINITY,
        deferredSinceMs: null,
      });
    }
  }

  clear(): void {
    this.#byPeer.clear();
  }

  /**
   * The peer restarted without its unsynced records (see ./recovery.ts): what it acked may be
   * gone, so nothing it acked before counts toward a commit again until it acks anew, not even a
   * reply of its previous run that arrives late (one to an append sent before now).
   */
  peerRestarted(peer: PeerId): void {
    const progress = this.#byPeer.get(peer);
    if (progress === undefined) return;
    progress.matchIndex = 0;
    progress.lastIndex = -1;
    progress.refusedAtSnapshotEpoch = -1;
    progress.restartedSeq = progress.seq + 1;
  }

  /** Of the followers that acked within the failure timeout, the one known to hold the most of the log (the first listed, of equals). */
  mostCaughtUp(nowMs: number): PeerId | undefined {
    let best: PeerId | undefined;
    let bestMatch = -1;
    for (const [peer, progress] of this.#byPeer) {
      if (this.#ackedLately(progress, nowMs) && progress.matchIndex > bestMatch) {
        best = peer;
        bestMatch = progress.matchIndex;
      }
    }
    return best;
  }

  get(peer: PeerId): Progress | undefined {
    return this.#byPeer.get(peer);
  }

  /** Check-quorum: has a majority (this node included) acked or ponged within the failure timeout? */
  hasQuorum(atMs: number): boolean {
    let count = 1;
    for (const progress of this.#byPeer.values()) {
      if (atMs - Math.max(progress.lastAckMs, progress.lastPongMs) < this.options.failureTimeoutMs) count += 1;
    }
    return count >= this.options.majority;
  }

  /** The peers that acked within the failure timeout. */
  ackedPeers(nowMs: number): PeerId[] {
    const acked: PeerId[] = [];
    for (const [peer, progress] of this.#byPeer) if (this.#ackedLately(progress, nowMs)) acked.push(peer);
    return acked;
  }

  #ackedLately(progress: Progress, nowMs: number): boolean {
    return nowMs - progress.lastAckMs < this.options.failureTimeoutMs;
  }

  /** The highest index a majority (this node, holding `lastIndex`, included) has. */
  majorityMatch(lastIndex: number): number {
    return this.#majorityOf(lastIndex, 'matchIndex');
  }

  /** `index`, lowered to what every peer whose lease is honoured at `nowMs` has acked. */
  honoredMatchFloor(index: number, nowMs: number): number {
    let floor = index;
    for (const progress of this.#byPeer.values()) if (nowMs < progress.honorUntilMs) floor = Math.min(floor, progress.matchIndex);
    return floor;
  }

  /** The most every follower may hold of this term's entries: nothing past it was sent to all. */
  sentToAllFloor(): number {
    let floor = Number.POSITIVE_INFINITY;
    for (const progress of this.#byPeer.values()) floor = Math.min(floor, progress.sentMax);
    return floor === Number.POSITIVE_INFINITY ? 0 : floor;
  }

  /** The latest send of ours a majority (this node, at once, included) acked in this term. */
  confirmedSentMs(): number {
    return this.#majorityOf(Number.POSITIVE_INFINITY, 'ackedSentMs');
  }

  /** The highest round a majority (this node, at `round`, included) has acked. */
  confirmedRound(round: number): number {
    return this.#majorityOf(round, 'ackedRound');
  }

  /**
   * What a majority reaches: the majority-th greatest of `own` (this node's) and each peer's
   * `field`. Called a few times per turn, so without a sort, a comparator or a fresh array.
   */
  #majorityOf(own: number, field: 'matchIndex' | 'ackedSentMs' | 'ackedRound'): number {
    const values = this.#majorityScratch;
    values[0] = own;
    let count = 1;
    for (const progress of this.#byPeer.values()) {
      const value = progress[field];
      let at = count;
      for (; at > 0 && itemAt(values, at - 1) < value; at -= 1) values[at] = itemAt(values, at - 1);
      values[at] = value;
      count += 1;
    }
    return itemAt(values, this.options.majority - 1); // a majority is at most every node: self and each peer
  }

  /** The follower heard from last (first listed on a tie), or null with none. */
  freshest(): PeerId | null {
    let freshest: PeerId | null = null;
    let freshestMs = Number.NEGATIVE_INFINITY;
    for (const [peer, progress] of this.#byPeer) {
      if (progress.lastAckMs > freshestMs) {
        freshest = peer;
        freshestMs = progress.lastAckMs;
      }
    }
    return freshest;
  }

  /** `index`, lowered to what every follower that acked within `withinMs` still lacks. */
  liveMatchFloor(index: number, nowMs: number, withinMs: number): number {
    let floor = index;
    for (const progress of this.#byPeer.values()) {
      if (nowMs - progress.lastAckMs < withinMs) floor = Math.min(floor, progress.matchIndex);
    }
    return floor;
  }

  /** This node did not run for `pausedMs`: the followers' silence over it does not count. */
  excusePause(forward: (atMs: number) => number, pausedMs: number): void {
    for (const progress of this.#byPeer.values()) {
      progress.lastAckMs = forward(progress.lastAckMs);
      progress.lastPongMs = forward(progress.lastPongMs);
      progress.transferStartedMs += pausedMs;
    }
  }
}
