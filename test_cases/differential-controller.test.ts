/**
 * memcached is the reference: the same command sequences go to a real memcached and to a
 * controller of a real cluster (in each mode), and the replies must match byte for byte. The one
 * thing allowed to differ is the value of a cas token (the controller's are its own versions), so
 * `gets` replies are compared with the token masked, and each side's `cas` uses its own token.
 * Binary sessions compare every response packet with the cas reduced to zero or not, plus which
 * responses carry the same cas as which others (a store's cas is the one the next get returns).
 * Random pipelines, text and binary (quiet requests included), check that a connection's
 * requests take effect in order and answer as memcached's do.
 */

import { execFile, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Mode } from '../src/consistency/types.ts';
import { Cluster, freePort, spawnMemcached } from '../src/jepsen/cluster.ts';
import { arithExtras, binaryRequest } from './support/binary-request.ts';
import { endsAfter, exchange } from './support/raw.ts';
import { mulberry32, picker } from '../src/runtime/random.ts';
import { itemAt } from '../src/runtime/item-at.ts';

/** One step: the request (with `{cas}` standing for the last token this side saw) and the end of its reply. */
type Step = [request: string, replyEnd: string];

const sessions: Record<string, Step[]> = {
  'storage commands': [
    ['set a 5 0 3\r\nabc\r\n', '\r\n'],
    ['get a\r\n', 'END\r\n'],
    ['add a 0 0 1\r\nx\r\n', '\r\n'],
    ['add b 7 0 2\r\nbb\r\n', '\r\n'],
    ['replace c 0 0 1\r\nx\r\n', '\r\n'],
    ['replace b 1 0 3\r\nnew\r\n', '\r\n'],
    ['append a 0 0 2\r\nde\r\n', '\r\n'],
    ['prepend a 0 0 2\r\nzz\r\n', '\r\n'],
    ['append missing 0 0 1\r\nx\r\n', '\r\n'],
    ['get a b c\r\n', 'END\r\n'],
    ['set empty 0 0 0\r\n\r\n', '\r\n'],
    ['get empty\r\n', 'END\r\n'],
  ],
  'cas': [
    ['set k 0 0 1\r\n1\r\n', '\r\n'],
    ['gets k\r\n', 'END\r\n'],
    ['cas k 0 0 1 {cas}\r\n2\r\n', '\r\n'],
    ['cas k 0 0 1 {cas}\r\n3\r\n', '\r\n'],
    ['cas nope 0 0 1 1\r\nx\r\n', '\r\n'],
    ['gets k\r\n', 'END\r\n'],
    ['get k\r\n', 'END\r\n'],
  ],
  'incr and decr': [
    ['set n 0 0 2\r\n10\r\n', '\r\n'],
    ['incr n 5\r\n', '\r\n'],
    ['decr n 100\r\n', '\r\n'],
    ['incr n 18446744073709551615\r\n', '\r\n'],
    ['incr missing 1\r\n', '\r\n'],
    ['set s 0 0 3\r\nabc\r\n', '\r\n'],
    ['incr s 1\r\n', '\r\n'],
    ['set big 0 0 20\r\n18446744073709551615\r\n', '\r\n'],
    ['incr big 1\r\n', '\r\n'],
    ['get n big\r\n', 'END\r\n'],
  ],
  'delete, touch and expiry': [
    ['set d 0 0 1\r\nx\r\n', '\r\n'],
    ['delete d\r\n', '\r\n'],
    ['delete d\r\n', '\r\n'],
    ['get d\r\n', 'END\r\n'],
    ['set t 0 100 1\r\nx\r\n', '\r\n'],
    ['touch t 0\r\n', '\r\n'],
    ['touch none 10\r\n', '\r\n'],
    ['set gone 0 -1 1\r\nx\r\n', '\r\n'],
    ['get gone t\r\n', 'END\r\n'],
    ['gat 100 t gone\r\n', 'END\r\n'],
  ],
  'noreply and pipelining': [
    ['set p 0 0 1 noreply\r\nx\r\nget p\r\n', 'END\r\n'],
    ['add p 0 0 1 noreply\r\ny\r\nappend p 0 0 1 noreply\r\nz\r\nget p\r\n', 'END\r\n'],
    ['incr p 1 noreply\r\ndelete p noreply\r\nget p\r\n', 'END\r\n'],
    ['set q 0 0 1\r\n1\r\nset r 0 0 1\r\n2\r\nget q r\r\n', 'END\r\n'],
  ],
  'errors': [
    ['bogus\r\n', '\r\n'],
    ['get\r\n', '\r\n'],
    ['set k 0 0 2\r\nabc\r\n', 'chunk\r\nERROR\r\n'],
    ['incr k abc\r\n', '\r\n'],
    ['delete k 5\r\n', '\r\n'],
    [`get ${'x'.repeat(251)}\r\n`, '\r\n'],
  ],
  // A controller's own counters (plain `stats`) are its own; the groups answer as memcached's do.
  // (Not items, slabs or cachedump: this memcached lists what the other sessions stored.)
  'stats groups': [
    ['stats noreply\r\n', '\r\n'],
    ['stats nonsense\r\n', '\r\n'],
    ['stats reset\r\n', '\r\n'],
    ['stats sizes\r\n', 'END\r\n'],
    ['stats extstore\r\n', 'END\r\n'],
    ['stats detail\r\n', '\r\n'],
    ['stats detail dump\r\n', 'END\r\n'],
    ['stats detail on\r\n', '\r\n'],
    ['stats detail off\r\n', '\r\n'],
    ['stats cachedump\r\n', '\r\n'],
    ['stats cachedump x y\r\n', '\r\n'],
  ],
};

