/**
 * A controller's PID file (src/runtime/pid-file.ts), which ./stop.sh and startup.sh read: "PID
 * START" with this process's start time as /proc shows it, written 0600, and removed only while
 * it is still this process's (a controller started since may have written its own). A file that
 * names another live process with its start time holds the node folder; a stale, reused or
 * malformed one holds nothing.
 */

import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { PID_FILE_NAME, pidFileOwner, processStartTime, removePidFile, writePidFile } from '../src/runtime/pid-file.ts';

let dir: string | null = null;
let sleeper: ChildProcess | null = null;
afterEach(() => {
  if (sleeper !== null && sleeper.exitCode === null) sleeper.kill('SIGKILL');
  sleeper = null;
  if (dir !== null) rmSync(dir, { recursive: true, force: true });
  dir = null;
});

describe('the controller PID file', () => {
  it('names this process and its start time, and is removed when it stops', () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'mckv-pid-'));
    const nodeDir = path.join(dir, 'n1');
    const written = writePidFile(nodeDir);
    const stat = readFileSync('/proc/self/stat', 'utf8');
    const start = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
    expect(processStartTime()).toBe(start);
    const file = path.join(nodeDir, PID_FILE_NAME);
    expect(readFileSync(file, 'utf8')).toBe(`${process.pid} ${start}\n`);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    removePidFile(written);
    expect(existsSync(file)).toBe(false);
  });

  it('is left in place when another controller has written its own since', () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'mckv-pid-'));
    const written = writePidFile(dir);
    const file = path.join(dir, PID_FILE_NAME);
    writeFileSync(file, '4242 123\n');
    removePidFile(written);
    expect(readFileSync(file, 'utf8')).toBe('4242 123\n');
  });

  it('holds the node folder only while it names another live process with its start time', async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'mckv-pid-'));
    const file = path.join(dir, PID_FILE_NAME);
    const child = spawn('sleep', ['60'], { stdio: 'ignore' });
    sleeper = child;
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', reject);
    });
    const pid = child.pid as number;
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const start = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
    expect(pidFileOwner(dir)).toBeNull(); // no file
    writeFileSync(file, `${pid} ${start}\n`);
    expect(pidFileOwner(dir)).toBe(pid);
    writeFileSync(file, `${pid} ${start + 1}\n`); // the PID reused by another process
    expect(pidFileOwner(dir)).toBeNull();
    for (const junk of ['', 'x y\n', `${pid}\n`, `${pid} ${start} extra\n`, `-1 ${start}\n`]) {
      writeFileSync(file, junk);
      expect(pidFileOwner(dir)).toBeNull();
    }
    writePidFile(dir); // this process's own: not another controller
    expect(pidFileOwner(dir)).toBeNull();
  });
});
