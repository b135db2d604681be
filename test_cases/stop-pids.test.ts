/**
 * stop.sh and startup.sh trust a PID recorded in .run/pids only while /proc/PID/stat still shows
 * the start time recorded with it. A process whose command line names dist/main.js (or memcached) but
 * whose start time differs, as a process that took over a reused PID would, is left alone; the
 * process that was recorded is stopped. So is a controller named by a PID file in the cluster's
 * data_dir (one restarted by hand), on the same terms, and startup.sh counts it as running; run
 * again beside a running cluster, startup.sh starts again a local memcached it had started that
 * died. Run on a temporary copy of the scripts, with harmless `sleep` processes (and one real
 * memcached) that each test ends by its own PID.
 */

import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort, waitForMemcachedProtocol } from '../src/jepsen/cluster.ts';

const repo = path.join(import.meta.dirname, '..');
let dir: string | null = null;
const sleepers: ChildProcess[] = [];

afterEach(() => {
  for (const child of sleepers.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  if (dir !== null) rmSync(dir, { recursive: true, force: true });
  dir = null;
});

/** A copy of the scripts in a fresh folder, with an empty .run folder. */
function scriptsCopy(): string {
  dir = mkdtempSync(path.join(os.tmpdir(), 'mckv-pids-'));
  mkdirSync(path.join(dir, 'scripts'));
  mkdirSync(path.join(dir, '.run'));
  for (const file of ['startup.sh', 'stop.sh', 'scripts/pid-record.sh', 'scripts/require-node.mjs']) {
    copyFileSync(path.join(repo, file), path.join(dir, file));
  }
  symlinkSync(path.join(repo, 'node_modules'), path.join(dir, 'node_modules'));
  return dir;
}

/** A `sleep` whose command line reads like `argv0` (e.g. a controller's), and its start time. */
async function sleeper(argv0: string): Promise<{ child: ChildProcess; pid: number; start: number }> {
  const child = spawn('sleep', ['120'], { argv0, stdio: 'ignore' });
  sleepers.push(child);
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', reject);
  });
  const pid = child.pid!;
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const start = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
  expect(readFileSync(`/proc/${pid}/cmdline`, 'utf8')).toContain(argv0);
  return { child, pid, start };
}

function run(folder: string, script: string, args: string[] = []): Promise<{ code: number; stdout: string; stderr: string }> {
  const env = { ...process.env, PATH: `${path.dirname(process.execPath)}:${process.env.PATH ?? ''}` };
  return new Promise((resolve) => {
    execFile('bash', [path.join(folder, script), ...args], { cwd: folder, env, timeout: 30_000 }, (error, stdout, stderr) =>
      resolve({ code: error === null ? 0 : Number((error as { code?: number }).code ?? -1), stdout, stderr }),
    );
  });
}

/** Resolves once `child` has exited; fails the test after `timeoutMs`. */
function exited(child: ChildProcess, timeoutMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`pid ${child.pid} still running after ${timeoutMs} ms`)), timeoutMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

const isRunning = (child: ChildProcess): boolean => child.exitCode === null && child.signalCode === null;

/** Runs stop.sh in `folder`: it must stop `stopped` (node `node`) with SIGTERM and leave `spared` running. */
async function expectStopsOnly(
  folder: string,
  node: string,
  stopped: { child: ChildProcess; pid: number },
  spared: { child: ChildProcess },
): Promise<void> {
  const result = await run(folder, 'stop.sh');
  expect(result.code).toBe(0);
  expect(result.stdout).toContain(`stopping controller ${node} (pid ${stopped.pid})`);
  await exited(stopped.child, 10_000);
  expect(stopped.child.signalCode).toBe('SIGTERM');
  expect(isRunning(spared.child)).toBe(true);
}

describe('stop.sh and the recorded PIDs', () => {
  it('leaves alone a process named like a controller or memcached whose start time is not the recorded one', async () => {
    const folder = scriptsCopy();
    const controller = await sleeper('node dist/main.js -c config.ini -p 47101');
    const memcached = await sleeper('memcached -l 127.0.0.1 -p 11211');
    writeFileSync(
      path.join(folder, '.run', 'pids'),
      `controller ${controller.pid} ${controller.start + 1} n1\nmemcached ${memcached.pid} ${memcached.start - 1} n1\n` +
        `controller ${controller.pid} n1\ncontroller abc 1 n2\n`,
    );
    const result = await run(folder, 'stop.sh');
    expect(result.code).toBe(0);
    expect(result.stdout).not.toMatch(/stopping/);
    expect(result.stdout).toContain(`left pid ${controller.pid} alone`);
    expect(result.stdout).toContain(`left pid ${memcached.pid} alone`);
    expect(isRunning(controller.child)).toBe(true);
    expect(isRunning(memcached.child)).toBe(true);
    expect(existsSync(path.join(folder, '.run', 'pids'))).toBe(false);
  }, 40_000);

  it('stops the process whose recorded start time still matches', async () => {
    const folder = scriptsCopy();
    const controller = await sleeper('node dist/main.js');
    const bystander = await sleeper('node dist/main.js');
    writeFileSync(
      path.join(folder, '.run', 'pids'),
      `controller ${controller.pid} ${controller.start} n1\ncontroller ${bystander.pid} ${bystander.start + 7} n2\n`,
    );
    await expectStopsOnly(folder, 'n1', controller, bystander);
  }, 40_000);
});

