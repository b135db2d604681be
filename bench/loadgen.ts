/**
 * The benchmark's load generator: a closed-loop memcached client over raw `net` sockets (and,
 * for the etcd target, the etcd3 client of ./etcd-load.ts behind the same `LoadChannel` shape).
 *
 * Intuition: each connection keeps exactly `pipelineDepth` requests in flight; every reply
 * frees a slot that is refilled at once with a new get or set on a random key, so the offered
 * load adapts to what the target can serve (closed loop) and nothing queues inside the client.
 * Requests are pre-encoded per key (text or binary protocol), so the generator spends its CPU on
 * sockets, not on formatting. Replies are parsed by a small streaming parser and matched to
 * requests in FIFO order, which memcached guarantees per connection.
 *
 * It runs in its own process (`LoadgenProcess` forks this file under tsx and talks to it over
 * the IPC channel) so its event loop never shares a thread with the benchmark driver, and the
 * driver can sample the target's CPU at the exact start and end of the measured window.
 *
 * Invariants: traffic goes only to 127.0.0.1; every run is bounded in time (connect, preload,
 * warm-up, duration, drain) and in memory (at most `pipelineDepth` requests per connection,
 * a bounded reply buffer, a fixed-size histogram); a reply is counted only if its request was
 * sent inside the measured window; a malformed reply is an error value that closes only its
 * own connection and counts its in-flight requests as errors.
 */

import { fork, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Histogram, type HistogramSnapshot } from './histogram.ts';
import { itemAt } from '../src/runtime/item-at.ts';
import { mulberry32 } from '../src/runtime/random.ts';
import { BINARY_STATUS, HEADER_BYTES, OPCODE, REQUEST_MAGIC, RESPONSE_MAGIC, readHeader, writeHeader } from '../src/protocol/binary-header.ts';

/** Which memcached wire protocol the generator speaks. */
export type WireProtocol = 'text' | 'binary';
/** Which API the target speaks: memcached's (over `protocol`) or etcd's (gRPC, through the etcd3 client). */
export type LoadApi = 'memcached' | 'etcd';
export type RequestKind = 'get' | 'set';
export type ReplyOutcome = 'hit' | 'miss' | 'stored' | 'error';

const HOST = '127.0.0.1';
const REPLY_LINE_BYTES_MAX = 4096;
const ERROR_SAMPLES_MAX = 5;
const PRELOAD_DEPTH = 64;
const PRELOAD_CONNECTIONS_MAX = 4;

/** One load run. Connection i goes to `ports[i % ports.length]`. */
export interface LoadOptions {
  ports: number[];
  /** What the ports speak (default memcached); `protocol` applies to memcached only. */
  api?: LoadApi;
  protocol: WireProtocol;
  connections: number;
  pipelineDepth: number;
  /** Fraction of operations that are gets (0.9 for 9:1, 0 for sets only). */
  getFraction: number;
  keyCount: number;
  valueBytes: number;
  durationMs: number;
  warmupMs: number;
  /** Set every key once before the run (not measured). */
  preload: boolean;
  /** Preload through every port in turn: the ports front separate stores that do not replicate. */
  preloadEachPort?: boolean;
  seed: number;
  keyPrefix?: string;
  connectTimeoutMs?: number;
  preloadTimeoutMs?: number;
  drainTimeoutMs?: number;
}

/** Latency percentiles in microseconds. */
export interface LatencySummary {
  p50Us: number;
  p99Us: number;
  p999Us: number;
  maxUs: number;
  meanUs: number;
}

/** What one load run measured. */
export interface LoadResult {
  /** Replies to requests sent inside the measured window. */
  ops: number;
  opsPerSecond: number;
  measuredMs: number;
  gets: number;
  sets: number;
  hits: number;
  misses: number;
  /** Error replies, wrong replies, and in-flight requests lost with a connection. */
  errors: number;
  errorSamples: string[];
  latency: LatencySummary;
  /** The same, of the gets alone and of the sets alone (null when the run had none): what a read and a write cost. */
  latencyByKind: { get: LatencySummary | null; set: LatencySummary | null };
  histogram: HistogramSnapshot;
  preloadMs: number;
  preloadErrors: number;
  /** CPU the generator's own process used during the run (user + system). */
  loadgenCpuMs: number;
}

