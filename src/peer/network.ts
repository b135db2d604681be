/**
 * The peer network: framed messages between controllers over TCP (or mutual TLS), with an
 * authenticating handshake, reconnects, heartbeats and the failure detector. It carries messages;
 * it makes no consistency decision.
 *
 * Every node DIALS every peer and SENDS only on that outbound connection; it RECEIVES only on the
 * connections its peers dialled into it. First both ends run handshake.ts (challenge, hello,
 * welcome): each proves it holds the cluster secret, and the dialer sends no message before the
 * listener has. Until then frames are capped at 1 KiB and at most `unauthenticatedInboundMax`
 * inbound connections may wait. With TLS, each certificate must name the node id its end claims.
 * Sends are fire-and-forget (false when not connected or over `sendQueueBytesMax`); heartbeats and
 * the kinds named `priorityKinds` overtake bulk frames waiting to enter the socket (send-lanes.ts).
 * Liveness is judged only from what arrives.
 *
 * Invariants: one outbound socket per peer, and one authenticated inbound one (a newer one
 * replaces the older). Nothing a peer sends throws out of a socket handler: a refused handshake or
 * a corrupt frame drops that connection alone, with a log line and a counter; a heartbeat's memory
 * report that fails validation is dropped alone, with a log line and a counter. Heartbeats are
 * never emitted as 'message'. After `stop()` no timer, socket or listener remains.
 */

import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import tls from 'node:tls';
import type { PeerId } from '../consistency/types.ts';
import type { PeerTls } from './credentials.ts';
import { PauseWatch } from '../runtime/pause-watch.ts';
import { FailureDetector } from './failure-detector.ts';
import { BULK_SOCKET_BYTES_MAX_DEFAULT, SendLanes, type SendLane } from './send-lanes.ts';
import { FRAME_BYTES_MAX_DEFAULT, FrameDecoder, describeFrameError, encodeFrame } from './frame.ts';
import { readMemoryReport, sameMemoryReport, type MemoryReportWire } from './memory-report.ts';
import type { PeerMemoryReport } from '../store/memory-guard.ts';
import {
  CLUSTER_SECRET_BYTES_MIN,
  HANDSHAKE_FRAME_BYTES_MAX,
  HANDSHAKE_NONCE_BYTES,
  HANDSHAKE_REFUSAL_KINDS,
  answerChallenge,
  certificateNames,
  challengeMessage,
  checkHello,
  checkWelcome,
  describeHandshakeRefusal,
  type HandshakeRefusal,
  type HandshakeRefusalKind,
} from './handshake.ts';

/** Where a peer listens for its peers. */
export interface PeerAddress {
  id: PeerId;
  host: string;
  port: number;
}

/** The narrow logger the network writes to. */
export interface PeerLog {
  info(message: string, meta?: Record<string, unknown>): void;
  warn(message: string, meta?: Record<string, unknown>): void;
  debug?(message: string, meta?: Record<string, unknown>): void;
}

export interface PeerNetworkOptions {
  self: PeerId;
  /** Where this node accepts its peers' connections. Port 0 picks a free port (see `address()`). */
  listen: { host: string; port: number };
  /** The other nodes (not this one). */
  peers: PeerAddress[];
  /** The shared cluster secret (at least 16 bytes) every peer proves it holds. */
  secret: Buffer;
  /** Names the cluster; a peer naming another cluster is refused at the handshake. */
  clusterId: string;
  /** Mutual TLS on the peer port (PEM contents); null or absent: plain TCP. */
  tls?: PeerTls | null;
  heartbeatIntervalMs: number;
  failureTimeoutMs: number;
  /** Largest frame sent or accepted once authenticated, header included. Default 64 MiB. */
  frameBytesMax?: number;
  /** Bytes buffered on one outbound connection beyond which `send` drops. Default 16 MiB. */
  sendQueueBytesMax?: number;
  /**
   * Message kinds (their `kind` field) sent in the priority lane, ahead of bulk frames waiting to
   * enter the socket: heartbeats always; the modes name their votes and acknowledgements.
   */
  priorityKinds?: ReadonlySet<string>;
  /** Inbound connections not yet authenticated beyond which a new one is closed at once. Default 16. */
  unauthenticatedInboundMax?: number;
  /** Extra status carried by every heartbeat (shown by `show` on the other nodes). */
  heartbeatInfo?: () => unknown;
  /** This node's memory report, carried by every heartbeat in a field of its own (./memory-report.ts). */
  memoryReport?: () => MemoryReportWire | null;
  log: PeerLog;
}

