/**
 * The client-side attacks on the protocol server, each against a ProtocolServer on port 0 with a
 * small in-test handler: a get naming one 1 MiB key 1024 times (streamed value by value, memory
 * bounded, the reply complete for a client that reads), the same get from a client that never
 * reads (no longer read, its output bounded, others served), 1024 idle connections with the idle
 * timeout on (closed; a new client is served), a bulk load of 20,000 pipelined sets on one
 * connection against a slow handler with a small in-flight bound (all STORED, in order), and
 * pipelined large sets queued while the handler held nothing (the run handed over stays within the
 * byte bound).
 */

import { checkStreamedReply } from './support/streamed-reply.ts';
import * as net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { ProtocolServer, type CommandHandler, type ProtocolServerOptions } from '../src/protocol/server.ts';
import { DEFAULT_LIMITS, type Command, type Item, type Reply } from '../src/protocol/types.ts';
import { endsAfter, exchange } from './support/raw.ts';

const MIB = 1024 * 1024;
const servers: ProtocolServer[] = [];
const sockets: net.Socket[] = [];

afterEach(async () => {
  for (const socket of sockets.splice(0)) socket.destroy();
  await Promise.all(servers.splice(0).map((server) => server.close()));
});

async function startServer(
  options: Partial<ProtocolServerOptions> & { handler: CommandHandler },
): Promise<{ server: ProtocolServer; port: number }> {
  const server = new ProtocolServer({ host: '127.0.0.1', port: 0, limits: DEFAULT_LIMITS, ...options });
  servers.push(server);
  return { server, port: await server.listen() };
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    sockets.push(socket);
    socket.once('connect', () => resolve(socket));
    socket.once('error', reject);
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `condition` every 20 ms until it holds or `timeoutMs` passes; returns whether it held. */
async function eventually(condition: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (condition()) return true;
    await sleep(20);
  }
  return condition();
}

/** One 1 MiB value of varied bytes, so a misplaced or truncated piece shows. */
const BIG = Buffer.alloc(MIB, 0);
for (let index = 0; index < BIG.length; index += 1) BIG[index] = (index * 7 + (index >> 12)) % 251;
const COPIES = 1024;
const BIG_GET = `get ${Array.from({ length: COPIES }, () => 'big').join(' ')}\r\n`;

/** A handler holding the one big item; it records the keys each get asks for. */
function bigValueHandler(asked: string[][]): CommandHandler {
  const item: Item = { key: 'big', flags: 0, value: BIG, cas: 1n };
  return (command: Command): Reply => {
    if (command.kind !== 'get') return { kind: 'error' };
    asked.push(command.keys);
    return { kind: 'values', items: command.keys.filter((key) => key === 'big').map(() => item) };
  };
}


describe('a get naming one 1 MiB key 1024 times', () => {
  it('arrives complete and correct, streamed: unsent output and memory stay near outputBytesMax', async () => {
    const asked: string[][] = [];
    const { server, port } = await startServer({ handler: bigValueHandler(asked) });
    expect(Buffer.byteLength(BIG_GET)).toBe(4101);
    const socket = await connect(port);
    const record = Buffer.concat([Buffer.from(`VALUE big 0 ${MIB}\r\n`), BIG, Buffer.from('\r\n')]);
    const baselineBytes = process.memoryUsage().arrayBuffers;
    let peakBytes = baselineBytes;
    let peakUnsent = 0;
    const sampler = setInterval(() => {
      peakBytes = Math.max(peakBytes, process.memoryUsage().arrayBuffers);
      peakUnsent = Math.max(peakUnsent, server.stats().outputBytesUnsent);
    }, 10);
    try {
      const received = checkStreamedReply(socket, record, COPIES, 60_000);
      socket.write(BIG_GET);
      expect(await received).toBe(record.length * COPIES + 5);
    } finally {
      clearInterval(sampler);
    }
    // The key was fetched once; the reply never held more than the limit plus one value unsent.
    expect(asked).toEqual([['big']]);
    expect(peakUnsent).toBeLessThanOrEqual(DEFAULT_LIMITS.outputBytesMax + MIB + 64 * 1024);
    // A flat reply would be 1 GiB; what is left is the sockets' buffers and the reader's garbage.
    expect(peakBytes - baselineBytes).toBeLessThan(256 * MIB);
  }, 90_000);

  it('from a client that never reads: the server stops reading it, its output stays bounded, others are served', async () => {
    const asked: string[][] = [];
    const { server, port } = await startServer({ handler: bigValueHandler(asked) });
    const silent = await connect(port);
    silent.pause();
    for (let index = 0; index < 8; index += 1) silent.write(BIG_GET);
    expect(await eventually(() => server.stats().connectionsPausedByOutput === 1, 10_000)).toBe(true);
    // Time for anything unbounded to show.
    await sleep(500);
    const stats = server.stats();
    expect(stats.outputBytesUnsent).toBeLessThanOrEqual(DEFAULT_LIMITS.outputBytesMax + MIB + 64 * 1024);
    expect(stats.pausesByOutputTotal).toBeGreaterThanOrEqual(1);
    const other = await exchange(port, 'get nothing\r\nversion\r\n', endsAfter('\r\nVERSION 1.6.18-mckv\r\n'), 5000);
    expect(other.toString('latin1')).toBe('END\r\nVERSION 1.6.18-mckv\r\n');
  }, 30_000);
});