/** Marks the start and end of the measured window, for CPU sampling by the caller. */
export type LoadPhase = 'measuring' | 'draining';

/** What a run sends: how many connections, how many requests each keeps in flight, and the share of gets. */
export interface Workload {
  /** A standard name (`mix-16x1`) or the spec it was given as (`1:1-32x4`). */
  id: string;
  label: string;
  connections: number;
  pipelineDepth: number;
  /** Fraction of operations that are gets (0.9 for 9:1, 0 for sets only). */
  getFraction: number;
}
export type WorkloadId = Workload['id'];

/** The standard workloads: what a run measures unless told otherwise. */
export const STANDARD_WORKLOADS: readonly Workload[] = [
  { id: 'mix-4x1', label: '9:1 get:set, 4 conns × pipeline 1', connections: 4, pipelineDepth: 1, getFraction: 0.9 },
  { id: 'mix-16x1', label: '9:1 get:set, 16 conns × pipeline 1', connections: 16, pipelineDepth: 1, getFraction: 0.9 },
  { id: 'mix-4x32', label: '9:1 get:set, 4 conns × pipeline 32', connections: 4, pipelineDepth: 32, getFraction: 0.9 },
  { id: 'set-16x1', label: 'sets only, 16 conns × pipeline 1', connections: 16, pipelineDepth: 1, getFraction: 0 },
];

/**
 * A bulk load: sets only, 3 connections each keeping 512 in flight (on a cluster, one connection
 * per controller). Not run unless named (`--workloads bulk`); `0:1-CxP` sets other shapes.
 */
export const BULK_WORKLOAD: Workload = { id: 'bulk', label: 'bulk load: sets only, 3 conns × pipeline 512', connections: 3, pipelineDepth: 512, getFraction: 0 };

/** Every workload that has a name: the standard ones and the bulk load. */
export const NAMED_WORKLOADS: readonly Workload[] = [...STANDARD_WORKLOADS, BULK_WORKLOAD];

/** Limits of a workload given as a spec: connections, requests in flight on each, and the ratio's terms. */
export const WORKLOAD_LIMITS = { connectionsMax: 1024, pipelineDepthMax: 1024, ratioTermMax: 1000 } as const;

/** The grammar of a workload spec, for help texts and error messages. */
export const WORKLOAD_SPEC = 'GETS:SETS-CONNECTIONSxPIPELINE, e.g. 1:1-32x4 (0:1 is sets only, 1:0 gets only)';

/**
 * A named workload (standard or bulk), or one given as `GETS:SETS-CONNECTIONSxPIPELINE` (`9:1-16x1`); null when
 * it is neither or out of WORKLOAD_LIMITS. A spec that matches a named workload is that workload,
 * so the goals judged on the standard ones apply to it too.
 */
export function parseWorkload(text: string): Workload | null {
  const standard = NAMED_WORKLOADS.find((workload) => workload.id === text);
  if (standard !== undefined) return standard;
  const match = /^(\d{1,4}):(\d{1,4})-(\d{1,4})x(\d{1,4})$/.exec(text);
  if (match === null) return null;
  const [gets = 0, sets = 0, connections = 0, pipelineDepth = 0] = match.slice(1).map(Number);
  const { connectionsMax, pipelineDepthMax, ratioTermMax } = WORKLOAD_LIMITS;
  if (gets + sets === 0 || gets > ratioTermMax || sets > ratioTermMax) return null;
  if (connections < 1 || connections > connectionsMax || pipelineDepth < 1 || pipelineDepth > pipelineDepthMax) return null;
  const getFraction = gets / (gets + sets);
  const same = NAMED_WORKLOADS.find(
    (workload) => workload.connections === connections && workload.pipelineDepth === pipelineDepth && workload.getFraction === getFraction,
  );
  if (same !== undefined) return same;
  const mix = sets === 0 ? 'gets only' : gets === 0 ? 'sets only' : `${gets}:${sets} get:set`;
  return { id: `${gets}:${sets}-${connections}x${pipelineDepth}`, label: `${mix}, ${connections} conns × pipeline ${pipelineDepth}`, connections, pipelineDepth, getFraction };
}

