/**
 * Ports for the servers the harness starts, and the probes that wait until one answers.
 *
 * A port handed out is below the kernel's ephemeral range, so no outgoing connection can take it
 * between our check and the server's bind. A probe only connects to 127.0.0.1, never throws on a
 * refused or silent connection (it tries again every 50 ms), and gives up at its deadline.
 */

import { readFileSync } from 'node:fs';
import net from 'node:net';

/**
 * Ports handed out for servers a test or run starts: below the kernel's ephemeral range, so an
 * outgoing connection can never take one between our check and the server's bind (a port from
 * `listen(0)` can be), and above the cluster's default ports (8000-8002, 9000-9002, 11201-11203).
 * Each process starts at its own offset and walks forward, so parallel test workers rarely meet.
 */
const allocatedPortMin = 12_000;
const allocatedPortEnd = ephemeralPortLow();
let nextPortCandidate = allocatedPortMin + ((process.pid * 7919) % (allocatedPortEnd - allocatedPortMin));

function ephemeralPortLow(): number {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > allocatedPortMin + 1000 ? low : 32_768;
  } catch {
    return 32_768;
  }
}

function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/** A TCP port on 127.0.0.1 that nothing listens on, outside the ephemeral range (see above). */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 500; attempt++) {
    const port = nextPortCandidate;
    nextPortCandidate = port + 1 >= allocatedPortEnd ? allocatedPortMin : port + 1;
    if (await canBind(port)) return port;
  }
  throw new Error(`no free port between ${allocatedPortMin} and ${allocatedPortEnd} after 500 tries`);
}

/** Resolves once something answers `version` on host:port, or rejects at the deadline. */
export async function waitForMemcachedProtocol(port: number, timeoutMs: number, alive?: () => boolean): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await answersVersion(port)) return;
    if (alive && !alive()) throw new Error(`process for port ${port} exited before answering`);
    if (Date.now() > deadline) throw new Error(`nothing answered on 127.0.0.1:${port} within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * Resolves once a controller serves reads (a get answers END, not SERVER_ERROR: in the ordered
 * modes that needs an elected sequencer), or rejects at the deadline.
 */
export async function waitUntilServing(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() <= deadline) {
    last = await firstReplyLine(port, 'get mckv-probe\r\n');
    if (last === 'END') return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`controller on 127.0.0.1:${port} did not serve within ${timeoutMs} ms (last reply: ${last || 'none'})`);
}

function firstReplyLine(port: number, request: string): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let received = '';
    const done = (line: string): void => {
      socket.destroy();
      resolve(line);
    };
    socket.setTimeout(2000, () => done(''));
    socket.once('error', () => done(''));
    socket.once('connect', () => socket.write(request));
    socket.on('data', (data) => {
      received += data.toString('latin1');
      const end = received.indexOf('\r\n');
      if (end >= 0) done(received.slice(0, end));
    });
  });
}

function answersVersion(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once('error', () => done(false));
    socket.once('connect', () => socket.write('version\r\n'));
    socket.once('data', (data) => done(data.toString('latin1').startsWith('VERSION')));
  });
}