/**
 * A long pipelined script over a few keys, sent in one write: reads and writes of one connection
 * in flight together, so any read that overtakes an earlier write of the connection, or sees a
 * later one, answers differently from memcached (which executes a connection's commands in order).
 * It ends as `withEnd` ends it.
 */
function pipelinedScript(prefix: string, seed: number, count: number): { script: string; end: string } {
  const random = mulberry32(seed);
  const pick = picker(random);
  const keys = ['a', 'b', 'c'].map((name) => `${prefix}${name}`);
  const parts: string[] = [];
  for (let n = 0; n < count; n += 1) {
    const key = pick(keys);
    const noreply = random() < 0.2 ? ' noreply' : '';
    const digits = String(Math.floor(random() * 1000));
    const roll = random();
    if (roll < 0.35) parts.push(random() < 0.3 ? `get ${keys.join(' ')}\r\n` : `get ${key}\r\n`);
    else if (roll < 0.6) parts.push(`set ${key} ${n % 7} 0 ${digits.length}${noreply}\r\n${digits}\r\n`);
    else if (roll < 0.7) parts.push(`append ${key} 0 0 1${noreply}\r\n${n % 10}\r\n`);
    else if (roll < 0.8) parts.push(`incr ${key} ${digits}${noreply}\r\n`);
    else if (roll < 0.87) parts.push(`add ${key} 0 0 1${noreply}\r\n1\r\n`);
    else if (roll < 0.94) parts.push(`delete ${key}${noreply}\r\n`);
    else parts.push(`decr ${key} 1${noreply}\r\n`);
  }
  return withEnd(prefix, parts);
}

/** A script of `parts`, then a set of a key nothing else touches and its get, whose reply ends the exchange. */
function withEnd(prefix: string, parts: string[]): { script: string; end: string } {
  const last = `${prefix}last`;
  return { script: `${parts.join('')}set ${last} 0 0 4 noreply\r\ndone\r\nget ${last}\r\n`, end: `VALUE ${last} 0 4\r\ndone\r\nEND\r\n` };
}

/**
 * A random pipeline of every text command over a few keys, malformed lines included (a bad
 * number, a missing key, a data block longer than announced, a misspelt noreply, an empty line),
 * sent in one write; then an empty line and `withEnd`.
 */
