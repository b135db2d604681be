/**
 * A small memcached text-protocol client over a raw socket, replies read byte-exactly (VALUE data
 * blocks by their length). Used by the interactive client, the fault runner's clients and tests
 * that need `show` or want to see the exact reply lines. Requests may be pipelined: each is sent
 * at once, and replies are read in the order the requests were sent. A request that fails (no
 * complete reply in time, the connection lost) fails every later one too: what is left of its
 * reply would otherwise be read as theirs.
 */

import net from 'node:net';
import { performance } from 'node:perf_hooks';

export interface TextValue {
  key: string;
  flags: number;
  value: Buffer;
  cas: bigint | null;
}

export interface TextReply {
  /** The reply's lines (for a get: the VALUE header lines are parsed into `values`). */
  lines: string[];
  values: TextValue[];
}

const multiLineCommands = new Set(['get', 'gets', 'gat', 'gats', 'stats', 'show', 'causal_token']);
const errorLine = /^(ERROR|CLIENT_ERROR|SERVER_ERROR)/;

export class TextClient {
  private buffer: Buffer = Buffer.alloc(0);
  private waiter: (() => void) | null = null;
  private closedError: Error | null = null;
  /** Settles once every earlier request has read its reply: replies come in request order. */
  private readTurn: Promise<void> = Promise.resolve();

  private constructor(private readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
      this.wake();
    });
    const onClose = (error?: Error): void => {
      this.closedError ??= error ?? new Error('connection closed');
      this.wake();
    };
    socket.on('error', onClose);
    socket.on('close', () => onClose());
  }

  static connect(host: string, port: number, timeoutMs = 3000): Promise<TextClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host, port });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`cannot connect to ${host}:${port}: timed out`));
      }, timeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.setNoDelay(true);
        resolve(new TextClient(socket));
      });
      socket.once('error', (error) => {
        clearTimeout(timer);
        reject(new Error(`cannot connect to ${host}:${port}: ${error.message}`));
      });
    });
  }

  /** Connects, sends one request, reads its reply and closes the connection whatever happened (a failure is thrown). */
  static async requestOnce(host: string, port: number, raw: string | Buffer, verb: string, timeoutMs: number): Promise<TextReply> {
    const client = await TextClient.connect(host, port, timeoutMs);
    try {
      return await client.request(raw, verb, timeoutMs);
    } finally {
      client.close();
    }
  }

  /** False once the connection is closed or abandoned after a failed request: every request would fail. */
  get usable(): boolean {
    return this.closedError === null;
  }

  /** Sends raw bytes and reads one reply, after the replies of earlier requests; `verb` says how it ends. */
  request(raw: string | Buffer, verb: string, timeoutMs = 20_000): Promise<TextReply> {
    this.socket.write(raw);
    const deadline = performance.now() + timeoutMs;
    const reply = this.readTurn.then(() => this.readReply(verb, deadline)).catch((error: unknown) => {
      // What is left of that reply would be read as the next one's: fail every later request.
      this.closedError ??= new Error(`connection abandoned after an earlier request failed: ${error instanceof Error ? error.message : String(error)}`);
      this.buffer = Buffer.alloc(0);
      this.socket.destroy();
      throw error;
    });
    const settled = (): void => undefined;
    this.readTurn = reply.then(settled, settled);
    return reply;
  }

  private async readReply(verb: string, deadline: number): Promise<TextReply> {
    const reply: TextReply = { lines: [], values: [] };
    const multiLine = multiLineCommands.has(verb);
    for (;;) {
      const line = await this.readLine(deadline);
      if (!multiLine || line === 'END' || errorLine.test(line)) {
        reply.lines.push(line);
        return reply;
      }
      const [, key, flags, valueBytes, cas] = /^VALUE (\S+) (\d+) (\d+)(?: (\d+))?$/.exec(line) ?? [];
      if (key !== undefined) {
        const value = await this.readBytes(Number(valueBytes) + 2, deadline);
        reply.values.push({
          key,
          flags: Number(flags),
          value: value.subarray(0, value.length - 2),
          cas: cas === undefined ? null : BigInt(cas),
        });
      }
      reply.lines.push(line);
    }
  }

  close(): void {
    this.socket.end();
    this.socket.destroy();
  }

  private async readLine(deadline: number): Promise<string> {
    for (;;) {
      const end = this.buffer.indexOf('\r\n');
      if (end >= 0) {
        const line = this.buffer.subarray(0, end).toString('latin1');
        this.buffer = this.buffer.subarray(end + 2);
        return line;
      }
      await this.wait(deadline);
    }
  }

  private async readBytes(count: number, deadline: number): Promise<Buffer> {
    while (this.buffer.length < count) await this.wait(deadline);
    const bytes = this.buffer.subarray(0, count);
    this.buffer = this.buffer.subarray(count);
    return bytes;
  }

  private wait(deadline: number): Promise<void> {
    if (this.closedError) return Promise.reject(this.closedError);
    const remainingMs = deadline - performance.now();
    if (remainingMs <= 0) return Promise.reject(new Error('timed out waiting for a reply'));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = null;
        reject(new Error('timed out waiting for a reply'));
      }, remainingMs);
      this.waiter = () => {
        clearTimeout(timer);
        this.waiter = null;
        if (this.closedError && this.buffer.length === 0) reject(this.closedError);
        else resolve();
      };
    });
  }

  private wake(): void {
    this.waiter?.();
  }
}
