/**
 * State transfer: copying a whole replica when the log entries a node needs were compacted away,
 * and the start-over when every replica lost its data. A node without a valid replica asks (a
 * follower its leader, a leader its peers in turn); the sender (./transfer-send.ts) reads its
 * replica key by key from its applied index on and sends it in chunks with the asker's writes it
 * already holds; the receiver, here, resets its replica at the first chunk, puts each chunk as
 * it comes (holding none: a replica may be larger than this process's memory) and acks it once
 * stored, then continues the log after the transfer's index, serving nothing until it applied the
 * index the read went through (docs/design.md, "State transfer in the log modes").
 *
 * Owns: the transfer being received, when each peer asked for one we could not serve, the
 * schedule of our own asks, and the transfer's puts not yet completed.
 * Invariants: a follower installs transfers only from its leader, of this term, not older than
 * the leader's replica epoch it has seen; a leader only while it waits for one (see
 * onTransferChunk); a transfer never contradicts a committed entry, and names the start-over its
 * replica descends from, so no write every replica lost is answered stored.
 */

import assert from 'node:assert';
import { itemAt } from '../../runtime/item-at.ts';
import type { KeyedEntry, PeerId, RequestId } from '../types.ts';
import type { Compaction } from './compaction.ts';
import type { LogCore } from './core.ts';
import type { ProgressTracker } from './progress.ts';
import type { TransferSender } from './transfer-send.ts';
import type { CommittedForward, LogMessage } from './types.ts';


interface IncomingTransfer {
  from: PeerId;
  /** The term it was sent in: its acks say so. */
  term: number;
  transferId: number;
  index: number;
  indexTerm: number;
  /** The start-over the transferred replica descends from (0: none): writes up to it are not in it. */
  startOverIndex: number;
  /**
   * How many chunks it comes in, and how far its keys may hold changes (transfer_chunk's
   * `fetchedThrough`): null until a chunk sent once the sender's read was done says so.
   */
  chunkCount: number | null;
  fetchedThrough: number | null;
  /** The numbers of the chunks received (and put: none is held here). */
  received: Set<number>;
  /**
   * Tokens of its chunks' puts not yet completed: the chunks received less these are stored, what
   * the acks say, so the sender's window also bounds what waits for memcached here.
   */
  puts: Set<number>;
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
  private incoming: IncomingTransfer | null = null;

  constructor(
    private readonly core: LogCore,
    private readonly progress: ProgressTracker,
    private readonly compaction: Compaction,
    private readonly requests: TransferRequests,
    /** Our side of the transfers we send (./transfer-send.ts). */
    readonly sender: TransferSender,
    /** Forgets what the replica held, as its backend restarting empty does (ReplicaRepair.forget). */
    private readonly forgetReplica: () => void,
  ) {}

  /** Have the puts of the last transfer (or start-over) all completed? */
  putsDone(): boolean {
    return this.putsPending.size === 0;
  }

  /**
   * The replica is reset or replayed: the puts in flight no longer decide whether it is trusted,
   * and a transfer being put into it is given up (its chunks put so far may be gone).
   */
  forgetPuts(): void {
    this.putsPending.clear();
    this.incoming = null;
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
    if (this.sender.start(from, message.minIndex) || this.core.replicaValid || !message.emptied) return;
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
   * log ends before it, or it refused an append of ours at or before it: either way it lacks the
   * snapshot's entry, so it can only be rebuilt by a transfer too; one whose log was never
   * compacted replays it onto its emptied replica and never asks). Such a peer stays without a
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
      if (progress === undefined) return false;
      const endsBefore = progress.lastIndex >= 0 && progress.lastIndex < this.core.log.snapshotIndex;
      return (
        (endsBefore || progress.refusedAtSnapshotEpoch === this.core.replicaEpoch) &&
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
    const chunkCount = message.chunkCount ?? null;
    const fetchedThrough = chunkCount === null ? null : (message.fetchedThrough ?? message.index);
    let incoming = this.incoming;
    if (incoming !== null && incoming.from === from && incoming.term === message.term && incoming.transferId === message.transferId) {
      const agrees = (known: number | null, said: number | null): boolean => known === null || said === null || known === said;
      const same =
        incoming.index === message.index &&
        incoming.indexTerm === message.indexTerm &&
        incoming.startOverIndex === (message.startOverIndex ?? 0) &&
        agrees(incoming.fetchedThrough, fetchedThrough) &&
        agrees(incoming.chunkCount, chunkCount) &&
        message.chunkNumber < (incoming.chunkCount ?? chunkCount ?? Number.POSITIVE_INFINITY) &&
        (incoming.chunkCount !== null || chunkCount === null || [...incoming.received].every((number) => number < chunkCount));
      if (!same) return this.core.dropMessage(from, `transfer ${message.transferId}: chunks disagree on what they hold`);
      incoming.chunkCount ??= chunkCount;
      incoming.fetchedThrough ??= fetchedThrough;
    } else {
      incoming = {
        from,
        term: message.term,
        transferId: message.transferId,
        index: message.index,
        indexTerm: message.indexTerm,
        startOverIndex: message.startOverIndex ?? 0,
        fetchedThrough,
        chunkCount,
        received: new Set(),
        puts: new Set(),
        committedForwards: [],
      };
      this.begin(incoming);
    }
    if (!incoming.received.has(message.chunkNumber)) {
      incoming.received.add(message.chunkNumber);
      if (message.committedForwards !== undefined) incoming.committedForwards = message.committedForwards;
      this.putChunk(incoming, message.entries);
    } else {
      // Sent again (its ack was lost): say again what we hold.
      this.ack(incoming);
    }
    if (incoming.received.size === incoming.chunkCount) this.installTransfer(incoming);
  }

