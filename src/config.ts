/**
 * config.ini, parsed once, validated, frozen.
 *
 * Every controller reads the same file and finds itself by its client port. A bad value is a
 * `ConfigError` whose message is one line naming the problem; main.ts prints it and exits 1. So is
 * a setting or section this file does not know: a misspelt `consistency` must not start a cluster
 * that quietly keeps another promise.
 */

import { readFileSync } from 'node:fs';
import path from 'node:path';
import ini from 'ini';
import { asPeerId, MODES, type Mode, type PeerId } from './consistency/types.ts';
import type { ReadLeaseOptions } from './consistency/replicated-log.ts';
import { CLOCK_JUMP_MS_MIN } from './runtime/clock.ts';

export interface Address {
  host: string;
  port: number;
}

export interface NodeConfig {
  id: PeerId;
  client: Address;
  peer: Address;
  memcached: Address;
  /**
   * How this node dials particular peers, when not at their `peer` address (`dial.n2 = host:port`):
   * the fault runner routes each peer link through a proxy it controls.
   */
  dial: Readonly<Record<string, Address>>;
  /** With peer TLS: this node's certificate (its common name is the node id) and key (PEM files). */
  tls: { certFile: string; keyFile: string } | null;
  /** Where this node serves `/metrics` and its status page (src/http/); null = no HTTP server. */
  http: Address | null;
}

export interface ClusterConfig {
  /** The file this came from; relative paths in it are relative to its folder. */
  file: string;
  consistency: Mode;
  heartbeatIntervalMs: number;
  failureTimeoutMs: number;
  dataDir: string;
  logDir: string;
  valueBytesMax: number;
  /** Open client connections per controller; one more is refused (memcached's -c). */
  connectionsMax: number;
  /** Linearizable/sequential: compact the log once this many applied entries follow the snapshot. */
  compactAfterEntries: number;
  /**
   * Linearizability: reads answered from the local replica under read leases (`read_leases = on`),
   * with the one timing assumption they rest on; null: off, every read gets a read index (default).
   */
  readLeases: ReadLeaseOptions | null;
  /** Bytes of each controller's value cache (entries its memcached holds); 0 turns it off. */
  cacheBytesMax: number;
  /**
   * How far a write-ahead record must go before anything that depends on it leaves the controller:
   * `fsync`, to the disk; `write`, to the operating system (it survives the controller's death,
   * not the machine's).
   */
  walSync: WalSync;
  /**
   * How Linux schedules the controller: `batch` (SCHED_BATCH: a controller woken by a reply does
   * not preempt the process running on that core, so it finds more work per wake-up) or `normal`
   * (the system's default). See `src/runtime/scheduling.ts`.
   */
  cpuScheduling: CpuScheduling;
  /** Names this cluster; a peer of another cluster is refused at the handshake. */
  clusterId: string;
  /**
   * The shared cluster secret peers prove they hold before any other frame is read (HMAC
   * challenge–response). A file of at least 16 bytes, readable by its owner only.
   */
  secretFile: string;
  /** Mutual TLS on the peer port: the CA that signed every node's certificate; null = plain TCP. */
  peerTlsCaFile: string | null;
  /** Largest peer frame sent or accepted, header included (bytes). Default sized from valueBytesMax. */
  peerFrameBytesMax: number;
  /** Client limits and access, as memcached's own options set them. */
  clients: ClientAccess;
  nodes: readonly NodeConfig[];
}

/** What a client connection may do and hold. */
export interface ClientAccess {
  /** A connection idle this long is closed (memcached's idle_timeout); 0 = never. */
  idleTimeoutMs: number;
  /** A connection whose unsent replies pass this many bytes is not read until they drain. */
  outputBytesMax: number;
  /** Requests one connection may have in flight; past it the connection is not read. */
  requestsInFlightMax: number;
  /** Requests all connections may have in flight; past it no connection is read until half are answered. */
  controllerRequestsInFlightMax: number;
  /** Bytes (values and keys) of the requests the mode holds past which it is handed no more (but one). */
  controllerRequestBytesMax: number;
  /** Whether flush_all is served (memcached's -F turns it off). */
  flushAllEnabled: boolean;
  /** Client logins, `user:password` per line (memcached's -Y auth file); null = no login. */
  authFile: string | null;
}