describe('idle connections', () => {
  it('1024 idle connections fill connectionsMax, then the idle timeout closes them and a new client is served', async () => {
    const { server, port } = await startServer({
      limits: { ...DEFAULT_LIMITS, connectionsMax: 1024 },
      idleTimeoutMs: 1000,
      handler: () => ({ kind: 'values', items: [] }),
    });
    const idle: net.Socket[] = [];
    for (let batch = 0; batch < 8; batch += 1) idle.push(...(await Promise.all(Array.from({ length: 128 }, () => connect(port)))));
    const closed = idle.map((socket) => new Promise<void>((resolve) => socket.once('close', () => resolve())));
    for (const socket of idle) socket.on('error', () => undefined);
    expect(await eventually(() => server.stats().connectionsCurrent === 1024, 5000)).toBe(true);
    // Past the limit a client is told so, as memcached tells it, and closed.
    const refused = await exchange(port, 'version\r\n', () => false, 5000);
    expect(refused.toString('latin1')).toBe('ERROR Too many open connections\r\n');
    await Promise.race([Promise.all(closed), sleep(10_000)]);
    expect(idle.every((socket) => socket.destroyed || socket.readableEnded)).toBe(true);
    expect(server.stats().connectionsClosedIdle).toBe(1024);
    const served = await exchange(port, 'get k\r\n', endsAfter('END\r\n'), 5000);
    expect(served.toString('latin1')).toBe('END\r\n');
  }, 30_000);

  it('a connection waiting for a slow reply is not idle', async () => {
    const { port } = await startServer({
      idleTimeoutMs: 200,
      handler: async () => {
        await sleep(800);
        return { kind: 'values', items: [] };
      },
    });
    const reply = await exchange(port, 'get slow\r\n', endsAfter('END\r\n'), 5000);
    expect(reply.toString('latin1')).toBe('END\r\n');
  });
});

describe('a bulk loader pipelining 20,000 sets on one connection', () => {
  it('with requestsInFlightMax 16 and a slow handler: every set is answered STORED, in order, none refused', async () => {
    const requestsInFlightMax = 16;
    const storedKeys: string[] = [];
    let peakInFlight = 0;
    let server: ProtocolServer | null = null;
    const started = await startServer({
      limits: { ...DEFAULT_LIMITS, requestsInFlightMax },
      handlerKeepsOrder: true,
      handler: async (command: Command): Promise<Reply> => {
        peakInFlight = Math.max(peakInFlight, server?.stats().requestsInFlight ?? 0);
        if (command.kind !== 'store') return { kind: 'error' };
        storedKeys.push(command.key);
        await sleep(1);
        return { kind: 'stored' };
      },
    });
    server = started.server;
    const count = 20_000;
    const sets = Array.from({ length: count }, (_, index) => `set key:${index} 0 0 5\r\nvalue\r\n`);
    const load = Buffer.from(sets.join(''));
    const expected = 'STORED\r\n'.repeat(count);
    const reply = await exchange(started.port, load, (received) => received.length >= expected.length, 60_000);
    expect(reply.toString('latin1')).toBe(expected);
    expect(storedKeys).toEqual(sets.map((_, index) => `key:${index}`));
    const stats = server.stats();
    expect(stats.pausesByInFlightTotal).toBeGreaterThan(0);
    // Requests decoded ahead are bounded by the limit plus what one read of the socket holds.
    const shortestSetBytes = Math.min(...sets.map((set) => set.length));
    expect(peakInFlight).toBeLessThanOrEqual(requestsInFlightMax + Math.ceil((64 * 1024) / shortestSetBytes));
    expect(stats.requestsInFlight).toBe(0);
  }, 90_000);
});

