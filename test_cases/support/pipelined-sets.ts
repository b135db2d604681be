/**
 * A bulk loader's load in one go: many sets written at once on one connection, their replies
 * counted as they come. For tests that need many acknowledged writes quickly.
 */

import net from 'node:net';

/** The value `pipelinedSets` stores under its `index`th key: 8 digits. */
export function pipelinedValue(index: number): string {
  return String(index).padStart(8, '0');
}

/** Sends `count` pipelined sets of `${prefix}${i}` to `port`; resolves once every one was answered STORED. */
export function pipelinedSets(port: number, count: number, prefix: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let stored = 0;
    let tail = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`only ${stored} of ${count} sets stored within 30 s`));
    }, 30_000);
    socket.on('error', reject);
    socket.on('data', (chunk: Buffer) => {
      const lines = (tail + chunk.toString('latin1')).split('\r\n');
      tail = lines.pop() ?? '';
      for (const line of lines) {
        if (line !== 'STORED') {
          clearTimeout(timer);
          socket.destroy();
          reject(new Error(`set answered ${line}`));
          return;
        }
        stored += 1;
      }
      if (stored === count) {
        clearTimeout(timer);
        socket.end();
        resolve();
      }
    });
    const requests: string[] = [];
    for (let index = 0; index < count; index++) requests.push(`set ${prefix}${index} 0 0 8\r\n${pipelinedValue(index)}\r\n`);
    socket.write(requests.join(''));
  });
}
