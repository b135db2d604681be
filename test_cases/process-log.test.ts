/**
 * The harness appends a child's stdout and stderr to one log file: output that comes on one stream
 * after the other has closed is kept, and neither stream's end makes the other's write fail (a
 * "write after end" there is an unhandled error that fails whatever test is running, and the
 * late output is lost).
 */

import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ownChild } from '../src/jepsen/owned-children.ts';
import { logOutputTo } from '../src/jepsen/processes.ts';

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** Runs `script` under sh with its output logged; resolves with the log once the file is closed. */
async function logged(script: string): Promise<string> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mckv-process-log-'));
  dirs.push(dir);
  const file = path.join(dir, 'child.log');
  const child = ownChild(spawn('sh', ['-c', script], { stdio: ['ignore', 'pipe', 'pipe'] }));
  const log = logOutputTo(child, file);
  await new Promise<void>((resolve) => log.once('close', () => resolve()));
  return readFileSync(file, 'utf8');
}

describe('a child process log', () => {
  it('keeps stderr written after stdout has closed', async () => {
    const log = await logged('echo out; exec 1>&-; sleep 0.1; echo late >&2; echo done >&2');
    expect(log).toContain('out\n');
    expect(log).toContain('late\n');
    expect(log).toContain('done\n');
  });

  it('keeps stdout written after stderr has closed', async () => {
    const log = await logged('echo err >&2; exec 2>&-; sleep 0.1; echo late; echo done');
    expect(log).toContain('err\n');
    expect(log).toContain('late\n');
    expect(log).toContain('done\n');
  });
});
