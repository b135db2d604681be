/**
 * `runCheck`: the verdict as an exit code (0 ok, 1 violation, 2 undecided) and a readable report,
 * on hand-written histories, a Jepsen etcd log (format detected from its first line), and
 * malformed input; and the small argument parser.
 */

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { detectFormat, parseCheckArgs, runCheck, type RunCheckOptions } from '../src/check/cli.ts';

const testDir = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(testDir, '..');
const historiesDir = path.join(testDir, 'histories');
const etcdDir = path.resolve(repoRoot, '..', 'shared', 'histories', 'etcd-jepsen');
const scratch = mkdtempSync(path.join(tmpdir(), 'mckv-check-cli-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

async function run(options: Omit<RunCheckOptions, 'out' | 'timeoutMs'> & { timeoutMs?: number }): Promise<{ code: number; lines: string[] }> {
  const lines: string[] = [];
  const code = await runCheck({ timeoutMs: 10_000, ...options, out: (line) => lines.push(line) });
  return { code, lines };
}

describe('runCheck exit codes', () => {
  it('0 for a linearizable history', async () => {
    const { code, lines } = await run({ file: path.join(historiesDir, 'concurrent-overlap.jsonl'), model: 'linearizability' });
    expect(code).toBe(0);
    expect(lines[0]).toBe('OK: linearizability');
  });

  it('1 for a stale read, printing the key and the operations around it', async () => {
    const { code, lines } = await run({ file: path.join(historiesDir, 'stale-read.jsonl'), model: 'linearizability' });
    expect(code).toBe(1);
    expect(lines[0]).toBe('VIOLATION: linearizability (key "x")');
    const report = lines.join('\n');
    expect(report).toContain('write "2"');
    expect(report).toMatch(/p1 read → "1" \(lines 5-6\)/);
  });

  it('0 for the same stale read under the sequential model', async () => {
    expect((await run({ file: path.join(historiesDir, 'stale-read.jsonl'), model: 'sequential' })).code).toBe(0);
  });

  it('1 for a read-your-writes violation under the session model', async () => {
    const { code, lines } = await run({ file: path.join(historiesDir, 'own-write-unseen.jsonl'), model: 'session' });
    expect(code).toBe(1);
    expect(lines.join('\n')).toContain('read-your-writes violated by process 0');
  });

  it('detects the Jepsen etcd format and reaches its known verdicts', async () => {
    expect((await run({ file: path.join(etcdDir, 'etcd_005.log'), model: 'linearizability' })).code).toBe(0);
    const violation = await run({ file: path.join(etcdDir, 'etcd_000.log'), model: 'linearizability' });
    expect(violation.code).toBe(1);
    expect(violation.lines[0]).toBe('VIOLATION: linearizability (key "etcd")');
  });

  it('2 when the search runs out of time on a hard history', async () => {
    const { code, lines } = await run({ file: path.join(etcdDir, 'etcd_002.log'), model: 'linearizability', timeoutMs: 1 });
    expect(code).toBe(2);
    expect(lines[0]).toBe('UNKNOWN: linearizability (key "etcd")');
    expect(lines.join('\n')).toContain('ran out of time (1 ms)');
  });

  it('2 for a malformed history, naming the line', async () => {
    const file = path.join(scratch, 'bad.jsonl');
    writeFileSync(file, '{"process": 0, "type": "invoke", "f": "write", "key": "k", "value": 1}\n{"process": 0, "type": "ok"\n');
    const { code, lines } = await run({ file, model: 'linearizability' });
    expect(code).toBe(2);
    expect(lines).toEqual([`error: ${file}:2: not valid JSON: {"process": 0, "type": "ok"`]);
  });

  it('2 for a missing file', async () => {
    const { code, lines } = await run({ file: path.join(scratch, 'absent.jsonl'), model: 'session' });
    expect(code).toBe(2);
    expect(lines[0]).toMatch(/^error: cannot read /);
  });

  it('reads a failed cas as compare-failed when asked', async () => {
    const file = path.join(scratch, 'failed-cas.jsonl');
    writeFileSync(file, [
      '{"process": 0, "type": "invoke", "f": "write", "key": "k", "value": 1}',
      '{"process": 0, "type": "ok", "f": "write", "key": "k", "value": 1}',
      '{"process": 0, "type": "invoke", "f": "cas", "key": "k", "value": [1, 2]}',
      '{"process": 0, "type": "fail", "f": "cas", "key": "k", "value": [1, 2]}',
    ].join('\n'));
    expect((await run({ file, model: 'linearizability' })).code).toBe(0);
    expect((await run({ file, model: 'linearizability', failedCasIsFalse: true })).code).toBe(1);
  });
});

describe('detectFormat and parseCheckArgs', () => {
  it('detects the format from the first non-blank line', () => {
    expect(detectFormat('\nINFO  jepsen.util - 0\t:invoke\t:read\tnil\n')).toBe('jepsen-etcd');
    expect(detectFormat('{"process": 0}\n')).toBe('jsonl');
  });

  it('parses options and rejects bad ones', () => {
    expect(parseCheckArgs(['h.jsonl', '--model', 'session', '--timeout-ms', '500'])).toEqual({
      ok: true, options: { file: 'h.jsonl', model: 'session', timeoutMs: 500, format: undefined, failedCasIsFalse: false },
    });
    expect(parseCheckArgs(['--format', 'jepsen-etcd', 'e.log', '--failed-cas-is-false'])).toMatchObject({
      ok: true, options: { file: 'e.log', format: 'jepsen-etcd', failedCasIsFalse: true, model: 'linearizability' },
    });
    expect(parseCheckArgs(['h.jsonl', '--model', 'serializable'])).toMatchObject({ ok: false });
    expect(parseCheckArgs(['h.jsonl', '--timeout-ms', 'soon'])).toMatchObject({ ok: false });
    expect(parseCheckArgs([])).toEqual({ ok: false, error: 'missing HISTORY file' });
    expect(parseCheckArgs(['a', 'b'])).toEqual({ ok: false, error: 'unexpected argument b' });
  });
});
