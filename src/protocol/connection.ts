/**
 * One client connection: it sniffs its first byte (0x80 → binary, else text), feeds bytes to the
 * matching decoder, and queues the decoded requests. One loop executes them in order and writes
 * replies in that same order, as memcached does. A pipelined run of reads (or of writes) is handed
 * to the handler together; a command of another class waits until the run before it has settled.
 * A handler that keeps each connection's order itself (`handlerKeepsOrder`) gets every data
 * command as it comes, without waiting for earlier replies (so a bulk load keeps the cluster
 * busy), and the replies leave in order as they settle. Writing and reading room: ./connection-flow.ts.
 *
 * Invariants:
 * - The handler sees a connection's commands in arrival order; replies leave in arrival order.
 * - A handler failure becomes `SERVER_ERROR <message>`; a socket error ends only its connection.
 */

import type * as net from 'node:net';
import type { Command, Reply } from './types.ts';
import type { ConnectionInfo } from './server-options.ts';
import type { ProtocolServer } from './server.ts';
import { refused } from './refusals.ts';
import { REQUEST_MAGIC } from './binary.ts';
import { ConnectionFlow } from './connection-flow.ts';
import {
  afterWrite, binaryWireDecoder, commandClass, encodeReplyParts, expandItems, failureMessage, ownReply, textWireDecoder,
  withUniqueKeys, type CommandRequest, type WireDecoder, type WireRequest,
} from './wire.ts';

/** Most pipelined commands of one class handed to the handler in one run. */
const PIPELINED_RUN_MAX = 64;
/** A connection asked to close is destroyed after this long if the peer does not close it first. */
export const CLOSE_GRACE_MS = 2000;

/** One client connection: its decoder, its queue of requests and its in-order execution loop. */
export class Connection extends ConnectionFlow {
  readonly info: ConnectionInfo;
  private decoder: WireDecoder | null = null;
  private readonly queue: WireRequest[] = [];
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
  /** The client has sent its last byte; close once every queued request is answered. */
  private inputEnded = false;

  constructor(socket: net.Socket, info: ConnectionInfo, server: ProtocolServer) {
    super(socket, server);
    this.info = info;
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
    const alone = requests.length === 1 && this.idle() && this.queue.length === 0 && first?.kind === 'command';
    if (alone && this.server.handlerTakes(first.weightBytes)) {
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
        // The handler holds at most serverRequestsInFlightMax requests of all connections, and
        // serverRequestBytesInFlightMax bytes of them (but one).
        while (!this.server.handlerTakes(this.nextWeightBytes()) && !this.finished) await this.server.handlerFreed();
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

  /** What the next queued request weighs in the bound on bytes (an answer of our own: nothing). */
  private nextWeightBytes(): number {
    const next = this.queue[0];
    return next === undefined || next.kind !== 'command' ? 0 : next.weightBytes;
  }

  /**
   * The next request (the handler has room for it: see `handlerTakes`), and the requests of the
   * same class (read or write) queued right after it, within the handler's room.
   */
  private takeRun(room: { requests: number; bytes: number }): WireRequest[] {
    const first = this.dequeue();
    if (first.kind !== 'command') return [first];
    const keepsOrder = this.server.handlerKeepsOrder;
    const kind = commandClass(first.command, keepsOrder);
    const run: WireRequest[] = [first];
    if (kind === 'alone') return run;
    let bytes = first.weightBytes;
    while (run.length < Math.min(PIPELINED_RUN_MAX, room.requests)) {
      const next = this.queue[0];
      if (next === undefined || next.kind !== 'command' || commandClass(next.command, keepsOrder) !== kind) break;
      bytes += next.weightBytes;
      if (bytes > room.bytes) break;
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
    if (unique === null) return this.ask(command, request.weightBytes);
    const reply = this.ask(unique, request.weightBytes);
    return reply instanceof Promise ? reply.then((settled) => expandItems(command, settled)) : expandItems(command, reply);
  }

  /** Hands `command` (of `weightBytes`, as decoded) to the handler, counting it while it is held. */
  private ask(command: Command, weightBytes: number): Promise<Reply> | Reply {
    try {
      const reply = this.server.handler(command, this.info);
      if (!(reply instanceof Promise)) return reply;
      this.server.handlerTook(1, weightBytes);
      return reply.catch((error: unknown) => this.failed(command, error)).finally(() => this.server.handlerTook(-1, weightBytes));
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
