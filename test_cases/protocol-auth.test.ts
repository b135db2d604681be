/**
 * Client logins and the flush_all switch, against memcached itself: the same conversations go to
 * a real memcached started with -Y (text logins), -S with PLAIN (binary SASL) or -F (flush_all
 * off) and to a ProtocolServer with the matching options; replies must match byte for byte. A
 * successful SASL login (memcached -S needs a SASL user database for it) is checked with memjs;
 * pymemcache (Debian's, under /usr/bin/python3) logs in with memcached -Y's `set`.
 */

import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import memjs from 'memjs';
import { AuthFileError, loadAuthFile, parseAuthFile, parsePlain } from '../src/protocol/auth.ts';
import { ProtocolServer, type CommandHandler } from '../src/protocol/server.ts';
import { DEFAULT_LIMITS, type Command, type Item, type Reply } from '../src/protocol/types.ts';
import { startMemcached, type MemcachedInstance } from './support/memcached.ts';
import { itemAt } from '../src/runtime/item-at.ts';

const AUTH_FILE_TEXT = 'alice:secret\nbob:pw2\n';
/** How long a reply may stay quiet before it counts as complete. */
const SETTLE_MS = 60;
/** How long to wait for a reply that may never come (noreply, a swallowed request). */
const SILENCE_MS = 300;

/** A tiny memcached over a Map: enough for the conversations below. */
function mapHandler(): CommandHandler {
  const items = new Map<string, Item>();
  return (command: Command): Reply => {
    switch (command.kind) {
      case 'get':
      case 'gat':
        return { kind: 'values', items: command.keys.flatMap((key) => items.get(key) ?? []) };
      case 'store':
        items.set(command.key, { key: command.key, flags: command.flags, value: command.value, cas: 1n });
        return { kind: 'stored' };
      case 'flush_all':
        items.clear();
        return { kind: 'ok' };
      default:
        return { kind: 'error' };
    }
  };
}

/**
 * Sends each part in turn on one connection and collects what comes back for it (once the peer
 * has been quiet SETTLE_MS after replying, or SILENCE_MS without a reply); stops at a close.
 */
async function converse(port: number, parts: Array<string | Buffer>): Promise<string[]> {
  const socket = net.connect(port, '127.0.0.1');
  socket.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => resolve());
    socket.once('error', reject);
  });
  let pending: Buffer[] = [];
  let closed = false;
  let lastDataMs = 0;
  socket.on('data', (chunk: Buffer) => {
    pending.push(chunk);
    lastDataMs = Date.now();
  });
  socket.on('close', () => (closed = true));
  const replies: string[] = [];
  try {
    for (const part of parts) {
      if (closed) break;
      socket.write(part);
      const sentMs = Date.now();
      while (!closed) {
        await new Promise((resolve) => setTimeout(resolve, 10));
        const now = Date.now();
        if (pending.length > 0 ? now - lastDataMs >= SETTLE_MS : now - sentMs >= SILENCE_MS) break;
      }
      replies.push(Buffer.concat(pending).toString('latin1') + (closed ? '<closed>' : ''));
      pending = [];
    }
  } finally {
    socket.destroy();
  }
  return replies;
}

/** A binary request packet. */
function packet(opcode: number, options: { key?: string; extras?: Buffer; value?: Buffer | string; opaque?: number } = {}): Buffer {
  const key = Buffer.from(options.key ?? '', 'latin1');
  const extras = options.extras ?? Buffer.alloc(0);
  const value = typeof options.value === 'string' ? Buffer.from(options.value, 'latin1') : (options.value ?? Buffer.alloc(0));
  const header = Buffer.alloc(24);
  header.writeUInt8(0x80, 0);
  header.writeUInt8(opcode, 1);
  header.writeUInt16BE(key.length, 2);
  header.writeUInt8(extras.length, 4);
  header.writeUInt32BE(extras.length + key.length + value.length, 8);
  header.writeUInt32BE(options.opaque ?? 0, 12);
  return Buffer.concat([header, extras, key, value]);
}

const OP = { get: 0x00, set: 0x01, flush: 0x08, getq: 0x09, noop: 0x0a, version: 0x0b, flushq: 0x18, list: 0x20, auth: 0x21, step: 0x22 };
const FLUSH_DELAY = Buffer.alloc(4);

