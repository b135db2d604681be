/**
 * The write-ahead file as the DurabilityGate's WriteAhead for a real controller. Every fsync,
 * truncate, rename and compaction runs on libuv's thread pool, so a disk that takes a second to
 * fsync delays what waits for durability and nothing else (heartbeats, reads, timers go on).
 *
 * A batch that needs no fsync (wal_sync = write) is one write() into the page cache, made inline:
 * the kernel copies it and returns without waiting for the disk, and the hand-off to the thread
 * pool and back cost more than the copy. Should an inline write ever take long (the kernel holding
 * writers back), batches go through the thread pool for a while. A batch holding a compacting
 * record rewrites the file through a temporary file, an fsync, a rename and an fsync of the folder.
 * The gate hands over one batch at a time, so writes keep their order.
 *
 * Invariants (those of wal.ts): a batch the disk refused leaves nothing of itself in the file (it
 * is cut back to where the batch began); a refused compaction leaves the old file as it was;
 * every file is 0600 in a folder only the owner may enter (WriteAheadFile.prepare made it so).
 */

import { ftruncateSync } from 'node:fs';
import { open, readFile, rename, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { clockMs } from '../runtime/clock.ts';
import { PRIVATE_FILE_MODE } from '../runtime/private-files.ts';
import { encodeWalRecord, noMoreBytes, walHeaderRecord, WriteAheadFile, writeWholeSync, type WalOwner } from '../wal.ts';
import { DurabilityError, type WalBatch, type WalWriteResult, type WriteAhead } from './durability.ts';

/**
 * Testing only: the environment variable naming a file that holds a delay in ms; while it says
 * more than 0, every fsync of the write-ahead file waits that long first (the `disk-stall` fault).
 */
export const FSYNC_DELAY_FILE_ENV = 'MCKV_TEST_FSYNC_DELAY_FILE';

/**
 * An inline write slower than this sends the next batches through the thread pool… (A busy
 * two-core machine preempts a 2 KB write for 5–7 ms now and then; a kernel holding writers back,
 * or a file system waiting on a stalled journal, takes far longer.)
 */
export const INLINE_WRITE_SLOW_MS = 50;
/** …for this long. */
export const INLINE_WRITE_BACKOFF_MS = 10_000;

export interface BackgroundWriteAheadOptions {
  file: string;
  owner: WalOwner;
  /** See FSYNC_DELAY_FILE_ENV; null in production. */
  fsyncDelayFile: string | null;
  /** An inline write slower than this counts as slow (default INLINE_WRITE_SLOW_MS). */
  inlineSlowMs?: number;
  /** Told of a slow inline write (its milliseconds), for the controller's log. */
  onSlowWrite?: (ms: number) => void;
}

export class BackgroundWriteAhead implements WriteAhead {
  /** Where the next batch starts: a refused one is cut back to here. */
  private bytes = 0;
  private handle: FileHandle | null = null;
  /** The batch on its way, if any: closing waits for it. */
  private busy: Promise<void> = Promise.resolve();
  /** No batch is on its way through the thread pool, so an inline write cannot overtake one. */
  private idle = true;
  private closed = false;
  /** Until when (performance.now()) batches skip the inline write, after a slow one. */
  private inlineAfterMs = 0;

  /** What opening repaired, for the controller's log. */
  readonly opened: { tornBytesCut: number };

  /**
   * Checks and repairs the file at once (WriteAheadFile.prepare: a file of another owner or a
   * corrupt one throws a WalError); it is opened for appending with the first batch.
   */
  constructor(private readonly options: BackgroundWriteAheadOptions) {
    this.opened = WriteAheadFile.prepare(options.file, options.owner);
  }

  write(batch: WalBatch, done: (result: WalWriteResult) => void): void {
    if (this.mayWriteInline(batch)) {
      done(this.writeInline(batch));
      return;
    }
    this.idle = false;
    const run = this.busy.then(() => this.writeBatch(batch));
    this.busy = run.then(
      (result) => {
        this.idle = true;
        if (!this.closed) done(result);
      },
      (error: unknown) => {
        this.idle = true;
        if (!this.closed) done({ ok: false, error: new DurabilityError('WAL_WRITE_FAILED', `write-ahead batch failed: ${String(error)}`, { cause: error }) });
      },
    );
  }

  close(): void {
    this.closed = true;
    this.busy = this.busy.then(async () => {
      await this.handle?.close();
      this.handle = null;
    });
  }

  /** Resolves once closing is done: the batch on its way finished and the file is closed. */
  async whenClosed(): Promise<void> {
    await this.busy;
  }

  private mayWriteInline(batch: WalBatch): boolean {
    return !batch.sync && this.idle && !this.closed && this.handle !== null
      && performance.now() >= this.inlineAfterMs && !batch.records.some((each) => each.compact);
  }

  /** Appends a batch that needs no fsync with write() on this thread (see the header). */
  private writeInline(batch: WalBatch): WalWriteResult {
    const fd = (this.handle as FileHandle).fd;
    const bytes = encodeBatch(batch);
    const startedMs = performance.now();
    try {
      writeWholeSync(fd, bytes);
    } catch (error) {
      try {
        ftruncateSync(fd, this.bytes);
      } catch {
        // The batch is refused either way; the file is checked and cut when next opened.
      }
      return writeFailed(error);
    }
    this.bytes += bytes.length;
    const endedMs = performance.now();
    if (endedMs - startedMs > (this.options.inlineSlowMs ?? INLINE_WRITE_SLOW_MS)) {
      this.inlineAfterMs = endedMs + INLINE_WRITE_BACKOFF_MS;
      this.options.onSlowWrite?.(endedMs - startedMs);
    }
    return { ok: true, fsync: null };
  }

  private async writeBatch(batch: WalBatch): Promise<WalWriteResult> {
    if (this.closed) return { ok: false, error: new DurabilityError('WAL_WRITE_FAILED', 'the write-ahead file is closed') };
    if (this.handle === null) {
      this.handle = await openPrivate(this.options.file, 'a');
      this.bytes = (await this.handle.stat()).size;
    }
    let compactAt = -1;
    batch.records.forEach((record, index) => {
      if (record.compact) compactAt = index;
    });
    if (compactAt >= 0) return this.compact(batch.records.slice(compactAt).map((each) => each.record));
    const bytes = encodeBatch(batch);
    try {
      await writeWhole(this.handle, bytes);
    } catch (error) {
      await this.handle.truncate(this.bytes).catch(() => {});
      return writeFailed(error);
    }
    this.bytes += bytes.length;
    if (!batch.sync) return { ok: true, fsync: null };
    try {
      return { ok: true, fsync: await this.fsync(this.handle) };
    } catch (error) {
      return { ok: false, error: new DurabilityError('WAL_FSYNC_FAILED', `write-ahead fsync failed: ${errorText(error)}`, { cause: error }) };
    }
  }

  /** Replaces the file with its header and `records`; on failure the old file stays as it was. */
  private async compact(records: readonly unknown[]): Promise<WalWriteResult> {
    const { file, owner } = this.options;
    const temporary = `${file}.tmp`;
    const bytes = Buffer.concat([walHeaderRecord(owner), ...records].map((record) => encodeWalRecord(record)));
    let fsync: { endedAtMs: number; ms: number };
    try {
      const handle = await openPrivate(temporary, 'w');
      try {
        await writeWhole(handle, bytes);
        fsync = await this.fsync(handle);
      } finally {
        await handle.close();
      }
    } catch (error) {
      await unlink(temporary).catch(() => {});
      return { ok: false, error: new DurabilityError('WAL_COMPACT_FAILED', `write-ahead compaction failed: ${errorText(error)}`, { cause: error }) };
    }
    try {
      await rename(temporary, file);
      const folder = await open(path.dirname(file), 'r');
      try {
        await folder.sync();
      } finally {
        await folder.close();
      }
      const previous = this.handle;
      this.handle = await openPrivate(file, 'a');
      this.bytes = bytes.length;
      await previous?.close();
    } catch (error) {
      return { ok: false, error: new DurabilityError('WAL_COMPACT_FAILED', `write-ahead compaction failed: ${errorText(error)}`, { cause: error }) };
    }
    return { ok: true, fsync };
  }

  /** fsyncs `handle`, after the test delay if one is set; how long it took, injected delay included. */
  private async fsync(handle: FileHandle): Promise<{ endedAtMs: number; ms: number }> {
    const startedMs = performance.now();
    const delayMs = await readDelayMs(this.options.fsyncDelayFile);
    if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs));
    await handle.sync();
    return { endedAtMs: clockMs(), ms: performance.now() - startedMs };
  }
}

