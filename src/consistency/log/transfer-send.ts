/**
 * The sending side of a state transfer (./transfer.ts has the asks and the receiving side). The
 * replica is read key by key from the applied index on, while applies go on (docs/design.md,
 * "State transfer in the log modes"), a slice at a time as the receivers take it: its chunks go a
 * window at a time, the receiver acking what it has stored (../send-window.ts), with the writes
 * of the asker's it holds, and the next slice is read only once nearly all that was read has been
 * sent. So a sender holds a few windows of a replica of any size, never all of it (held whole, a
 * replica of 3.9 million keys took 1.7-2.8 GB of the leader's heap until acked). Peers that ask
 * before any chunk of a read was let go share it. While a transfer to a peer is read, or sent and
 * acked lately, its asks start no other.
 *
 * Owns: the reads of our replica for a transfer, and the transfer being sent to each peer.
 */

import assert from 'node:assert';
import { itemAt } from '../../runtime/item-at.ts';
import { SEND_WINDOW_BYTES, sendableThrough } from '../send-window.ts';
import type { KeyedEntry, PeerId } from '../types.ts';
import type { Compaction } from './compaction.ts';
import type { LogCore } from './core.ts';
import type { ProgressTracker } from './progress.ts';
import { keyedEntryBytes, type CommittedForward, type LogMessage } from './types.ts';

/**
 * A transfer whose receiver owes acks and acked nothing for a failure timeout (it acks every
 * chunk, and asks again only after one) is given up: its next ask starts another, as after a
 * restart it must. One it installed is kept (for its index) this many failure timeouts at most.
 * One waiting for our own read is never given up: listing and reading millions of keys takes
 * longer than any such bound, and one that fails resets the replica, which forgets it
 * (forgetOutgoing, forgetFetches).
 */
const TRANSFER_KEPT_FAILURE_TIMEOUTS = 5;

/** Bytes of chunks read and not yet sent to a receiver past which the read waits for it. */
const READ_AHEAD_BYTES = SEND_WINDOW_BYTES;

/** A read of our replica for a transfer (its id is the fetch's token); its receivers are the peers `sending` it. */
interface TransferRead {
  token: number;
  term: number;
  index: number;
  indexTerm: number;
  replicaEpoch: number;
  startOverIndex: number;
  /** The chunks cut so far; the first `released` let go (emptied), every receiver acked them. */
  chunks: KeyedEntry[][];
  chunkBytes: number[];
  released: number;
  /** The chunk being cut, and its bytes. */
  open: KeyedEntry[];
  openBytes: number;
  /** Entries cut into chunks so far (for the operator's note: acked chunks are let go). */
  keys: number;
  /** A slice is asked for and not in yet. */
  asking: boolean;
  /** Once the last slice is in (the chunk count known too): how far its keys may be ahead. */
  fetchedThrough: number | null;
}

/** A transfer being sent to one peer: how many of its read's chunks were sent, how many it holds. */
interface OutgoingTransfer {
  read: TransferRead;
  committedForwards: CommittedForward[];
  sent: number;
  acked: number;
  /** When the receiver last acked more, or began to owe acks. */
  progressMs: number;
}

export class TransferSender {
  /** Reads of our replica under way for a transfer, by fetch token. */
  private readonly reads = new Map<number, TransferRead>();
  /** The transfer being sent to each peer. */
  private readonly sending = new Map<PeerId, OutgoingTransfer>();

  constructor(
    private readonly core: LogCore,
    private readonly progress: ProgressTracker,
    private readonly compaction: Compaction,
  ) {}

  /** Our replica is lost: transfers of it read or sent under its old epoch are of no use now. */
  forgetOutgoing(): void {
    for (const read of [...this.reads.values()]) this.dropRead(read);
    this.sending.clear();
  }

  /** Our replica is replayed from the snapshot: a read of it under way cannot say how far ahead it is. */
  forgetFetches(): void {
    for (const read of [...this.reads.values()]) this.dropRead(read);
  }

  /**
   * Read the whole replica as of the applied index (effects are ordered, so it sees exactly that)
   * to send it to `to`; true also while a transfer to `to` is read, or sent and acked lately.
   */
  start(to: PeerId, minIndex: number): boolean {
    if (!this.core.replicaValid || this.core.appliedIndex < minIndex || this.core.appliedIndex === 0) return false;
    // A replica ahead of its applied index (a replay onto the kept one after a restart, a transfer
    // read key by key) is sent all the same, saying how far its keys may be ahead (readDone):
    // waiting for it to apply that far could wait forever, as for a restarted leader whose
    // followers both need a transfer before anything of its term commits.
    if (!this.core.replicaSkipsApplied && this.core.appliedIndex < this.core.replayUntilIndex) return false;
    if (this.serving(to)) return true;
    for (const read of this.reads.values()) {
      // A read under way in this term, from far enough on, of which nothing was let go serves this peer too.
      if (read.term === this.core.term && read.index >= minIndex && read.released === 0) {
        this.serve(to, read);
        return true;
      }
    }
    const indexTerm = this.core.log.termAt(this.core.appliedIndex);
    assert(indexTerm !== null);
    const token = this.core.nextStoreToken();
    const { appliedIndex: index, replicaEpoch, replicaStartOverIndex: startOverIndex, term } = this.core;
    const read: TransferRead = {
      token, term, index, indexTerm, replicaEpoch, startOverIndex, chunks: [], chunkBytes: [], released: 0,
      open: [], openBytes: 0, keys: 0, asking: true, fetchedThrough: null,
    };
    this.reads.set(token, read);
    this.serve(to, read);
    this.core.out.push({ kind: 'fetch', token, keys: null, paced: true });
    return true;
  }

