/**
 * The memcached backend's connections: one pipelined binary-protocol connection (requests of a
 * tick written in one socket write, replies matched in order, an opaque double-checking it), and
 * the short-lived text connection that lists keys (`lru_crawler metadump all`).
 *
 * Invariants: every request settles within about `opTimeoutMs` of being written (time this process
 * was not running excepted); once failed, a connection fails every request on it at once and stays
 * failed (the backend opens another). An add or replace that memcached answered "exists" or
 * "not found" changed nothing, and is sent again as the other; nothing else is ever retried.
 */

import net from 'node:net';
import { performance } from 'node:perf_hooks';
import {
  BINARY_STATUS, HEADER_BYTES, OPCODE, RESPONSE_MAGIC, bodyBytesAt, readHeader, setOpaque, setOpcode,
} from '../protocol/binary-header.ts';
import { PauseWatch } from '../runtime/pause-watch.ts';
import { encodeRequest, storeRetry } from './memcached-frames.ts';
import { StoreError } from './types.ts';

const EMPTY = Buffer.alloc(0);
const ignoreValue = (): void => {};
/** Largest reply body accepted (memcached's item size limit is far below). */
const BODY_BYTES_MAX = 256 * 1024 * 1024;

function isUntouched(error: Error): boolean {
  return error instanceof ConnectionFailure && error.untouched;
}

/** A connection-level failure; the backend rewords it with what was asked. */
export class ConnectionFailure extends Error {
  override readonly name = 'ConnectionFailure';
  constructor(
    readonly code: StoreError['code'],
    message: string,
    /** See StoreError.untouched. */
    readonly untouched = false,
    /** memcached's status, for a refusal. */
    readonly status: number | null = null,
  ) {
    super(message);
  }
}

/** One request on the wire (or waiting for a slot), settled by its reply or the connection's failure. */
interface Pending {
  opaque: number;
  opcode: number;
  frame: Buffer;
  /** When it was written, ms (monotonic); 0 while it waits for a slot. */
  writtenAtMs: number;
  resolve: (value: Buffer | null) => void;
  reject: (error: Error) => void;
  /** For stats: the pairs gathered so far. */
  stats: Record<string, string> | null;
  resolveStats: ((stats: Record<string, string>) => void) | null;
  /** How often an add or replace was sent again as the other (see storeRetry in ./memcached-frames.ts). */
  switches?: number;
}

export interface BinaryConnectionOptions {
  host: string;
  port: number;
  opTimeoutMs: number;
  connectTimeoutMs: number;
  inFlightMax: number;
}

/** One pipelined connection to memcached. Once failed it stays failed; the backend opens another. */
export class BinaryConnection {
  failed = false;
  readonly #options: BinaryConnectionOptions;
  readonly #socket: net.Socket;
  /** Written, awaiting replies, in write order; `#head` is the oldest. */
  #inFlight: Pending[] = [];
  #head = 0;
  /** Waiting for a slot (more than inFlightMax on the wire). */
  #backlog: Pending[] = [];
  #backlogHead = 0;
  /** Frames to write at the end of this tick. */
  #outgoing: Buffer[] = [];
  #flushScheduled = false;
  #received: Buffer | null = null;
  #nextOpaque = 1;
  #connected = false;
  readonly #sweepTimer: NodeJS.Timeout;
  /** When memcached last answered anything, or the oldest request left, whichever is later. */
  #progressAtMs = performance.now();
  /** Tells when the sweep timer ran late because this process was not running. */
  readonly #pauses: PauseWatch;
  #verdictPending = false;

