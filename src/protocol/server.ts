/**
 * The client-facing server: accepts memcached clients over TCP, text or binary, and hands each
 * decoded command to a handler.
 *
 * Intuition: each connection sniffs its first byte (0x80 → binary, else text), feeds bytes to the
 * matching decoder, and queues the decoded requests. One loop per connection executes them in
 * order and writes replies in that same order, as memcached does. A pipelined run of reads (or of
 * writes) is handed to the handler together, in order, without waiting for each reply: reads do
 * not affect each other, and every mode keeps the order in which writes were handed to it. A
 * command of another class waits until the run before it has settled, so a read never overtakes
 * the connection's earlier write and a write never lands before its earlier read was answered —
 * unless the handler keeps each connection's order itself (`handlerKeepsOrder`: a read sees
 * exactly the writes handed over before it), when reads and writes go in one run.
 *
 * Invariants:
 * - The handler sees a connection's commands in arrival order; a read is handed over only after
 *   every earlier write of the connection has settled, and a write only after every earlier read
 *   (without `handlerKeepsOrder`); replies leave in arrival order.
 * - Memory per connection is bounded: reading pauses while too many requests (or request bytes)
 *   wait, and a connection whose unread output passes outputBytesMax is destroyed.
 * - A handler failure becomes `SERVER_ERROR <message>` (never a stack trace); a socket error ends
 *   only its own connection, never the process.
 */

import * as net from 'node:net';
import { clockMs } from '../clock.ts';
import type { Command, ProtocolLimits, Reply } from './types.ts';
import { TextRequestDecoder, encodeTextInvalid, encodeTextReply } from './text.ts';
import { BinaryRequestDecoder, REQUEST_MAGIC, encodeBinaryError, encodeBinaryReply, type BinaryHeader } from './binary.ts';

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
   * read sees the connection's earlier writes and none of its later ones, even with all of them
   * in flight. Then a pipelined run may mix reads and writes. Default false.
   */
  handlerKeepsOrder?: boolean;
  log?: ProtocolServerLog;
}

/** Counters for `stats` and `show`. */
export interface ProtocolServerStats {
  connectionsCurrent: number;
  connectionsTotal: number;
  commandsTotal: number;
}

/** What the server itself answers to `version`. */
export const PROTOCOL_SERVER_VERSION = '1.6.18-mckv';

/** Reading pauses above this many queued requests and resumes below half of it. */
const QUEUED_REQUESTS_MAX = 1024;
/** Reading pauses above this many queued request bytes and resumes below half of it. */
const QUEUED_BYTES_MAX = 16 * 1024 * 1024;
/** Most pipelined commands of one class handed to the handler before the first of them settles. */
const PIPELINED_RUN_MAX = 64;
/** A connection asked to close is destroyed after this long if the peer does not close it first. */
const CLOSE_GRACE_MS = 2000;
/** Longest handler error message passed on to a client. */
const ERROR_MESSAGE_CHARS_MAX = 200;

/** A decoded request as the connection loop sees it, whatever the protocol. */
type WireRequest =
  /** `header`: the binary request's header (its reply echoes it); null for a text request. */
  | { kind: 'command'; command: Command; header: BinaryHeader | null; weightBytes: number }
  | { kind: 'invalid'; bytes: Buffer; close: boolean };

interface WireDecoder {
  push(chunk: Buffer): WireRequest[];
}

function commandWeightBytes(command: Command): number {
  return command.kind === 'store' ? command.value.length + command.key.length : 64;
}

function textWireDecoder(limits: ProtocolLimits): WireDecoder {
  const decoder = new TextRequestDecoder(limits);
  return {
    push(chunk) {
      const requests: WireRequest[] = [];
      for (const item of decoder.push(chunk)) {
        if (item.kind === 'invalid') requests.push({ kind: 'invalid', bytes: encodeTextInvalid(item.reply), close: item.close });
        else requests.push({ kind: 'command', command: item.command, header: null, weightBytes: commandWeightBytes(item.command) });
      }
      return requests;
    },
  };
}

function binaryWireDecoder(limits: ProtocolLimits): WireDecoder {
  const decoder = new BinaryRequestDecoder(limits);
  return {
    push(chunk) {
      const requests: WireRequest[] = [];
      for (const item of decoder.push(chunk)) {
        if (item.kind === 'invalid') {
          const bytes = item.header === null ? Buffer.alloc(0) : encodeBinaryError(item.header, item.status, item.message);
          requests.push({ kind: 'invalid', bytes, close: item.close });
        } else {
          requests.push({ kind: 'command', command: item.command, header: item.header, weightBytes: commandWeightBytes(item.command) });
        }
      }
      return requests;
    },
  };
}

