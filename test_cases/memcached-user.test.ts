/**
 * A memcached the test clusters start while running as root gets an unprivileged user (Debian's
 * `memcache`, else `nobody`), never root: memcached needs no privilege once it listens.
 */

import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort, spawnMemcached } from '../src/jepsen/cluster.ts';

let memcached: ChildProcess | null = null;
let dir: string | null = null;
afterEach(() => {
  if (memcached !== null && memcached.exitCode === null) memcached.kill('SIGKILL');
  memcached = null;
  if (dir !== null) rmSync(dir, { recursive: true, force: true });
  dir = null;
});

describe('spawnMemcached', () => {
  it.runIf(process.getuid?.() === 0)('runs memcached as an unprivileged user when started by root', async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'mckv-memcached-user-'));
    memcached = await spawnMemcached(await freePort(), path.join(dir, 'memcached.log'), 16);
    const status = readFileSync(`/proc/${memcached.pid}/status`, 'utf8');
    const uids = /^Uid:\s+(.*)$/m.exec(status)?.[1]?.split(/\s+/).map(Number) ?? [];
    expect(uids).toHaveLength(4);
    for (const uid of uids) expect(uid).not.toBe(0);
  }, 20_000);
});