// ---------------------------------------------------------------------------------------------
// Requests

interface EncodedRequests {
  gets: Buffer[];
  sets: Buffer[];
}

/** The name of key number `index`: the same keys for every target. */
export function keyName(prefix: string, index: number): string {
  return `${prefix}${index}`;
}

function encodeText(key: string, value: Buffer): { get: Buffer; set: Buffer } {
  const get = Buffer.from(`get ${key}\r\n`, 'latin1');
  const set = Buffer.concat([Buffer.from(`set ${key} 0 0 ${value.length}\r\n`, 'latin1'), value, Buffer.from('\r\n')]);
  return { get, set };
}

function binaryHeader(options: { opcode: number; keyBytes: number; extrasBytes: number; bodyBytes: number }): Buffer {
  const header = Buffer.alloc(HEADER_BYTES);
  writeHeader(header, { magic: REQUEST_MAGIC, ...options });
  return header;
}

function encodeBinary(key: string, value: Buffer): { get: Buffer; set: Buffer } {
  const keyBytes = Buffer.from(key, 'latin1');
  const get = Buffer.concat([
    binaryHeader({ opcode: OPCODE.get, keyBytes: keyBytes.length, extrasBytes: 0, bodyBytes: keyBytes.length }),
    keyBytes,
  ]);
  const extras = Buffer.alloc(8); // flags 0, expiry 0
  const setHeader = binaryHeader({
    opcode: OPCODE.set, keyBytes: keyBytes.length, extrasBytes: 8, bodyBytes: 8 + keyBytes.length + value.length,
  });
  return { get, set: Buffer.concat([setHeader, extras, keyBytes, value]) };
}

/** The prefix of every key's name unless a run names another. */
export const KEY_PREFIX_DEFAULT = 'bench:';

/** The value every set writes: `valueBytes` bytes of 'x', the same for every target. */
export function benchValue(valueBytes: number): Buffer {
  return Buffer.alloc(valueBytes, 'x');
}

function encodeRequests(options: LoadOptions): EncodedRequests {
  const value = benchValue(options.valueBytes);
  const prefix = options.keyPrefix ?? KEY_PREFIX_DEFAULT;
  const encoded: EncodedRequests = { gets: [], sets: [] };
  for (let index = 0; index < options.keyCount; index += 1) {
    const pair = options.protocol === 'text' ? encodeText(keyName(prefix, index), value) : encodeBinary(keyName(prefix, index), value);
    encoded.gets.push(pair.get);
    encoded.sets.push(pair.set);
  }
  return encoded;
}


// ---------------------------------------------------------------------------------------------
// Reply parsing

/** One parsed reply, or why the stream cannot be parsed (`fatal`), or `null` if incomplete. */
export type ParsedReply =
  | { kind: 'reply'; outcome: ReplyOutcome; valueBytes: number; message: string; next: number }
  | { kind: 'fatal'; message: string };

const CRLF = Buffer.from('\r\n');

function readLine(buffer: Buffer, offset: number): { line: string; next: number } | null | 'too long' {
  const end = buffer.indexOf(CRLF, offset);
  if (end === -1) return buffer.length - offset > REPLY_LINE_BYTES_MAX ? 'too long' : null;
  return { line: buffer.toString('latin1', offset, end), next: end + 2 };
}

/** Parses one text-protocol reply to a single-key get or a set starting at `offset`. */
export function parseTextReply(buffer: Buffer, offset: number): ParsedReply | null {
  const first = readLine(buffer, offset);
  if (first === null) return null;
  if (first === 'too long') return { kind: 'fatal', message: 'reply line too long' };
  const { line, next } = first;
  if (line === 'END') return { kind: 'reply', outcome: 'miss', valueBytes: 0, message: '', next };
  if (line === 'STORED') return { kind: 'reply', outcome: 'stored', valueBytes: 0, message: '', next };
  if (!line.startsWith('VALUE ')) return { kind: 'reply', outcome: 'error', valueBytes: 0, message: line, next };
  const bytes = Number(line.split(' ')[3]);
  if (!Number.isInteger(bytes) || bytes < 0) return { kind: 'fatal', message: `bad VALUE line: ${line.slice(0, 80)}` };
  const dataEnd = next + bytes;
  if (buffer.length < dataEnd + 2) return null;
  if (buffer[dataEnd] !== 0x0d || buffer[dataEnd + 1] !== 0x0a) return { kind: 'fatal', message: 'value block not ended by CRLF' };
  const last = readLine(buffer, dataEnd + 2);
  if (last === null) return null;
  if (last === 'too long' || last.line !== 'END') return { kind: 'fatal', message: 'VALUE not followed by END' };
  return { kind: 'reply', outcome: 'hit', valueBytes: bytes, message: '', next: last.next };
}