/** Events, typed: `network.on('message', (from, message) => …)`. */
export interface PeerNetworkEvents {
  message: [from: PeerId, message: unknown];
  'peer-up': [peer: PeerId];
  'peer-down': [peer: PeerId];
  /** A peer's heartbeat brought a memory report other than its last one (null: it says nothing). */
  'memory-report': [peer: PeerId, report: PeerMemoryReport | null];
}

/** One peer as this node sees it, for `show`. `info` is its latest heartbeat's info. */
export interface PeerView {
  peer: PeerId;
  up: boolean;
  lastHeardAgoMs: number | null;
  info: unknown;
}

/** What the network refused or replaced since it was made, for `stats`. */
export interface PeerNetworkCounters {
  /** Handshakes completed, inbound and outbound. */
  handshakesAccepted: number;
  /** Handshakes refused (either direction), by reason. */
  handshakesRefused: Record<HandshakeRefusalKind, number>;
  /** Corrupt or oversized frames from authenticated peers (each dropped its connection). */
  framesRefused: number;
  /** Authenticated inbound connections closed because the same peer authenticated a newer one. */
  inboundReplaced: number;
  /** Heartbeats whose memory report failed validation (each counted as the peer reporting nothing). */
  memoryReportsRefused: number;
}

/** An operating error of the network (e.g. the peer port is taken). */
export class PeerNetworkError extends Error {
  override readonly name = 'PeerNetworkError';
  readonly code: 'address_in_use' | 'listen_failed';

  constructor(message: string, options: { code: PeerNetworkError['code']; cause?: unknown }) {
    super(message, { cause: options.cause });
    this.code = options.code;
  }
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
  retryTimer: NodeJS.Timeout | null;
  /** Once authenticated: the priority and bulk lanes of this connection. */
  lanes: SendLanes | null;
}

interface Inbound {
  socket: net.Socket;
  decoder: FrameDecoder;
  /** Null until the peer's hello proves who it is. */
  peer: PeerId | null;
  /** The nonce of this connection's challenge. */
  nonce: Buffer;
  /** With TLS, the names on the peer's verified certificate. */
  certificateNames: string[] | null;
  handshakeTimer: NodeJS.Timeout | null;
}

const SEND_QUEUE_BYTES_MAX_DEFAULT = 16 * 1024 * 1024;
const UNAUTHENTICATED_INBOUND_MAX_DEFAULT = 16;
const RECONNECT_DELAY_MIN_MS = 50;
const RECONNECT_DELAY_MAX_MS = 1000;
/** Connects and handshakes get at least this long, even with a tiny failure timeout. */
const HANDSHAKE_TIMEOUT_MIN_MS = 1000;

/** A monotonic clock: wall-clock steps must not make peers look up or down. */
const monotonicNowMs = (): number => performance.now();