export const WAL_SYNCS = ['fsync', 'write'] as const;
export type WalSync = (typeof WAL_SYNCS)[number];
export const CPU_SCHEDULINGS = ['batch', 'normal'] as const;
export type CpuScheduling = (typeof CPU_SCHEDULINGS)[number];

const ON_OFF = ['on', 'off'] as const;

/** Room in a peer frame beyond one value: header, key, message fields. */
export const PEER_FRAME_OVERHEAD_BYTES = 64 * 1024;
/** Bytes of entries a peer message batches before starting another (one larger entry goes alone). */
export const PEER_BATCH_BYTES_MAX = 4 * 1024 * 1024;

/** A frame holds one batch plus one value that did not fit in it, with room to spare. */
export function defaultPeerFrameBytesMax(valueBytesMax: number): number {
  return PEER_BATCH_BYTES_MAX + 2 * valueBytesMax + PEER_FRAME_OVERHEAD_BYTES;
}

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  readonly code = 'BAD_CONFIG';
}

/** Reads and validates a config file. Throws ConfigError. */
export function loadConfig(file: string): Readonly<ClusterConfig> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new ConfigError(`cannot read config file ${file}: ${(error as NodeJS.ErrnoException).code ?? error}`);
  }
  return parseConfig(text, file);
}

/** Every [cluster] setting (README, "Configuration"). */
const CLUSTER_KEYS: readonly string[] = [
  'consistency', 'heartbeat_interval_ms', 'failure_timeout_ms', 'data_dir', 'log_dir', 'wal_sync', 'cpu_scheduling',
  'connections_max', 'compact_after_entries', 'read_leases', 'read_lease_ms', 'clock_drift_ppm_max',
  'read_lease_margin_ms', 'value_bytes_max', 'cache_bytes_max', 'peer_frame_bytes_max', 'secret_file', 'cluster_id',
  'peer_tls_ca', 'idle_timeout_s', 'client_output_bytes_max', 'connection_requests_max', 'controller_requests_max',
  'controller_request_bytes_max', 'flush_all', 'auth_file',
];
/** Every [node.ID] setting but `dial.<peer>`. */
const NODE_KEYS: readonly string[] = ['client', 'peer', 'memcached', 'http', 'tls_cert', 'tls_key'];

