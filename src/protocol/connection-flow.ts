/**
 * A client connection's flow control: writing reply bytes to its socket, and reading the socket
 * only while there is room. The base of `Connection` (./connection.ts), which decodes, orders and
 * executes; split from it by concern, not by object, so a reply costs no extra call or allocation.
 *
 * Invariants:
 * - Nothing is refused for being too much: a connection with requestsInFlightMax requests
 *   unanswered, or outputBytesMax reply bytes unsent, is simply not read until they go out, as
 *   memcached does; a reply of many values is written value by value, waiting for the client.
 * - A request stops being in flight once its reply's last part is handed to the socket, and only
 *   then; a closed connection gives its whole count back at once.
 */

import type * as net from 'node:net';
import type { ProtocolServer } from './server.ts';
import { afterWrite } from './wire.ts';

/** Reading pauses above this many queued request bytes and resumes below half of it. */
const QUEUED_BYTES_MAX = 16 * 1024 * 1024;

/** A connection's socket output and the bookkeeping that decides whether it is read. */
export abstract class ConnectionFlow {
  /** Requests decoded and not yet answered: queued, with the handler, or being written. */
  inFlight = 0;
  pausedByOutput = false;
  pausedByInFlight = false;
  private pausedByBytes = false;
  private reading = true;
  /** Bytes of the requests decoded and waiting for their turn. */
  protected queuedBytes = 0;
  protected finished = false;
  private corked = false;
  /** Unsent reply bytes past which the connection is not read (at least the socket's own mark, so 'drain' comes). */
  protected readonly outputBytesMax: number;

  constructor(
    protected readonly socket: net.Socket,
    protected readonly server: ProtocolServer,
  ) {
    this.outputBytesMax = Math.max(server.limits.outputBytesMax, socket.writableHighWaterMark);
    socket.setNoDelay(true);
  }

  get outputBytesUnsent(): number {
    return this.socket.writableLength;
  }

  /** Writes one reply's parts in order; its request stops being in flight once all are handed over. */
  protected writeReply(parts: Buffer[]): Promise<void> | undefined {
    return afterWrite(this.writeParts(parts, 0), () => {
      // A closed connection gave its count back at once (see 'close').
      if (this.inFlight > 0) {
        this.inFlight -= 1;
        this.server.addInFlight(-1);
      }
      this.updateReading();
    });
  }

  /** Hands parts to the socket; while the unsent output is over its limit, waits for it to drain. */
  private writeParts(parts: Buffer[], from: number): Promise<void> | undefined {
    for (let index = from; index < parts.length; index += 1) {
      const part = parts[index];
      if (this.finished || part === undefined) return undefined;
      if (this.socket.writableLength > this.outputBytesMax) return this.writeAfterDrain(parts, index);
      this.socket.write(part);
    }
    return undefined;
  }

  private async writeAfterDrain(parts: Buffer[], from: number): Promise<void> {
    this.uncork();
    this.updateReading();
    await this.drained();
    await this.writeParts(parts, from);
  }

  /** Resolves once the socket's output drains, or it closes. */
  protected drained(): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        this.socket.off('drain', done);
        this.socket.off('close', done);
        resolve();
      };
      this.socket.on('drain', done);
      this.socket.on('close', done);
    });
  }

  /** Corks until the end of this tick, so the replies written meanwhile leave together. */
  protected corkForTick(): void {
    if (this.corked) return;
    this.cork();
    process.nextTick(() => this.uncork());
  }

  protected cork(): void {
    if (this.corked) return;
    this.corked = true;
    this.socket.cork();
  }

  protected uncork(): void {
    if (!this.corked) return;
    this.corked = false;
    this.socket.uncork();
  }

  /**
   * Reads the socket only while it has room: unsent output within outputBytesMax, fewer than
   * requestsInFlightMax requests unanswered (resuming at half), queued request bytes bounded, and
   * the whole server under serverRequestsInFlightMax.
   */
  updateReading(): void {
    if (this.finished) return;
    const inFlightMax = this.server.limits.requestsInFlightMax;
    const overOutput = this.socket.writableLength > this.outputBytesMax;
    const overInFlight = this.pausedByInFlight ? this.inFlight > Math.floor(inFlightMax / 2) : this.inFlight >= inFlightMax;
    const overBytes = this.pausedByBytes ? this.queuedBytes > QUEUED_BYTES_MAX / 2 : this.queuedBytes > QUEUED_BYTES_MAX;
    if (overOutput && !this.pausedByOutput) this.server.countPause('output');
    if (overInFlight && !this.pausedByInFlight) this.server.countPause('in_flight');
    this.pausedByOutput = overOutput;
    this.pausedByInFlight = overInFlight;
    this.pausedByBytes = overBytes;
    const reading = !overOutput && !overInFlight && !overBytes && !this.server.overloaded;
    if (reading === this.reading) return;
    this.reading = reading;
    if (reading) this.socket.resume();
    else this.socket.pause();
  }
}
