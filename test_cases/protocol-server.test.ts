/**
 * ProtocolServer over real TCP sockets on port 0, with a small in-test handler (a Map): ordering,
 * pipelining, quit, noreply, the memjs binary client, and the bad-input list — after each bad
 * input, another client still works.
 */

import * as net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import memjs from 'memjs';
import { TextClient } from '../src/client/text-client.ts';
import { ProtocolServer } from '../src/protocol/server.ts';
import type { CommandHandler } from '../src/protocol/server.ts';
import { DEFAULT_LIMITS } from '../src/protocol/types.ts';
import type { Command, Item, Reply } from '../src/protocol/types.ts';
import { itemAt } from '../src/runtime/item-at.ts';

const LIMITS = { ...DEFAULT_LIMITS, valueBytesMax: 64 * 1024, lineBytesMax: 2048, outputBytesMax: 1024 * 1024 };

/** A tiny memcached over a Map; `slow:` keys answer after a delay to expose ordering bugs. */
function fakeHandler(): CommandHandler {
  const items = new Map<string, Item>();
  let casNext = 1n;
  return async (command: Command): Promise<Reply> => {
    switch (command.kind) {
      case 'get':
      case 'gat': {
        if (command.keys.some((key) => key.startsWith('slow:'))) await new Promise((resolve) => setTimeout(resolve, 30));
        if (command.keys.includes('boom')) throw new Error('backend exploded\n    at secret (stack.ts:1:1)');
        return { kind: 'values', items: command.keys.flatMap((key) => items.get(key) ?? []) };
      }
      case 'store': {
        const old = items.get(command.key);
        if (command.verb === 'add' && old) return { kind: 'not_stored' };
        if (command.verb === 'cas' && old?.cas !== command.casUnique) return old ? { kind: 'exists' } : { kind: 'not_found' };
        items.set(command.key, { key: command.key, flags: command.flags, value: command.value, cas: casNext++ });
        return { kind: 'stored' };
      }
      case 'delete':
        return items.delete(command.key) ? { kind: 'deleted' } : { kind: 'not_found' };
      case 'arith': {
        const old = items.get(command.key);
        if (!old) {
          if (command.initial === null) return { kind: 'not_found' };
          items.set(command.key, { key: command.key, flags: 0, value: Buffer.from(String(command.initial)), cas: casNext++ });
          return { kind: 'number', value: command.initial };
        }
        const current = BigInt(old.value.toString());
        const next = command.verb === 'incr' ? BigInt.asUintN(64, current + command.delta) : current > command.delta ? current - command.delta : 0n;
        items.set(command.key, { ...old, value: Buffer.from(next.toString()), cas: casNext++ });
        return { kind: 'number', value: next };
      }
      case 'stats':
        return { kind: 'stats', stats: [['curr_items', String(items.size)]] };
      case 'show':
        return { kind: 'text', lines: ['fake handler'] };
      default:
        return { kind: 'ok' };
    }
  };
}

let server: ProtocolServer;
let port: number;

beforeAll(async () => {
  server = new ProtocolServer({ host: '127.0.0.1', port: 0, limits: LIMITS, handler: fakeHandler() });
  port = await server.listen();
});

afterAll(async () => {
  await server.close();
});

/** A raw client: send bytes, collect what comes back until `done` says so, the socket closes, or a timeout. */
async function exchange(
  bytes: Buffer | string,
  done: (received: Buffer) => boolean,
  timeoutMs = 3000,
): Promise<{ received: Buffer; closed: boolean }> {
  const socket = net.connect(port, '127.0.0.1');
  const chunks: Buffer[] = [];
  return new Promise((resolve, reject) => {
    const finish = (closed: boolean): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ received: Buffer.concat(chunks), closed });
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    socket.on('data', (chunk) => {
      chunks.push(chunk);
      if (done(Buffer.concat(chunks))) finish(false);
    });
    socket.on('close', () => finish(true));
    socket.on('error', (error) => { clearTimeout(timer); reject(error); });
    socket.write(bytes);
  });
}

/** What `socket` receives until it holds `lines` complete lines (CRLF-terminated). */
function receiveLines(socket: net.Socket, lines: number): Promise<string> {
  return new Promise((resolve) => {
    let text = '';
    socket.on('data', (chunk) => {
      text += chunk.toString();
      if (text.split('\r\n').length > lines) resolve(text);
    });
  });
}

