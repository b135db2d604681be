/**
 * The dialer's side of the peer network (network.ts): one outbound connection per peer, the only
 * one this node sends on. It dials, runs the dialer's half of the handshake (answers the listener's
 * challenge with a hello, then checks its welcome: no message goes out before the welcome) and
 * redials after every close, backing off. With TLS, the listener's certificate must name the peer
 * this node meant to reach.
 *
 * Invariants: at most one socket per peer; only an `authenticated` connection carries frames, in
 * its send lanes (send-lanes.ts); the listener sends nothing once authenticated, and anything it
 * does send is ignored. A refused handshake drops that connection alone, counted by the network's
 * `refuse`. After `stop()` no socket or timer of the dialer remains and no redial follows.
 */

import { randomBytes } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import type { PeerId } from '../consistency/types.ts';
import type { PeerTls } from './credentials.ts';
import { FrameDecoder, describeFrameError, encodeFrame } from './frame.ts';
import { BULK_SOCKET_BYTES_MAX_DEFAULT, SendLanes, type SendLane } from './send-lanes.ts';
import {
  HANDSHAKE_FRAME_BYTES_MAX,
  HANDSHAKE_NONCE_BYTES,
  answerChallenge,
  certificateNames,
  checkWelcome,
  type HandshakeRefusal,
} from './handshake.ts';
import type { PeerAddress, PeerLog, PeerNetworkCounters } from './network-types.ts';

/** What the dialer is given by the network: its settings, and the network's clock, counters and refusal log. */
export interface PeerDialerOptions {
  self: PeerId;
  clusterId: string;
  /** What every node must run with alike (see handshake.ts). */
  settings: string;
  secret: Buffer;
  /** Mutual TLS credentials, or null for plain TCP. */
  tls: PeerTls | null;
  /** Bounds connect plus handshake. */
  handshakeTimeoutMs: number;
  /** Bytes buffered on one connection beyond which a write drops. */
  sendQueueBytesMax: number;
  log: PeerLog;
  /** The network's counters; the dialer adds the handshakes it completes. */
  tallies: PeerNetworkCounters;
  /** A monotonic clock, ms. */
  nowMs: () => number;
  /** Counts and logs a refused handshake. */
  refuse: (refusal: HandshakeRefusal, where: Record<string, unknown>) => void;
  /** The heartbeat sent first on every new connection. */
  heartbeatFrame: () => Buffer;
  /** A dial to a peer ended before its handshake did (refused, closed, timed out). */
  onDialFailed?: (peer: PeerId) => void;
}

/** An outbound connection's progress; only `authenticated` may carry messages. */
type OutboundStage = 'idle' | 'connecting' | 'securing' | 'handshaking' | 'authenticated';

interface Outbound {
  address: PeerAddress;
  socket: net.Socket | null;
  stage: OutboundStage;
  /** Handshake frames from the listener (null once authenticated: it sends nothing more). */
  decoder: FrameDecoder | null;
  nonce: Buffer;
  /** Set once the challenge is answered: the proof the listener's welcome must carry. */
  expectedWelcomeProof: Buffer | null;
  /** Bounds connect plus handshake. */
  handshakeTimer: NodeJS.Timeout | null;
  /** Dials since the last connection that lasted, for the back-off. */
  attempt: number;
  /** When the current connection was authenticated (monotonic), or null. */
  connectedAtMs: number | null;
  /** The last dial ended before its handshake did: nothing answers at the peer's address. */
  dialFailed: boolean;
  retryTimer: NodeJS.Timeout | null;
  /** Once authenticated: the priority and bulk lanes of this connection. */
  lanes: SendLanes | null;
  /** The last heartbeat written on this connection, and the lanes' frame count right after it. */
  lastBeat: Buffer | null;
  framesAfterBeat: number;
}

const RECONNECT_DELAY_MIN_MS = 50;
const RECONNECT_DELAY_MAX_MS = 1000;
/** An authenticated connection open this long proved the way works: its close is redialled without back-off. */
const LASTED_MS = 50;

