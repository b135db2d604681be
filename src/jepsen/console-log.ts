/**
 * Reading the console logs the harness's processes append to: the last lines of one (to say why
 * a start failed), and what one gained since a byte offset (to wait for a line a controller prints).
 *
 * The files only grow while a process runs, so a byte offset taken earlier stays a valid place to
 * start reading; a missing file reads as empty, never as an error.
 */

import { closeSync, existsSync, openSync, readFileSync, readSync, statSync } from 'node:fs';

/** The last `count` lines of `file`, or '(no output)' if it cannot be read. */
export function lastLines(file: string, count: number): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-count).join('\n');
  } catch {
    return '(no output)';
  }
}

/** How long `file` is now, in bytes (0 if it does not exist yet). */
export function logBytes(file: string): number {
  return existsSync(file) ? statSync(file).size : 0;
}

/** What `file` gained since byte `from` (reads only those bytes; '' if none). */
export function readSince(file: string, from: number): string {
  const size = logBytes(file);
  if (size <= from) return '';
  const fd = openSync(file, 'r');
  try {
    const bytes = Buffer.alloc(size - from);
    readSync(fd, bytes, 0, bytes.length, from);
    return bytes.toString();
  } finally {
    closeSync(fd);
  }
}

/**
 * What `file` gained since byte `from`, once it holds `text`; null if it does not within
 * `timeoutMs`. Reads only the new bytes, every 50 ms.
 */
export async function logSince(file: string, from: number, text: string, timeoutMs: number): Promise<string | null> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const tail = readSince(file, from);
    if (tail.includes(text)) return tail;
    if (Date.now() >= deadline) return null;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
