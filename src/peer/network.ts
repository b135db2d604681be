/**
 * The peer network: framed messages between controllers over plain TCP, with reconnects,
 * heartbeats and the failure detector. It carries messages; it makes no consistency decision.
 *
 * Connection model: every node DIALS every peer and SENDS only on that outbound connection; it
 * RECEIVES only on the connections its peers dialled into it. The first frame on a connection is
 * a hello naming the sender (and the node it meant to reach); a hello from an unknown id, or
 * meant for another node, is refused. So each direction of each pair has its own TCP connection,
 * and a TCP proxy placed on one direction (partition tests) cuts exactly that direction.
 *
 * Intuition: sends are fire-and-forget. `send` returns false when there is no connection or its
 * buffer is over `sendQueueBytesMax`; the message is dropped, never queued without bound, and the
 * consistency protocols retry. Liveness is judged only from what arrives: every frame, heartbeat
 * or not, feeds the FailureDetector; a timer every heartbeat interval sends heartbeats and turns
 * the detector's transitions into 'peer-up' / 'peer-down' events.
 *
 * Invariants:
 * - At most one outbound socket per peer. Inbound sockets are independent: a bad one is dropped
 *   alone, and a second hello naming a peer never cuts off its existing connection.
 * - A connection that sends a corrupt, oversized or unexpected frame is destroyed; no other
 *   connection is affected and nothing is thrown out of a socket handler.
 * - Heartbeats are never emitted as 'message'; reserved frame kinds are 'hello' and 'heartbeat'.
 * - After `stop()` no timer, socket or listener of this network remains.
 */

import { EventEmitter } from 'node:events';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import type { PeerId } from '../consistency/types.ts';
import { FailureDetector } from './failure-detector.ts';
import { FRAME_BYTES_MAX_DEFAULT, FRAME_VERSION, FrameDecoder, describeFrameError, encodeFrame } from './frame.ts';

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
  heartbeatIntervalMs: number;
  failureTimeoutMs: number;
  /** Largest frame sent or accepted, header included. Default 64 MiB. */
  frameBytesMax?: number;
  /** Bytes buffered on one outbound connection beyond which `send` drops. Default 16 MiB. */
  sendQueueBytesMax?: number;
  /** Extra status carried by every heartbeat (shown by `show` on the other nodes). */
  heartbeatInfo?: () => unknown;
  log: PeerLog;
}

/** Events, typed: `network.on('message', (from, message) => …)`. */
export interface PeerNetworkEvents {
  message: [from: PeerId, message: unknown];
  'peer-up': [peer: PeerId];
  'peer-down': [peer: PeerId];
}

/** One peer as this node sees it, for `show`. `info` is its latest heartbeat's info. */
export interface PeerView {
  peer: PeerId;
  up: boolean;
  lastHeardAgoMs: number | null;
  info: unknown;
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

/** The first frame on every connection. */
interface Hello {
  kind: 'hello';
  from: string;
  to: string;
  version: number;
}

interface Outbound {
  address: PeerAddress;
  socket: net.Socket | null;
  connected: boolean;
  /** Dials since the last connection that lasted, for the back-off. */
  attempt: number;
  /** When the current connection was established (monotonic), or null. */
  connectedAtMs: number | null;
  retryTimer: NodeJS.Timeout | null;
  /** The socket is corked until the end of this tick (write coalescing). */
  corked: boolean;
}

interface Inbound {
  socket: net.Socket;
  decoder: FrameDecoder;
  /** Null until a valid hello arrives. */
  peer: PeerId | null;
  helloTimer: NodeJS.Timeout | null;
}

const SEND_QUEUE_BYTES_MAX_DEFAULT = 16 * 1024 * 1024;
const RECONNECT_DELAY_MIN_MS = 50;
const RECONNECT_DELAY_MAX_MS = 1000;
/** Connects and hellos get at least this long, even with a tiny failure timeout. */
const HANDSHAKE_TIMEOUT_MIN_MS = 1000;

/** A monotonic clock: wall-clock steps must not make peers look up or down. */
const monotonicNowMs = (): number => performance.now();

export class PeerNetwork extends EventEmitter<PeerNetworkEvents> {
  private readonly options: PeerNetworkOptions;
  private readonly frameBytesMax: number;
  private readonly sendQueueBytesMax: number;
  private readonly handshakeTimeoutMs: number;
  private readonly peerIds: ReadonlySet<PeerId>;
  private readonly outbound = new Map<PeerId, Outbound>();
  private readonly inbound = new Set<Inbound>();
  private readonly heartbeatInfo = new Map<PeerId, unknown>();
  private readonly reportedUp = new Set<PeerId>();
  private detector: FailureDetector;
  private server: net.Server | null = null;
  private heartbeatTimer: NodeJS.Timeout | null = null;
  private running = false;

