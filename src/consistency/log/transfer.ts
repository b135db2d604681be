/**
 * State transfer: copying a whole replica when the log entries a node needs were compacted away,
 * and the start-over when every replica lost its data. A node without a valid replica asks (a
 * follower its leader, a leader its peers in turn); the sender fetches its replica as of its
 * applied index (effects are ordered, so the fetch sees exactly that) and sends it in chunks with
 * the asker's writes it already holds; the receiver resets its replica, puts the chunks and
 * continues the log after the transfer's index. The chunks leave a window at a time, the receiver
 * acking what it holds (../send-window.ts). While a transfer to a peer makes progress, its asks
 * start no other.
 *
 * Owns: the transfers being fetched, sent and received, when each peer asked for one we could not
 * serve, the schedule of our own asks, and the transfer's puts not yet completed.
 * Invariants: a follower installs transfers only from its leader, of this term, not older than
 * the leader's replica epoch it has seen; a leader only while it waits for one (see
 * onTransferChunk); a transfer never contradicts a committed entry, and names the start-over its
 * replica descends from, so no write every replica lost is answered stored.
 */

import assert from 'node:assert';
import { itemAt } from '../../runtime/item-at.ts';
import { sendableThrough } from '../send-window.ts';
import type { KeyedEntry, PeerId, RequestId } from '../types.ts';
import type { Compaction } from './compaction.ts';
import type { LogCore } from './core.ts';
import type { ProgressTracker } from './progress.ts';
import { batchCount, keyedEntryBytes, type CommittedForward, type LogMessage } from './types.ts';

/**
 * A transfer whose receiver acked nothing for a failure timeout (it acks every chunk, and asks
 * again only after one) is given up: its next ask starts another, as after a restart it must. One
 * it installed is kept (for its index) this many failure timeouts at most. A fetch of the replica
 * for one is never given up: reading millions of keys takes longer than any such bound (and a
 * fetch given up and started again would never end), and one that fails resets the replica,
 * which forgets it (forgetOutgoing, forgetFetches).
 */
const TRANSFER_KEPT_FAILURE_TIMEOUTS = 5;

/** A transfer being sent (its id and term in the header): its chunks, how many left, how many the receiver holds. */
interface OutgoingTransfer {
  header: Omit<Extract<LogMessage, { kind: 'transfer_chunk' }>, 'chunkNumber' | 'entries' | 'committedForwards'>;
  committedForwards: CommittedForward[];
  /** Let go once every chunk is acked. */
  chunks: KeyedEntry[][];
  chunkBytes: number[];
  sent: number;
  acked: number;
  /** When it started or the receiver last acked more. */
  progressMs: number;
}

interface IncomingTransfer {
  from: PeerId;
  transferId: number;
  index: number;
  indexTerm: number;
  /** The start-over the transferred replica descends from (0: none): writes up to it are not in it. */
  startOverIndex: number;
  /** Its keys may hold changes up to here (transfer_chunk's `fetchedThrough`). */
  fetchedThrough: number;
  chunks: Array<KeyedEntry[] | undefined>;
  received: number;
  /** From the first chunk: the writes of ours the transferred state holds. */
  committedForwards: readonly CommittedForward[];
}

/** What an installed transfer asks of the requests' bookkeeping. */
export interface TransferRequests {
  /** The transferred state may pass writes of this node's sessions: the reads sent before them are refused. */
  refuseReadsBeforeUnsettledWrites(): void;
  /** A write of ours the transferred state holds, committed at `index`, is answered. */
  answerTransferredWrite(requestId: RequestId, index: number): void;
  /** A write of ours committed at or before the transferred state's start-over is refused: it was lost. */
  refuseErasedWrite(requestId: RequestId): void;
  /** The transferred state may hold our sent writes unseen here: none of them may be sent again. */
  markUnsure(): void;
}

export class StateTransfer {
  /** Tokens of a transfer's puts not yet completed; the replica is trusted once none is left. */
  private readonly putsPending = new Set<number>();
  /** When each peer whose backend restarted empty last asked us for a transfer we could not serve. */
  private readonly askedMs = new Map<PeerId, number>();
  private nextTransferRequestMs = 0;
  private transferTarget = 0;
  /** Fetches of our replica for a transfer, by store token. */
  private readonly outgoingTransfers = new Map<
    number,
    { to: PeerId; term: number; index: number; indexTerm: number; replicaEpoch: number; startOverIndex: number }
  >();
  /** The transfer being sent to each peer. */
  private readonly sending = new Map<PeerId, OutgoingTransfer>();
  private incoming: IncomingTransfer | null = null;

