/**
 * A throwaway mckv cluster of real processes on 127.0.0.1, for the fault runner and the
 * integration tests: three memcached (or the embedded store), three controller processes, and
 * optionally a proxy on every directed peer link so links can be cut.
 *
 * Every port is picked free at start (never the default cluster ports), everything lives in one
 * temporary folder, and processes are stopped only by the PIDs this harness started.
 */

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  closeSync, cpSync, createWriteStream, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, statSync,
  writeFileSync,
} from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isOrderedMode, type Mode } from '../consistency/types.ts';
import { loadConfig, type CpuScheduling, type WalSync } from '../config.ts';
import { BackendFiller } from './backend-fill.ts';
import { LinkProxy } from './proxy.ts';
import { setWallClockOffset, wallClockEnv } from './wall-clock.ts';
import { FSYNC_DELAY_FILE_ENV } from '../controller/wal-background.ts';
import { loseUnsyncedRecords } from './power-loss.ts';
import { controllerEntryArgs } from './controller-bundle.ts';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

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
  /** Keep the folder (config, logs, data) after stop. */
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

/** `options` without the fields set to undefined, so that spreading it over defaults keeps them. */
export function definedOnly<T extends object>(options: T): T {
  return Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined)) as T;
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

function lastLines(file: string, count: number): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-count).join('\n');
  } catch {
    return '(no output)';
  }
}

/**
 * Ports handed out for servers a test or run starts: below the kernel's ephemeral range, so an
 * outgoing connection can never take one between our check and the server's bind (a port from
 * `listen(0)` can be), and above the cluster's default ports (8000-8002, 9000-9002, 11201-11203).
 * Each process starts at its own offset and walks forward, so parallel test workers rarely meet.
 */
const allocatedPortMin = 12_000;
const allocatedPortEnd = ephemeralPortLow();
let nextPortCandidate = allocatedPortMin + ((process.pid * 7919) % (allocatedPortEnd - allocatedPortMin));

function ephemeralPortLow(): number {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > allocatedPortMin + 1000 ? low : 32_768;
  } catch {
    return 32_768;
  }
}

function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/** A TCP port on 127.0.0.1 that nothing listens on, outside the ephemeral range (see above). */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 500; attempt++) {
    const port = nextPortCandidate;
    nextPortCandidate = port + 1 >= allocatedPortEnd ? allocatedPortMin : port + 1;
    if (await canBind(port)) return port;
  }
  throw new Error(`no free port between ${allocatedPortMin} and ${allocatedPortEnd} after 500 tries`);
}

