/**
 * The load generator's vocabulary: what a run is given (LoadOptions), what it measured
 * (LoadResult), and the contract between the measuring loop and a client that talks to a target
 * (LoadChannel, opened by an OpenChannels from a ChannelSpec, reporting to a ReplySink). The
 * memcached connections of ./load-client.ts and the etcd channels of ./etcd-load.ts both fulfil it.
 * Users import these names from ./loadgen.ts, which re-exports every one.
 */

import type { HistogramSnapshot } from './histogram.ts';

/** Which memcached wire protocol the generator speaks. */
export type WireProtocol = 'text' | 'binary';
/** Which API the target speaks: memcached's (over `protocol`) or etcd's (gRPC, through the etcd3 client). */
export type LoadApi = 'memcached' | 'etcd';
export type RequestKind = 'get' | 'set';
export type ReplyOutcome = 'hit' | 'miss' | 'stored' | 'error';

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