/** Validates the text of a config file. Throws ConfigError. */
export function parseConfig(text: string, file: string): Readonly<ClusterConfig> {
  refuseRepeats(text, file);
  const raw = ini.parse(text) as Record<string, unknown>;
  refuseUnknown(Object.keys(raw), ['cluster', 'node'], `${file}: section or setting outside a section`);
  const cluster = section(raw, 'cluster');
  refuseUnknown(Object.keys(cluster), CLUSTER_KEYS, `${file}: [cluster] setting`);
  const base = path.dirname(path.resolve(file));
  const nodesRaw = raw.node;
  if (typeof nodesRaw !== 'object' || nodesRaw === null || Object.keys(nodesRaw).length === 0) {
    throw new ConfigError(`${file}: no [node.<id>] sections`);
  }
  const nodes = Object.entries(nodesRaw as Record<string, unknown>).map(([id, value]) =>
    parseNode(id, value, file, base),
  );
  checkDistinctAddresses(nodes, file);
  const heartbeatIntervalMs = integer(cluster, 'heartbeat_interval_ms', 100, { min: 5, max: 60_000 });
  const failureTimeoutMs = integer(cluster, 'failure_timeout_ms', 1000, { min: 20, max: 600_000 });
  if (failureTimeoutMs < 2 * heartbeatIntervalMs) {
    throw new ConfigError(
      `[cluster] failure_timeout_ms (${failureTimeoutMs}) must be at least twice heartbeat_interval_ms (${heartbeatIntervalMs})`,
    );
  }
  const valueBytesMax = integer(cluster, 'value_bytes_max', 1024 * 1024, { min: 1, max: 128 * 1024 * 1024 });
  const peerTlsCa = optionalString(cluster, 'peer_tls_ca');
  const peerTlsCaFile = peerTlsCa === null ? null : path.resolve(base, peerTlsCa);
  if (peerTlsCaFile !== null) {
    const missing = nodes.find((node) => node.tls === null);
    if (missing) throw new ConfigError(`${file}: peer_tls_ca is set but [node.${missing.id}] has no tls_cert and tls_key`);
  }
  const frameFloor = valueBytesMax + PEER_FRAME_OVERHEAD_BYTES;
  const peerFrameBytesMax = integer(cluster, 'peer_frame_bytes_max', defaultPeerFrameBytesMax(valueBytesMax), {
    min: frameFloor,
    max: 1024 * 1024 * 1024,
  });
  const authFile = optionalString(cluster, 'auth_file');
  const readLeases = parseReadLeases(cluster, heartbeatIntervalMs);
  return Object.freeze({
    file: path.resolve(file),
    consistency: parseMode(string(cluster, 'consistency', 'linearizability'), '[cluster] consistency'),
    heartbeatIntervalMs,
    failureTimeoutMs,
    dataDir: path.resolve(base, string(cluster, 'data_dir', 'data')),
    logDir: path.resolve(base, string(cluster, 'log_dir', 'logs')),
    valueBytesMax,
    connectionsMax: integer(cluster, 'connections_max', 1024, { min: 1, max: 1_000_000 }),
    compactAfterEntries: integer(cluster, 'compact_after_entries', 10_000, { min: 2, max: 100_000_000 }),
    readLeases,
    cacheBytesMax: integer(cluster, 'cache_bytes_max', 64 * 1024 * 1024, { min: 0, max: 64 * 1024 * 1024 * 1024 }),
    walSync: parseWalSync(string(cluster, 'wal_sync', 'write'), '[cluster] wal_sync'),
    cpuScheduling: parseCpuScheduling(string(cluster, 'cpu_scheduling', 'batch'), '[cluster] cpu_scheduling'),
    clusterId: parseClusterId(string(cluster, 'cluster_id', 'mckv')),
    secretFile: path.resolve(base, string(cluster, 'secret_file', 'cluster.secret')),
    peerTlsCaFile,
    peerFrameBytesMax,
    clients: Object.freeze({
      idleTimeoutMs: integer(cluster, 'idle_timeout_s', 0, { min: 0, max: 30 * 24 * 3600 }) * 1000,
      outputBytesMax: integer(cluster, 'client_output_bytes_max', 4 * 1024 * 1024, {
        min: 64 * 1024,
        max: 1024 * 1024 * 1024,
      }),
      requestsInFlightMax: integer(cluster, 'connection_requests_max', 1024, { min: 1, max: 1_000_000 }),
      // Below the replicated log's queue (10,000 requests, past which it refuses "busy").
      controllerRequestsInFlightMax: integer(cluster, 'controller_requests_max', 8192, { min: 2, max: 9000 }),
      controllerRequestBytesMax: integer(cluster, 'controller_request_bytes_max', 16 * 1024 * 1024, {
        min: 64 * 1024,
        max: 1024 * 1024 * 1024,
      }),
      flushAllEnabled: oneOf(string(cluster, 'flush_all', 'on'), ON_OFF, '[cluster] flush_all') === 'on',
      authFile: authFile === null ? null : path.resolve(base, authFile),
    }),
    nodes: Object.freeze(nodes),
  });
}

/**
 * `read_leases` (on | off, default on) and its timing: `read_lease_ms` (default 500, or two
 * heartbeats if longer), renewed every heartbeat, so at least two of them; `clock_drift_ppm_max`
 * (default 10000, 1%); `read_lease_margin_ms` (default 10, at least the clock's jump threshold).
 */
function parseReadLeases(cluster: Record<string, unknown>, heartbeatIntervalMs: number): ReadLeaseOptions | null {
  const leaseMs = integer(cluster, 'read_lease_ms', Math.max(500, 2 * heartbeatIntervalMs), { min: 10, max: 60_000 });
  const clockDriftPpmMax = integer(cluster, 'clock_drift_ppm_max', 10_000, { min: 0, max: 100_000 });
  // A suspend shorter than the clock's jump threshold goes unseen (src/runtime/clock.ts): the margin covers it.
  const marginMs = integer(cluster, 'read_lease_margin_ms', 10, { min: CLOCK_JUMP_MS_MIN, max: 60_000 });
  if (oneOf(string(cluster, 'read_leases', 'on'), ON_OFF, '[cluster] read_leases') === 'off') return null;
  if (leaseMs < 2 * heartbeatIntervalMs) {
    throw new ConfigError(`[cluster] read_lease_ms (${leaseMs}) must be at least twice heartbeat_interval_ms (${heartbeatIntervalMs})`);
  }
  return Object.freeze({ leaseMs, clockDriftPpmMax, marginMs });
}

