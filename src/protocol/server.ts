/**
 * The client-facing server: accepts memcached clients over TCP, text or binary, and hands each
 * decoded command to a handler.
 *
 * Intuition: each connection sniffs its first byte (0x80 → binary, else text), feeds bytes to the
 * matching decoder, and queues the decoded requests. One loop per connection executes them in
 * order and writes replies in that same order, as memcached does. A pipelined run of reads (or of
 * writes) is handed to the handler together; a command of another class waits until the run
 * before it has settled. A handler that keeps each connection's order itself (`handlerKeepsOrder`)
 * gets every data command as it comes, without waiting for earlier replies (so a bulk load keeps
 * the cluster busy), and the replies leave in order as they settle.
 *
 * Invariants:
 * - The handler sees a connection's commands in arrival order; replies leave in arrival order.
 * - Nothing is refused for being too much: a connection with requestsInFlightMax requests
 *   unanswered, or outputBytesMax reply bytes unsent, is simply not read until they go out, as
 *   memcached does; a reply of many values is written value by value, waiting for the client.
 * - A handler failure becomes `SERVER_ERROR <message>`; a socket error ends only its connection.
 */

import * as net from 'node:net';
import { clockMs } from '../runtime/clock.ts';
import type { Command, DecoderOptions, ProtocolLimits, Reply } from './types.ts';
import type { Login } from './auth.ts';
import { refused } from './refusals.ts';
import { REQUEST_MAGIC } from './binary.ts';
import {
  afterWrite, binaryWireDecoder, commandClass, encodeReplyParts, expandItems, failureMessage, ownReply, textWireDecoder,
  withUniqueKeys, type CommandRequest, type WireDecoder, type WireRequest,
} from './wire.ts';

export { PROTOCOL_SERVER_VERSION } from './wire.ts';

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

/** Reading pauses above this many queued request bytes and resumes below half of it. */
const QUEUED_BYTES_MAX = 16 * 1024 * 1024;
/** Most pipelined commands of one class handed to the handler in one run. */
const PIPELINED_RUN_MAX = 64;
/** A connection asked to close is destroyed after this long if the peer does not close it first. */
const CLOSE_GRACE_MS = 2000;
/** Connections waiting to be accepted (memcached's -b default), so a burst of clients is not dropped. */
const LISTEN_BACKLOG = 1024;
/** One client connection: its decoder, its queue of requests and its in-order execution loop. */
class Connection {
  readonly info: ConnectionInfo;
  /** Requests decoded and not yet answered: queued, with the handler, or being written. */
  inFlight = 0;
  pausedByOutput = false;
  pausedByInFlight = false;
  private pausedByBytes = false;
  private reading = true;
  private decoder: WireDecoder | null = null;
  private readonly queue: WireRequest[] = [];
  private queuedBytes = 0;
  private running = false;
  /**
   * With a handler that keeps the connection's order, runs handed over and not yet answered, in
   * request order: the next run is handed over without waiting for them, and replies leave in
   * this order as they settle (see `writeSettled`).
   */
  private readonly unwritten: Array<{ request: CommandRequest; reply: Promise<Reply> | Reply }> = [];
  private writingSettled = false;
  /** Resolved once `unwritten` is empty (or the connection is gone). */
  private whenWritten: Array<() => void> = [];
  private finished = false;
  private corked = false;
  /** The client has sent its last byte; close once every queued request is answered. */
  private inputEnded = false;
  /** Unsent reply bytes past which the connection is not read (at least the socket's own mark, so 'drain' comes). */
  private readonly outputBytesMax: number;

  constructor(
    private readonly socket: net.Socket,
    info: ConnectionInfo,
    private readonly server: ProtocolServer,
  ) {
    this.info = info;
    this.outputBytesMax = Math.max(server.limits.outputBytesMax, socket.writableHighWaterMark);
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('drain', () => this.updateReading());
    socket.on('error', (error) => this.server.logWarn('client socket error', { connection: info.id, error: error.message }));
    socket.on('end', () => {
      this.inputEnded = true;
      if (this.idle()) this.finish();
    });
    socket.on('close', () => {
      this.finished = true;
      this.queue.length = 0;
      this.unwritten.length = 0;
      this.allWritten();
      this.server.addInFlight(-this.inFlight);
      this.inFlight = 0;
      this.server.onConnectionClosed(this);
    });
    if (server.idleTimeoutMs > 0) socket.setTimeout(server.idleTimeoutMs, () => this.onIdle());
  }