  constructor(options: BinaryConnectionOptions) {
    this.#options = options;
    const socket = net.connect({ host: options.host, port: options.port });
    this.#socket = socket;
    socket.setNoDelay(true);
    socket.setTimeout(options.connectTimeoutMs, () => {
      if (!this.#connected) this.fail(new ConnectionFailure('BACKEND_DOWN', `connect timed out after ${options.connectTimeoutMs} ms`));
    });
    socket.on('connect', () => {
      this.#connected = true;
      socket.setTimeout(0);
      socket.setKeepAlive(true, 30_000);
    });
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('error', (error) => this.fail(new ConnectionFailure('BACKEND_DOWN', errorMessage(error))));
    socket.on('close', () => this.fail(new ConnectionFailure('BACKEND_DOWN', 'connection closed')));
    const sweepMs = Math.max(5, Math.floor(options.opTimeoutMs / 4));
    this.#pauses = new PauseWatch({ intervalMs: sweepMs, nowMs: performance.now() });
    this.#sweepTimer = setInterval(() => this.#sweep(), sweepMs);
    this.#sweepTimer.unref();
  }

  /** Sends one request (a frame from encodeRequest); resolves with the reply's value (null for key not found). */
  request(frame: Buffer): Promise<Buffer | null> {
    return new Promise<Buffer | null>((resolve, reject) => {
      this.#submit({ opaque: 0, opcode: frame.readUInt8(1), frame, writtenAtMs: 0, resolve, reject, stats: null, resolveStats: null });
    });
  }

  /** Sends every frame; resolves once all are answered, rejecting with the first failure. */
  requestAll(frames: readonly Buffer[]): Promise<void> {
    if (frames.length === 0) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      let unanswered = frames.length;
      // Settled once every frame is answered: the batch left every key untouched only if each
      // refusal in it did, so the failure kept is the first that did not, else the first.
      let failure: Error | null = null;
      const answered = (): void => {
        unanswered -= 1;
        if (unanswered > 0) return;
        if (failure === null) resolve();
        else reject(failure);
      };
      const failed = (error: Error): void => {
        if (failure === null || (isUntouched(failure) && !isUntouched(error))) failure = error;
        answered();
      };
      for (const frame of frames) {
        this.#submit({
          opaque: 0, opcode: frame.readUInt8(1), frame, writtenAtMs: 0, resolve: answered, reject: failed, stats: null, resolveStats: null,
        });
      }
    });
  }

  /** memcached's stats: the general ones, or a group's (`settings`, `slabs`, …). */
  stats(group = ''): Promise<Record<string, string>> {
    return new Promise<Record<string, string>>((resolveStats, reject) => {
      const frame = encodeRequest(OPCODE.stat, group, null, null);
      const pending: Pending = {
        opaque: 0, opcode: OPCODE.stat, frame, writtenAtMs: 0, resolve: ignoreValue, reject, stats: {}, resolveStats,
      };
      this.#submit(pending);
    });
  }

  /** Fails every request and closes the socket. */
  fail(error: ConnectionFailure): void {
    if (this.failed) return;
    this.failed = true;
    clearInterval(this.#sweepTimer);
    this.#socket.destroy();
    const everyone = [...this.#inFlight.slice(this.#head), ...this.#backlog.slice(this.#backlogHead)];
    this.#inFlight = [];
    this.#backlog = [];
    this.#head = 0;
    this.#backlogHead = 0;
    this.#outgoing = [];
    for (const pending of everyone) pending.reject(error);
  }

  #submit(pending: Pending): void {
    if (this.failed) {
      pending.reject(new ConnectionFailure('BACKEND_DOWN', 'connection closed'));
      return;
    }
    pending.opaque = this.#nextOpaque;
    this.#nextOpaque = (this.#nextOpaque + 1) >>> 0;
    setOpaque(pending.frame, pending.opaque);
    if (this.#inFlight.length - this.#head >= this.#options.inFlightMax) this.#backlog.push(pending);
    else this.#write(pending);
  }

  #write(pending: Pending): void {
    pending.writtenAtMs = performance.now();
    this.#inFlight.push(pending);
    this.#outgoing.push(pending.frame);
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(() => this.#flush());
    }
  }

  /** Writes every frame of this tick in one socket write. */
  #flush(): void {
    this.#flushScheduled = false;
    if (this.failed || this.#outgoing.length === 0) return;
    const frames = this.#outgoing;
    this.#outgoing = [];
    const first = frames[0];
    this.#socket.write(frames.length === 1 && first !== undefined ? first : Buffer.concat(frames));
  }

  #onData(chunk: Buffer): void {
    let buffer = this.#received === null ? chunk : Buffer.concat([this.#received, chunk]);
    let offset = 0;
    while (!this.failed && buffer.length - offset >= HEADER_BYTES) {
      if (buffer[offset] !== RESPONSE_MAGIC) {
        this.fail(new ConnectionFailure('BACKEND_DOWN', 'garbled reply (bad magic)'));
        return;
      }
      const bodyBytes = bodyBytesAt(buffer, offset);
      if (bodyBytes > BODY_BYTES_MAX) {
        this.fail(new ConnectionFailure('BACKEND_DOWN', `garbled reply (body of ${bodyBytes} bytes)`));
        return;
      }
      if (buffer.length - offset < HEADER_BYTES + bodyBytes) break;
      this.#onReply(buffer, offset);
      offset += HEADER_BYTES + bodyBytes;
    }
    if (this.failed) return;
    if (offset === buffer.length) buffer = EMPTY;
    this.#received = buffer.length === 0 ? null : buffer.subarray(offset);
  }

  /** Settles the oldest request with the reply at `offset` (a complete one). */
  #onReply(buffer: Buffer, offset: number): void {
    this.#progressAtMs = performance.now();
    const pending = this.#inFlight[this.#head];
    const { opaque, keyBytes, extrasBytes, status, bodyBytes } = readHeader(buffer, offset);
    if (pending === undefined || pending.opaque !== opaque) {
      this.fail(new ConnectionFailure('BACKEND_DOWN', 'reply out of order'));
      return;
    }
    const bodyStart = offset + HEADER_BYTES;
    const bodyEnd = bodyStart + bodyBytes;
    const valueStart = bodyStart + extrasBytes + keyBytes;
    if (pending.stats !== null && status === BINARY_STATUS.ok && keyBytes > 0) {
      // One stat per packet; the list ends with an empty key.
      pending.stats[buffer.toString('latin1', bodyStart + extrasBytes, valueStart)] = buffer.toString('latin1', valueStart, bodyEnd);
      return;
    }
    this.#retire();
    const retryAs = status === BINARY_STATUS.ok ? null : storeRetry(pending, status);
    if (retryAs !== null) {
      // memcached held the key otherwise than the replica thought (an item expired, another
      // client wrote it): the same write, as the other command.
      setOpcode(pending.frame, retryAs);
      pending.opcode = retryAs;
      pending.switches = (pending.switches ?? 0) + 1;
      this.#submit(pending);
    } else if (status === BINARY_STATUS.ok) {
      if (pending.resolveStats !== null && pending.stats !== null) pending.resolveStats(pending.stats);
      else pending.resolve(pending.opcode === OPCODE.get ? buffer.subarray(valueStart, bodyEnd) : null);
    } else if (status === BINARY_STATUS.keyNotFound && (pending.opcode === OPCODE.get || pending.opcode === OPCODE.delete)) {
      pending.resolve(null);
    } else {
      const message = buffer.toString('latin1', valueStart, bodyEnd);
      // Refusing a set, memcached unlinks the key's old item; refusing anything else, it changes nothing.
      const untouched = pending.opcode !== OPCODE.set;
      pending.reject(new ConnectionFailure('BACKEND_FAILED', `status ${status}${message === '' ? '' : ` (${message})`}`, untouched, status));
    }
  }

  /** Removes the oldest in-flight request and lets one waiting request take its slot. */
  #retire(): void {
    this.#head += 1;
    if (this.#head === this.#inFlight.length) {
      this.#inFlight = [];
      this.#head = 0;
    } else if (this.#head > 1024 && this.#head * 2 > this.#inFlight.length) {
      this.#inFlight = this.#inFlight.slice(this.#head);
      this.#head = 0;
    }
    const next = this.#backlog[this.#backlogHead];
    if (next !== undefined) {
      this.#backlogHead += 1;
      if (this.#backlogHead === this.#backlog.length) {
        this.#backlog = [];
        this.#backlogHead = 0;
      }
      this.#write(next);
    }
  }

  /**
   * The connection is stuck when memcached has answered nothing for `opTimeoutMs` since the oldest
   * request left: it answers in order, so a deep pipeline whose replies keep coming is slow, not
   * stuck. Time this process itself was not running does not count, and the verdict waits until
   * the replies already in the socket have been read (the check phase runs after the poll phase).
   */
  #sweep(): void {
    const nowMs = performance.now();
    this.#progressAtMs += this.#pauses.observe(nowMs);
    if (this.#verdictPending || !this.#overdue(nowMs)) return;
    this.#verdictPending = true;
    setImmediate(() => {
      this.#verdictPending = false;
      if (!this.failed && this.#overdue(performance.now())) {
        this.fail(new ConnectionFailure('BACKEND_TIMEOUT', `no answer within ${this.#options.opTimeoutMs} ms`));
      }
    });
  }

  #overdue(nowMs: number): boolean {
    const oldest = this.#inFlight[this.#head];
    if (oldest === undefined) return false;
    return nowMs - Math.max(oldest.writtenAtMs, this.#progressAtMs) > this.#options.opTimeoutMs;
  }
}


