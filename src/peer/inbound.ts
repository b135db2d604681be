/**
 * The listener's side of the peer network (network.ts): the peer port and the connections peers
 * dial into it, the only ones this node receives on. An accepted connection is bounded before
 * anything is read from it (at most `unauthenticatedInboundMax` wait, frames capped at 1 KiB), has
 * its certificate verified when TLS is on, and is challenged; the listener's half of the handshake
 * checks the peer's hello and answers with a welcome. From then on its frames go to the network.
 *
 * Invariants: one authenticated inbound connection per peer (a newer one replaces the older, once
 * it has proved who it is). Nothing a peer sends throws out of a socket handler: a refused
 * handshake or a corrupt frame drops that connection alone, with a log line and a counter. After
 * `stop()` no socket, timer or listener of this side remains.
 */

import { randomBytes } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import type { PeerId } from '../consistency/types.ts';
import type { PeerTls } from './credentials.ts';
import { FrameDecoder, describeFrameError, encodeFrame } from './frame.ts';
import {
  HANDSHAKE_FRAME_BYTES_MAX,
  HANDSHAKE_NONCE_BYTES,
  certificateNames,
  challengeMessage,
  checkHello,
  type HandshakeRefusal,
} from './handshake.ts';
import { PeerNetworkError, type PeerLog, type PeerNetworkCounters } from './network-types.ts';

/** What the listener is given by the network: its settings, and the network's counters, refusal log and handlers. */
export interface PeerListenerOptions {
  self: PeerId;
  /** Where to accept the peers' connections. Port 0 picks a free port. */
  listen: { host: string; port: number };
  clusterId: string;
  /** What every node must run with alike (see handshake.ts). */
  settings: string;
  secret: Buffer;
  /** Mutual TLS credentials, or null for plain TCP. */
  tls: PeerTls | null;
  /** The peers allowed to connect. */
  peers: ReadonlySet<PeerId>;
  /** Largest frame accepted once authenticated, header included. */
  frameBytesMax: number;
  /** Inbound connections not yet authenticated beyond which a new one is closed at once. */
  unauthenticatedInboundMax: number;
  /** Bounds the TLS handshake, and the peer's hello after the challenge. */
  handshakeTimeoutMs: number;
  log: PeerLog;
  /** The network's counters; the listener adds handshakes, corrupt frames and replaced connections. */
  tallies: PeerNetworkCounters;
  /** Counts and logs a refused handshake. */
  refuse: (refusal: HandshakeRefusal, where: Record<string, unknown>) => void;
  /** A peer proved who it is on a new connection and was sent its welcome. */
  onAuthenticated: (peer: PeerId) => void;
  /** A peer's authenticated inbound connection closed (a newer one replacing it does not count). */
  onClosed?: (peer: PeerId) => void;
  /** A frame from an authenticated peer. */
  onFrame: (peer: PeerId, message: unknown) => void;
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

/** Listens on the peer port and keeps the connections peers dialled into this node. */
export class PeerListener {
  private readonly options: PeerListenerOptions;
  private readonly inbound = new Set<Inbound>();
  /** The one authenticated inbound connection of each peer. */
  private readonly inboundOf = new Map<PeerId, Inbound>();
  /** Every accepted TCP socket still open (under TLS, the raw socket beneath). */
  private readonly accepted = new Set<net.Socket>();
  private server: net.Server | null = null;
  /** With TLS: runs the TLS handshake on sockets `server` accepted (it never listens itself). */
  private tlsServer: tls.Server | null = null;
  private running = false;

  constructor(options: PeerListenerOptions) {
    this.options = options;
  }

  /** Listens for peers. Rejects with a PeerNetworkError if the port is taken. */
  async start(): Promise<void> {
    this.tlsServer = this.options.tls ? this.newTlsServer(this.options.tls) : null;
    this.server = await this.listen();
    this.running = true;
  }

