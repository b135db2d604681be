/**
 * A throwaway mckv cluster of real processes on 127.0.0.1, for the fault runner and the
 * integration tests: three memcached (or the embedded store), three controller processes, and
 * optionally a proxy on every directed peer link so links can be cut. The Cluster class starts
 * and stops them and carries out the faults (kill, pause, power loss, disk stalls, wall-clock
 * steps, backend restarts and filling, cut and slow links) on them.
 *
 * Every port is picked free at start (never the default cluster ports), everything lives in one
 * temporary folder, and processes are stopped only by the PIDs this harness started. The pieces
 * live next door (ports.ts, processes.ts, cluster-config.ts, console-log.ts); this file re-exports
 * what the tests, bench/ and the runner import from it.
 */

import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isOrderedMode, type Mode } from '../consistency/types.ts';
import { loadConfig } from '../config.ts';
import { BackendFiller } from './backend-fill.ts';
import { LinkProxy } from './proxy.ts';
import { setWallClockOffset, wallClockEnv } from './wall-clock.ts';
import { FSYNC_DELAY_FILE_ENV } from '../controller/wal-background.ts';
import { loseUnsyncedRecords } from './power-loss.ts';
import { controllerEntryArgs } from './controller-bundle.ts';
import { clusterConfigFile, withDefaults, writeClusterConfig, type ClusterNode, type ClusterOptions, type ResolvedClusterOptions } from './cluster-config.ts';
import * as consoleLog from './console-log.ts';
import { freePort, waitForMemcachedProtocol, waitUntilServing } from './ports.ts';
import { atHarnessEnd, ownChild } from './owned-children.ts';
import { logOutputTo, spawnMemcached, stopChild, stopMemcached } from './processes.ts';

