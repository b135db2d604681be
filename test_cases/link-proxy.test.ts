/**
 * The fault runner's peer-link proxy: bytes pass through, a cut drops the link, and a slow link
 * delivers every byte late but in the order it was sent, also when the delay shrinks meanwhile
 * (a later chunk with a shorter delay must not overtake an earlier one: that would corrupt the
 * peer stream instead of slowing it).
 */

import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { LinkProxy } from '../src/jepsen/proxy.ts';
import { sleep } from './support/fault-kit.ts';
import { itemAt } from '../src/runtime/item-at.ts';

let cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const step of cleanup.reverse()) await step();
  cleanup = [];
});

/** A server that records what it receives; a proxy in front of it; a client connected through it. */
async function setUp(): Promise<{ proxy: LinkProxy; client: net.Socket; received: () => string; receivedAt: number[] }> {
  let text = '';
  const receivedAt: number[] = [];
  const server = net.createServer((socket) => socket.on('data', (chunk: Buffer) => {
    text += chunk.toString();
    receivedAt.push(performance.now());
  }));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const proxy = new LinkProxy('a->b', { host: '127.0.0.1', port: (server.address() as net.AddressInfo).port });
  const port = await proxy.listen();
  const client = net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve) => client.once('connect', () => resolve()));
  cleanup.push(() => new Promise<void>((resolve) => server.close(() => resolve())), () => proxy.close(), () => {
    client.destroy();
  });
  return { proxy, client, received: () => text, receivedAt };
}

describe('the peer-link proxy', () => {
  it('passes bytes at once when healthy, and late but in order when slow, also as the delay shrinks', async () => {
    const { proxy, client, received, receivedAt } = await setUp();
    client.write('a');
    await sleep(50);
    expect(received()).toBe('a');

    proxy.slow(300);
    const slowSentAt = performance.now();
    client.write('b');
    await sleep(20);
    proxy.slow(0); // 'c' may go at once, yet not before 'b'
    client.write('c');
    await sleep(100);
    expect(received()).toBe('a');
    await sleep(400);
    expect(received()).toBe('abc');
    expect(itemAt(receivedAt, 1) - slowSentAt).toBeGreaterThanOrEqual(290);

    client.write('d');
    await sleep(50);
    expect(received()).toBe('abcd');
  });

  it('ends the delay on heal', async () => {
    const { proxy, client, received } = await setUp();
    proxy.slow(5000);
    proxy.heal();
    client.write('x');
    await sleep(100);
    expect(received()).toBe('x');
  });
});
