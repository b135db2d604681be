/**
 * The parts one controller runs with, made from config.ini: the replica, the backend watch, the
 * write-ahead file, the mode's machine, the peer network, the client server and the HTTP status
 * server. The controller is handed them (Controller.start), so it only wires and runs the loop.
 *
 * The parts call back into the controller only through `ControllerHooks`, and only once running.
 * They are made in this order, which is also the order a bad file is reported in: the backend's
 * state files, the write-ahead file, the cluster secret and TLS files, the clients' auth file.
 */

import path from 'node:path';
import { machineBootId } from '../runtime/boot-id.ts';
import { incarnationFloorAt } from '../runtime/incarnation.ts';
import { clockMs } from '../runtime/clock.ts';
import { versionNode } from '../consistency/hlc.ts';
import { isOrderedMode, type Event, type Machine } from '../consistency/types.ts';
import type { Address } from '../config.ts';
import type { ControllerOptions } from './controller.ts';
import { StatusHttp } from '../http/server.ts';
import type { Logger } from '../runtime/log.ts';
import { clientConnectionsRoom, OPEN_FILES_RESERVE, openFilesLimit, openFilesNow } from '../runtime/open-files.ts';
import { readClusterSecret, readPeerTls } from '../peer/credentials.ts';
import { PeerNetwork, sendQueueBytesFor } from '../peer/network.ts';
import { loadAuthFile } from '../protocol/auth.ts';
import { ProtocolServer, type CommandHandler } from '../protocol/server.ts';
import { DEFAULT_LIMITS } from '../protocol/types.ts';
import type { NodeSummary } from '../status/show.ts';
import { Replica } from '../store/replica.ts';
import { WriteAheadFile } from '../wal.ts';
import { BackendWatch } from './backend-watch.ts';
import { clusterSettings } from './cluster-settings.ts';
import { createMachine, priorityKinds } from './create-machine.ts';
import type { WriteAhead } from './durability.ts';
import { heapLimitBytes, keysMaxFor } from './key-room.ts';
import { MemoryReporter } from './memory-reporter.ts';
import type { ReplicaOwner } from './replica-owner.ts';
import { BackgroundWriteAhead, INLINE_WRITE_BACKOFF_MS } from './wal-background.ts';

/** What the parts call in the controller once it runs. */
export interface ControllerHooks {
  enqueue: (event: Event<unknown>) => void;
  /** Runs `work` once everything the mode has written so far is durable. */
  whenDurable: (work: () => void) => void;
  handle: CommandHandler;
  summary: () => NodeSummary;
}

export interface ControllerParts {
  /** The controller's logger (carries the node id). */
  log: Logger;
  memory: MemoryReporter;
  replica: Replica;
  watch: BackendWatch;
  /** Where the durability gate writes: the node's write-ahead file, off the event loop. */
  writeAhead: WriteAhead;
  machine: Machine<unknown>;
  network: PeerNetwork;
  /** `/metrics` and the status page, when config.ini gives this node an `http` address. */
  http: StatusHttp | null;
  server: ProtocolServer;
  /** What decides whether this mode takes the replica as its own (see replica-owner.ts). */
  replicaOwner: ReplicaOwner;
}