function randomTextPipeline(prefix: string, seed: number, count: number): { script: string; end: string } {
  const random = mulberry32(seed);
  const pick = picker(random);
  const keys = ['a', 'b', 'n'].map((name) => `${prefix}${name}`);
  const parts: string[] = [];
  for (let n = 0; n < count; n += 1) {
    const key = pick(keys);
    const noreply = random() < 0.2 ? ' noreply' : '';
    const value = pick(['', '1', '42', '007', 'x', 'abc', '18446744073709551615', 'a b']);
    const flags = pick(['0', '1', '4294967295']);
    const exptime = pick(['0', '0', '3600']);
    const block = `${value.length}${noreply}\r\n${value}\r\n`;
    parts.push(
      pick([
        `get ${key}\r\n`,
        `gets ${keys.join(' ')}\r\n`,
        `set ${key} ${flags} ${exptime} ${block}`,
        `add ${key} ${flags} ${exptime} ${block}`,
        `replace ${key} ${flags} ${exptime} ${block}`,
        `append ${key} 0 0 ${block}`,
        `prepend ${key} 0 0 ${block}`,
        `cas ${key} 0 0 ${value.length} ${pick(['99999999999', '18446744073709551615', 'abc'])}${noreply}\r\n${value}\r\n`,
        `incr ${key} ${pick(['1', '0', '1000', '18446744073709551615', 'x', '-1'])}${noreply}\r\n`,
        `decr ${key} ${pick(['1', '0', '1000', 'x'])}${noreply}\r\n`,
        `delete ${key}${noreply}\r\n`,
        `delete ${key} 0${noreply}\r\n`,
        `touch ${key} ${exptime}${noreply}\r\n`,
        `gat ${exptime} ${key}\r\n`,
        `gat ${exptime}\r\n`,
        `set ${key} 0 0 ${value.length + 1}\r\n${value}\r\n`,
        `set ${key} x 0 1\r\n1\r\n`,
        'incr\r\n',
        `verbosity 1${noreply}\r\n`,
        `touch ${key}\r\n`,
        `GET ${key}\r\n`,
        `get ${key} ${key}\r\n`,
        `set ${key} 0 0 2 norepl\r\nab\r\n`,
        '\r\n',
      ]),
    );
  }
  // An empty line first: a data block longer than announced, last, would swallow the end's first byte.
  parts.push('\r\n');
  return withEnd(prefix, parts);
}

async function play(port: number, steps: Step[]): Promise<string[]> {
  const replies: string[] = [];
  let cas = '0';
  for (const [template, end] of steps) {
    const request = template.replaceAll('{cas}', cas);
    const reply = (await exchange(port, request, (received) => received.toString('latin1').endsWith(end), 10_000)).toString('latin1');
    const token = /^VALUE \S+ \d+ \d+ (\d+)\r\n/m.exec(reply)?.[1];
    if (token !== undefined) cas = token;
    replies.push(reply.replace(/^(VALUE \S+ \d+ \d+) \d+\r\n/gm, '$1 <cas>\r\n'));
  }
  return replies;
}

/** One binary request: its header cas is 0, or a token this side saved earlier (`casOf`). */
interface BinaryStep {
  opcode: number;
  key: string;
  extras?: Buffer;
  value?: string;
  casOf?: string;
  /** Save the cas of this step's response under a name. */
  save?: string;
}

/** What a response packet must agree on; the cas only as zero or not. */
interface BinaryOutcome {
  opcode: number;
  status: number;
  casNonZero: boolean;
  extras: string;
  key: string;
  value: string;
}

const OP = {
  get: 0x00, set: 0x01, delete: 0x04, increment: 0x05, decrement: 0x06, noop: 0x0a, append: 0x0e, prepend: 0x0f, stat: 0x10,
  deleteq: 0x14, decrementq: 0x16, appendq: 0x19, prependq: 0x1a, touch: 0x1c,
} as const;

function storeExtras(flags: number): Buffer {
  const extras = Buffer.alloc(8);
  extras.writeUInt32BE(flags, 0);
  return extras;
}

const TOUCH_EXTRAS = Buffer.from([0, 0, 0x0e, 0x10]); // 3600 s

interface Packet {
  opcode: number;
  status: number;
  opaque: number;
  cas: bigint;
  extras: Buffer;
  key: string;
  value: Buffer;
}

/** The complete response packets at the start of `bytes`. */
function packetsOf(bytes: Buffer): Packet[] {
  const packets: Packet[] = [];
  let offset = 0;
  while (offset + 24 <= bytes.length && offset + 24 + bytes.readUInt32BE(offset + 8) <= bytes.length) {
    const keyBytes = bytes.readUInt16BE(offset + 2);
    const extrasBytes = bytes.readUInt8(offset + 4);
    const body = bytes.subarray(offset + 24, offset + 24 + bytes.readUInt32BE(offset + 8));
    packets.push({
      opcode: bytes.readUInt8(offset + 1), status: bytes.readUInt16BE(offset + 6), opaque: bytes.readUInt32BE(offset + 12),
      cas: bytes.readBigUInt64BE(offset + 16),
      extras: body.subarray(0, extrasBytes), key: body.toString('latin1', extrasBytes, extrasBytes + keyBytes),
      value: body.subarray(extrasBytes + keyBytes),
    });
    offset += 24 + body.length;
  }
  return packets;
}

