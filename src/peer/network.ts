/**
 * The peer network: framed messages between controllers over TCP (or mutual TLS), with an
 * authenticating handshake, reconnects, heartbeats and the failure detector. It carries messages;
 * it makes no consistency decision.
 *
 * Every node DIALS every peer and SENDS only on that outbound connection (outbound.ts); it RECEIVES
 * only on the connections its peers dialled into it (inbound.ts). First both ends run handshake.ts
 * (challenge, hello, welcome): each proves it holds the cluster secret, and the dialer sends no
 * message before the listener has. Until then frames are capped at 1 KiB and at most
 * `unauthenticatedInboundMax` inbound connections may wait. With TLS, each certificate must name
 * the node id its end claims. Sends are fire-and-forget (false when not connected or over
 * `sendQueueBytesMax`); heartbeats and the kinds named `priorityKinds` overtake bulk frames waiting
 * to enter the socket (send-lanes.ts). Liveness is judged only from what arrives, and any frame
 * proves its sender alive: a heartbeat that would repeat the last one to a peer that other frames
 * reached since is not sent (an idle cluster's log traffic carries liveness alone). This file holds
 * the public API, the counters, the heartbeats and the failure detector's transitions; its options,
 * events and error are declared in network-types.ts and exported from here.
 *
 * Invariants: one outbound socket per peer, and one authenticated inbound one (a newer one
 * replaces the older). Nothing a peer sends throws out of a socket handler: a refused handshake or
 * a corrupt frame drops that connection alone, with a log line and a counter; a heartbeat's memory
 * report that fails validation is dropped alone, with a log line and a counter. Heartbeats are
 * never emitted as 'message'. After `stop()` no timer, socket or listener remains.
 */

import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import type { PeerId } from '../consistency/types.ts';
import { PauseWatch } from '../runtime/pause-watch.ts';
import { FailureDetector } from './failure-detector.ts';
import { FRAME_BYTES_MAX_DEFAULT, encodeFrame } from './frame.ts';
import { readMemoryReport, sameMemoryReport } from './memory-report.ts';
import type { PeerMemoryReport } from '../store/memory-guard.ts';
import {
  CLUSTER_SECRET_BYTES_MIN,
  HANDSHAKE_REFUSAL_KINDS,
  describeHandshakeRefusal,
  type HandshakeRefusal,
  type HandshakeRefusalKind,
} from './handshake.ts';
import { PeerListener } from './inbound.ts';
import { PeerDialer } from './outbound.ts';
import type { PeerNetworkCounters, PeerNetworkEvents, PeerNetworkOptions, PeerView } from './network-types.ts';

export { PeerNetworkError } from './network-types.ts';
export type {
  PeerAddress,
  PeerLog,
  PeerNetworkCounters,
  PeerNetworkEvents,
  PeerNetworkOptions,
  PeerView,
} from './network-types.ts';

/** A peer connection's send queue, unless the controller asks for more (see sendQueueBytesFor). */
const SEND_QUEUE_BYTES_MAX_DEFAULT = 16 * 1024 * 1024;

/**
 * The send queue a peer connection needs so that no forward is dropped there: a forward has no
 * other copy (appends and pushes are sent again; a dropped forward's write is lost until its
 * request times out), and a controller's client port holds at most `requestBytesMax` bytes of
 * requests at once, plus one request of a value up to the frame bound: twice that, for forwards
 * sent again (to a new leader) while their first copies still wait.
 */
export function sendQueueBytesFor(requestBytesMax: number, frameBytesMax: number): number {
  return Math.max(SEND_QUEUE_BYTES_MAX_DEFAULT, 2 * requestBytesMax + 2 * frameBytesMax);
}

const UNAUTHENTICATED_INBOUND_MAX_DEFAULT = 16;
/** Connects and handshakes get at least this long, even with a tiny failure timeout. */
const HANDSHAKE_TIMEOUT_MIN_MS = 1000;

/** A monotonic clock: wall-clock steps must not make peers look up or down. */
const monotonicNowMs = (): number => performance.now();
/** How often `stop` looks whether the last frames left, while it waits for them. */
const FLUSH_POLL_MS = 2;