  constructor(
    private readonly core: LogCore,
    private readonly progress: ProgressTracker,
    private readonly compaction: Compaction,
    private readonly requests: TransferRequests,
  ) {}

  /** Have the puts of the last transfer (or start-over) all completed? */
  putsDone(): boolean {
    return this.putsPending.size === 0;
  }

  /** The replica is reset or replayed: the puts in flight no longer decide whether it is trusted. */
  forgetPuts(): void {
    this.putsPending.clear();
  }

  /** Our replica is lost: transfers of it fetched or sent under its old epoch are of no use now. */
  forgetOutgoing(): void {
    this.forgetFetches();
    this.sending.clear();
  }

  /** Our replica is replayed from the snapshot: a read of it in flight cannot say how far ahead it is. */
  forgetFetches(): void {
    this.outgoingTransfers.clear();
  }

  /** A new leader (this node): asks counted in an earlier term do not count in this one. */
  leaderElected(): void {
    this.askedMs.clear();
  }

  /** Our replica is lost: ask for a transfer now. */
  want(minIndex: number): void {
    // Asks counted before this loss were answered, or could have been, by the replica we had.
    this.askedMs.clear();
    this.core.transferMinIndex = minIndex;
    this.nextTransferRequestMs = this.core.nowMs;
  }

  /**
   * A follower asks its leader for a replica; a leader asks its peers in turn; a node that knows
   * no leader waits for one. (Only those transfers are installed: see onTransferChunk.)
   */
  requestIfDue(): void {
    if (this.core.transferMinIndex === null || this.core.nowMs < this.nextTransferRequestMs) return;
    let target: PeerId | null = null;
    if (this.core.role === 'leader' && this.core.peers.length > 0) {
      target = itemAt(this.core.peers, this.transferTarget % this.core.peers.length);
      this.transferTarget += 1;
    } else if (this.core.role === 'follower') {
      target = this.core.leader;
    }
    if (target === null) return;
    this.nextTransferRequestMs = this.core.nowMs + this.core.failureTimeoutMs;
    this.core.send(target, { kind: 'transfer_request', term: this.core.term, minIndex: this.core.transferMinIndex, emptied: this.core.replicaEmptied, replicaEpoch: this.core.leaderReplicaEpoch });
  }

  onTransferRequest(from: PeerId, message: Extract<LogMessage, { kind: 'transfer_request' }>): void {
    if (this.start(from, message.minIndex) || this.core.replicaValid || !message.emptied) return;
    // Only an ask that has seen our replica lost: no transfer of ours can rebuild it any more.
    if (this.core.role !== 'leader' || message.term !== this.core.term || (message.replicaEpoch ?? 0) !== this.core.replicaEpoch) return;
    this.askedMs.set(from, this.core.nowMs);
    this.startOverIfEveryReplicaLost();
  }

