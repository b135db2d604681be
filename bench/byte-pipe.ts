/**
 * A Node process that only relays bytes: every client connection gets its own connection to one
 * memcached, and bytes are piped both ways untouched. The benchmark runs three of them, one per
 * memcached, as a yardstick: what any front of three Node processes costs on this machine before
 * it does anything at all (no parsing, no replication, no cache).
 *
 * Usage: node --import tsx bench/byte-pipe.ts LISTEN_PORT MEMCACHED_PORT (127.0.0.1 only).
 * It prints "listening" once it accepts connections and runs until it is signalled.
 */

import net from 'node:net';

function parsePort(text: string | undefined): number | null {
  const port = Number(text);
  return Number.isInteger(port) && port > 0 && port < 65536 ? port : null;
}

const listenPort = parsePort(process.argv[2]);
const backendPort = parsePort(process.argv[3]);
if (listenPort === null || backendPort === null) {
  console.error('usage: byte-pipe.ts LISTEN_PORT MEMCACHED_PORT');
  process.exit(2);
}

const server = net.createServer((client) => {
  client.setNoDelay(true);
  const backend = net.connect({ host: '127.0.0.1', port: backendPort, noDelay: true });
  client.pipe(backend);
  backend.pipe(client);
  const close = (): void => {
    client.destroy();
    backend.destroy();
  };
  client.on('error', close);
  backend.on('error', close);
  client.on('close', close);
  backend.on('close', close);
});

server.on('error', (error) => {
  console.error(`byte-pipe: ${error.message}`);
  process.exit(1);
});
server.listen(listenPort, '127.0.0.1', () => console.log('listening'));
for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => process.exit(0));