  /** Closes every inbound connection and the listener. */
  async stop(): Promise<void> {
    this.running = false;
    for (const connection of this.inbound) this.dropInbound(connection);
    for (const socket of this.accepted) socket.destroy();
    this.accepted.clear();
    this.tlsServer = null;
    const server = this.server;
    this.server = null;
    if (server !== null) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Whether `peer` has an authenticated inbound connection now. */
  hasInbound(peer: PeerId): boolean {
    return this.inboundOf.has(peer);
  }

  /** The address actually listened on (useful with port 0). */
  address(): { host: string; port: number } {
    const bound = this.server?.address();
    if (bound === null || bound === undefined || typeof bound === 'string') {
      throw new Error('PeerNetwork: not listening');
    }
    return { host: bound.address, port: bound.port };
  }

  private newTlsServer(credentials: PeerTls): tls.Server {
    const server = tls.createServer({
      ca: credentials.ca,
      cert: credentials.cert,
      key: credentials.key,
      requestCert: true,
      rejectUnauthorized: true,
      handshakeTimeout: this.options.handshakeTimeoutMs,
    });
    server.on('secureConnection', (socket: tls.TLSSocket) => {
      this.onInbound(socket, certificateNames(socket.getPeerCertificate()));
    });
    server.on('tlsClientError', (error: NodeJS.ErrnoException, socket: tls.TLSSocket) => {
      this.options.refuse({ kind: 'tls_failed', detail: error.code ?? error.message }, { remote: remoteOf(socket) });
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
    const pendingMax = this.options.unauthenticatedInboundMax;
    if (unauthenticated >= pendingMax) {
      this.options.refuse({ kind: 'too_many_pending', pendingMax }, { remote: remoteOf(socket) });
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
      this.options.refuse({ kind: 'timeout' }, { remote: remoteOf(socket) });
      this.dropInbound(connection);
    }, this.options.handshakeTimeoutMs);
    this.inbound.add(connection);
    socket.on('data', (chunk: Buffer) => this.onInboundData(connection, chunk));
    socket.on('error', (error) => this.options.log.debug?.('peer inbound error', { ...this.nameOf(connection), error: error.message }));
    socket.on('close', () => this.forgetInbound(connection));
    const { self, clusterId, settings } = this.options;
    socket.write(encodeFrame(challengeMessage({ self, clusterId, settings, nonce: connection.nonce })));
  }

  private onInboundData(connection: Inbound, chunk: Buffer): void {
    const { messages, error } = connection.decoder.push(chunk);
    for (const message of messages) {
      if (connection.socket.destroyed) return;
      if (connection.peer === null) this.onHello(connection, message);
      else this.options.onFrame(connection.peer, message);
    }
    if (error === null || connection.socket.destroyed) return;
    if (connection.peer === null) {
      this.options.refuse({ kind: 'frame_error', detail: describeFrameError(error) }, this.nameOf(connection));
    } else {
      this.options.tallies.framesRefused += 1;
      this.options.log.warn('corrupt peer frame; connection dropped', { peer: connection.peer, reason: describeFrameError(error) });
    }
    this.dropInbound(connection);
  }

  private onHello(connection: Inbound, message: unknown): void {
    const outcome = checkHello(message, {
      self: this.options.self,
      clusterId: this.options.clusterId,
      settings: this.options.settings,
      secret: this.options.secret,
      peers: this.options.peers,
      nonce: connection.nonce,
      certificateNames: connection.certificateNames,
    });
    if (outcome.kind === 'refused') {
      this.options.refuse(outcome.refusal, this.nameOf(connection));
      this.dropInbound(connection);
      return;
    }
    const peer = outcome.peer as PeerId;
    if (connection.handshakeTimer !== null) clearTimeout(connection.handshakeTimer);
    connection.handshakeTimer = null;
    connection.peer = peer;
    connection.decoder.setFrameBytesMax(this.options.frameBytesMax);
    const older = this.inboundOf.get(peer);
    this.inboundOf.set(peer, connection);
    if (older !== undefined) {
      // Safe now that the peer proved who it is: a restarted peer's new connection wins.
      this.options.tallies.inboundReplaced += 1;
      this.options.log.info('peer connected in again; its older connection closed', { peer, remote: remoteOf(connection.socket) });
      this.dropInbound(older);
    }
    this.options.tallies.handshakesAccepted += 1;
    connection.socket.write(encodeFrame(outcome.welcome));
    this.options.log.debug?.('peer connected in', { peer, remote: remoteOf(connection.socket) });
    this.options.onAuthenticated(peer);
  }

  private dropInbound(connection: Inbound): void {
    connection.socket.destroy();
    this.forgetInbound(connection);
  }

  private forgetInbound(connection: Inbound): void {
    if (connection.handshakeTimer !== null) clearTimeout(connection.handshakeTimer);
    connection.handshakeTimer = null;
    this.inbound.delete(connection);
    if (connection.peer !== null && this.inboundOf.get(connection.peer) === connection) {
      this.inboundOf.delete(connection.peer);
      this.options.onClosed?.(connection.peer);
    }
  }

  private nameOf(connection: Inbound): Record<string, unknown> {
    return connection.peer === null ? { remote: remoteOf(connection.socket) } : { peer: connection.peer };
  }
}

function remoteOf(socket: net.Socket): string {
  return `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
}
