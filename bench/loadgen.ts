/**
 * The benchmark's load generator: a closed-loop memcached client over raw `net` sockets (and,
 * for the etcd target, the etcd3 client of ./etcd-load.ts behind the same `LoadChannel` shape).
 *
 * Intuition: each connection keeps exactly `pipelineDepth` requests in flight; every reply
 * frees a slot that is refilled at once with a new get or set on a random key, so the offered
 * load adapts to what the target can serve (closed loop) and nothing queues inside the client.
 *
 * It runs in its own process (`LoadgenProcess` forks this file under tsx and talks to it over
 * the IPC channel) so its event loop never shares a thread with the benchmark driver, and the
 * driver can sample the target's CPU at the exact start and end of the measured window. This file
 * is that process's entry and the generator's public API, re-exported from its parts: ./workloads.ts,
 * ./load-types.ts, ./load-codec.ts (requests pre-encoded, replies parsed), ./load-client.ts (the
 * memcached connections) and ./load-run.ts (one run: preload, warm-up, measure, drain).
 *
 * Invariants: traffic goes only to 127.0.0.1; every run is bounded in time (connect, preload,
 * warm-up, duration, drain) and in memory (at most `pipelineDepth` requests per connection,
 * a bounded reply buffer, a fixed-size histogram); a reply is counted only if its request was
 * sent inside the measured window; a malformed reply is an error value that closes only its
 * own connection and counts its in-flight requests as errors.
 */

import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { LoadOptions, LoadPhase, LoadResult } from './load-types.ts';
import { runLoad } from './load-run.ts';

export { runLoad };
export { benchValue, KEY_PREFIX_DEFAULT, keyName, parseBinaryReply, parseTextReply, type ParsedReply } from './load-codec.ts';
export type {
  ChannelSpec,
  LatencySummary,
  LoadApi,
  LoadChannel,
  LoadOptions,
  LoadPhase,
  LoadResult,
  OpenChannels,
  ReplyOutcome,
  ReplySink,
  Request,
  RequestKind,
  WireProtocol,
} from './load-types.ts';
export {
  BULK_WORKLOAD,
  NAMED_WORKLOADS,
  parseWorkload,
  STANDARD_WORKLOADS,
  WORKLOAD_LIMITS,
  WORKLOAD_SPEC,
  type Workload,
  type WorkloadId,
} from './workloads.ts';

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
