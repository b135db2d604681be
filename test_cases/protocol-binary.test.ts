/**
 * The binary protocol codec: every decoder case runs whole, byte by byte and split at every boundary.
 */

import { describe, expect, it } from 'vitest';
import { BinaryRequestDecoder, OPCODE, encodeBinaryReply, encodeBinaryReplyParts } from '../src/protocol/binary.ts';
import type { BinaryDecoded, BinaryHeader } from '../src/protocol/binary.ts';
import { DEFAULT_LIMITS } from '../src/protocol/types.ts';
import type { Command, ProtocolLimits, Reply } from '../src/protocol/types.ts';
import { arithExtras, binaryRequest } from './support/binary-request.ts';
import { decodeEveryWay } from './support/chunks.ts';
import { itemAt } from '../src/runtime/item-at.ts';

function u32s(...values: number[]): Buffer {
  const out = Buffer.alloc(values.length * 4);
  values.forEach((value, index) => out.writeUInt32BE(value, index * 4));
  return out;
}


const SMALL: ProtocolLimits = { ...DEFAULT_LIMITS, keyBytesMax: 10, valueBytesMax: 16 };

function decode(bytes: Buffer, limits: ProtocolLimits = DEFAULT_LIMITS): BinaryDecoded[] {
  return decodeEveryWay(() => new BinaryRequestDecoder(limits), bytes);
}

function header(opcode: number, extra: Partial<BinaryHeader> = {}): BinaryHeader {
  return { opcode, opaque: 0, quiet: false, withKey: false, ...extra };
}

function commandsOf(items: BinaryDecoded[]): Command[] {
  return items.map((item) => {
    if (item.kind !== 'command') throw new Error(`expected a command, got ${JSON.stringify(item)}`);
    return item.command;
  });
}

