/**
 * The client-facing server: accepts memcached clients over TCP, text or binary, and hands each
 * decoded command to a handler. Each client is a `Connection` (./connection.ts), which decodes,
 * executes in order and replies; this file is the listener and what all connections share.
 *
 * Intuition: the listener accepts up to connectionsMax clients and turns the rest away as memcached
 * does; it counts the requests of every connection, so the handler never holds more than
 * serverRequestsInFlightMax of them, nor more than serverRequestBytesInFlightMax bytes of them (but
 * one), and no connection is read while the server is over the first bound.
 *
 * Invariants:
 * - A connection past connectionsMax is told `ERROR Too many open connections` and closed; the
 *   process and the other clients go on.
 * - Nothing is refused for being too much: an overloaded server stops reading until half of its
 *   requests in flight are answered.
 */

import * as net from 'node:net';
import { clockMs } from '../runtime/clock.ts';
import type { DecoderOptions, ProtocolLimits } from './types.ts';
import type { CommandHandler, ProtocolServerOptions, ProtocolServerStats } from './server-options.ts';
import { CLOSE_GRACE_MS, Connection } from './connection.ts';

export type {
  CommandHandler, ConnectionInfo, ProtocolServerLog, ProtocolServerOptions, ProtocolServerStats,
} from './server-options.ts';
export { PROTOCOL_SERVER_VERSION } from './wire.ts';

/** Connections waiting to be accepted (memcached's -b default), so a burst of clients is not dropped. */
const LISTEN_BACKLOG = 1024;

/** The memcached-protocol front end: listens, decodes, executes in order, encodes. */
export class ProtocolServer {
  readonly limits: ProtocolLimits;
  readonly handler: CommandHandler;
  readonly handlerKeepsOrder: boolean;
  readonly idleTimeoutMs: number;
  readonly decoderOptions: Readonly<DecoderOptions>;
  private readonly options: ProtocolServerOptions;
  private readonly server: net.Server;
  private readonly connections = new Set<Connection>();
  private nextConnectionId = 1;
  private connectionsTotal = 0;
  private refusedConnections = 0;
  private refusalLoggedAtMs = 0;
  private commandsTotal = 0;
  private connectionsClosedIdle = 0;
  private pausesByOutputTotal = 0;
  private pausesByInFlightTotal = 0;
  /** Requests of every connection decoded and not yet answered. */
  private inFlightTotal = 0;
  /** Requests the handler was given and has not answered (promises pending), and their bytes. */
  private atHandler = 0;
  private bytesAtHandler = 0;
  private handlerWaiters: Array<() => void> = [];
  /** Over serverRequestsInFlightMax: no connection is read until half of those are answered. */
  overloaded = false;
  private overloadsTotal = 0;

  constructor(options: ProtocolServerOptions) {
    this.options = options;
    this.limits = options.limits;
    this.handler = options.handler;
    this.handlerKeepsOrder = options.handlerKeepsOrder ?? false;
    this.idleTimeoutMs = options.idleTimeoutMs ?? 0;
    this.decoderOptions = Object.freeze({ flushAllEnabled: options.flushAllEnabled ?? true, login: options.login ?? null });
    // Half-open: a client may send its requests and shut its side before reading the replies.
    this.server = net.createServer({ allowHalfOpen: true }, (socket) => this.onConnection(socket));
  }

  /** Starts listening; resolves with the bound port (useful with port 0). */
  listen(): Promise<number> {
    return new Promise((resolve, reject) => {
      const onError = (error: Error): void => reject(error);
      this.server.once('error', onError);
      this.server.listen({ port: this.options.port, host: this.options.host, backlog: LISTEN_BACKLOG }, () => {
        this.server.off('error', onError);
        // Listen errors reject above (the caller reports them once); later ones are only logged.
        this.server.on('error', (error) => this.logWarn('protocol server error', { error: error.message }));
        const address = this.server.address() as net.AddressInfo;
        this.options.log?.info('protocol server listening', { host: this.options.host, port: address.port });
        resolve(address.port);
      });
    });
  }

  /** Destroys every connection and goes on accepting new ones. */
  closeConnections(): void {
    for (const connection of this.connections) connection.destroy();
  }

  /** Stops accepting, destroys every connection, and resolves once the listener is closed. */
  close(): Promise<void> {
    return new Promise((resolve) => {
      for (const connection of this.connections) connection.destroy();
      if (!this.server.listening) {
        resolve();
        return;
      }
      this.server.close(() => resolve());
    });
  }

  /**
   * Whether the handler may take one more request of `bytes` now: under serverRequestsInFlightMax
   * requests, and under serverRequestBytesInFlightMax bytes with it (a handler holding nothing
   * takes one request of any size).
   */
  handlerTakes(bytes: number): boolean {
    if (this.atHandler === 0) return true;
    const { serverRequestsInFlightMax, serverRequestBytesInFlightMax } = this.limits;
    return this.atHandler < serverRequestsInFlightMax && this.bytesAtHandler + bytes <= serverRequestBytesInFlightMax;
  }

  /**
   * Requests, and bytes, the handler may still take now, beyond the first request of a run (which
   * `handlerTakes` admitted, whatever its size when the handler holds nothing).
   */
  handlerRoom(): { requests: number; bytes: number } {
    const requests = Math.max(0, this.limits.serverRequestsInFlightMax - this.atHandler);
    return { requests, bytes: Math.max(0, this.limits.serverRequestBytesInFlightMax - this.bytesAtHandler) };
  }

