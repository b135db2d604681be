/**
 * applyToEntry against memcached itself: each case is a sequence of text commands sent to a real
 * memcached and, translated into Ops, to applyToEntry over a model map; the replies must match
 * line for line (cas numbers are normalised, since memcached's differ from ours). Then unit cases
 * for what a real memcached cannot show: tombstones, the binary protocol's initial value, and the
 * cas every change carries.
 */

import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { applyToEntry, isLive, parseUnsigned, type SingleKeyOp } from '../src/store/apply.ts';
import type { Reply } from '../src/protocol/types.ts';
import type { Entry } from '../src/store/types.ts';
import { startMemcached, type MemcachedInstance } from './support/memcached.ts';
import { itemAt } from '../src/runtime/item-at.ts';

/** A text-protocol client that sends one command and reads its whole reply. */
class TextClient {
  #buffer = '';
  #waiter: (() => void) | null = null;
  private constructor(private readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.#buffer += chunk.toString('latin1');
      this.#waiter?.();
    });
  }

  static connect(port: number): Promise<TextClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1', () => resolve(new TextClient(socket)));
      socket.once('error', reject);
    });
  }

  async send(line: string, data: string | null): Promise<string> {
    this.socket.write(line + '\r\n' + (data === null ? '' : data + '\r\n'), 'latin1');
    const isRetrieval = /^(get|gets|gat|gats) /.test(line);
    const deadline = Date.now() + 2000;
    for (;;) {
      const end = isRetrieval ? this.#buffer.indexOf('END\r\n') : this.#buffer.indexOf('\r\n');
      if (end >= 0) {
        const length = end + (isRetrieval ? 5 : 2);
        const reply = this.#buffer.slice(0, length);
        this.#buffer = this.#buffer.slice(length);
        return reply;
      }
      if (Date.now() > deadline) throw new Error(`no reply to ${line}`);
      await new Promise<void>((resolve) => {
        this.#waiter = resolve;
        setTimeout(resolve, 50);
      });
    }
  }

  close(): void {
    this.socket.destroy();
  }
}

/** memcached's text encoding of a Reply (the subset applyToEntry produces, plus get). */
function encode(reply: Reply): string {
  switch (reply.kind) {
    case 'stored':
      return 'STORED\r\n';
    case 'not_stored':
      return 'NOT_STORED\r\n';
    case 'exists':
      return 'EXISTS\r\n';
    case 'not_found':
      return 'NOT_FOUND\r\n';
    case 'deleted':
      return 'DELETED\r\n';
    case 'touched':
      return 'TOUCHED\r\n';
    case 'number':
      return `${reply.value}\r\n`;
    case 'client_error':
      return `CLIENT_ERROR ${reply.message}\r\n`;
    case 'values':
      return (
        reply.items
          .map((item) => `VALUE ${item.key} ${item.flags} ${item.value.length} ${item.cas}\r\n${item.value.toString('latin1')}\r\n`)
          .join('') + 'END\r\n'
      );
    default:
      throw new Error(`encode: unexpected ${reply.kind}`);
  }
}

/** Replaces the cas field of VALUE lines, and drops it when the command was a plain get. */
function normaliseCas(text: string, withCas: boolean): string {
  return text.replace(/^VALUE (\S+) (\d+) (\d+)(?: (\d+))?\r\n/gm, (_m, key, flags, bytes) =>
    withCas ? `VALUE ${key} ${flags} ${bytes} C\r\n` : `VALUE ${key} ${flags} ${bytes}\r\n`,
  );
}

/** The model: entries by key, a cas counter, and the cas each side last saw per key. */
class Model {
  readonly entries = new Map<string, Entry>();
  cas = 100n;
  lastSeenCas = new Map<string, bigint>();

  run(line: string, data: string | null, nowMs: number): string {
    const words = line.split(' ');
    const verb = words[0];
    if (verb === 'get' || verb === 'gets') return this.#get(words.slice(1), nowMs);
    const op = toOp(words, data, nowMs, (key) => this.lastSeenCas.get(key) ?? 0n);
    this.cas += 1n;
    const current = this.entries.get(op.key);
    const { write, reply } = applyToEntry(current, op, { cas: this.cas, nowMs });
    if (write === null) this.entries.delete(op.key);
    else if (write !== undefined) this.entries.set(op.key, write);
    return encode(reply);
  }