describe('eight bulk loaders at once, each pipelining 2,000 sets', () => {
  it('the handler never holds more than serverRequestsInFlightMax of them: every set is answered STORED, none refused', async () => {
    const serverRequestsInFlightMax = 64;
    const loaders = 8;
    let atHandler = 0;
    let peakAtHandler = 0;
    let server: ProtocolServer | null = null;
    const started = await startServer({
      limits: { ...DEFAULT_LIMITS, serverRequestsInFlightMax },
      handlerKeepsOrder: true,
      handler: async (command: Command): Promise<Reply> => {
        atHandler += 1;
        peakAtHandler = Math.max(peakAtHandler, atHandler);
        try {
          if (command.kind !== 'store') return { kind: 'error' };
          await sleep(1);
          return { kind: 'stored' };
        } finally {
          atHandler -= 1;
        }
      },
    });
    server = started.server;
    const count = 2000;
    const replies = await Promise.all(
      Array.from({ length: loaders }, (_, loader) => {
        const load = Buffer.from(Array.from({ length: count }, (_, index) => `set l${loader}:${index} 0 0 5\r\nvalue\r\n`).join(''));
        const expected = 'STORED\r\n'.repeat(count);
        return exchange(started.port, load, (received) => received.length >= expected.length, 60_000).then((reply) => reply.toString('latin1') === expected);
      }),
    );
    expect(replies).toEqual(Array.from({ length: loaders }, () => true));
    // The bound, plus at most one lone request per connection (answered without the run loop).
    expect(peakAtHandler).toBeLessThanOrEqual(serverRequestsInFlightMax + loaders);
    expect(peakAtHandler).toBeGreaterThan(serverRequestsInFlightMax / 2);
    expect(server.stats().requestsInFlight).toBe(0);
  }, 90_000);
});

/**
 * A server whose handler stores after 2 ms (the first store after `firstMs`), counting the bytes
 * of the requests it holds: `peakBytes` is the most it held at once.
 */
async function startBytesCountingServer(
  bytesMax: number,
  firstMs: number,
): Promise<{ started: { server: ProtocolServer; port: number }; peakBytes: () => number }> {
  let bytesAtHandler = 0;
  let peak = 0;
  let first = true;
  const started = await startServer({
    limits: { ...DEFAULT_LIMITS, serverRequestBytesInFlightMax: bytesMax },
    handlerKeepsOrder: true,
    handler: async (command: Command): Promise<Reply> => {
      if (command.kind !== 'store') return { kind: 'error' };
      const bytes = command.value.length + command.key.length;
      bytesAtHandler += bytes;
      peak = Math.max(peak, bytesAtHandler);
      try {
        await sleep(first ? firstMs : 2);
        first = false;
        return { kind: 'stored' };
      } finally {
        bytesAtHandler -= bytes;
      }
    },
  });
  return { started, peakBytes: () => peak };
}

describe('four loaders pipelining 1 MiB values', () => {
  it('the handler never holds more than serverRequestBytesInFlightMax of them: every set is answered STORED', async () => {
    const bytesMax = 3 * 1024 * 1024;
    const valueBytes = 1024 * 1024;
    const loaders = 4;
    const { started, peakBytes } = await startBytesCountingServer(bytesMax, 2);
    const count = 12;
    const value = 'v'.repeat(valueBytes);
    const replies = await Promise.all(
      Array.from({ length: loaders }, (_, loader) => {
        const load = Buffer.from(Array.from({ length: count }, (_, index) => `set l${loader}:${index} 0 0 ${valueBytes}\r\n${value}\r\n`).join(''));
        const expected = 'STORED\r\n'.repeat(count);
        return exchange(started.port, load, (received) => received.length >= expected.length, 60_000).then((reply) => reply.toString('latin1') === expected);
      }),
    );
    expect(replies).toEqual(Array.from({ length: loaders }, () => true));
    // Within the bound: no connection's request, lone or pipelined, goes past it.
    expect(peakBytes()).toBeLessThanOrEqual(bytesMax);
    expect(peakBytes()).toBeGreaterThanOrEqual(2 * valueBytes);
    expect(started.server.stats().requestsInFlight).toBe(0);
  }, 90_000);
});

describe('a pipelined run handed over while the handler holds nothing', () => {
  it('stays within serverRequestBytesInFlightMax beyond its first request', async () => {
    const valueBytes = 256 * 1024;
    const count = 8;
    const bytesMax = 3 * valueBytes;
    // The first set is held until the rest of the load has queued behind it.
    const { started, peakBytes } = await startBytesCountingServer(bytesMax, 300);
    const value = 'v'.repeat(valueBytes);
    const load = Buffer.from(Array.from({ length: count }, (_, index) => `set k${index} 0 0 ${valueBytes}\r\n${value}\r\n`).join(''));
    const expected = 'STORED\r\n'.repeat(count);
    const reply = await exchange(started.port, load, (received) => received.length >= expected.length, 30_000);
    expect(reply.toString('latin1')).toBe(expected);
    expect(peakBytes()).toBeLessThanOrEqual(bytesMax);
    expect(peakBytes()).toBeGreaterThanOrEqual(2 * valueBytes);
  }, 60_000);
});
