/**
 * A script that starts a test cluster and ends before stopping it, by an uncaught error or by a
 * Ctrl-C it does not handle (as a crashed benchmark, an ad-hoc script or an interrupted test run
 * would), leaves no controller or memcached behind, and no cluster folder: the harness kills what
 * it started, by its handles (src/jepsen/owned-children.ts).
 */

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '../src/jepsen/cluster.ts';
import { startTimeOf } from '../src/runtime/pid-file.ts';

/** Whether `pid` is a live process (a zombie waiting for its reaper counts as gone). */
function alive(pid: number): boolean {
  return startTimeOf(pid) !== null;
}

/** A script that starts a cluster, prints its PIDs and folder, then does `ending`. */
function script(ending: string): string {
  return `
const { Cluster } = await import(${JSON.stringify(pathToFileURL(path.join(repoRoot, 'src', 'jepsen', 'cluster.ts')).href)});
const cluster = await Cluster.start({ mode: 'sequential' });
const pids = cluster.nodes.flatMap((node) => [node.controller.pid, node.memcached.pid]);
process.stdout.write(JSON.stringify({ pids, dir: cluster.dir }) + '\\n');
${ending}
`;
}

interface Ended {
  code: number | null;
  signal: string | null;
  stderr: string;
  /** The controllers' and memcached servers' PIDs, and the cluster's folder, as the script printed them. */
  pids: number[];
  dir: string;
}

/** Runs `source`, calls `started` once it printed its cluster, and resolves when it ended. */
async function run(source: string, started: (pid: number) => void = () => {}): Promise<Ended> {
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '--eval', source], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString();
    if (stdout.includes('\n') && child.pid !== undefined) started(child.pid);
  });
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const [code, signal] = await new Promise<[number | null, string | null]>((resolve) => child.on('exit', (exitCode, signalCode) => resolve([exitCode, signalCode])));
  const printed = JSON.parse(stdout.split('\n')[0] || '{"pids":[],"dir":""}') as { pids: number[]; dir: string };
  return { code, signal, stderr, ...printed };
}

/** The PIDs still alive after up to 5 s; any found are killed (by PID, as started) so a failure leaves nothing running. */
async function survivors(pids: number[]): Promise<number[]> {
  const deadline = Date.now() + 5000;
  while (pids.some(alive) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
  const left = pids.filter(alive);
  for (const pid of left) process.kill(pid, 'SIGKILL');
  return left;
}

describe('a harness process that ends with its cluster running', () => {
  it('by an uncaught error: takes the controllers, the memcached servers and the folder with it', async () => {
    const ended = await run(script("throw new Error('this script fails before it stops its cluster');"));
    expect(ended.stderr).toMatch(/this script fails before it stops its cluster/);
    expect(ended.code).toBe(1);
    expect(ended.pids).toHaveLength(6);
    expect(await survivors(ended.pids)).toEqual([]);
    expect(existsSync(ended.dir)).toBe(false);
  }, 60_000);

  it('by a Ctrl-C it does not handle: the same, and it still ends by that signal', async () => {
    const ended = await run(script('setInterval(() => {}, 1000);'), (pid) => process.kill(pid, 'SIGINT'));
    expect(ended.signal, ended.stderr).toBe('SIGINT');
    expect(ended.pids).toHaveLength(6);
    expect(await survivors(ended.pids)).toEqual([]);
    expect(existsSync(ended.dir)).toBe(false);
  }, 60_000);
});
