/**
 * The memcached backend's connection: one pipelined binary-protocol connection (requests of a
 * tick written in one socket write, replies matched in order, an opaque double-checking it).
 *
 * Quiet stores (`requestQuiet`: setq, addq, replaceq) spare the wake-up of a reply: memcached
 * answers them only when they fail, and does a connection's requests in order, so any later reply
 * vouches for every quiet request before it. A noop is sent to vouch for them when nothing else
 * will: after a run of them, at the sweep, and when asked to `settle`. Frames that are all quiet
 * wait up to QUIET_FLUSH_DELAY_MS for company, so a few applies' stores share one write.
 *
 * Invariants: every request settles within about `opTimeoutMs` of being written (time this process
 * was not running excepted); once failed, a connection fails every request on it at once and stays
 * failed (the backend opens another). An add or replace that memcached answered "exists" or
 * "not found" changed nothing, and is sent again as the other; nothing else is ever retried. A
 * quiet store memcached refused fails the connection (the requests after it saw its key as the
 * refusal left it), with the refusal given to that store and the connection's failure to the rest.
 */

import net from 'node:net';
import { performance } from 'node:perf_hooks';
import {
  BINARY_STATUS, HEADER_BYTES, OPCODE, RESPONSE_MAGIC, bodyBytesAt, readHeader, setOpaque, setOpcode,
} from '../protocol/binary-header.ts';
import { PauseWatch } from '../runtime/pause-watch.ts';
import { encodeRequest, quietOpcode, storeRetry } from './memcached-frames.ts';
import type { StoreError } from './types.ts';

const EMPTY = Buffer.alloc(0);
const ignoreValue = (): void => {};
/** Quiet requests written in a row before a noop vouches for them, at most (and half the window). */
const QUIET_RUN_MAX = 256;
/**
 * How long frames that are all quiet wait for company before they are written, ms: nobody waits
 * for them, so the stores of a few applies share one socket write and one wake-up of memcached.
 */