  /** Requests decoded and waiting for their turn. */
  get heldBack(): number {
    return this.queue.length;
  }

  get outputBytesUnsent(): number {
    return this.socket.writableLength;
  }

  destroy(): void {
    this.finished = true;
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    if (this.finished) return;
    if (this.decoder === null) {
      const binary = chunk[0] === REQUEST_MAGIC;
      const { limits, decoderOptions } = this.server;
      this.decoder = binary ? binaryWireDecoder(limits, decoderOptions) : textWireDecoder(limits, decoderOptions);
    }
    const requests = this.decoder.push(chunk);
    this.inFlight += requests.length;
    this.server.addInFlight(requests.length);
    const first = requests[0];
    if (requests.length === 1 && this.idle() && this.queue.length === 0 && first?.kind === 'command') {
      this.startAlone(first);
    } else {
      for (const request of requests) {
        this.queue.push(request);
        this.queuedBytes += request.kind === 'command' ? request.weightBytes : request.bytes.length;
      }
      void this.run();
    }
    this.updateReading();
  }

  /**
   * The common case of one request with nothing before it: answered here when the handler answers
   * at once; else the connection runs it, and what arrives meanwhile queues behind it, as in `run`.
   */
  private startAlone(request: CommandRequest): void {
    const pending = this.finishRequest(request, this.start(request));
    if (pending === undefined) return;
    this.running = true;
    void pending.finally(() => {
      // The loop takes over: what queued meanwhile, and closing once the client has finished.
      this.running = false;
      void this.run();
    });
  }

