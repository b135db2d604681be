/**
 * The write-ahead file of one controller: the records a mode asks to make durable (term, vote,
 * log entries), fsynced before the controller carries out anything after them. This is its format
 * and its synchronous reader and writer, used at start-up and by tests; a running controller
 * writes it off the event loop (controller/wal-background.ts).
 *
 * A record is `payload length (u32 LE) | crc32 of payload | crc32 of the 8 bytes before`, then
 * the payload in peer/value-codec.ts's encoding. The first record names the format version, the
 * cluster and the node, so a file copied from another node or cluster is refused, not replayed.
 *
 * Invariants:
 * - A record that `append` returned for is on disk, whole; a refused write leaves none of it.
 * - Only a torn last write is cut off (see `scanRecords`); any other damage is a WalError naming
 *   the file and the byte offset. Lengths are checked against the bytes left before use.
 * - The file is replaced (created, compacted) only through a temporary file, an fsync and a
 *   rename, so it always starts with its header; it and its folder are the owner's alone.
 */

import { closeSync, existsSync, fstatSync, fsync, fsyncSync, ftruncateSync, openSync, readFileSync, renameSync, truncateSync, unlinkSync, writeSync } from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { decodeValue, encodeValueAfter } from './peer/value-codec.ts';
import { makePrivateDirectory, openPrivateFile } from './runtime/private-files.ts';

// Not a named import: on a Node.js without zlib.crc32 (before 20.15) that would fail while
// linking, before main.ts's version check could say so.
const { crc32 } = zlib;

/** Payload length, payload crc32, header crc32 (over the two fields before it). */
export const WAL_RECORD_HEADER_BYTES = 12;
const HEADER_CHECKED_BYTES = 8;
/** The format this build writes and reads, named in the file's first record. */
export const WAL_FORMAT_VERSION = 1;
/** The file system's unit of a torn write: a power loss leaves whole sectors of zeros. */
const SECTOR_BYTES = 512;

/** Whose file this is: its first record must name the same. */
export interface WalOwner {
  clusterId: string;
  nodeId: string;
}

/** Why a write-ahead file is refused. */
export type WalErrorCode =
  /** A record is damaged and not a torn last write. */
  | 'WAL_CORRUPT'
  /** Not empty, but its first record is not a write-ahead header. */
  | 'WAL_NO_HEADER'
  /** A header of a format version this build does not read. */
  | 'WAL_UNKNOWN_VERSION'
  /** The header names another cluster or node. */
  | 'WAL_OTHER_OWNER';