/** A batch's records as the bytes of one append. */
function encodeBatch(batch: WalBatch): Buffer {
  return Buffer.concat(batch.records.map((each) => encodeWalRecord(each.record)));
}

function writeFailed(error: unknown): WalWriteResult {
  return { ok: false, error: new DurabilityError('WAL_WRITE_FAILED', `write-ahead write failed: ${errorText(error)}`, { cause: error }) };
}

/** Opens `file` as 0600, whether it is created now or was there before. */
async function openPrivate(file: string, flags: 'a' | 'w'): Promise<FileHandle> {
  const handle = await open(file, flags, PRIVATE_FILE_MODE);
  try {
    await handle.chmod(PRIVATE_FILE_MODE);
  } catch (error) {
    await handle.close();
    throw error;
  }
  return handle;
}

/** Writes all of `bytes` at the file's end, going on after short writes (a full disk returns one). */
async function writeWhole(handle: FileHandle, bytes: Buffer): Promise<void> {
  for (let written = 0; written < bytes.length; ) {
    const { bytesWritten } = await handle.write(bytes, written, bytes.length - written);
    if (bytesWritten === 0) throw noMoreBytes();
    written += bytesWritten;
  }
}

/** The delay FSYNC_DELAY_FILE_ENV's file says now: a whole number of ms; 0 when absent or unreadable. */
async function readDelayMs(file: string | null): Promise<number> {
  if (file === null) return 0;
  const text = await readFile(file, 'utf8').catch(() => '');
  const delayMs = Number.parseInt(text.trim(), 10);
  return Number.isSafeInteger(delayMs) && delayMs > 0 ? delayMs : 0;
}

function errorText(error: unknown): string {
  const code = (error as NodeJS.ErrnoException | null)?.code;
  const message = error instanceof Error ? error.message : String(error);
  return code === undefined ? message : `${code}: ${message}`;
}
