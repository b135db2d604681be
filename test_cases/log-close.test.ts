/**
 * A controller stopped by a signal closes its logger before the process exits, so its JSON-lines
 * file holds its last lines (the stop, the leave): without the close, what the file transport had
 * not written yet was lost at exit. A line logged after the close (a late callback's) is dropped,
 * never thrown.
 */

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../src/runtime/log.ts';

let dir: string | null = null;
afterEach(() => {
  if (dir !== null) rmSync(dir, { recursive: true, force: true });
  dir = null;
});

describe("the root logger's close", () => {
  it('waits until the file holds every line, then drops later lines without throwing', async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'mckv-log-close-'));
    const log = createLogger({ logDir: dir, fileName: 'n1.log', console: false });
    const child = log.child({ component: 'test' });
    for (let index = 0; index < 2000; index += 1) log.info('line', { index });
    child.info('the last line');
    await log.close(5000);
    const lines = readFileSync(path.join(dir, 'n1.log'), 'utf8').trim().split('\n');
    expect(lines).toHaveLength(2001);
    expect(JSON.parse(lines[2000] ?? '{}')).toMatchObject({ message: 'the last line', component: 'test' });
    expect(() => child.warn('after the close')).not.toThrow();
    expect(() => log.error('after the close')).not.toThrow();
    await log.close(5000);
    expect(readFileSync(path.join(dir, 'n1.log'), 'utf8').trim().split('\n')).toHaveLength(2001);
  });
});