/** A write-ahead file that cannot be used: one line naming the file and what is wrong. */
export class WalError extends Error {
  override readonly name = 'WalError';
  constructor(
    readonly code: WalErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** One controller's write-ahead file, open for appending. */
export class WriteAheadFile {
  private fd: number;
  /** The file's length: where the next record starts. */
  private bytes: number;
  /** What opening the file repaired, for the controller's log. */
  readonly opened: { tornBytesCut: number };

  /**
   * Opens `file` for appending after checking its header names `owner`; a missing or empty file
   * gets a new header. Cuts off a torn last record, so what is appended next follows the last
   * valid one. Throws a WalError for a file of another owner or a corrupt one.
   */
  constructor(
    private readonly file: string,
    private readonly owner: WalOwner,
  ) {
    this.opened = WriteAheadFile.prepare(file, owner);
    this.fd = openPrivateFile(file, 'a');
    this.bytes = fstatSync(this.fd).size;
  }

  /**
   * Makes `file` ready for appending, as the constructor does, without keeping it open: checks its
   * header names `owner` (a missing or empty file gets a new header) and cuts off a torn last
   * record. Throws a WalError for a file of another owner or a corrupt one.
   */
  static prepare(file: string, owner: WalOwner): { tornBytesCut: number } {
    makePrivateDirectory(path.dirname(file), { tighten: true });
    const bytes = existsSync(file) ? readFileSync(file) : Buffer.alloc(0);
    if (bytes.length === 0) {
      replaceFile(file, [walHeaderRecord(owner)]);
      return { tornBytesCut: 0 };
    }
    const { records, validBytes } = scanRecords(file, bytes, { decode: 'header' });
    checkHeader(file, records[0], owner);
    if (validBytes < bytes.length) truncateSync(file, validBytes);
    return { tornBytesCut: bytes.length - validBytes };
  }

  /**
   * The records in `file` after its header, oldest first; none when it does not exist or is
   * empty. Throws a WalError as the constructor does.
   */
  static read(file: string, owner: WalOwner): unknown[] {
    if (!existsSync(file)) return [];
    const bytes = readFileSync(file);
    if (bytes.length === 0) return [];
    const { records } = scanRecords(file, bytes, { decode: 'all' });
    checkHeader(file, records[0], owner);
    return records.slice(1);
  }

  /**
   * Where each whole record of `file` ends, the header's first, with the decoded records after
   * the header: what a power loss may cut between (the fault runner's `power`). Throws a WalError
   * as `read` does.
   */
  static recordEnds(file: string, owner: WalOwner): { ends: number[]; records: unknown[] } {
    const { records, ends } = scanRecords(file, readFileSync(file), { decode: 'all' });
    checkHeader(file, records[0], owner);
    return { ends, records: records.slice(1) };
  }

  /** Writes a record and makes it durable. */
  append(record: unknown): void {
    this.write(record);
    this.sync();
  }

  /** Writes a record; it is durable only after the next `sync`. Throws, leaving none of it, when the disk refuses it. */
  write(record: unknown): void {
    const bytes = encodeWalRecord(record);
    try {
      writeWholeSync(this.fd, bytes);
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

  /** Replaces the whole file with its header and one record. */
  compact(record: unknown): void {
    replaceFile(this.file, [walHeaderRecord(this.owner), record]);
    closeSync(this.fd);
    this.fd = openPrivateFile(this.file, 'a');
    this.bytes = fstatSync(this.fd).size;
  }

  /** Closes the file; records written but not yet synced may or may not be durable. */
  close(): void {
    closeSync(this.fd);
  }
}

// ---------------------------------------------------------------------------------------------
// The header record

export interface HeaderRecord {
  walFormat: number;
  clusterId: string;
  nodeId: string;
}

/** The record every write-ahead file starts with, naming its format and owner. */
export function walHeaderRecord(owner: WalOwner): HeaderRecord {
  return { walFormat: WAL_FORMAT_VERSION, clusterId: owner.clusterId, nodeId: owner.nodeId };
}

/** Throws unless `first` (the file's first record, from disk: untrusted) is a header naming `owner`. */
function checkHeader(file: string, first: unknown, owner: WalOwner): void {
  const header = first as Partial<Record<keyof HeaderRecord, unknown>> | null | undefined;
  const isHeader =
    typeof header === 'object' &&
    header !== null &&
    typeof header.walFormat === 'number' &&
    typeof header.clusterId === 'string' &&
    typeof header.nodeId === 'string';
  if (!isHeader) {
    throw new WalError(
      'WAL_NO_HEADER',
      `${file}: no write-ahead header naming its cluster and node (not an mckv write-ahead file, or one from a build before headers); move it away to start node '${owner.nodeId}' with an empty log`,
    );
  }
  if (header.walFormat !== WAL_FORMAT_VERSION) {
    throw new WalError('WAL_UNKNOWN_VERSION', `${file}: write-ahead format version ${header.walFormat}; this build reads version ${WAL_FORMAT_VERSION}`);
  }
  if (header.clusterId !== owner.clusterId || header.nodeId !== owner.nodeId) {
    throw new WalError(
      'WAL_OTHER_OWNER',
      `${file}: write-ahead file of cluster '${header.clusterId}' node '${header.nodeId}', but this is cluster '${owner.clusterId}' node '${owner.nodeId}'; refusing to replay it`,
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Writing

/** One record as it goes to disk: header and payload in one Buffer, from one encoding pass. */
export function encodeWalRecord(record: unknown): Buffer {
  const bytes = encodeValueAfter(WAL_RECORD_HEADER_BYTES, record);
  const payload = bytes.subarray(WAL_RECORD_HEADER_BYTES);
  bytes.writeUInt32LE(payload.length, 0);
  bytes.writeUInt32LE(crc32(payload), 4);
  bytes.writeUInt32LE(crc32(bytes.subarray(0, HEADER_CHECKED_BYTES)), HEADER_CHECKED_BYTES);
  return bytes;
}

/** What a write that took no bytes at all throws: the disk is as good as full. */
export function noMoreBytes(): Error {
  return Object.assign(new Error('the disk took no more bytes'), { code: 'ENOSPC' });
}

/**
 * Writes all of `bytes` at the file's end, going on after short writes; throws what the disk says.
 * (Node's writeSync returns a short count without throwing when the disk is full or the file
 * size limit is reached.)
 */
export function writeWholeSync(fd: number, bytes: Buffer): void {
  for (let written = 0; written < bytes.length; ) {
    const count = writeSync(fd, bytes, written, bytes.length - written);
    if (count === 0) throw noMoreBytes();
    written += count;
  }
}

/**
 * Replaces `file` with `records`: a 0600 temporary file, an fsync, a rename and an fsync of the
 * folder, so a crash leaves the old file or the new one. When a write fails, `file` is left as it was.
 */
function replaceFile(file: string, records: unknown[]): void {
  const temporary = `${file}.tmp`;
  const fd = openPrivateFile(temporary, 'w');
  try {
    for (const record of records) writeWholeSync(fd, encodeWalRecord(record));
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
  /**
   * A checksum fails over bytes that are all there: torn only if it is the last record and some
   * sector of it is zeros. `end` is where its bytes end as far as known; `resumeAt` is where a
   * valid record after it could start.
   */
  | { kind: 'damaged'; detail: string; end: number; resumeAt: number }
  /** Cut short: a part header, or an intact header claiming more bytes than the file holds. */
  | { kind: 'torn' };

/**
 * The records of a file's bytes, decoded (all, or only the first: the header), where each ends,
 * and how many bytes the valid ones take. Only the torn last write ends the scan early:
 * - a record cut short: the process died mid-write;
 * - a last record whose checksum fails and that holds a sector-aligned stretch of zeros: the
 *   machine lost power before the file system wrote that sector (etcd's WAL reads it the same way).
 * Neither was fsynced, so nothing depended on it. A complete record whose checksum fails with no
 * such zeros was on disk whole: its bytes changed since, and cutting it could drop an fsynced
 * entry or vote, so it is corrupt, as is any damage with a valid record after it.
 */
function scanRecords(
  file: string, bytes: Buffer, options: { decode: 'all' | 'header' },
): { records: unknown[]; ends: number[]; validBytes: number } {
  const records: unknown[] = [];
  const ends: number[] = [];
  let offset = 0;
  while (offset < bytes.length) {
    const read = readRecordAt(bytes, offset, options.decode === 'all' || offset === 0);
    switch (read.kind) {
      case 'record':
        records.push(read.value);
        ends.push(read.end);
        offset = read.end;
        continue;
      case 'torn':
        return { records, ends, validBytes: offset };
      case 'damaged':
        if (hasValidRecordFrom(bytes, read.resumeAt)) {
          throw new WalError('WAL_CORRUPT', `${file}: the record at byte ${offset} is corrupt (${read.detail}) and valid records follow it`);
        }
        if (hasZeroSector(bytes, offset, read.end)) return { records, ends, validBytes: offset };
        throw new WalError(
          'WAL_CORRUPT',
          `${file}: the last record, at byte ${offset}, is corrupt (${read.detail}): it is complete, so not a torn write`,
        );
      case 'corrupt':
        throw new WalError('WAL_CORRUPT', `${file}: the record at byte ${offset} is corrupt: ${read.detail}`);
      default: {
        const unreachable: never = read;
        return unreachable;
      }
    }
  }
  return { records, ends, validBytes: offset };
}

/** Reads the record at `offset`; with `decode` false only its framing and checksums are checked. */
function readRecordAt(bytes: Buffer, offset: number, decode: boolean): RecordRead {
  if (bytes.length - offset < WAL_RECORD_HEADER_BYTES) return { kind: 'torn' };
  if (!headerChecksOut(bytes, offset)) {
    // The length cannot be trusted: the record may run to the end of the file.
    return { kind: 'damaged', detail: 'header checksum mismatch', end: bytes.length, resumeAt: offset + 1 };
  }
  const payloadBytes = bytes.readUInt32LE(offset);
  const start = offset + WAL_RECORD_HEADER_BYTES;
  const end = start + payloadBytes;
  if (end > bytes.length) return { kind: 'torn' };
  const payload = bytes.subarray(start, end);
  if (crc32(payload) !== bytes.readUInt32LE(offset + 4)) {
    return { kind: 'damaged', detail: 'payload checksum mismatch', end, resumeAt: end };
  }
  if (!decode) return { kind: 'record', value: null, end };
  // Copied out, so a restored log entry's value does not pin the whole file's bytes.
  const decoded = decodeValue(payload, { copyBuffers: true });
  if (!decoded.ok) return { kind: 'corrupt', detail: `payload does not decode: ${decoded.detail}` };
  return { kind: 'record', value: decoded.value, end };
}

function headerChecksOut(bytes: Buffer, offset: number): boolean {
  const checked = bytes.subarray(offset, offset + HEADER_CHECKED_BYTES);
  return crc32(checked) === bytes.readUInt32LE(offset + HEADER_CHECKED_BYTES);
}

/**
 * True if some piece of `bytes[from, to)` between sector boundaries of the file (the first and
 * last pieces may be partial sectors) is all zeros.
 */
function hasZeroSector(bytes: Buffer, from: number, to: number): boolean {
  for (let start = from; start < to; ) {
    const end = Math.min(to, (Math.floor(start / SECTOR_BYTES) + 1) * SECTOR_BYTES);
    if (bytes.subarray(start, end).every((byte) => byte === 0)) return true;
    start = end;
  }
  return false;
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
