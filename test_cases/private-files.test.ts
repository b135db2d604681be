/**
 * What mckv writes to disk is its owner's alone: the log folder it creates is 0700 and the log
 * file 0600, even one left from before with a wider mode, and a state file replaced through a
 * rename (backend-epoch, backend-counters) is 0600 even when a stale temporary file was 0644.
 */

import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../src/runtime/log.ts';
import { makePrivateDirectory, replacePrivateTextFile } from '../src/runtime/private-files.ts';

let dir: string | null = null;
const tempDir = (): string => (dir = mkdtempSync(path.join(os.tmpdir(), 'mckv-private-')));
afterEach(() => {
  if (dir !== null) rmSync(dir, { recursive: true, force: true });
  dir = null;
});
const modeOf = (file: string): number => statSync(file).mode & 0o777;

describe('private files', () => {
  it('creates the log folder 0700 and the log file 0600, and tightens a log file left 0644', () => {
    const logDir = path.join(tempDir(), 'logs', 'cluster');
    createLogger({ logDir, fileName: 'n1.log', console: false }).info('hello');
    expect(modeOf(path.join(dir!, 'logs'))).toBe(0o700);
    expect(modeOf(logDir)).toBe(0o700);
    expect(modeOf(path.join(logDir, 'n1.log'))).toBe(0o600);
    writeFileSync(path.join(logDir, 'n2.log'), 'from before\n', { mode: 0o644 });
    chmodSync(path.join(logDir, 'n2.log'), 0o644);
    createLogger({ logDir, fileName: 'n2.log', console: false });
    expect(modeOf(path.join(logDir, 'n2.log'))).toBe(0o600);
  });

  it('leaves an existing log folder as it is: it may be shared', () => {
    const logDir = path.join(tempDir(), 'shared');
    mkdirSync(logDir, { mode: 0o755 });
    chmodSync(logDir, 0o755);
    createLogger({ logDir, fileName: 'n1.log', console: false });
    expect(modeOf(logDir)).toBe(0o755);
  });

  it('tightens a folder of its own that exists with a wider mode', () => {
    const own = path.join(tempDir(), 'n1');
    mkdirSync(own, { mode: 0o755 });
    chmodSync(own, 0o755);
    makePrivateDirectory(own, { tighten: true });
    expect(modeOf(own)).toBe(0o700);
  });

  it('replaces a state file through a 0600 temporary file, whatever mode the old ones had', () => {
    const file = path.join(tempDir(), 'backend-epoch');
    writeFileSync(file, 'old', { mode: 0o644 });
    writeFileSync(`${file}.tmp`, 'stale', { mode: 0o644 });
    chmodSync(`${file}.tmp`, 0o644);
    replacePrivateTextFile(file, 'epoch-2');
    expect(readFileSync(file, 'utf8')).toBe('epoch-2');
    expect(modeOf(file)).toBe(0o600);
  });
});
