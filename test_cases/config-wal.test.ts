/**
 * config.ini validation (one line naming the problem), expiry conversion, and the write-ahead
 * file (records survive, a torn last record is dropped, corruption elsewhere is an error, a
 * previous release's JSON-lines file is converted).
 */

import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { absoluteExpiryMs, toOp } from '../src/commands.ts';
import { ConfigError, findNode, parseConfig } from '../src/config.ts';
import { toWire } from '../src/peer/frame.ts';
import { WAL_RECORD_HEADER_BYTES, WalError, WriteAheadFile } from '../src/wal.ts';

const node = (id: string, n: number): string =>
  `[node.${id}]\nclient = 127.0.0.1:${8000 + n}\npeer = 127.0.0.1:${9000 + n}\nmemcached = 127.0.0.1:${11201 + n}\n`;
const valid = `[cluster]\nconsistency = sequential\nheartbeat_interval_ms = 50\nfailure_timeout_ms = 400\n${node('n1', 0)}${node('n2', 1)}${node('n3', 2)}`;

describe('config.ini', () => {
  it('parses a valid file and finds a node by its client port', () => {
    const config = parseConfig(valid, 'cluster.ini');
    expect(config.consistency).toBe('sequential');
    expect(config.heartbeatIntervalMs).toBe(50);
    expect(config.valueBytesMax).toBe(1024 * 1024);
    expect(config.walSync).toBe('fsync');
    expect(parseConfig(valid.replace('[cluster]\n', '[cluster]\nwal_sync = write\n'), 'cluster.ini').walSync).toBe('write');
    expect(config.cpuScheduling).toBe('batch');
    expect(parseConfig(valid.replace('[cluster]\n', '[cluster]\ncpu_scheduling = normal\n'), 'cluster.ini').cpuScheduling).toBe('normal');
    expect(findNode(config, 8001).id).toBe('n2');
    expect(Object.isFrozen(config)).toBe(true);
  });

  it.each([
    ['an unknown mode', valid.replace('sequential', 'strong'), /unknown consistency mode 'strong'/],
    ['a missing address', valid.replace('peer = 127.0.0.1:9001\n', ''), /\[node.n2\] is missing 'peer'/],
    ['a bad port', valid.replace('8002', '99999'), /'127.0.0.1:99999' is not host:port/],
    ['a duplicate address', valid.replace('9001', '9000'), /n2 peer 127.0.0.1:9000 is already used by n1 peer/],
    ['a bad number', valid.replace('= 50', '= fast'), /heartbeat_interval_ms = 'fast' is not a whole number/],
    ['a failure timeout too short', valid.replace('= 400', '= 60'), /must be at least twice heartbeat_interval_ms/],
    ['no nodes', '[cluster]\nconsistency = eventual\n', /no \[node.<id>\] sections/],
    ['an unknown wal_sync', valid.replace('[cluster]\n', '[cluster]\nwal_sync = never\n'), /wal_sync: unknown value 'never' \(expected fsync or write\)/],
    ['an unknown cpu_scheduling', valid.replace('[cluster]\n', '[cluster]\ncpu_scheduling = realtime\n'), /cpu_scheduling: unknown value 'realtime' \(expected batch or normal\)/],
  ])('rejects %s with one line naming it', (_, text, message) => {
    expect(() => parseConfig(text, 'cluster.ini')).toThrow(ConfigError);
    expect(() => parseConfig(text, 'cluster.ini')).toThrow(message);
  });

  it('names an unknown client port', () => {
    expect(() => findNode(parseConfig(valid, 'c.ini'), 1234)).toThrow(/no node has client port 1234 \(known: 8000, 8001, 8002\)/);
  });
});

describe('expiry', () => {
  const nowMs = 1_700_000_000_000;
  it.each([
    [0, 0],
    [10, nowMs + 10_000],
    [60 * 60 * 24 * 30, nowMs + 60 * 60 * 24 * 30 * 1000],
    [1_800_000_000, 1_800_000_000_000],
    [1_600_000_000, 1],
    [-1, 1],
  ])('exptime %d becomes %d', (exptime, expected) => {
    expect(absoluteExpiryMs(exptime, nowMs)).toBe(expected);
  });

  it('makes a set\'s expiry absolute at the controller that took it', () => {
    const op = toOp({ kind: 'store', verb: 'set', key: 'k', flags: 3, exptime: 5, value: Buffer.from('v'), casUnique: 0n, noreply: false }, nowMs);
    expect(op).toMatchObject({ kind: 'store', expiresAtMs: nowMs + 5000, flags: 3 });
    expect(toOp({ kind: 'version' }, nowMs)).toBeNull();
  });
});

