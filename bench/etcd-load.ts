/**
 * The load generator's etcd channels: the same closed loop as the memcached connections, spoken
 * through the etcd3 client (gRPC). A get is a range read of one key, linearizable as etcd's
 * range reads are by default; a set is a put. Keys and values are the other targets'.
 *
 * Intuition: one channel is one etcd3 client on its own HTTP/2 connection to one member (a local
 * subchannel pool, so 16 channels are 16 connections, as 16 memcached sockets are), keeping at
 * most `depth` calls in flight. The client's retries are turned off: a call etcd refuses or that
 * fails counts as an error once, as a memcached error reply does, never silently retried.
 *
 * Invariants: traffic goes only to 127.0.0.1; every call is bounded by a deadline; once a channel
 * is closed nothing more of it is reported.
 */

import { noop } from 'cockatiel';
import { Etcd3 } from 'etcd3';
import { performance } from 'node:perf_hooks';
import { itemAt } from '../src/runtime/item-at.ts';
import { benchValue, KEY_PREFIX_DEFAULT, keyName } from './load-codec.ts';
import type { ChannelSpec, LoadChannel, LoadOptions, OpenChannels, ReplyOutcome, ReplySink, Request } from './load-types.ts';
import { IdleWaiters } from './idle-waiters.ts';

const HOST = '127.0.0.1';
const CALL_DEADLINE_MS = 5000;
const MESSAGE_CHARS_MAX = 120;

/** What every channel of a run shares: the keys, the value, and how a client is made. */
interface EtcdRun {
  keys: Buffer[];
  value: Buffer;
  valueBytes: number;
  connectTimeoutMs: number;
}

/** One etcd3 client to one member with at most `depth` calls in flight. */
class EtcdChannel implements LoadChannel {
  private inFlight = 0;
  private closed = false;
  private readonly idleWaiters = new IdleWaiters();

  constructor(
    private readonly client: Etcd3,
    private readonly depth: number,
    private readonly run: EtcdRun,
    private readonly next: () => Request | null,
    private readonly sink: ReplySink,
  ) {}

  get outstanding(): number {
    return this.inFlight;
  }

  start(): void {
    this.refill();
  }

  idle(): Promise<void> {
    return this.idleWaiters.wait(this.inFlight === 0 || this.closed);
  }

  close(): void {
    this.closed = true;
    this.client.close();
    this.idleWaiters.wake();
  }

  private refill(): void {
    while (this.inFlight < this.depth && !this.closed) {
      const request = this.next();
      if (request === null) break;
      this.send(request);
    }
    if (this.inFlight === 0) this.idleWaiters.wake();
  }

  private send(request: Request): void {
    const sentAtMs = performance.now();
    const key = this.run.keys[request.key];
    if (key === undefined) throw new RangeError(`no key ${request.key} of ${this.run.keys.length}`);
    const options = { deadline: Date.now() + CALL_DEADLINE_MS };
    const call: Promise<ReplyOutcome | string> =
      request.kind === 'get'
        ? this.client.get(key).options(options).buffer().then((value) => this.getOutcome(value))
        : this.client.put(key).value(this.run.value).options(options).exec().then(() => 'stored' as const);
    this.inFlight += 1;
    call.then(
      (outcome) => this.complete(request, sentAtMs, outcome),
      (error: unknown) => this.complete(request, sentAtMs, errorText(error)),
    );
  }

  /** A get's outcome, or what is wrong with the value it found. */
  private getOutcome(value: Buffer | null): ReplyOutcome | string {
    if (value === null) return 'miss';
    return value.length === this.run.valueBytes ? 'hit' : `value of ${value.length} bytes, expected ${this.run.valueBytes}`;
  }

  /** `outcome` is a reply's outcome or, for a failed call, what went wrong. */
  private complete(request: Request, sentAtMs: number, outcome: ReplyOutcome | string): void {
    if (this.closed) return;
    this.inFlight -= 1;
    if (outcome === 'hit' || outcome === 'miss' || outcome === 'stored') this.sink.reply(request.kind, outcome, sentAtMs, performance.now());
    else this.sink.error(`${request.kind}: ${outcome}`.slice(0, MESSAGE_CHARS_MAX), sentAtMs);
    this.refill();
  }

}

function errorText(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

/** An etcd3 client of one member, on a connection of its own, that never retries a call. */
function memberClient(port: number, connectTimeoutMs: number): Etcd3 {
  return new Etcd3({
    hosts: `http://${HOST}:${port}`,
    dialTimeout: connectTimeoutMs,
    grpcOptions: { 'grpc.use_local_subchannel_pool': 1 },
    faultHandling: { global: noop, host: () => noop },
  });
}

/**
 * Channels to the etcd members at `options.ports`, one etcd3 client each. Each client's connection
 * is opened before the channels are handed back (by a read of one key, not measured), as the
 * memcached sockets are: a member that does not answer fails the run here, not call by call.
 */
export function etcdChannels(options: LoadOptions): OpenChannels {
  const prefix = options.keyPrefix ?? KEY_PREFIX_DEFAULT;
  const run: EtcdRun = {
    keys: Array.from({ length: options.keyCount }, (_, index) => Buffer.from(keyName(prefix, index), 'latin1')),
    value: benchValue(options.valueBytes),
    valueBytes: options.valueBytes,
    connectTimeoutMs: options.connectTimeoutMs ?? 5000,
  };
  return async ({ ports, count, depth, next, sink }: ChannelSpec) => {
    const clients = Array.from({ length: count }, (_, index) => memberClient(itemAt(ports, index % ports.length), run.connectTimeoutMs));
    const deadline = Date.now() + run.connectTimeoutMs;
    const opened = await Promise.allSettled(clients.map((client) => client.get(itemAt(run.keys, 0)).options({ deadline }).buffer()));
    const failure = opened.find((result): result is PromiseRejectedResult => result.status === 'rejected');
    if (failure !== undefined) {
      for (const client of clients) client.close();
      const port = ports[opened.indexOf(failure) % ports.length];
      throw new Error(`etcd at ${HOST}:${port} did not answer a read within ${run.connectTimeoutMs} ms: ${errorText(failure.reason)}`);
    }
    return clients.map((client) => new EtcdChannel(client, depth, run, next, sink));
  };
}