const QUIET_FLUSH_DELAY_MS = 16;
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
  /** Sent quietly: settled by a later reply (done) or its own (refused). */
  quiet?: boolean;
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
  /** Writes frames that are all quiet, QUIET_FLUSH_DELAY_MS after the first (null: none waits). */
  #quietFlushTimer: NodeJS.Timeout | null = null;
  #received: Buffer | null = null;
  #nextOpaque = 1;
  #connected = false;
  readonly #sweepTimer: NodeJS.Timeout;
  /** When memcached last answered anything, or the oldest request left, whichever is later. */
  #progressAtMs = performance.now();
  /** Tells when the sweep timer ran late because this process was not running. */
  readonly #pauses: PauseWatch;
  #verdictPending = false;
  /** Quiet requests written since the last request that will be answered. */
  #quietRun = 0;
  /** Quiet requests sent (written or waiting for a slot) and not yet vouched for or refused. */
  #quietUnvouched = 0;
  readonly #quietRunMax: number;

  constructor(options: BinaryConnectionOptions) {
    this.#options = options;
    this.#quietRunMax = Math.max(1, Math.min(QUIET_RUN_MAX, Math.floor(options.inFlightMax / 2)));
    const socket = net.connect({ host: options.host, port: options.port });
    this.#socket = socket;
    socket.setNoDelay(true);
    socket.setTimeout(options.connectTimeoutMs, () => {
      // As the sweep's verdict: once the poll phase has run, so that a connect completed while this
      // process was not running (its timer then fires first) counts.
      setImmediate(() => {
        if (!this.#connected) this.fail(new ConnectionFailure('BACKEND_DOWN', `connect timed out after ${options.connectTimeoutMs} ms`));
      });
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

  /**
   * Sends a store (a frame from setFrame) quietly: `failed` is called if memcached refuses it or
   * the connection fails before a later reply vouches for it; nothing is called when it is done.
   */
  requestQuiet(frame: Buffer, failed: (error: Error) => void): void {
    const opcode = quietOpcode(frame.readUInt8(1));
    setOpcode(frame, opcode);
    this.#quietUnvouched += 1;
    this.#submit({
      opaque: 0, opcode, frame, writtenAtMs: 0, resolve: ignoreValue, reject: failed, stats: null, resolveStats: null, quiet: true,
    });
  }

  /** Resolves once every quiet request sent so far is vouched for; rejects if the connection fails first. */
  settle(): Promise<void> {
    if (this.#quietUnvouched === 0) return Promise.resolve();
    return this.request(encodeRequest(OPCODE.noop, '', null, null)).then(ignoreValue);
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

  /** Sends every frame; resolves with each reply's value (null: key not found) once all are answered, or rejects with the first failure. */
  requestEach(frames: readonly Buffer[]): Promise<Array<Buffer | null>> {
    const values = new Array<Buffer | null>(frames.length).fill(null);
    if (frames.length === 0) return Promise.resolve(values);
    return new Promise<Array<Buffer | null>>((resolve, reject) => {
      let unanswered = frames.length;
      let failure: Error | null = null;
      const answered = (): void => {
        unanswered -= 1;
        if (unanswered > 0) return;
        if (failure === null) resolve(values);
        else reject(failure);
      };
      frames.forEach((frame, at) => {
        this.#submit({
          opaque: 0, opcode: frame.readUInt8(1), frame, writtenAtMs: 0, stats: null, resolveStats: null,
          resolve: (value) => {
            values[at] = value;
            answered();
          },
          reject: (error) => {
            failure ??= error;
            answered();
          },
        });
      });
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
    if (this.#quietFlushTimer !== null) clearTimeout(this.#quietFlushTimer);
    this.#quietFlushTimer = null;
    this.#socket.destroy();
    const everyone = [...this.#inFlight.slice(this.#head), ...this.#backlog.slice(this.#backlogHead)];
    this.#inFlight = [];
    this.#backlog = [];
    this.#head = 0;
    this.#backlogHead = 0;
    this.#outgoing = [];
    this.#quietUnvouched = 0;
    for (const pending of everyone) pending.reject(error);
  }

  #submit(pending: Pending): void {
    if (this.failed) {
      pending.reject(new ConnectionFailure('BACKEND_DOWN', 'connection closed'));
      return;
    }
    this.#stamp(pending);
    if (this.#inFlight.length - this.#head >= this.#options.inFlightMax) this.#backlog.push(pending);
    else this.#write(pending);
  }

  #write(pending: Pending): void {
    pending.writtenAtMs = performance.now();
    this.#inFlight.push(pending);
    this.#outgoing.push(pending.frame);
    if (pending.quiet !== true) this.#quietRun = 0;
    else if (++this.#quietRun >= this.#quietRunMax) this.#vouch();
    if (this.#flushScheduled) return;
    if (pending.quiet === true) {
      this.#quietFlushTimer ??= setTimeout(() => this.#flush(), QUIET_FLUSH_DELAY_MS);
      return;
    }
    this.#flushScheduled = true;
    setImmediate(() => this.#flush());
  }

  /**
   * Writes a noop at once, past any backlog (the window's bound does not hold it back: waiting
   * behind quiet requests, it could wait for ever): its reply vouches for every quiet request before it.
   */
  #vouch(): void {
    const pending: Pending = {
      opaque: 0, opcode: OPCODE.noop, frame: encodeRequest(OPCODE.noop, '', null, null), writtenAtMs: 0,
      resolve: ignoreValue, reject: ignoreValue, stats: null, resolveStats: null,
    };
    this.#stamp(pending);
    this.#write(pending);
  }

  /** Gives the request the next opaque, in its frame too (replies are matched in order and by it). */
  #stamp(pending: Pending): void {
    pending.opaque = this.#nextOpaque;
    this.#nextOpaque = (this.#nextOpaque + 1) >>> 0;
    setOpaque(pending.frame, pending.opaque);
  }

  /** Writes every frame waiting (this tick's, and quiet ones held back) in one socket write. */
  #flush(): void {
    this.#flushScheduled = false;
    if (this.#quietFlushTimer !== null) {
      clearTimeout(this.#quietFlushTimer);
      this.#quietFlushTimer = null;
    }
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

  /** Settles the oldest request with the reply at `offset` (a complete one), and the quiet ones before it. */
  #onReply(buffer: Buffer, offset: number): void {
    this.#progressAtMs = performance.now();
    const { opaque, keyBytes, extrasBytes, status, bodyBytes } = readHeader(buffer, offset);
    let pending = this.#inFlight[this.#head];
    // Quiet requests before the one answered were done: memcached answers them only on failure.
    while (pending !== undefined && pending.quiet === true && pending.opaque !== opaque) {
      this.#retire();
      this.#quietUnvouched -= 1;
      pending.resolve(null);
      pending = this.#inFlight[this.#head];
    }
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
    if (pending.quiet === true) {
      this.#quietUnvouched -= 1;
      this.#quietRefused(pending, buffer.toString('latin1', valueStart, bodyEnd), status);
      return;
    }
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

  /**
   * memcached refused a quiet store. Every request after it on the wire saw its key as the refusal
   * left it, so none is trusted: the store gets the refusal, the rest the connection's failure.
   */
  #quietRefused(pending: Pending, message: string, status: number): void {
    // Refusing a set, memcached unlinks the key's old item; refusing an add or replace, it changes nothing.
    const untouched = pending.opcode !== OPCODE.setq;
    pending.reject(new ConnectionFailure('BACKEND_FAILED', `status ${status}${message === '' ? '' : ` (${message})`}`, untouched, status));
    this.fail(new ConnectionFailure('BACKEND_DOWN', `dropped after memcached refused a quiet store (status ${status})`));
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
    if (this.#quietRun > 0 && !this.failed) this.#vouch();
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