  /**
   * Every replica lost its contents (every memcached restarted empty, as after a reboot) and the
   * log was compacted, so no node can rebuild from another: the data up to the snapshot is gone.
   * The leader knows it when its own backend restarted empty and every peer, in this term, has
   * lately asked it for a transfer saying the same of its own, or lags behind the snapshot (its
   * log ends before it, so it can only be rebuilt by a transfer too). Such a peer stays without a
   * replica until this leader serves one, since a follower installs transfers only from its
   * leader; so when the leader decides, no replica holds anything. Rather than refuse forever, it
   * starts over from an empty replica as of the snapshot and replays the log after it; the peers
   * then get that by transfer, so every replica holds the same. (A replica that is merely
   * untrusted, after a failed write, may still hold the data: then the cluster keeps refusing.)
   */
  startOverIfEveryReplicaLost(): void {
    if (this.core.role !== 'leader' || this.core.replicaValid || !this.core.replicaEmptied || this.core.transferMinIndex === null) return;
    const windowMs = 2 * this.core.failureTimeoutMs;
    const lost = (peer: PeerId): boolean => {
      if (this.core.nowMs - (this.askedMs.get(peer) ?? Number.NEGATIVE_INFINITY) <= windowMs) return true;
      const progress = this.progress.get(peer);
      return (
        progress !== undefined &&
        progress.lastIndex >= 0 &&
        progress.lastIndex < this.core.log.snapshotIndex &&
        progress.replicaEpochSeen === this.core.replicaEpoch &&
        this.core.nowMs - progress.lastAckMs < this.core.failureTimeoutMs
      );
    };
    if (!this.core.peers.every(lost)) return;
    this.core.note('warn', 'every replica lost its data and the log was compacted: starting over from an empty replica', {
      snapshotIndex: this.core.log.snapshotIndex,
      lastIndex: this.core.log.lastIndex(),
    });
    this.askedMs.clear();
    this.core.out.push({ kind: 'reset' });
    // As after a transfer: one put marks where the (empty) state ends; trusted once it completed.
    const token = this.core.nextStoreToken();
    this.putsPending.add(token);
    this.core.out.push({ kind: 'put', entries: [], how: 'overwrite', token });
    this.core.appliedIndex = this.core.log.snapshotIndex;
    this.core.replicaValid = true;
    this.core.transferMinIndex = null;
    // The writes committed up to here are gone from every replica: the transfers served from this
    // one (and from its copies) must say so, also after a restart, rather than answer them stored.
    this.core.replicaStartOverIndex = this.core.log.snapshotIndex;
    this.core.persistSnapshot();
  }

  /**
   * Fetch the whole replica as of the applied index (effects are ordered, so it sees exactly that)
   * to send it to `to`; true also while a transfer to `to` is fetched, or sent and acked lately.
   */
  start(to: PeerId, minIndex: number): boolean {
    if (!this.core.replicaValid || this.core.appliedIndex < minIndex || this.core.appliedIndex === 0) return false;
    if (this.core.appliedIndex < this.core.replayUntilIndex) return false;
    if (this.serving(to)) return true;
    const indexTerm = this.core.log.termAt(this.core.appliedIndex);
    assert(indexTerm !== null);
    const token = this.core.nextStoreToken();
    const { appliedIndex: index, replicaEpoch, replicaStartOverIndex: startOverIndex, term } = this.core;
    this.outgoingTransfers.set(token, { to, term, index, indexTerm, replicaEpoch, startOverIndex });
    this.core.out.push({ kind: 'fetch', token, keys: null });
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
    const peers = new Set([...this.sending.keys(), ...[...this.outgoingTransfers.values()].map((fetch) => fetch.to)]);
    for (const peer of peers) this.serving(peer);
  }

