/**
 * config.ini validation (one line naming the problem), expiry conversion, and the write-ahead
 * file (records survive, a torn last line is dropped, corruption elsewhere is an error).
 */

import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { absoluteExpiryMs, toOp } from '../src/commands.ts';
import { ConfigError, findNode, parseConfig } from '../src/config.ts';
import { WalError, WriteAheadFile } from '../src/wal.ts';

const node = (id: string, n: number): string =>
  `[node.${id}]\nclient = 127.0.0.1:${8000 + n}\npeer = 127.0.0.1:${9000 + n}\nmemcached = 127.0.0.1:${11201 + n}\n`;
const valid = `[cluster]\nconsistency = sequential\nheartbeat_interval_ms = 50\nfailure_timeout_ms = 400\n${node('n1', 0)}${node('n2', 1)}${node('n3', 2)}`;

describe('config.ini', () => {
  it('parses a valid file and finds a node by its client port', () => {
    const config = parseConfig(valid, 'cluster.ini');
    expect(config.consistency).toBe('sequential');
    expect(config.heartbeatIntervalMs).toBe(50);
    expect(config.valueBytesMax).toBe(1024 * 1024);
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
  const file = (): string => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mckv-wal-'));
    dirs.push(dir);
    return path.join(dir, 'node', 'wal.jsonl');
  };
  afterEach(() => {
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });

  it('gives back what was appended, Buffers and bigints included', () => {
    const path0 = file();
    const wal = new WriteAheadFile(path0);
    wal.append({ term: 3n, value: Buffer.from([0, 255]) });
    wal.write({ entries: [1, 2] });
    wal.sync();
    wal.close();
    expect(WriteAheadFile.read(path0)).toEqual([{ term: 3n, value: Buffer.from([0, 255]) }, { entries: [1, 2] }]);
  });

  it('compacts to one record', () => {
    const target = file();
    const wal = new WriteAheadFile(target);
    for (let index = 0; index < 5; index++) wal.append({ index });
    wal.compact({ snapshot: 4 });
    wal.append({ index: 5 });
    wal.close();
    expect(WriteAheadFile.read(target)).toEqual([{ snapshot: 4 }, { index: 5 }]);
  });

  it('drops a torn last line but refuses corruption in the middle', () => {
    const target = file();
    const wal = new WriteAheadFile(target);
    wal.append({ a: 1 });
    wal.append({ b: 2 });
    wal.close();
    appendFileSync(target, '{"c":');
    expect(WriteAheadFile.read(target)).toEqual([{ a: 1 }, { b: 2 }]);
    writeFileSync(target, readFileSync(target, 'utf8').replace('{"a":1}', '{"a":'));
    expect(() => WriteAheadFile.read(target)).toThrow(WalError);
  });

  it('reads nothing from a file that does not exist', () => {
    expect(WriteAheadFile.read(path.join(os.tmpdir(), 'mckv-no-such-wal', 'wal.jsonl'))).toEqual([]);
  });
});