  #get(keys: string[], nowMs: number): string {
    const items = [];
    for (const key of keys) {
      const entry = this.entries.get(key);
      if (!isLive(entry, nowMs)) continue;
      this.lastSeenCas.set(key, entry.cas);
      items.push({ key, flags: entry.flags, value: entry.value, cas: entry.cas });
    }
    return encode({ kind: 'values', items });
  }
}

function expiresAt(exptime: number, nowMs: number): number {
  if (exptime === 0) return 0;
  return exptime < 0 ? nowMs - 1 : nowMs + exptime * 1000;
}

/** The Op for a text command; `$cas` / `$stale` in a cas command mean the last seen cas (+1). */
function toOp(words: string[], data: string | null, nowMs: number, seenCas: (key: string) => bigint): SingleKeyOp {
  const [verb, key] = words;
  if (key === undefined) throw new Error(`toOp: no key in ${words.join(' ')}`);
  switch (verb) {
    case 'set':
    case 'add':
    case 'replace':
    case 'append':
    case 'prepend':
    case 'cas': {
      const casToken = words[5];
      const casUnique =
        verb !== 'cas' ? 0n : casToken === '$cas' ? seenCas(key) : casToken === '$stale' ? seenCas(key) + 1n : BigInt(itemAt(words, 5));
      return {
        kind: 'store',
        verb,
        key,
        flags: Number(words[2]),
        expiresAtMs: expiresAt(Number(words[3]), nowMs),
        value: Buffer.from(data ?? '', 'latin1'),
        casUnique,
      };
    }
    case 'incr':
    case 'decr':
      return { kind: 'arith', verb, key, delta: BigInt(itemAt(words, 2)), initial: null, expiresAtMs: 0 };
    case 'delete':
      return { kind: 'delete', key };
    case 'touch':
      return { kind: 'touch', key, expiresAtMs: expiresAt(Number(words[2]), nowMs) };
    default:
      throw new Error(`toOp: unexpected ${verb}`);
  }
}

/*
 * memcached rewrites a shorter incr/decr result in place (space padded) only when no connection
 * still holds a reference to the item; a get answered just before, on an idle connection, can
 * still hold one, and then memcached writes the bare digits. That is timing, not semantics, so the
 * cases below never shrink a number right after reading it; applyToEntry always pads.
 */

/** One step: a command line and, for storage commands, its data (the byte count is filled in). */
type Step = [line: string, data?: string];

const CASES: Array<[name: string, steps: Step[]]> = [
  ['set, get, add, replace', [
    ['get k'], ['add k 3 0', 'one'], ['add k 4 0', 'two'], ['get k'], ['replace k 5 0', 'three'], ['get k'],
    ['replace missing 0 0', 'x'], ['set k 0 0', ''], ['get k'], ['set k 9 0', 'a b\tc'], ['gets k'],
  ]],
  ['append and prepend keep flags and refuse a missing key', [
    ['append k 0 0', 'x'], ['prepend k 0 0', 'x'], ['set k 7 0', 'mid'], ['append k 1 0', '>>'],
    ['prepend k 2 0', '<<'], ['get k'], ['append k 0 0', ''], ['get k'],
  ]],
  ['cas: found, stale, missing', [
    ['cas k 0 0 $cas', 'x'], ['set k 1 0', 'v1'], ['gets k'], ['cas k 2 0 $stale', 'v2'], ['cas k 2 0 $cas', 'v2'],
    ['gets k'], ['cas k 3 0 $stale', 'v3'], ['get k'], ['cas k 0 0 0', 'zero'], ['delete k'], ['cas k 0 0 $cas', 'v4'],
  ]],
  ['incr and decr on plain numbers', [
    ['incr k 1'], ['set k 5 0', '100'], ['decr k 1'], ['get k'], ['incr k 5'], ['decr k 1000'],
    ['get k'], ['incr k 0'], ['set k 0 0', '9'], ['incr k 1'], ['get k'], ['set k 0 0', '012'], ['incr k 0'], ['get k'],
  ]],
  ['incr wraps at 2^64, decr floors at 0', [
    ['set k 0 0', '18446744073709551615'], ['incr k 2'], ['get k'], ['set k 0 0', '18446744073709551615'],
    ['incr k 18446744073709551615'], ['decr k 18446744073709551615'], ['get k'],
  ]],
  ['incr on odd values: spaces, signs, junk, too long, empty', [
    ['set a 0 0', ' 5'], ['incr a 1'], ['get a'], ['set b 0 0', '5 x'], ['incr b 1'], ['get b'],
    ['set c 0 0', '-0'], ['incr c 1'], ['set d 0 0', '-1'], ['incr d 1'], ['set e 0 0', '+12'], ['incr e 1'],
    ['get e'], ['set f 0 0', '18446744073709551616'], ['incr f 1'], ['set g 0 0', '-18446744073709551615'],
    ['incr g 1'], ['set h 0 0', ''], ['incr h 1'], ['set i 0 0', '1a'], ['decr i 1'], ['set j 0 0', '0x10'],
    ['incr j 1'], ['set l 0 0', '00000000000000000000001'], ['incr l 1'], ['get l'], ['set m 0 0', '7\t'],
    ['incr m 1'], ['set n 0 0', 'abc'], ['incr n 1'], ['get n'], ['set o 0 0', ' '], ['incr o 1'],
  ]],
  ['delete and touch', [
    ['delete k'], ['touch k 0'], ['set k 0 0', 'v'], ['touch k 100'], ['get k'], ['delete k'], ['delete k'],
    ['get k'], ['touch k 0'],
  ]],
  ['expired items read as missing', [
    ['set k 1 -1', 'gone'], ['get k'], ['replace k 0 0', 'x'], ['add k 2 0', 'fresh'], ['get k'],
    ['set n 0 -1', '5'], ['incr n 1'], ['touch n 0'], ['delete n'], ['append n 0 0', 'x'],
  ]],
];

