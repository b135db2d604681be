/**
 * The sending side of a state transfer (./transfer.ts has the asks and the receiving side). The
 * replica is read key by key from the applied index on, while applies go on (docs/design.md,
 * "State transfer in the log modes"), and sent in chunks, a window at a time, the receiver acking
 * what it has stored (../send-window.ts), with the writes of the asker's it holds. While a transfer to
 * a peer is read, or sent and acked lately, its asks start no other. Peers that ask while a read is
 * under way share it: each read holds a whole replica until its chunks are acked.
 *
 * Owns: the reads of our replica for a transfer, and the transfer being sent to each peer.
 */

import assert from 'node:assert';
import { itemAt } from '../../runtime/item-at.ts';
import { sendableThrough } from '../send-window.ts';
import type { KeyedEntry, PeerId } from '../types.ts';
import type { Compaction } from './compaction.ts';
import type { LogCore } from './core.ts';
import type { ProgressTracker } from './progress.ts';
import { keyedEntryBytes, type CommittedForward, type LogMessage } from './types.ts';

/**
 * A transfer whose receiver acked nothing for a failure timeout (it acks every chunk, and asks
 * again only after one) is given up: its next ask starts another, as after a restart it must. One
 * it installed is kept (for its index) this many failure timeouts at most. A fetch of the replica
 * for one is never given up: reading millions of keys takes longer than any such bound (and a
 * fetch given up and started again would never end), and one that fails resets the replica,
 * which forgets it (forgetOutgoing, forgetFetches).
 */
const TRANSFER_KEPT_FAILURE_TIMEOUTS = 5;

/**
 * A read of our replica for a transfer, and the peers it is for. Its result comes in slices (one
 * step each: cut whole, millions of entries stopped the sender for half a second), cut into
 * chunks as they come.
 */
interface TransferRead {
  peers: PeerId[];
  term: number;
  index: number;
  indexTerm: number;
  replicaEpoch: number;
  startOverIndex: number;
  chunks: KeyedEntry[][];
  chunkBytes: number[];
  /** The chunk being cut, and its bytes. */
  open: KeyedEntry[];
  openBytes: number;
}

/**
 * A transfer being sent (its id and term in the header): its chunks (shared with the other
 * peers the same read serves), how many left, how many the receiver holds.
 */
interface OutgoingTransfer {
  header: Omit<Extract<LogMessage, { kind: 'transfer_chunk' }>, 'chunkNumber' | 'entries' | 'committedForwards'>;
  committedForwards: CommittedForward[];
  /** Each let go (emptied) once acked. */
  chunks: KeyedEntry[][];
  chunkBytes: number[];
  sent: number;
  acked: number;
  /** When it started or the receiver last acked more. */
  progressMs: number;
}

export class TransferSender {
  /** Reads of our replica for a transfer, by store token. */
  private readonly outgoingTransfers = new Map<number, TransferRead>();
  /** The transfer being sent to each peer. */
  private readonly sending = new Map<PeerId, OutgoingTransfer>();

  constructor(
    private readonly core: LogCore,
    private readonly progress: ProgressTracker,
    private readonly compaction: Compaction,
  ) {}

  /** Our replica is lost: transfers of it fetched or sent under its old epoch are of no use now. */
  forgetOutgoing(): void {
    this.forgetFetches();
    this.sending.clear();
  }

  /** Our replica is replayed from the snapshot: a read of it in flight cannot say how far ahead it is. */
  forgetFetches(): void {
    this.outgoingTransfers.clear();
  }

  /**
   * Fetch the whole replica as of the applied index (effects are ordered, so it sees exactly that)
   * to send it to `to`; true also while a transfer to `to` is fetched, or sent and acked lately.
   */
  start(to: PeerId, minIndex: number): boolean {
    if (!this.core.replicaValid || this.core.appliedIndex < minIndex || this.core.appliedIndex === 0) return false;
    if (this.core.appliedIndex < this.core.replayUntilIndex) return false;
    if (this.serving(to)) return true;
    for (const read of this.outgoingTransfers.values()) {
      // A read under way in this term, from far enough on, serves this peer too.
      if (read.term === this.core.term && read.index >= minIndex) {
        read.peers.push(to);
        return true;
      }
    }
    const indexTerm = this.core.log.termAt(this.core.appliedIndex);
    assert(indexTerm !== null);
    const token = this.core.nextStoreToken();
    const { appliedIndex: index, replicaEpoch, replicaStartOverIndex: startOverIndex, term } = this.core;
    this.outgoingTransfers.set(token, {
      peers: [to], term, index, indexTerm, replicaEpoch, startOverIndex, chunks: [], chunkBytes: [], open: [], openBytes: 0,
    });
    this.core.out.push({ kind: 'fetch', token, keys: null, sliced: true });
    return true;
  }

  /**
   * The lowest index of a transfer being fetched, sent, or installed and not yet followed by appends
   * (Infinity: none): compaction keeps what follows it, so the receiver needs no second transfer.
   */
  sendingFloor(): number {
    let floor = Number.POSITIVE_INFINITY;
    for (const fetch of this.outgoingTransfers.values()) floor = Math.min(floor, fetch.index);
    for (const sending of this.sending.values()) floor = Math.min(floor, sending.header.index);
    return floor;
  }