const endsWith = (suffix: string) => (received: Buffer): boolean => received.toString('latin1').endsWith(suffix);

/** Starts `server`, sends `bytes` on one connection, returns what came back once it ends with `suffix`, closes it. */
async function pipelineThrough(server: ProtocolServer, bytes: string, suffix: string): Promise<string> {
  const port = await server.listen();
  try {
    const socket = net.connect(port, '127.0.0.1');
    const received = await new Promise<string>((resolve) => {
      let text = '';
      socket.on('data', (chunk) => { text += chunk.toString(); if (text.endsWith(suffix)) resolve(text); });
      socket.write(bytes);
    });
    socket.destroy();
    return received;
  } finally {
    await server.close();
  }
}

/** The reply to a get of `key` from the in-test handlers below: one value, `v`. */
const oneValue = (key: string): Reply => ({ kind: 'values', items: [{ key, flags: 0, value: Buffer.from('v'), cas: 1n }] });

async function textRoundTrip(bytes: string, suffix: string): Promise<string> {
  return (await exchange(bytes, endsWith(suffix))).received.toString('latin1');
}

/** After bad input elsewhere, a fresh client still gets served. */
async function anotherClientWorks(): Promise<void> {
  const key = `probe${Math.random().toString(36).slice(2)}`;
  expect(await textRoundTrip(`set ${key} 0 0 2\r\nok\r\nget ${key}\r\n`, 'END\r\n')).toBe(`STORED\r\nVALUE ${key} 0 2\r\nok\r\nEND\r\n`);
}

