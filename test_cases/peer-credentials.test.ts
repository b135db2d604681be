/**
 * The cluster secret file at start-up: missing, too short or readable by group or others is a
 * typed PeerCredentialsError naming the file and the fix; a controller started with such a file
 * prints that one line and exits 1. Peer TLS files that do not parse, or a key that is not the
 * certificate's, are refused naming the file.
 */

import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort, repoRoot } from '../src/jepsen/cluster.ts';
import { PeerCredentialsError, readClusterSecret, readPeerTls } from '../src/peer/credentials.ts';
import { itemAt } from '../src/runtime/item-at.ts';
import { must } from './support/must.ts';

const directory = mkdtempSync(path.join(os.tmpdir(), 'mckv-secret-'));

afterAll(() => rmSync(directory, { recursive: true, force: true }));

function secretFile(name: string, text: string, mode: number): string {
  const file = path.join(directory, name);
  writeFileSync(file, text, { mode });
  chmodSync(file, mode); // whatever the umask
  return file;
}

function failureOf(read: () => unknown): PeerCredentialsError {
  try {
    read();
  } catch (error) {
    if (error instanceof PeerCredentialsError) return error;
    throw error;
  }
  throw new Error('no error');
}

describe('peer TLS files', () => {
  it('refuses a CA, certificate or key that does not parse, or a key not the certificate\'s, naming the file', () => {
    const openssl = (...args: string[]): void => {
      execFileSync('openssl', args, { cwd: directory, stdio: 'ignore', timeout: 20_000 });
    };
    const issue = (file: string): void => {
      openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${file}.key`,
        '-out', `${file}.pem`, '-days', '2', '-subj', '/CN=n1');
    };
    issue('tls-a');
    issue('tls-b');
    const file = (name: string): string => path.join(directory, name);
    writeFileSync(file('junk.pem'), 'not a certificate\n');
    const good = { caFile: file('tls-a.pem'), certFile: file('tls-a.pem'), keyFile: file('tls-a.key') };
    expect(readPeerTls(good).cert.length).toBeGreaterThan(100);
    const cases: Array<[typeof good, RegExp]> = [
      [{ ...good, caFile: file('junk.pem') }, /the peer TLS CA .*junk\.pem is not usable/],
      [{ ...good, certFile: file('junk.pem') }, /the peer TLS certificate .*junk\.pem is not usable/],
      [{ ...good, keyFile: file('junk.pem') }, /the peer TLS key .*junk\.pem is not usable/],
      [{ ...good, keyFile: file('tls-b.key') }, /certificate .*tls-a\.pem with key .*tls-b\.key is not usable/],
    ];
    for (const [files, message] of cases) {
      const failure = failureOf(() => readPeerTls(files));
      expect(failure.code).toBe('tls_invalid');
      expect(failure.message).toMatch(message);
      expect(failure.message).not.toContain('\n');
    }
  });
});

describe('cluster secret file', () => {
  it('reads the bytes without surrounding whitespace', () => {
    const file = secretFile('good.secret', ' 0123456789abcdef0123\n', 0o600);
    expect(readClusterSecret(file).toString()).toBe('0123456789abcdef0123');
  });

  it('refuses a missing, exposed or short file with the fix', () => {
    const missing = failureOf(() => readClusterSecret(path.join(directory, 'none.secret')));
    expect(missing.code).toBe('secret_missing');
    expect(missing.message).toMatch(/none\.secret.*\.\/startup\.sh creates one/);
    const exposedFile = secretFile('exposed.secret', '0123456789abcdef0123', 0o644);
    const exposed = failureOf(() => readClusterSecret(exposedFile));
    expect(exposed.code).toBe('secret_exposed');
    expect(exposed.message).toBe(`the cluster secret file ${exposedFile} is readable by group or others (mode 644): chmod 600 ${exposedFile}`);
    const short = failureOf(() => readClusterSecret(secretFile('short.secret', 'fifteen bytes!!\n', 0o600)));
    expect(short.code).toBe('secret_short');
    expect(short.message).toMatch(/holds 15 bytes, fewer than 16/);
    const tls = failureOf(() => readPeerTls({ caFile: path.join(directory, 'ca.pem'), certFile: 'x', keyFile: 'y' }));
    expect(tls.code).toBe('tls_unreadable');
  });

  it('a controller whose secret others can read prints one line and exits 1', async () => {
    const config = path.join(directory, 'config.ini');
    const lines: string[] = ['[cluster]', 'data_dir = data', 'log_dir = logs'];
    for (const id of ['n1', 'n2']) {
      lines.push(`[node.${id}]`, `client = 127.0.0.1:${await freePort()}`, `peer = 127.0.0.1:${await freePort()}`, 'memcached = 127.0.0.1:1');
    }
    writeFileSync(config, lines.join('\n'));
    const secret = secretFile('cluster.secret', '0123456789abcdef0123456789', 0o640);
    const clientPort = must(itemAt(lines, 4).split(':')[1], 'the client port of n1');
    const result = spawnSync(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'main.ts'), '-c', config, '-p', clientPort, '--kvtype', 'memory'], {
      cwd: repoRoot,
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(result.status).toBe(1);
    expect(result.stderr.trim().split('\n')).toEqual([`mckv: the cluster secret file ${secret} is readable by group or others (mode 640): chmod 600 ${secret}`]);
  });
});
