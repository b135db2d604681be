/**
 * The peer network's public types and its one error: the options it is made with, the events it
 * emits, what it reports (a peer's view, the counters) and the narrow logger it writes to. Users
 * import them from network.ts, which re-exports every name; its two sides, inbound.ts and
 * outbound.ts, import them from here, so that neither depends on network.ts.
 */

import type { PeerId } from '../consistency/types.ts';
import type { PeerTls } from './credentials.ts';
import type { MemoryReportWire } from './memory-report.ts';
import type { HandshakeRefusalKind } from './handshake.ts';
import type { PeerMemoryReport } from '../store/memory-guard.ts';

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
  /**
   * What every node must run with alike, as one line (the controller's mode and read-lease
   * timing); a peer with other settings is refused at the handshake. Default '' (nothing named).
   */
  settings?: string;
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
  /** The peer became cut (PeerView.cut): no connection either way, and our redial failed. */
  'peer-cut': [peer: PeerId];
  /** A peer's heartbeat brought a memory report other than its last one (null: it says nothing). */
  'memory-report': [peer: PeerId, report: PeerMemoryReport | null];
}

/** One peer as this node sees it, for `show`. `info` is its latest heartbeat's info. */
export interface PeerView {
  peer: PeerId;
  up: boolean;
  lastHeardAgoMs: number | null;
  info: unknown;
  /**
   * No connection to or from it is open and our last dial to it failed: a process that exited
   * closes both at once and refuses the redial that follows (25–50 ms later). A connection that
   * was only reset (the peer still listening) is redialled and comes back: not cut.
   */
  cut: boolean;
}

/** What the network refused or replaced since it was made, for `stats`, and its heartbeats. */
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
  /** Heartbeats written to peers, and those not written because they would have said nothing new. */
  heartbeatsSent: number;
  heartbeatsSkipped: number;
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