describe('ProtocolServer: text', () => {
  it('serves set/get/gets/delete/incr and pipelined requests in order', async () => {
    const reply = await textRoundTrip('set a 3 0 1\r\n1\r\nget slow:x a\r\nincr a 41\r\ngets a\r\ndelete a\r\ndelete a\r\nversion\r\n', 'VERSION 1.6.18-mckv\r\n');
    expect(reply).toBe('STORED\r\nVALUE a 3 1\r\n1\r\nEND\r\n42\r\nVALUE a 3 2 2\r\n42\r\nEND\r\nDELETED\r\nNOT_FOUND\r\nVERSION 1.6.18-mckv\r\n');
  });

  it('executes one command at a time: a slow reply still precedes the next command', async () => {
    let active = 0;
    let maxActive = 0;
    const ordered = new ProtocolServer({
      host: '127.0.0.1', port: 0, limits: LIMITS,
      handler: async (command) => {
        active++;
        maxActive = Math.max(maxActive, active);
        await new Promise((resolve) => setTimeout(resolve, command.kind === 'get' && command.keys[0] === 'slow' ? 20 : 1));
        active--;
        return command.kind === 'get' ? { kind: 'values', items: [] } : { kind: 'stored' };
      },
    });
    const orderedPort = await ordered.listen();
    try {
      const socket = net.connect(orderedPort, '127.0.0.1');
      const receiving = receiveLines(socket, 6);
      socket.write('get slow\r\nset k 0 0 1\r\nx\r\nget slow\r\nset k 0 0 1\r\nx\r\nget fast\r\nset k 0 0 1\r\nx\r\n');
      const received = await receiving;
      socket.destroy();
      expect(received).toBe('END\r\nSTORED\r\nEND\r\nSTORED\r\nEND\r\nSTORED\r\n');
      expect(maxActive).toBe(1);
      expect(ordered.stats().commandsTotal).toBe(6);
    } finally {
      await ordered.close();
    }
  });

  it('keeps order when a lone request is answered late and the next ones arrive while it waits', async () => {
    let active = 0;
    let maxActive = 0;
    const ordered = new ProtocolServer({
      host: '127.0.0.1', port: 0, limits: LIMITS,
      handler: (command) => {
        if (command.kind !== 'get' || command.keys[0] !== 'slow') return { kind: 'stored' }; // answered at once
        active++;
        maxActive = Math.max(maxActive, active);
        return new Promise((resolve) => setTimeout(() => { active--; resolve({ kind: 'values', items: [] }); }, 30));
      },
    });
    const orderedPort = await ordered.listen();
    try {
      const socket = net.connect(orderedPort, '127.0.0.1');
      const receiving = receiveLines(socket, 4);
      socket.write('get slow\r\n'); // alone in its chunk, answered late
      setTimeout(() => socket.write('set k 0 0 1\r\nx\r\n'), 5); // arrives while it waits
      setTimeout(() => socket.write('get slow\r\nset k 0 0 1\r\nx\r\n'), 10);
      const received = await receiving;
      socket.destroy();
      expect(received).toBe('END\r\nSTORED\r\nEND\r\nSTORED\r\n');
      expect(maxActive).toBe(1);
    } finally {
      await ordered.close();
    }
  });

  it('hands a pipelined run of reads over together, answers in order, and holds the next write until they settle', async () => {
    const events: string[] = [];
    let active = 0;
    let maxActive = 0;
    const pipelined = new ProtocolServer({
      host: '127.0.0.1', port: 0, limits: LIMITS,
      handler: async (command) => {
        const name = command.kind === 'get' ? `get ${command.keys[0]}` : command.kind;
        events.push(`start ${name}`);
        active++;
        maxActive = Math.max(maxActive, active);
        await new Promise((resolve) => setTimeout(resolve, command.kind === 'get' && command.keys[0] === 'slow' ? 30 : 1));
        active--;
        events.push(`end ${name}`);
        return command.kind === 'get' ? oneValue(itemAt(command.keys, 0)) : { kind: 'stored' };
      },
    });
    const received = await pipelineThrough(pipelined, 'get slow\r\nget a\r\nget b\r\nset k 0 0 1\r\nx\r\n', 'STORED\r\n');
    expect(received).toBe('VALUE slow 0 1\r\nv\r\nEND\r\nVALUE a 0 1\r\nv\r\nEND\r\nVALUE b 0 1\r\nv\r\nEND\r\nSTORED\r\n');
    expect(maxActive).toBe(3);
    expect(events.slice(0, 3)).toEqual(['start get slow', 'start get a', 'start get b']);
    expect(events.indexOf('start store')).toBeGreaterThan(events.indexOf('end get slow'));
  });

  it('with a handler that keeps the connection order, hands reads and writes over in one run; replies stay in order', async () => {
    const started: string[] = [];
    const pipelined = new ProtocolServer({
      host: '127.0.0.1', port: 0, limits: LIMITS, handlerKeepsOrder: true,
      handler: async (command) => {
        const name = command.kind === 'get' ? `get ${command.keys[0]}` : command.kind;
        started.push(name);
        // The write is the slowest: without one run, nothing after it would start before it ends.
        await new Promise((resolve) => setTimeout(resolve, command.kind === 'get' ? 1 : 30));
        started.push(`end ${name}`);
        if (command.kind === 'flush_all') return { kind: 'ok' };
        return command.kind === 'get' ? oneValue(itemAt(command.keys, 0)) : { kind: 'stored' };
      },
    });
    const received = await pipelineThrough(pipelined, 'get a\r\nset k 0 0 1\r\nx\r\nget b\r\nflush_all\r\nset k 0 0 1\r\ny\r\n', 'OK\r\nSTORED\r\n');
    expect(received).toBe('VALUE a 0 1\r\nv\r\nEND\r\nSTORED\r\nVALUE b 0 1\r\nv\r\nEND\r\nOK\r\nSTORED\r\n');
    // get, set and get went together; flush_all (a command of its own) waited for them, and the
    // last set for it.
    expect(started.filter((event) => !event.startsWith('end '))).toEqual(['get a', 'store', 'get b', 'flush_all', 'store']);
    expect(started.indexOf('get b')).toBeLessThan(started.indexOf('end store'));
    expect(started.indexOf('flush_all')).toBeGreaterThan(started.lastIndexOf('end get b'));
    expect(started.lastIndexOf('store')).toBeGreaterThan(started.indexOf('end flush_all'));
  });

  it('tells a connection over connectionsMax so and closes it, and takes new ones once others left', async () => {
    const small = new ProtocolServer({ host: '127.0.0.1', port: 0, limits: { ...LIMITS, connectionsMax: 2 }, handler: fakeHandler() });
    const port = await small.listen();
    const open = (): Promise<net.Socket> =>
      new Promise((resolve) => {
        const socket = net.connect(port, '127.0.0.1', () => resolve(socket));
      });
    const reply = (socket: net.Socket, request: string): Promise<string> =>
      new Promise((resolve) => {
        let text = '';
        socket.on('data', (chunk) => { text += chunk.toString(); if (text.endsWith('\r\n')) resolve(text); });
        socket.on('close', () => resolve(text));
        if (request !== '') socket.write(request);
      });
    try {
      const [first, second] = [await open(), await open()];
      expect(await reply(first, 'version\r\n')).toMatch(/^VERSION/);
      const third = await open();
      expect(await reply(third, '')).toBe('ERROR Too many open connections\r\n');
      expect(await reply(second, 'version\r\n')).toMatch(/^VERSION/);
      first.destroy();
      await new Promise((resolve) => setTimeout(resolve, 50));
      const fourth = await open();
      expect(await reply(fourth, 'version\r\n')).toMatch(/^VERSION/);
      for (const socket of [second, third, fourth]) socket.destroy();
    } finally {
      await small.close();
    }
  });

  it('sends nothing for noreply, closes on quit after earlier replies', async () => {
    expect(await textRoundTrip('set n 0 0 1 noreply\r\nx\r\ndelete n noreply\r\nget n\r\n', 'END\r\n')).toBe('END\r\n');
    const { received, closed } = await exchange('get n\r\nquit\r\nget n\r\n', () => false);
    expect(received.toString()).toBe('END\r\n');
    expect(closed).toBe(true);
  });

  it('answers a client that half-closes right after sending', async () => {
    const socket = net.connect(port, '127.0.0.1');
    const received = await new Promise<string>((resolve) => {
      let text = '';
      socket.on('data', (chunk) => { text += chunk.toString(); });
      socket.on('close', () => resolve(text));
      socket.end('get slow:1\r\nstats\r\nshow\r\n');
    });
    expect(received).toMatch(/^END\r\nSTAT curr_items \d+\r\nEND\r\nfake handler\r\nEND\r\n$/);
  });

  it('turns a failing handler into SERVER_ERROR without a stack trace', async () => {
    const reply = await textRoundTrip('get boom\r\nget nothing\r\n', 'END\r\n');
    expect(reply).toBe('SERVER_ERROR backend exploded\r\nEND\r\n');
  });
});