describe('binary decoder', () => {
  it('decodes the get family with the header the response needs', () => {
    const bytes = Buffer.concat([
      binaryRequest({ opcode: OPCODE.get, key: 'a', opaque: 7 }), binaryRequest({ opcode: OPCODE.getq, key: 'b' }),
      binaryRequest({ opcode: OPCODE.getk, key: 'c' }), binaryRequest({ opcode: OPCODE.getkq, key: 'd' }),
    ]);
    const items = decode(bytes);
    expect(items.map((item) => item.kind === 'command' && item.header)).toEqual([
      header(OPCODE.get, { opaque: 7 }), header(OPCODE.getq, { quiet: true }),
      header(OPCODE.getk, { withKey: true }), header(OPCODE.getkq, { quiet: true, withKey: true }),
    ]);
    expect(commandsOf(items)).toEqual(['a', 'b', 'c', 'd'].map((key) => ({ kind: 'get', keys: [key], cas: true })));
  });

  it('decodes set/add/replace (cas in the header makes a cas), append/prepend and quiet forms', () => {
    const bytes = Buffer.concat([
      binaryRequest({ opcode: OPCODE.set, key: 'k', extras: u32s(5, 60), value: 'v1' }),
      binaryRequest({ opcode: OPCODE.setq, key: 'k', extras: u32s(0, 0), value: 'v2', cas: 42n }),
      binaryRequest({ opcode: OPCODE.add, key: 'k', extras: u32s(0, 0xffffffff), value: '' }),
      binaryRequest({ opcode: OPCODE.replaceq, key: 'k', extras: u32s(1, 2), value: 'r' }),
      binaryRequest({ opcode: OPCODE.append, key: 'k', value: 'a' }), binaryRequest({ opcode: OPCODE.prependq, key: 'k', value: 'p' }),
    ]);
    const base = { kind: 'store', key: 'k', flags: 0, exptime: 0, casUnique: 0n, noreply: false } as const;
    expect(commandsOf(decode(bytes))).toEqual([
      { ...base, verb: 'set', flags: 5, exptime: 60, value: Buffer.from('v1') },
      { ...base, verb: 'cas', value: Buffer.from('v2'), casUnique: 42n },
      { ...base, verb: 'add', exptime: -1, value: Buffer.alloc(0) },
      { ...base, verb: 'replace', flags: 1, exptime: 2, value: Buffer.from('r') },
      { ...base, verb: 'append', value: Buffer.from('a') },
      { ...base, verb: 'prepend', value: Buffer.from('p') },
    ]);
  });

  it('decodes incr/decr: expiration 0xffffffff means fail if missing (initial null)', () => {
    const bytes = Buffer.concat([
      binaryRequest({ opcode: OPCODE.increment, key: 'n', extras: arithExtras(5n, 10n, 0) }),
      binaryRequest({ opcode: OPCODE.decrementq, key: 'n', extras: arithExtras(1n, 0n, 0xffffffff) }),
    ]);
    expect(commandsOf(decode(bytes))).toEqual([
      { kind: 'arith', verb: 'incr', key: 'n', delta: 5n, initial: 10n, exptime: 0, noreply: false, casUnique: 0n },
      { kind: 'arith', verb: 'decr', key: 'n', delta: 1n, initial: null, exptime: 0, noreply: false, casUnique: 0n },
    ]);
  });

  it('carries the header cas of append/prepend, incr/decr and delete (quiet forms too) as casUnique', () => {
    const bytes = Buffer.concat([
      binaryRequest({ opcode: OPCODE.append, key: 'k', value: 'a', cas: 7n }), binaryRequest({ opcode: OPCODE.prependq, key: 'k', value: 'p', cas: 8n }),
      binaryRequest({ opcode: OPCODE.delete, key: 'k', cas: 9n }), binaryRequest({ opcode: OPCODE.deleteq, key: 'k', cas: 2n ** 64n - 1n }),
      binaryRequest({ opcode: OPCODE.incrementq, key: 'n', extras: arithExtras(1n, 0n, 0), cas: 10n }),
    ]);
    const commands = commandsOf(decode(bytes));
    expect(commands.map((command) => ('casUnique' in command ? command.casUnique : null))).toEqual([7n, 8n, 9n, 2n ** 64n - 1n, 10n]);
    // Unlike set/add/replace, a header cas leaves append and prepend what they are.
    expect(commands.slice(0, 2).map((command) => command.kind === 'store' && command.verb)).toEqual(['append', 'prepend']);
  });

  it('decodes delete, touch, gat, flush, noop, version, verbosity, stat, quit', () => {
    const bytes = Buffer.concat([
      binaryRequest({ opcode: OPCODE.delete, key: 'k' }), binaryRequest({ opcode: OPCODE.touch, key: 'k', extras: u32s(30) }),
      binaryRequest({ opcode: OPCODE.gatq, key: 'k', extras: u32s(9) }), binaryRequest({ opcode: OPCODE.flush }),
      binaryRequest({ opcode: OPCODE.flushq, extras: u32s(5) }), binaryRequest({ opcode: OPCODE.noop }),
      binaryRequest({ opcode: OPCODE.version }),
      binaryRequest({ opcode: OPCODE.verbosity, extras: u32s(2) }), binaryRequest({ opcode: OPCODE.stat }),
      binaryRequest({ opcode: OPCODE.stat, key: 'items' }), binaryRequest({ opcode: OPCODE.quitq }),
    ]);
    expect(commandsOf(decode(bytes))).toEqual([
      { kind: 'delete', key: 'k', noreply: false, casUnique: 0n }, { kind: 'touch', key: 'k', exptime: 30, noreply: false },
      { kind: 'gat', keys: ['k'], cas: true, exptime: 9 }, { kind: 'flush_all', delaySeconds: 0, noreply: false },
      { kind: 'flush_all', delaySeconds: 5, noreply: false }, { kind: 'noop' }, { kind: 'version' },
      { kind: 'verbosity', level: 2, noreply: false }, { kind: 'stats', group: '' }, { kind: 'stats', group: 'items' },
      { kind: 'quit' },
    ]);
  });

  it('answers an unknown opcode with 0x81, swallows its body and carries on', () => {
    const items = decode(Buffer.concat([binaryRequest({ opcode: 0xee, key: 'x', value: 'junk' }), binaryRequest({ opcode: OPCODE.noop, opaque: 3 })]));
    expect(items).toEqual([
      { kind: 'invalid', header: header(0xee), status: 0x81, message: 'Unknown command', close: false },
      { kind: 'command', header: header(OPCODE.noop, { opaque: 3 }), command: { kind: 'noop' } },
    ]);
  });

  it('closes on impossible shapes (invalid arguments), long keys, and a bad magic', () => {
    const bad = (bytes: Buffer): BinaryDecoded[] => decode(Buffer.concat([bytes, binaryRequest({ opcode: OPCODE.noop })]), SMALL);
    const invalidArgs = (opcode: number): BinaryDecoded => ({ kind: 'invalid', header: header(opcode), status: 4, message: 'Invalid arguments', close: true });
    expect(bad(binaryRequest({ opcode: OPCODE.get }))).toEqual([invalidArgs(OPCODE.get)]);
    expect(bad(binaryRequest({ opcode: OPCODE.set, key: 'k', value: 'v' }))).toEqual([invalidArgs(OPCODE.set)]);
    expect(bad(binaryRequest({ opcode: OPCODE.get, key: 'k', value: 'v' }))).toEqual([invalidArgs(OPCODE.get)]);
    expect(bad(binaryRequest({ opcode: OPCODE.get, key: 'k'.repeat(11) }))).toEqual([invalidArgs(OPCODE.get)]);
    expect(bad(binaryRequest({ opcode: OPCODE.noop, key: 'k' }))).toEqual([invalidArgs(OPCODE.noop)]);
    expect(bad(binaryRequest({ opcode: OPCODE.get, key: 'k', keyBytes: 200 }))).toEqual([invalidArgs(OPCODE.get)]);
    expect(bad(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'))).toEqual([
      { kind: 'invalid', header: null, status: 4, message: '', close: true },
    ]);
  });

  it('refuses a control-character key without closing', () => {
    const items = decode(Buffer.concat([binaryRequest({ opcode: OPCODE.get, key: 'a\nb' }), binaryRequest({ opcode: OPCODE.noop })]));
    expect(items.map((item) => item.kind)).toEqual(['invalid', 'command']);
    expect(items[0]).toMatchObject({ status: 4, close: false });
  });

  it('swallows an oversized value without buffering it (status 3) and carries on', () => {
    const decoder = new BinaryRequestDecoder(SMALL);
    const big = binaryRequest({ opcode: OPCODE.set, key: 'k', extras: u32s(0, 0), value: Buffer.alloc(1000, 0x61) });
    expect(decoder.push(big.subarray(0, 24))).toEqual([{ kind: 'invalid', header: header(OPCODE.set), status: 3, message: 'Too large.', close: false }]);
    expect(decoder.push(big.subarray(24))).toEqual([]);
    expect(decoder.bufferedBytes).toBe(0);
    expect(decoder.push(binaryRequest({ opcode: OPCODE.noop }))).toHaveLength(1);
    const small = binaryRequest({ opcode: OPCODE.set, key: 'k', extras: u32s(0, 0), value: Buffer.alloc(17) });
    expect(decode(Buffer.concat([small, binaryRequest({ opcode: OPCODE.noop })]), SMALL).map((item) => item.kind)).toEqual(['invalid', 'command']);
  });
});