export class PeerNetwork extends EventEmitter<PeerNetworkEvents> {
  private readonly options: PeerNetworkOptions;
  private readonly frameBytesMax: number;
  private readonly priorityKinds: ReadonlySet<string>;
  private readonly peerIds: ReadonlySet<PeerId>;
  /** The listener's side: the peer port and the connections peers dialled into this node. */
  private readonly listener: PeerListener;
  /** The dialer's side: one outbound connection per peer, the only ones sent on. */
  private readonly dialer: PeerDialer;
  private readonly heartbeatInfo = new Map<PeerId, unknown>();
  /** Each peer's latest memory report, as read from its heartbeats. */
  private readonly memoryReports = new Map<PeerId, PeerMemoryReport | null>();
  private readonly reportedUp = new Set<PeerId>();
  private readonly tallies: PeerNetworkCounters;
  private detector: FailureDetector;
  private pauses: PauseWatch;
  /** Pauses the heartbeat timer noticed that `excuseOwnPause` has not handed out yet. */
  private pauseUnclaimedMs = 0;
  private heartbeatTimer: NodeJS.Timeout | null = null;
  private running = false;

  constructor(options: PeerNetworkOptions) {
    super();
    const ids = options.peers.map((peer) => peer.id);
    if (ids.includes(options.self)) throw new Error(`PeerNetwork: peers must not include self (${options.self})`);
    if (options.secret.length < CLUSTER_SECRET_BYTES_MIN) {
      throw new Error(`PeerNetwork: the cluster secret must be at least ${CLUSTER_SECRET_BYTES_MIN} bytes`);
    }
    this.options = options;
    this.frameBytesMax = options.frameBytesMax ?? FRAME_BYTES_MAX_DEFAULT;
    this.priorityKinds = options.priorityKinds ?? new Set();
    const handshakeTimeoutMs = Math.max(options.failureTimeoutMs, HANDSHAKE_TIMEOUT_MIN_MS);
    this.peerIds = new Set(ids);
    this.detector = this.newDetector();
    this.pauses = new PauseWatch({ intervalMs: options.heartbeatIntervalMs, nowMs: monotonicNowMs() });
    const refused = Object.fromEntries(HANDSHAKE_REFUSAL_KINDS.map((kind) => [kind, 0]));
    this.tallies = {
      handshakesAccepted: 0,
      handshakesRefused: refused as Record<HandshakeRefusalKind, number>,
      framesRefused: 0,
      inboundReplaced: 0,
      memoryReportsRefused: 0,
      heartbeatsSent: 0,
      heartbeatsSkipped: 0,
    };
    const { self, clusterId, secret, log } = options;
    const settings = options.settings ?? '';
    const refuse = (refusal: HandshakeRefusal, where: Record<string, unknown>): void => this.refuse(refusal, where);
    this.listener = new PeerListener({
      self,
      listen: options.listen,
      clusterId,
      settings,
      secret,
      tls: options.tls ?? null,
      peers: this.peerIds,
      frameBytesMax: this.frameBytesMax,
      unauthenticatedInboundMax: options.unauthenticatedInboundMax ?? UNAUTHENTICATED_INBOUND_MAX_DEFAULT,
      handshakeTimeoutMs,
      log,
      tallies: this.tallies,
      refuse,
      onAuthenticated: (peer) => {
        this.dialer.hurry(peer);
        this.onHeard(peer);
      },
      onFrame: (peer, message) => this.onFrame(peer, message),
      onClosed: (peer) => this.sayIfCut(peer),
    });
    this.dialer = new PeerDialer({
      self,
      clusterId,
      settings,
      secret,
      tls: options.tls ?? null,
      handshakeTimeoutMs,
      sendQueueBytesMax: options.sendQueueBytesMax ?? SEND_QUEUE_BYTES_MAX_DEFAULT,
      log,
      tallies: this.tallies,
      nowMs: monotonicNowMs,
      refuse,
      heartbeatFrame: () => this.heartbeatFrame(),
      onDialFailed: (peer) => this.sayIfCut(peer),
    });
  }

  /** Listens for peers, then dials every peer and starts heartbeats. Rejects if the port is taken. */
  async start(): Promise<void> {
    if (this.running) throw new Error('PeerNetwork: already started');
    this.detector = this.newDetector();
    this.reportedUp.clear();
    this.heartbeatInfo.clear();
    this.memoryReports.clear();
    await this.listener.start();
    this.running = true;
    this.dialer.start(this.options.peers);
    this.pauses = new PauseWatch({ intervalMs: this.options.heartbeatIntervalMs, nowMs: monotonicNowMs() });
    this.heartbeatTimer = setInterval(() => this.onHeartbeatTimer(), this.options.heartbeatIntervalMs);
  }