export class PeerNetwork extends EventEmitter<PeerNetworkEvents> {
  private readonly options: PeerNetworkOptions;
  private readonly frameBytesMax: number;
  private readonly sendQueueBytesMax: number;
  private readonly priorityKinds: ReadonlySet<string>;
  private readonly unauthenticatedInboundMax: number;
  private readonly handshakeTimeoutMs: number;
  private readonly peerIds: ReadonlySet<PeerId>;
  private readonly outbound = new Map<PeerId, Outbound>();
  private readonly inbound = new Set<Inbound>();
  /** The one authenticated inbound connection of each peer. */
  private readonly inboundOf = new Map<PeerId, Inbound>();
  /** Every accepted TCP socket still open (under TLS, the raw socket beneath). */
  private readonly accepted = new Set<net.Socket>();
  private readonly heartbeatInfo = new Map<PeerId, unknown>();
  /** Each peer's latest memory report, as read from its heartbeats. */
  private readonly memoryReports = new Map<PeerId, PeerMemoryReport | null>();
  private readonly reportedUp = new Set<PeerId>();
  private readonly tallies: PeerNetworkCounters;
  private detector: FailureDetector;
  private pauses: PauseWatch;
  /** Pauses the heartbeat timer noticed that `excuseOwnPause` has not handed out yet. */
  private pauseUnclaimedMs = 0;
  private server: net.Server | null = null;
  /** With TLS: runs the TLS handshake on sockets `server` accepted (it never listens itself). */
  private tlsServer: tls.Server | null = null;
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
    this.sendQueueBytesMax = options.sendQueueBytesMax ?? SEND_QUEUE_BYTES_MAX_DEFAULT;
    this.priorityKinds = options.priorityKinds ?? new Set();
    this.unauthenticatedInboundMax = options.unauthenticatedInboundMax ?? UNAUTHENTICATED_INBOUND_MAX_DEFAULT;
    this.handshakeTimeoutMs = Math.max(options.failureTimeoutMs, HANDSHAKE_TIMEOUT_MIN_MS);
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
    };
  }

  /** Listens for peers, then dials every peer and starts heartbeats. Rejects if the port is taken. */
  async start(): Promise<void> {
    if (this.running) throw new Error('PeerNetwork: already started');
    this.detector = this.newDetector();
    this.reportedUp.clear();
    this.heartbeatInfo.clear();
    this.memoryReports.clear();
    this.tlsServer = this.options.tls ? this.newTlsServer(this.options.tls) : null;
    this.server = await this.listen();
    this.running = true;
    for (const address of this.options.peers) {
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
        retryTimer: null,
        lanes: null,
      };
      this.outbound.set(address.id, outbound);
      this.dial(outbound);
    }
    this.pauses = new PauseWatch({ intervalMs: this.options.heartbeatIntervalMs, nowMs: monotonicNowMs() });
    this.heartbeatTimer = setInterval(() => this.onHeartbeatTimer(), this.options.heartbeatIntervalMs);
  }

  /** Closes every connection and the listener; no reconnect follows. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    if (this.heartbeatTimer !== null) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = null;
    for (const outbound of this.outbound.values()) {
      if (outbound.retryTimer !== null) clearTimeout(outbound.retryTimer);
      if (outbound.handshakeTimer !== null) clearTimeout(outbound.handshakeTimer);
      outbound.socket?.destroy();
    }
    this.outbound.clear();
    for (const connection of this.inbound) this.dropInbound(connection);
    for (const socket of this.accepted) socket.destroy();
    this.accepted.clear();
    this.tlsServer = null;
    const server = this.server;
    this.server = null;
    if (server !== null) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** The address actually listened on (useful with port 0). */
  address(): { host: string; port: number } {
    const bound = this.server?.address();
    if (bound === null || bound === undefined || typeof bound === 'string') {
      throw new Error('PeerNetwork: not listening');
    }
    return { host: bound.address, port: bound.port };
  }

  /**
   * Sends `message` to `to` on the outbound connection. Returns false — the message is dropped —
   * when not connected and authenticated, when the connection's buffer is over sendQueueBytesMax,
   * or when the frame is over frameBytesMax. Messages sent in one tick go out in one socket write.
   */
  send(to: PeerId, message: unknown): boolean {
    const outbound = this.outbound.get(to);
    if (outbound === undefined) {
      if (!this.peerIds.has(to)) throw new Error(`PeerNetwork: send to unknown peer ${to}`);
      return false; // not started
    }
    if (outbound.stage !== 'authenticated') return false;
    const frame = encodeFrame(message);
    if (frame.length > this.frameBytesMax) {
      this.options.log.warn('peer message over frameBytesMax dropped', {
        peer: to,
        frameBytes: frame.length,
        frameBytesMax: this.frameBytesMax,
      });
      return false;
    }
    return this.writeFrame(outbound, frame, this.priorityKinds.has(kindOf(message)) ? 'priority' : 'bulk');
  }

  /** Whether an authenticated outbound connection to `peer` is established (sends can succeed). */
  isConnected(peer: PeerId): boolean {
    return this.outbound.get(peer)?.stage === 'authenticated';
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
    }));
  }

  /** Handshakes accepted and refused (by reason), frames refused, inbound connections replaced. */
  counters(): PeerNetworkCounters {
    return { ...this.tallies, handshakesRefused: { ...this.tallies.handshakesRefused } };
  }

  // ------------------------------------------------------------------------------------------
  // Listening and inbound connections

  private newDetector(): FailureDetector {
    return new FailureDetector({
      peers: this.options.peers.map((peer) => peer.id),
      failureTimeoutMs: this.options.failureTimeoutMs,
      nowMs: monotonicNowMs(),
    });
  }

  private newTlsServer(credentials: PeerTls): tls.Server {
    const server = tls.createServer({
      ca: credentials.ca,
      cert: credentials.cert,
      key: credentials.key,
      requestCert: true,
      rejectUnauthorized: true,
      handshakeTimeout: this.handshakeTimeoutMs,
    });
    server.on('secureConnection', (socket: tls.TLSSocket) => {
      this.onInbound(socket, certificateNames(socket.getPeerCertificate()));
    });
    server.on('tlsClientError', (error: NodeJS.ErrnoException, socket: tls.TLSSocket) => {
      this.refuse({ kind: 'tls_failed', detail: error.code ?? error.message }, { remote: remoteOf(socket) });
      socket.destroy();
    });
    return server;
  }

  private listen(): Promise<net.Server> {
    const { host, port } = this.options.listen;
    const server = net.createServer((socket) => this.onAccept(socket));
    return new Promise((resolve, reject) => {
      const onError = (error: NodeJS.ErrnoException): void => {
        server.close();
        const inUse = error.code === 'EADDRINUSE';
        const reason = inUse ? 'is already in use' : `cannot be listened on (${error.code ?? error.message})`;
        reject(
          new PeerNetworkError(`peer port ${host}:${port} of ${this.options.self} ${reason}`, {
            code: inUse ? 'address_in_use' : 'listen_failed',
            cause: error,
          }),
        );
      };
      server.once('error', onError);
      server.listen(port, host, () => {
        server.off('error', onError);
        server.on('error', (error) => this.options.log.warn('peer listener error', { error: error.message }));
        resolve(server);
      });
    });
  }

  /** A TCP connection arrived: bounded before anything is read from it. */
  private onAccept(socket: net.Socket): void {
    if (!this.running) {
      socket.destroy();
      return;
    }
    const unauthenticated = this.accepted.size - this.inboundOf.size;
    if (unauthenticated >= this.unauthenticatedInboundMax) {
      this.refuse({ kind: 'too_many_pending', pendingMax: this.unauthenticatedInboundMax }, { remote: remoteOf(socket) });
      socket.destroy();
      return;
    }
    this.accepted.add(socket);
    socket.once('close', () => this.accepted.delete(socket));
    socket.on('error', (error) => this.options.log.debug?.('peer inbound error', { remote: remoteOf(socket), error: error.message }));
    socket.setNoDelay(true);
    if (this.tlsServer !== null) this.tlsServer.emit('connection', socket);
    else this.onInbound(socket, null);
  }

  /** The connection is ready (TLS verified, if any): challenge the peer. */
  private onInbound(socket: net.Socket, names: string[] | null): void {
    if (!this.running) {
      socket.destroy();
      return;
    }
    const connection: Inbound = {
      socket,
      decoder: new FrameDecoder({ frameBytesMax: HANDSHAKE_FRAME_BYTES_MAX }),
      peer: null,
      nonce: randomBytes(HANDSHAKE_NONCE_BYTES),
      certificateNames: names,
      handshakeTimer: null,
    };
    connection.handshakeTimer = setTimeout(() => {
      this.refuse({ kind: 'timeout' }, { remote: remoteOf(socket) });
      this.dropInbound(connection);
    }, this.handshakeTimeoutMs);
    this.inbound.add(connection);
    socket.on('data', (chunk: Buffer) => this.onInboundData(connection, chunk));
    socket.on('error', (error) => this.options.log.debug?.('peer inbound error', { ...this.nameOf(connection), error: error.message }));
    socket.on('close', () => this.forgetInbound(connection));
    const { self, clusterId } = this.options;
    socket.write(encodeFrame(challengeMessage({ self, clusterId, nonce: connection.nonce })));
  }

  private onInboundData(connection: Inbound, chunk: Buffer): void {
    const { messages, error } = connection.decoder.push(chunk);
    for (const message of messages) {
      if (connection.socket.destroyed) return;
      if (connection.peer === null) this.onHello(connection, message);
      else this.onFrame(connection.peer, message);
    }
    if (error === null || connection.socket.destroyed) return;
    if (connection.peer === null) {
      this.refuse({ kind: 'frame_error', detail: describeFrameError(error) }, this.nameOf(connection));
    } else {
      this.tallies.framesRefused += 1;
      this.options.log.warn('corrupt peer frame; connection dropped', { peer: connection.peer, reason: describeFrameError(error) });
    }
    this.dropInbound(connection);
  }

  private onHello(connection: Inbound, message: unknown): void {
    const outcome = checkHello(message, {
      self: this.options.self,
      clusterId: this.options.clusterId,
      secret: this.options.secret,
      peers: this.peerIds,
      nonce: connection.nonce,
      certificateNames: connection.certificateNames,
    });
    if (outcome.kind === 'refused') {
      this.refuse(outcome.refusal, this.nameOf(connection));
      this.dropInbound(connection);
      return;
    }
    const peer = outcome.peer as PeerId;
    if (connection.handshakeTimer !== null) clearTimeout(connection.handshakeTimer);
    connection.handshakeTimer = null;
    connection.peer = peer;
    connection.decoder.setFrameBytesMax(this.frameBytesMax);
    const older = this.inboundOf.get(peer);
    this.inboundOf.set(peer, connection);
    if (older !== undefined) {
      // Safe now that the peer proved who it is: a restarted peer's new connection wins.
      this.tallies.inboundReplaced += 1;
      this.options.log.info('peer connected in again; its older connection closed', { peer, remote: remoteOf(connection.socket) });
      this.dropInbound(older);
    }
    this.tallies.handshakesAccepted += 1;
    connection.socket.write(encodeFrame(outcome.welcome));
    this.options.log.debug?.('peer connected in', { peer, remote: remoteOf(connection.socket) });
    this.onHeard(peer);
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

  private dropInbound(connection: Inbound): void {
    connection.socket.destroy();
    this.forgetInbound(connection);
  }

  private forgetInbound(connection: Inbound): void {
    if (connection.handshakeTimer !== null) clearTimeout(connection.handshakeTimer);
    connection.handshakeTimer = null;
    this.inbound.delete(connection);
    if (connection.peer !== null && this.inboundOf.get(connection.peer) === connection) this.inboundOf.delete(connection.peer);
  }

  private nameOf(connection: Inbound): Record<string, unknown> {
    return connection.peer === null ? { remote: remoteOf(connection.socket) } : { peer: connection.peer };
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
  // Outbound connections

  private dial(outbound: Outbound): void {
    outbound.retryTimer = null;
    if (!this.running) return;
    const { id, host, port } = outbound.address;
    const credentials = this.options.tls ?? null;
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
      if (outbound.stage === 'handshaking') this.refuse({ kind: 'timeout' }, { peer: id });
      socket.destroy();
    }, this.handshakeTimeoutMs);
    socket.on('connect', () => {
      if (outbound.socket === socket) outbound.stage = credentials === null ? 'handshaking' : 'securing';
      socket.setKeepAlive(true, this.handshakeTimeoutMs);
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
        this.refuse({ kind: 'tls_failed', detail: error.code ?? error.message }, { peer: id });
      }
      this.options.log.debug?.('peer outbound error', { peer: id, error: error.message });
    });
    socket.on('close', () => this.onOutboundClosed(outbound, socket));
  }

  /** With TLS: the listener's certificate must name the peer this node meant to reach. */
  private checkListenerCertificate(peer: PeerId, certificate: tls.PeerCertificate): Error | undefined {
    const names = certificateNames(certificate);
    if (names.includes(peer)) return undefined;
    this.refuse({ kind: 'certificate_mismatch', peer, names }, { peer });
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
      this.refuse({ kind: 'frame_error', detail: describeFrameError(error) }, { peer: outbound.address.id });
      socket.destroy();
    }
  }

  private onChallenge(outbound: Outbound, socket: net.Socket, message: unknown): void {
    const outcome = answerChallenge(message, {
      self: this.options.self,
      peer: outbound.address.id,
      clusterId: this.options.clusterId,
      secret: this.options.secret,
      nonce: outbound.nonce,
    });
    if (outcome.kind === 'refused') {
      this.refuse(outcome.refusal, { peer: outbound.address.id });
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
      this.refuse(outcome.refusal, { peer });
      socket.destroy();
      return;
    }
    if (outbound.handshakeTimer !== null) clearTimeout(outbound.handshakeTimer);
    outbound.handshakeTimer = null;
    outbound.stage = 'authenticated';
    outbound.decoder = null;
    outbound.connectedAtMs = monotonicNowMs();
    outbound.lanes = new SendLanes(socket, { socketBytesMax: BULK_SOCKET_BYTES_MAX_DEFAULT, queueBytesMax: this.sendQueueBytesMax });
    this.tallies.handshakesAccepted += 1;
    this.writeFrame(outbound, this.heartbeatFrame(), 'priority'); // the peer learns our info at once
    this.options.log.debug?.('peer connected out', { peer });
  }

  private onOutboundClosed(outbound: Outbound, socket: net.Socket): void {
    if (outbound.socket !== socket) return;
    // Only a connection that lasted resets the back-off: a proxy that accepts and then closes at
    // once (its upstream is down) must not make us redial in a tight loop.
    const livedMs = outbound.connectedAtMs === null ? 0 : monotonicNowMs() - outbound.connectedAtMs;
    if (livedMs >= RECONNECT_DELAY_MAX_MS) outbound.attempt = 0;
    if (outbound.handshakeTimer !== null) clearTimeout(outbound.handshakeTimer);
    outbound.handshakeTimer = null;
    outbound.socket = null;
    outbound.stage = 'idle';
    outbound.decoder = null;
    outbound.expectedWelcomeProof = null;
    outbound.connectedAtMs = null;
    outbound.lanes?.close();
    outbound.lanes = null;
    if (!this.running) return;
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

  // ------------------------------------------------------------------------------------------
  // Heartbeats and failure detection

  private onHeartbeatTimer(): void {
    const pausedMs = this.observePause();
    this.pauseUnclaimedMs += pausedMs;
    const frame = this.heartbeatFrame();
    for (const outbound of this.outbound.values()) {
      if (outbound.stage === 'authenticated') this.writeFrame(outbound, frame, 'priority');
    }
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

/** A message's `kind` field, or '' when it has none. */
function kindOf(message: unknown): string {
  const kind = typeof message === 'object' && message !== null ? (message as { kind?: unknown }).kind : undefined;
  return typeof kind === 'string' ? kind : '';
}

function isHeartbeat(message: unknown): message is { kind: 'heartbeat'; info?: unknown; memory?: unknown } {
  return typeof message === 'object' && message !== null && (message as { kind?: unknown }).kind === 'heartbeat';
}

function remoteOf(socket: net.Socket): string {
  return `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
}
