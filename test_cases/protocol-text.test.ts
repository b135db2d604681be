/**
 * The text protocol codec: every decoder case runs whole, byte by byte and split at every boundary.
 */

import { describe, expect, it } from 'vitest';
import { FLAT_REPLY_BYTES_MAX, TextRequestDecoder, encodeTextReply, encodeTextReplyParts, parseInt32, parseUint32, parseUint64 } from '../src/protocol/text.ts';
import type { TextDecoded } from '../src/protocol/text.ts';
import { DEFAULT_LIMITS } from '../src/protocol/types.ts';
import type { Command, ProtocolLimits, Reply } from '../src/protocol/types.ts';
import { decodeEveryWay } from './support/chunks.ts';
import { itemAt } from '../src/runtime/item-at.ts';

const SMALL: ProtocolLimits = { ...DEFAULT_LIMITS, keyBytesMax: 10, valueBytesMax: 16, lineBytesMax: 64, keysPerGetMax: 3 };

function decode(input: string | Buffer, limits: ProtocolLimits = DEFAULT_LIMITS): TextDecoded[] {
  return decodeEveryWay(() => new TextRequestDecoder(limits), input);
}

function command(c: Command): TextDecoded {
  return { kind: 'command', command: c };
}

function clientError(message: string, close = false): TextDecoded {
  return { kind: 'invalid', reply: { kind: 'client_error', message }, close };
}

const ERROR: TextDecoded = { kind: 'invalid', reply: { kind: 'error' }, close: false };
const SILENT: TextDecoded = { kind: 'invalid', reply: { kind: 'none' }, close: false };
const BAD_FORMAT = clientError('bad command line format');

function store(verb: Command & { kind: 'store' } extends infer S ? S extends { verb: infer V } ? V : never : never,
  key: string, value: string, extra: Partial<Command & { kind: 'store' }> = {}): TextDecoded {
  return command({ kind: 'store', verb, key, flags: 0, exptime: 0, value: Buffer.from(value, 'latin1'), casUnique: 0n, noreply: false, ...extra });
}

describe('text decoder: retrieval', () => {
  it('decodes get and gets with many keys and odd spacing', () => {
    expect(decode('get a\r\ngets  a  b c \r\nget x\n')).toEqual([
      command({ kind: 'get', keys: ['a'], cas: false }),
      command({ kind: 'get', keys: ['a', 'b', 'c'], cas: true }),
      command({ kind: 'get', keys: ['x'], cas: false }),
    ]);
  });

  it('decodes gat and gats with an exptime first', () => {
    expect(decode('gat 10 a b\r\ngats -1 a\r\ngat 5\r\n')).toEqual([
      command({ kind: 'gat', keys: ['a', 'b'], cas: false, exptime: 10 }),
      command({ kind: 'gat', keys: ['a'], cas: true, exptime: -1 }),
      command({ kind: 'gat', keys: [], cas: false, exptime: 5 }),
    ]);
  });

  it('refuses a get without keys, a bad gat exptime, long or control-character keys, too many keys', () => {
    expect(decode('get\r\ngets \r\n')).toEqual([ERROR, ERROR]);
    expect(decode('gat abc k\r\n')).toEqual([clientError('invalid exptime argument')]);
    expect(decode(`get ${'k'.repeat(251)}\r\n`)).toEqual([BAD_FORMAT]);
    expect(decode(`get ok ${'k'.repeat(251)} ok\r\n`)).toEqual([BAD_FORMAT]);
    expect(decode(`get ${'k'.repeat(250)}\r\n`)).toEqual([command({ kind: 'get', keys: ['k'.repeat(250)], cas: false })]);
    expect(decode('get a\x01b\r\nget a\x7fb\r\nget a\tb\r\n')).toEqual([BAD_FORMAT, BAD_FORMAT, BAD_FORMAT]);
    expect(decode('get a b c d\r\n', SMALL)).toEqual([clientError('too many keys')]);
  });

  it('decodes a one-key get (read without tokenising) exactly as the general path does', () => {
    // A trailing space sends the same line through the tokenising path.
    const keys = ['a', 'key:123', 'k'.repeat(250), 'k'.repeat(251), 'a\x01b', 'a\x7fb', 'é', '%', 'get'];
    for (const key of keys) {
      expect(decode(`get ${key}\r\n`), JSON.stringify(key)).toEqual(decode(`get ${key} \r\n`));
    }
  });

  it('keeps key bytes exactly (latin1, one char per byte)', () => {
    const items = decode(Buffer.concat([Buffer.from('get '), Buffer.from('ключ', 'utf8'), Buffer.from('\r\n')]));
    const key = itemAt((itemAt(items, 0) as { command: { keys: string[] } }).command.keys, 0);
    expect(Buffer.from(key, 'latin1').toString('utf8')).toBe('ключ');
  });
});