/** The reply's bytes in the request's protocol. */
function encodeReply(request: Extract<WireRequest, { kind: 'command' }>, reply: Reply): Buffer {
  return request.header === null ? encodeTextReply(request.command, reply) : encodeBinaryReply(request.header, request.command, reply);
}

/** The message of a handler failure, one line, bounded, without a stack. */
function failureMessage(error: unknown): string {
  const raw = error instanceof Error ? error.message : String(error);
  const firstLine = raw.split(/\r?\n/, 1)[0] ?? '';
  const message = firstLine.length > 0 ? firstLine : 'internal error';
  return message.slice(0, ERROR_MESSAGE_CHARS_MAX);
}

/**
 * Which commands may be in flight together: a run of reads, or a run of writes, or (when the
 * handler keeps the connection's order) a run of both.
 */
type CommandClass = 'read' | 'write' | 'alone';

function commandClass(command: Command, handlerKeepsOrder: boolean): CommandClass {
  switch (command.kind) {
    case 'get':
      return 'read';
    case 'store':
    case 'arith':
    case 'delete':
    case 'touch':
    case 'gat':
      return handlerKeepsOrder ? 'read' : 'write';
    default:
      return 'alone';
  }
}

/** Replies the server gives itself; null means "ask the handler". */
function ownReply(command: Command): Reply | null {
  switch (command.kind) {
    case 'version': return { kind: 'version', version: PROTOCOL_SERVER_VERSION };
    case 'verbosity': return { kind: 'ok' };
    case 'noop': return { kind: 'ok' };
    // The text encoder writes nothing for quit; the binary one answers a (non-quiet) quit.
    case 'quit': return { kind: 'ok' };
    default: return null;
  }
}

/** One client connection: its decoder, its queue of requests and its in-order execution loop. */
class Connection {
  readonly info: ConnectionInfo;
  private decoder: WireDecoder | null = null;
  private readonly queue: WireRequest[] = [];
  private queuedBytes = 0;
  private running = false;
  private finished = false;
  private paused = false;
  /** The client has sent its last byte; close once every queued request is answered. */
  private inputEnded = false;

