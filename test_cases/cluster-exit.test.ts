/**
 * A script that starts a test cluster and dies before stopping it (an uncaught error, as a
 * crashed benchmark or ad-hoc script would) leaves no controller or memcached behind, and no
 * cluster folder: Cluster's exit hook kills what it started, by PID.
 */

import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '../src/jepsen/cluster.ts';

/** Whether `pid` is a live process (a zombie waiting for its reaper counts as gone). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

const SCRIPT = `
const { Cluster } = await import(${JSON.stringify(pathToFileURL(path.join(repoRoot, 'src', 'jepsen', 'cluster.ts')).href)});
const cluster = await Cluster.start({ mode: 'sequential' });
const pids = cluster.nodes.flatMap((node) => [node.controller.pid, node.memcached.pid]);
process.stdout.write(JSON.stringify({ pids, dir: cluster.dir }) + '\\n');
throw new Error('this script fails before it stops its cluster');
`;

describe('a harness process that dies with its cluster running', () => {
  it('takes the controllers, the memcached servers and the folder with it', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '--eval', SCRIPT], {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('exit', (exitCode) => resolve(exitCode)));
    expect(stderr, stdout).toMatch(/this script fails before it stops its cluster/);
    expect(code).toBe(1);
    const started = JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}') as { pids: number[]; dir: string };
    expect(started.pids).toHaveLength(6);
    const deadline = Date.now() + 5000;
    while (started.pids.some(alive) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    const survivors = started.pids.filter(alive);
    // Should it fail, end what the script started (by its PIDs) rather than leave it running.
    for (const pid of survivors) process.kill(pid, 'SIGKILL');
    expect(survivors).toEqual([]);
    expect(existsSync(started.dir)).toBe(false);
  }, 60_000);
});