describe('text decoder: storage', () => {
  it('decodes set/add/replace/append/prepend/cas with their data blocks', () => {
    expect(decode('set k 5 100 3\r\nabc\r\nadd k 0 0 0\r\n\r\nreplace k 1 2 1 noreply\r\nx\r\n')).toEqual([
      store('set', 'k', 'abc', { flags: 5, exptime: 100 }),
      store('add', 'k', ''),
      store('replace', 'k', 'x', { flags: 1, exptime: 2, noreply: true }),
    ]);
    expect(decode('append k 0 0 2\r\nab\r\nprepend k 0 0 2\r\ncd\r\ncas k 0 0 1 99\r\nz\r\n')).toEqual([
      store('append', 'k', 'ab'), store('prepend', 'k', 'cd'), store('cas', 'k', 'z', { casUnique: 99n }),
    ]);
  });

  it('takes data blocks as opaque bytes, CRLF and command words included', () => {
    expect(decode('set k 0 0 13\r\nget x\r\nquit\r\n\r\nget y\r\n')).toEqual([
      store('set', 'k', 'get x\r\nquit\r\n'), command({ kind: 'get', keys: ['y'], cas: false }),
    ]);
  });

  it('accepts memcached number forms and the full flags and exptime ranges', () => {
    expect(decode('set k 4294967295 -2147483648 +1\r\na\r\nset k 0 2147483647 01\r\nb\r\n')).toEqual([
      store('set', 'k', 'a', { flags: 4294967295, exptime: -2147483648 }),
      store('set', 'k', 'b', { exptime: 2147483647 }),
    ]);
  });

  it('refuses bad numbers without swallowing the data block (as memcached)', () => {
    expect(decode('set k abc 0 1\r\na\r\n')).toEqual([BAD_FORMAT, ERROR]);
    for (const numbers of ['-1 0 1', '4294967296 0 1', '0 abc 1', '0 2147483648 1', '0 0 -1', '0 0 abc', '0x1 0 1', '0 0 4294967297']) {
      expect(decode(`set k ${numbers}\r\n`), numbers).toEqual([BAD_FORMAT]);
    }
    expect(decode('cas k 0 0 1 abc\r\n')).toEqual([BAD_FORMAT]);
    expect(decode('cas k 0 0 1 18446744073709551616\r\n')).toEqual([BAD_FORMAT]);
  });

  it('refuses wrong token counts with ERROR, honours noreply only as the last token', () => {
    expect(decode('set k 0 0\r\n')).toEqual([ERROR]);
    expect(decode('set k 0 0 1 noreply extra\r\na\r\n')).toEqual([ERROR, ERROR]);
    expect(decode('cas k 0 0 1\r\na\r\n')).toEqual([ERROR, ERROR]);
    expect(decode('set k 0 0 1 junk\r\na\r\n')).toEqual([store('set', 'k', 'a')]);
  });

  it('silences errors of a noreply line, as memcached', () => {
    expect(decode('set k abc 0 1 noreply\r\na\r\n')).toEqual([SILENT, ERROR]);
    expect(decode(`set ${'k'.repeat(251)} 0 0 1 noreply\r\n`)).toEqual([SILENT]);
  });

  it('refuses a data block of the wrong length and resynchronises after vlen+2 bytes', () => {
    expect(decode('set k 0 0 1\r\nab\r\nget k\r\n')).toEqual([clientError('bad data chunk'), ERROR, command({ kind: 'get', keys: ['k'], cas: false })]);
    expect(decode('set k 0 0 1\r\naXY')).toEqual([clientError('bad data chunk')]);
    expect(decode('set k 0 0 1 noreply\r\nab\r\n')).toEqual([SILENT, ERROR]);
    expect(decode('set k 0 0 3\r\na\r\n')).toEqual([]);
  });

  it('refuses a value over the limit and swallows its block without buffering it', () => {
    const decoder = new TextRequestDecoder(SMALL);
    expect(decoder.push(Buffer.from('set k 0 0 1000\r\n'))).toEqual([
      { kind: 'invalid', reply: { kind: 'refused', reason: 'too_large' }, close: false },
    ]);
    expect(decoder.push(Buffer.alloc(1000, 0x61))).toEqual([]);
    expect(decoder.bufferedBytes).toBe(0);
    expect(decoder.push(Buffer.from('\r\nget k\r\n'))).toEqual([command({ kind: 'get', keys: ['k'], cas: false })]);
    expect(decode(`set k 0 0 17\r\n${'v'.repeat(17)}\r\nget k\r\n`, SMALL)).toEqual([
      { kind: 'invalid', reply: { kind: 'refused', reason: 'too_large' }, close: false },
      command({ kind: 'get', keys: ['k'], cas: false }),
    ]);
    expect(decode(`set k 0 0 17 noreply\r\n${'v'.repeat(17)}\r\n`, SMALL)).toEqual([SILENT]);
    expect(decode(`set k 0 0 16\r\n${'v'.repeat(16)}\r\n`, SMALL)).toEqual([store('set', 'k', 'v'.repeat(16))]);
  });

  it('copies values: a reused input chunk does not change them', () => {
    const decoder = new TextRequestDecoder();
    const chunk = Buffer.from('set k 0 0 3\r\nabc\r\n');
    const [item] = decoder.push(chunk);
    chunk.fill(0);
    expect((item as { command: { value: Buffer } }).command.value.toString()).toBe('abc');
  });
});

