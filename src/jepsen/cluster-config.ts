/**
 * What a harness cluster is made of: its options and their defaults, its nodes, and the folder it
 * lives in (config.ini, cluster.secret, logs/), which `writeClusterConfig` lays out.
 *
 * Invariants: every node listens on 127.0.0.1 only, on ports picked free at start; config.ini
 * names the data and log folders relative to the cluster's folder, so the controllers (started
 * with that folder's config) keep everything inside it; with proxies, every node dials each peer
 * through the proxy of that directed link, never the peer itself.
 */

import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Mode } from '../consistency/types.ts';
import type { CpuScheduling, WalSync } from '../config.ts';

export interface ClusterOptions {
  mode: Mode;
  backend?: 'memcache' | 'memory';
  /** Route every peer link through a proxy that `cut`/`heal` control. */
  proxies?: boolean;
  heartbeatIntervalMs?: number;
  failureTimeoutMs?: number;
  /** Log compaction threshold (config.ini compact_after_entries). */
  compactAfterEntries?: number;
  /** config.ini wal_sync (default write, as the product's). */
  walSync?: WalSync;
  /** config.ini cpu_scheduling (default batch). */
  cpuScheduling?: CpuScheduling;
  /** Memory of each local memcached, in MB (its -m; default 256). */
  memcachedMemoryMb?: number;
  /** Start memcached without -M, so it evicts when full, as a memcached of the user's own may. */
  memcachedEvicts?: boolean;
  /** false starts controllers that do not replicate at all: a deliberately broken cluster. */
  replication?: boolean;
  /**
   * Keep the folder (config, logs, data) after stop. Default: whether MCKV_KEEP_CLUSTER_DIRS=1 is
   * set, so a test that failed once in many runs leaves its controllers' logs to read.
   */
  keepDir?: boolean;
  /** Extra Node.js flags for the controller processes, e.g. ['--cpu-prof'] to profile them. */
  controllerNodeArgs?: string[];
  /** Run the controllers with libfaketime, so that `stepWallClock` can move their wall clocks. */
  wallClockSteps?: boolean;
  /** Give each controller an HTTP port (/metrics, the status page) at `httpPort` (default true). */
  http?: boolean;
  /** More `name = value` lines for config.ini's [cluster] section, e.g. ['idle_timeout_s = 1']. */
  extraConfig?: string[];
  /** Let `stallDisk` delay the controllers' write-ahead fsyncs (FSYNC_DELAY_FILE_ENV). */
  diskStalls?: boolean;
}

/** ClusterOptions with every default filled in. */
export type ResolvedClusterOptions = Required<Omit<ClusterOptions, 'keepDir'>> & { keepDir: boolean };

/** `options` without the fields set to undefined, so that spreading it over defaults keeps them. */
export function definedOnly<T extends object>(options: T): T {
  return Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined)) as T;
}

/** `options` over the harness's defaults (fast heartbeats, the product's wal_sync and cpu_scheduling). */
export function withDefaults(options: ClusterOptions): ResolvedClusterOptions {
  return {
    backend: 'memcache' as const,
    proxies: false,
    heartbeatIntervalMs: 50,
    failureTimeoutMs: 500,
    compactAfterEntries: 10_000,
    walSync: 'write' as WalSync,
    cpuScheduling: 'batch' as CpuScheduling,
    memcachedMemoryMb: 256,
    memcachedEvicts: false,
    controllerNodeArgs: [],
    wallClockSteps: false,
    http: true,
    extraConfig: [],
    diskStalls: false,
    replication: true,
    keepDir: process.env.MCKV_KEEP_CLUSTER_DIRS === '1',
    ...definedOnly(options),
  };
}

export interface ClusterNode {
  id: string;
  clientPort: number;
  peerPort: number;
  memcachedPort: number;
  /** Where the controller serves /metrics and its status page. */
  httpPort: number;
  controller: ChildProcess | null;
  memcached: ChildProcess | null;
}

/** The config.ini of the cluster whose folder is `dir`. */
export function clusterConfigFile(dir: string): string {
  return path.join(dir, 'config.ini');
}

/**
 * Writes config.ini and a fresh cluster.secret into `dir`, and makes its logs/ folder. `links` are
 * the proxies by "from->to" (empty without proxies): each node dials its peers through them.
 */
export function writeClusterConfig(
  dir: string,
  cluster: { options: ResolvedClusterOptions; nodes: readonly ClusterNode[]; links: ReadonlyMap<string, { port: number }> },
): void {
  const { options, nodes, links } = cluster;
  const lines = [
    '[cluster]',
    `consistency = ${options.mode}`,
    `heartbeat_interval_ms = ${options.heartbeatIntervalMs}`,
    `failure_timeout_ms = ${options.failureTimeoutMs}`,
    `compact_after_entries = ${options.compactAfterEntries}`,
    `wal_sync = ${options.walSync}`,
    `cpu_scheduling = ${options.cpuScheduling}`,
    'data_dir = data',
    'log_dir = logs',
    'secret_file = cluster.secret',
    ...options.extraConfig,
    '',
  ];
  for (const node of nodes) {
    lines.push(
      `[node.${node.id}]`,
      `client = 127.0.0.1:${node.clientPort}`,
      `peer = 127.0.0.1:${node.peerPort}`,
      `memcached = 127.0.0.1:${node.memcachedPort}`,
    );
    if (options.http) lines.push(`http = 127.0.0.1:${node.httpPort}`);
    for (const [name, proxy] of links) {
      const [from, to] = name.split('->');
      if (from === node.id) lines.push(`dial.${to} = 127.0.0.1:${proxy.port}`);
    }
    lines.push('');
  }
  writeFileSync(clusterConfigFile(dir), lines.join('\n'));
  writeFileSync(path.join(dir, 'cluster.secret'), randomBytes(32).toString('base64'), { mode: 0o600 });
  mkdirSync(path.join(dir, 'logs'), { recursive: true });
}