/** Parses one binary-protocol response to GET (0x00) or SET (0x01) starting at `offset`. */
export function parseBinaryReply(buffer: Buffer, offset: number): ParsedReply | null {
  if (buffer.length - offset < HEADER_BYTES) return null;
  const magic = buffer.readUInt8(offset);
  if (magic !== RESPONSE_MAGIC) return { kind: 'fatal', message: `bad response magic 0x${magic.toString(16)}` };
  const { opcode, keyBytes, extrasBytes, status, bodyBytes } = readHeader(buffer, offset);
  const next = offset + HEADER_BYTES + bodyBytes;
  if (buffer.length < next) return null;
  const valueBytes = bodyBytes - keyBytes - extrasBytes;
  if (status === BINARY_STATUS.ok && opcode === OPCODE.get) return { kind: 'reply', outcome: 'hit', valueBytes, message: '', next };
  if (status === BINARY_STATUS.ok && opcode === OPCODE.set) return { kind: 'reply', outcome: 'stored', valueBytes: 0, message: '', next };
  if (status === BINARY_STATUS.keyNotFound && opcode === OPCODE.get) return { kind: 'reply', outcome: 'miss', valueBytes: 0, message: '', next };
  const text = buffer.toString('latin1', offset + HEADER_BYTES + extrasBytes + keyBytes, Math.min(next, offset + 200));
  return { kind: 'reply', outcome: 'error', valueBytes: 0, message: `status 0x${status.toString(16)} opcode 0x${opcode.toString(16)} ${text}`, next };
}

// ---------------------------------------------------------------------------------------------
// Connections

/** A request to send: a get or a set of key number `key` (0 ≤ key < keyCount). */
export interface Request {
  kind: RequestKind;
  key: number;
}

/** Where a channel reports each reply and each failed request. */
export interface ReplySink {
  /** A reply to a request of `kind` sent at `sentAtMs`, received at `receivedAtMs`. */
  reply(kind: RequestKind, outcome: ReplyOutcome, sentAtMs: number, receivedAtMs: number): void;
  error(message: string, sentAtMs: number): void;
}

/**
 * One closed-loop stream of requests to the target (a memcached connection, an etcd client): it
 * keeps at most its depth of requests in flight, refilled from `next()` until that returns null.
 */
export interface LoadChannel {
  /** Requests sent and not yet answered. */
  readonly outstanding: number;
  /** Fills the pipeline. */
  start(): void;
  /** Resolves when nothing is in flight (or the channel is gone). */
  idle(): Promise<void>;
  /** Ends the channel: what is still in flight is no longer counted. */
  close(): void;
}

/** What opening channels takes: how many, how deep each, where requests come from and replies go. */
export interface ChannelSpec {
  /** Channel i goes to `ports[i % ports.length]`. */
  ports: number[];
  count: number;
  depth: number;
  next: () => Request | null;
  sink: ReplySink;
}

/** Opens the channels of a run; rejects (having closed any it opened) if one cannot be opened. */
export type OpenChannels = (spec: ChannelSpec) => Promise<LoadChannel[]>;

/** One socket with at most `depth` requests in flight, refilled from `next()` until it returns null. */
class LoadConnection implements LoadChannel {
  private readonly sentAtMs: Float64Array;
  private readonly kinds: RequestKind[];
  private head = 0;
  private inFlight = 0;
  private leftover: Buffer | null = null;
  private closed = false;
  private idleWaiters: Array<() => void> = [];

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
    if (this.inFlight === 0 || this.closed) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  close(): void {
    this.closed = true;
    this.socket.destroy();
    this.wakeIdle();
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
    if (this.inFlight === 0) this.wakeIdle();
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
    this.wakeIdle();
  }

