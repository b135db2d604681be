/**
 * The load generator's memcached client: one raw `net` socket per connection to 127.0.0.1, each
 * keeping at most `depth` pre-encoded requests (./load-codec.ts) in flight and refilling a slot as
 * soon as its reply arrives. Replies are matched to requests in FIFO order, which memcached
 * guarantees per connection, and timed from the moment their request was written.
 *
 * Invariants: at most `depth` requests in flight and a bounded reply buffer per connection;
 * a malformed reply is an error value that closes only its own connection and reports each of its
 * in-flight requests to the sink as an error; nothing is reported after a connection is closed.
 */

import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { itemAt } from '../src/runtime/item-at.ts';
import { encodeRequests, parseBinaryReply, parseTextReply, type EncodedRequests, type ParsedReply } from './load-codec.ts';
import type { LoadChannel, LoadOptions, OpenChannels, ReplySink, Request, RequestKind, WireProtocol } from './load-types.ts';
import { IdleWaiters } from './idle-waiters.ts';

const HOST = '127.0.0.1';

/** One socket with at most `depth` requests in flight, refilled from `next()` until it returns null. */
class LoadConnection implements LoadChannel {
  private readonly sentAtMs: Float64Array;
  private readonly kinds: RequestKind[];
  private head = 0;
  private inFlight = 0;
  private leftover: Buffer | null = null;
  private closed = false;
  private readonly idleWaiters = new IdleWaiters();

  constructor(
    private readonly socket: net.Socket,
    private readonly options: { protocol: WireProtocol; depth: number; valueBytes: number },
    private readonly requests: EncodedRequests,
    private readonly next: () => Request | null,
    private readonly sink: ReplySink,
  ) {
    this.sentAtMs = new Float64Array(options.depth);
    this.kinds = new Array<RequestKind>(options.depth).fill('get');
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (error) => this.fail(`socket error: ${error.message}`));
    socket.on('close', () => this.fail('connection closed by target'));
  }

  get outstanding(): number {
    return this.inFlight;
  }

  start(): void {
    this.refill(performance.now());
  }

  idle(): Promise<void> {
    return this.idleWaiters.wait(this.inFlight === 0 || this.closed);
  }

  close(): void {
    this.closed = true;
    this.socket.destroy();
    this.idleWaiters.wake();
  }

  private refill(nowMs: number): void {
    const buffers: Buffer[] = [];
    while (this.inFlight < this.options.depth && !this.closed) {
      const request = this.next();
      if (request === null) break;
      const encoded = request.kind === 'get' ? this.requests.gets[request.key] : this.requests.sets[request.key];
      if (encoded === undefined) return this.fail(`no encoded ${request.kind} for key ${request.key}`);
      const slot = (this.head + this.inFlight) % this.options.depth;
      this.sentAtMs[slot] = nowMs;
      this.kinds[slot] = request.kind;
      this.inFlight += 1;
      buffers.push(encoded);
    }
    const first = buffers[0];
    if (buffers.length === 1 && first !== undefined) this.socket.write(first);
    else if (buffers.length > 1) this.socket.write(Buffer.concat(buffers));
  }

  private onData(chunk: Buffer): void {
    const receivedAtMs = performance.now();
    const buffer = this.leftover === null ? chunk : Buffer.concat([this.leftover, chunk]);
    let offset = 0;
    while (offset < buffer.length && !this.closed) {
      const parsed = this.options.protocol === 'text' ? parseTextReply(buffer, offset) : parseBinaryReply(buffer, offset);
      if (parsed === null) break;
      if (parsed.kind === 'fatal') return this.fail(parsed.message);
      if (this.inFlight === 0) return this.fail('reply with no request in flight');
      this.complete(parsed, receivedAtMs);
      offset = parsed.next;
    }
    this.leftover = offset < buffer.length ? buffer.subarray(offset) : null;
    if (!this.closed) this.refill(receivedAtMs);
    if (this.inFlight === 0) this.idleWaiters.wake();
  }

  private complete(parsed: Extract<ParsedReply, { kind: 'reply' }>, receivedAtMs: number): void {
    const kind = this.kinds[this.head];
    const sentAtMs = this.sentAtMs[this.head];
    if (kind === undefined || sentAtMs === undefined) return this.fail(`no request in slot ${this.head} of ${this.options.depth}`);
    this.head = (this.head + 1) % this.options.depth;
    this.inFlight -= 1;
    if (parsed.outcome === 'error') return this.sink.error(`${kind}: ${parsed.message.slice(0, 120)}`, sentAtMs);
    const expected = kind === 'get' ? parsed.outcome === 'hit' || parsed.outcome === 'miss' : parsed.outcome === 'stored';
    if (!expected) return this.sink.error(`${kind}: unexpected ${parsed.outcome} reply`, sentAtMs);
    if (parsed.outcome === 'hit' && parsed.valueBytes !== this.options.valueBytes) {
      return this.sink.error(`get: value of ${parsed.valueBytes} bytes, expected ${this.options.valueBytes}`, sentAtMs);
    }
    this.sink.reply(kind, parsed.outcome, sentAtMs, receivedAtMs);
  }

  private fail(message: string): void {
    if (this.closed) return;
    this.closed = true;
    for (let index = 0; index < this.inFlight; index += 1) {
      this.sink.error(message, itemAt(this.sentAtMs, (this.head + index) % this.options.depth));
    }
    this.inFlight = 0;
    this.socket.destroy();
    this.idleWaiters.wake();
  }

}

function connect(port: number, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: HOST, port });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`connect to ${HOST}:${port} timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once('error', (error) => {
      clearTimeout(timer);
      reject(new Error(`connect to ${HOST}:${port}: ${error.message}`));
    });
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.setNoDelay(true);
      resolve(socket);
    });
  });
}

async function openConnections(options: LoadOptions, ports: number[], count: number): Promise<net.Socket[]> {
  const timeoutMs = options.connectTimeoutMs ?? 5000;
  const opened = await Promise.allSettled(
    Array.from({ length: count }, (_, index) => connect(itemAt(ports, index % ports.length), timeoutMs)),
  );
  const sockets = opened.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
  const failure = opened.find((result): result is PromiseRejectedResult => result.status === 'rejected');
  if (failure) {
    for (const socket of sockets) socket.destroy();
    throw failure.reason instanceof Error ? failure.reason : new Error(String(failure.reason));
  }
  return sockets;
}

/** Channels that speak memcached's text or binary protocol over one socket each, requests pre-encoded. */
export function memcachedChannels(options: LoadOptions): OpenChannels {
  const requests = encodeRequests(options);
  return async ({ ports, count, depth, next, sink }) => {
    const sockets = await openConnections(options, ports, count);
    const settings = { protocol: options.protocol, depth, valueBytes: options.valueBytes };
    return sockets.map((socket) => new LoadConnection(socket, settings, requests, next, sink));
  };
}