  /**
   * The lowest index of a transfer being read, sent, or installed and not yet followed by appends
   * (Infinity: none): compaction keeps what follows it, so the receiver needs no second transfer.
   */
  sendingFloor(): number {
    let floor = Number.POSITIVE_INFINITY;
    for (const read of this.reads.values()) floor = Math.min(floor, read.index);
    for (const { read } of this.sending.values()) floor = Math.min(floor, read.index);
    return floor;
  }

  /** Forgets the transfers nobody acked for a failure timeout: they no longer hold compaction back. */
  dropStalled(): void {
    for (const peer of [...this.sending.keys()]) this.serving(peer);
  }

  /** Is a transfer to `to` read, or sent in this term and acked lately? (A stalled one is dropped.) */
  private serving(to: PeerId): boolean {
    const sending = this.sending.get(to);
    if (sending === undefined) return false;
    const { read } = sending;
    if (read.term === this.core.term) {
      const quietMs = this.core.nowMs - sending.progressMs;
      if (read.fetchedThrough === null || sending.acked < read.chunks.length) {
        // Owing no ack, it waits for our read; owing some, for a failure timeout at most.
        if (sending.acked === sending.sent || quietMs < this.core.failureTimeoutMs) return true;
      } else if ((this.progress.get(to)?.matchIndex ?? 0) < read.index
        && quietMs < TRANSFER_KEPT_FAILURE_TIMEOUTS * this.core.failureTimeoutMs) {
        // Installed, and kept (for its index: see sendingFloor) until the receiver acks appends past it.
        return true;
      }
    }
    this.drop(to);
    return false;
  }

  /** Sends the read `read` to `to` too, from its first chunk. */
  private serve(to: PeerId, read: TransferRead): void {
    const committedForwards = this.forwardsCommittedThrough(to, read);
    const outgoing: OutgoingTransfer = { read, committedForwards, sent: 0, acked: 0, progressMs: this.core.nowMs };
    this.sending.set(to, outgoing);
    this.sendWindow(to);
  }

  /** Stops sending to `to`; a read nobody else takes is given up. */
  private drop(to: PeerId): void {
    const outgoing = this.sending.get(to);
    if (outgoing === undefined) return;
    this.sending.delete(to);
    const { read } = outgoing;
    if (this.receivers(read).length === 0) return this.dropRead(read);
    this.release(read);
    this.readOnIfRoom(read);
  }

  /** Gives up `read` (stopping its fetch if under way) and the transfers it serves. */
  private dropRead(read: TransferRead): void {
    if (this.reads.delete(read.token)) this.core.out.push({ kind: 'fetch_more', token: read.token, stop: true });
    for (const [peer] of this.receivers(read)) this.sending.delete(peer);
  }

  /** A slice of the read `token` came (`more`: others follow). */
  onFetched(token: number, entries: KeyedEntry[], more = false): void {
    const read = this.reads.get(token);
    if (read === undefined) return;
    read.asking = false;
    // Asked for in an earlier term: its receivers take transfers only of their leader in this one.
    if (read.term !== this.core.term) return this.dropRead(read);
    this.cutChunks(read, entries);
    if (!more) this.readDone(read);
    for (const [peer] of this.receivers(read)) this.sendWindow(peer);
    this.readOnIfRoom(read);
  }

  /**
   * The last slice is in: the chunk being cut is the last (never sent before: a chunk is closed
   * only once an entry comes after it, so the last says how many there are), and how far the
   * keys may be ahead is known.
   */
  private readDone(read: TransferRead): void {
    this.reads.delete(read.token);
    if (read.open.length > 0 || read.chunks.length === 0) this.closeChunk(read);
    // Read key by key while applies went on (with skipping replays): its keys may hold any of them,
    // and anything a replica not yet replayed to its replayUntilIndex held before.
    read.fetchedThrough = this.core.replicaSkipsApplied
      ? Math.max(read.index, this.core.appliedIndex, this.core.replayUntilIndex)
      : read.index;
    const { index, fetchedThrough, keys } = read;
    const peers = this.receivers(read).map(([peer]) => peer);
    this.core.note('info', 'state transfer read', { peers, index, fetchedThrough, chunks: read.chunks.length, keys });
  }

  /** The receiver stored `received` chunks of transfer `transferId`: send on, and read on. */
  onTransferAck(from: PeerId, message: Extract<LogMessage, { kind: 'transfer_ack' }>): void {
    const outgoing = this.sending.get(from);
    if (outgoing === undefined || outgoing.read.token !== message.transferId || message.term !== outgoing.read.term) return;
    if (message.received <= outgoing.acked) return;
    outgoing.acked = Math.min(message.received, outgoing.sent);
    outgoing.progressMs = this.core.nowMs;
    const { read } = outgoing;
    this.release(read);
    this.sendWindow(from);
    this.readOnIfRoom(read);
  }