  /** Executes queued requests in order, a pipelined run at a time; only one loop per connection. */
  private async run(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      while (this.queue.length > 0 && !this.finished) {
        // Nothing more is handed to the handler while the client has not taken what it was sent.
        if (this.socket.writableLength > this.outputBytesMax) await this.drained();
        if (this.finished) break;
        // The handler holds at most serverRequestsInFlightMax requests of all connections.
        while (this.server.handlerRoom() === 0 && !this.finished) await this.server.handlerFreed();
        if (this.finished) break;
        const batch = this.takeRun(this.server.handlerRoom());
        if (this.overlaps(batch)) {
          this.handOver(batch as CommandRequest[]);
          continue;
        }
        // Anything else goes alone, once every reply before it has left (as without overlap).
        if (this.unwritten.length > 0) await this.written();
        if (this.finished) break;
        // Handed over in order now; answered in order below. A reply the handler gave at once is
        // written at once, without a turn of the event loop.
        const replies = batch.map((request) => (request.kind === 'command' ? this.start(request) : null));
        // Replies given at once leave in one socket write (corked until the run waits or ends).
        if (batch.length > 1) this.cork();
        for (let index = 0; index < batch.length && !this.finished; index += 1) {
          const request = batch[index];
          const reply = replies[index];
          if (request === undefined || reply === undefined) break; // replies maps batch: neither is shorter
          if (reply instanceof Promise) this.uncork();
          const pending = this.finishRequest(request, reply);
          if (pending !== undefined) await pending;
        }
        this.uncork();
      }
    } finally {
      this.running = false;
    }
    if (this.inputEnded && this.idle()) this.finish();
  }

  /** Nothing is being run or waits to be written. */
  private idle(): boolean {
    return !this.running && this.unwritten.length === 0;
  }

  /** A run of data commands for a handler that keeps the connection's order: no need to wait for earlier runs. */
  private overlaps(batch: WireRequest[]): boolean {
    const first = batch[0];
    return this.server.handlerKeepsOrder && first?.kind === 'command' && commandClass(first.command, true) === 'read';
  }

  /** Hands a run to the handler now; its replies are written in order as they settle. */
  private handOver(batch: CommandRequest[]): void {
    for (const request of batch) {
      const entry: { request: CommandRequest; reply: Promise<Reply> | Reply } = { request, reply: this.start(request) };
      this.unwritten.push(entry);
      if (entry.reply instanceof Promise) {
        void entry.reply.then((settled) => {
          entry.reply = settled;
          this.writeSettled();
        });
      }
    }
    this.writeSettled();
  }

  /**
   * Writes the replies at the head of `unwritten` that have settled, in order, coalescing those of
   * one tick into one socket write; stops at the first still pending (its settling resumes it) or
   * while the client has not taken its output.
   */
  private writeSettled(): void {
    if (this.writingSettled) return;
    this.writingSettled = true;
    for (let head = this.unwritten[0]; head !== undefined && !this.finished; head = this.unwritten[0]) {
      if (head.reply instanceof Promise) break;
      this.unwritten.shift();
      this.corkForTick();
      const pending = this.finishRequest(head.request, head.reply);
      if (pending !== undefined) {
        void pending.then(() => {
          this.writingSettled = false;
          this.writeSettled();
        });
        return;
      }
    }
    this.writingSettled = false;
    if (this.unwritten.length > 0) return;
    this.allWritten();
    if (this.inputEnded && this.idle()) this.finish();
  }

  /** Resolves once every reply handed over has been written. */
  private written(): Promise<void> {
    return new Promise((resolve) => this.whenWritten.push(resolve));
  }

  private allWritten(): void {
    const waiting = this.whenWritten;
    this.whenWritten = [];
    for (const resolve of waiting) resolve();
  }

  /** The next request, and the requests of the same class (read or write) queued right after it. */
  private takeRun(roomMax: number): WireRequest[] {
    const first = this.dequeue();
    if (first.kind !== 'command') return [first];
    const keepsOrder = this.server.handlerKeepsOrder;
    const kind = commandClass(first.command, keepsOrder);
    const run: WireRequest[] = [first];
    if (kind === 'alone') return run;
    while (run.length < Math.min(PIPELINED_RUN_MAX, roomMax)) {
      const next = this.queue[0];
      if (next === undefined || next.kind !== 'command' || commandClass(next.command, keepsOrder) !== kind) break;
      run.push(this.dequeue());
    }
    return run;
  }

  private dequeue(): WireRequest {
    const request = this.queue.shift() as WireRequest;
    this.queuedBytes -= request.kind === 'command' ? request.weightBytes : request.bytes.length;
    return request;
  }

  private start(request: CommandRequest): Promise<Reply> | Reply {
    this.server.countCommand();
    const command = request.command;
    const own = ownReply(command);
    if (own !== null) return own;
    // A key asked for twice is fetched once; its item is then written twice, one Buffer shared.
    const unique = withUniqueKeys(command);
    if (unique === null) return this.ask(command);
    const reply = this.ask(unique);
    return reply instanceof Promise ? reply.then((settled) => expandItems(command, settled)) : expandItems(command, reply);
  }

  private ask(command: Command): Promise<Reply> | Reply {
    try {
      const reply = this.server.handler(command, this.info);
      if (!(reply instanceof Promise)) return reply;
      this.server.handlerTook(1);
      return reply.catch((error: unknown) => this.failed(command, error)).finally(() => this.server.handlerTook(-1));
    } catch (error) {
      return this.failed(command, error);
    }
  }

  private failed(command: Command, error: unknown): Reply {
    this.server.logWarn('command failed', { connection: this.info.id, command: command.kind, error: failureMessage(error) });
    return refused('internal', failureMessage(error));
  }

  /** Writes a request's reply: at once when it is there, else once it settles; pending while output waits. */
  private finishRequest(request: WireRequest, reply: Promise<Reply> | Reply | null): Promise<void> | undefined {
    if (request.kind === 'answer') {
      return afterWrite(this.writeReply(request.bytes.length === 0 ? [] : [request.bytes]), () => {
        if (request.close) this.finish();
      });
    }
    if (reply instanceof Promise) return reply.then((settled) => this.finishRequest(request, settled));
    if (reply === null || this.finished) return undefined;
    return afterWrite(this.writeReply(encodeReplyParts(request, reply)), () => {
      if (request.command.kind === 'quit') this.finish();
    });
  }

  /** Writes one reply's parts in order; its request stops being in flight once all are handed over. */
  private writeReply(parts: Buffer[]): Promise<void> | undefined {
    return afterWrite(this.writeParts(parts, 0), () => {
      // A closed connection gave its count back at once (see 'close').
      if (this.inFlight > 0) {
        this.inFlight -= 1;
        this.server.addInFlight(-1);
      }
      this.updateReading();
    });
  }

  /** Hands parts to the socket; while the unsent output is over its limit, waits for it to drain. */
  private writeParts(parts: Buffer[], from: number): Promise<void> | undefined {
    for (let index = from; index < parts.length; index += 1) {
      const part = parts[index];
      if (this.finished || part === undefined) return undefined;
      if (this.socket.writableLength > this.outputBytesMax) return this.writeAfterDrain(parts, index);
      this.socket.write(part);
    }
    return undefined;
  }

  private async writeAfterDrain(parts: Buffer[], from: number): Promise<void> {
    this.uncork();
    this.updateReading();
    await this.drained();
    await this.writeParts(parts, from);
  }

  /** Resolves once the socket's output drains, or it closes. */
  private drained(): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        this.socket.off('drain', done);
        this.socket.off('close', done);
        resolve();
      };
      this.socket.on('drain', done);
      this.socket.on('close', done);
    });
  }

  /** Corks until the end of this tick, so the replies written meanwhile leave together. */
  private corkForTick(): void {
    if (this.corked) return;
    this.cork();
    process.nextTick(() => this.uncork());
  }

  private cork(): void {
    if (this.corked) return;
    this.corked = true;
    this.socket.cork();
  }

  private uncork(): void {
    if (!this.corked) return;
    this.corked = false;
    this.socket.uncork();
  }

  /**
   * Reads the socket only while it has room: unsent output within outputBytesMax, fewer than
   * requestsInFlightMax requests unanswered (resuming at half), queued request bytes bounded, and
   * the whole server under serverRequestsInFlightMax.
   */
  updateReading(): void {
    if (this.finished) return;
    const inFlightMax = this.server.limits.requestsInFlightMax;
    const overOutput = this.socket.writableLength > this.outputBytesMax;
    const overInFlight = this.pausedByInFlight ? this.inFlight > Math.floor(inFlightMax / 2) : this.inFlight >= inFlightMax;
    const overBytes = this.pausedByBytes ? this.queuedBytes > QUEUED_BYTES_MAX / 2 : this.queuedBytes > QUEUED_BYTES_MAX;
    if (overOutput && !this.pausedByOutput) this.server.countPause('output');
    if (overInFlight && !this.pausedByInFlight) this.server.countPause('in_flight');
    this.pausedByOutput = overOutput;
    this.pausedByInFlight = overInFlight;
    this.pausedByBytes = overBytes;
    const reading = !overOutput && !overInFlight && !overBytes && !this.server.overloaded;
    if (reading === this.reading) return;
    this.reading = reading;
    if (reading) this.socket.resume();
    else this.socket.pause();
  }

  /** memcached's idle_timeout: closed when nothing was read, nothing is in flight and nothing unsent. */
  private onIdle(): void {
    if (this.finished || this.inFlight > 0 || this.socket.writableLength > 0) return;
    this.server.countIdleClose();
    this.destroy();
  }

  /** Stops executing, flushes what was written, and closes (forcibly if the peer lingers). */
  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.queue.length = 0;
    this.unwritten.length = 0;
    this.allWritten();
    this.uncork();
    this.socket.end();
    setTimeout(() => this.socket.destroy(), CLOSE_GRACE_MS).unref();
  }
}

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
  /** Requests the handler was given and has not answered (promises pending). */
  private atHandler = 0;
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

  /** Requests the handler may still take now under serverRequestsInFlightMax (0: none). */
  handlerRoom(): number {
    return Math.max(0, this.limits.serverRequestsInFlightMax - this.atHandler);
  }

  /** Resolves once the handler has answered something (room may have come free). */
  handlerFreed(): Promise<void> {
    return new Promise((resolve) => this.handlerWaiters.push(resolve));
  }

  /** Counts requests the handler holds unanswered; an answer wakes the connections waiting for room. */
  handlerTook(delta: number): void {
    this.atHandler += delta;
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
