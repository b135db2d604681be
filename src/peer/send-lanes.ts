/**
 * Two send lanes on one peer connection, so heartbeats, votes and acknowledgements are not queued
 * behind bulk traffic (appends, forwards, pushes, transfers).
 *
 * Intuition: bytes handed to a socket leave in order, so whatever is already in its buffer delays
 * a heartbeat by the time the peer takes to read it. Bulk frames are therefore handed to the socket
 * only while it holds less than `socketBytesMax`; the rest wait here and follow on `drain`. A
 * priority frame goes to the socket at once, behind at most that much bulk. Frames sent in one
 * tick leave in one socket write (cork now, uncork on the next tick).
 *
 * Invariants: bytes in the socket plus bytes waiting here stay within `queueBytesMax` (a frame
 * that would pass it is dropped and `write` returns false); bulk frames keep their order, and so
 * do priority frames; a priority frame may overtake waiting bulk frames, never the reverse.
 */

import type net from 'node:net';

export type SendLane = 'priority' | 'bulk';

export interface SendLanesOptions {
  /** Bytes in the socket's buffer beyond which bulk frames wait here. */
  socketBytesMax: number;
  /** Bytes in the socket's buffer plus waiting here beyond which a frame is dropped. */
  queueBytesMax: number;
}

/** The socket buffer's bound for bulk frames: a heartbeat waits behind at most this much. */
export const BULK_SOCKET_BYTES_MAX_DEFAULT = 256 * 1024;

/** The lanes of one authenticated outbound connection; made anew for each connection. */
export class SendLanes {
  private readonly waiting: Buffer[] = [];
  private waitingHead = 0;
  private waitingBytes = 0;
  private corked = false;
  private closed = false;
  /** Frames handed to the socket so far (either lane): the heartbeat asks whether any went lately. */
  framesToSocket = 0;

  constructor(
    private readonly socket: net.Socket,
    private readonly options: SendLanesOptions,
  ) {
    socket.on('drain', () => this.flushWaiting());
  }

  /** Queues one frame in a lane; false (the frame is dropped) when closed or over `queueBytesMax`. */
  write(frame: Buffer, lane: SendLane): boolean {
    if (this.closed || this.socket.destroyed) return false;
    const queuedBytes = this.socket.writableLength + this.waitingBytes;
    if (queuedBytes > 0 && queuedBytes + frame.length > this.options.queueBytesMax) return false;
    if (lane === 'bulk' && (this.waitingBytes > 0 || this.socket.writableLength >= this.options.socketBytesMax)) {
      this.waiting.push(frame);
      this.waitingBytes += frame.length;
      return true;
    }
    this.toSocket(frame);
    return true;
  }

  /** Bytes not handed to the operating system yet: in the socket's buffer or waiting here. */
  get unsentBytes(): number {
    return this.socket.destroyed ? 0 : this.socket.writableLength + this.waitingBytes;
  }

  /** Bulk bytes waiting for room in the socket's buffer. */
  get waitingBulkBytes(): number {
    return this.waitingBytes;
  }

  /** Forgets what waits (the connection is gone; its socket's own buffer goes with it). */
  close(): void {
    this.closed = true;
    this.waiting.length = 0;
    this.waitingHead = 0;
    this.waitingBytes = 0;
  }

  private flushWaiting(): void {
    while (!this.closed && this.waitingHead < this.waiting.length && this.socket.writableLength < this.options.socketBytesMax) {
      const frame = this.waiting[this.waitingHead] as Buffer;
      this.waitingHead += 1;
      this.waitingBytes -= frame.length;
      this.toSocket(frame);
    }
    if (this.waitingHead === this.waiting.length || this.waitingHead > 1024) {
      this.waiting.splice(0, this.waitingHead);
      this.waitingHead = 0;
    }
  }

  private toSocket(frame: Buffer): void {
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(() => {
        this.corked = false;
        if (!this.socket.destroyed) this.socket.uncork();
      });
    }
    this.framesToSocket += 1;
    this.socket.write(frame);
  }
}
