/**
 * The controller command (`mckv -c config.ini -p PORT`): reads and validates the config, makes
 * the logger and the replica store, starts a Controller and runs it until SIGTERM or SIGINT.
 *
 * main.ts imports this file only for that command, so the checker and the client never load the
 * controller, winston or the store drivers.
 */

import path from 'node:path';
import { ConfigError, findNode, loadConfig, parseMode } from '../config.ts';
import { Controller, type ControllerOptions } from './controller.ts';
import { cacheProblem, embeddedStoreBytesMax, heapLimitBytes } from './key-room.ts';
import { createParts } from './parts.ts';
import { FSYNC_DELAY_FILE_ENV } from './wal-background.ts';
import { createLogger } from '../runtime/log.ts';
import { missingControllerFlags } from '../runtime/node-flags.ts';
import { PID_FILE_NAME, pidFileOwner, removePidFile, writePidFile } from '../runtime/pid-file.ts';
import { scheduleAsBatch } from '../runtime/scheduling.ts';
import { MemcachedBackend } from '../store/memcached.ts';
import { MemoryBackend } from '../store/memory.ts';

/** How long a stopped controller waits for its log file to take its last lines. */
const LOG_CLOSE_MS = 2000;

/** What the command line says about the controller to run. */
export interface ControllerCommand {
  configFile: string;
  /** The client port: selects this controller's [node.*] section. */
  clientPort: number;
  /** memcached host and port; each defaults to the node's `memcached` in config.ini. */
  memcachedHost?: string;
  memcachedPort?: number;
  store: 'memcache' | 'memory';
  /** `-cons`: overrides config.ini's consistency. */
  mode?: string;
  /** false only for --unsafe-no-replication (tests). */
  replication: boolean;
  /** --rejoin: the node lost its data_dir and must recover its log from its peers. */
  rejoin?: boolean;
}

/** Starts the controller; resolves with the exit code: 0 once a signal has stopped it, 1 at once if it cannot go on. */
export async function runController(command: ControllerCommand): Promise<number> {
  const config = loadConfig(command.configFile);
  const node = findNode(config, command.clientPort);
  // Before anything reads this node's files: two controllers writing one write-ahead file would corrupt it.
  const nodeDir = path.join(config.dataDir, node.id);
  const owner = pidFileOwner(nodeDir);
  if (owner !== null) throw new ConfigError(`${nodeDir} is in use by the controller with pid ${owner} (its ${PID_FILE_NAME}); stop that one first`);
  const mode = command.mode === undefined ? config.consistency : parseMode(command.mode, '-cons');
  const heapBytes = heapLimitBytes();
  const cacheTooLarge = cacheProblem(config.cacheBytesMax, heapBytes);
  if (cacheTooLarge !== null) throw new ConfigError(`${command.configFile}: ${cacheTooLarge}`);
  const log = createLogger({ logDir: config.logDir, fileName: `${node.id}.log`, meta: { node: node.id } });
  if (config.cpuScheduling === 'batch') {
    const refused = scheduleAsBatch();
    if (refused !== null) log.warn('cpu_scheduling = batch not applied; running with the default policy', { reason: refused });
  }
  const host = command.memcachedHost ?? node.memcached.host;
  const port = command.memcachedPort ?? node.memcached.port;
  const backendAddress = command.store === 'memory' ? 'embedded' : `${host}:${port}`;
  const backend = command.store === 'memory' ? new MemoryBackend({ bytesMax: embeddedStoreBytesMax(heapBytes) }) : new MemcachedBackend({ host, port });
  if (!command.replication) log.warn('replication is OFF (--unsafe-no-replication): this controller keeps no promise');
  // Set only by the test harness (the disk-stall fault): fsyncs then wait as long as the file says.
  const fsyncDelayFile = process.env[FSYNC_DELAY_FILE_ENV] ?? null;
  if (fsyncDelayFile !== null) log.warn('write-ahead fsyncs are delayed by a test file', { file: fsyncDelayFile });
  // A controller that cannot go on (its write-ahead file refused a write) ends the process with 1,
  // at once: main.ts exits as soon as this resolves.
  let reportFatal: () => void = () => undefined;
  const fatal = new Promise<number>((resolve) => {
    reportFatal = () => resolve(1);
  });
  const options: ControllerOptions = {
    config, node, mode, backend, backendAddress, log, replication: command.replication, fsyncDelayFile, fatal: reportFatal,
    rejoin: command.rejoin ?? false,
  };
  const controller = await Promise.race([Controller.start(options, (hooks) => createParts(options, hooks)), fatal]);
  if (typeof controller === 'number') return controller;
  const missingFlags = missingControllerFlags();
  if (missingFlags.length > 0) {
    log.warn('node was started without the controller\'s flags: after a stall its heap shrinks and writes cost more for minutes', {
      missing: missingFlags, howTo: `node ${missingFlags.join(' ')} dist/main.js …, or the mckv bin, ./startup.sh or npm start`,
    });
  }
  // Listening: this is the node's controller now; ./stop.sh finds it by this file, however started.
  const pidFile = writePidFile(nodeDir);
  const stopped = new Promise<number>((resolve) => {
    const stop = (signal: string): void => {
      log.info('stopping', { signal });
      controller.stop().then(() => resolve(0), () => resolve(0));
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  const code = await Promise.race([stopped, fatal]);
  removePidFile(pidFile);
  // Stopped by a signal: its last lines (the stop, the leave) reach the log file before the exit.
  // A fatal error exits at once instead: the controller is still serving then.
  if (code === 0) await log.close(LOG_CLOSE_MS);
  return code;
}