/** A side's responses: outcomes to compare, and every response cas in order (for the relations). */
interface BinaryPlay {
  outcomes: BinaryOutcome[][];
  cases: bigint[][];
}

/** Sends each step followed by a noop (so a quiet step's silence is seen too) and keeps what came before the noop's answer. */
async function playBinary(port: number, steps: BinaryStep[]): Promise<BinaryPlay> {
  const saved = new Map<string, bigint>();
  const played: BinaryPlay = { outcomes: [], cases: [] };
  for (const step of steps) {
    const cas = step.casOf === undefined ? 0n : saved.get(step.casOf);
    if (cas === undefined) throw new Error(`no cas saved as ${step.casOf}`);
    const bytes = Buffer.concat([binaryRequest({ ...step, cas }), binaryRequest({ opcode: OP.noop })]);
    const received = await exchange(port, bytes, (sofar) => packetsOf(sofar).some((packet) => packet.opcode === OP.noop), 10_000);
    const packets = packetsOf(received).filter((packet) => packet.opcode !== OP.noop);
    if (step.save !== undefined) saved.set(step.save, packets[0]?.cas ?? 0n);
    played.cases.push(packets.map((packet) => packet.cas));
    played.outcomes.push(packets.map((packet) => ({
      opcode: packet.opcode, status: packet.status, casNonZero: packet.cas !== 0n, extras: packet.extras.toString('hex'),
      key: packet.key, value: packet.value.toString('latin1'),
    })));
  }
  return played;
}

/** For every two non-zero response cas values (touch's excluded): equal or not. */
function casRelations(play: BinaryPlay, steps: BinaryStep[]): string[] {
  const tokens: Array<[string, bigint]> = [];
  play.cases.forEach((values, index) => {
    if (itemAt(steps, index).opcode === OP.touch) return; // memcached keeps the cas on touch, mckv gives a new one (README)
    values.forEach((cas, position) => {
      if (cas !== 0n) tokens.push([`${index}.${position}`, cas]);
    });
  });
  const relations: string[] = [];
  for (const [left, [leftName, leftCas]] of tokens.entries()) {
    for (const [rightName, rightCas] of tokens.slice(left + 1)) {
      relations.push(`${leftName} ${leftCas === rightCas ? '==' : '!='} ${rightName}`);
    }
  }
  return relations;
}

/** The binary opcodes a random pipeline draws from, by the body they take: every keyed command, quiet variants included. */
const RANDOM_BINARY: Record<'get' | 'store' | 'delete' | 'arith' | 'concat' | 'touch', readonly number[]> = {
  get: [0x00, 0x09, 0x0c, 0x0d], // get, getq, getk, getkq: a key
  store: [0x01, 0x11, 0x02, 0x12, 0x03, 0x13], // set, add, replace (and quiet): flags and exptime, key, value
  delete: [0x04, 0x14], // a key
  arith: [0x05, 0x15, 0x06, 0x16], // incr, decr (and quiet): delta, initial and exptime, key
  concat: [0x0e, 0x19, 0x0f, 0x1a], // append, prepend (and quiet): key, value
  touch: [0x1c, 0x1d, 0x1e], // touch, gat, gatq: exptime, key
};
const RANDOM_BINARY_OPCODES = [...Object.values(RANDOM_BINARY).flat(), OP.noop];
const RANDOM_BINARY_END = 0xffff_fff0;

/**
 * A random pipeline of binary requests over a few keys, each with its own opaque, sent in one
 * write and ended by a noop: what each request answers (or, quiet, does not), in order, must be
 * what memcached answers. Values are drawn without spaces: memcached writes a shorter incr/decr
 * result in place padded with spaces, except when a response not yet sent still holds the item
 * (a get earlier in the same pipeline does), so the spaces alone may differ (see apply.ts).
 */
