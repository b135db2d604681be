/**
 * The write-ahead file of one controller: the records a mode asks to make durable (term, vote,
 * log entries), one JSON line each, fsynced before the controller carries out anything after them.
 *
 * Invariant: a record that `append` returned for is on disk. A torn last line (the process died
 * mid-write) is dropped on read; a corrupt line anywhere else is an error, never silently skipped.
 * `compact` rewrites the file through a temporary file and a rename, so a crash leaves either the
 * old file or the new one.
 */

import { closeSync, existsSync, fsync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import path from 'node:path';
import { fromWire, toWire } from './peer/frame.ts';

export class WalError extends Error {
  override readonly name = 'WalError';
  readonly code = 'WAL_CORRUPT';
}

export class WriteAheadFile {
  private fd: number;

  constructor(private readonly file: string) {
    mkdirSync(path.dirname(file), { recursive: true });
    this.fd = openSync(file, 'a');
  }

  /** Every record in the file, oldest first. */
  static read(file: string): unknown[] {
    if (!existsSync(file)) return [];
    const lines = readFileSync(file, 'utf8').split('\n');
    const records: unknown[] = [];
    lines.forEach((line, index) => {
      if (line === '') return;
      try {
        records.push(fromWire(JSON.parse(line)));
      } catch (error) {
        const isLast = lines.slice(index + 1).every((rest) => rest === '');
        if (isLast) return; // torn tail: the write never completed, so nothing depended on it
        throw new WalError(`${file}: line ${index + 1} is corrupt: ${(error as Error).message}`);
      }
    });
    return records;
  }

  /** Writes a record and makes it durable. */
  append(record: unknown): void {
    this.write(record);
    this.sync();
  }

  /** Writes a record; it is durable only after the next `sync`. */
  write(record: unknown): void {
    writeSync(this.fd, `${JSON.stringify(toWire(record))}\n`);
  }

  /** Makes every record written so far durable. */
  sync(): void {
    fsyncSync(this.fd);
  }

  /** Makes every record written so far durable, off the event loop; `done` gets the fsync's error, if any. */
  syncInBackground(done: (error: NodeJS.ErrnoException | null) => void): void {
    fsync(this.fd, done);
  }

  /** Replaces the whole file with one record. */
  compact(record: unknown): void {
    const temporary = `${this.file}.tmp`;
    const fd = openSync(temporary, 'w');
    writeSync(fd, `${JSON.stringify(toWire(record))}\n`);
    fsyncSync(fd);
    closeSync(fd);
    renameSync(temporary, this.file);
    closeSync(this.fd);
    this.fd = openSync(this.file, 'a');
  }

  close(): void {
    closeSync(this.fd);
  }
}