/** Parses a consistency mode name, naming where it came from on error. */
export function parseMode(value: string, where: string): Mode {
  if ((MODES as readonly string[]).includes(value)) return value as Mode;
  throw new ConfigError(`${where}: unknown consistency mode '${value}' (expected ${MODES.join(', ')})`);
}

/** Parses a wal_sync value, naming where it came from on error. */
export function parseWalSync(value: string, where: string): WalSync {
  return oneOf(value, WAL_SYNCS, where);
}

/** Parses a cpu_scheduling value, naming where it came from on error. */
export function parseCpuScheduling(value: string, where: string): CpuScheduling {
  return oneOf(value, CPU_SCHEDULINGS, where);
}

function oneOf<T extends string>(value: string, choices: readonly T[], where: string): T {
  if ((choices as readonly string[]).includes(value)) return value as T;
  throw new ConfigError(`${where}: unknown value '${value}' (expected ${choices.join(' or ')})`);
}

/** Parses "host:port". */
export function parseAddress(value: string, where: string): Address {
  const [, host, portText] = /^(.+):(\d{1,5})$/.exec(value.trim()) ?? [];
  const port = Number(portText);
  if (host === undefined || port < 1 || port > 65535) {
    throw new ConfigError(`${where}: '${value}' is not host:port`);
  }
  return { host, port };
}

/** The node whose client port is `port` (and, when given, whose client host is `host`). */
export function findNode(config: ClusterConfig, port: number): NodeConfig {
  const node = config.nodes.find((candidate) => candidate.client.port === port);
  if (!node) {
    const ports = config.nodes.map((candidate) => candidate.client.port).join(', ');
    throw new ConfigError(`${config.file}: no node has client port ${port} (known: ${ports})`);
  }
  return node;
}

function parseClusterId(value: string): string {
  if (/^[A-Za-z0-9_.-]{1,64}$/.test(value)) return value;
  throw new ConfigError(`[cluster] cluster_id '${value}' is not 1 to 64 letters, digits, '.', '_' or '-'`);
}

function parseNode(id: string, value: unknown, file: string, base: string): NodeConfig {
  if (!/^[A-Za-z0-9_-]{1,32}$/.test(id)) throw new ConfigError(`${file}: bad node id '${id}'`);
  if (typeof value !== 'object' || value === null) throw new ConfigError(`${file}: [node.${id}] is empty`);
  const fields = value as Record<string, unknown>;
  refuseUnknown(Object.keys(fields).filter((key) => !key.startsWith('dial.')), NODE_KEYS, `${file}: [node.${id}] setting`);
  const address = (key: string): Address => {
    const text = fields[key];
    if (typeof text !== 'string') throw new ConfigError(`${file}: [node.${id}] is missing '${key}'`);
    return parseAddress(text, `${file}: [node.${id}] ${key}`);
  };
  const dial: Record<string, Address> = {};
  for (const [key, text] of Object.entries(fields)) {
    if (!key.startsWith('dial.')) continue;
    if (typeof text !== 'string') throw new ConfigError(`${file}: [node.${id}] ${key} is empty`);
    dial[key.slice('dial.'.length)] = parseAddress(text, `${file}: [node.${id}] ${key}`);
  }
  const certFile = fields.tls_cert;
  const keyFile = fields.tls_key;
  if ((certFile === undefined) !== (keyFile === undefined)) {
    throw new ConfigError(`${file}: [node.${id}] needs both tls_cert and tls_key, or neither`);
  }
  const tls =
    typeof certFile === 'string' && typeof keyFile === 'string'
      ? { certFile: path.resolve(base, certFile.trim()), keyFile: path.resolve(base, keyFile.trim()) }
      : null;
  return {
    id: asPeerId(id),
    client: address('client'),
    peer: address('peer'),
    memcached: address('memcached'),
    dial: Object.freeze(dial),
    tls,
    http: fields.http === undefined ? null : address('http'),
  };
}