function randomBinaryPipeline(prefix: string, seed: number, count: number): Buffer {
  const random = mulberry32(seed);
  const pick = picker(random);
  const keys = ['a', 'b', 'n'].map((name) => `${prefix}${name}`);
  const requests: Buffer[] = [];
  for (let n = 1; n <= count; n += 1) {
    const opcode = pick(RANDOM_BINARY_OPCODES);
    const key = opcode === OP.noop ? undefined : pick(keys);
    const value = pick(['', '1', '42', '007', 'x', 'abc', '18446744073709551615']);
    const request = { opcode, key, opaque: n };
    if (RANDOM_BINARY.store.includes(opcode)) {
      const extras = storeExtras(pick([0, 1, 0xdeadbeef]));
      extras.writeUInt32BE(pick([0, 0, 3600]), 4);
      requests.push(binaryRequest({ ...request, extras, value }));
    } else if (RANDOM_BINARY.arith.includes(opcode)) {
      const extras = arithExtras(BigInt(pick([0, 1, 5, 1000])), BigInt(pick([0, 7, 100])), pick([0, 0xffffffff]));
      requests.push(binaryRequest({ ...request, extras }));
    } else if (RANDOM_BINARY.concat.includes(opcode)) {
      requests.push(binaryRequest({ ...request, value }));
    } else if (RANDOM_BINARY.touch.includes(opcode)) {
      requests.push(binaryRequest({ ...request, extras: pick([Buffer.alloc(4), TOUCH_EXTRAS]) }));
    } else {
      requests.push(binaryRequest(request));
    }
  }
  requests.push(binaryRequest({ opcode: OP.noop, opaque: RANDOM_BINARY_END }));
  return Buffer.concat(requests);
}

/** The responses to a random binary pipeline, up to its closing noop; cas as zero or not, values without padding. */
async function playBinaryPipeline(port: number, bytes: Buffer): Promise<string[]> {
  const ended = (received: Buffer): boolean =>
    packetsOf(received).some((packet) => packet.opcode === OP.noop && packet.opaque === RANDOM_BINARY_END);
  return packetsOf(await exchange(port, bytes, ended, 10_000)).map((packet) =>
    [packet.opaque, packet.opcode, packet.status, packet.cas !== 0n, packet.extras.toString('hex'), packet.key, packet.value.toString('latin1').replaceAll(' ', '')].join(' '),
  );
}