  /**
   * Closes every connection and the listener; no reconnect follows. `flushMs`: first wait up to
   * this long for what was sent to reach the operating system (a frame still in a send lane or
   * the socket's buffer is lost when its connection closes).
   */
  async stop(options: { flushMs?: number } = {}): Promise<void> {
    if (!this.running) return;
    this.running = false;
    // The last frames sent (a stopping node's `leave`) go out first, if they can within flushMs.
    for (const deadlineMs = monotonicNowMs() + (options.flushMs ?? 0); this.dialer.unsentBytes() > 0 && monotonicNowMs() < deadlineMs;) {
      await new Promise((resolve) => setTimeout(resolve, FLUSH_POLL_MS));
    }
    if (this.heartbeatTimer !== null) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = null;
    this.dialer.stop();
    await this.listener.stop();
  }

  /** The address actually listened on (useful with port 0). */
  address(): { host: string; port: number } {
    return this.listener.address();
  }

  /**
   * Sends `message` to `to` on the outbound connection. Returns false — the message is dropped —
   * when not connected and authenticated, when the connection's buffer is over sendQueueBytesMax,
   * or when the frame is over frameBytesMax. Messages sent in one tick go out in one socket write.
   */
  send(to: PeerId, message: unknown): boolean {
    if (!this.peerIds.has(to)) throw new Error(`PeerNetwork: send to unknown peer ${to}`);
    if (!this.dialer.isConnected(to)) return false; // not started, or not authenticated yet
    const frame = encodeFrame(message);
    if (frame.length > this.frameBytesMax) {
      this.options.log.warn('peer message over frameBytesMax dropped', {
        peer: to,
        frameBytes: frame.length,
        frameBytesMax: this.frameBytesMax,
      });
      return false;
    }
    return this.dialer.write(to, frame, this.priorityKinds.has(kindOf(message)) ? 'priority' : 'bulk');
  }

  /** Whether an authenticated outbound connection to `peer` is established (sends can succeed). */
  isConnected(peer: PeerId): boolean {
    return this.dialer.isConnected(peer);
  }

  /** The peers the failure detector considers up now. */
  up(): PeerId[] {
    return this.detector.up(monotonicNowMs());
  }

  /** Every peer: up or down, how long since it was heard from, its latest heartbeat info. */
  peerView(): PeerView[] {
    return this.detector.view(monotonicNowMs()).map((liveness) => ({
      ...liveness,
      info: this.heartbeatInfo.get(liveness.peer) ?? null,
      cut: this.cutOff(liveness.peer),
    }));
  }

  /** Handshakes accepted and refused (by reason), frames refused, inbound connections replaced. */
  counters(): PeerNetworkCounters {
    return { ...this.tallies, handshakesRefused: { ...this.tallies.handshakesRefused } };
  }

  // ------------------------------------------------------------------------------------------
  // What the two sides hand back: frames from authenticated peers, refused handshakes

  /** Whether an authenticated connection to or from `peer` is open. */
  private linked(peer: PeerId): boolean {
    return this.dialer.isConnected(peer) || this.listener.hasInbound(peer);
  }

  /**
   * No connection with `peer` is open either way and our last dial to it failed (PeerView.cut):
   * its process most likely exited. A connection that was only reset is redialled and comes
   * back, so it is not cut.
   */
  private cutOff(peer: PeerId): boolean {
    return !this.linked(peer) && this.dialer.dialFailed(peer);
  }

  /** An inbound connection from `peer` closed, or a dial to it failed: once it is cut off, say so at once. */
  private sayIfCut(peer: PeerId): void {
    if (this.running && this.cutOff(peer)) this.emit('peer-cut', peer);
  }

  private onFrame(peer: PeerId, message: unknown): void {
    this.onHeard(peer);
    if (isHeartbeat(message)) {
      this.heartbeatInfo.set(peer, message.info ?? null);
      this.onMemoryReport(peer, message.memory);
      return;
    }
    this.emit('message', peer, message);
  }

