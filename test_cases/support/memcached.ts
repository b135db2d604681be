/**
 * Test helper: a private memcached for one test file.
 *
 * Intuition: integration tests need a real memcached they own, on a port nobody else uses, that
 * they can stop and restart (empty) to test a backend restart. The local binary is preferred;
 * where it is missing but a Docker engine answers, testcontainers runs `memcached:1.6` instead.
 *
 * Invariants: only the process this helper spawned is ever signalled (by its PID); `start…`
 * resolves only once memcached accepts connections; every wait is bounded; the process is killed
 * when the test process exits, even if a test forgot to call `stop()`.
 */

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import { freePort } from '../../src/jepsen/cluster.ts';
import { MEMCACHED_STORE_ARGS } from '../../src/store/memcached-flags.ts';

/** A running memcached owned by the caller. */
export interface MemcachedInstance {
  host: string;
  port: number;
  /** PID of the memcached process (inside the container when run by testcontainers). */
  pid: number;
  /** Stops memcached and waits until it is gone. */
  stop(): Promise<void>;
  /** Kills memcached and starts it again, empty, on the same port; updates `pid`. */
  restart(): Promise<void>;
}

/** Options for `startMemcached`. */
export interface StartMemcachedOptions {
  /** Memory limit in MiB (default 64). */
  memoryMb?: number;
  /** Extra command-line arguments. */
  extraArgs?: string[];
  /** Extra environment of the local memcached process (e.g. libfaketime's, to offset its clock). */
  env?: Record<string, string>;
}

const MEMCACHED_BINARY = '/usr/bin/memcached';
const HOST = '127.0.0.1';
const READY_TIMEOUT_MS = 5000;
const STOP_TIMEOUT_MS = 3000;
const PORT_ATTEMPTS_MAX = 5;

/** Starts a private memcached on a free port of 127.0.0.1 and waits until it accepts connections. */
export async function startMemcached(options: StartMemcachedOptions = {}): Promise<MemcachedInstance> {
  if (existsSync(MEMCACHED_BINARY)) return startLocal(options);
  if (await dockerReachable()) return startContainer(options);
  throw new Error(
    `startMemcached: no ${MEMCACHED_BINARY} and no reachable Docker engine; install memcached ` +
      '(apt-get install memcached) or start Docker to run the integration tests',
  );
}


function memcachedArgs(port: number, options: StartMemcachedOptions): string[] {
  const args = ['-p', String(port), '-U', '0', '-l', HOST, ...MEMCACHED_STORE_ARGS, '-m', String(options.memoryMb ?? 64)];
  // memcached refuses to run as root unless told which user to be.
  if (process.getuid?.() === 0) args.push('-u', 'root');
  return [...args, ...(options.extraArgs ?? [])];
}

const liveChildren = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const child of liveChildren) if (child.exitCode === null) child.kill('SIGKILL');
  });
}

/** Spawns memcached on `port`; resolves when it accepts connections, rejects if it exits first. */
async function spawnReady(port: number, options: StartMemcachedOptions): Promise<ChildProcess> {
  installExitHook();
  const env = options.env === undefined ? process.env : { ...process.env, ...options.env };
  const child = spawn(MEMCACHED_BINARY, memcachedArgs(port, options), { stdio: ['ignore', 'ignore', 'pipe'], env });
  liveChildren.add(child);
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<never>((_resolve, reject) => {
    child.once('exit', (code, signal) => {
      liveChildren.delete(child);
      reject(new Error(`memcached on port ${port} exited (${code ?? signal}): ${stderr.trim()}`));
    });
    child.once('error', reject);
  });
  exited.catch(() => {}); // observed below; avoid an unhandled rejection after success
  await Promise.race([exited, waitAccepting(port)]);
  return child;
}

async function waitAccepting(port: number): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (await accepts(port)) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`memcached on port ${port} did not accept connections within ${READY_TIMEOUT_MS} ms`);
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, HOST);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

async function killAndWait(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGKILL');
  const timeout = new Promise<void>((_resolve, reject) =>
    setTimeout(() => reject(new Error(`memcached pid ${child.pid} did not exit`)), STOP_TIMEOUT_MS).unref(),
  );
  await Promise.race([gone, timeout]);
  liveChildren.delete(child);
}

async function startLocal(options: StartMemcachedOptions): Promise<MemcachedInstance> {
  let lastError: unknown = null;
  for (let attempt = 0; attempt < PORT_ATTEMPTS_MAX; attempt += 1) {
    const port = await freePort();
    try {
      const child = await spawnReady(port, options);
      return localInstance(port, child, options);
    } catch (error) {
      lastError = error; // most likely the port was taken in between: try another
    }
  }
  throw new Error(`startMemcached: could not start memcached: ${String(lastError)}`);
}

function localInstance(port: number, first: ChildProcess, options: StartMemcachedOptions): MemcachedInstance {
  let child = first;
  const instance: MemcachedInstance = {
    host: HOST,
    port,
    pid: first.pid ?? -1,
    stop: () => killAndWait(child),
    restart: async () => {
      await killAndWait(child);
      let lastError: unknown = null;
      for (let attempt = 0; attempt < PORT_ATTEMPTS_MAX; attempt += 1) {
        try {
          child = await spawnReady(port, options);
          instance.pid = child.pid ?? -1;
          return;
        } catch (error) {
          lastError = error;
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      }
      throw new Error(`memcached restart on port ${port} failed: ${String(lastError)}`);
    },
  };
  return instance;
}

async function dockerReachable(): Promise<boolean> {
  try {
    const { getContainerRuntimeClient } = await import('testcontainers');
    await getContainerRuntimeClient();
    return true;
  } catch {
    return false;
  }
}

async function startContainer(options: StartMemcachedOptions): Promise<MemcachedInstance> {
  const { GenericContainer, Wait } = await import('testcontainers');
  const container = await new GenericContainer('memcached:1.6')
    .withCommand(['memcached', '-U', '0', ...MEMCACHED_STORE_ARGS, '-m', String(options.memoryMb ?? 64), ...(options.extraArgs ?? [])])
    .withExposedPorts(11211)
    .withWaitStrategy(Wait.forListeningPorts())
    .start();
  const instance: MemcachedInstance = {
    host: container.getHost(),
    port: container.getMappedPort(11211),
    pid: 1,
    stop: async () => {
      await container.stop();
    },
    restart: async () => {
      await container.restart();
      instance.port = container.getMappedPort(11211);
    },
  };
  return instance;
}