/** Dials every peer and keeps one outbound connection to each; the network sends through it. */
export class PeerDialer {
  private readonly options: PeerDialerOptions;
  private readonly outbound = new Map<PeerId, Outbound>();
  private running = false;

  constructor(options: PeerDialerOptions) {
    this.options = options;
  }

  /** Dials every peer in `peers`; each is redialled after a close until `stop()`. */
  start(peers: readonly PeerAddress[]): void {
    this.running = true;
    for (const address of peers) {
      const outbound: Outbound = {
        address,
        socket: null,
        stage: 'idle',
        decoder: null,
        nonce: Buffer.alloc(0),
        expectedWelcomeProof: null,
        handshakeTimer: null,
        attempt: 0,
        connectedAtMs: null,
        dialFailed: false,
        retryTimer: null,
        lanes: null,
        lastBeat: null,
        framesAfterBeat: 0,
      };
      this.outbound.set(address.id, outbound);
      this.dial(outbound);
    }
  }

  /**
   * `peer` just reached us (an authenticated inbound connection): if our dial to it is waiting out
   * a back-off, dial now. A restarted peer then hears from us at once, not up to a second later.
   * Only an authenticated peer hurries us, and a failed dial backs off as before.
   */
  hurry(peer: PeerId): void {
    const outbound = this.outbound.get(peer);
    if (!this.running || outbound === undefined || outbound.retryTimer === null) return;
    clearTimeout(outbound.retryTimer);
    this.dial(outbound);
  }

  /** Closes every outbound connection; no redial follows. */
  stop(): void {
    this.running = false;
    for (const outbound of this.outbound.values()) {
      if (outbound.retryTimer !== null) clearTimeout(outbound.retryTimer);
      if (outbound.handshakeTimer !== null) clearTimeout(outbound.handshakeTimer);
      outbound.socket?.destroy();
    }
    this.outbound.clear();
  }

  /** Bytes written to authenticated connections that have not reached the operating system yet. */
  unsentBytes(): number {
    let bytes = 0;
    for (const outbound of this.outbound.values()) bytes += outbound.lanes?.unsentBytes ?? 0;
    return bytes;
  }

  /** Whether our last dial to `peer` failed (reset once a connection to it is authenticated). */
  dialFailed(peer: PeerId): boolean {
    return this.outbound.get(peer)?.dialFailed === true;
  }

  /** Whether the connection to `peer` is authenticated (writes can succeed). */
  isConnected(peer: PeerId): boolean {
    return this.outbound.get(peer)?.stage === 'authenticated';
  }

  /** Writes one frame to `peer` in a lane; false when not connected or dropped. */
  write(peer: PeerId, frame: Buffer, lane: SendLane): boolean {
    const outbound = this.outbound.get(peer);
    return outbound !== undefined && this.writeFrame(outbound, frame, lane);
  }

  /**
   * Writes the heartbeat to every peer whose connection is authenticated, except where it would
   * say nothing new: the same frame as the last one written there, with other frames handed to
   * the socket since (any frame proves this node alive). An idle cluster's appends and their
   * replies then carry liveness alone; a peer hears from us at least every two intervals.
   */
  heartbeatToAll(frame: Buffer): void {
    for (const outbound of this.outbound.values()) {
      const lanes = outbound.lanes;
      if (outbound.stage !== 'authenticated' || lanes === null) continue;
      const sentSince = lanes.framesToSocket !== outbound.framesAfterBeat;
      if (sentSince && outbound.lastBeat !== null && outbound.lastBeat.equals(frame)) {
        this.options.tallies.heartbeatsSkipped += 1;
        outbound.framesAfterBeat = lanes.framesToSocket;
      } else {
        this.beat(outbound, lanes, frame);
      }
    }
  }

  /** Writes a heartbeat on `outbound` and remembers it, with the frame count right after it. */
  private beat(outbound: Outbound, lanes: SendLanes, frame: Buffer): void {
    if (this.writeFrame(outbound, frame, 'priority')) {
      outbound.lastBeat = frame;
      this.options.tallies.heartbeatsSent += 1;
    }
    outbound.framesAfterBeat = lanes.framesToSocket;
  }