describe('applyToEntry matches memcached 1.6', () => {
  let memcached: MemcachedInstance;
  let client: TextClient;

  beforeAll(async () => {
    memcached = await startMemcached();
    client = await TextClient.connect(memcached.port);
  });

  afterAll(async () => {
    client?.close();
    await memcached?.stop();
  });

  it.each(CASES)('%s', async (name, steps) => {
    const prefix = `${name.replace(/\W+/g, '_').slice(0, 30)}_`;
    const model = new Model();
    const realSeenCas = new Map<string, string>();
    for (const [rawLine, data] of steps) {
      const words = rawLine.split(' ');
      const command = itemAt(words, 0);
      const modelLine = rawLine;
      // Keys get a per-case prefix on the real memcached so cases never share keys.
      const realWords = words.map((word, position) =>
        position === 0 || !['get', 'gets'].includes(command) ? word : prefix + word,
      );
      if (!['get', 'gets'].includes(command)) realWords[1] = prefix + words[1];
      if (command === 'cas') {
        const seen = realSeenCas.get(itemAt(realWords, 1)) ?? '0';
        const casToken = itemAt(words, 4);
        realWords[4] = casToken === '$cas' ? seen : casToken === '$stale' ? String(BigInt(seen) + 1n) : casToken;
      }
      const withBytes = (list: string[]): string =>
        data === undefined ? list.join(' ') : [...list.slice(0, 4), String(Buffer.byteLength(data, 'latin1')), ...list.slice(4)].join(' ');
      const real = await client.send(withBytes(realWords), data ?? null);
      for (const [, key, cas] of real.matchAll(/^VALUE (\S+) \d+ \d+ (\d+)\r\n/gm)) {
        if (key !== undefined && cas !== undefined) realSeenCas.set(key, cas);
      }
      const modelReply = model.run(withBytes(modelLine.split(' ')), data ?? null, Date.now());
      const withCas = command === 'gets';
      const realText = normaliseCas(real, withCas).split(prefix).join('');
      expect(normaliseCas(modelReply, withCas), `${rawLine} ${data ?? ''}`).toBe(realText);
    }
  });
});

describe('parseUnsigned (safe_strtoull)', () => {
  it.each([
    ['42', 42n], [' 42', 42n], ['\t\n42', 42n], ['42 ', 42n], ['42\0junk', 42n], ['+7', 7n], ['-0', 0n],
    ['18446744073709551615', 18446744073709551615n], ['-18446744073709551615', 1n],
  ])('%j is %s', (text, expected) => {
    expect(parseUnsigned(Buffer.from(text, 'latin1'))).toBe(expected);
  });

  it.each(['', ' ', '-1', '-9223372036854775808', '18446744073709551616', '1a', 'x1', '0x10', '+', '--1'])(
    '%j is not a number',
    (text) => {
      expect(parseUnsigned(Buffer.from(text, 'latin1'))).toBeNull();
    },
  );
});