describe('text decoder: other commands', () => {
  it('decodes incr/decr with u64 deltas', () => {
    expect(decode('incr k 1\r\ndecr k 18446744073709551615 noreply\r\n')).toEqual([
      command({ kind: 'arith', verb: 'incr', key: 'k', delta: 1n, initial: null, exptime: 0, noreply: false }),
      command({ kind: 'arith', verb: 'decr', key: 'k', delta: 18446744073709551615n, initial: null, exptime: 0, noreply: true }),
    ]);
    const badDelta = clientError('invalid numeric delta argument');
    expect(decode('incr k abc\r\nincr k -1\r\nincr k 18446744073709551616\r\nincr k\r\nincr k abc noreply\r\n'))
      .toEqual([badDelta, badDelta, badDelta, ERROR, SILENT]);
  });

  it('decodes delete, with the legacy hold time only when it is 0', () => {
    const del = (noreply: boolean): TextDecoded => command({ kind: 'delete', key: 'k', noreply });
    expect(decode('delete k\r\ndelete k 0\r\ndelete k noreply\r\ndelete k 0 noreply\r\n')).toEqual([del(false), del(false), del(true), del(true)]);
    const usage = clientError('bad command line format.  Usage: delete <key> [noreply]');
    expect(decode('delete k 5\r\ndelete k x\r\ndelete k 5 noreply\r\ndelete\r\ndelete a b c d\r\n')).toEqual([usage, usage, SILENT, ERROR, ERROR]);
  });

  it('decodes touch, flush_all, verbosity, version, stats, quit, show', () => {
    expect(decode('touch k 10\r\ntouch k abc\r\ntouch k\r\n')).toEqual([
      command({ kind: 'touch', key: 'k', exptime: 10, noreply: false }), clientError('invalid exptime argument'), ERROR,
    ]);
    expect(decode('flush_all\r\nflush_all 30\r\nflush_all noreply\r\nflush_all -1 noreply\r\nflush_all abc\r\nflush_all 1 2\r\nflush_all 1 2 3\r\n')).toEqual([
      command({ kind: 'flush_all', delaySeconds: 0, noreply: false }),
      command({ kind: 'flush_all', delaySeconds: 30, noreply: false }),
      command({ kind: 'flush_all', delaySeconds: 0, noreply: true }),
      command({ kind: 'flush_all', delaySeconds: -1, noreply: true }),
      clientError('invalid exptime argument'),
      command({ kind: 'flush_all', delaySeconds: 1, noreply: false }),
      ERROR,
    ]);
    expect(decode('verbosity 1\r\nverbosity\r\nverbosity x\r\nverbosity 1 noreply\r\n')).toEqual([
      command({ kind: 'verbosity', level: 1, noreply: false }), ERROR, BAD_FORMAT, command({ kind: 'verbosity', level: 1, noreply: true }),
    ]);
    expect(decode('version\r\nstats\r\nstats items\r\nshow\r\nquit\r\n')).toEqual([
      command({ kind: 'version' }), command({ kind: 'stats', group: '' }), command({ kind: 'stats', group: 'items' }),
      command({ kind: 'show' }), command({ kind: 'quit' }),
    ]);
  });

  it('answers unknown commands, empty lines and garbage with ERROR', () => {
    expect(decode('foo\r\n\r\n \r\nGET a\r\nx\r\n\x00\x01\xff junk\r\nmg k v\r\n')).toEqual([ERROR, ERROR, ERROR, ERROR, ERROR, ERROR, ERROR]);
  });

  it('closes on a line over the limit, newline or not, and then ignores input', () => {
    const tooLong = clientError('line too long', true);
    expect(decode('x'.repeat(65), SMALL)).toEqual([tooLong]);
    expect(decode(`${'x'.repeat(65)}\r\nget a\r\n`, SMALL)).toEqual([tooLong]);
    expect(decode(`${'x'.repeat(60)}\r\n`, SMALL)).toEqual([ERROR]);
    const decoder = new TextRequestDecoder(SMALL);
    decoder.push(Buffer.alloc(100, 0x78));
    expect(decoder.closed).toBe(true);
    expect(decoder.bufferedBytes).toBe(0);
    expect(decoder.push(Buffer.from('get a\r\n'))).toEqual([]);
  });

  it('lets a multiget line grow past lineBytesMax up to what keysPerGetMax keys need', () => {
    const keys = ['k'.repeat(10), 'j'.repeat(10), 'i'.repeat(10)];
    const items = decodeEveryWay(() => new TextRequestDecoder({ ...SMALL, lineBytesMax: 20 }), `get ${keys.join(' ')}\r\n`);
    expect(items).toEqual([command({ kind: 'get', keys, cas: false })]);
    expect(decode(`get ${'k '.repeat(200)}`, SMALL)).toEqual([clientError('line too long', true)]);
  });

  it('pipelines many requests in one chunk and keeps only the unfinished tail', () => {
    const decoder = new TextRequestDecoder();
    const items = decoder.push(Buffer.from('get a\r\n'.repeat(100) + 'set k 0 0 5\r\nab'));
    expect(items).toHaveLength(100);
    expect(decoder.bufferedBytes).toBe(2);
    expect(decoder.push(Buffer.from('cde\r\n'))).toEqual([store('set', 'k', 'abcde')]);
  });
});