  private wakeIdle(): void {
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const wake of waiters) wake();
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

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Resolves with `promise`'s completion or after `ms`, whichever is first. */
async function within(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([promise, new Promise((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}

// ---------------------------------------------------------------------------------------------
// Preload and the measured run

function validateOptions(options: LoadOptions): string | null {
  if (options.ports.length === 0) return 'no target ports';
  const positive: Array<[string, number]> = [
    ['connections', options.connections],
    ['pipelineDepth', options.pipelineDepth],
    ['keyCount', options.keyCount],
    ['durationMs', options.durationMs],
  ];
  for (const [name, value] of positive) if (!Number.isInteger(value) || value <= 0) return `${name} must be a positive integer`;
  if (!(options.getFraction >= 0 && options.getFraction <= 1)) return 'getFraction must be within 0..1';
  if (!Number.isInteger(options.valueBytes) || options.valueBytes < 0) return 'valueBytes must be a non-negative integer';
  if (!(options.warmupMs >= 0)) return 'warmupMs must be ≥ 0';
  return null;
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
function memcachedChannels(options: LoadOptions): OpenChannels {
  const requests = encodeRequests(options);
  return async ({ ports, count, depth, next, sink }) => {
    const sockets = await openConnections(options, ports, count);
    const settings = { protocol: options.protocol, depth, valueBytes: options.valueBytes };
    return sockets.map((socket) => new LoadConnection(socket, settings, requests, next, sink));
  };
}

/** The channel opener for the run's API; the etcd client is loaded only for a run that needs it. */
async function channelsFor(options: LoadOptions): Promise<OpenChannels> {
  const api = options.api ?? 'memcached';
  switch (api) {
    case 'memcached':
      return memcachedChannels(options);
    case 'etcd':
      return (await import('./etcd-load.ts')).etcdChannels(options);
    default: {
      const unreachable: never = api;
      return unreachable;
    }
  }
}

async function preload(options: LoadOptions, ports: number[], open: OpenChannels): Promise<{ preloadMs: number; preloadErrors: number }> {
  const startedMs = performance.now();
  let nextKey = 0;
  let stored = 0;
  let preloadErrors = 0;
  const next = (): Request | null => (nextKey < options.keyCount ? { kind: 'set', key: nextKey++ } : null);
  const sink: ReplySink = {
    reply: (_kind, outcome) => (outcome === 'stored' ? (stored += 1) : (preloadErrors += 1)),
    error: () => (preloadErrors += 1),
  };
  const connections = await open({
    ports, count: Math.min(PRELOAD_CONNECTIONS_MAX, options.connections), depth: PRELOAD_DEPTH, next, sink,
  });
  for (const connection of connections) connection.start();
  await within(Promise.all(connections.map((connection) => connection.idle())), options.preloadTimeoutMs ?? 60_000);
  for (const connection of connections) connection.close();
  const unanswered = Math.max(0, options.keyCount - stored - preloadErrors);
  return { preloadMs: performance.now() - startedMs, preloadErrors: preloadErrors + unanswered };
}

/** What the sink counts while measuring: the counters of a LoadResult plus the histogram. */
type Tally = Pick<LoadResult, 'ops' | 'gets' | 'sets' | 'hits' | 'misses' | 'errors' | 'errorSamples'> & {
  histogram: Histogram;
  byKind: { get: Histogram; set: Histogram };
};

function measuringSink(tally: Tally, window: { startMs: number; endMs: number }): ReplySink {
  const inWindow = (sentAtMs: number): boolean => sentAtMs >= window.startMs && sentAtMs < window.endMs;
  return {
    reply(kind, outcome, sentAtMs, receivedAtMs) {
      if (!inWindow(sentAtMs)) return;
      tally.ops += 1;
      const latencyNs = (receivedAtMs - sentAtMs) * 1e6;
      tally.histogram.record(latencyNs);
      tally.byKind[kind].record(latencyNs);
      if (kind === 'get') tally.gets += 1;
      else tally.sets += 1;
      if (outcome === 'hit') tally.hits += 1;
      if (outcome === 'miss') tally.misses += 1;
    },
    error(message, sentAtMs) {
      if (sentAtMs < window.startMs) return;
      tally.errors += 1;
      if (tally.errorSamples.length < ERROR_SAMPLES_MAX) tally.errorSamples.push(message);
    },
  };
}

function summarize(histogram: Histogram): LatencySummary {
  const toUs = (ns: number): number => Math.round(ns / 10) / 100;
  return {
    p50Us: toUs(histogram.percentile(50)),
    p99Us: toUs(histogram.percentile(99)),
    p999Us: toUs(histogram.percentile(99.9)),
    maxUs: toUs(histogram.max),
    meanUs: toUs(histogram.mean),
  };
}

/**
 * Runs one closed-loop load against 127.0.0.1 `ports` in this process: optional preload,
 * warm-up, measured window, drain. Rejects only if the options are invalid or a connection
 * cannot be opened; errors during the run are counted in the result.
 */
export async function runLoad(options: LoadOptions, onPhase: (phase: LoadPhase) => void = () => {}): Promise<LoadResult> {
  const invalid = validateOptions(options);
  if (invalid !== null) throw new Error(`invalid load options: ${invalid}`);
  const cpuBefore = process.cpuUsage();
  const open = await channelsFor(options);
  const preloaded = { preloadMs: 0, preloadErrors: 0 };
  if (options.preload) {
    for (const ports of options.preloadEachPort === true ? options.ports.map((port) => [port]) : [options.ports]) {
      const one = await preload(options, ports, open);
      preloaded.preloadMs += one.preloadMs;
      preloaded.preloadErrors += one.preloadErrors;
    }
  }
  const tally: Tally = {
    histogram: new Histogram(), byKind: { get: new Histogram(), set: new Histogram() },
    ops: 0, gets: 0, sets: 0, hits: 0, misses: 0, errors: 0, errorSamples: [],
  };
  // Set once the channels are open, before any request is sent: opening them is not measured.
  const window = { startMs: Number.POSITIVE_INFINITY, endMs: Number.POSITIVE_INFINITY };
  const random = mulberry32(options.seed);
  let stopping = false;
  const next = (): Request | null => {
    if (stopping) return null;
    const key = Math.floor(random() * options.keyCount);
    return { kind: random() < options.getFraction ? 'get' : 'set', key };
  };
  const sink = measuringSink(tally, window);
  const connections = await open({ ports: options.ports, count: options.connections, depth: options.pipelineDepth, next, sink });
  window.startMs = performance.now() + options.warmupMs;
  window.endMs = window.startMs + options.durationMs;
  for (const connection of connections) connection.start();
  await sleep(options.warmupMs);
  onPhase('measuring');
  await sleep(Math.max(0, window.endMs - performance.now()));
  stopping = true;
  onPhase('draining');
  const measuredMs = performance.now() - window.startMs;
  await within(Promise.all(connections.map((connection) => connection.idle())), options.drainTimeoutMs ?? 5000);
  const lostInDrain = connections.reduce((sum, connection) => sum + connection.outstanding, 0);
  for (const connection of connections) connection.close();
  const cpu = process.cpuUsage(cpuBefore);
  return {
    ops: tally.ops,
    opsPerSecond: tally.ops / (options.durationMs / 1000),
    measuredMs,
    gets: tally.gets,
    sets: tally.sets,
    hits: tally.hits,
    misses: tally.misses,
    errors: tally.errors + lostInDrain,
    errorSamples: lostInDrain > 0 ? [...tally.errorSamples, `${lostInDrain} requests unanswered after the drain timeout`] : tally.errorSamples,
    latency: summarize(tally.histogram),
    latencyByKind: {
      get: tally.byKind.get.count > 0 ? summarize(tally.byKind.get) : null,
      set: tally.byKind.set.count > 0 ? summarize(tally.byKind.set) : null,
    },
    histogram: tally.histogram.snapshot(),
    preloadMs: preloaded.preloadMs,
    preloadErrors: preloaded.preloadErrors,
    loadgenCpuMs: (cpu.user + cpu.system) / 1000,
  };
}

// ---------------------------------------------------------------------------------------------
// The generator as a child process

type ParentMessage = { type: 'run'; id: number; options: LoadOptions };
type ChildMessage =
  | { type: 'ready' }
  | { type: 'phase'; id: number; phase: LoadPhase }
  | { type: 'result'; id: number; result: LoadResult }
  | { type: 'failed'; id: number; message: string };

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null;
}

function serveParent(): void {
  const send = (message: ChildMessage): void => {
    process.send?.(message);
  };
  process.on('message', (message: unknown) => {
    if (!isRecord(message) || message.type !== 'run' || typeof message.id !== 'number' || !isRecord(message.options)) return;
    const { id, options } = message as ParentMessage;
    runLoad(options, (phase) => send({ type: 'phase', id, phase })).then(
      (result) => send({ type: 'result', id, result }),
      (error: unknown) => send({ type: 'failed', id, message: error instanceof Error ? error.message : String(error) }),
    );
  });
  process.on('disconnect', () => process.exit(0));
  // Ctrl-C reaches the whole process group: let the driver decide when to stop us.
  process.on('SIGINT', () => {});
  send({ type: 'ready' });
}

/**
 * The load generator in a forked Node process (run under tsx), reused for many runs. One run
 * at a time; each is bounded by its own durations plus a margin.
 */
export class LoadgenProcess {
  private nextId = 1;
  private constructor(private readonly child: ChildProcess) {}

  /** Forks the generator and waits until it is ready (bounded). */
  static async start(readyTimeoutMs = 30_000): Promise<LoadgenProcess> {
    const child = fork(fileURLToPath(import.meta.url), [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => fail(new Error(`load generator not ready within ${readyTimeoutMs} ms`)), readyTimeoutMs);
      const onMessage = (message: unknown): void => {
        if (isRecord(message) && message.type === 'ready') done();
      };
      const onExit = (code: number | null): void => fail(new Error(`load generator exited (${code}) before it was ready`));
      function cleanup(): void {
        clearTimeout(timer);
        child.off('message', onMessage);
        child.off('exit', onExit);
      }
      function done(): void {
        cleanup();
        resolve();
      }
      function fail(error: Error): void {
        cleanup();
        if (child.exitCode === null) child.kill('SIGKILL');
        reject(error);
      }
      child.on('message', onMessage);
      child.once('exit', onExit);
    });
    return new LoadgenProcess(child);
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Runs one load in the child; `onPhase` fires when the measured window starts and ends. */
  run(options: LoadOptions, onPhase: (phase: LoadPhase) => void = () => {}): Promise<LoadResult> {
    const id = this.nextId++;
    const boundMs =
      options.warmupMs + options.durationMs + (options.preloadTimeoutMs ?? 60_000) + (options.drainTimeoutMs ?? 5000) + 30_000;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => finish(new Error(`load run ${id} did not finish within ${boundMs} ms`)), boundMs);
      const onExit = (): void => finish(new Error('load generator exited during a run'));
      const onMessage = (message: unknown): void => {
        if (!isRecord(message) || message.id !== id) return;
        const typed = message as ChildMessage;
        if (typed.type === 'phase') onPhase(typed.phase);
        else if (typed.type === 'result') finish(null, typed.result);
        else if (typed.type === 'failed') finish(new Error(typed.message));
      };
      const finish = (error: Error | null, result?: LoadResult): void => {
        clearTimeout(timer);
        this.child.off('message', onMessage);
        this.child.off('exit', onExit);
        if (error !== null || result === undefined) reject(error ?? new Error('no result'));
        else resolve(result);
      };
      this.child.on('message', onMessage);
      this.child.once('exit', onExit);
      this.child.send({ type: 'run', id, options } satisfies ParentMessage);
    });
  }

  /** Ends the child (disconnect, then SIGKILL by PID after a grace period). */
  async stop(graceMs = 2000): Promise<void> {
    const child = this.child;
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    if (child.connected) child.disconnect();
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
  }
}

const invokedDirectly = process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
if (invokedDirectly) serveParent();