describe('TextClient (ours) pipelines', () => {
  it('requests sent together each get their own reply, in order, the slow one included', async () => {
    const client = await TextClient.connect('127.0.0.1', port);
    try {
      const replies = await Promise.all([
        client.request('set slow:tc 0 0 1\r\na\r\n', 'set'),
        client.request('get slow:tc\r\n', 'get'),
        client.request('set tc2 0 0 2\r\nbb\r\n', 'set'),
        client.request('get slow:tc tc2\r\n', 'get'),
      ]);
      expect(replies.map((reply) => reply.lines[reply.lines.length - 1])).toEqual(['STORED', 'END', 'STORED', 'END']);
      expect(replies[1].values.map((value) => value.value.toString())).toEqual(['a']);
      expect(replies[3].values.map((value) => value.value.toString())).toEqual(['a', 'bb']);
    } finally {
      client.close();
    }
  });

  it('a request that times out fails the ones behind it, which never take its late reply for theirs', async () => {
    const client = await TextClient.connect('127.0.0.1', port);
    try {
      // The slow get answers after 30 ms; it gives up after 5.
      const slow = client.request('get slow:late\r\n', 'get', 5);
      const next = client.request('set late2 0 0 1\r\nz\r\n', 'set', 1000);
      await expect(slow).rejects.toThrow(/timed out/);
      await expect(next).rejects.toThrow(/abandoned after an earlier request failed/);
      await expect(client.request('get late2\r\n', 'get', 1000)).rejects.toThrow(/abandoned/);
    } finally {
      client.close();
    }
  });
});

describe('ProtocolServer: binary via memjs', () => {
  it('set/get/delete/incr work with the real memjs client', async () => {
    const client = memjs.Client.create(`127.0.0.1:${port}`, { retries: 0, timeout: 2, logger: { log: () => undefined } });
    try {
      expect(await client.set('mj', 'hello', { expires: 0 })).toBe(true);
      const { value } = await client.get('mj');
      expect(value?.toString()).toBe('hello');
      expect((await client.get('mj-missing')).value).toBeNull();
      expect(await client.add('mj', 'again', {})).toBe(false);
      expect(await client.delete('mj')).toBe(true);
      expect(await client.delete('mj')).toBe(false);
      const created = await client.increment('mj-n', 5, { initial: 10 });
      expect(created.success).toBe(true);
      const stepped = await client.increment('mj-n', 5, {});
      expect(stepped.success).toBe(true);
      expect((await client.get('mj-n')).value?.toString()).toBe('15');
      const stats = await new Promise<Record<string, string> | null>((resolve) => {
        client.stats((_error, _server, values) => resolve(values));
      });
      expect(stats).toMatchObject({ curr_items: expect.any(String) });
    } finally {
      client.close();
    }
  });
});