  private dial(outbound: Outbound): void {
    outbound.retryTimer = null;
    if (!this.running) return;
    const { id, host, port } = outbound.address;
    const credentials = this.options.tls;
    const socket =
      credentials === null
        ? net.connect({ host, port })
        : tls.connect({
            host,
            port,
            ca: credentials.ca,
            cert: credentials.cert,
            key: credentials.key,
            checkServerIdentity: (_host, certificate) => this.checkListenerCertificate(id, certificate),
          });
    outbound.socket = socket;
    outbound.stage = 'connecting';
    socket.setNoDelay(true);
    outbound.handshakeTimer = setTimeout(() => {
      outbound.handshakeTimer = null;
      if (outbound.socket !== socket) return;
      if (outbound.stage === 'handshaking') this.options.refuse({ kind: 'timeout' }, { peer: id });
      socket.destroy();
    }, this.options.handshakeTimeoutMs);
    socket.on('connect', () => {
      if (outbound.socket === socket) outbound.stage = credentials === null ? 'handshaking' : 'securing';
      socket.setKeepAlive(true, this.options.handshakeTimeoutMs);
    });
    socket.on('secureConnect', () => {
      if (outbound.socket === socket) outbound.stage = 'handshaking';
    });
    outbound.decoder = new FrameDecoder({ frameBytesMax: HANDSHAKE_FRAME_BYTES_MAX });
    outbound.nonce = randomBytes(HANDSHAKE_NONCE_BYTES);
    outbound.expectedWelcomeProof = null;
    socket.on('data', (chunk: Buffer) => this.onOutboundData(outbound, socket, chunk));
    socket.on('error', (error: NodeJS.ErrnoException) => {
      if (outbound.socket === socket && outbound.stage === 'securing' && !isIdentityError(error)) {
        this.options.refuse({ kind: 'tls_failed', detail: error.code ?? error.message }, { peer: id });
      }
      this.options.log.debug?.('peer outbound error', { peer: id, error: error.message });
    });
    socket.on('close', () => this.onOutboundClosed(outbound, socket));
  }

  /** With TLS: the listener's certificate must name the peer this node meant to reach. */
  private checkListenerCertificate(peer: PeerId, certificate: tls.PeerCertificate): Error | undefined {
    const names = certificateNames(certificate);
    if (names.includes(peer)) return undefined;
    this.options.refuse({ kind: 'certificate_mismatch', peer, names }, { peer });
    return Object.assign(new Error(`peer certificate does not name ${peer}`), { code: IDENTITY_ERROR_CODE });
  }

  /** The listener's handshake frames; once authenticated it sends nothing, and anything is ignored. */
  private onOutboundData(outbound: Outbound, socket: net.Socket, chunk: Buffer): void {
    if (outbound.socket !== socket || outbound.stage !== 'handshaking' || outbound.decoder === null) return;
    const { messages, error } = outbound.decoder.push(chunk);
    for (const message of messages) {
      if (socket.destroyed || outbound.stage !== 'handshaking') return;
      if (outbound.expectedWelcomeProof === null) this.onChallenge(outbound, socket, message);
      else this.onWelcome(outbound, socket, message, outbound.expectedWelcomeProof);
    }
    if (error !== null && !socket.destroyed && outbound.stage === 'handshaking') {
      this.options.refuse({ kind: 'frame_error', detail: describeFrameError(error) }, { peer: outbound.address.id });
      socket.destroy();
    }
  }

  private onChallenge(outbound: Outbound, socket: net.Socket, message: unknown): void {
    const outcome = answerChallenge(message, {
      self: this.options.self,
      peer: outbound.address.id,
      clusterId: this.options.clusterId,
      settings: this.options.settings,
      secret: this.options.secret,
      nonce: outbound.nonce,
    });
    if (outcome.kind === 'refused') {
      this.options.refuse(outcome.refusal, { peer: outbound.address.id });
      socket.destroy();
      return;
    }
    outbound.expectedWelcomeProof = outcome.expectedWelcomeProof;
    socket.write(encodeFrame(outcome.hello));
  }