export function errorMessage(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as NodeJS.ErrnoException).code;
    return code !== undefined && !error.message.includes(code) ? `${code} ${error.message}` : error.message;
  }
  return String(error);
}


/**
 * The memcached keys listed by `lru_crawler metadump all`, decoded from its URI encoding. Retries
 * a few times while the crawler is busy.
 */
export async function metadump(options: { host: string; port: number; timeoutMs: number }): Promise<string[]> {
  const attemptsMax = 10;
  for (let attempt = 1; ; attempt += 1) {
    const lines = await metadumpOnce(options);
    if (lines !== 'busy') return lines;
    if (attempt >= attemptsMax) {
      throw new StoreError('BACKEND_FAILED', `memcached ${options.host}:${options.port}: lru crawler stays busy`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50 * attempt));
  }
}

function metadumpOnce(options: { host: string; port: number; timeoutMs: number }): Promise<string[] | 'busy'> {
  const address = `${options.host}:${options.port}`;
  return new Promise((resolve, reject) => {
    const socket = net.connect(options.port, options.host);
    let text = '';
    const finish = (result: string[] | 'busy' | StoreError): void => {
      clearTimeout(timer);
      socket.destroy();
      if (result instanceof StoreError) reject(result);
      else resolve(result);
    };
    const timer = setTimeout(
      () => finish(new StoreError('BACKEND_TIMEOUT', `memcached ${address}: metadump took over ${options.timeoutMs} ms`)),
      options.timeoutMs,
    );
    socket.on('error', (cause) =>
      finish(new StoreError('BACKEND_DOWN', `memcached ${address} unreachable (metadump): ${errorMessage(cause)}`, { cause })),
    );
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1');
      if (text.startsWith('BUSY')) finish('busy');
      else if (text.startsWith('ERROR') || text.startsWith('CLIENT_ERROR') || text.startsWith('SERVER_ERROR')) {
        finish(new StoreError('BACKEND_FAILED', `memcached ${address} refused metadump: ${text.trim()}`));
      } else if (text === 'END\r\n' || text.endsWith('\nEND\r\n')) finish(parseMetadump(text));
    });
    socket.write('lru_crawler metadump all\r\n');
  });
}

function parseMetadump(text: string): string[] {
  const keys: string[] = [];
  // Lines end in "\n"; only the closing END has "\r\n".
  for (const line of text.split(/\r?\n/)) {
    const key = /^key=(\S+)/.exec(line)?.[1];
    if (key === undefined) continue;
    // metadump URI-encodes keys; our keys are ASCII, so decodeURIComponent is exact.
    keys.push(decodeURIComponent(key));
  }
  return keys;
}