describe('binary encoder', () => {
  const get: Command = { kind: 'get', keys: ['k'], cas: true };
  const item = { key: 'k', flags: 9, value: Buffer.from('val'), cas: 77n };

  type Packet = { opcode: number; status: number; opaque: number; cas: bigint; extras: Buffer; key: string; value: Buffer };
  function parse(bytes: Buffer): Packet[] {
    const packets = [];
    let offset = 0;
    while (offset < bytes.length) {
      expect(bytes[offset]).toBe(0x81);
      const keyBytes = bytes.readUInt16BE(offset + 2);
      const extrasBytes = bytes.readUInt8(offset + 4);
      const bodyBytes = bytes.readUInt32BE(offset + 8);
      const body = bytes.subarray(offset + 24, offset + 24 + bodyBytes);
      packets.push({
        opcode: bytes.readUInt8(offset + 1), status: bytes.readUInt16BE(offset + 6), opaque: bytes.readUInt32BE(offset + 12),
        cas: bytes.readBigUInt64BE(offset + 16), extras: body.subarray(0, extrasBytes),
        key: body.toString('latin1', extrasBytes, extrasBytes + keyBytes), value: body.subarray(extrasBytes + keyBytes),
      });
      offset += 24 + bodyBytes;
    }
    return packets;
  }

  it('encodes a get hit with flags extras, cas and opaque; getk adds the key', () => {
    const [hit] = parse(encodeBinaryReply(header(OPCODE.get, { opaque: 5 }), get, { kind: 'values', items: [item] }));
    expect(hit).toEqual({ opcode: 0, status: 0, opaque: 5, cas: 77n, extras: Buffer.from([0, 0, 0, 9]), key: '', value: Buffer.from('val') });
    const withKey = itemAt(parse(encodeBinaryReply(header(OPCODE.getk, { withKey: true }), get, { kind: 'values', items: [item] })), 0);
    expect(withKey.key).toBe('k');
  });

  it('encodes misses: status 1, the key for getk, nothing for getq', () => {
    expect(parse(encodeBinaryReply(header(OPCODE.get), get, { kind: 'values', items: [] }))[0]).toMatchObject({ status: 1, value: Buffer.from('Not found') });
    expect(parse(encodeBinaryReply(header(OPCODE.getk, { withKey: true }), get, { kind: 'values', items: [] }))[0]).toMatchObject({ status: 1, key: 'k' });
    expect(encodeBinaryReply(header(OPCODE.getq, { quiet: true }), get, { kind: 'values', items: [] })).toHaveLength(0);
    expect(encodeBinaryReply(header(OPCODE.getkq, { quiet: true, withKey: true }), get, { kind: 'not_found' })).toHaveLength(0);
  });

  const set: Command = { kind: 'store', verb: 'set', key: 'k', flags: 0, exptime: 0, value: Buffer.alloc(0), casUnique: 0n, noreply: false };
  const statusOf = (h: BinaryHeader, reply: Reply, command: Command = set): number =>
    itemAt(parse(encodeBinaryReply(h, command, reply)), 0).status;

  it('maps replies to memcached status codes', () => {
    expect(statusOf(header(OPCODE.set), { kind: 'stored' })).toBe(0);
    expect(statusOf(header(OPCODE.set), { kind: 'exists' })).toBe(2);
    expect(statusOf(header(OPCODE.set), { kind: 'not_found' })).toBe(1);
    expect(statusOf(header(OPCODE.add), { kind: 'not_stored' })).toBe(2);
    expect(statusOf(header(OPCODE.replace), { kind: 'not_stored' })).toBe(1);
    expect(statusOf(header(OPCODE.append), { kind: 'not_stored' })).toBe(5);
    expect(statusOf(header(OPCODE.increment), { kind: 'client_error', message: 'cannot increment or decrement non-numeric value' })).toBe(6);
    expect(statusOf(header(OPCODE.set), { kind: 'client_error', message: 'whatever' })).toBe(4);
    expect(statusOf(header(OPCODE.set), { kind: 'refused', reason: 'too_large' })).toBe(3);
    expect(statusOf(header(OPCODE.set), { kind: 'refused', reason: 'out_of_memory' })).toBe(0x82);
    // The cluster's own refusals: "busy", else "temporary failure" (memjs: "Temporary failure", not "Out of memory").
    expect(statusOf(header(OPCODE.set), { kind: 'refused', reason: 'busy', detail: 'request queue full' })).toBe(0x85);
    expect(statusOf(header(OPCODE.set), { kind: 'refused', reason: 'no_quorum', detail: 'no leader reachable' })).toBe(0x86);
    expect(statusOf(header(OPCODE.get), { kind: 'refused', reason: 'not_caught_up', detail: 'replica is rebuilding (read refused)' })).toBe(0x86);
    expect(statusOf(header(OPCODE.set), { kind: 'error' })).toBe(0x81);
  });

  it('puts the new cas in the header after a store, incr/decr and touch; 0 after a delete or an error', () => {
    const casOf = (h: BinaryHeader, reply: Reply): bigint => itemAt(parse(encodeBinaryReply(h, set, reply)), 0).cas;
    for (const opcode of [OPCODE.set, OPCODE.add, OPCODE.replace, OPCODE.append, OPCODE.prepend]) {
      expect(casOf(header(opcode), { kind: 'stored', cas: 41n })).toBe(41n);
    }
    const number = itemAt(parse(encodeBinaryReply(header(OPCODE.decrement), set, { kind: 'number', value: 3n, cas: 2n ** 63n })), 0);
    expect([number.cas, number.value.readBigUInt64BE(0), number.extras.length]).toEqual([2n ** 63n, 3n, 0]);
    expect(casOf(header(OPCODE.delete), { kind: 'deleted' })).toBe(0n);
    expect(casOf(header(OPCODE.append), { kind: 'exists' })).toBe(0n);
    expect(casOf(header(OPCODE.set), { kind: 'stored' })).toBe(0n);
  });

  it('answers a touch with the item flags as extras and its cas, as memcached does', () => {
    const touch: Command = { kind: 'touch', key: 'k', exptime: 10, noreply: false };
    const [packet] = parse(encodeBinaryReply(header(OPCODE.touch, { opaque: 3 }), touch, { kind: 'touched', cas: 12n, flags: 9 }));
    expect(packet).toEqual({ opcode: OPCODE.touch, status: 0, opaque: 3, cas: 12n, extras: Buffer.from([0, 0, 0, 9]), key: '', value: Buffer.alloc(0) });
  });

  it('keeps quiet opcodes silent on success but not on error', () => {
    expect(encodeBinaryReply(header(OPCODE.setq, { quiet: true }), set, { kind: 'stored' })).toHaveLength(0);
    expect(encodeBinaryReply(header(OPCODE.deleteq, { quiet: true }), set, { kind: 'deleted' })).toHaveLength(0);
    expect(encodeBinaryReply(header(OPCODE.incrementq, { quiet: true }), set, { kind: 'number', value: 3n })).toHaveLength(0);
    expect(encodeBinaryReply(header(OPCODE.appendq, { quiet: true }), set, { kind: 'stored', cas: 5n })).toHaveLength(0);
    expect(statusOf(header(OPCODE.appendq, { quiet: true }), { kind: 'exists' })).toBe(2);
    expect(statusOf(header(OPCODE.deleteq, { quiet: true }), { kind: 'exists' })).toBe(2);
    expect(statusOf(header(OPCODE.setq, { quiet: true }), { kind: 'exists' })).toBe(2);
    expect(statusOf(header(OPCODE.deleteq, { quiet: true }), { kind: 'not_found' })).toBe(1);
  });

  it('encodes incr as an 8-byte value, version as text, stats as packets plus an empty one', () => {
    const number = itemAt(parse(encodeBinaryReply(header(OPCODE.increment), set, { kind: 'number', value: 18446744073709551615n })), 0);
    expect(number.value.readBigUInt64BE(0)).toBe(18446744073709551615n);
    expect(itemAt(parse(encodeBinaryReply(header(OPCODE.version), { kind: 'version' }, { kind: 'version', version: '1.6.18' })), 0).value.toString()).toBe('1.6.18');
    const stats = parse(encodeBinaryReply(header(OPCODE.stat, { opaque: 4 }), { kind: 'stats', group: '' }, { kind: 'stats', stats: [['pid', '12'], ['uptime', '3']] }));
    expect(stats.map((packet) => [packet.key, packet.value.toString(), packet.opaque])).toEqual([['pid', '12', 4], ['uptime', '3', 4], ['', '', 4]]);
  });
});