describe('write-ahead file', () => {
  const dirs: string[] = [];
  const directory = (): string => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mckv-wal-'));
    dirs.push(dir);
    return path.join(dir, 'node');
  };
  const file = (): string => path.join(directory(), 'wal.bin');
  afterEach(() => {
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });
  const entry = (index: number): unknown => ({
    kind: 'entries',
    entries: [{ term: 3, index, op: { kind: 'set', key: `key:${index}`, value: Buffer.alloc(100, index), flags: 0, exptime: 0 } }],
  });
  /** A file holding `records`, written through the WAL; returns its path. */
  const written = (records: unknown[]): string => {
    const target = file();
    const wal = new WriteAheadFile(target);
    for (const record of records) wal.append(record);
    wal.close();
    return target;
  };

  it('gives back what was appended, Buffers and bigints included', () => {
    const path0 = file();
    const wal = new WriteAheadFile(path0);
    wal.append({ term: 3n, value: Buffer.from([0, 255]) });
    wal.write({ entries: [1, 2] });
    wal.write({ huge: -(2n ** 70n), nested: [{ bytes: Buffer.alloc(0) }, null, 'é'], negative: -1.5 });
    wal.write(entry(17));
    wal.sync();
    wal.close();
    expect(WriteAheadFile.read(path0)).toEqual([
      { term: 3n, value: Buffer.from([0, 255]) },
      { entries: [1, 2] },
      { huge: -(2n ** 70n), nested: [{ bytes: Buffer.alloc(0) }, null, 'é'], negative: -1.5 },
      entry(17),
    ]);
  });

  it('compacts to one record and appends after it', () => {
    const target = file();
    const wal = new WriteAheadFile(target);
    for (let index = 0; index < 5; index++) wal.append({ index });
    wal.compact({ snapshot: 4, value: Buffer.from('v') });
    wal.append({ index: 5 });
    wal.close();
    expect(WriteAheadFile.read(target)).toEqual([{ snapshot: 4, value: Buffer.from('v') }, { index: 5 }]);
    expect(existsSync(`${target}.tmp`)).toBe(false);
  });

  it.each([1, 5, WAL_RECORD_HEADER_BYTES, WAL_RECORD_HEADER_BYTES + 50])('drops a last record cut short by %d bytes', (cutBytes) => {
    const target = written([entry(1), entry(2), entry(3)]);
    truncateSync(target, statSync(target).size - cutBytes);
    expect(WriteAheadFile.read(target)).toEqual([entry(1), entry(2)]);
  });

  it.each([
    ['half a header', Buffer.from([7, 0, 0])],
    ['a header and no payload', Buffer.from([200, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8])],
    ['zeros the file system had not filled in', Buffer.alloc(300)],
  ])('drops %s at the tail', (_, garbage) => {
    const target = written([entry(1), entry(2)]);
    appendFileSync(target, garbage);
    expect(WriteAheadFile.read(target)).toEqual([entry(1), entry(2)]);
    const wal = new WriteAheadFile(target);
    expect(wal.opened).toEqual({ convertedFrom: null, tornBytesCut: garbage.length });
    wal.append(entry(3));
    wal.close();
    expect(WriteAheadFile.read(target)).toEqual([entry(1), entry(2), entry(3)]);
    const reopened = new WriteAheadFile(target);
    expect(reopened.opened).toEqual({ convertedFrom: null, tornBytesCut: 0 });
    reopened.close();
  });

  it('drops a last record whose payload checksum fails, and writes on after it is reopened', () => {
    const target = written([entry(1), entry(2)]);
    const bytes = readFileSync(target);
    bytes[bytes.length - 3] ^= 0xff;
    writeFileSync(target, bytes);
    expect(WriteAheadFile.read(target)).toEqual([entry(1)]);
    const wal = new WriteAheadFile(target);
    wal.append(entry(3));
    wal.close();
    expect(WriteAheadFile.read(target)).toEqual([entry(1), entry(3)]);
  });

  it('refuses a corrupt payload byte in the first of three records, naming the file and offset', () => {
    const target = written([entry(1), entry(2), entry(3)]);
    const bytes = readFileSync(target);
    bytes[WAL_RECORD_HEADER_BYTES + 20] ^= 0x01;
    writeFileSync(target, bytes);
    expect(() => WriteAheadFile.read(target)).toThrow(WalError);
    expect(() => WriteAheadFile.read(target)).toThrow(`${target}: the record at byte 0 is corrupt`);
  });

  it('refuses a corrupt length in the middle rather than dropping what follows it', () => {
    const target = written([entry(1), entry(2), entry(3)]);
    const bytes = readFileSync(target);
    const second = bytes.readUInt32LE(0) + WAL_RECORD_HEADER_BYTES;
    bytes.writeUInt32LE(0x7fffffff, second);
    writeFileSync(target, bytes);
    expect(() => WriteAheadFile.read(target)).toThrow(`the record at byte ${second} is corrupt`);
  });

  it('reads nothing from a file that does not exist', () => {
    expect(WriteAheadFile.read(path.join(os.tmpdir(), 'mckv-no-such-wal', 'wal.bin'))).toEqual([]);
  });

  it('reads and converts a JSON-lines file of the previous release', () => {
    const dir = directory();
    mkdirSync(dir, { recursive: true });
    const records = [{ term: 2n, votedFor: 'n1' }, entry(1), { snapshot: { value: Buffer.from([0, 1, 255]) } }];
    const legacy = path.join(dir, 'wal.jsonl');
    writeFileSync(legacy, `${records.map((record) => JSON.stringify(toWire(record))).join('\n')}\n{"torn":`);
    const target = path.join(dir, 'wal.bin');
    expect(WriteAheadFile.read(target)).toEqual(records);
    const wal = new WriteAheadFile(target);
    expect(existsSync(legacy)).toBe(false);
    expect(wal.opened.convertedFrom).toBe(legacy);
    wal.append({ index: 2 });
    wal.close();
    expect(WriteAheadFile.read(target)).toEqual([...records, { index: 2 }]);
  });

  it('refuses a previous-release file corrupt in the middle, and leaves it in place', () => {
    const dir = directory();
    mkdirSync(dir, { recursive: true });
    const legacy = path.join(dir, 'wal.jsonl');
    writeFileSync(legacy, '{"a":\n{"b":2}\n');
    const target = path.join(dir, 'wal.bin');
    expect(() => WriteAheadFile.read(target)).toThrow(WalError);
    expect(() => new WriteAheadFile(target)).toThrow(WalError);
    expect(existsSync(legacy)).toBe(true);
    expect(existsSync(target)).toBe(false);
  });
});