/** Resolves once something answers `version` on host:port, or rejects at the deadline. */
export async function waitForMemcachedProtocol(port: number, timeoutMs: number, alive?: () => boolean): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await answersVersion(port)) return;
    if (alive && !alive()) throw new Error(`process for port ${port} exited before answering`);
    if (Date.now() > deadline) throw new Error(`nothing answered on 127.0.0.1:${port} within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * Resolves once a controller serves reads (a get answers END, not SERVER_ERROR: in the ordered
 * modes that needs an elected sequencer), or rejects at the deadline.
 */
export async function waitUntilServing(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() <= deadline) {
    last = await firstReplyLine(port, 'get mckv-probe\r\n');
    if (last === 'END') return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`controller on 127.0.0.1:${port} did not serve within ${timeoutMs} ms (last reply: ${last || 'none'})`);
}

function firstReplyLine(port: number, request: string): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let received = '';
    const done = (line: string): void => {
      socket.destroy();
      resolve(line);
    };
    socket.setTimeout(2000, () => done(''));
    socket.once('error', () => done(''));
    socket.once('connect', () => socket.write(request));
    socket.on('data', (data) => {
      received += data.toString('latin1');
      const end = received.indexOf('\r\n');
      if (end >= 0) done(received.slice(0, end));
    });
  });
}

function answersVersion(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once('error', () => done(false));
    socket.once('connect', () => socket.write('version\r\n'));
    socket.once('data', (data) => done(data.toString('latin1').startsWith('VERSION')));
  });
}

/**
 * `-u USER` when running as root (memcached refuses root without it): Debian's memcached package's
 * unprivileged `memcache` user if there is one, else `nobody`, never root itself.
 */
function memcachedUserArgs(): string[] {
  if (process.getuid?.() !== 0) return [];
  const hasMemcacheUser = spawnSync('id', ['-u', 'memcache'], { stdio: 'ignore' }).status === 0;
  return ['-u', hasMemcacheUser ? 'memcache' : 'nobody'];
}

/** Starts a memcached process on a free port; `-M` (unless `evicts`) so it never evicts silently. */
export async function spawnMemcached(port: number, logFile: string, memoryMb = 256, evicts = false): Promise<ChildProcess> {
  const args = ['-l', '127.0.0.1', '-p', String(port), '-U', '0', ...(evicts ? [] : ['-M']), '-m', String(memoryMb)];
  const child = spawn('memcached', [...args, ...memcachedUserArgs()], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const log = createWriteStream(logFile, { flags: 'a' });
  child.stdout?.pipe(log);
  child.stderr?.pipe(log);
  const spawnError = new Promise<never>((_, reject) =>
    child.once('error', (error) => reject(new Error(`cannot start memcached: ${error.message} (apt-get install memcached)`))),
  );
  await Promise.race([waitForMemcachedProtocol(port, 10_000, () => child.exitCode === null), spawnError]);
  return child;
}

export class Cluster {
  readonly nodes: ClusterNode[];
  /** Proxies by "from->to". */
  readonly links = new Map<string, LinkProxy>();
  private stopped = false;
  /** What `fillBackend` wrote, by node, until `emptyBackend` deletes it. */
  private readonly fillers = new Map<string, BackendFiller>();
  /** Each node's boot number (see losePower). */
  private readonly boots = new Map<string, number>();

  private constructor(
    readonly options: Required<Omit<ClusterOptions, 'keepDir'>> & { keepDir: boolean },
    readonly dir: string,
    nodes: ClusterNode[],
  ) {
    this.nodes = nodes;
  }

  static async start(options: ClusterOptions): Promise<Cluster> {
    const full = {
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
      keepDir: false,
      ...definedOnly(options),
    };
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
      cluster.writeConfig();
      if (full.backend === 'memcache') {
        await Promise.all(nodes.map(async (node) => (node.memcached = await spawnMemcached(node.memcachedPort, cluster.logFile(`memcached-${node.id}`), cluster.options.memcachedMemoryMb, cluster.options.memcachedEvicts))));
      }
      await Promise.all(nodes.map((node) => cluster.startController(node.id)));
      await Promise.all(nodes.map((node) => waitUntilServing(node.clientPort, 30_000)));
    } catch (error) {
      // Say why: the last lines each controller printed, and keep the folder for its logs.
      const tails = nodes.map((node) => `--- ${node.id}:\n${lastLines(cluster.logFile(node.id), 8)}`).join('\n');
      cluster.options.keepDir = true;
      await cluster.stop();
      throw new Error(`${(error as Error).message}\ncluster folder kept: ${dir}\n${tails}`, { cause: error });
    }
    return cluster;
  }

  get configFile(): string {
    return path.join(this.dir, 'config.ini');
  }

  node(id: string): ClusterNode {
    const node = this.nodes.find((candidate) => candidate.id === id);
    if (!node) throw new Error(`no node ${id}`);
    return node;
  }

  logFile(name: string): string {
    return path.join(this.dir, 'logs', `${name}.out`);
  }

  /** Starts (or restarts) one controller process, with `extraArgs` on its command line, and waits until it answers. */
  async startController(id: string, extraArgs: readonly string[] = []): Promise<void> {
    const node = this.node(id);
    const args = [
      ...this.options.controllerNodeArgs,
      ...controllerEntryArgs(repoRoot),
      '-c',
      this.configFile,
      '-p',
      String(node.clientPort),
      '--kvtype',
      this.options.backend,
      '-cons',
      this.options.mode,
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
    const child = spawn(process.execPath, args, { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'], env });
    const log = createWriteStream(this.logFile(id), { flags: 'a' });
    child.stdout?.pipe(log);
    child.stderr?.pipe(log);
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
    if (child?.pid !== undefined && child.exitCode === null) process.kill(child.pid, signal);
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
    const file = this.logFile(id);
    return existsSync(file) ? statSync(file).size : 0;
  }

  /**
   * What a controller's console log gained since byte `from`, once it holds `text`; null if it does
   * not within `timeoutMs`. Reads only the new bytes.
   */
  async logSince(id: string, from: number, text: string, timeoutMs: number): Promise<string | null> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const size = this.logBytes(id);
      let tail = '';
      if (size > from) {
        const fd = openSync(this.logFile(id), 'r');
        try {
          const bytes = Buffer.alloc(size - from);
          readSync(fd, bytes, 0, bytes.length, from);
          tail = bytes.toString();
        } finally {
          closeSync(fd);
        }
      }
      if (tail.includes(text)) return tail;
      if (Date.now() >= deadline) return null;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  /** Which boot of its (simulated) machine a node's controller runs in. */
  private bootOf(id: string): number {
    return this.boots.get(id) ?? 1;
  }

  /** SIGKILL a controller and wait for it to be gone. */
  async kill(id: string): Promise<void> {
    const child = this.node(id).controller;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    this.signal(id, 'SIGKILL');
    await exited;
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
    const node = this.node(id);
    const child = node.memcached;
    if (child && child.exitCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGKILL');
      await exited;
    }
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
    for (const node of this.nodes) {
      this.resume(node.id);
      await this.stopChild(node.controller, 'SIGTERM', 5000);
      await this.stopChild(node.memcached, 'SIGTERM', 2000);
    }
    await Promise.all([...this.links.values()].map((proxy) => proxy.close()));
    if (options.keepLogsIn !== undefined) cpSync(path.join(this.dir, 'logs'), options.keepLogsIn, { recursive: true });
    if (!this.options.keepDir) rmSync(this.dir, { recursive: true, force: true });
  }

  private link(from: string, to: string): LinkProxy {
    const proxy = this.links.get(`${from}->${to}`);
    if (!proxy) throw new Error('this cluster was started without proxies');
    return proxy;
  }

  private async stopChild(child: ChildProcess | null, signal: NodeJS.Signals, graceMs: number): Promise<void> {
    if (!child || child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill(signal);
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
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

  private writeConfig(): void {
    const lines = [
      '[cluster]',
      `consistency = ${this.options.mode}`,
      `heartbeat_interval_ms = ${this.options.heartbeatIntervalMs}`,
      `failure_timeout_ms = ${this.options.failureTimeoutMs}`,
      `compact_after_entries = ${this.options.compactAfterEntries}`,
      `wal_sync = ${this.options.walSync}`,
      `cpu_scheduling = ${this.options.cpuScheduling}`,
      'data_dir = data',
      'log_dir = logs',
      'secret_file = cluster.secret',
      ...this.options.extraConfig,
      '',
    ];
    for (const node of this.nodes) {
      lines.push(
        `[node.${node.id}]`,
        `client = 127.0.0.1:${node.clientPort}`,
        `peer = 127.0.0.1:${node.peerPort}`,
        `memcached = 127.0.0.1:${node.memcachedPort}`,
      );
      if (this.options.http) lines.push(`http = 127.0.0.1:${node.httpPort}`);
      for (const [name, proxy] of this.links) {
        const [from, to] = name.split('->');
        if (from === node.id) lines.push(`dial.${to} = 127.0.0.1:${proxy.port}`);
      }
      lines.push('');
    }
    writeFileSync(this.configFile, lines.join('\n'));
    writeFileSync(path.join(this.dir, 'cluster.secret'), randomBytes(32).toString('base64'), { mode: 0o600 });
    mkdirSync(path.join(this.dir, 'logs'), { recursive: true });
  }
}
