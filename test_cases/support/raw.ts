/**
 * Raw-socket helpers for tests: send bytes to 127.0.0.1:port and collect what comes back until
 * the reply is complete (by a predicate), the server closes, or a deadline passes.
 */

import net from 'node:net';

/** Sends `bytes` and resolves with everything received once `done(received)` or the socket closes. */
export function exchange(
  port: number,
  bytes: string | Buffer,
  done: (received: Buffer) => boolean,
  timeoutMs = 5000,
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let received = Buffer.alloc(0);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no complete reply within ${timeoutMs} ms; got ${JSON.stringify(received.toString('latin1'))}`));
    }, timeoutMs);
    const finish = (): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(received);
    };
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      if (done(received)) finish();
    });
    socket.on('close', finish);
    socket.on('error', finish);
    socket.on('connect', () => socket.write(bytes));
  });
}

/** Done once the reply holds `count` complete final lines (END, STORED, ... anything ending CRLF). */
export function endsAfter(text: string): (received: Buffer) => boolean {
  return (received) => received.toString('latin1').endsWith(text);
}