const binarySessions: Record<string, BinaryStep[]> = {
  'binary store replies carry the cas a later get and cas use': [
    { opcode: OP.set, key: 'bin-a', extras: storeExtras(3), value: 'x', save: 'a1' },
    { opcode: OP.get, key: 'bin-a' },
    { opcode: OP.set, key: 'bin-a', extras: storeExtras(3), value: 'y', casOf: 'a1', save: 'a2' },
    { opcode: OP.set, key: 'bin-a', extras: storeExtras(3), value: 'z', casOf: 'a1' },
    { opcode: OP.get, key: 'bin-a' },
  ],
  'binary append, prepend and delete with a header cas': [
    { opcode: OP.set, key: 'bin-b', extras: storeExtras(0), value: 'm', save: 'b1' },
    { opcode: OP.append, key: 'bin-b', value: '1', save: 'b2' },
    { opcode: OP.append, key: 'bin-b', value: '2', casOf: 'b1' },
    { opcode: OP.append, key: 'bin-b', value: '3', casOf: 'b2', save: 'b3' },
    { opcode: OP.prepend, key: 'bin-b', value: 'P', casOf: 'b2' },
    { opcode: OP.prepend, key: 'bin-b', value: 'Q', casOf: 'b3', save: 'b4' },
    { opcode: OP.prependq, key: 'bin-b', value: 'R', casOf: 'b3' },
    { opcode: OP.appendq, key: 'bin-b', value: '4', casOf: 'b4' },
    { opcode: OP.get, key: 'bin-b', save: 'b5' },
    { opcode: OP.append, key: 'bin-none', value: '1', casOf: 'b1' },
    { opcode: OP.prepend, key: 'bin-none', value: '1' },
    { opcode: OP.delete, key: 'bin-b', casOf: 'b4' },
    { opcode: OP.deleteq, key: 'bin-b', casOf: 'b4' },
    { opcode: OP.delete, key: 'bin-none', casOf: 'b4' },
    { opcode: OP.get, key: 'bin-b' },
    { opcode: OP.delete, key: 'bin-b', casOf: 'b5' },
    { opcode: OP.get, key: 'bin-b' },
    { opcode: OP.set, key: 'bin-c', extras: storeExtras(0), value: 'c', save: 'c1' },
    { opcode: OP.deleteq, key: 'bin-c', casOf: 'c1' },
    { opcode: OP.set, key: 'bin-d', extras: storeExtras(0), value: 'd' },
    { opcode: OP.delete, key: 'bin-d' },
    { opcode: OP.get, key: 'bin-c' },
  ],
  'binary incr, decr and touch with cas': [
    { opcode: OP.set, key: 'bin-n', extras: storeExtras(5), value: '10', save: 'n1' },
    { opcode: OP.increment, key: 'bin-n', extras: arithExtras(5n, 0n, 0), save: 'n2' },
    { opcode: OP.decrement, key: 'bin-n', extras: arithExtras(1n, 0n, 0), casOf: 'n1' },
    { opcode: OP.decrement, key: 'bin-n', extras: arithExtras(1n, 0n, 0), casOf: 'n2', save: 'n3' },
    { opcode: OP.decrementq, key: 'bin-n', extras: arithExtras(1n, 0n, 0), casOf: 'n2' },
    { opcode: OP.get, key: 'bin-n' },
    { opcode: OP.increment, key: 'bin-new', extras: arithExtras(5n, 7n, 0), casOf: 'n1' },
    { opcode: OP.get, key: 'bin-new' },
    { opcode: OP.increment, key: 'bin-none', extras: arithExtras(5n, 7n, 0xffffffff), casOf: 'n1' },
    { opcode: OP.set, key: 'bin-s', extras: storeExtras(0), value: 'abc', save: 's1' },
    { opcode: OP.increment, key: 'bin-s', extras: arithExtras(1n, 0n, 0), casOf: 'n1' },
    { opcode: OP.increment, key: 'bin-s', extras: arithExtras(1n, 0n, 0), casOf: 's1' },
    { opcode: OP.touch, key: 'bin-n', extras: TOUCH_EXTRAS, casOf: 'n1' },
    { opcode: OP.touch, key: 'bin-none', extras: TOUCH_EXTRAS },
  ],
  'binary stats groups': [
    { opcode: OP.stat, key: 'noreply' },
    { opcode: OP.stat, key: 'nonsense' },
    { opcode: OP.stat, key: 'reset' },
    { opcode: OP.stat, key: 'sizes' },
    { opcode: OP.stat, key: 'detail on' },
    { opcode: OP.stat, key: 'detail off' },
  ],
};