let dir: string;
let authFile: string;
const memcacheds: MemcachedInstance[] = [];
const servers: ProtocolServer[] = [];

async function startServer(options: { login?: ReturnType<typeof loadAuthFile>; flushAllEnabled?: boolean }): Promise<number> {
  const server = new ProtocolServer({ host: '127.0.0.1', port: 0, limits: DEFAULT_LIMITS, handler: mapHandler(), ...options });
  servers.push(server);
  return server.listen();
}

beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'mckv-auth-'));
  authFile = path.join(dir, 'auth');
  writeFileSync(authFile, AUTH_FILE_TEXT, { mode: 0o600 });
});

afterAll(async () => {
  await Promise.all(servers.map((server) => server.close()));
  await Promise.all(memcacheds.map((memcached) => memcached.stop()));
  rmSync(dir, { recursive: true, force: true });
});

describe('the auth file', () => {
  it('is read once: user:password lines, CRLF or LF, blank lines skipped', () => {
    const credentials = parseAuthFile('alice:secret\r\n\r\nbob:p:w\n', 'auth');
    expect(credentials.users).toBe(2);
    expect(credentials.verify('alice', 'secret')).toBe(true);
    expect(credentials.verify('bob', 'p:w')).toBe(true);
    expect(credentials.verify('alice', 'secre')).toBe(false);
    expect(credentials.verify('alice', 'secret2')).toBe(false);
    expect(credentials.verify('carol', 'secret')).toBe(false);
  });

  it('refuses to start on a malformed line or an unreadable file, in one line naming it', () => {
    expect(() => parseAuthFile('alice:secret\nbob\n', 'auth')).toThrow(/auth file auth: line 2 is not user:password/);
    expect(() => parseAuthFile(':nouser\n', 'auth')).toThrow(AuthFileError);
    expect(() => parseAuthFile('\n', 'auth')).toThrow(/no user:password line/);
    const missing = path.join(dir, 'missing');
    try {
      loadAuthFile(missing);
      expect.unreachable();
    } catch (error) {
      expect(error).toBeInstanceOf(AuthFileError);
      expect((error as AuthFileError).code).toBe('AUTH_FILE_UNREADABLE');
      expect((error as Error).message).toBe(`auth file ${missing} cannot be read (ENOENT)`);
    }
  });

  it('SASL PLAIN messages: an empty or matching authorization identity, two NULs', () => {
    expect(parsePlain(Buffer.from('\0alice\0secret'))).toEqual({ user: 'alice', password: 'secret' });
    expect(parsePlain(Buffer.from('alice\0alice\0secret'))).toEqual({ user: 'alice', password: 'secret' });
    expect(parsePlain(Buffer.from('bob\0alice\0secret'))).toBeNull();
    expect(parsePlain(Buffer.from('\0alice'))).toBeNull();
    expect(parsePlain(Buffer.from('\0alice\0se\0cret'))).toBeNull();
    expect(parsePlain(Buffer.from('\0\0secret'))).toBeNull();
  });
});

describe('text logins, as memcached -Y', () => {
  let memcachedPort: number;
  let mckvPort: number;

  beforeAll(async () => {
    const memcached = await startMemcached({ extraArgs: ['-Y', authFile] });
    memcacheds.push(memcached);
    memcachedPort = memcached.port;
    mckvPort = await startServer({ login: loadAuthFile(authFile) });
  });

  const conversations: Array<[string, string[]]> = [
    ['commands before login', ['get x\r\n', 'version\r\n', 'flush_all noreply\r\n', 'quit\r\n', '\r\n', 'set a 0 0\r\n']],
    ['a login, then commands', ['set a 0 0 12\r\nalice secret\r\n', 'set k 0 0 1\r\nv\r\n', 'get k\r\n']],
    ['a wrong password', ['set a 0 0 11\r\nalice wrong\r\n', 'get k\r\n']],
    ['an unknown user', ['set a 0 0 12\r\ncarol secret\r\n', 'get k\r\n']],
    ['a data block without CRLF', ['set a 0 0 12\r\nalice secretXX', 'get k\r\n']],
    ['one token of data', ['set a 0 0 5\r\nalice\r\n', 'get k\r\n']],
    ['a third token is ignored', ['set a 0 0 14\r\nalice secret x\r\n', 'get k\r\n']],
    ['flags and exptime are not read', ['set a b c 12\r\nalice secret\r\n', 'get k\r\n']],
    ['noreply does not silence the login', ['set a 0 0 12 noreply\r\nalice secret\r\n', 'get k\r\n']],
    ['another user, pipelined with a get', ['set a 0 0 7\r\nbob pw2\r\nget k\r\n']],
    ['a login after a refusal', ['get k\r\n', 'set a 0 0 12\r\nalice secret\r\n', 'get k\r\n']],
  ];

  for (const [name, parts] of conversations) {
    it(name, async () => {
      const expected = await converse(memcachedPort, parts);
      expect(await converse(mckvPort, parts)).toEqual(expected);
    });
  }
});

