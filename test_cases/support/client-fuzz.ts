/**
 * A seeded fuzz of mckv's client protocols (test_cases/protocol-fuzz.test.ts, and against real
 * controllers in client-fuzz.integration.test.ts): valid commands of both protocols, the same
 * mutated (bytes flipped, cut, repeated, line ends and NULs inserted), edge-case keys and numbers,
 * binary headers whose lengths disagree, and junk, sent in random chunks.
 */

import * as net from 'node:net';
import { OPCODE } from '../../src/protocol/binary-header.ts';
import type { Random } from '../../src/runtime/random.ts';

const pick = <T>(random: Random, items: readonly T[]): T => items[Math.floor(random() * items.length)] as T;
const between = (random: Random, low: number, high: number): number => low + Math.floor(random() * (high - low + 1));

const KEYS = ['k', 'key:1', 'a'.repeat(250), 'a'.repeat(251), '', 'sp ace', 'tab\tkey', 'nul\0key', 'ключ', 'caf\u00e9', '\u007fdel', 'x'.repeat(2100)];
const NUMBERS = ['0', '1', '-1', '4294967295', '4294967296', '18446744073709551615', '18446744073709551616', '99999999999999999999999', '1e3', '0x10', '+5', '', '-0', '2592000', '2592001', '-2147483649'];

/** A text command, valid more often than not; a flush_all or stats reset only if `wiping`. */
function textCommand(random: Random, wiping: boolean): string {
  const key = random() < 0.7 ? `k${between(random, 0, 20)}` : pick(random, KEYS);
  const number = (): string => (random() < 0.7 ? String(between(random, 0, 100)) : pick(random, NUMBERS));
  const noreply = random() < 0.2 ? ' noreply' : '';
  const data = 'd'.repeat(between(random, 0, 40));
  const length = random() < 0.8 ? String(data.length) : number();
  switch (between(random, 0, 12)) {
    case 0: return `${pick(random, ['set', 'add', 'replace', 'append', 'prepend'])} ${key} ${number()} ${number()} ${length}${noreply}\r\n${data}\r\n`;
    case 1: return `cas ${key} ${number()} ${number()} ${length} ${number()}${noreply}\r\n${data}\r\n`;
    case 2: return `${pick(random, ['get', 'gets'])} ${Array.from({ length: between(random, 0, 4) }, () => pick(random, KEYS)).join(' ')} ${key}\r\n`;
    case 3: return `${pick(random, ['gat', 'gats'])} ${number()} ${key}\r\n`;
    case 4: return `${pick(random, ['incr', 'decr'])} ${key} ${number()}${noreply}\r\n`;
    case 5: return `delete ${key}${random() < 0.2 ? ` ${number()}` : ''}${noreply}\r\n`;
    case 6: return `touch ${key} ${number()}${noreply}\r\n`;
    case 7: return wiping ? `flush_all${random() < 0.5 ? ` ${number()}` : ''}${noreply}\r\n` : `touch ${key} 0\r\n`;
    case 8: return `${pick(random, ['version', 'stats', 'stats items', 'stats slabs', wiping ? 'stats reset' : 'stats', 'verbosity 1', 'mn', 'me k', 'show', 'causal_token'])}\r\n`;
    case 12: return `causal_wait ${pick(random, ['c1.0.0.0', 'c1.zz.1.2', 'c1.' + 'z'.repeat(20) + '.0.0', 'x', ''])} ${number()}\r\n`;
    case 9: return `${pick(random, ['set', 'get', 'incr', 'cas'])}\r\n`;
    case 10: return `set ${key} 0 0 ${length}\r\n${'d'.repeat(between(random, 0, 80))}${pick(random, ['\r\n', '\n', '', 'xx\r\n'])}`;
    default: return `${pick(random, ['SET', 'Get', 'gEt', 'quit x', 'set k 0 0 1 2 3 4', 'get ' + 'k '.repeat(1100)])}\r\n`;
  }
}

