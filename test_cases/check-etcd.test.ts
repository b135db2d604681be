/**
 * The linearizability checker against Porcupine's 102 Jepsen etcd histories, whose verdicts are
 * known (../shared/histories/etcd-jepsen/expected.tsv, outside the repository), and the etcd log converter.
 */

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parseHistory, type History } from '../src/check/history.ts';
import { convertJepsenEtcd, isJepsenEtcdLine } from '../src/check/jepsen-etcd.ts';
import { checkLinearizability } from '../src/check/linearizability.ts';
import { checkSequential } from '../src/check/sequential.ts';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const etcdDir = path.resolve(repoRoot, '..', 'shared', 'histories', 'etcd-jepsen');

const expected = readFileSync(path.join(etcdDir, 'expected.tsv'), 'utf8')
  .trim().split('\n').map((line) => line.split('\t') as [string, string]);

function loadEtcd(file: string): History {
  const converted = convertJepsenEtcd(readFileSync(path.join(etcdDir, file), 'utf8'));
  if (!converted.ok) throw new Error(`${file}:${converted.line}: ${converted.error}`);
  const parsed = parseHistory(converted.lines.join('\n'));
  if (!parsed.ok) throw new Error(`${file}:${parsed.line}: ${parsed.error}`);
  return parsed.history;
}

describe('Jepsen etcd histories', () => {
  it('lists 102 files, 23 linearizable', () => {
    expect(expected).toHaveLength(102);
    expect(expected.filter(([, verdict]) => verdict === 'linearizable')).toHaveLength(23);
  });

  it('every verdict matches expected.tsv, all within seconds', () => {
    const started = performance.now();
    const wrong: string[] = [];
    for (const [file, verdict] of expected) {
      const result = checkLinearizability(loadEtcd(file), { timeoutMs: 10_000 });
      const want = verdict === 'linearizable' ? 'ok' : 'violation';
      if (result.verdict !== want) wrong.push(`${file}: expected ${want}, got ${result.verdict}`);
    }
    expect(wrong).toEqual([]);
    expect(performance.now() - started).toBeLessThan(20_000);
  }, 60_000);

  it('every linearizable history is also sequentially consistent', () => {
    for (const [file, verdict] of expected) {
      if (verdict !== 'linearizable') continue;
      expect(checkSequential(loadEtcd(file), { timeoutMs: 10_000 }).verdict, file).toBe('ok');
    }
  }, 60_000);

  it('explains a violation with the longest prefix and the read that cannot be placed', () => {
    const result = checkLinearizability(loadEtcd('etcd_000.log'), { timeoutMs: 10_000 });
    expect(result.verdict).toBe('violation');
    expect(result.key).toBe('etcd');
    expect(result.detail).toMatch(/Longest valid prefix found: \d+ operation\(s\)/);
    expect(result.detail).toMatch(/returned before it could be placed: #\d+ p\d+ read → "\d"/);
  });
});

describe('convertJepsenEtcd', () => {
  const log = [
    'INFO  jepsen.util - 0\t:invoke\t:read\tnil',
    'INFO  jepsen.util - 0\t:ok\t:read\tnil  ',
    'INFO  jepsen.util - 1\t:invoke\t:cas\t[3 0]',
    'INFO  jepsen.util - 1\t:fail\t:cas\t[3 0]',
    'INFO  jepsen.util - 2\t:invoke\t:write\t4',
    'INFO  jepsen.util - 2\t:info\t:write\t:timed-out',
    'INFO  jepsen.util - 3\t:invoke\t:read\tnil',
    'INFO  jepsen.util - 3\t:fail\t:read\t:timed-out',
  ].join('\n');

  it('turns each line into one event, a failed cas into result false', () => {
    const converted = convertJepsenEtcd(log);
    expect(converted.ok).toBe(true);
    if (!converted.ok) return;
    expect(converted.lines.map((line) => JSON.parse(line))).toEqual([
      { process: 0, type: 'invoke', f: 'read', key: 'etcd', value: null },
      { process: 0, type: 'ok', f: 'read', key: 'etcd', value: null },
      { process: 1, type: 'invoke', f: 'cas', key: 'etcd', value: [3, 0] },
      { process: 1, type: 'fail', f: 'cas', key: 'etcd', value: [3, 0], result: false },
      { process: 2, type: 'invoke', f: 'write', key: 'etcd', value: 4 },
      { process: 2, type: 'info', f: 'write', key: 'etcd' },
      { process: 3, type: 'invoke', f: 'read', key: 'etcd', value: null },
      { process: 3, type: 'fail', f: 'read', key: 'etcd' },
    ]);
    const parsed = parseHistory(converted.lines.join('\n'));
    expect(parsed.ok && parsed.history.operations.map((op) => op.status)).toEqual(['ok', 'fail-false', 'info']);
  });

  it('rejects a line it does not understand, naming it', () => {
    const converted = convertJepsenEtcd(`${log}\nINFO  jepsen.util - 4\t:invoke\t:frob\t1`);
    expect(converted).toEqual({ ok: false, error: 'unknown operation :frob', line: 9 });
    expect(isJepsenEtcdLine('INFO  jepsen.util - 4\t:invoke\t:read\tnil')).toBe(true);
    expect(isJepsenEtcdLine('{"process": 0}')).toBe(false);
  });
});