  /**
   * The first chunk of a transfer: the replica is reset to take the chunks as they come, so it
   * counts as lost from here (not trusted, emptied, serving nothing) until the transfer is
   * installed; one given up midway (forgetPuts) leaves it to be rebuilt by another, which this
   * node asks for as any node without a replica does.
   */
  private begin(incoming: IncomingTransfer): void {
    const core = this.core;
    this.forgetReplica();
    this.incoming = incoming;
    if (core.replicaValid) {
      core.replicaValid = false;
      core.replicaEpoch += 1;
    }
    // Also with nothing compacted (a log that could rebuild it): it holds part of a transfer now.
    core.setReplicaTrusted(false);
    core.transferMinIndex ??= core.log.snapshotIndex;
    this.nextTransferRequestMs = core.nowMs + core.failureTimeoutMs;
    core.out.push({ kind: 'reset' });
  }

  /** Puts one chunk (at least one put per transfer, even of an empty replica: it marks where the state ends). */
  private putChunk(incoming: IncomingTransfer, entries: KeyedEntry[]): void {
    const token = this.core.nextStoreToken();
    this.putsPending.add(token);
    incoming.puts.add(token);
    this.core.memory.arrived(entries);
    this.core.out.push({ kind: 'put', entries, how: 'overwrite', token });
  }

  /** Tells the sender how many chunks are stored here: its window sends on from there (../send-window.ts). */
  private ack(incoming: IncomingTransfer): void {
    const stored = incoming.received.size - incoming.puts.size;
    this.core.send(incoming.from, { kind: 'transfer_ack', term: incoming.term, transferId: incoming.transferId, received: stored });
  }

  /** Whether an entry of `term` at `index` would contradict one this node knows is committed. */
  private contradictsCommitted(index: number, term: number): boolean {
    if (index > this.core.commitIndex) return false;
    const termHere = this.core.log.termAt(index);
    return termHere !== null && termHere !== term;
  }

  /**
   * Every chunk is put (or on its way): the replica is the transferred one, trusted once the puts
   * completed; continue the log after its index.
   */
  private installTransfer(incoming: IncomingTransfer): void {
    const { index, indexTerm } = incoming;
    this.core.note('info', 'state transfer received', { peer: incoming.from, index, fetchedThrough: incoming.fetchedThrough, chunks: incoming.chunkCount });
    // The transferred state may hold writes of this node's clients that were never applied here
    // (committed while it lagged, some before their entries reached it): a read a connection sent
    // before such a write must not see it, and it can no longer be served without it.
    this.requests.refuseReadsBeforeUnsettledWrites();
    this.requests.markUnsure();
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
    // Reset at the first chunk: until the puts are confirmed (trusted), it counts as emptied still. If every
    // replica is lost meanwhile, a start-over may discard it: what it holds up to the snapshot is
    // what the README says such a loss costs, and after the snapshot is in the logs.
    this.core.replicaEmptied = true;
    this.core.transferMinIndex = null;
    if (this.core.catchUpIndex === null && this.core.role === 'follower' && this.core.leader === incoming.from) this.core.catchUpIndex = index;
    // Known with the chunk count, without which it is not installed.
    this.aheadThrough(incoming.fetchedThrough ?? index);
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
    const incoming = this.incoming;
    if (incoming !== null && incoming.puts.delete(token)) {
      this.ack(incoming);
      if (incoming.puts.size === 0 && incoming.received.size === incoming.chunkCount) this.incoming = null;
    }
    // Trusted once the puts of an installed transfer (or a start-over) all completed.
    if (!this.putsPending.delete(token) || this.putsPending.size > 0 || !this.core.replicaValid) return;
    this.core.setReplicaTrusted(true);
  }
}