  /** Resolves once the handler has answered something (room may have come free). */
  handlerFreed(): Promise<void> {
    return new Promise((resolve) => this.handlerWaiters.push(resolve));
  }

  /** Counts requests (and their bytes) the handler holds unanswered; an answer wakes the connections waiting for room. */
  handlerTook(delta: number, bytes: number): void {
    this.atHandler += delta;
    this.bytesAtHandler += delta * bytes;
    if (delta >= 0 || this.handlerWaiters.length === 0) return;
    const waiters = this.handlerWaiters;
    this.handlerWaiters = [];
    for (const wake of waiters) wake();
  }

  /** Counts requests in and out of flight; crossing the server's bound pauses or resumes reading. */
  addInFlight(delta: number): void {
    this.inFlightTotal += delta;
    const max = this.limits.serverRequestsInFlightMax;
    const overloaded = this.overloaded ? this.inFlightTotal > Math.floor(max / 2) : this.inFlightTotal >= max;
    if (overloaded === this.overloaded) return;
    this.overloaded = overloaded;
    if (overloaded) this.overloadsTotal += 1;
    for (const connection of this.connections) connection.updateReading();
  }

  stats(): ProtocolServerStats {
    let pausedByOutput = 0;
    let pausedByInFlight = 0;
    let heldBack = 0;
    let inFlight = 0;
    let outputBytes = 0;
    for (const connection of this.connections) {
      outputBytes += connection.outputBytesUnsent;
      if (connection.pausedByOutput) pausedByOutput += 1;
      if (connection.pausedByInFlight) pausedByInFlight += 1;
      heldBack += connection.heldBack;
      inFlight += connection.inFlight;
    }
    return {
      connectionsCurrent: this.connections.size,
      connectionsTotal: this.connectionsTotal,
      commandsTotal: this.commandsTotal,
      connectionsRefused: this.refusedConnections,
      connectionsClosedIdle: this.connectionsClosedIdle,
      connectionsPausedByOutput: pausedByOutput,
      connectionsPausedByInFlight: pausedByInFlight,
      pausesByOutputTotal: this.pausesByOutputTotal,
      pausesByInFlightTotal: this.pausesByInFlightTotal,
      requestsHeldBack: heldBack,
      requestsInFlight: inFlight,
      outputBytesUnsent: outputBytes,
      overloaded: this.overloaded,
      overloadsTotal: this.overloadsTotal,
    };
  }

  /**
   * The same counters as `stats`/`show` lines: memcached's names where memcached has the counter
   * (rejected_connections, idle_kicks), mckv_-prefixed ones for the rest.
   */
  statsLines(): Array<[string, string]> {
    const stats = this.stats();
    return [
      ['max_connections', String(this.limits.connectionsMax)],
      ['rejected_connections', String(stats.connectionsRefused)],
      ['idle_kicks', String(stats.connectionsClosedIdle)],
      ['mckv_conns_paused_output', String(stats.connectionsPausedByOutput)],
      ['mckv_conns_paused_in_flight', String(stats.connectionsPausedByInFlight)],
      ['mckv_pauses_output_total', String(stats.pausesByOutputTotal)],
      ['mckv_pauses_in_flight_total', String(stats.pausesByInFlightTotal)],
      ['mckv_requests_held_back', String(stats.requestsHeldBack)],
      ['mckv_requests_in_flight', String(stats.requestsInFlight)],
      ['mckv_output_bytes_unsent', String(stats.outputBytesUnsent)],
      ['mckv_server_overloaded', stats.overloaded ? '1' : '0'],
      ['mckv_server_overloads_total', String(stats.overloadsTotal)],
    ];
  }

  /** @internal */
  countCommand(): void {
    this.commandsTotal++;
  }

  /** @internal */
  countPause(reason: 'output' | 'in_flight'): void {
    if (reason === 'output') this.pausesByOutputTotal++;
    else this.pausesByInFlightTotal++;
  }

  /** @internal */
  countIdleClose(): void {
    this.connectionsClosedIdle++;
  }

  /** @internal */
  onConnectionClosed(connection: Connection): void {
    this.connections.delete(connection);
  }

  /** @internal */
  logWarn(msg: string, meta?: object): void {
    this.options.log?.warn(msg, meta);
  }

  private onConnection(socket: net.Socket): void {
    if (this.connections.size >= this.limits.connectionsMax) {
      // As memcached does past its -c limit: say so, then close; the process and other clients go on.
      socket.on('error', () => {});
      socket.end('ERROR Too many open connections\r\n');
      setTimeout(() => socket.destroy(), CLOSE_GRACE_MS).unref();
      this.refusedConnections++;
      if (clockMs() - this.refusalLoggedAtMs >= 1000) {
        this.refusalLoggedAtMs = clockMs();
        this.logWarn('refusing connections: too many open', {
          connectionsMax: this.limits.connectionsMax,
          refusedTotal: this.refusedConnections,
        });
      }
      return;
    }
    const id = this.nextConnectionId++;
    const remoteAddress = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`;
    this.connectionsTotal++;
    this.connections.add(new Connection(socket, { id, remoteAddress }, this));
  }
}