describe('binary decoder: SASL PLAIN (memcached -S) and flush off (memcached -F)', () => {
  const login = { verify: (user: string, password: string): boolean => user === 'alice' && password === 'secret' };
  const decodeLoggingIn = (bytes: Buffer): BinaryDecoded[] => decodeEveryWay(() => new BinaryRequestDecoder(SMALL, { login }), bytes);
  const answered = (opcode: number, status: number, body: string): BinaryDecoded => ({ kind: 'answered', header: header(opcode), status: status as never, body });

  it('serves mechanisms and version before SASL; a command before it is refused and closes', () => {
    const items = decodeLoggingIn(Buffer.concat([
      binaryRequest({ opcode: OPCODE.saslListMechs }),
      binaryRequest({ opcode: OPCODE.version }),
      binaryRequest({ opcode: OPCODE.getq, key: 'k' }),
      binaryRequest({ opcode: OPCODE.noop }),
    ]));
    expect(items).toEqual([
      answered(OPCODE.saslListMechs, 0, 'PLAIN'),
      { kind: 'command', header: header(OPCODE.version), command: { kind: 'version' } },
      { kind: 'invalid', header: header(OPCODE.getq, { quiet: true }), status: 0x20, message: 'Auth failure.', close: true },
    ]);
  });

  it('PLAIN in one step or two; a failure keeps the connection logged out', () => {
    const items = decodeLoggingIn(Buffer.concat([
      binaryRequest({ opcode: OPCODE.saslAuth, key: 'PLAIN', value: '\0alice\0wrong' }),
      binaryRequest({ opcode: OPCODE.saslStep, key: 'PLAIN', value: '\0alice\0secret' }),
      binaryRequest({ opcode: OPCODE.saslAuth, key: 'PLAIN' }),
      binaryRequest({ opcode: OPCODE.saslStep, key: 'PLAIN', value: '\0alice\0secret' }),
      binaryRequest({ opcode: OPCODE.noop }),
    ]));
    expect(items).toEqual([
      answered(OPCODE.saslAuth, 0x20, 'Auth failure.'),
      answered(OPCODE.saslStep, 0x20, 'Auth failure.'),
      answered(OPCODE.saslAuth, 0x21, ''),
      answered(OPCODE.saslStep, 0, 'Authenticated'),
      { kind: 'command', header: header(OPCODE.noop), command: { kind: 'noop' } },
    ]);
  });

  it('refuses a SASL request of another shape, before buffering its body', () => {
    const tooLong = binaryRequest({ opcode: OPCODE.saslAuth, key: 'PLAIN', value: Buffer.alloc(2000) }).subarray(0, 24);
    expect(decodeLoggingIn(tooLong)).toEqual([
      { kind: 'invalid', header: header(OPCODE.saslAuth), status: 0x04, message: 'Invalid arguments', close: true },
    ]);
  });

  it('without a login, SASL opcodes are unknown commands', () => {
    expect(decode(binaryRequest({ opcode: OPCODE.saslListMechs }))).toEqual([
      { kind: 'invalid', header: header(OPCODE.saslListMechs), status: 0x81, message: 'Unknown command', close: false },
    ]);
  });

  it('flush off: flush and flushq answered "Auth failure.", the connection kept', () => {
    const items = decodeEveryWay(() => new BinaryRequestDecoder(SMALL, { flushAllEnabled: false }), Buffer.concat([
      binaryRequest({ opcode: OPCODE.flush }),
      binaryRequest({ opcode: OPCODE.flushq, extras: u32s(5) }),
    ]));
    expect(items).toEqual([
      { kind: 'invalid', header: header(OPCODE.flush), status: 0x20, message: 'Auth failure.', close: false },
      { kind: 'invalid', header: header(OPCODE.flushq, { quiet: true }), status: 0x20, message: 'Auth failure.', close: false },
    ]);
  });
});

describe('binary encoder: parts', () => {
  it('writes a large hit as its packet head and the value itself', () => {
    const value = Buffer.alloc(100_000, 0x62);
    const item = { key: 'k', flags: 1, value, cas: 4n };
    const get: Command = { kind: 'get', keys: ['k'], cas: true };
    const parts = encodeBinaryReplyParts(header(OPCODE.getkq, { quiet: true, withKey: true }), get, { kind: 'values', items: [item] });
    expect(parts).toHaveLength(2);
    expect(parts[1]).toBe(value);
    expect(Buffer.concat(parts).equals(encodeBinaryReply(header(OPCODE.getkq, { quiet: true, withKey: true }), get, { kind: 'values', items: [item] }))).toBe(true);
    expect(encodeBinaryReplyParts(header(OPCODE.getq, { quiet: true }), get, { kind: 'values', items: [] })).toEqual([]);
  });
});