  /**
   * Forgets the transfers nobody acked for a failure timeout, and what they hold (a whole replica
   * each): they no longer hold compaction back.
   */
  dropStalled(): void {
    const peers = new Set([...this.sending.keys(), ...[...this.outgoingTransfers.values()].flatMap((read) => read.peers)]);
    for (const peer of peers) this.serving(peer);
  }

  /** Is a transfer to `to` fetched, or sent in this term and acked lately? (A stalled one is dropped.) */
  private serving(to: PeerId): boolean {
    const { nowMs, failureTimeoutMs } = this.core;
    for (const read of this.outgoingTransfers.values()) if (read.term === this.core.term && read.peers.includes(to)) return true;
    const sending = this.sending.get(to);
    if (sending === undefined) return false;
    if (sending.header.term === this.core.term) {
      const quietMs = nowMs - sending.progressMs;
      if (sending.acked < sending.header.chunkCount) {
        if (quietMs < failureTimeoutMs) return true;
      } else if ((this.progress.get(to)?.matchIndex ?? 0) < sending.header.index
        && quietMs < TRANSFER_KEPT_FAILURE_TIMEOUTS * failureTimeoutMs) {
        // Installed, and kept (for its index: see sendingFloor) until the receiver acks appends past it.
        return true;
      }
    }
    this.sending.delete(to);
    return false;
  }

  /** A slice of the read `token` came (`more`: others follow). */
  onFetched(token: number, entries: KeyedEntry[], more = false): void {
    const read = this.outgoingTransfers.get(token);
    if (read === undefined) return;
    // Asked for in an earlier term: its receivers take transfers only of their leader in this one.
    if (read.term !== this.core.term) {
      this.outgoingTransfers.delete(token);
      return;
    }
    this.cutChunks(read, entries);
    if (more) return;
    this.outgoingTransfers.delete(token);
    if (read.open.length > 0 || read.chunks.length === 0) this.closeChunk(read);
    const { chunks, chunkBytes } = read;
    const keys = chunks.reduce((count, chunk) => count + chunk.length, 0);
    // The fetch read key by key while applies went on (with skipping replays): its keys may hold any of them.
    const fetchedThrough = this.core.replicaSkipsApplied ? Math.max(read.index, this.core.appliedIndex) : read.index;
    const header: OutgoingTransfer['header'] = {
      kind: 'transfer_chunk',
      term: this.core.term,
      replicaEpoch: read.replicaEpoch,
      startOverIndex: read.startOverIndex,
      transferId: token,
      index: read.index,
      indexTerm: read.indexTerm,
      fetchedThrough,
      chunkCount: chunks.length,
    };
    for (const to of read.peers) {
      this.core.note('info', 'state transfer sent', { peer: to, index: read.index, fetchedThrough, keys, chunks: chunks.length });
      const outgoing: OutgoingTransfer = {
        header,
        committedForwards: this.forwardsCommittedThrough(to, read),
        // Each lets go of its own references to the chunks as its receiver acks them.
        chunks: [...chunks],
        chunkBytes,
        sent: 0,
        acked: 0,
        progressMs: this.core.nowMs,
      };
      this.sending.set(to, outgoing);
      this.sendWindow(to, outgoing);
    }
  }

  /** The receiver stored `received` chunks of transfer `transferId`: send on, or forget a finished one. */
  onTransferAck(from: PeerId, message: Extract<LogMessage, { kind: 'transfer_ack' }>): void {
    const outgoing = this.sending.get(from);
    if (outgoing === undefined || outgoing.header.transferId !== message.transferId || message.term !== outgoing.header.term) return;
    if (message.received <= outgoing.acked) return;
    const acked = Math.min(message.received, outgoing.sent);
    // Stored there: never sent again, so let go of it now.
    for (let chunk = outgoing.acked; chunk < acked; chunk += 1) outgoing.chunks[chunk] = [];
    outgoing.acked = acked;
    outgoing.progressMs = this.core.nowMs;
    if (outgoing.acked < outgoing.header.chunkCount) return this.sendWindow(from, outgoing);
    // All acked: the replica is let go; the transfer is kept (see serving) until the receiver acks
    // appends past its index, so that compaction keeps the entries it continues from.
    outgoing.chunks = [];
    outgoing.chunkBytes = [];
  }

  /** Sends the next chunks the window allows (../send-window.ts). */
  private sendWindow(to: PeerId, outgoing: OutgoingTransfer): void {
    if (outgoing.header.term !== this.core.term) {
      this.sending.delete(to);
      return;
    }
    const through = sendableThrough(outgoing.chunkBytes, outgoing.acked, outgoing.sent);
    for (; outgoing.sent < through; outgoing.sent += 1) {
      const chunkNumber = outgoing.sent;
      this.core.send(to, {
        ...outgoing.header,
        chunkNumber,
        entries: itemAt(outgoing.chunks, chunkNumber),
        ...(chunkNumber === 0 ? { committedForwards: outgoing.committedForwards } : {}),
      });
    }
  }

  /** `entries` cut into the read's chunks, each within the entry and byte bounds (at least one entry). */
  private cutChunks(read: TransferRead, entries: readonly KeyedEntry[]): void {
    const { transferChunkEntriesMax: countMax, batchBytesMax: bytesMax } = this.core.tuning;
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