  private onWelcome(outbound: Outbound, socket: net.Socket, message: unknown, expectedProof: Buffer): void {
    const peer = outbound.address.id;
    const outcome = checkWelcome(message, { self: this.options.self, peer, expectedProof });
    if (outcome.kind === 'refused') {
      this.options.refuse(outcome.refusal, { peer });
      socket.destroy();
      return;
    }
    if (outbound.handshakeTimer !== null) clearTimeout(outbound.handshakeTimer);
    outbound.handshakeTimer = null;
    outbound.stage = 'authenticated';
    outbound.decoder = null;
    outbound.connectedAtMs = this.options.nowMs();
    outbound.dialFailed = false;
    const queueBytesMax = this.options.sendQueueBytesMax;
    outbound.lanes = new SendLanes(socket, { socketBytesMax: BULK_SOCKET_BYTES_MAX_DEFAULT, queueBytesMax });
    this.options.tallies.handshakesAccepted += 1;
    this.beat(outbound, outbound.lanes, this.options.heartbeatFrame()); // the peer learns our info at once
    this.options.log.debug?.('peer connected out', { peer });
  }

  private onOutboundClosed(outbound: Outbound, socket: net.Socket): void {
    if (outbound.socket !== socket) return;
    // Only an authenticated connection that lasted resets the back-off: a proxy that accepts and
    // then closes at once (its upstream is down), or a peer that drops us as soon as we are in,
    // must not make us redial in a tight loop.
    const wasAuthenticated = outbound.stage === 'authenticated';
    const livedMs = outbound.connectedAtMs === null ? 0 : this.options.nowMs() - outbound.connectedAtMs;
    const lasted = livedMs >= LASTED_MS;
    if (lasted) outbound.attempt = 0;
    if (outbound.handshakeTimer !== null) clearTimeout(outbound.handshakeTimer);
    outbound.handshakeTimer = null;
    outbound.socket = null;
    outbound.stage = 'idle';
    outbound.decoder = null;
    outbound.expectedWelcomeProof = null;
    outbound.connectedAtMs = null;
    outbound.lanes?.close();
    outbound.lanes = null;
    outbound.lastBeat = null;
    if (!this.running) return;
    if (!wasAuthenticated) {
      outbound.dialFailed = true;
      this.options.onDialFailed?.(outbound.address.id);
    }
    // The redial tells a reset connection (it comes back) from a peer whose process exited (it is
    // refused at once): see PeerView.cut.
    const delayMs = reconnectDelayMs(outbound.attempt);
    outbound.attempt += 1;
    outbound.retryTimer = setTimeout(() => this.dial(outbound), delayMs);
  }

  /** Writes one frame in a lane (see send-lanes.ts); false when dropped. */
  private writeFrame(outbound: Outbound, frame: Buffer, lane: SendLane): boolean {
    if (outbound.lanes === null) return false;
    const written = outbound.lanes.write(frame, lane);
    if (!written) this.options.log.debug?.('peer send queue full; message dropped', { peer: outbound.address.id, frameBytes: frame.length });
    return written;
  }
}

/** 50 ms doubling to 1 s, each delay jittered into [½, 1] of itself so peers do not dial in step. */
function reconnectDelayMs(attempt: number): number {
  const ceilingMs = Math.min(RECONNECT_DELAY_MAX_MS, RECONNECT_DELAY_MIN_MS * 2 ** Math.min(attempt, 16));
  return ceilingMs / 2 + Math.random() * (ceilingMs / 2);
}

/** Marks the error our own certificate check returned (already counted as certificate_mismatch). */
const IDENTITY_ERROR_CODE = 'ERR_MCKV_PEER_IDENTITY';

function isIdentityError(error: NodeJS.ErrnoException): boolean {
  return error.code === IDENTITY_ERROR_CODE;
}
