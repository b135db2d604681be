/**
 * Another client filling a memcached behind mckv's back: what the `backend-fill` fault does to
 * every replica at once, as a cache shared with other programs would be filled.
 *
 * Intuition: memcached started with -M refuses a write when the size class it goes to has no free
 * chunk and no free page is left to give it. So the filler first takes every free page with large
 * items, then the free chunks of the small classes (where mckv's items go) with items of their
 * sizes, each until memcached refuses one. The controllers' memory guard sees that only at its
 * next poll: writes it admits meanwhile are refused by every memcached at once. Emptying deletes
 * exactly what was written, and memcached can store mckv's writes again.
 *
 * Invariants: only keys of our own prefix are written or deleted; every loop is bounded in items;
 * requests are pipelined in batches whose replies are all read before the next batch is sent.
 */

import net from 'node:net';

/** Keys the filler writes; nothing else is ever deleted by it. */
const KEY_PREFIX = 'mckv-fill';
/** Large items first: they take every free page. */
const LARGE_VALUE_BYTES = 256 * 1024;
/** Then items of the smaller size classes' sizes (values of these lengths), for their free chunks. */
const SMALL_VALUE_BYTES = [
  1, 40, 70, 110, 160, 230, 330, 470, 700, 1000, 1500, 2300, 3500, 5000, 8000, 12_000, 18_000, 27_000, 40_000, 60_000, 90_000, 130_000,
  190_000,
];
/** Requests per pipelined batch: up to this many, and about this many bytes. */
const BATCH_REQUESTS_MAX = 256;
const BATCH_BYTES = 1024 * 1024;
/** At most this many items of one size (a 1 GB memcached holds 4096 large ones). */
const ITEMS_PER_SIZE_MAX = 200_000;

/** Fills one memcached until it refuses, and empties what it filled. */
export class BackendFiller {
  readonly #port: number;
  readonly #tag: string;
  #written: string[] = [];

  constructor(options: { port: number; tag: string }) {
    this.#port = options.port;
    this.#tag = options.tag;
  }

  /** Items written and not yet deleted. */
  get items(): number {
    return this.#written.length;
  }

  /** Writes items until memcached refuses one of each size; resolves with the number written. */
  async fill(): Promise<number> {
    const connection = await LineConnection.open(this.#port);
    try {
      for (const valueBytes of [LARGE_VALUE_BYTES, ...SMALL_VALUE_BYTES]) {
        const value = Buffer.alloc(valueBytes, 0x66);
        const batch = Math.max(4, Math.min(BATCH_REQUESTS_MAX, Math.floor(BATCH_BYTES / valueBytes)));
        for (let written = 0; written < ITEMS_PER_SIZE_MAX; written += batch) {
          const keys = Array.from({ length: batch }, (_, index) => `${KEY_PREFIX}-${this.#tag}-${valueBytes}-${written + index}`);
          const replies = await connection.batch(keys.map((key) => Buffer.concat([Buffer.from(`set ${key} 0 0 ${valueBytes}\r\n`), value, CRLF])));
          keys.forEach((key, index) => {
            if (replies[index] === 'STORED') this.#written.push(key);
          });
          if (replies.some((reply) => reply !== 'STORED')) break;
        }
      }
    } finally {
      connection.close();
    }
    return this.#written.length;
  }

  /** Deletes every item `fill` wrote. */
  async empty(): Promise<void> {
    const connection = await LineConnection.open(this.#port);
    try {
      while (this.#written.length > 0) {
        const keys = this.#written.splice(-BATCH_REQUESTS_MAX);
        await connection.batch(keys.map((key) => Buffer.from(`delete ${key}\r\n`)));
      }
    } finally {
      connection.close();
    }
  }
}

const CRLF = Buffer.from('\r\n');

/** A text-protocol connection whose every request has a one-line reply. */
class LineConnection {
  readonly #socket: net.Socket;
  #pending = '';
  #waiting: { count: number; lines: string[]; resolve: (lines: string[]) => void; reject: (error: Error) => void } | null = null;
  /** Why the connection ended, once it has: every later batch fails at once. */
  #failure: Error | null = null;

  private constructor(socket: net.Socket) {
    this.#socket = socket;
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => this.#onData(chunk));
    socket.on('error', (error) => this.#fail(error));
    socket.on('close', () => this.#fail(new Error('memcached closed the connection')));
  }

  static open(port: number): Promise<LineConnection> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: '127.0.0.1', port }, () => {
        socket.off('error', reject);
        resolve(new LineConnection(socket));
      });
      socket.once('error', reject);
    });
  }

  /** Sends the requests in one write and resolves with their reply lines, in order. */
  batch(requests: readonly Buffer[]): Promise<string[]> {
    if (this.#failure !== null) return Promise.reject(this.#failure);
    return new Promise((resolve, reject) => {
      this.#waiting = { count: requests.length, lines: [], resolve, reject };
      this.#socket.write(Buffer.concat(requests));
    });
  }

  close(): void {
    this.#socket.destroy();
  }

  #onData(chunk: string): void {
    this.#pending += chunk;
    const waiting = this.#waiting;
    if (waiting === null) return;
    let end = this.#pending.indexOf('\r\n');
    while (end >= 0 && waiting.lines.length < waiting.count) {
      waiting.lines.push(this.#pending.slice(0, end));
      this.#pending = this.#pending.slice(end + 2);
      end = this.#pending.indexOf('\r\n');
    }
    if (waiting.lines.length === waiting.count) {
      this.#waiting = null;
      waiting.resolve(waiting.lines);
    }
  }

  #fail(error: Error): void {
    this.#failure ??= error;
    const waiting = this.#waiting;
    this.#waiting = null;
    waiting?.reject(error);
  }
}