describe('controllers found by their PID files', () => {
  it('stop.sh stops a controller named by a PID file in the recorded data_dir, unless its start time differs', async () => {
    const folder = scriptsCopy();
    const restarted = await sleeper('node /x/node_modules/.bin/mckv -c config.ini -p 47102');
    const stale = await sleeper('node dist/main.js');
    writeFileSync(path.join(folder, '.run', 'data_dir'), `${path.join(folder, 'data')}\n`);
    for (const [node, process, shift] of [['n2', restarted, 0], ['n3', stale, 3]] as const) {
      mkdirSync(path.join(folder, 'data', node), { recursive: true });
      writeFileSync(path.join(folder, 'data', node, 'controller.pid'), `${process.pid} ${process.start + shift}\n`);
    }
    // No .run/pids: startup.sh's controllers are gone; the one restarted by hand is not.
    await expectStopsOnly(folder, 'n2', restarted, stale);
  }, 40_000);

  it("startup.sh counts a controller named by a PID file in config.ini's data_dir as running", async () => {
    const folder = scriptsCopy();
    writeFileSync(path.join(folder, 'config.ini'), '[cluster]\nconsistency = sequential\ndata_dir = state\n'); // no nodes
    const controller = await sleeper('node dist/main.js');
    mkdirSync(path.join(folder, 'state', 'n1'), { recursive: true });
    writeFileSync(path.join(folder, 'state', 'n1', 'controller.pid'), `${controller.pid} ${controller.start}\n`);
    const running = await run(folder, 'startup.sh');
    expect(running.code).toBe(0);
    expect(running.stdout).toContain(`mckv is already running (pids controller:${controller.pid})`);
    expect(isRunning(controller.child)).toBe(true);
  }, 40_000);
});

describe("startup.sh's already-running check", () => {
  it('counts a recorded process as running only with its start time', async () => {
    const folder = scriptsCopy();
    writeFileSync(path.join(folder, 'config.ini'), '[cluster]\nconsistency = sequential\n'); // no nodes: stops right after the check
    const controller = await sleeper('node dist/main.js');
    const pids = path.join(folder, '.run', 'pids');

    writeFileSync(pids, `controller ${controller.pid} ${controller.start} n1\n`);
    const running = await run(folder, 'startup.sh');
    expect(running.code).toBe(0);
    expect(running.stdout).toContain(`mckv is already running (pids controller:${controller.pid})`);

    writeFileSync(pids, `controller ${controller.pid} ${controller.start + 1} n1\n`);
    const stale = await run(folder, 'startup.sh');
    expect(stale.stdout).not.toContain('already running');
    expect(stale.stderr).toContain('no [node.*] sections');
    expect(stale.code).toBe(1);
    expect(existsSync(pids)).toBe(false);
    expect(isRunning(controller.child)).toBe(true);
  }, 40_000);
});

describe('startup.sh beside a running cluster', () => {
  it('starts again a local memcached it started that has died, and records it', async () => {
    const folder = scriptsCopy();
    const port = await freePort();
    writeFileSync(path.join(folder, 'config.ini'), `[cluster]\nconsistency = sequential\n[node.n1]\nclient = 127.0.0.1:1\nmemcached = 127.0.0.1:${port}\n`);
    const controller = await sleeper('node dist/main.js');
    const dead = await sleeper('memcached');
    dead.child.kill('SIGKILL');
    await new Promise((resolve) => dead.child.once('exit', resolve));
    const pids = path.join(folder, '.run', 'pids');
    writeFileSync(pids, `memcached ${dead.pid} ${dead.start} n1\ncontroller ${controller.pid} ${controller.start} n1\n`);
    const result = await run(folder, 'startup.sh');
    expect(result.code).toBe(0);
    expect(result.stdout).toContain(`memcached of n1 (127.0.0.1:${port}) was not running: started it again`);
    expect(result.stdout).toContain(`mckv is already running (pids controller:${controller.pid})`);
    const records = readFileSync(pids, 'utf8').trim().split('\n');
    expect(records).toContain(`controller ${controller.pid} ${controller.start} n1`);
    const revived = records.find((line) => line.startsWith('memcached '))?.split(' ');
    expect(revived?.[1]).not.toBe(String(dead.pid));
    expect(revived?.[3]).toBe('n1');
    const revivedPid = Number(revived?.[1]);
    try {
      await waitForMemcachedProtocol(port, 5000, () => true);
    } finally {
      process.kill(revivedPid, 'SIGKILL');
    }
  }, 40_000);
});