  constructor(
    private readonly socket: net.Socket,
    info: ConnectionInfo,
    private readonly server: ProtocolServer,
  ) {
    this.info = info;
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (error) => this.server.logWarn('client socket error', { connection: info.id, error: error.message }));
    socket.on('end', () => {
      this.inputEnded = true;
      if (!this.running) this.finish();
    });
    socket.on('close', () => {
      this.finished = true;
      this.queue.length = 0;
      this.server.onConnectionClosed(this);
    });
  }

  destroy(): void {
    this.finished = true;
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    if (this.finished) return;
    if (this.decoder === null) {
      this.decoder = chunk[0] === REQUEST_MAGIC ? binaryWireDecoder(this.server.limits) : textWireDecoder(this.server.limits);
    }
    const requests = this.decoder.push(chunk);
    if (requests.length === 1 && !this.running && this.queue.length === 0 && requests[0].kind === 'command') {
      this.startAlone(requests[0]);
      return;
    }
    for (const request of requests) {
      this.queue.push(request);
      this.queuedBytes += request.kind === 'command' ? request.weightBytes : request.bytes.length;
    }
    if (!this.paused && (this.queue.length > QUEUED_REQUESTS_MAX || this.queuedBytes > QUEUED_BYTES_MAX)) {
      this.paused = true;
      this.socket.pause();
    }
    void this.run();
  }

  /**
   * The common case of one request with nothing before it: answered here when the handler answers
   * at once; else the connection runs it, and what arrives meanwhile queues behind it, as in `run`.
   */
  private startAlone(request: Extract<WireRequest, { kind: 'command' }>): void {
    const reply = this.start(request.command);
    if (!(reply instanceof Promise)) {
      void this.finishRequest(request, reply);
      return;
    }
    this.running = true;
    void (this.finishRequest(request, reply) as Promise<void>).finally(() => {
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
        const batch = this.takeRun();
        // Handed over in order now; answered in order below. A reply the handler gave at once is
        // written at once, without a turn of the event loop.
        const replies: Array<Promise<Reply> | Reply | null> = [];
        for (const request of batch) replies.push(request.kind === 'command' ? this.start(request.command) : null);
        // Replies given at once leave in one socket write (corked until the run waits or ends).
        let corked = batch.length > 1;
        if (corked) this.socket.cork();
        for (let index = 0; index < batch.length && !this.finished; index += 1) {
          const reply = replies[index];
          if (reply instanceof Promise) {
            if (corked) this.socket.uncork();
            corked = false;
            await this.finishRequest(batch[index], reply);
          } else {
            void this.finishRequest(batch[index], reply);
          }
        }
        if (corked) this.socket.uncork();
        this.resumeIfDrained();
      }
    } finally {
      this.running = false;
    }
    if (this.inputEnded) this.finish();
  }

  /** The next request, and the requests of the same class (read or write) queued right after it. */
  private takeRun(): WireRequest[] {
    const first = this.dequeue();
    if (first.kind !== 'command') return [first];
    const keepsOrder = this.server.handlerKeepsOrder;
    const kind = commandClass(first.command, keepsOrder);
    const run: WireRequest[] = [first];
    if (kind === 'alone') return run;
    while (run.length < PIPELINED_RUN_MAX && this.queue.length > 0) {
      const next = this.queue[0];
      if (next.kind !== 'command' || commandClass(next.command, keepsOrder) !== kind) break;
      run.push(this.dequeue());
    }
    return run;
  }

  private dequeue(): WireRequest {
    const request = this.queue.shift() as WireRequest;
    this.queuedBytes -= request.kind === 'command' ? request.weightBytes : request.bytes.length;
    return request;
  }

  private start(command: Command): Promise<Reply> | Reply {
    this.server.countCommand();
    return this.replyTo(command);
  }

  /** Writes a request's reply: at once when it is there, else once it settles. */
  private finishRequest(request: WireRequest, reply: Promise<Reply> | Reply | null): Promise<void> | undefined {
    if (request.kind === 'invalid' || reply === null) {
      if (request.kind === 'invalid') {
        this.write(request.bytes);
        if (request.close) this.finish();
      }
      return undefined;
    }
    if (reply instanceof Promise) return reply.then((settled) => this.finishRequest(request, settled));
    if (this.finished) return undefined;
    this.write(encodeReply(request, reply));
    if (request.command.kind === 'quit') this.finish();
    return undefined;
  }

  private replyTo(command: Command): Promise<Reply> | Reply {
    const own = ownReply(command);
    if (own !== null) return own;
    try {
      const reply = this.server.handler(command, this.info);
      return reply instanceof Promise ? reply.catch((error: unknown) => this.failed(command, error)) : reply;
    } catch (error) {
      return this.failed(command, error);
    }
  }

  private failed(command: Command, error: unknown): Reply {
    this.server.logWarn('command failed', { connection: this.info.id, command: command.kind, error: failureMessage(error) });
    return { kind: 'server_error', message: failureMessage(error) };
  }

  private write(bytes: Buffer): void {
    if (bytes.length === 0 || this.finished) return;
    this.socket.write(bytes);
    if (this.socket.writableLength > this.server.limits.outputBytesMax) {
      this.server.logWarn('client does not read its replies; closing', {
        connection: this.info.id, outputBytes: this.socket.writableLength,
      });
      this.destroy();
    }
  }

  private resumeIfDrained(): void {
    if (!this.paused || this.finished) return;
    if (this.queue.length <= QUEUED_REQUESTS_MAX / 2 && this.queuedBytes <= QUEUED_BYTES_MAX / 2) {
      this.paused = false;
      this.socket.resume();
    }
  }

  /** Stops executing, flushes what was written, and closes (forcibly if the peer lingers). */
  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.queue.length = 0;
    this.socket.end();
    setTimeout(() => this.socket.destroy(), CLOSE_GRACE_MS).unref();
  }
}

/** The memcached-protocol front end: listens, decodes, executes in order, encodes. */
export class ProtocolServer {
  readonly limits: ProtocolLimits;
  readonly handler: CommandHandler;
  readonly handlerKeepsOrder: boolean;
  private readonly options: ProtocolServerOptions;
  private readonly server: net.Server;
  private readonly connections = new Set<Connection>();
  private nextConnectionId = 1;
  private connectionsTotal = 0;
  private refusedConnections = 0;
  private refusalLoggedAtMs = 0;
  private commandsTotal = 0;

  constructor(options: ProtocolServerOptions) {
    this.options = options;
    this.limits = options.limits;
    this.handler = options.handler;
    this.handlerKeepsOrder = options.handlerKeepsOrder ?? false;
    // Half-open: a client may send its requests and shut its side before reading the replies.
    this.server = net.createServer({ allowHalfOpen: true }, (socket) => this.onConnection(socket));
  }

  /** Starts listening; resolves with the bound port (useful with port 0). */
  listen(): Promise<number> {
    return new Promise((resolve, reject) => {
      const onError = (error: Error): void => reject(error);
      this.server.once('error', onError);
      this.server.listen(this.options.port, this.options.host, () => {
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

  stats(): ProtocolServerStats {
    return {
      connectionsCurrent: this.connections.size,
      connectionsTotal: this.connectionsTotal,
      commandsTotal: this.commandsTotal,
    };
  }

  /** @internal */
  countCommand(): void {
    this.commandsTotal++;
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