describe('binary logins, as memcached -S with PLAIN', () => {
  let memcachedPort: number;
  let mckvPort: number;

  beforeAll(async () => {
    const saslDir = path.join(dir, 'sasl');
    rmSync(saslDir, { recursive: true, force: true });
    mkdirSync(saslDir);
    writeFileSync(path.join(saslDir, 'memcached.conf'), 'mech_list: plain\n');
    const memcached = await startMemcached({ extraArgs: ['-S'], env: { SASL_CONF_PATH: saslDir } });
    memcacheds.push(memcached);
    memcachedPort = memcached.port;
    mckvPort = await startServer({ login: loadAuthFile(authFile) });
  });

  const plain = (user: string, password: string): string => `\0${user}\0${password}`;
  const conversations: Array<[string, Buffer[]]> = [
    ['noop before SASL: refused, closed', [packet(OP.noop, { opaque: 7 }), packet(OP.version)]],
    ['a quiet get before SASL is answered too', [packet(OP.getq, { key: 'x' })]],
    ['an unknown opcode before SASL', [packet(0x55)]],
    // version is served too, but its string is mckv's own.
    ['mechanisms are served before SASL', [packet(OP.list, { opaque: 3 }), packet(OP.list), packet(OP.get, { key: 'x' })]],
    ['mechanisms with a key: invalid', [packet(OP.list, { key: 'x' })]],
    ['a wrong password, then a get', [packet(OP.auth, { key: 'PLAIN', value: plain('alice', 'wrong'), opaque: 5 }), packet(OP.get, { key: 'x' })]],
    ['PLAIN without its message, then a wrong step', [packet(OP.auth, { key: 'PLAIN' }), packet(OP.step, { key: 'PLAIN', value: plain('alice', 'nope') })]],
    ['a step without an auth', [packet(OP.step, { key: 'PLAIN', value: plain('alice', 'secret') }), packet(OP.noop)]],
    ['a mechanism not offered', [packet(OP.auth, { key: 'CRAM-MD5', value: plain('alice', 'secret') })]],
    ['auth without a mechanism: invalid', [packet(OP.auth, { value: plain('alice', 'secret') })]],
    ['auth with extras: invalid', [packet(OP.auth, { key: 'PLAIN', extras: Buffer.alloc(4), value: plain('alice', 'secret') })]],
  ];

  for (const [name, parts] of conversations) {
    it(name, async () => {
      const expected = await converse(memcachedPort, parts);
      expect(await converse(mckvPort, parts)).toEqual(expected);
    });
  }

  it('a right password: Authenticated, then commands are served (PLAIN in one step or two)', async () => {
    const setExtras = Buffer.alloc(8);
    const replies = await converse(mckvPort, [
      packet(OP.auth, { key: 'PLAIN', value: plain('alice', 'secret'), opaque: 9 }),
      packet(OP.set, { key: 'b', extras: setExtras, value: 'v' }),
      packet(OP.get, { key: 'b' }),
    ]);
    const auth = itemAt(replies, 0);
    const set = itemAt(replies, 1);
    const get = itemAt(replies, 2);
    expect(auth.charCodeAt(0)).toBe(0x81);
    expect(auth.charCodeAt(1)).toBe(OP.auth);
    expect(auth.slice(6, 8)).toBe('\0\0');
    expect(auth.slice(24)).toBe('Authenticated');
    expect(set.slice(6, 8)).toBe('\0\0');
    expect(get.slice(6, 8)).toBe('\0\0');
    expect(get.endsWith('v')).toBe(true);
    const stepwise = await converse(mckvPort, [
      packet(OP.auth, { key: 'PLAIN' }),
      packet(OP.step, { key: 'PLAIN', value: plain('bob', 'pw2') }),
      packet(OP.noop),
    ]);
    const started = itemAt(stepwise, 0);
    const stepped = itemAt(stepwise, 1);
    const noop = itemAt(stepwise, 2);
    expect(started.slice(6, 8)).toBe('\0\x21');
    expect(stepped.slice(24)).toBe('Authenticated');
    expect(noop.slice(6, 8)).toBe('\0\0');
  });

  it('memjs logs in with username and password; a wrong password is refused', async () => {
    const client = memjs.Client.create(`127.0.0.1:${mckvPort}`, { username: 'alice', password: 'secret', retries: 0, timeout: 2, logger: { log: () => undefined } });
    try {
      await client.set('memjs', 'hello', {});
      expect((await client.get('memjs')).value?.toString()).toBe('hello');
    } finally {
      client.close();
    }
    const intruder = memjs.Client.create(`127.0.0.1:${mckvPort}`, { username: 'alice', password: 'guess', retries: 0, timeout: 2, logger: { log: () => undefined } });
    try {
      await expect(intruder.get('memjs')).rejects.toThrow(/authentication failed/);
    } finally {
      intruder.close();
    }
  });
});

