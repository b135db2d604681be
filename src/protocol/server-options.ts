/**
 * What the client-facing server is given and what it reports: its options, the handler it hands
 * commands to, the narrow logger it writes to, and its counters. Types only, shared by the
 * listener (./server.ts), its connections (./connection.ts) and the callers; server.ts re-exports them.
 */

import type { Command, ProtocolLimits, Reply } from './types.ts';
import type { Login } from './auth.ts';

/** Who sent a command. */
export interface ConnectionInfo {
  id: number;
  remoteAddress: string;
}

/** Executes one command; its reply (or rejection) settles before the connection's next command runs. */
export type CommandHandler = (command: Command, connection: ConnectionInfo) => Promise<Reply> | Reply;

/** The narrow logger the server writes to. */
export interface ProtocolServerLog {
  info(msg: string, meta?: object): void;
  warn(msg: string, meta?: object): void;
}

export interface ProtocolServerOptions {
  host: string;
  port: number;
  limits: ProtocolLimits;
  handler: CommandHandler;
  /**
   * The handler carries out each connection's commands in the order they were handed to it: a
   * read sees the connection's earlier writes and none of its later ones, and nothing older than
   * its earlier reads saw, even with all of them in flight. Then a pipelined run may mix reads and
   * writes, and runs are handed over without waiting for earlier replies. Default false.
   */
  handlerKeepsOrder?: boolean;
  log?: ProtocolServerLog;
  /**
   * A connection with nothing read, nothing in flight and nothing unsent this long is closed
   * (memcached's idle_timeout), in milliseconds; 0 (default) = never.
   */
  idleTimeoutMs?: number;
  /** flush_all is served; false refuses it as memcached -F does. Default true. */
  flushAllEnabled?: boolean;
  /**
   * Checks client logins (see auth.ts `loadAuthFile`): text clients log in with memcached -Y's
   * `set`, binary ones with SASL PLAIN as memcached -S does (memcached serves only one protocol
   * with either option; mckv serves both). null (default) = no login.
   */
  login?: Login | null;
}

/** Counters for `stats` and `show`. */
export interface ProtocolServerStats {
  connectionsCurrent: number;
  connectionsTotal: number;
  commandsTotal: number;
  /** Connections turned away past connectionsMax. */
  connectionsRefused: number;
  /** Connections closed by the idle timeout. */
  connectionsClosedIdle: number;
  /** Connections not read now because their unsent replies pass outputBytesMax. */
  connectionsPausedByOutput: number;
  /** Connections not read now because requestsInFlightMax of their requests are unanswered. */
  connectionsPausedByInFlight: number;
  /** Times a connection stopped being read for its unsent output, since start. */
  pausesByOutputTotal: number;
  /** Times a connection stopped being read for its requests in flight, since start. */
  pausesByInFlightTotal: number;
  /** Requests decoded and waiting for their turn, over all connections. */
  requestsHeldBack: number;
  /** Requests decoded and not yet answered, over all connections. */
  requestsInFlight: number;
  /** Reply bytes handed to sockets and not yet sent, over all connections. */
  outputBytesUnsent: number;
  /** Every connection unread for serverRequestsInFlightMax unanswered requests (now; times since start). */
  overloaded: boolean;
  overloadsTotal: number;
}
