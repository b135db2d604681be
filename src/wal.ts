/**
 * The write-ahead file of one controller: the records a mode asks to make durable (term, vote,
 * log entries), one binary record each, fsynced before the controller carries out anything after
 * them.
 *
 * A record is a 12-byte header followed by the payload, the record in the binary encoding of
 * peer/value-codec.ts (bigints and Buffers round-trip as themselves):
 *
 *   payload length (u32 LE) | crc32 of the payload (u32 LE) | crc32 of the 8 bytes before (u32 LE)
 *
 * Intuition: JSON lines spent their time in JSON.stringify and base64 of every memcached value;
 * here a record is encoded in one walk, and written, as before, with one write of one Buffer. The
 * header's own checksum lets the reader trust a length before the payload is there, so a record
 * that runs past the end of the file is known to be the torn last write, not a corrupt length.
 *
 * Invariants:
 * - A record that `append` returned for is on disk.
 * - A torn last record (the process died mid-write: a short header, a payload cut short, a
 *   checksum mismatch, or zeros the file system had not yet filled in) is dropped on read, but
 *   only when no valid record follows it; a corrupt record anywhere else is a WalError naming the
 *   file and the byte offset, never silently skipped.
 * - A length is checked against the bytes left before it is used; reading allocates nothing that
 *   a length claims, only the file itself and the records in it.
 * - The constructor truncates a torn last record away before appending, so a record written
 *   after a crash never lands behind garbage.
 * - `compact` rewrites the file through a temporary file, an fsync and a rename, so a crash leaves
 *   either the old file or the new one.
 * - A record is written whole or not at all: a write the disk cut short (full, or past the
 *   process's file size limit) is finished or, when the rest fails, cut off again, and the error
 *   thrown. (Node's writeSync returns a short count without throwing: the rest was silently
 *   missing, and the fsync after it made a torn record look durable.)
 * - Upgrade: a file of the previous release (JSON lines, `<name>.jsonl` beside `<name>.bin`) is
 *   read when the binary file does not exist yet, and the constructor converts it the same
 *   crash-safe way, removing the old file only once the new one is in place.
 */

