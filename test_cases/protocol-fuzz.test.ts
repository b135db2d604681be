/**
 * Client bytes are never a programmer error: a seeded fuzz of both protocols
 * (./support/client-fuzz.ts) over real sockets into a ProtocolServer. What must hold: the server never throws; every command it hands the
 * handler becomes an op the replicated log's peers accept (src/store/op-rules.ts), so no client can
 * make a controller replicate what its peers would drop; and afterwards, with every fuzzing
 * connection gone, nothing is left in flight and a fresh client is served as before. With logins
 * on, nothing a connection sends before it logs in reaches the handler, and after a login the
 * fuzz does.
 */

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TextClient } from '../src/client/text-client.ts';
import { toOp } from '../src/controller/commands.ts';
import { ProtocolServer } from '../src/protocol/server.ts';
import { parseAuthFile, type Login } from '../src/protocol/auth.ts';
import { DEFAULT_LIMITS, type Command, type Reply } from '../src/protocol/types.ts';
import { mulberry32, type Random } from '../src/runtime/random.ts';
import { opProblem } from '../src/store/op-rules.ts';
import { fuzzBytes, fuzzConnection, loginBytes } from './support/client-fuzz.ts';

const LIMITS = { ...DEFAULT_LIMITS, valueBytesMax: 64 * 1024, lineBytesMax: 2048 };
const CONNECTIONS_PER_PROTOCOL = 250;
const FUZZ_BUDGET_MS = 20_000;

/** Answers each command as memcached might, and notes any command that would not make a valid op. */
class CheckingHandler {
  readonly problems: string[] = [];
  commands = 0;

  handle = (command: Command): Reply => {
    this.commands += 1;
    const op = toOp(command, Date.now());
    const problem = op === null ? null : opProblem(op);
    if (problem !== null) this.problems.push(`${problem}: ${JSON.stringify(command, (_, value: unknown) => (typeof value === 'bigint' ? String(value) : value))}`);
    switch (command.kind) {
      case 'get':
      case 'gat':
        return { kind: 'values', items: command.keys.slice(0, 2).map((key) => ({ key, flags: 1, value: Buffer.from('v'), cas: 7n })) };
      case 'store':
        return command.noreply ? { kind: 'none' } : { kind: 'stored', cas: 8n };
      case 'delete':
        return { kind: 'not_found' };
      case 'arith':
        return { kind: 'number', value: 42n };
      case 'touch':
        return { kind: 'touched', cas: 9n, flags: 0 };
      case 'stats':
        return { kind: 'stats', stats: [['curr_items', '0']] };
      case 'version':
        return { kind: 'version', version: '1.6.0-fuzz' };
      case 'quit':
      case 'noop':
        return { kind: 'none' };
      default:
        return { kind: 'ok' };
    }
  };
}

/** A ProtocolServer over a CheckingHandler for the tests of one describe block (logins on with `login`). */
function fuzzedServer(login: Login | null): { handler: CheckingHandler; server: () => ProtocolServer; port: () => number } {
  const handler = new CheckingHandler();
  let server: ProtocolServer | null = null;
  let port = 0;
  beforeAll(async () => {
    server = new ProtocolServer({ host: '127.0.0.1', port: 0, limits: LIMITS, handler: handler.handle, login });
    port = await server.listen();
  });
  afterAll(async () => {
    await server?.close();
  });
  const started = (): ProtocolServer => {
    if (server === null) throw new Error('server not started');
    return server;
  };
  return { handler, server: started, port: () => port };
}

/** Sends `count` fuzzing connections (from `startedMs`, within the budget), each after a login if `login`. */
async function fuzz(port: number, random: Random, count: number, startedMs: number, login = false): Promise<number> {
  let sent = 0;
  for (let connection = 0; connection < count && Date.now() - startedMs < FUZZ_BUDGET_MS; connection++) {
    const binary = connection % 2 === 1;
    const bytes = fuzzBytes(random, binary);
    await fuzzConnection(port, random, login ? Buffer.concat([loginBytes(binary), bytes]) : bytes);
    sent += 1;
  }
  return sent;
}

/** Every fuzzing connection is closed: nothing it sent is still counted in flight. */
async function expectNothingInFlight(server: ProtocolServer): Promise<void> {
  const deadline = Date.now() + 5000;
  while (server.stats().requestsInFlight > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
  expect(server.stats().requestsInFlight).toBe(0);
}

describe('the client protocols under a seeded fuzz', () => {
  const { handler, server, port } = fuzzedServer(null);

  it('never throws, hands over only commands whose ops peers accept, and serves a fresh client afterwards', async () => {
    const sent = await fuzz(port(), mulberry32(20261126), 2 * CONNECTIONS_PER_PROTOCOL, Date.now());
    expect(sent).toBeGreaterThan(100);
    // Many commands were valid enough to reach the handler (a bad one ends many a connection):
    // the fuzz went past the decoders.
    expect(handler.commands).toBeGreaterThan(sent / 2);
    expect(handler.problems).toEqual([]);
    await expectNothingInFlight(server());

    const client = await TextClient.connect('127.0.0.1', port());
    try {
      expect((await client.request('version\r\n', 'version')).lines[0]).toContain('VERSION');
      expect((await client.request('set after 0 0 2\r\nok\r\n', 'set')).lines).toEqual(['STORED']);
    } finally {
      client.close();
    }
  }, 60_000);
});

describe('the client protocols under a seeded fuzz, with logins on', () => {
  const { handler, server, port } = fuzzedServer(parseAuthFile('fuzz:secret\n', 'auth'));

  it('hands over nothing before a login, the fuzz after one, and only commands whose ops peers accept', async () => {
    const random = mulberry32(4616);
    const startedMs = Date.now();
    await fuzz(port(), random, CONNECTIONS_PER_PROTOCOL, startedMs);
    expect(handler.commands).toBe(0);
    await fuzz(port(), random, CONNECTIONS_PER_PROTOCOL, startedMs, true);
    expect(handler.commands).toBeGreaterThan(CONNECTIONS_PER_PROTOCOL / 4);
    expect(handler.problems).toEqual([]);
    await expectNothingInFlight(server());
  }, 60_000);
});