function checkDistinctAddresses(nodes: readonly NodeConfig[], file: string): void {
  const seen = new Map<string, string>();
  for (const node of nodes) {
    const addresses = [['client', node.client], ['peer', node.peer], ['http', node.http]] as const;
    for (const [kind, address] of addresses) {
      if (address === null) continue;
      const key = `${address.host}:${address.port}`;
      const previous = seen.get(key);
      if (previous) throw new ConfigError(`${file}: ${node.id} ${kind} ${key} is already used by ${previous}`);
      seen.set(key, `${node.id} ${kind}`);
    }
  }
  // An HTTP port on a memcached's address would fail at start; say so here, with the rest.
  for (const node of nodes) {
    if (node.http === null) continue;
    const clash = nodes.find((other) => other.memcached.host === node.http?.host && other.memcached.port === node.http.port);
    if (clash) throw new ConfigError(`${file}: ${node.id} http ${node.http.host}:${node.http.port} is already used by ${clash.id} memcached`);
  }
}

/** Throws for the first of `keys` not among `known`, naming the likeliest one meant. */
/**
 * A setting given twice in one section, or a section given twice: the ini reader would keep the
 * last and drop the first without a word, so a setting added at the top of a file that already
 * has it further down would be ignored.
 */
function refuseRepeats(text: string, file: string): void {
  const seen = new Map<string, number>();
  let section = '';
  text.split(/\r?\n/).forEach((raw, index) => {
    const line = raw.trim();
    if (line === '' || line.startsWith(';') || line.startsWith('#')) return;
    const header = /^\[(.+)\]$/.exec(line);
    const name = header === null ? `[${section}] setting '${line.split('=')[0]?.trim() ?? ''}'` : `section [${header[1] ?? ''}]`;
    if (header !== null) section = header[1]?.trim() ?? '';
    const first = seen.get(name);
    if (first !== undefined) throw new ConfigError(`${file}: ${name} is given twice (lines ${first} and ${index + 1})`);
    seen.set(name, index + 1);
  });
}

function refuseUnknown(keys: readonly string[], known: readonly string[], what: string): void {
  const unknown = keys.find((key) => !known.includes(key));
  if (unknown === undefined) return;
  const near = known.find((candidate) => editDistance(unknown.toLowerCase(), candidate) <= 2);
  throw new ConfigError(`${what} '${unknown}' is unknown${near === undefined ? ` (known: ${known.join(', ')})` : ` (did you mean '${near}'?)`}`);
}

/** Levenshtein distance, for the suggestion above (short strings only). */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, index) => index);
  for (let i = 1; i <= a.length; i += 1) {
    const current = [i];
    for (let j = 1; j <= b.length; j += 1) {
      const substitution = (previous[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(Math.min((previous[j] ?? 0) + 1, (current[j - 1] ?? 0) + 1, substitution));
    }
    previous = current;
  }
  return previous[b.length] ?? 0;
}

function section(raw: Record<string, unknown>, name: string): Record<string, unknown> {
  const value = raw[name];
  if (value === undefined) return {};
  if (typeof value !== 'object' || value === null) throw new ConfigError(`[${name}] is not a section`);
  return value as Record<string, unknown>;
}

function string(fields: Record<string, unknown>, key: string, fallback: string): string {
  const value = fields[key];
  if (value === undefined) return fallback;
  if (typeof value !== 'string' || value.trim() === '') throw new ConfigError(`[cluster] ${key} is empty`);
  return value.trim();
}

function optionalString(fields: Record<string, unknown>, key: string): string | null {
  return fields[key] === undefined ? null : string(fields, key, '');
}

function integer(
  fields: Record<string, unknown>,
  key: string,
  fallback: number,
  range: { min: number; max: number },
): number {
  const value = fields[key];
  if (value === undefined) return fallback;
  const number = typeof value === 'string' && /^\d+$/.test(value.trim()) ? Number(value) : NaN;
  if (!Number.isSafeInteger(number) || number < range.min || number > range.max) {
    throw new ConfigError(`[cluster] ${key} = '${String(value)}' is not a whole number from ${range.min} to ${range.max}`);
  }
  return number;
}