  /** Reads a heartbeat's memory report; one that fails validation is dropped, counted and logged. */
  private onMemoryReport(peer: PeerId, value: unknown): void {
    const reading = readMemoryReport(value);
    if (!reading.ok) {
      const count = (this.tallies.memoryReportsRefused += 1);
      if ((count & (count - 1)) === 0) {
        this.options.log.warn('peer memory report refused; the peer counts as reporting nothing', {
          peer,
          detail: reading.problem.detail,
          refusedSoFar: count,
        });
      }
    }
    const report = reading.ok ? reading.report : null;
    const previous = this.memoryReports.get(peer);
    if (previous !== undefined && sameMemoryReport(previous, report)) return;
    this.memoryReports.set(peer, report);
    this.emit('memory-report', peer, report);
  }

  private onHeard(peer: PeerId): void {
    this.detector.heard(peer, monotonicNowMs());
    if (!this.reportedUp.has(peer)) this.reportTransitions();
  }

  /** Counts a refused handshake; logs it once per power of two of its kind (a flood is one line, then few). */
  private refuse(refusal: HandshakeRefusal, where: Record<string, unknown>): void {
    const count = (this.tallies.handshakesRefused[refusal.kind] += 1);
    if ((count & (count - 1)) !== 0) return;
    this.options.log.warn(`peer handshake refused: ${describeHandshakeRefusal(refusal)}; connection dropped`, {
      ...where,
      refusedSoFar: count,
    });
  }

  // ------------------------------------------------------------------------------------------
  // Heartbeats and failure detection

  private newDetector(): FailureDetector {
    return new FailureDetector({
      peers: this.options.peers.map((peer) => peer.id),
      failureTimeoutMs: this.options.failureTimeoutMs,
      nowMs: monotonicNowMs(),
    });
  }

  private onHeartbeatTimer(): void {
    const pausedMs = this.observePause();
    this.pauseUnclaimedMs += pausedMs;
    this.dialer.heartbeatToAll(this.heartbeatFrame());
    // After a pause, frames that arrived meanwhile are read (poll phase) before anyone is judged.
    if (pausedMs > 0) setImmediate(() => this.running && this.reportTransitions());
    else this.reportTransitions();
  }

  /**
   * How long this process was not running since the network's timers last ran (0 if it ran on
   * time); that silence is excused, not counted against the peers. The controller calls this at
   * each tick and request, and gets the pauses the network's own timer noticed since, once.
   */
  excuseOwnPause(): number {
    const pausedMs = this.observePause() + this.pauseUnclaimedMs;
    this.pauseUnclaimedMs = 0;
    return pausedMs;
  }

  /** Observes the time since the timers last ran; a pause is excused in the detector. */
  private observePause(): number {
    const nowMs = monotonicNowMs();
    const pausedMs = this.pauses.observe(nowMs);
    if (pausedMs > 0) {
      this.detector.excusePause(pausedMs, nowMs);
      this.options.log.info('this node was not running; its peers are not blamed for the silence', { pausedMs: Math.round(pausedMs) });
    }
    return pausedMs;
  }

  /** Pauses of this process seen so far: how many, the longest and their sum (ms). */
  pauseStats(): { pauses: number; longestPauseMs: number; totalPausedMs: number } {
    const { pauses, longestPauseMs, totalPausedMs } = this.pauses;
    return { pauses, longestPauseMs: Math.round(longestPauseMs), totalPausedMs: Math.round(totalPausedMs) };
  }

  private heartbeatFrame(): Buffer {
    return encodeFrame({ kind: 'heartbeat', info: this.options.heartbeatInfo?.() ?? null, memory: this.options.memoryReport?.() ?? null });
  }

  private reportTransitions(): void {
    for (const { peer, up } of this.detector.transitions(monotonicNowMs())) {
      if (up) {
        this.reportedUp.add(peer);
        this.options.log.info('peer up', { peer });
        this.emit('peer-up', peer);
      } else {
        this.reportedUp.delete(peer);
        this.options.log.info('peer down', { peer, failureTimeoutMs: this.options.failureTimeoutMs });
        this.emit('peer-down', peer);
      }
    }
  }
}

/** A message's `kind` field, or '' when it has none. */
function kindOf(message: unknown): string {
  const kind = typeof message === 'object' && message !== null ? (message as { kind?: unknown }).kind : undefined;
  return typeof kind === 'string' ? kind : '';
}

function isHeartbeat(message: unknown): message is { kind: 'heartbeat'; info?: unknown; memory?: unknown } {
  return typeof message === 'object' && message !== null && (message as { kind?: unknown }).kind === 'heartbeat';
}