describe('number parsing', () => {
  it('parses the memcached ranges', () => {
    expect(parseUint32('4294967295')).toBe(4294967295);
    expect(parseUint32('4294967296')).toBeNull();
    expect(parseUint32('-1')).toBeNull();
    expect(parseInt32('-2147483648')).toBe(-2147483648);
    expect(parseInt32('2147483648')).toBeNull();
    expect(parseUint64('18446744073709551615')).toBe(18446744073709551615n);
    expect(parseUint64('1e3')).toBeNull();
    expect(parseUint64('')).toBeNull();
  });
});

describe('text encoder', () => {
  const get: Command = { kind: 'get', keys: ['a', 'b'], cas: false };
  const gets: Command = { kind: 'get', keys: ['a'], cas: true };
  const set: Command = { kind: 'store', verb: 'set', key: 'k', flags: 0, exptime: 0, value: Buffer.alloc(0), casUnique: 0n, noreply: false };
  const enc = (c: Command, r: Reply): string => encodeTextReply(c, r).toString('latin1');

  it('encodes values with cas only for gets/gats', () => {
    const items = [{ key: 'a', flags: 3, value: Buffer.from('x\r\ny'), cas: 7n }, { key: 'b', flags: 0, value: Buffer.alloc(0), cas: 8n }];
    expect(enc(get, { kind: 'values', items })).toBe('VALUE a 3 4\r\nx\r\ny\r\nVALUE b 0 0\r\n\r\nEND\r\n');
    expect(enc(gets, { kind: 'values', items: items.slice(0, 1) })).toBe('VALUE a 3 4 7\r\nx\r\ny\r\nEND\r\n');
    expect(enc({ kind: 'gat', keys: ['a'], cas: true, exptime: 1 }, { kind: 'values', items: [] })).toBe('END\r\n');
  });

  it('encodes every simple reply as memcached spells it', () => {
    const cases: Array<[Reply, string]> = [
      [{ kind: 'stored' }, 'STORED\r\n'], [{ kind: 'not_stored' }, 'NOT_STORED\r\n'], [{ kind: 'exists' }, 'EXISTS\r\n'],
      [{ kind: 'not_found' }, 'NOT_FOUND\r\n'], [{ kind: 'deleted' }, 'DELETED\r\n'], [{ kind: 'touched' }, 'TOUCHED\r\n'],
      [{ kind: 'ok' }, 'OK\r\n'], [{ kind: 'number', value: 18446744073709551615n }, '18446744073709551615\r\n'],
      [{ kind: 'version', version: '1.6.18' }, 'VERSION 1.6.18\r\n'],
      [{ kind: 'stats', stats: [['pid', '1'], ['uptime', '2']] }, 'STAT pid 1\r\nSTAT uptime 2\r\nEND\r\n'],
      [{ kind: 'text', lines: ['peer 1 up', 'peer 2 down'] }, 'peer 1 up\r\npeer 2 down\r\nEND\r\n'],
      [{ kind: 'error' }, 'ERROR\r\n'], [{ kind: 'client_error', message: 'bad data chunk' }, 'CLIENT_ERROR bad data chunk\r\n'],
      [{ kind: 'refused', reason: 'no_quorum' }, 'SERVER_ERROR no quorum\r\n'], [{ kind: 'none' }, ''],
    ];
    for (const [reply, text] of cases) expect(enc(set, reply), reply.kind).toBe(text);
  });

  it('writes nothing for noreply commands (errors included) and for quit', () => {
    expect(enc({ ...set, noreply: true } as Command, { kind: 'stored' })).toBe('');
    expect(enc({ kind: 'delete', key: 'k', noreply: true }, { kind: 'refused', reason: 'internal', detail: 'x' })).toBe('');
    expect(enc({ kind: 'quit' }, { kind: 'ok' })).toBe('');
  });
});