  constructor(options: PeerNetworkOptions) {
    super();
    const ids = options.peers.map((peer) => peer.id);
    if (ids.includes(options.self)) throw new Error(`PeerNetwork: peers must not include self (${options.self})`);
    this.options = options;
    this.frameBytesMax = options.frameBytesMax ?? FRAME_BYTES_MAX_DEFAULT;
    this.sendQueueBytesMax = options.sendQueueBytesMax ?? SEND_QUEUE_BYTES_MAX_DEFAULT;
    this.handshakeTimeoutMs = Math.max(options.failureTimeoutMs, HANDSHAKE_TIMEOUT_MIN_MS);
    this.peerIds = new Set(ids);
    this.detector = this.newDetector();
  }

  /** Listens for peers, then dials every peer and starts heartbeats. Rejects if the port is taken. */
  async start(): Promise<void> {
    if (this.running) throw new Error('PeerNetwork: already started');
    this.detector = this.newDetector();
    this.reportedUp.clear();
    this.heartbeatInfo.clear();
    this.server = await this.listen();
    this.running = true;
    for (const address of this.options.peers) {
      const outbound: Outbound = {
        address,
        socket: null,
        connected: false,
        attempt: 0,
        connectedAtMs: null,
        retryTimer: null,
        corked: false,
      };
      this.outbound.set(address.id, outbound);
      this.dial(outbound);
    }
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
      outbound.socket?.destroy();
    }
    this.outbound.clear();
    for (const connection of this.inbound) this.dropInbound(connection);
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
   * when not connected, when the connection's buffer is over sendQueueBytesMax, or when the frame
   * is over frameBytesMax. Messages sent in one tick go out in one socket write.
   */
  send(to: PeerId, message: unknown): boolean {
    const outbound = this.outbound.get(to);
    if (outbound === undefined) {
      if (!this.peerIds.has(to)) throw new Error(`PeerNetwork: send to unknown peer ${to}`);
      return false; // not started
    }
    if (!outbound.connected) return false;
    const frame = encodeFrame(message);
    if (frame.length > this.frameBytesMax) {
      this.options.log.warn('peer message over frameBytesMax dropped', {
        peer: to,
        frameBytes: frame.length,
        frameBytesMax: this.frameBytesMax,
      });
      return false;
    }
    return this.writeFrame(outbound, frame);
  }