  /** The peers `read` is sent to, with their transfers (two at most). */
  private receivers(read: TransferRead): Array<[PeerId, OutgoingTransfer]> {
    return [...this.sending].filter(([, outgoing]) => outgoing.read === read);
  }

  /** Lets go of the chunks every receiver of `read` stored: never sent again. */
  private release(read: TransferRead): void {
    const receivers = this.receivers(read);
    if (receivers.length === 0) return;
    const through = Math.min(...receivers.map(([, outgoing]) => outgoing.acked));
    for (; read.released < through; read.released += 1) read.chunks[read.released] = [];
  }

  /** Asks for the read's next slice once every receiver was sent nearly all it holds. */
  private readOnIfRoom(read: TransferRead): void {
    if (read.asking || read.fetchedThrough !== null || !this.reads.has(read.token)) return;
    for (const [, { sent }] of this.receivers(read)) {
      let unsentBytes = read.openBytes;
      for (let chunk = sent; chunk < read.chunks.length; chunk += 1) unsentBytes += read.chunkBytes[chunk] ?? 0;
      if (unsentBytes >= READ_AHEAD_BYTES) return;
    }
    read.asking = true;
    this.core.out.push({ kind: 'fetch_more', token: read.token });
  }

  /**
   * Sends `to` the next chunks its window allows (../send-window.ts), those cut so far; each says
   * how many there are once the read is done. The last one sent is noted.
   */
  private sendWindow(to: PeerId): void {
    const outgoing = this.sending.get(to);
    if (outgoing === undefined) return;
    const { read } = outgoing;
    if (read.term !== this.core.term) return this.drop(to);
    const through = sendableThrough(read.chunkBytes, outgoing.acked, outgoing.sent);
    // It owes acks from now: a failure timeout without one gives it up (see serving).
    if (through > outgoing.sent && outgoing.sent === outgoing.acked) outgoing.progressMs = this.core.nowMs;
    const done = read.fetchedThrough === null ? {} : { fetchedThrough: read.fetchedThrough, chunkCount: read.chunks.length };
    const { term, replicaEpoch, startOverIndex, token: transferId, index, indexTerm } = read;
    const sentBefore = outgoing.sent;
    for (; outgoing.sent < through; outgoing.sent += 1) {
      const chunkNumber = outgoing.sent;
      this.core.send(to, {
        kind: 'transfer_chunk', term, replicaEpoch, startOverIndex, transferId, index, indexTerm, ...done,
        chunkNumber,
        entries: itemAt(read.chunks, chunkNumber),
        ...(chunkNumber === 0 ? { committedForwards: outgoing.committedForwards } : {}),
      });
    }
    if (read.fetchedThrough !== null && sentBefore < read.chunks.length && outgoing.sent === read.chunks.length) {
      this.core.note('info', 'state transfer sent', { peer: to, index: read.index, fetchedThrough: read.fetchedThrough, chunks: read.chunks.length });
    }
  }

  /** `entries` cut into the read's chunks, each within the entry and byte bounds (at least one entry). */
  private cutChunks(read: TransferRead, entries: readonly KeyedEntry[]): void {
    const { transferChunkEntriesMax: countMax, batchBytesMax: bytesMax } = this.core.tuning;
    read.keys += entries.length;
    for (const entry of entries) {
      const bytes = keyedEntryBytes(entry);
      if (read.open.length > 0 && (read.open.length >= countMax || read.openBytes + bytes > bytesMax)) this.closeChunk(read);
      read.open.push(entry);
      read.openBytes += bytes;
    }
  }

  /** The chunk being cut is done (an empty replica's one chunk is empty). */
  private closeChunk(read: TransferRead): void {
    read.chunks.push(read.open);
    read.chunkBytes.push(read.openBytes);
    read.open = [];
    read.openBytes = 0;
  }

  /**
   * The writes `peer` forwarded that are committed at or before `index` (this node applied
   * `index`) and after `startOverIndex`: in the log, then compacted lately. At most what a node may
   * have pending. Those up to the start-over are left out, not sent for the recipient to refuse:
   * a peer of an earlier release, which knows no start-over index, would answer them stored.
   */
  private forwardsCommittedThrough(peer: PeerId, { index, startOverIndex }: { index: number; startOverIndex: number }): CommittedForward[] {
    const limit = this.core.tuning.queueDepthMax;
    const found: CommittedForward[] = [];
    for (let at = index; at > this.core.log.snapshotIndex && found.length < limit; at -= 1) {
      const { origin, incarnation, requestId } = this.core.log.entryAt(at);
      if (origin === peer && requestId !== null) found.push({ incarnation, requestId, index: at });
    }
    const compacted = this.compaction.compactedForwards.committedThrough(peer, index, this.core.nowMs, limit - found.length);
    return found.concat(compacted).filter((forward) => forward.index > startOverIndex);
  }
}