describe('text decoder: cost', () => {
  it('takes a maximal multiget byte by byte in linear time', () => {
    const keys = Array.from({ length: DEFAULT_LIMITS.keysPerGetMax }, (_, index) => `${index}`.padStart(DEFAULT_LIMITS.keyBytesMax, 'k'));
    const bytes = Buffer.from(`get ${keys.join(' ')}\r\n`);
    const decoder = new TextRequestDecoder();
    const startedMs = Date.now();
    const items: TextDecoded[] = [];
    for (let index = 0; index < bytes.length; index++) items.push(...decoder.push(bytes.subarray(index, index + 1)));
    expect(items).toEqual([command({ kind: 'get', keys, cas: false })]);
    expect(Date.now() - startedMs).toBeLessThan(5000);
  });
});

describe('text decoder: login (memcached -Y) and flush_all off (memcached -F)', () => {
  const login = { verify: (user: string, password: string): boolean => user === 'alice' && password === 'secret' };
  const decodeLoggingIn = (input: string): TextDecoded[] => decodeEveryWay(() => new TextRequestDecoder(SMALL, { login }), input);
  const answered = (reply: Reply): TextDecoded => ({ kind: 'answered', reply });
  const refusal = (message: string): TextDecoded => answered({ kind: 'client_error', message });

  it('refuses everything but the login set, then decodes commands as usual', () => {
    expect(decodeLoggingIn('get k\r\nflush_all noreply\r\nset a 0 0 12\r\nalice secret\r\nget k\r\n')).toEqual([
      refusal('unauthenticated'),
      refusal('unauthenticated'),
      answered({ kind: 'stored' }),
      command({ kind: 'get', keys: ['k'], cas: false }),
    ]);
  });

  it('answers a bad login as memcached does and stays logged out', () => {
    expect(decodeLoggingIn('set a 0 0 11\r\nalice wrong\r\nset a 0 0 5\r\nalice\r\nset a 0 0 12\r\nalice secretXXget k\r\n')).toEqual([
      refusal('authentication failure'),
      refusal('bad authentication token format'),
      refusal('bad command line termination'),
      refusal('unauthenticated'),
    ]);
  });

  it('refuses a login data block over lineBytesMax without buffering it', () => {
    const block = 'x'.repeat(SMALL.lineBytesMax + 1);
    expect(decodeLoggingIn(`set a 0 0 ${block.length}\r\n${block}\r\nget k\r\n`)).toEqual([
      refusal('authentication failure'),
      refusal('unauthenticated'),
    ]);
  });

  it('flush_all off: refused before its delay is read; noreply silences it', () => {
    const items = decodeEveryWay(() => new TextRequestDecoder(SMALL, { flushAllEnabled: false }), 'flush_all\r\nflush_all bogus\r\nflush_all 0 noreply\r\nflush_all 1 2 3\r\n');
    expect(items).toEqual([clientError('flush_all not allowed'), clientError('flush_all not allowed'), SILENT, ERROR]);
  });
});

describe('text encoder: parts', () => {
  it('writes a large values reply value by value, the values themselves, never copied', () => {
    const value = Buffer.alloc(FLAT_REPLY_BYTES_MAX, 0x61);
    const item = { key: 'k', flags: 3, value, cas: 9n };
    const get: Command = { kind: 'get', keys: ['k', 'k'], cas: true };
    const parts = encodeTextReplyParts(get, { kind: 'values', items: [item, item] });
    expect(parts).toHaveLength(7);
    expect(parts[1]).toBe(value);
    expect(parts[4]).toBe(value);
    expect(Buffer.concat(parts).equals(encodeTextReply(get, { kind: 'values', items: [item, item] }))).toBe(true);
    const small = encodeTextReplyParts(get, { kind: 'values', items: [{ ...item, value: Buffer.from('v') }] });
    expect(small.map((part) => part.toString())).toEqual(['VALUE k 3 1 9\r\nv\r\nEND\r\n']);
    expect(encodeTextReplyParts({ kind: 'delete', key: 'k', noreply: true }, { kind: 'deleted' })).toEqual([]);
  });
});