/** A binary request: a real opcode mostly, lengths that agree mostly. */
function binaryRequest(random: Random): Buffer {
  const opcodes = Object.values(OPCODE);
  const opcode = random() < 0.85 ? pick(random, opcodes) : between(random, 0, 255);
  const key = Buffer.from(random() < 0.8 ? `k${between(random, 0, 20)}` : pick(random, KEYS), 'latin1');
  const extrasLength = random() < 0.7 ? pick(random, [0, 4, 8, 20]) : between(random, 0, 255);
  const extras = Buffer.alloc(extrasLength);
  for (let index = 0; index < extrasLength; index++) extras[index] = between(random, 0, 255);
  const value = Buffer.alloc(random() < 0.9 ? between(random, 0, 64) : between(random, 0, 70_000), 0x76);
  const bodyLength = extras.length + key.length + value.length;
  const header = Buffer.alloc(24);
  header[0] = random() < 0.95 ? 0x80 : between(random, 0, 255);
  header[1] = opcode;
  header.writeUInt16BE(random() < 0.9 ? key.length : between(random, 0, 0xffff), 2);
  header[4] = random() < 0.9 ? extras.length : between(random, 0, 255);
  header[5] = random() < 0.9 ? 0 : between(random, 0, 255);
  header.writeUInt32BE(random() < 0.9 ? bodyLength : pick(random, [0, 1, bodyLength + 1, 0x7fffffff, 0xffffffff]), 8);
  header.writeUInt32BE(between(random, 0, 0xffffffff), 12);
  header.writeBigUInt64BE(random() < 0.8 ? 0n : BigInt(between(random, 0, 0xffffffff)), 16);
  return Buffer.concat([header, extras, key, value]);
}

/** Flips, cuts, repeats or inserts bytes. */
function mutate(random: Random, bytes: Buffer): Buffer {
  const copy = Buffer.from(bytes);
  if (copy.length === 0) return copy;
  const at = between(random, 0, copy.length - 1);
  switch (between(random, 0, 4)) {
    case 0:
      copy[at] = between(random, 0, 255);
      return copy;
    case 1:
      return copy.subarray(0, at);
    case 2:
      return Buffer.concat([copy.subarray(0, at), copy.subarray(at, at + between(random, 1, 30)), copy.subarray(at)]);
    case 3:
      return Buffer.concat([copy.subarray(0, at), Buffer.from(pick(random, ['\r\n', '\n', '\r', '\0', ' ', '\xff'])), copy.subarray(at)]);
    default:
      return Buffer.concat([copy.subarray(0, at), copy.subarray(Math.min(copy.length, at + between(random, 1, 10)))]);
  }
}

function junk(random: Random): Buffer {
  const bytes = Buffer.alloc(between(random, 1, 600));
  for (let index = 0; index < bytes.length; index++) bytes[index] = between(random, 0, 255);
  return bytes;
}

/** One fuzzing connection: its bytes in random chunks, then a short wait for whatever comes back. */
export async function fuzzConnection(port: number, random: Random, bytes: Buffer): Promise<void> {
  const socket = net.connect(port, '127.0.0.1');
  socket.on('data', () => {});
  await new Promise<void>((resolve) => {
    socket.once('connect', resolve);
    socket.once('error', () => resolve());
  });
  for (let at = 0; at < bytes.length && !socket.destroyed; ) {
    const size = between(random, 1, 700);
    socket.write(bytes.subarray(at, at + size));
    at += size;
    if (random() < 0.3) await new Promise((resolve) => setImmediate(resolve));
  }
  await new Promise((resolve) => setTimeout(resolve, between(random, 0, 15)));
  if (random() < 0.5) socket.end();
  socket.destroy();
}

/**
 * What one fuzzing connection sends: 1 to 12 requests of one protocol, each valid (55%), mutated
 * (40%) or junk (5%). `wiping`: whether a text request may be a flush_all or a stats reset.
 */
export function fuzzBytes(random: Random, binary: boolean, wiping = true): Buffer {
  const requests = Array.from({ length: between(random, 1, 12) }, () => {
    const kind = random();
    const valid = binary ? binaryRequest(random) : Buffer.from(textCommand(random, wiping), 'latin1');
    if (kind < 0.55) return valid;
    if (kind < 0.95) return mutate(random, valid);
    return junk(random);
  });
  return Buffer.concat(requests);
}

/** A login as user `fuzz`, password `secret`: memcached -Y's text `set`, or a binary SASL PLAIN auth. */
export function loginBytes(binary: boolean): Buffer {
  if (!binary) return Buffer.from('set login 0 0 11\r\nfuzz secret\r\n', 'latin1');
  const mechanism = Buffer.from('PLAIN');
  const message = Buffer.from('\0fuzz\0secret', 'latin1');
  const header = Buffer.alloc(24);
  header[0] = 0x80;
  header[1] = OPCODE.saslAuth;
  header.writeUInt16BE(mechanism.length, 2);
  header.writeUInt32BE(mechanism.length + message.length, 8);
  return Buffer.concat([header, mechanism, message]);
}
