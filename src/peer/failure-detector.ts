/**
 * The failure detector: which peers are up, judged only from when we last heard from them.
 *
 * Intuition (TigerBeetle `fault_detector`): a peer is up while its last heartbeat — or any other
 * frame, since any frame proves it alive — is younger than `failureTimeoutMs`. It is pure: the
 * caller says when something was heard and asks with a `nowMs`; it never reads a clock, so tests
 * and the simulator drive it with any time they like.
 *
 * Invariants:
 * - A peer never heard from is down.
 * - `isUp(peer, nowMs)` is true iff `nowMs - lastHeardMs < failureTimeoutMs`: a peer is reported
 *   down exactly one failure timeout after its last frame.
 * - `lastHeardMs` never goes back, even if a caller's clock does, and never passes the latest
 *   `nowMs` the detector was given.
 * - Time this node itself was not running (`excusePause`) is not counted as peers' silence: a
 *   stall of the whole machine makes no peer look down.
 * - `transitions(nowMs)` returns each change of a peer's up/down state once, relative to the
 *   previous call (the first call compares with "everyone down").
 */

import type { PeerId } from '../consistency/types.ts';

export interface FailureDetectorOptions {
  /** The other peers (not this node). */
  peers: readonly PeerId[];
  /** A peer silent for this long is down. */
  failureTimeoutMs: number;
  /** The time the detector starts at; no peer has been heard yet. */
  nowMs: number;
}

/** One peer as the detector sees it. `lastHeardAgoMs` is null for a peer never heard from. */
export interface PeerLiveness {
  peer: PeerId;
  up: boolean;
  lastHeardAgoMs: number | null;
}

/** A change of a peer's state since the previous `transitions` call. */
export interface PeerTransition {
  peer: PeerId;
  up: boolean;
}

export class FailureDetector {
  readonly peers: readonly PeerId[];
  readonly failureTimeoutMs: number;
  readonly startedAtMs: number;
  /** Last time each peer was heard from; absent until the first frame. */
  private readonly lastHeardMs = new Map<PeerId, number>();
  /** The state each peer had at the previous `transitions` call. */
  private readonly reportedUp = new Map<PeerId, boolean>();

  constructor(options: FailureDetectorOptions) {
    assert(options.failureTimeoutMs > 0, `failureTimeoutMs must be > 0, got ${options.failureTimeoutMs}`);
    assert(new Set(options.peers).size === options.peers.length, 'peers must be distinct');
    this.peers = [...options.peers];
    this.failureTimeoutMs = options.failureTimeoutMs;
    this.startedAtMs = options.nowMs;
    for (const peer of this.peers) this.reportedUp.set(peer, false);
  }

  /** Records that a heartbeat (or any frame) from `peer` arrived at `nowMs`. */
  heard(peer: PeerId, nowMs: number): void {
    assert(this.reportedUp.has(peer), `heard from unknown peer ${peer}`);
    const previousMs = this.lastHeardMs.get(peer);
    if (previousMs === undefined || nowMs > previousMs) this.lastHeardMs.set(peer, nowMs);
  }

  /**
   * This node was not running for `pausedMs` until `nowMs` (its own timers came late): peers are
   * not blamed for that silence, so each last-heard time moves forward by the pause, never past
   * `nowMs`. Peers never heard from stay down.
   */
  excusePause(pausedMs: number, nowMs: number): void {
    if (!(pausedMs > 0)) return;
    for (const [peer, lastMs] of this.lastHeardMs) {
      this.lastHeardMs.set(peer, Math.max(lastMs, Math.min(nowMs, lastMs + pausedMs)));
    }
  }

  /** Whether `peer` was heard from within the last failure timeout. */
  isUp(peer: PeerId, nowMs: number): boolean {
    const lastMs = this.lastHeardMs.get(peer);
    return lastMs !== undefined && nowMs - lastMs < this.failureTimeoutMs;
  }

  /** The peers up at `nowMs`, in configuration order. */
  up(nowMs: number): PeerId[] {
    return this.peers.filter((peer) => this.isUp(peer, nowMs));
  }

  /** Every peer with its state and how long ago it was last heard from. */
  view(nowMs: number): PeerLiveness[] {
    return this.peers.map((peer) => {
      const lastMs = this.lastHeardMs.get(peer);
      return {
        peer,
        up: this.isUp(peer, nowMs),
        lastHeardAgoMs: lastMs === undefined ? null : Math.max(0, nowMs - lastMs),
      };
    });
  }

  /** The peers whose up/down state changed since the previous call, for logging and events. */
  transitions(nowMs: number): PeerTransition[] {
    const changes: PeerTransition[] = [];
    for (const peer of this.peers) {
      const up = this.isUp(peer, nowMs);
      if (this.reportedUp.get(peer) !== up) {
        this.reportedUp.set(peer, up);
        changes.push({ peer, up });
      }
    }
    return changes;
  }
}

function assert(condition: boolean, message: string): asserts condition {
  if (!condition) throw new Error(`FailureDetector: ${message}`);
}