  /** Whether an outbound connection to `peer` is established (sends can succeed). */
  isConnected(peer: PeerId): boolean {
    return this.outbound.get(peer)?.connected ?? false;
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

  // ------------------------------------------------------------------------------------------
  // Listening and inbound connections

  private newDetector(): FailureDetector {
    return new FailureDetector({
      peers: this.options.peers.map((peer) => peer.id),
      failureTimeoutMs: this.options.failureTimeoutMs,
      nowMs: monotonicNowMs(),
    });
  }

  private listen(): Promise<net.Server> {
    const { host, port } = this.options.listen;
    const server = net.createServer((socket) => this.onInbound(socket));
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

  private onInbound(socket: net.Socket): void {
    if (!this.running) {
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    const connection: Inbound = {
      socket,
      decoder: new FrameDecoder({ frameBytesMax: this.frameBytesMax }),
      peer: null,
      helloTimer: null,
    };
    connection.helloTimer = setTimeout(() => {
      this.options.log.warn('peer connection sent no hello in time; dropped', { remote: remoteOf(socket) });
      this.dropInbound(connection);
    }, this.handshakeTimeoutMs);
    this.inbound.add(connection);
    socket.on('data', (chunk: Buffer) => this.onInboundData(connection, chunk));
    socket.on('error', (error) => this.options.log.debug?.('peer inbound error', { ...this.nameOf(connection), error: error.message }));
    socket.on('close', () => this.forgetInbound(connection));
  }

  private onInboundData(connection: Inbound, chunk: Buffer): void {
    const { messages, error } = connection.decoder.push(chunk);
    for (const message of messages) {
      if (connection.socket.destroyed) return;
      if (connection.peer === null) this.onHello(connection, message);
      else this.onFrame(connection.peer, message);
    }
    if (error !== null && !connection.socket.destroyed) {
      this.options.log.warn('corrupt peer frame; connection dropped', { ...this.nameOf(connection), reason: describeFrameError(error) });
      this.dropInbound(connection);
    }
  }

  private onHello(connection: Inbound, message: unknown): void {
    const refusal = this.helloRefusal(message);
    if (refusal !== null) {
      this.options.log.warn(`peer hello refused: ${refusal}; connection dropped`, { remote: remoteOf(connection.socket) });
      this.dropInbound(connection);
      return;
    }
    const peer = (message as Hello).from as PeerId;
    if (connection.helloTimer !== null) clearTimeout(connection.helloTimer);
    connection.helloTimer = null;
    // An older connection from the same peer is left alone: it closes when its process is gone,
    // and replacing it would let anyone who sends a hello cut a real peer off.
    connection.peer = peer;
    this.options.log.debug?.('peer connected in', { peer, remote: remoteOf(connection.socket) });
    this.onHeard(peer);
  }

  /** Why a first frame is not an acceptable hello, or null if it is. */
  private helloRefusal(message: unknown): string | null {
    if (!isHello(message)) return 'first frame is not a hello';
    if (message.version !== FRAME_VERSION) return `version ${message.version}, expected ${FRAME_VERSION}`;
    if (!this.peerIds.has(message.from as PeerId)) return `unknown peer id ${JSON.stringify(message.from)}`;
    if (message.to !== this.options.self) return `meant for ${message.to}, this is ${this.options.self}`;
    return null;
  }

  private onFrame(peer: PeerId, message: unknown): void {
    this.onHeard(peer);
    if (isHeartbeat(message)) {
      this.heartbeatInfo.set(peer, message.info ?? null);
      return;
    }
    if (isHello(message)) return; // harmless repeat
    this.emit('message', peer, message);
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
    if (connection.helloTimer !== null) clearTimeout(connection.helloTimer);
    connection.helloTimer = null;
    this.inbound.delete(connection);
  }

  private nameOf(connection: Inbound): Record<string, unknown> {
    return connection.peer === null ? { remote: remoteOf(connection.socket) } : { peer: connection.peer };
  }

  // ------------------------------------------------------------------------------------------
  // Outbound connections

  private dial(outbound: Outbound): void {
    outbound.retryTimer = null;
    if (!this.running) return;
    const { id, host, port } = outbound.address;
    const socket = net.connect({ host, port });
    outbound.socket = socket;
    socket.setNoDelay(true);
    socket.setTimeout(this.handshakeTimeoutMs, () => socket.destroy(new Error('connect timed out')));
    socket.on('connect', () => {
      socket.setTimeout(0);
      socket.setKeepAlive(true, this.handshakeTimeoutMs);
      outbound.connected = true;
      outbound.connectedAtMs = monotonicNowMs();
      const hello: Hello = { kind: 'hello', from: this.options.self, to: id, version: FRAME_VERSION };
      socket.write(encodeFrame(hello));
      this.writeFrame(outbound, this.heartbeatFrame()); // the peer learns our info at once
      this.options.log.debug?.('peer connected out', { peer: id });
    });
    socket.on('data', () => undefined); // peers never send on this connection; discard
    socket.on('error', (error) => this.options.log.debug?.('peer outbound error', { peer: id, error: error.message }));
    socket.on('close', () => this.onOutboundClosed(outbound, socket));
  }

  private onOutboundClosed(outbound: Outbound, socket: net.Socket): void {
    if (outbound.socket !== socket) return;
    // Only a connection that lasted resets the back-off: a proxy that accepts and then closes at
    // once (its upstream is down) must not make us redial in a tight loop.
    const livedMs = outbound.connectedAtMs === null ? 0 : monotonicNowMs() - outbound.connectedAtMs;
    if (livedMs >= RECONNECT_DELAY_MAX_MS) outbound.attempt = 0;
    outbound.socket = null;
    outbound.connected = false;
    outbound.connectedAtMs = null;
    outbound.corked = false;
    if (!this.running) return;
    const delayMs = reconnectDelayMs(outbound.attempt);
    outbound.attempt += 1;
    outbound.retryTimer = setTimeout(() => this.dial(outbound), delayMs);
  }

  /** Writes one frame, coalescing the writes of one tick (cork now, uncork on the next tick). */
  private writeFrame(outbound: Outbound, frame: Buffer): boolean {
    const socket = outbound.socket;
    if (socket === null || socket.destroyed) return false;
    const queuedBytes = socket.writableLength;
    if (queuedBytes > 0 && queuedBytes + frame.length > this.sendQueueBytesMax) {
      this.options.log.debug?.('peer send queue full; message dropped', { peer: outbound.address.id, queuedBytes });
      return false;
    }
    if (!outbound.corked) {
      outbound.corked = true;
      socket.cork();
      process.nextTick(() => {
        if (outbound.socket === socket && outbound.corked) {
          outbound.corked = false;
          socket.uncork();
        }
      });
    }
    socket.write(frame);
    return true;
  }

  // ------------------------------------------------------------------------------------------
  // Heartbeats and failure detection

  private onHeartbeatTimer(): void {
    const frame = this.heartbeatFrame();
    for (const outbound of this.outbound.values()) {
      if (outbound.connected) this.writeFrame(outbound, frame);
    }
    this.reportTransitions();
  }

  private heartbeatFrame(): Buffer {
    return encodeFrame({ kind: 'heartbeat', info: this.options.heartbeatInfo?.() ?? null });
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

function isHello(message: unknown): message is Hello {
  if (typeof message !== 'object' || message === null) return false;
  const candidate = message as Partial<Hello>;
  return (
    candidate.kind === 'hello' &&
    typeof candidate.from === 'string' &&
    typeof candidate.to === 'string' &&
    typeof candidate.version === 'number'
  );
}

function isHeartbeat(message: unknown): message is { kind: 'heartbeat'; info?: unknown } {
  return typeof message === 'object' && message !== null && (message as { kind?: unknown }).kind === 'heartbeat';
}

function remoteOf(socket: net.Socket): string {
  return `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
}
