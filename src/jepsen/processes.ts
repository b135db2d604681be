/**
 * The child processes the cluster harness starts and stops: memcached, spawned on a given port with
 * its output appended to a log file, and any child stopped gracefully, then killed.
 *
 * Invariants: memcached never runs as root (memcached refuses it; we pick an unprivileged user),
 * runs with -M unless asked to evict, so a full memcached refuses writes instead of dropping
 * items; and a process is only ever signalled through the handle of the child this harness
 * started, never found by name.
 */

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { ownChild } from './owned-children.ts';
import { waitForMemcachedProtocol } from './ports.ts';
import { MEMCACHED_STORE_ARGS } from '../store/memcached-flags.ts';

/**
 * `-u USER` when running as root (memcached refuses root without it): Debian's memcached package's
 * unprivileged `memcache` user if there is one, else `nobody`, never root itself.
 */
function memcachedUserArgs(): string[] {
  if (process.getuid?.() !== 0) return [];
  const hasMemcacheUser = spawnSync('id', ['-u', 'memcache'], { stdio: 'ignore' }).status === 0;
  return ['-u', hasMemcacheUser ? 'memcache' : 'nobody'];
}

/**
 * Appends a child's stdout and stderr to `logFile`. Both streams feed one file, so neither may end
 * it: the file is closed once the child's streams have both closed, and output that arrives on
 * one after the other has ended is still written. Returns the file's stream (it emits `close`
 * once everything is written).
 */
export function logOutputTo(child: ChildProcess, logFile: string): WriteStream {
  const log = createWriteStream(logFile, { flags: 'a' });
  log.on('error', (error) => process.stderr.write(`cannot write ${logFile}: ${error.message}\n`));
  child.stdout?.pipe(log, { end: false });
  child.stderr?.pipe(log, { end: false });
  child.once('close', () => log.end());
  return log;
}

/**
 * Starts a memcached process on a free port as mckv runs it (store/memcached-flags.ts: `-M`, so
 * it never evicts silently, and its LRU settings), or, with `evicts`, with memcached's defaults.
 */
export async function spawnMemcached(port: number, logFile: string, memoryMb = 256, evicts = false): Promise<ChildProcess> {
  const args = ['-l', '127.0.0.1', '-p', String(port), '-U', '0', ...(evicts ? [] : MEMCACHED_STORE_ARGS), '-m', String(memoryMb)];
  const child = ownChild(spawn('memcached', [...args, ...memcachedUserArgs()], {
    stdio: ['ignore', 'pipe', 'pipe'],
  }));
  logOutputTo(child, logFile);
  const spawnError = new Promise<never>((_, reject) =>
    child.once('error', (error) => reject(new Error(`cannot start memcached: ${error.message} (apt-get install memcached)`))),
  );
  await Promise.race([waitForMemcachedProtocol(port, 10_000, () => child.exitCode === null), spawnError]);
  return child;
}

/**
 * Stops a memcached this harness started, whose items nobody needs afterwards: at once, by
 * SIGKILL. memcached acts on a SIGTERM only at its clock tick, once a second.
 */
export function stopMemcached(child: ChildProcess | null): Promise<void> {
  return stopChild(child, 'SIGKILL', 2000);
}

/** Sends `signal` to a child still running, then SIGKILL if it has not exited after `graceMs`; resolves once it exited. */
export async function stopChild(child: ChildProcess | null, signal: NodeJS.Signals, graceMs: number): Promise<void> {
  if (!child || child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}
