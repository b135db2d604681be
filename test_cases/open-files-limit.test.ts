/**
 * A controller whose open-files limit is below connections_max plus what it needs for itself.
 * Clients holding connections up to the limit left it no file to open: the write-ahead file's next
 * compaction failed (EMFILE) and the controller stopped (so a follower did, under
 * `prlimit --nofile=80`, 200 client connections held open and writes through another node). Its
 * client port now takes at most what the limit leaves after the files open at start and a reserve
 * (stats `max_connections`, and a warning at start); one more client is told `ERROR Too many open
 * connections`, as memcached tells it, and the controller compacts and serves on.
 */

import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { Cluster } from '../src/jepsen/cluster.ts';
import { OPEN_FILES_RESERVE } from '../src/runtime/open-files.ts';
import { exchange, endsAfter } from './support/raw.ts';
import { lastLine } from './support/text-request.ts';
import { eventually, sleep } from './support/fault-kit.ts';

const OPEN_FILES_MAX = 220;

let cluster: Cluster | null = null;
const sockets: net.Socket[] = [];

afterEach(async () => {
  for (const socket of sockets.splice(0)) socket.destroy();
  await cluster?.stop();
  cluster = null;
});

/** A connection that has been answered (so the controller accepted it); null if refused or closed. */
function heldConnection(port: number): Promise<{ socket: net.Socket; first: string }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let received = '';
    const timer = setTimeout(() => reject(new Error('no answer within 5 s')), 5000);
    socket.on('error', () => {});
    socket.on('data', (chunk: Buffer) => {
      received += chunk.toString('latin1');
      if (!received.endsWith('\r\n')) return;
      clearTimeout(timer);
      resolve({ socket, first: received.trim() });
    });
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ socket, first: received.trim() });
    });
    socket.on('connect', () => socket.write('version\r\n'));
  });
}

/** The controller's `stats` as a map. */
async function stats(port: number): Promise<Map<string, string>> {
  const reply = (await exchange(port, 'stats\r\n', endsAfter('END\r\n'))).toString('latin1');
  return new Map(reply.split('\r\n').filter((line) => line.startsWith('STAT ')).map((line) => {
    const [, name = '', value = ''] = line.split(' ');
    return [name, value];
  }));
}

describe('a controller with few open files', () => {
  it('takes only the clients its limit leaves room for, and compacts and serves with them all connected', async () => {
    cluster = await Cluster.start({ mode: 'sequential', compactAfterEntries: 100, http: false });
    await cluster.kill('n1');
    await cluster.startController('n1', [], 'sequential', OPEN_FILES_MAX);
    const port = cluster.node('n1').clientPort;
    // Until it knows its leader (after its restart), a write there is refused.
    for (let tries = 0; tries < 100 && (await lastLine(port, 'set ready 0 0 1\r\nx\r\n', 'set')) !== 'STORED'; tries += 1) await sleep(100);

    const max = Number((await stats(port)).get('max_connections'));
    expect(max).toBeGreaterThan(0);
    expect(max).toBeLessThanOrEqual(OPEN_FILES_MAX - OPEN_FILES_RESERVE);
    // Every connection the port takes, held open (stats' own has closed by now).
    for (let index = 0; index < max; index += 1) {
      const held = await heldConnection(port);
      sockets.push(held.socket);
      expect(held.first).toMatch(/^VERSION /);
    }
    const oneMore = await heldConnection(port);
    sockets.push(oneMore.socket);
    expect(oneMore.first).toBe('ERROR Too many open connections');

    // Writes through n2, more than compact_after_entries several times over: n1 applies and compacts them.
    const other = cluster.node('n2').clientPort;
    const batch = Array.from({ length: 350 }, (_, index) => `set fd${index} 0 0 1\r\n${index % 10}\r\n`).join('');
    const stored = (await exchange(other, batch, (received) => received.toString('latin1').split('STORED\r\n').length > 350, 30_000)).toString('latin1');
    expect(stored.split('STORED\r\n').length - 1).toBe(350);

    // n1 is alive and serves through a connection it held all along, and has the last write.
    const first = sockets[0] as net.Socket;
    const answer = await new Promise<string>((resolve, reject) => {
      let received = '';
      const timer = setTimeout(() => reject(new Error(`no reply: ${JSON.stringify(received)}`)), 10_000);
      const ask = (): void => {
        received = '';
        first.write('get fd349\r\n');
      };
      first.removeAllListeners('data');
      first.on('data', (chunk: Buffer) => {
        received += chunk.toString('latin1');
        if (!received.endsWith('\r\n')) return;
        // A follower applies what it is told committed: until then the key may be absent here.
        if (received.includes('VALUE fd349') && received.endsWith('END\r\n')) {
          clearTimeout(timer);
          resolve(received);
        } else if (received.endsWith('END\r\n') || received.startsWith('SERVER_ERROR')) {
          setTimeout(ask, 50);
        }
      });
      ask();
    });
    expect(answer).toContain('VALUE fd349 0 1\r\n9\r\n');
    expect(cluster.node('n1').controller?.exitCode).toBeNull();
    for (const socket of sockets.splice(0)) socket.destroy();
    // The closes reach the controller a moment later (as with memcached): until then it may be full.
    const after = await eventually(() => lastLine(port, 'set after 0 0 1\r\nx\r\n', 'set'), (line) => line === 'STORED', { timeoutMs: 5_000 });
    expect(after.value).toBe('STORED');
  }, 90_000);
});