describe.each<Mode>(['linearizability', 'sequential', 'eventual'])('a %s controller answers like memcached', (mode) => {
  let cluster: Cluster;
  let memcached: ChildProcess;
  let memcachedPort: number;
  const memcachedLog = path.join(os.tmpdir(), `mckv-differential-${process.pid}-${mode}.log`);

  beforeAll(async () => {
    memcachedPort = await freePort();
    memcached = await spawnMemcached(memcachedPort, memcachedLog);
    cluster = await Cluster.start({ mode, backend: 'memcache' });
  }, 60_000);

  afterAll(async () => {
    memcached?.kill('SIGTERM');
    rmSync(memcachedLog, { force: true });
    await cluster?.stop();
  });

  it.each(Object.entries(sessions))('%s', async (_name, steps) => {
    const expected = await play(memcachedPort, steps);
    const actual = await play(itemAt(cluster.nodes, 1).clientPort, steps);
    expect(actual).toEqual(expected);
  });

  it.each(Object.entries(binarySessions))('%s', async (_name, steps) => {
    const expected = await playBinary(memcachedPort, steps);
    const actual = await playBinary(itemAt(cluster.nodes, 1).clientPort, steps);
    expect(actual.outcomes).toEqual(expected.outcomes);
    expect(casRelations(actual, steps)).toEqual(casRelations(expected, steps));
  });

  it('a pipelined connection: every read sees exactly the writes sent before it (300 commands in one write, at each node)', async () => {
    for (const [position, node] of cluster.nodes.entries()) {
      const { script, end } = pipelinedScript(`pipe${position}-`, 17 + position, 300);
      const expected = (await exchange(memcachedPort, script, endsAfter(end), 10_000)).toString('latin1');
      const actual = (await exchange(node.clientPort, script, endsAfter(end), 10_000)).toString('latin1');
      expect(actual).toBe(expected);
    }
  });

  it('random text pipelines of every command, malformed lines included: byte for byte as memcached (24 pipelines of 40, at each node)', async () => {
    const masked = (reply: Buffer): string => reply.toString('latin1').replace(/^(VALUE \S+ \d+ \d+) \d+\r\n/gm, '$1 <cas>\r\n');
    for (let round = 0; round < 24; round += 1) {
      const node = itemAt(cluster.nodes, round % cluster.nodes.length);
      const { script, end } = randomTextPipeline(`txt${round}-`, 211 + round, 40);
      const expected = masked(await exchange(memcachedPort, script, endsAfter(end), 10_000));
      const actual = masked(await exchange(node.clientPort, script, endsAfter(end), 10_000));
      expect(actual, `pipeline ${round} at ${node.id}`).toBe(expected);
    }
  });

  it('random binary pipelines, quiet requests included: the same responses as memcached (24 pipelines of 40, at each node)', async () => {
    for (let round = 0; round < 24; round += 1) {
      const node = itemAt(cluster.nodes, round % cluster.nodes.length);
      const bytes = randomBinaryPipeline(`bin${round}-`, 101 + round, 40);
      const expected = await playBinaryPipeline(memcachedPort, bytes);
      const actual = await playBinaryPipeline(node.clientPort, bytes);
      expect(actual, `pipeline ${round} at ${node.id}`).toEqual(expected);
    }
  });

  it("libmemcached's memccapable: its 54 text and binary protocol checks all pass (it flushes the cluster)", async () => {
    const { output, exitCode } = await memccapable(itemAt(cluster.nodes, 2).clientPort);
    expect(output).toContain('All tests passed');
    expect(output).not.toContain('[FAIL]');
    expect(output.match(/\[pass\]/g)).toHaveLength(54);
    expect(exitCode).toBe(0);
  }, 60_000);

  it("stats reset zeroes the controller's counters; items and slabs answer empty, as a memcached that holds nothing", async () => {
    const port = itemAt(cluster.nodes, 0).clientPort;
    const ends = (count: number) => (received: Buffer): boolean => (received.toString('latin1').match(/^END\r\n/gm) ?? []).length >= count;
    const text = async (script: string, endCount: number): Promise<string> => (await exchange(port, script, ends(endCount), 10_000)).toString('latin1');
    expect(await text('get stats-miss\r\nstats\r\n', 2)).toMatch(/STAT cmd_get [1-9]/);
    expect(await text('stats reset\r\nstats\r\n', 1)).toMatch(/^RESET\r\n[^]*STAT cmd_get 0\r\nSTAT cmd_set 0\r\nSTAT get_hits 0\r\nSTAT get_misses 0\r\n/);
    expect(await text('stats items\r\nstats slabs\r\nstats settings\r\n', 3)).toBe('END\r\nEND\r\nEND\r\n');
  });

  it('binary touch: the cas it answers is the one a following get returns', async () => {
    const port = itemAt(cluster.nodes, 1).clientPort;
    const steps: BinaryStep[] = [
      { opcode: OP.set, key: 'bin-t', extras: storeExtras(0), value: 't' },
      { opcode: OP.touch, key: 'bin-t', extras: TOUCH_EXTRAS },
      { opcode: OP.get, key: 'bin-t' },
    ];
    const [set, touch, get] = (await playBinary(port, steps)).cases.map((values) => values[0]);
    expect(touch).not.toBe(0n);
    expect(touch).toBe(get);
    expect(touch).not.toBe(set); // mckv's deviation: a touch is a versioned change
  });
});

/**
 * Runs libmemcached's conformance checker (Debian's libmemcached-tools, which `npm test` installs
 * with memcached) against `port`: a client written by others, with its own idea of memcached.
 */
function memccapable(port: number): Promise<{ output: string; exitCode: number }> {
  return new Promise((resolve, reject) => {
    execFile('memccapable', ['-h', '127.0.0.1', '-p', String(port), '-t', '10'], { timeout: 50_000 }, (error, stdout, stderr) => {
      if (error !== null && (error as NodeJS.ErrnoException).code === 'ENOENT') {
        reject(new Error('memccapable is not installed: apt-get install libmemcached-tools'));
        return;
      }
      resolve({ output: stdout + stderr, exitCode: error === null ? 0 : Number(error.code ?? 1) });
    });
  });
}