import {
  closeSync,
  existsSync,
  fstatSync,
  fsync,
  fsyncSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  truncateSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { fromWire } from './peer/frame.ts';
import { decodeValue, encodeValueAfter } from './peer/value-codec.ts';

// Not a named import: on a Node.js without zlib.crc32 (before 20.15) that would fail while
// linking, before main.ts's version check could say so.
const { crc32 } = zlib;

/** Payload length, payload crc32, header crc32 (over the two fields before it). */
export const WAL_RECORD_HEADER_BYTES = 12;
const HEADER_CHECKED_BYTES = 8;

/** A write-ahead file that cannot be trusted: named with the file and the byte offset. */
export class WalError extends Error {
  override readonly name = 'WalError';
  readonly code = 'WAL_CORRUPT';
}

/** One controller's write-ahead file, open for appending. */
export class WriteAheadFile {
  private fd: number;
  /** The file's length: where the next record starts. */
  private bytes: number;
  /** What opening the file repaired, for the controller's log. */
  readonly opened: { convertedFrom: string | null; tornBytesCut: number };

  /**
   * Opens `file` for appending: converts a previous release's JSON-lines file beside it first,
   * and cuts off a torn last record, so what is appended next follows the last valid record.
   */
  constructor(private readonly file: string) {
    mkdirSync(path.dirname(file), { recursive: true });
    this.opened = { convertedFrom: upgradeLegacy(file), tornBytesCut: cutTornTail(file) };
    this.fd = openSync(file, 'a');
    this.bytes = fstatSync(this.fd).size;
  }

  /** Every record in the file (or in the previous release's file, if only that exists), oldest first. */
  static read(file: string): unknown[] {
    if (existsSync(file)) return scanRecords(file, readFileSync(file), { decode: true }).records;
    const legacy = legacyFileOf(file);
    return legacy !== null && existsSync(legacy) ? readLegacyRecords(legacy) : [];
  }

  /** Writes a record and makes it durable. */
  append(record: unknown): void {
    this.write(record);
    this.sync();
  }

  /** Writes a record; it is durable only after the next `sync`. Throws, leaving none of it, when the disk refuses it. */
  write(record: unknown): void {
    const bytes = encodeRecord(record);
    try {
      writeWhole(this.fd, bytes);
    } catch (error) {
      ftruncateSync(this.fd, this.bytes);
      throw error;
    }
    this.bytes += bytes.length;
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
    replaceFile(this.file, [record]);
    closeSync(this.fd);
    this.fd = openSync(this.file, 'a');
    this.bytes = fstatSync(this.fd).size;
  }

  /** Closes the file; records written but not yet synced may or may not be durable. */
  close(): void {
    closeSync(this.fd);
  }
}

/** One record as it goes to disk: header and payload in one Buffer, from one encoding pass. */
function encodeRecord(record: unknown): Buffer {
  const bytes = encodeValueAfter(WAL_RECORD_HEADER_BYTES, record);
  const payload = bytes.subarray(WAL_RECORD_HEADER_BYTES);
  bytes.writeUInt32LE(payload.length, 0);
  bytes.writeUInt32LE(crc32(payload), 4);
  bytes.writeUInt32LE(crc32(bytes.subarray(0, HEADER_CHECKED_BYTES)), HEADER_CHECKED_BYTES);
  return bytes;
}

/**
 * Writes `records` to a temporary file, fsyncs it, renames it over `file` and fsyncs the
 * directory, so the rename itself survives a crash.
 */
/** Writes all of `bytes` at the file's end, going on after short writes; throws what the disk says. */
function writeWhole(fd: number, bytes: Buffer): void {
  for (let written = 0; written < bytes.length; ) written += writeSync(fd, bytes, written, bytes.length - written);
}

/** Replaces `file` with `records`, crash-safely; when a write fails, `file` is left as it was. */
function replaceFile(file: string, records: unknown[]): void {
  const temporary = `${file}.tmp`;
  const fd = openSync(temporary, 'w');
  try {
    for (const record of records) writeWhole(fd, encodeRecord(record));
    fsyncSync(fd);
  } catch (error) {
    closeSync(fd);
    unlinkSync(temporary);
    throw error;
  }
  closeSync(fd);
  renameSync(temporary, file);
  const directory = openSync(path.dirname(file), 'r');
  try {
    fsyncSync(directory);
  } finally {
    closeSync(directory);
  }
}

// ---------------------------------------------------------------------------------------------
// Reading

/** What one record at one offset turned out to be. */
type RecordRead =
  | { kind: 'record'; value: unknown; end: number }
  /** Cannot be a torn write (it checks out but does not decode): corrupt wherever it is. */
  | { kind: 'corrupt'; detail: string }
  /** Could be a torn last write; `resumeAt` is where a valid record after it could start. */
  | { kind: 'damaged'; detail: string; resumeAt: number }
  /** Its intact header claims more bytes than the file holds: the torn last write. */
  | { kind: 'torn' };

/** The records of a file's bytes (if `decode`), and how many bytes the valid ones take. */
function scanRecords(file: string, bytes: Buffer, options: { decode: boolean }): { records: unknown[]; validBytes: number } {
  const records: unknown[] = [];
  let offset = 0;
  while (offset < bytes.length) {
    const read = readRecordAt(bytes, offset, options.decode);
    switch (read.kind) {
      case 'record':
        if (options.decode) records.push(read.value);
        offset = read.end;
        continue;
      case 'torn':
        return { records, validBytes: offset };
      case 'damaged':
        // Torn tail: the write never completed, so nothing depended on it.
        if (!hasValidRecordFrom(bytes, read.resumeAt)) return { records, validBytes: offset };
        throw new WalError(`${file}: the record at byte ${offset} is corrupt (${read.detail}) and valid records follow it`);
      case 'corrupt':
        throw new WalError(`${file}: the record at byte ${offset} is corrupt: ${read.detail}`);
      default: {
        const unreachable: never = read;
        return unreachable;
      }
    }
  }
  return { records, validBytes: offset };
}

/** Reads the record at `offset`; with `decode` false only its framing and checksums are checked. */
function readRecordAt(bytes: Buffer, offset: number, decode: boolean): RecordRead {
  const left = bytes.length - offset;
  if (left < WAL_RECORD_HEADER_BYTES) {
    return { kind: 'damaged', detail: `${left} bytes, short of a ${WAL_RECORD_HEADER_BYTES}-byte header`, resumeAt: bytes.length };
  }
  if (!headerChecksOut(bytes, offset)) return { kind: 'damaged', detail: 'header checksum mismatch', resumeAt: offset + 1 };
  const payloadBytes = bytes.readUInt32LE(offset);
  const start = offset + WAL_RECORD_HEADER_BYTES;
  const end = start + payloadBytes;
  if (end > bytes.length) return { kind: 'torn' };
  const payload = bytes.subarray(start, end);
  if (crc32(payload) !== bytes.readUInt32LE(offset + 4)) {
    return { kind: 'damaged', detail: 'payload checksum mismatch', resumeAt: end };
  }
  if (!decode) return { kind: 'record', value: null, end };
  // Copied out, so a restored log entry's value does not pin the whole file's bytes.
  const decoded = decodeValue(payload, { copyBuffers: true });
  if (!decoded.ok) return { kind: 'corrupt', detail: `payload does not decode: ${decoded.detail}` };
  return { kind: 'record', value: decoded.value, end };
}

/** Cuts a torn last record off `file`; returns how many bytes were cut. */
function cutTornTail(file: string): number {
  if (!existsSync(file)) return 0;
  const bytes = readFileSync(file);
  const { validBytes } = scanRecords(file, bytes, { decode: false });
  if (validBytes < bytes.length) truncateSync(file, validBytes);
  return bytes.length - validBytes;
}

function headerChecksOut(bytes: Buffer, offset: number): boolean {
  const checked = bytes.subarray(offset, offset + HEADER_CHECKED_BYTES);
  return crc32(checked) === bytes.readUInt32LE(offset + HEADER_CHECKED_BYTES);
}

/**
 * True if a whole valid record (header and payload checksums both match) starts anywhere at or
 * after `from`. Runs only once a record proved damaged, so scanning byte by byte is affordable.
 */
function hasValidRecordFrom(bytes: Buffer, from: number): boolean {
  for (let offset = from; offset + WAL_RECORD_HEADER_BYTES <= bytes.length; offset++) {
    const payloadBytes = bytes.readUInt32LE(offset);
    if (payloadBytes > bytes.length - offset - WAL_RECORD_HEADER_BYTES) continue;
    if (!headerChecksOut(bytes, offset)) continue;
    const start = offset + WAL_RECORD_HEADER_BYTES;
    if (crc32(bytes.subarray(start, start + payloadBytes)) === bytes.readUInt32LE(offset + 4)) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// The previous release's format: one tagged-JSON line per record (see peer/frame.ts `toWire`).

/** `<dir>/<name>.jsonl` for `<dir>/<name>.<ext>`; null when that is `file` itself. */
function legacyFileOf(file: string): string | null {
  const legacy = path.join(path.dirname(file), `${path.basename(file, path.extname(file))}.jsonl`);
  return legacy === file ? null : legacy;
}

/** The records of a JSON-lines file, with the same torn-tail rule as ever. */
function readLegacyRecords(file: string): unknown[] {
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

/**
 * If `file` does not exist but the previous release's file beside it does, writes its records
 * into `file` (temporary file, fsync, rename) and then removes the old file. A crash before the
 * rename leaves the old file to convert again; after it, the new file wins and the old is unused.
 * Returns the converted file, or null when there was nothing to convert.
 */
function upgradeLegacy(file: string): string | null {
  const legacy = legacyFileOf(file);
  if (legacy === null || existsSync(file) || !existsSync(legacy)) return null;
  replaceFile(file, readLegacyRecords(legacy));
  unlinkSync(legacy);
  return legacy;
}