describe('applyToEntry beyond the text protocol', () => {
  const nowMs = 1_000_000;
  const ctx = { cas: 77n, nowMs };
  const live: Entry = { value: Buffer.from('10'), flags: 3, expiresAtMs: 0, cas: 5n };
  const tombstone: Entry = { value: Buffer.alloc(0), flags: 0, expiresAtMs: 0, cas: 9n, tombstone: true };
  const set = (value: string): SingleKeyOp => ({
    kind: 'store', verb: 'set', key: 'k', flags: 1, expiresAtMs: 0, value: Buffer.from(value), casUnique: 0n,
  });

  it('refuses an append or prepend that would make the value longer than the limit, keeping the value, as memcached does', () => {
    const grow = (verb: 'append' | 'prepend', bytes: number): SingleKeyOp => ({
      kind: 'store', verb, key: 'k', flags: 0, expiresAtMs: 0, value: Buffer.from('x'.repeat(bytes)), casUnique: 0n,
    });
    expect(applyToEntry(live, grow('append', 8), ctx, 10)).toEqual({ write: { ...live, value: Buffer.from('10xxxxxxxx'), cas: ctx.cas }, reply: { kind: 'stored', cas: ctx.cas } });
    expect(applyToEntry(live, grow('append', 9), ctx, 10)).toEqual({ write: undefined, reply: { kind: 'not_stored' } });
    expect(applyToEntry(live, grow('prepend', 9), ctx, 10)).toEqual({ write: undefined, reply: { kind: 'not_stored' } });
    expect(applyToEntry(live, set('x'.repeat(20)), ctx, 10).reply.kind).toBe('stored'); // a set's value is the protocol's to limit
  });

  it('treats a tombstone as absent', () => {
    expect(applyToEntry(tombstone, { kind: 'delete', key: 'k' }, ctx)).toEqual({ write: undefined, reply: { kind: 'not_found' } });
    const add = applyToEntry(tombstone, { ...set('v'), verb: 'add' } as SingleKeyOp, ctx);
    expect(add.reply).toEqual({ kind: 'stored', cas: ctx.cas });
    expect(add.write?.tombstone).toBeUndefined();
    expect(applyToEntry(tombstone, { kind: 'touch', key: 'k', expiresAtMs: 0 }, ctx).reply.kind).toBe('not_found');
  });

  it('judges expiry at ctx.nowMs, inclusive', () => {
    const expiring: Entry = { ...live, expiresAtMs: nowMs };
    expect(applyToEntry(expiring, { kind: 'delete', key: 'k' }, ctx).reply.kind).toBe('not_found');
    expect(applyToEntry(expiring, { kind: 'delete', key: 'k' }, { ...ctx, nowMs: nowMs - 1 }).reply.kind).toBe('deleted');
  });

  it('creates a missing key with the binary protocol initial value, delta not applied', () => {
    const result = applyToEntry(
      undefined,
      { kind: 'arith', verb: 'incr', key: 'k', delta: 5n, initial: 42n, expiresAtMs: 123 },
      ctx,
    );
    expect(result.reply).toEqual({ kind: 'number', value: 42n, cas: ctx.cas });
    expect(result.write).toEqual({ value: Buffer.from('42'), flags: 0, expiresAtMs: 123, cas: 77n });
  });

  it('gives every change the new cas and keeps flags and expiry where memcached does', () => {
    const withExpiry: Entry = { ...live, expiresAtMs: nowMs + 5000 };
    const incr = applyToEntry(withExpiry, { kind: 'arith', verb: 'incr', key: 'k', delta: 1n, initial: 0n, expiresAtMs: 0 }, ctx);
    expect(incr.write).toEqual({ value: Buffer.from('11'), flags: 3, expiresAtMs: nowMs + 5000, cas: 77n });
    const touch = applyToEntry(withExpiry, { kind: 'touch', key: 'k', expiresAtMs: 9 }, ctx);
    expect(touch.write).toEqual({ ...withExpiry, expiresAtMs: 9, cas: 77n });
    const append = applyToEntry(withExpiry, { ...set('!'), verb: 'append', flags: 8, expiresAtMs: 1 } as SingleKeyOp, ctx);
    expect(append.write).toEqual({ value: Buffer.from('10!'), flags: 3, expiresAtMs: nowMs + 5000, cas: 77n });
    expect(applyToEntry(withExpiry, set('x'), ctx).write?.cas).toBe(77n);
    expect(applyToEntry(withExpiry, { kind: 'delete', key: 'k' }, ctx).write).toBeNull();
  });

  it('cas compares with the entry cas', () => {
    const casOp = (casUnique: bigint): SingleKeyOp => ({ ...set('n'), verb: 'cas', casUnique }) as SingleKeyOp;
    expect(applyToEntry(live, casOp(5n), ctx).reply.kind).toBe('stored');
    expect(applyToEntry(live, casOp(6n), ctx)).toEqual({ write: undefined, reply: { kind: 'exists' } });
    expect(applyToEntry(undefined, casOp(5n), ctx).reply.kind).toBe('not_found');
  });

  it('puts the new cas in the reply of every change that has one (the binary response header)', () => {
    expect(applyToEntry(live, set('x'), ctx).reply).toEqual({ kind: 'stored', cas: 77n });
    expect(applyToEntry(live, { ...set('!'), verb: 'prepend' } as SingleKeyOp, ctx).reply).toEqual({ kind: 'stored', cas: 77n });
    const incr = { kind: 'arith', verb: 'incr', key: 'k', delta: 1n, initial: null, expiresAtMs: 0 } as const;
    expect(applyToEntry(live, incr, ctx).reply).toEqual({ kind: 'number', value: 11n, cas: 77n });
    expect(applyToEntry(live, { kind: 'touch', key: 'k', expiresAtMs: 0 }, ctx).reply).toEqual({ kind: 'touched', cas: 77n, flags: 3 });
    expect(applyToEntry(live, { kind: 'delete', key: 'k' }, ctx).reply).toEqual({ kind: 'deleted' });
  });

  describe('a non-zero casUnique (binary header cas) on append/prepend, incr/decr and delete', () => {
    const append = (casUnique: bigint): SingleKeyOp => ({ ...set('!'), verb: 'append', casUnique }) as SingleKeyOp;
    const prepend = (casUnique: bigint): SingleKeyOp => ({ ...set('!'), verb: 'prepend', casUnique }) as SingleKeyOp;
    const del = (casUnique: bigint): SingleKeyOp => ({ kind: 'delete', key: 'k', casUnique });
    const incr = (casUnique: bigint, initial: bigint | null = null): SingleKeyOp =>
      ({ kind: 'arith', verb: 'incr', key: 'k', delta: 1n, initial, expiresAtMs: 0, casUnique });
    const exists = { write: undefined, reply: { kind: 'exists' } };

    it('applies when it matches the entry cas', () => {
      expect(applyToEntry(live, append(5n), ctx)).toEqual({ write: { ...live, value: Buffer.from('10!'), cas: 77n }, reply: { kind: 'stored', cas: 77n } });
      expect(applyToEntry(live, prepend(5n), ctx).write?.value).toEqual(Buffer.from('!10'));
      expect(applyToEntry(live, del(5n), ctx)).toEqual({ write: null, reply: { kind: 'deleted' } });
      expect(applyToEntry(live, incr(5n), ctx).reply).toEqual({ kind: 'number', value: 11n, cas: 77n });
    });

    it('answers exists and writes nothing when it does not', () => {
      for (const op of [append(4n), prepend(6n), del(4n), incr(6n)]) expect(applyToEntry(live, op, ctx)).toEqual(exists);
      // memcached compares the cas before it looks at the value.
      const text: Entry = { ...live, value: Buffer.from('abc') };
      expect(applyToEntry(text, incr(6n), ctx)).toEqual(exists);
      expect(applyToEntry(text, incr(5n), ctx).reply.kind).toBe('client_error');
    });

    it('on a missing key (or a tombstone) answers as without it', () => {
      for (const current of [undefined, tombstone]) {
        expect(applyToEntry(current, append(5n), ctx).reply).toEqual({ kind: 'not_stored' });
        expect(applyToEntry(current, prepend(5n), ctx).reply).toEqual({ kind: 'not_stored' });
        expect(applyToEntry(current, del(5n), ctx).reply).toEqual({ kind: 'not_found' });
        expect(applyToEntry(current, incr(5n), ctx).reply).toEqual({ kind: 'not_found' });
        expect(applyToEntry(current, incr(5n, 7n), ctx).reply).toEqual({ kind: 'number', value: 7n, cas: 77n });
      }
    });

    it('0n is unconditional, as before', () => {
      expect(applyToEntry(live, append(0n), ctx).reply).toEqual({ kind: 'stored', cas: 77n });
      expect(applyToEntry(live, del(0n), ctx).reply).toEqual({ kind: 'deleted' });
      expect(applyToEntry(live, incr(0n), ctx).reply.kind).toBe('number');
    });
  });
});