describe('ProtocolServer: bad input', () => {
  const cases: Array<[string, string | Buffer, RegExp]> = [
    ['a key over 250 bytes', `get ${'k'.repeat(251)}\r\n`, /^CLIENT_ERROR bad command line format\r\n$/],
    ['a key with control characters', 'set a\x01b 0 0 1\r\nx\r\n', /^CLIENT_ERROR bad command line format\r\nERROR\r\n$/],
    ['an unknown command', 'frobnicate\r\n', /^ERROR\r\n$/],
    ['a bad number', 'set k abc 0 1\r\nx\r\n', /^CLIENT_ERROR bad command line format\r\nERROR\r\n$/],
    ['a data block of the wrong length', 'set k 0 0 1\r\nxyz\r\n', /^CLIENT_ERROR bad data chunk\r\nERROR\r\n$/],
    ['a value over the limit', `set big 0 0 70000\r\n${'v'.repeat(70000)}\r\nget big\r\n`, /^SERVER_ERROR object too large for cache\r\nEND\r\n$/],
  ];
  for (const [name, bytes, expected] of cases) {
    it(`answers ${name} and keeps serving`, async () => {
      const reply = await exchange(bytes, (received) => expected.test(received.toString('latin1')));
      expect(reply.received.toString('latin1')).toMatch(expected);
      await anotherClientWorks();
    });
  }

  it('closes on a line over the limit with no newline', async () => {
    const { received, closed } = await exchange('x'.repeat(5000), () => false);
    expect(received.toString()).toBe('CLIENT_ERROR line too long\r\n');
    expect(closed).toBe(true);
    await anotherClientWorks();
  });

  it('closes on binary garbage and on a bad binary shape', async () => {
    const garbage = Buffer.concat([Buffer.from([0x80, 0x00, 0x00, 0x00]), Buffer.alloc(20, 0xff)]);
    const first = await exchange(garbage, () => false);
    expect(first.closed).toBe(true);
    expect(first.received.readUInt16BE(6)).toBe(4);
    const magicless = await exchange(Buffer.concat([Buffer.from([0x80, 0x0a]), Buffer.alloc(22), Buffer.alloc(30, 0x42)]), () => false);
    expect(magicless.closed).toBe(true);
    expect(magicless.received.readUInt16BE(6)).toBe(0);
    await anotherClientWorks();
  });

  it('stops reading a client that never reads its replies; its unsent output stays bounded', async () => {
    const value = 'v'.repeat(60000);
    expect(await textRoundTrip(`set fat 0 0 ${value.length}\r\n${value}\r\n`, 'STORED\r\n')).toBe('STORED\r\n');
    const socket = net.connect(port, '127.0.0.1');
    socket.pause();
    socket.on('error', () => undefined);
    const request = Buffer.from('get fat fat fat fat\r\n'.repeat(50));
    const deadline = Date.now() + 10_000;
    let sentBytes = 0;
    let stuckSinceMs = Date.now();
    // The client keeps 1 MiB in its own buffer until that stops moving: the server no longer reads.
    while (Date.now() < deadline && Date.now() - stuckSinceMs < 500) {
      if (socket.writableLength < 1024 * 1024) {
        socket.write(request);
        sentBytes += request.length;
        stuckSinceMs = Date.now();
      } else {
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    }
    expect(Date.now() - stuckSinceMs).toBeGreaterThanOrEqual(500);
    expect(sentBytes).toBeLessThan(64 * 1024 * 1024);
    const stats = server.stats();
    expect(stats.connectionsPausedByOutput).toBeGreaterThanOrEqual(1);
    // One reply is four 60 kB values; the limit may be passed by at most one part of one.
    expect(stats.outputBytesUnsent).toBeLessThanOrEqual(LIMITS.outputBytesMax + 70_000);
    await anotherClientWorks();
    socket.destroy();
  });
});