  /** Is a transfer to `to` fetched, or sent in this term and acked lately? (A stalled one is dropped.) */
  private serving(to: PeerId): boolean {
    const { nowMs, failureTimeoutMs } = this.core;
    for (const fetch of this.outgoingTransfers.values()) if (fetch.to === to && fetch.term === this.core.term) return true;
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

  onFetched(token: number, entries: KeyedEntry[]): void {
    const transfer = this.outgoingTransfers.get(token);
    if (transfer === undefined) return;
    this.outgoingTransfers.delete(token);
    // Asked for in an earlier term: its receiver takes transfers only of its leader in this one.
    if (transfer.term !== this.core.term) return;
    const { chunks, chunkBytes } = this.transferChunks(entries);
    const chunkCount = chunks.length;
    // The fetch read key by key while applies went on (with skipping replays): its keys may hold any of them.
    const fetchedThrough = this.core.replicaSkipsApplied ? Math.max(transfer.index, this.core.appliedIndex) : transfer.index;
    this.core.note('info', 'state transfer sent', { peer: transfer.to, index: transfer.index, fetchedThrough, keys: entries.length, chunks: chunkCount });
    const outgoing: OutgoingTransfer = {
      header: {
        kind: 'transfer_chunk',
        term: this.core.term,
        replicaEpoch: transfer.replicaEpoch,
        startOverIndex: transfer.startOverIndex,
        transferId: token,
        index: transfer.index,
        indexTerm: transfer.indexTerm,
        fetchedThrough,
        chunkCount,
      },
      committedForwards: this.forwardsCommittedThrough(transfer.to, transfer),
      chunks,
      chunkBytes,
      sent: 0,
      acked: 0,
      progressMs: this.core.nowMs,
    };
    this.sending.set(transfer.to, outgoing);
    this.sendWindow(transfer.to, outgoing);
  }

  /** The receiver holds `received` chunks of transfer `transferId`: send on, or forget a finished one. */
  onTransferAck(from: PeerId, message: Extract<LogMessage, { kind: 'transfer_ack' }>): void {
    const outgoing = this.sending.get(from);
    if (outgoing === undefined || outgoing.header.transferId !== message.transferId || message.term !== outgoing.header.term) return;
    if (message.received <= outgoing.acked) return;
    outgoing.acked = Math.min(message.received, outgoing.sent);
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

  /** A replica cut into chunks within the entry and byte bounds; at least one (maybe empty). */
  private transferChunks(entries: readonly KeyedEntry[]): { chunks: KeyedEntry[][]; chunkBytes: number[] } {
    const chunks: KeyedEntry[][] = [];
    const chunkBytes: number[] = [];
    const limits = { countMax: this.core.tuning.transferChunkEntriesMax, bytesMax: this.core.tuning.batchBytesMax };
    let start = 0;
    while (start < entries.length) {
      const count = batchCount((at) => keyedEntryBytes(itemAt(entries, start + at)), entries.length - start, limits);
      const chunk = entries.slice(start, start + count);
      chunks.push(chunk);
      chunkBytes.push(chunk.reduce((sum, entry) => sum + keyedEntryBytes(entry), 0));
      start += count;
    }
    if (chunks.length === 0) return { chunks: [[]], chunkBytes: [0] };
    return { chunks, chunkBytes };
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

  /**
   * Installs only a transfer of this term: as a follower, from this term's leader and not older
   * than the leader's replica epoch it has seen; as the leader, from any peer, but only while it
   * waits for one. So a follower that asked its leader for one (telling it its replica was lost)
   * is rebuilt by that leader or not at all, and a start-over is never overwritten by a late chunk:
   * both of which the leader's start-over relies on.
   */
  onTransferChunk(from: PeerId, message: Extract<LogMessage, { kind: 'transfer_chunk' }>): void {
    if (message.term !== this.core.term) return;
    if (this.core.role === 'leader') {
      // Only while it waits for one: a late chunk must not replace what a start-over began.
      if (this.core.transferMinIndex === null) return;
    } else if (from !== this.core.leader || (message.replicaEpoch ?? 0) < this.core.leaderReplicaEpoch) {
      return;
    }
    if (this.core.replicaValid && message.index <= this.core.appliedIndex) return;
    if (message.index < this.core.log.snapshotIndex) return;
    if (this.contradictsCommitted(message.index, message.indexTerm)) {
      return this.core.dropMessage(from, `transfer at ${message.index} disagrees with a committed entry`);
    }
    let incoming = this.incoming;
    if (incoming !== null && incoming.from === from && incoming.transferId === message.transferId) {
      const same =
        incoming.index === message.index &&
        incoming.indexTerm === message.indexTerm &&
        incoming.startOverIndex === (message.startOverIndex ?? 0) &&
        incoming.fetchedThrough === (message.fetchedThrough ?? message.index) &&
        incoming.chunks.length === message.chunkCount;
      if (!same) return this.core.dropMessage(from, `transfer ${message.transferId}: chunks disagree on what they hold`);
    } else {
      incoming = {
        from,
        transferId: message.transferId,
        index: message.index,
        indexTerm: message.indexTerm,
        startOverIndex: message.startOverIndex ?? 0,
        fetchedThrough: message.fetchedThrough ?? message.index,
        chunks: new Array<KeyedEntry[] | undefined>(message.chunkCount),
        received: 0,
        committedForwards: [],
      };
      this.incoming = incoming;
    }
    if (incoming.chunks[message.chunkNumber] === undefined) {
      incoming.chunks[message.chunkNumber] = message.entries;
      if (message.committedForwards !== undefined) incoming.committedForwards = message.committedForwards;
      incoming.received += 1;
    }
    // What we hold lets the sender send on (../send-window.ts).
    this.core.send(from, { kind: 'transfer_ack', term: this.core.term, transferId: incoming.transferId, received: incoming.received });
    if (incoming.received === incoming.chunks.length) this.installTransfer(incoming);
  }

  /** Whether an entry of `term` at `index` would contradict one this node knows is committed. */
  private contradictsCommitted(index: number, term: number): boolean {
    if (index > this.core.commitIndex) return false;
    const termHere = this.core.log.termAt(index);
    return termHere !== null && termHere !== term;
  }

  /** Replace the replica with the transferred one and continue the log after its index. */
  private installTransfer(incoming: IncomingTransfer): void {
    this.incoming = null;
    const { index, indexTerm } = incoming;
    this.core.note('info', 'state transfer received', { peer: incoming.from, index, fetchedThrough: incoming.fetchedThrough, chunks: incoming.chunks.length });
    // The transferred state may hold writes of this node's clients that were never applied here
    // (committed while it lagged, some before their entries reached it): a read a connection sent
    // before such a write must not see it, and it can no longer be served without it.
    this.requests.refuseReadsBeforeUnsettledWrites();
    this.requests.markUnsure();
    this.core.out.push({ kind: 'reset' });
    // At least one put, even for an empty replica: it marks where the transferred state ends.
    // Until every put completed, a restart must not trust the replica.
    this.compaction.forget();
    this.putsPending.clear();
    this.core.replayUntilIndex = 0;
    this.core.replicaTrusted = false;
    for (const chunk of incoming.chunks) {
      const token = this.core.nextStoreToken();
      this.putsPending.add(token);
      this.core.memory.arrived(chunk ?? []);
      this.core.out.push({ kind: 'put', entries: chunk ?? [], how: 'overwrite', token });
    }
    if (this.core.log.termAt(index) === indexTerm) {
      // Our log matches the transfer's up to its index: what it drops is committed.
      const dropped = this.core.log.compactTo(index);
      for (const entry of dropped) {
        this.core.forgetProposal(entry);
        if (entry.origin === this.core.self && entry.incarnation === this.core.incarnation && entry.requestId !== null) {
          this.answerOurWrite(incoming, entry.requestId, entry.index);
        }
      }
      this.compaction.noteDropped(dropped);
    } else {
      // Checked on receipt of every chunk (contradictsCommitted), and the commit index only grows
      // by log entries that agree with the leader's, whose transfer this is.
      assert(index > this.core.commitIndex, 'a transfer disagrees with a committed entry');
      for (const dropped of this.core.log.resetTo(index, indexTerm)) this.core.forgetProposal(dropped);
    }
    for (const { incarnation, requestId, index: entryIndex } of incoming.committedForwards) {
      if (incarnation === this.core.incarnation) this.answerOurWrite(incoming, requestId, entryIndex);
    }
    this.core.replicaStartOverIndex = incoming.startOverIndex;
    this.core.commitIndex = Math.max(this.core.commitIndex, index);
    this.core.appliedIndex = index;
    this.core.replicaValid = true;
    // Reset above: until the puts are confirmed (trusted), it counts as emptied still. If every
    // replica is lost meanwhile, a start-over may discard it: what it holds up to the snapshot is
    // what the README says such a loss costs, and after the snapshot is in the logs.
    this.core.replicaEmptied = true;
    this.core.transferMinIndex = null;
    if (this.core.catchUpIndex === null && this.core.role === 'follower' && this.core.leader === incoming.from) this.core.catchUpIndex = index;
    this.aheadThrough(incoming.fetchedThrough);
    this.core.persistSnapshot();
  }

  /**
   * The installed replica's keys may hold changes up to `through` (a read key by key): until it
   * applied that far it serves no read, since two keys may show two points of the log, nor a
   * transfer of its own; our writes up to it are answered as the transfer's.
   */
  private aheadThrough(through: number): void {
    const core = this.core;
    if (through <= core.appliedIndex) return;
    core.replayUntilIndex = through;
    core.transferAheadThrough = through;
    core.caughtUp = false;
    if (core.catchUpIndex !== null) core.catchUpIndex = Math.max(core.catchUpIndex, through);
  }

  /**
   * A write of ours committed at `index` that this node never applied: the transferred state holds
   * it, unless it was committed at or before the start-over that state descends from (lost then).
   */
  private answerOurWrite(incoming: IncomingTransfer, requestId: RequestId, index: number): void {
    if (index <= incoming.startOverIndex) this.requests.refuseErasedWrite(requestId);
    else this.requests.answerTransferredWrite(requestId, index);
  }

  onApplied(token: number): void {
    if (!this.putsPending.delete(token) || this.putsPending.size > 0) return;
    this.core.setReplicaTrusted(true);
  }
}