/** Makes the parts of the controller `options` describe (reading its files, opening none of its ports). */
export function createParts(options: ControllerOptions, hooks: ControllerHooks): ControllerParts {
  const { config, node, mode } = options;
  const log = options.log.child({ node: node.id });
  // Causal mode keeps eventual's replica: versions per writer, tombstones.
  const peerVersions = !isOrderedMode(mode);
  const logMode = !peerVersions && (options.replication ?? true);
  const eventual = peerVersions && (options.replication ?? true);
  const keys = { count: (): number => replica.keyCount(), max: keysMaxFor(heapLimitBytes(), peerVersions) };
  const memory = new MemoryReporter(eventual ? versionNode : () => 0, hooks.enqueue, keys);
  // memcached refusing a merge for want of memory leaves the keys as they were: eventual re-reads
  // them; causal rolls its visible vector back to before the refused merge and is sent it again.
  const refusalsKeepTrust = eventual;
  // The log modes replay their log onto the replica after a restart; skipping ops the replica
  // already holds (its cas ≥ the entry's index) makes that replay idempotent.
  const replica = new Replica(options.backend, {
    tombstones: peerVersions,
    replay: logMode ? 'skip-applied' : 'plain',
    cacheBytesMax: config.cacheBytesMax,
    valueBytesMax: config.valueBytesMax,
    refusalsKeepTrust,
    // memcached's reply to an apply's store would only wake the controller: a failure comes back
    // unasked, and the log's replay repairs what it missed.
    quietApplies: logMode,
    keysMax: keys.max,
  });
  const stateDir = path.join(config.dataDir, node.id);
  const walFile = path.join(stateDir, 'wal.bin');
  const watch = new BackendWatch({
    replica,
    backend: options.backend,
    stateDir,
    memory,
    holdsFailedApplies: logMode,
    refusalsKeepTrust,
    valueBytesMax: config.valueBytesMax,
    log,
    enqueue: hooks.enqueue,
    whenDurable: hooks.whenDurable,
  });
  replica.onStoreLost = (error) => watch.failed('apply', error);
  const walOwner = { clusterId: config.clusterId, nodeId: node.id };
  // A node that lost its files (--rejoin) recovers whatever it holds.
  const rejoin = options.rejoin === true;
  const bootId = config.walSync === 'write' ? machineBootId() : null;
  const persisted = WriteAheadFile.read(walFile, walOwner);
  const writeAhead = new BackgroundWriteAhead({
    file: walFile, owner: walOwner, fsyncDelayFile: options.fsyncDelayFile ?? null,
    onSlowWrite: (ms) => log.warn('a write-ahead write into the page cache was slow; writing through the thread pool for a while', {
      ms: Math.round(ms), forMs: INLINE_WRITE_BACKOFF_MS,
    }),
  });
  const { tornBytesCut } = writeAhead.opened;
  if (tornBytesCut > 0) log.warn('write-ahead file ended in a torn record; cut it off', { file: walFile, bytes: tornBytesCut });
  const peers = config.nodes.filter((peer) => peer.id !== node.id);
  const machine = createMachine(mode, options.replication ?? true, config.compactAfterEntries, {
    self: node.id,
    peers: peers.map((peer) => peer.id),
    random: Math.random,
    heartbeatIntervalMs: config.heartbeatIntervalMs,
    failureTimeoutMs: config.failureTimeoutMs,
    persisted,
    nowMs: clockMs(),
    valueBytesMax: config.valueBytesMax,
    keyHeld: (key) => replica.indexHas(key),
  }, { readLeases: config.readLeases, bootId, rejoin, incarnationFloor: incarnationFloorAt(Date.now()) });
  const secret = readClusterSecret(config.secretFile);
  const tls = config.peerTlsCaFile === null || node.tls === null
    ? null
    : readPeerTls({ caFile: config.peerTlsCaFile, certFile: node.tls.certFile, keyFile: node.tls.keyFile });
  const network = new PeerNetwork({
    self: node.id,
    listen: node.peer,
    peers: peers.map((peer) => ({ id: peer.id, ...(node.dial[peer.id] ?? peer.peer) })),
    secret,
    clusterId: config.clusterId,
    settings: clusterSettings(mode, config.readLeases, config.valueBytesMax),
    tls,
    frameBytesMax: config.peerFrameBytesMax,
    sendQueueBytesMax: sendQueueBytesFor(config.clients.controllerRequestBytesMax, config.peerFrameBytesMax),
    priorityKinds: priorityKinds(mode),
    heartbeatIntervalMs: config.heartbeatIntervalMs,
    failureTimeoutMs: config.failureTimeoutMs,
    heartbeatInfo: hooks.summary,
    memoryReport: () => memory.report(),
    log: log.child({ component: 'peer' }),
  });
  const http: StatusHttp | null = node.http === null
    ? null
    : createStatusHttp(options, node.http, { log, hooks, network, replica, memory, server: (): ProtocolServer => server });
  const server = new ProtocolServer({
    host: node.client.host,
    port: node.client.port,
    limits: {
      ...DEFAULT_LIMITS,
      valueBytesMax: config.valueBytesMax,
      connectionsMax: clientConnectionsMax(config.connectionsMax, log),
      outputBytesMax: config.clients.outputBytesMax,
      requestsInFlightMax: config.clients.requestsInFlightMax,
      serverRequestsInFlightMax: config.clients.controllerRequestsInFlightMax,
      serverRequestBytesInFlightMax: config.clients.controllerRequestBytesMax,
    },
    idleTimeoutMs: config.clients.idleTimeoutMs,
    flushAllEnabled: config.clients.flushAllEnabled,
    // Read once, here: an unreadable or malformed auth file stops the start with one line.
    login: config.clients.authFile === null ? null : loadAuthFile(config.clients.authFile),
    handler: http === null ? hooks.handle : http.timed(hooks.handle),
    // Every mode carries out a connection's commands in the order handed over: the replicated
    // log through its session order (consistency/log/session-order.ts); eventual and local
    // issue their effects in that order, and the Replica keeps it per key.
    handlerKeepsOrder: true,
    log: log.child({ component: 'protocol' }),
  });
  const replicaOwner = { mode, stateDir, logRecords: persisted.length > 0, rejoin };
  return { log, memory, replica, watch, writeAhead, machine, network, http, server, replicaOwner };
}

/** connections_max, or what the open-files limit leaves for clients (../runtime/open-files.ts), said once. */
function clientConnectionsMax(configured: number, log: Logger): number {
  const room = clientConnectionsRoom(configured, openFilesLimit(), openFilesNow());
  if (room.max < configured) {
    log.warn('connections_max lowered: the open-files limit leaves less for clients', {
      connectionsMax: configured,
      clientsTaken: room.max,
      openFilesLimit: room.limit,
      openFiles: room.open,
      reserved: OPEN_FILES_RESERVE,
      fix: `raise the open-files limit (ulimit -n) to ${configured + (room.open ?? 0) + OPEN_FILES_RESERVE} or more`,
    });
  }
  return room.max;
}

/** The HTTP status server (src/http/), reading the controller's parts when asked. */
function createStatusHttp(
  options: ControllerOptions,
  listen: Address,
  parts: {
    log: Logger; hooks: ControllerHooks; network: PeerNetwork; replica: Replica; memory: MemoryReporter; server: () => ProtocolServer;
  },
): StatusHttp {
  const { network, replica } = parts;
  return new StatusHttp({
    node: options.node.id,
    mode: options.mode,
    listen,
    log: parts.log.child({ component: 'http' }),
    source: {
      summary: parts.hooks.summary,
      peerView: () => network.peerView(),
      clientStats: () => parts.server().stats(),
      keyCount: () => replica.keyCount(),
      keysMax: () => parts.memory.keysMax,
      indexEntries: () => replica.indexEntries(),
      fetch: (keys) => replica.fetch(keys),
    },
  });
}
