/**
 * config.ini validation (one line naming the problem, a setting it does not know refused, a
 * mutated file refused only with a ConfigError), expiry conversion, and the write-ahead
 * file (records survive, only a torn last record is dropped, a complete record that fails its
 * checksum is refused wherever it is, a file of another node or cluster is refused, the file and
 * its folder are the owner's alone).
 */

import { execFile } from 'node:child_process';
import { appendFileSync, chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { crc32 } from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import { absoluteExpiryMs, toOp } from '../src/controller/commands.ts';
import { ConfigError, findNode, parseConfig } from '../src/config.ts';
import { mulberry32 } from '../src/runtime/random.ts';
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
    expect(config.walSync).toBe('write');
    expect(parseConfig(valid.replace('[cluster]\n', '[cluster]\nwal_sync = fsync\n'), 'cluster.ini').walSync).toBe('fsync');
    expect(config.cpuScheduling).toBe('batch');
    expect(parseConfig(valid.replace('[cluster]\n', '[cluster]\ncpu_scheduling = normal\n'), 'cluster.ini').cpuScheduling).toBe('normal');
    expect(findNode(config, 8001).id).toBe('n2');
    expect(Object.isFrozen(config)).toBe(true);
  });

  it('read leases: on by default with their timing (lease 500 ms or two heartbeats, drift 1%, margin 10 ms unless set); off', () => {
    expect(parseConfig(valid, 'cluster.ini').readLeases).toEqual({ leaseMs: 500, clockDriftPpmMax: 10_000, marginMs: 10 });
    expect(parseConfig(valid.replace('[cluster]\n', '[cluster]\nread_leases = off\n'), 'cluster.ini').readLeases).toBeNull();
    const slow = parseConfig(valid.replace('heartbeat_interval_ms = 50', 'heartbeat_interval_ms = 400').replace('failure_timeout_ms = 400', 'failure_timeout_ms = 2000'), 'cluster.ini');
    expect(slow.readLeases?.leaseMs).toBe(800);
    const tuned = '[cluster]\nread_leases = on\nread_lease_ms = 300\nclock_drift_ppm_max = 500\nread_lease_margin_ms = 6\n';
    expect(parseConfig(valid.replace('[cluster]\n', tuned), 'cluster.ini').readLeases).toEqual({ leaseMs: 300, clockDriftPpmMax: 500, marginMs: 6 });
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
    ['an unknown read_leases', valid.replace('[cluster]\n', '[cluster]\nread_leases = yes\n'), /read_leases: unknown value 'yes' \(expected on or off\)/],
    ['a lease margin below the clock jump threshold', valid.replace('[cluster]\n', '[cluster]\nread_lease_margin_ms = 2\n'), /read_lease_margin_ms/],
    ['a read lease shorter than two heartbeats', valid.replace('[cluster]\n', '[cluster]\nread_leases = on\nread_lease_ms = 60\n'), /read_lease_ms \(60\) must be at least twice heartbeat_interval_ms \(50\)/],
    ['a drift bound of 10% or more', valid.replace('[cluster]\n', '[cluster]\nclock_drift_ppm_max = 200000\n'), /clock_drift_ppm_max = '200000' is not a whole number from 0 to 100000/],
    ['an unknown cpu_scheduling', valid.replace('[cluster]\n', '[cluster]\ncpu_scheduling = realtime\n'), /cpu_scheduling: unknown value 'realtime' \(expected batch or normal\)/],
  ])('rejects %s with one line naming it', (_, text, message) => {
    expect(() => parseConfig(text, 'cluster.ini')).toThrow(ConfigError);
    expect(() => parseConfig(text, 'cluster.ini')).toThrow(message);
  });

  it('refuses a setting or section it does not know, naming the one likely meant', () => {
    const withCluster = (line: string): string => valid.replace('[cluster]\n', `[cluster]\n${line}\n`);
    expect(() => parseConfig(withCluster('consistancy = eventual'), 'c.ini')).toThrow(
      /c\.ini: \[cluster\] setting 'consistancy' is unknown \(did you mean 'consistency'\?\)/,
    );
    expect(() => parseConfig(withCluster('Read_Leases = off'), 'c.ini')).toThrow(/did you mean 'read_leases'/);
    expect(() => parseConfig(withCluster('leases = off'), 'c.ini')).toThrow(/'leases' is unknown \(known: consistency, /);
    expect(() => parseConfig(valid.replace('memcached = 127.0.0.1:11202', 'memcache = 127.0.0.1:11202'), 'c.ini')).toThrow(
      /\[node\.n2\] setting 'memcache' is unknown \(did you mean 'memcached'\?\)/,
    );
    expect(() => parseConfig(`top = 1\n${valid}`, 'c.ini')).toThrow(/outside a section 'top' is unknown/);
    expect(() => parseConfig(valid.replace('[cluster]', '[clusters]'), 'c.ini')).toThrow(/'clusters' is unknown \(did you mean 'cluster'\?\)/);
    // Given twice, a setting or a section is refused (the reader would keep the last without a word).
    expect(() => parseConfig(withCluster('consistency = eventual\nconsistency = sequential'), 'c.ini')).toThrow(
      /c\.ini: \[cluster\] setting 'consistency' is given twice \(lines \d+ and \d+\)/,
    );
    expect(() => parseConfig(`${valid}\n[node.n1]\nhttp = 127.0.0.1:9300\n`, 'c.ini')).toThrow(/section \[node\.n1\] is given twice/);
    // A node's dial.<peer> settings are its own to name.
    expect(parseConfig(valid.replace('[node.n1]\n', '[node.n1]\ndial.n2 = 127.0.0.1:9100\n'), 'c.ini').nodes[0]?.dial.n2).toEqual({ host: '127.0.0.1', port: 9100 });
  });

  it('a mutated file is parsed or refused with a ConfigError, never another error', () => {
    const random = mulberry32(77);
    const lines = valid.split('\n');
    const junk = ['', '-1', '0', 'abc', '1e309', '0x10', '99999999999999999999', ' = ', '[', ']', '[node.]', '[node.n1]', '[cluster]',
      'a[] = 1', '__proto__ = 1', '[__proto__]', 'constructor = x', 'peer = :', 'client = host:99999', 'dial.n2 =', 'tls_cert = x'];
    let refused = 0;
    for (let round = 0; round < 2000; round += 1) {
      const mutated = [...lines];
      for (let change = 0; change < 1 + Math.floor(random() * 3); change += 1) {
        const at = Math.floor(random() * mutated.length);
        const line = mutated[at] ?? '';
        const replacement = junk[Math.floor(random() * junk.length)] ?? '';
        if (random() < 0.5) mutated[at] = line.includes('=') ? `${line.slice(0, line.indexOf('=') + 1)} ${replacement}` : replacement;
        else mutated.splice(at, random() < 0.5 ? 1 : 0, replacement);
      }
      try {
        parseConfig(mutated.join('\n'), 'c.ini');
      } catch (error) {
        expect(error, mutated.join(' | ')).toBeInstanceOf(ConfigError);
        expect(String((error as Error).message)).not.toContain('\n');
        refused += 1;
      }
    }
    expect(refused).toBeGreaterThan(500);
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
  const owner = { clusterId: 'mckv', nodeId: 'n1' };
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
  const entry = (index: number, valueBytes = 100): unknown => ({
    kind: 'entries',
    entries: [{ term: 3, index, op: { kind: 'set', key: `key:${index}`, value: Buffer.alloc(valueBytes, index), flags: 0, exptime: 0 } }],
  });
  /** A file holding `records`, written through the WAL; returns its path. */
  const written = (records: unknown[], target = file()): string => {
    const wal = new WriteAheadFile(target, owner);
    for (const record of records) wal.append(record);
    wal.close();
    return target;
  };
  const modeOf = (target: string): number => statSync(target).mode & 0o777;
  /** Where the last record of `target` starts: after the header record and all but one of `records`. */
  const lastRecordOffset = (target: string, count: number): number => {
    const bytes = readFileSync(target);
    let offset = 0;
    for (let index = 0; index < count; index++) offset += WAL_RECORD_HEADER_BYTES + bytes.readUInt32LE(offset);
    return offset;
  };

  it('gives back what was appended, Buffers and bigints included', () => {
    const path0 = file();
    const wal = new WriteAheadFile(path0, owner);
    wal.append({ term: 3n, value: Buffer.from([0, 255]) });
    wal.write({ entries: [1, 2] });
    wal.write({ huge: -(2n ** 70n), nested: [{ bytes: Buffer.alloc(0) }, null, 'é'], negative: -1.5 });
    wal.write(entry(17));
    wal.sync();
    wal.close();
    expect(WriteAheadFile.read(path0, owner)).toEqual([
      { term: 3n, value: Buffer.from([0, 255]) },
      { entries: [1, 2] },
      { huge: -(2n ** 70n), nested: [{ bytes: Buffer.alloc(0) }, null, 'é'], negative: -1.5 },
      entry(17),
    ]);
  });

  it('compacts to one record and appends after it', () => {
    const target = file();
    const wal = new WriteAheadFile(target, owner);
    for (let index = 0; index < 5; index++) wal.append({ index });
    wal.compact({ snapshot: 4, value: Buffer.from('v') });
    wal.append({ index: 5 });
    wal.close();
    expect(WriteAheadFile.read(target, owner)).toEqual([{ snapshot: 4, value: Buffer.from('v') }, { index: 5 }]);
    expect(existsSync(`${target}.tmp`)).toBe(false);
    expect(() => WriteAheadFile.read(target, { ...owner, nodeId: 'n2' })).toThrow(/node 'n1', but this is cluster 'mckv' node 'n2'/);
  });

  it.each([
    ['another node', { clusterId: 'mckv', nodeId: 'n2' }, "cluster 'mckv' node 'n2', but this is cluster 'mckv' node 'n1'"],
    ['another cluster', { clusterId: 'other', nodeId: 'n1' }, "cluster 'other' node 'n1', but this is cluster 'mckv' node 'n1'"],
  ])("refuses %s's file in one line naming the file and both ids", (_, other, ids) => {
    const target = file();
    const wal = new WriteAheadFile(target, other);
    wal.append({ term: 3n, votedFor: other.nodeId });
    wal.close();
    for (const open of [() => WriteAheadFile.read(target, owner), () => new WriteAheadFile(target, owner)]) {
      let caught: unknown = null;
      try {
        open();
      } catch (error) {
        caught = error;
      }
      expect(caught).toBeInstanceOf(WalError);
      expect(caught).toMatchObject({ name: 'WalError', code: 'WAL_OTHER_OWNER' });
      expect((caught as Error).message).toBe(`${target}: write-ahead file of ${ids}; refusing to replay it`);
    }
  });

  it("a file written for another node stays that node's: the refusal leaves it as it was", () => {
    const dir = directory();
    const target = written([{ term: 2n }], path.join(dir, 'wal.bin'));
    const before = readFileSync(target);
    expect(() => new WriteAheadFile(target, { ...owner, nodeId: 'n3' })).toThrow(WalError);
    expect(readFileSync(target)).toEqual(before);
  });

  it('refuses a file without a header, and starts a new one where the file is empty', () => {
    const target = written([{ term: 2n }, entry(1)]);
    const bytes = readFileSync(target);
    writeFileSync(target, bytes.subarray(lastRecordOffset(target, 1)));
    expect(() => WriteAheadFile.read(target, owner)).toThrow(expect.objectContaining({ code: 'WAL_NO_HEADER' }));
    expect(() => new WriteAheadFile(target, owner)).toThrow(`${target}: no write-ahead header naming its cluster and node`);
    writeFileSync(target, '');
    expect(WriteAheadFile.read(target, owner)).toEqual([]);
    written([{ term: 4n }], target);
    expect(WriteAheadFile.read(target, owner)).toEqual([{ term: 4n }]);
  });

  it('keeps the file, the temporary file of a compaction and its folder to the owner alone', () => {
    const target = file();
    mkdirSync(path.dirname(target), { recursive: true, mode: 0o755 });
    chmodSync(path.dirname(target), 0o755);
    writeFileSync(`${target}.tmp`, 'left over', { mode: 0o644 });
    const wal = new WriteAheadFile(target, owner);
    wal.append({ term: 1n });
    expect(modeOf(path.dirname(target))).toBe(0o700);
    expect(modeOf(target)).toBe(0o600);
    chmodSync(target, 0o644);
    writeFileSync(`${target}.tmp`, 'left over', { mode: 0o644 });
    wal.compact({ term: 2n });
    wal.close();
    expect(modeOf(target)).toBe(0o600);
    chmodSync(target, 0o644);
    new WriteAheadFile(target, owner).close();
    expect(modeOf(target)).toBe(0o600);
  });

  it('creates a missing data folder and the node folder in it as 0700', () => {
    const base = path.dirname(directory());
    const target = path.join(base, 'data', 'n1', 'wal.bin');
    new WriteAheadFile(target, owner).close();
    expect(modeOf(path.join(base, 'data'))).toBe(0o700);
    expect(modeOf(path.join(base, 'data', 'n1'))).toBe(0o700);
  });

  it.each([1, 5, WAL_RECORD_HEADER_BYTES, WAL_RECORD_HEADER_BYTES + 50])('drops a last record cut short by %d bytes', (cutBytes) => {
    const target = written([entry(1), entry(2), entry(3)]);
    truncateSync(target, statSync(target).size - cutBytes);
    expect(WriteAheadFile.read(target, owner)).toEqual([entry(1), entry(2)]);
  });

  /** A record header (length, checksums) claiming 200 payload bytes. */
  const headerOnly = (): Buffer => {
    const header = Buffer.alloc(WAL_RECORD_HEADER_BYTES);
    header.writeUInt32LE(200, 0);
    header.writeUInt32LE(crc32(header.subarray(0, 8)), 8);
    return header;
  };

  it.each([
    ['half a header', Buffer.from([7, 0, 0])],
    ['a header and no payload', headerOnly()],
    ['zeros the file system had not filled in', Buffer.alloc(300)],
  ])('drops %s at the tail', (_, garbage) => {
    const target = written([entry(1), entry(2)]);
    appendFileSync(target, garbage);
    expect(WriteAheadFile.read(target, owner)).toEqual([entry(1), entry(2)]);
    const wal = new WriteAheadFile(target, owner);
    expect(wal.opened).toEqual({ tornBytesCut: garbage.length });
    wal.append(entry(3));
    wal.close();
    expect(WriteAheadFile.read(target, owner)).toEqual([entry(1), entry(2), entry(3)]);
    const reopened = new WriteAheadFile(target, owner);
    expect(reopened.opened).toEqual({ tornBytesCut: 0 });
    reopened.close();
  });

  it('drops a last record with a sector of zeros the file system had not filled in', () => {
    const target = written([entry(1), entry(2, 2000)]);
    const start = lastRecordOffset(target, 2);
    const bytes = readFileSync(target);
    const sector = (Math.floor(start / 512) + 2) * 512;
    bytes.fill(0, sector, sector + 512);
    writeFileSync(target, bytes);
    expect(WriteAheadFile.read(target, owner)).toEqual([entry(1)]);
    const wal = new WriteAheadFile(target, owner);
    expect(wal.opened).toEqual({ tornBytesCut: bytes.length - start });
    wal.close();
  });

  it.each([
    ['its payload', -3],
    ['its length', 0],
    ['its payload checksum', 4],
  ])('refuses a complete last record with a flipped bit in %s, naming the file and offset, and leaves it', (_, at) => {
    const target = written([entry(1), entry(2)]);
    const start = lastRecordOffset(target, 2);
    const bytes = readFileSync(target);
    const flipAt = at < 0 ? bytes.length + at : start + at;
    bytes.writeUInt8(bytes.readUInt8(flipAt) ^ 0x01, flipAt);
    writeFileSync(target, bytes);
    for (const open of [() => WriteAheadFile.read(target, owner), () => new WriteAheadFile(target, owner)]) {
      expect(open).toThrow(expect.objectContaining({ name: 'WalError', code: 'WAL_CORRUPT' }));
      expect(open).toThrow(`${target}: the last record, at byte ${start}, is corrupt`);
    }
    expect(readFileSync(target)).toEqual(bytes);
  });

  it('refuses a header with a bad checksum at the tail when it is not zeros', () => {
    const target = written([entry(1)]);
    const size = statSync(target).size;
    appendFileSync(target, Buffer.from([200, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]));
    expect(() => new WriteAheadFile(target, owner)).toThrow(`${target}: the last record, at byte ${size}, is corrupt (header checksum mismatch)`);
  });

  it('refuses a corrupt payload byte in the first of three records, naming the file and offset', () => {
    const target = written([entry(1), entry(2), entry(3)]);
    const start = lastRecordOffset(target, 1);
    const bytes = readFileSync(target);
    const flipAt = start + WAL_RECORD_HEADER_BYTES + 20;
    bytes.writeUInt8(bytes.readUInt8(flipAt) ^ 0x01, flipAt);
    writeFileSync(target, bytes);
    expect(() => WriteAheadFile.read(target, owner)).toThrow(WalError);
    expect(() => WriteAheadFile.read(target, owner)).toThrow(`${target}: the record at byte ${start} is corrupt`);
  });

  it('refuses a corrupt length in the middle rather than dropping what follows it', () => {
    const target = written([entry(1), entry(2), entry(3)]);
    const second = lastRecordOffset(target, 2);
    const bytes = readFileSync(target);
    bytes.writeUInt32LE(0x7fffffff, second);
    writeFileSync(target, bytes);
    expect(() => WriteAheadFile.read(target, owner)).toThrow(`the record at byte ${second} is corrupt`);
  });

  it('reads nothing from a file that does not exist', () => {
    expect(WriteAheadFile.read(path.join(os.tmpdir(), 'mckv-no-such-wal', 'wal.bin'), owner)).toEqual([]);
  });
});

describe('a controller given a write-ahead file of another node', () => {
  let dir: string | null = null;
  afterEach(() => {
    if (dir !== null) rmSync(dir, { recursive: true, force: true });
    dir = null;
  });

  it('exits 1 with one line naming the file and both ids, before it listens', async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'mckv-wal-owner-'));
    // Never bound: the controller refuses before it listens.
    const ports = (n: number): string =>
      `[node.n${n}]\nclient = 127.0.0.1:${47100 + n}\npeer = 127.0.0.1:${47200 + n}\nmemcached = 127.0.0.1:${47300 + n}\n`;
    const config = path.join(dir, 'cluster.ini');
    writeFileSync(config, `[cluster]\ncluster_id = blue\ncpu_scheduling = normal\n${ports(1)}${ports(2)}${ports(3)}`);
    const walFile = path.join(dir, 'data', 'n1', 'wal.bin');
    const copied = new WriteAheadFile(walFile, { clusterId: 'blue', nodeId: 'n2' });
    copied.append({ term: 5n, votedFor: 'n3' });
    copied.close();
    const main = path.join(import.meta.dirname, '..', 'main.ts');
    const result = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      execFile(process.execPath, ['--import', 'tsx', main, '-c', config, '-p', '47101', '--kvtype', 'memory'], { timeout: 30_000 }, (error, _, stderr) =>
        resolve({ code: error === null ? 0 : ((error as { code?: number }).code ?? null), stderr }),
      );
    });
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(`mckv: ${walFile}: write-ahead file of cluster 'blue' node 'n2', but this is cluster 'blue' node 'n1'; refusing to replay it\n`);
  }, 40_000);
});
