/**
 * A disk that refuses the write-ahead file more bytes (full, or the process's file size limit):
 * every record the writer was told is written is in the file whole, and nothing else is. Run as a
 * child process under `ulimit -f`, the only way to make a real write come back short.
 *
 * Before, Node's writeSync returned the short count without throwing: the record was cut, the
 * fsync after it succeeded, and the writer went on as if it were durable (a follower would have
 * acknowledged an entry it then lost); and a compaction that ran out of room renamed its torn
 * temporary file over the good one, losing the node's term and vote.
 */

import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { WriteAheadFile } from '../src/wal.ts';

/** Whose file wal-writer.ts writes. */
const owner = { clusterId: 'mckv', nodeId: 'n1' };

/** The file size limit, in KiB (bash's `ulimit -f` unit). */
const LIMIT_KIB = 16;

let dir: string | null = null;
afterEach(() => {
  if (dir !== null) rmSync(dir, { recursive: true, force: true });
  dir = null;
});

/** Runs wal-writer.ts on a fresh file under the size limit; its output lines and the file. */
function runWriter(mode: 'append' | 'compact' | 'background' | 'inline'): Promise<{ lines: string[]; file: string }> {
  dir = mkdtempSync(path.join(os.tmpdir(), 'mckv-wal-full-'));
  const file = path.join(dir, 'wal.bin');
  const script = path.join(import.meta.dirname, 'support', 'wal-writer.ts');
  const command = `ulimit -f ${LIMIT_KIB} && exec "${process.execPath}" --import tsx "${script}" "${file}" ${mode}`;
  return new Promise((resolve, reject) => {
    execFile('bash', ['-c', command], { timeout: 30_000 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`wal-writer failed: ${error.message}\n${stderr}`));
      else resolve({ lines: stdout.trim().split('\n'), file });
    });
  });
}

type Padded = { index: number; pad: Buffer };

describe('the write-ahead file on a disk that refuses more bytes', () => {
  it('holds every record the writer was told is written, whole, and nothing torn after them', async () => {
    const { lines, file } = await runWriter('append');
    const written = lines.filter((line) => line.startsWith('ok ')).map((line) => Number(line.slice(3)));
    expect(lines[lines.length - 1]).toBe('refused EFBIG');
    expect(written.length).toBeGreaterThan(5);
    expect((WriteAheadFile.read(file, owner) as Padded[]).map((record) => record.index)).toEqual(written);
    // Nothing of the refused record is left for the next start to cut off.
    const reopened = new WriteAheadFile(file, owner);
    reopened.close();
    expect(reopened.opened.tornBytesCut).toBe(0);
  }, 40_000);

  it.each(['background', 'inline'] as const)('through the %s writer: holds every batch it acknowledged, whole, and nothing of the refused one', async (mode) => {
    const { lines, file } = await runWriter(mode);
    const written = lines.filter((line) => line.startsWith('ok ')).map((line) => Number(line.slice(3)));
    expect(lines[lines.length - 1]).toBe('refused WAL_WRITE_FAILED');
    expect(written.length).toBeGreaterThan(5);
    expect((WriteAheadFile.read(file, owner) as Padded[]).map((record) => record.index)).toEqual(written);
    const reopened = new WriteAheadFile(file, owner);
    reopened.close();
    expect(reopened.opened.tornBytesCut).toBe(0);
  }, 40_000);

  it('keeps the file as it was when a compaction runs out of room', async () => {
    const { lines, file } = await runWriter('compact');
    expect(lines).toEqual(['ok 2', 'refused EFBIG']);
    expect((WriteAheadFile.read(file, owner) as Padded[]).map((record) => record.index)).toEqual([0, 1, 2]);
    expect(existsSync(`${file}.tmp`)).toBe(false);
  }, 40_000);
});