describe('pymemcache against a ProtocolServer that requires a login', () => {
  it('logs in with memcached -Y\'s set and is served; a client without credentials is refused', async () => {
    const port = await startServer({ login: loadAuthFile(authFile) });
    const script = [
      'import sys',
      'from pymemcache.client.base import Client',
      'from pymemcache.exceptions import MemcacheClientError',
      'port = int(sys.argv[1])',
      'client = Client(("127.0.0.1", port), connect_timeout=2, timeout=2)',
      '# pymemcache 3.5 has no login of its own: memcached -Y\'s login is a set of "user password".',
      'print("login", client.set("auth", b"alice secret", noreply=False))',
      'print("set", client.set("greeting", b"hello", noreply=False))',
      'print("get", client.get("greeting"))',
      'anonymous = Client(("127.0.0.1", port), connect_timeout=2, timeout=2)',
      'try:',
      '    print("anonymous", anonymous.get("greeting"))',
      'except MemcacheClientError as error:',
      '    print("anonymous refused", error)',
    ].join('\n');
    const output = await new Promise<string>((resolve, reject) => {
      execFile('/usr/bin/python3', ['-c', script, String(port)], { timeout: 20_000 }, (error, stdout, stderr) => {
        if (error) reject(new Error(`${error.message}\n${stderr}`));
        else resolve(stdout);
      });
    });
    expect(output).toBe("login True\nset True\nget b'hello'\nanonymous refused b'unauthenticated'\n");
  }, 30_000);
});

describe('flush_all off, as memcached -F', () => {
  let memcachedPort: number;
  let mckvPort: number;

  beforeAll(async () => {
    const memcached = await startMemcached({ extraArgs: ['-F'] });
    memcacheds.push(memcached);
    memcachedPort = memcached.port;
    mckvPort = await startServer({ flushAllEnabled: false });
  });

  const text: Array<[string, string[]]> = [
    ['refused, noreply silences it', ['flush_all\r\n', 'flush_all 0\r\n', 'flush_all noreply\r\n', 'flush_all 5 noreply\r\n', 'get x\r\n']],
    ['refused before its delay is read', ['flush_all bogus\r\n', 'flush_all -1\r\n', 'flush_all 0 bogus\r\n', 'flush_all bogus noreply\r\n']],
    ['too many tokens stay an error', ['flush_all 1 2 3\r\n']],
  ];
  for (const [name, parts] of text) {
    it(`text: ${name}`, async () => {
      const expected = await converse(memcachedPort, parts);
      expect(await converse(mckvPort, parts)).toEqual(expected);
    });
  }

  it('binary: flush and flushq answered "Auth failure.", the connection kept', async () => {
    const parts = [packet(OP.flush, { opaque: 4 }), packet(OP.flushq, { extras: FLUSH_DELAY }), packet(OP.noop)];
    const expected = await converse(memcachedPort, parts);
    expect(await converse(mckvPort, parts)).toEqual(expected);
  });
});