export { definedOnly, type ClusterNode, type ClusterOptions } from './cluster-config.ts';
export { freePort, waitForMemcachedProtocol, waitUntilServing } from './ports.ts';
export { spawnMemcached, stopMemcached } from './processes.ts';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export class Cluster {
  readonly nodes: ClusterNode[];
  /** Proxies by "from->to". */
  readonly links = new Map<string, LinkProxy>();
  private stopped = false;
  /** What `fillBackend` wrote, by node, until `emptyBackend` deletes it. */
  private readonly fillers = new Map<string, BackendFiller>();
  /** Each node's boot number (see losePower). */
  private readonly boots = new Map<string, number>();
  /** Takes back the removal of the folder should this process end first (see atHarnessEnd). */
  private readonly forgetFolder: () => void;

  private constructor(
    readonly options: ResolvedClusterOptions,
    readonly dir: string,
    nodes: ClusterNode[],
  ) {
    this.nodes = nodes;
    this.forgetFolder = atHarnessEnd(() => this.removeFolder());
  }

  static async start(options: ClusterOptions): Promise<Cluster> {
    const full = withDefaults(options);
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mckv-cluster-'));
    const nodes: ClusterNode[] = [];
    for (const id of ['n1', 'n2', 'n3']) {
      nodes.push({
        id,
        clientPort: await freePort(),
        peerPort: await freePort(),
        memcachedPort: await freePort(),
        httpPort: await freePort(),
        controller: null,
        memcached: null,
      });
    }
    const cluster = new Cluster(full, dir, nodes);
    try {
      await cluster.startLinks();
      writeClusterConfig(dir, cluster);
      if (full.backend === 'memcache') {
        await Promise.all(nodes.map(async (node) => (node.memcached = await spawnMemcached(node.memcachedPort, cluster.logFile(`memcached-${node.id}`), cluster.options.memcachedMemoryMb, cluster.options.memcachedEvicts))));
      }
      await Promise.all(nodes.map((node) => cluster.startController(node.id)));
      await Promise.all(nodes.map((node) => waitUntilServing(node.clientPort, 30_000)));
    } catch (error) {
      // Say why: the last lines each controller printed, and keep the folder for its logs.
      const tails = cluster.logTails(8);
      cluster.options.keepDir = true;
      await cluster.stop();
      throw new Error(`${(error as Error).message}\ncluster folder kept: ${dir}\n${tails}`, { cause: error });
    }
    return cluster;
  }

  get configFile(): string {
    return clusterConfigFile(this.dir);
  }

  node(id: string): ClusterNode {
    const node = this.nodes.find((candidate) => candidate.id === id);
    if (!node) throw new Error(`no node ${id}`);
    return node;
  }

  logFile(name: string): string {
    return path.join(this.dir, 'logs', `${name}.out`);
  }

  /** The last `count` lines each controller printed, under its id: what to show when a run went wrong. */
  logTails(count: number): string {
    return this.nodes.map((node) => `--- ${node.id}:\n${consoleLog.lastLines(this.logFile(node.id), count)}`).join('\n');
  }

  /**
   * Starts (or restarts) one controller process, with `extraArgs` on its command line, and waits
   * until it answers. `mode` (default the cluster's) is its `-cons`; `openFilesMax`, its limit on
   * open files (set with util-linux's prlimit, which then runs it).
   */
  async startController(
    id: string,
    extraArgs: readonly string[] = [],
    mode: Mode = this.options.mode,
    openFilesMax?: number,
  ): Promise<void> {
    const node = this.node(id);
    const args = [
      ...this.options.controllerNodeArgs,
      // A CPU profile of each controller, written as it stops (docs/benchmarks.md).
      ...(process.env.MCKV_PROF_DIR ? ['--cpu-prof', `--cpu-prof-dir=${process.env.MCKV_PROF_DIR}`] : []),
      ...controllerEntryArgs(repoRoot),
      '-c',
      this.configFile,
      '-p',
      String(node.clientPort),
      '--kvtype',
      this.options.backend,
      '-cons',
      mode,
      ...extraArgs,
    ];
    if (!this.options.replication) args.push('--unsafe-no-replication');
    const env: NodeJS.ProcessEnv = { ...process.env, MCKV_BOOT_ID: `${path.basename(this.dir)}-${id}-boot${this.bootOf(id)}` };
    if (this.options.wallClockSteps) Object.assign(env, wallClockEnv(this.wallClockFile(id)));
    if (this.options.diskStalls) {
      // A restarted controller keeps the stall its file says, as a slow disk stays slow.
      if (!existsSync(this.diskStallFile(id))) this.stallDisk(id, 0);
      env[FSYNC_DELAY_FILE_ENV] = this.diskStallFile(id);
    }
    const command = openFilesMax === undefined ? process.execPath : 'prlimit';
    const commandArgs = openFilesMax === undefined ? args : [`--nofile=${openFilesMax}:${openFilesMax}`, '--', process.execPath, ...args];
    const child = ownChild(spawn(command, commandArgs, { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'], env }));
    logOutputTo(child, this.logFile(id));
    node.controller = child;
    await waitForMemcachedProtocol(node.clientPort, 30_000, () => child.exitCode === null && child.signalCode === null);
  }

  private wallClockFile(id: string): string {
    return path.join(this.dir, `wall-clock-${id}`);
  }

  /**
   * Steps a controller's wall clock to `offsetSeconds` from the system's (0: back in step), as an
   * operator or NTP stepping its machine's clock would; it takes effect within
   * WALL_CLOCK_REREAD_SECONDS. Needs a cluster started with `wallClockSteps`.
   */
  stepWallClock(id: string, offsetSeconds: number): void {
    if (!this.options.wallClockSteps) throw new Error('stepWallClock needs a cluster started with wallClockSteps');
    this.node(id); // throws for a node this cluster does not have
    setWallClockOffset(this.wallClockFile(id), offsetSeconds);
  }

  private diskStallFile(id: string): string {
    return path.join(this.dir, `fsync-delay-${id}`);
  }

  /**
   * Delays every write-ahead fsync of a controller by `delayMs` before it runs (0: no more), as a
   * disk that stalls would; an fsync already waiting keeps its delay. Needs a cluster started
   * with `diskStalls`.
   */
  stallDisk(id: string, delayMs: number): void {
    if (!this.options.diskStalls) throw new Error('stallDisk needs a cluster started with diskStalls');
    if (!Number.isSafeInteger(delayMs) || delayMs < 0) throw new Error(`fsync delay must be whole ms, got ${delayMs}`);
    this.node(id); // throws for a node this cluster does not have
    writeFileSync(this.diskStallFile(id), `${delayMs}\n`);
  }

  /** Sends a signal to a controller process this harness started. */
  signal(id: string, signal: NodeJS.Signals): void {
    const child = this.node(id).controller;
    if (child?.pid === undefined || child.exitCode !== null) return;
    try {
      process.kill(child.pid, signal);
    } catch (error) {
      // Gone already (it died, and its exit is not reported yet): nothing to signal.
      if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
    }
  }

  /**
   * The node's machine loses power: its controller is killed, the write-ahead records the
   * operating system had not written yet are gone (with `wal_sync = write`: all but `keptFraction`
   * of those after the last fsync, see power-loss.ts), its memcached restarts empty, and the
   * controller's next start is in a new boot (MCKV_BOOT_ID). `startController` brings it back.
   */
  async losePower(id: string, keptFraction: number): Promise<void> {
    await this.kill(id);
    if (this.options.walSync === 'write') {
      const file = path.join(this.dir, 'data', id, 'wal.bin');
      if (existsSync(file)) loseUnsyncedRecords(file, { clusterId: loadConfig(this.configFile).clusterId, nodeId: id }, keptFraction);
    }
    await this.restartBackend(id);
    this.boots.set(id, this.bootOf(id) + 1);
  }

  /**
   * Starts a controller after `losePower` and, in the ordered modes with `wal_sync = write`, waits
   * (up to 30 s) until its log says it recovered, so that the next power loss strikes only once this
   * one is over, as the product assumes (one machine at a time). Eventual and causal modes keep no
   * write-ahead log: nothing to recover, anti-entropy refills the emptied replica.
   */
  async powerOn(id: string): Promise<void> {
    const from = this.logBytes(id);
    await this.startController(id);
    if (!isOrderedMode(this.options.mode) || this.options.walSync !== 'write') return;
    if ((await this.logSince(id, from, 'recovered: ', 30_000)) === null) {
      throw new Error(`${id} did not recover within 30 s of its power coming back (see ${this.logFile(id)})`);
    }
  }

  /** How long a controller's console log is now: where `logSince` starts reading. */
  logBytes(id: string): number {
    return consoleLog.logBytes(this.logFile(id));
  }

  /**
   * What a controller's console log gained since byte `from`, once it holds `text`; null if it does
   * not within `timeoutMs`. Reads only the new bytes.
   */
  logSince(id: string, from: number, text: string, timeoutMs: number): Promise<string | null> {
    return consoleLog.logSince(this.logFile(id), from, text, timeoutMs);
  }

  /** Which boot of its (simulated) machine a node's controller runs in. */
  private bootOf(id: string): number {
    return this.boots.get(id) ?? 1;
  }

  /** SIGKILL a controller and wait for it to be gone. */
  async kill(id: string): Promise<void> {
    await this.end(id, 'SIGKILL');
  }

  /**
   * Stop a controller as an operator would (SIGTERM: it tells its peers it leaves, then exits) and
   * wait for it to be gone; SIGKILL if it has not exited within `graceMs`.
   */
  async stopController(id: string, graceMs = 5_000): Promise<void> {
    await this.end(id, 'SIGTERM', graceMs);
  }

  private async end(id: string, signal: NodeJS.Signals, graceMs?: number): Promise<void> {
    const child = this.node(id).controller;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    this.signal(id, signal);
    const timer = graceMs === undefined ? null : setTimeout(() => this.signal(id, 'SIGKILL'), graceMs);
    await exited;
    if (timer !== null) clearTimeout(timer);
    this.node(id).controller = null;
  }

  pause(id: string): void {
    this.signal(id, 'SIGSTOP');
  }

  resume(id: string): void {
    this.signal(id, 'SIGCONT');
  }

  /** Stops a node's memcached (SIGSTOP) until resumeBackend. */
  pauseBackend(id: string): void {
    this.node(id).memcached?.kill('SIGSTOP');
  }

  resumeBackend(id: string): void {
    this.node(id).memcached?.kill('SIGCONT');
  }

  /** Kills a node's memcached and starts it again, empty, on the same port (with `memoryMb`: that -m). */
  async restartBackend(id: string, memoryMb = this.options.memcachedMemoryMb): Promise<void> {
    await this.killBackend(id);
    await this.startBackend(id, memoryMb);
  }

  /** Kills a node's memcached (SIGKILL): its port refuses connections until startBackend. */
  async killBackend(id: string): Promise<void> {
    const node = this.node(id);
    const child = node.memcached;
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGKILL');
      await exited;
    }
    node.memcached = null;
  }

  /** Starts a node's memcached, empty, unless it runs. */
  async startBackend(id: string, memoryMb = this.options.memcachedMemoryMb): Promise<void> {
    const node = this.node(id);
    if (node.memcached !== null && node.memcached.exitCode === null && node.memcached.signalCode === null) return;
    node.memcached = await spawnMemcached(node.memcachedPort, this.logFile(`memcached-${node.id}`), memoryMb, this.options.memcachedEvicts);
  }

  /** Another client fills the node's memcached until it refuses writes (see backend-fill.ts). */
  async fillBackend(id: string): Promise<void> {
    const filler = new BackendFiller({ port: this.node(id).memcachedPort, tag: id });
    this.fillers.set(id, filler);
    await filler.fill();
  }

  /** Deletes what `fillBackend` wrote into the node's memcached. */
  async emptyBackend(id: string): Promise<void> {
    const filler = this.fillers.get(id);
    this.fillers.delete(id);
    await filler?.empty();
  }

  /** Cuts both directions between a and b (or one direction with oneWay). */
  cut(a: string, b: string, oneWay = false): void {
    this.link(a, b).cutLink();
    if (!oneWay) this.link(b, a).cutLink();
  }

  /** Cuts a node off from every other node. */
  isolate(id: string): void {
    for (const other of this.nodes) if (other.id !== id) this.cut(id, other.id);
  }

  /** Drops every connection to and from a node; new ones are taken at once (a reset storm, a NIC reset). */
  resetLinks(id: string): void {
    for (const other of this.nodes) {
      if (other.id === id) continue;
      this.link(id, other.id).reset();
      this.link(other.id, id).reset();
    }
  }

  /** Delays every byte to and from a node by `delayMs` (a slow network); healAll ends it. */
  slow(id: string, delayMs: number): void {
    for (const other of this.nodes) {
      if (other.id === id) continue;
      this.link(id, other.id).slow(delayMs);
      this.link(other.id, id).slow(delayMs);
    }
  }

  /** Ends every cut and every delay. */
  healAll(): void {
    for (const proxy of this.links.values()) proxy.heal();
  }

  /** Stops every process it started, then removes its folder (copying the logs to `keepLogsIn` first, if given). */
  async stop(options: { keepLogsIn?: string } = {}): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const node of this.nodes) this.resume(node.id);
    // Every controller at once, each given time to stop cleanly; then memcached, whose data goes with the folder.
    await Promise.all(this.nodes.map((node) => stopChild(node.controller, 'SIGTERM', 5000)));
    await Promise.all(this.nodes.map((node) => stopMemcached(node.memcached)));
    await Promise.all([...this.links.values()].map((proxy) => proxy.close()));
    if (options.keepLogsIn !== undefined) cpSync(path.join(this.dir, 'logs'), options.keepLogsIn, { recursive: true });
    this.forgetFolder();
    this.removeFolder();
  }

  /** The folder goes with the cluster, unless kept. */
  private removeFolder(): void {
    if (!this.options.keepDir) rmSync(this.dir, { recursive: true, force: true });
  }

  private link(from: string, to: string): LinkProxy {
    const proxy = this.links.get(`${from}->${to}`);
    if (!proxy) throw new Error('this cluster was started without proxies');
    return proxy;
  }

  private async startLinks(): Promise<void> {
    if (!this.options.proxies) return;
    for (const from of this.nodes) {
      for (const to of this.nodes) {
        if (from.id === to.id) continue;
        const proxy = new LinkProxy(`${from.id}->${to.id}`, { host: '127.0.0.1', port: to.peerPort });
        await proxy.listen();
        this.links.set(proxy.name, proxy);
      }
    }
  }
}
