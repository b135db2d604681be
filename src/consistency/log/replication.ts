/**
 * Log replication (Raft §5.3): the leader's side sends each follower what it lacks, pipelined and
 * batched within the in-flight and byte bounds, rewinds on a rejection, and commits what a
 * majority holds; the follower's side checks an append against what it knows is committed,
 * matches logs, cuts a conflicting suffix and learns the commit index. Pings and pongs ride
 * ahead of the disk: they move no log state, only tell a follower its leader lives.
 *
 * With read leases (./lease.ts) appends carry the leader's clock and grants, replies echo the one
 * and ask for the other, and the commit waits for every peer whose lease is honoured.
 *
 * Owns: the heartbeat's schedule, and how many of the log's last entries are not durable yet
 * while a flush sends before writing. The per-follower state is ./progress.ts's.
 * Invariants: only entries of the current term are committed by counting replicas; a committed
 * entry is never changed (an append that would is dropped, see appendProblem); with read leases,
 * no entry is committed that a peer honoured now has not acked.
 */

import assert from 'node:assert';
import type { PeerId } from '../types.ts';
import type { LogCore } from './core.ts';
import type { Progress, ProgressTracker } from './progress.ts';
import type { ReadIndex } from './read-index.ts';
import type { ReadLeases } from './lease.ts';
import { FollowerHolds } from './follower-holds.ts';
import { batchCount, opBytes, type LeaseGrant, type LogEntry, type LogMessage } from './types.ts';

/** What replication asks of the rest of the machine: elections, and recovery (`accepted`). */
type AppendReply = Extract<LogMessage, { kind: 'append_reply' }>;

export interface ReplicationElection {
  /** The leader of `term` as this node knows it (itself while it leads), if known. */
  leaderOf(term: number): PeerId | undefined;
  /** An append or ping of `term` from `leader`: follow it, if not already. */
  follow(term: number, leader: PeerId): void;
  resetElectionTimer(): void;
  /** Pushes the election back as a reset would, with the last draw: a ping draws no randomness. */
  extendElectionTimer(): void;
  /** An append of `term` was accepted: our log matches its leader's up to `matchIndex` (see ./recovery.ts). */
  accepted(term: number, matchIndex: number): void;
}

/**
 * Sequential mode (see Replication.appendCanWait): the longest an entry waits for a follower that
 * need not have it yet, ms, and the most entries that wait so (a full batch leaves at once).
 */
export const DEFERRED_APPEND_MS = 8;
const DEFERRED_APPEND_ENTRIES_MAX = 64;
/**
 * The longest a bare commit notice waits when followers share holds (see ./follower-holds.ts):
 * shorter, because the leader's own clients' writes wait for it.
 */
const DEFERRED_NOTICE_MS = 2;

export class Replication {
  /** The last this many entries of the log are not written yet (only while a flush sends before writing). */
  private notDurableCount = 0;
  /** When the leader's next heartbeat is due. */
  private heartbeatDueMs = 0;
  /** A follower's ack of an append that nobody waits for, not sent yet (see ackCanWait). */
  private owedAck: { to: PeerId; ack: AppendReply } | null = null;
  /** When the wake-up asked for by deferred appends is due (see appendCanWait). */
  private deferredWakeMs = Number.NEGATIVE_INFINITY;
  /** Followers sharing holds (linearizability with read leases, three nodes), or null. */
  readonly holds: FollowerHolds | null;

  constructor(
    private readonly core: LogCore,
    private readonly progress: ProgressTracker,
    private readonly reads: ReadIndex,
    private readonly election: ReplicationElection,
    /** Starts a state transfer to a follower that needs compacted entries (see ./transfer.ts). */
    private readonly startTransfer: (to: PeerId, minIndex: number) => boolean,
    /** Read leases, or null when off. */
    private readonly leases: ReadLeases | null = null,
  ) {
    this.holds = core.followersShareHolds ? new FollowerHolds(core, progress) : null;
  }

  /** A new leader (this node) sends its first heartbeat at its next tick. */
  leaderElected(): void {
    this.heartbeatDueMs = this.core.nowMs;
  }

  /** The leader's heartbeat, once an interval: an append (maybe empty) and a ping to every follower. */
  heartbeatIfDue(): void {
    if (this.core.nowMs < this.heartbeatDueMs) return;
    this.heartbeatDueMs = this.core.nowMs + this.core.heartbeatIntervalMs;
    for (const peer of this.core.peers) {
      this.sendAppend(peer, true);
      this.core.sendBeforeDurable(peer, { kind: 'ping', term: this.core.term });
    }
  }

  /**
   * A leader's flush: the appends leave before our own copy of the last `notDurable` entries is
   * written (the caller persists them next); a read-confirming round goes with them if `round`.
   */
  sendAppends(notDurable: number, round: boolean): void {
    this.notDurableCount = notDurable;
    const confirmers: readonly PeerId[] = round ? this.roundConfirmers() : [];
    const deferring = this.appendsMayWait();
    const acker = deferring ? this.progress.freshest() : null;
    for (const peer of this.core.peers) {
      const confirms = confirmers.includes(peer);
      if (!confirms && deferring && this.appendCanWait(peer, acker)) continue;
      if (!confirms && this.holds !== null && this.noticeCanWait(peer, this.holds)) continue;
      this.sendAppend(peer, confirms);
    }
    this.notDurableCount = 0;
  }

  /**
   * Sequential mode, three nodes, our copy written before the appends leave (wal_sync = write, no
   * read leases): an entry is committed once one follower holds it (see appendEntries), so only
   * one needs it at once: the write's origin, or for our own clients' writes the follower heard
   * from last. The other gets it with the next append that must leave anyway, or within
   * DEFERRED_APPEND_MS: one wake-up there for a few writes instead of one each. Sequential
   * consistency lets its readers see the writes of others that much later; its own clients'
   * writes reach it at once.
   */
  private appendsMayWait(): boolean {
    return this.core.mode === 'sequential' && this.core.majority === 2 && this.leases === null && this.notDurableCount === 0 && this.core.bootId !== null;
  }

  /** Whether the append to `peer` may wait (see appendsMayWait); if so, a wake-up is asked for when it is due. */
  private appendCanWait(peer: PeerId, acker: PeerId | null): boolean {
    const progress = this.progress.get(peer);
    assert(progress !== undefined);
    return this.deferUntilDue(progress, this.unsentCanWait(progress.sentIndex, peer, acker), DEFERRED_APPEND_MS);
  }

  /**
   * Followers sharing holds: a bare commit notice may wait as a deferred append does, when the
   * follower was told of its own writes (see FollowerHolds.noticeMayWait).
   */
  private noticeCanWait(peer: PeerId, holds: FollowerHolds): boolean {
    const progress = this.progress.get(peer);
    assert(progress !== undefined);
    return this.deferUntilDue(progress, holds.noticeMayWait(peer, progress), DEFERRED_NOTICE_MS);
  }

  /** Whether a send to `progress`'s follower that `canWait` may wait more (`waitMs` in all); if so, a wake-up is asked for when due. */
  private deferUntilDue(progress: Progress, canWait: boolean, waitMs: number): boolean {
    const since = progress.deferredSinceMs ?? this.core.nowMs;
    const dueMs = since + waitMs;
    if (this.core.nowMs >= dueMs || !canWait) {
      progress.deferredSinceMs = null;
      return false;
    }
    progress.deferredSinceMs = since;
    if (this.deferredWakeMs < this.core.nowMs || this.deferredWakeMs > dueMs) {
      this.deferredWakeMs = dueMs;
      this.core.out.push({ kind: 'wake', afterMs: dueMs - this.core.nowMs });
    }
    return true;
  }

  /** Whether the entries after `sentIndex` are few, all in the log, and none is one `peer` must have now. */
  private unsentCanWait(sentIndex: number, peer: PeerId, acker: PeerId | null): boolean {
    const log = this.core.log;
    const unsent = log.lastIndex() - sentIndex;
    if (unsent <= 0 || unsent > DEFERRED_APPEND_ENTRIES_MAX || sentIndex < log.snapshotIndex) return false;
    for (let index = sentIndex + 1; index <= log.lastIndex(); index += 1) {
      const origin = log.entryAt(index).origin;
      if (origin === peer || (origin === this.core.self && peer === acker)) return false;
    }
    return true;
  }

  onAppend(from: PeerId, message: Extract<LogMessage, { kind: 'append' }>): void {
    if (message.term < this.core.term) {
      this.core.send(from, { kind: 'append_reply', term: this.core.term, success: false, matchIndex: 0, hintIndex: 0, round: message.round, seq: message.seq, commitIndex: this.core.commitIndex, replicaEpoch: 0, lastIndex: this.core.log.lastIndex() });
      return;
    }
    const problem = this.appendProblem(from, message);
    if (problem !== null) return this.core.dropMessage(from, problem);
    this.election.follow(message.term, from);
    if ((message.replicaEpoch ?? 0) > this.core.leaderReplicaEpoch) {
      // Remembered across a restart: a chunk older than it must stay refused (see onTransferChunk).
      this.core.leaderReplicaEpoch = message.replicaEpoch ?? 0;
      this.core.persistHardState();
    }
    this.core.lastLeaderContactMs = this.core.nowMs;
    this.election.resetElectionTimer();
    const reply = this.appendEntries(message);
    if (reply.success) this.election.accepted(message.term, reply.matchIndex);
    // After the entries: a grant is used only once its index is known committed here.
    if (this.leases !== null && message.lease !== undefined) this.leases.onGrant(message.lease);
    if (reply.success && this.holds !== null) this.holds.accepted(from, message, reply.matchIndex);
    if (message.quiet && reply.success) return;
    const echo = message.sentMs === undefined ? {} : { sentMs: message.sentMs };
    const lease = this.leases === null ? {} : { ...echo, leaseAsk: this.leases.ask() };
    const ack: AppendReply = { kind: 'append_reply', term: this.core.term, round: message.round, seq: message.seq, commitIndex: this.core.commitIndex, replicaEpoch: this.core.leaderReplicaEpoch, lastIndex: this.core.log.lastIndex(), ...reply, ...lease };
    if (reply.success && this.ackCanWait(from, message, reply.matchIndex)) {
      this.owedAck = { to: from, ack };
      return;
    }
    this.owedAck = null;
    this.core.send(from, ack);
  }

  /**
   * Sequential mode, three nodes: an ack nobody waits for. This follower committed everything the
   * append held on receipt (see appendEntries), so it needs no commit notice, and no entry is the
   * leader's own client's write (whose reply waits for the leader's commit): the ack only moves
   * the leader's own apply and compaction. It rides with the next message to the leader (the
   * forward of a write taken here) or leaves at the next tick, whichever comes first. Heartbeats
   * are answered at once, so failure detection does not change.
   */
  private ackCanWait(leader: PeerId, message: Extract<LogMessage, { kind: 'append' }>, matchIndex: number): boolean {
    if (this.core.mode !== 'sequential' || this.leases !== null || message.entries.length === 0 || this.core.commitIndex < matchIndex) return false;
    for (const entry of message.entries) if (entry.origin === leader) return false;
    return true;
  }

  /** Sends the ack owed to the leader, if any (see ackCanWait): with a forward, or at a tick. */
  sendOwedAck(): void {
    const owed = this.owedAck;
    if (owed === null) return;
    this.owedAck = null;
    if (owed.ack.term === this.core.term && this.core.leader === owed.to) this.core.send(owed.to, owed.ack);
  }

  /**
   * The leader's ping: it may overtake the leader's earlier appends, held by its disk, so it moves
   * no log state: it only tells this node its leader lives (no election) and is answered at once.
   */
  onPing(from: PeerId, message: Extract<LogMessage, { kind: 'ping' }>): void {
    if (message.term < this.core.term) return this.core.sendBeforeDurable(from, { kind: 'pong', term: this.core.term });
    const leader = this.election.leaderOf(message.term);
    if (leader !== undefined && leader !== from) return this.core.dropMessage(from, `two leaders in term ${message.term}: ${leader} and ${from}`);
    this.election.follow(message.term, from);
    this.core.lastLeaderContactMs = this.core.nowMs;
    this.election.extendElectionTimer();
    this.core.sendBeforeDurable(from, { kind: 'pong', term: this.core.term });
  }

  /**
   * Why an append of this term (well formed) cannot come from a correct leader, or null: another
   * node leads this term (this one, maybe), or it would change an entry this node knows is
   * committed, or put an entry of an older term right after the snapshot.
   */
  private appendProblem(from: PeerId, message: Extract<LogMessage, { kind: 'append' }>): string | null {
    const leader = this.election.leaderOf(message.term);
    if (leader !== undefined && leader !== from) return `two leaders in term ${message.term}: ${leader} and ${from}`;
    const log = this.core.log;
    for (const entry of message.entries) {
      if (entry.index <= log.snapshotIndex) continue;
      if (entry.index > this.core.commitIndex || entry.index > log.lastIndex()) break;
      if (log.termAt(entry.index) !== entry.term) return `append would change committed entry ${entry.index}`;
    }
    const first = message.entries.find((entry) => entry.index > log.snapshotIndex);
    if (message.prevIndex < log.snapshotIndex && first !== undefined && first.term < log.snapshotTerm) {
      return 'append puts an older term after the snapshot';
    }
    return null;
  }

  /** Log matching: accept entries after a matching prevIndex; cut a conflicting suffix. */
  private appendEntries(
    message: Extract<LogMessage, { kind: 'append' }>,
  ): { success: boolean; matchIndex: number; hintIndex: number } {
    const log = this.core.log;
    const lastSent = message.prevIndex + message.entries.length;
    let prevIndex = message.prevIndex;
    let entries = message.entries;
    if (prevIndex < log.snapshotIndex) {
      // Entries up to the snapshot are committed here, hence identical: skip them.
      entries = entries.filter((entry) => entry.index > log.snapshotIndex);
      prevIndex = log.snapshotIndex;
      if (entries.length === 0 && lastSent <= log.snapshotIndex) {
        return { success: true, matchIndex: lastSent, hintIndex: 0 };
      }
    } else {
      if (prevIndex > log.lastIndex()) return { success: false, matchIndex: 0, hintIndex: log.lastIndex() + 1 };
      const termHere = log.termAt(prevIndex);
      if (termHere !== message.prevTerm) return { success: false, matchIndex: 0, hintIndex: this.conflictHint(prevIndex) };
    }
    this.storeEntries(entries);
    this.learnCommit(Math.min(message.commitIndex, lastSent));
    // Sequential, three nodes: the leader and this follower are a majority. The leader's log was
    // durable up to durableIndex when this left, and ours is before any later effect of this step
    // is carried out; so an entry of the leader's term up to there is committed, with every entry
    // before it (Raft §5.4), and we apply it without waiting for the commit notice. Not with
    // linearizability: its read index is the leader's commit index, which must cover every write
    // a follower has answered (a larger one, such as everything sent, may never be reached if the
    // leader fails; and this saved nothing measurable there).
    const heldByBoth = Math.min(lastSent, message.durableIndex);
    if (this.core.mode === 'sequential' && this.core.majority === 2 && heldByBoth > this.core.commitIndex && this.core.log.termAt(heldByBoth) === message.term) {
      this.learnCommit(heldByBoth);
    }
    if (this.core.catchUpIndex === null) this.core.catchUpIndex = message.commitIndex;
    return { success: true, matchIndex: lastSent, hintIndex: 0 };
  }

  /** The first index of the conflicting term at `index`, never at or below the commit index. */
  private conflictHint(index: number): number {
    const conflictTerm = this.core.log.termAt(index);
    let hint = index;
    while (hint - 1 > this.core.commitIndex && hint - 1 > this.core.log.snapshotIndex && this.core.log.termAt(hint - 1) === conflictTerm) {
      hint -= 1;
    }
    return hint;
  }

  private storeEntries(entries: readonly LogEntry[]): void {
    let first = 0;
    for (let entry = entries[first]; entry !== undefined && entry.index <= this.core.log.lastIndex(); entry = entries[first]) {
      if (this.core.log.termAt(entry.index) !== entry.term) {
        // Checked on receipt (appendProblem): a peer cannot get here with a committed entry.
        assert(entry.index > this.core.commitIndex, `committed entry ${entry.index} would change`);
        for (const dropped of this.core.log.truncateFrom(entry.index)) this.core.forgetProposal(dropped);
        // Only uncommitted entries are cut, and the replica never held those.
        this.core.replayUntilIndex = Math.min(this.core.replayUntilIndex, entry.index - 1);
        this.core.persist({ kind: 'truncate', fromIndex: entry.index }, false);
        break;
      }
      first += 1;
    }
    const fresh = first === 0 ? entries : entries.slice(first);
    if (fresh.length === 0) return;
    this.core.log.append(fresh);
    for (const entry of fresh) this.core.rememberProposal(entry);
    this.core.persist({ kind: 'entries', entries: fresh.slice() }, false);
  }

  private learnCommit(index: number): void {
    if (index > this.core.commitIndex) this.core.commitIndex = Math.min(index, this.core.log.lastIndex());
  }

  /** Stepped by the leader only (./roles.ts's stepLeader). */
  onAppendReply(from: PeerId, message: Extract<LogMessage, { kind: 'append_reply' }>): void {
    if (message.term !== this.core.term) return;
    const progress = this.progress.get(from);
    if (progress === undefined || message.seq < progress.restartedSeq) return;
    if (message.success && message.matchIndex > this.core.log.lastIndex()) {
      return this.core.dropMessage(from, `acks index ${message.matchIndex}, beyond the log's end ${this.core.log.lastIndex()}`);
    }
    progress.lastAckMs = this.core.nowMs;
    progress.ackedRound = Math.max(progress.ackedRound, message.round);
    progress.replicaEpochSeen = Math.max(progress.replicaEpochSeen, message.replicaEpoch ?? 0);
    progress.lastIndex = Math.max(progress.lastIndex, message.lastIndex ?? -1);
    if (this.leases !== null && message.sentMs !== undefined) progress.ackedSentMs = Math.max(progress.ackedSentMs, message.sentMs);
    if (message.success) {
      progress.matchIndex = Math.max(progress.matchIndex, message.matchIndex);
      // What it committed on its own (see appendEntries) needs no commit notice.
      progress.commitSent = Math.max(progress.commitSent, message.commitIndex);
      progress.sentIndex = Math.max(progress.sentIndex, progress.matchIndex);
      progress.sentMax = Math.max(progress.sentMax, progress.sentIndex);
      if (message.leaseAsk !== undefined) this.onLeaseAsk(progress, message.leaseAsk);
      this.advanceCommit();
    } else if (message.seq >= progress.rewindSeq) {
      this.noteRefusedAtSnapshot(progress, message);
      progress.sentIndex = Math.max(progress.matchIndex, Math.min(message.hintIndex - 1, this.core.log.lastIndex()));
      progress.rewindSeq = progress.seq + 1;
      // Below the snapshot only a transfer helps; the heartbeat starts it, not a reply storm.
      if (progress.sentIndex >= this.core.log.snapshotIndex) this.sendAppend(from, false);
    }
    this.reads.confirmRounds();
  }

  /**
   * A refusal of an append sent since the last rewind: every such append went out at or before
   * `sentIndex` (which only a rewind lowers) or at the snapshot index of its time (a heartbeat for
   * a transfer). So while `sentIndex` is below our snapshot, the refused one was at or before it:
   * the follower's log lacks our snapshot's entry (a committed one), so it committed nothing up to
   * there and only a transfer can rebuild it. Noted with the replica epoch it had seen: when that
   * is our current one, it refuses any transfer read before our replica was lost and we serve none
   * since, so it stays so (see StateTransfer.startOverIfEveryReplicaLost).
   */
  private noteRefusedAtSnapshot(progress: Progress, refusal: AppendReply): void {
    if (progress.sentIndex < this.core.log.snapshotIndex) progress.refusedAtSnapshotEpoch = refusal.replicaEpoch ?? 0;
  }

  /** Stepped by the leader only (./roles.ts's stepLeader). */
  onPong(from: PeerId, message: Extract<LogMessage, { kind: 'pong' }>): void {
    if (message.term !== this.core.term) return;
    const progress = this.progress.get(from);
    if (progress !== undefined) progress.lastPongMs = this.core.nowMs;
  }

  /**
   * A follower asks for a read lease: granted on our next append to it, and honoured from now
   * on, if it holds about all we have (within one append): granting one that lags far, as while it
   * catches up or awaits a transfer, would hold every commit back until it caught up.
   */
  private onLeaseAsk(progress: Progress, ask: { incarnation: number; askedMs: number }): void {
    if (this.leases === null || this.core.log.lastIndex() - progress.matchIndex > this.core.tuning.appendEntriesMax) return;
    const previous = progress.leaseAsk;
    const later = previous !== null && ask.incarnation === previous.incarnation && ask.askedMs > previous.askedMs;
    const newer = previous === null || ask.incarnation > previous.incarnation || later;
    if (newer) progress.leaseAsk = { incarnation: ask.incarnation, askedMs: ask.askedMs };
    progress.honorUntilMs = Math.max(progress.honorUntilMs, this.core.nowMs + this.leases.guardMs);
  }

  /** `peer` holds no read lease (it left: see Roles.onLeave): no commit waits for its ack any more. */
  forgetLease(peer: PeerId): void {
    const progress = this.progress.get(peer);
    if (this.leases === null || progress === undefined) return;
    progress.honorUntilMs = Number.NEGATIVE_INFINITY;
    progress.leaseAsk = null;
    this.advanceCommit();
  }

  /** The grant riding on an append to `progress`'s follower, if it asked (read leases). */
  private leaseFields(progress: Progress): { sentMs?: number; lease?: LeaseGrant } {
    if (this.leases === null) return {};
    const ask = progress.leaseAsk;
    if (ask === null) return { sentMs: this.core.nowMs };
    progress.leaseAsk = null;
    // Everything committed when the ask arrived is at or before this index (this term's first
    // entry included). What followers commit between themselves (./follower-holds.ts) it holds.
    return { sentMs: this.core.nowMs, lease: { ...ask, index: this.reads.committedNow() } };
  }

  /**
   * Commit the highest index a majority has, if its entry is of the current term; with read
   * leases, only as far as every peer honoured now has it.
   */
  advanceCommit(): void {
    let candidate = this.progress.majorityMatch(this.core.log.lastIndex());
    if (this.leases !== null) candidate = this.progress.honoredMatchFloor(candidate, this.core.nowMs);
    if (candidate > this.core.commitIndex && this.core.log.termAt(candidate) === this.core.term) this.core.commitIndex = candidate;
  }

  /**
   * Sends the follower everything not yet sent (up to the batch and in-flight bounds), pipelined:
   * no wait for the previous append's ack. `force` sends even with nothing new (a heartbeat).
   */
  private sendAppend(peer: PeerId, force: boolean): void {
    const progress = this.progress.get(peer);
    assert(progress !== undefined);
    const prevTerm = this.core.log.termAt(progress.sentIndex);
    if (prevTerm === null) {
      // Below our snapshot only a transfer helps: an append at every flush, each answered, would
      // ping-pong with the follower for as long as the transfer takes.
      if (force) this.sendHeartbeatForTransfer(peer, progress);
      return;
    }
    const inflightRoom = this.core.tuning.inflightEntriesMax - (progress.sentIndex - progress.matchIndex);
    const available = Math.max(0, Math.min(this.core.log.lastIndex() - progress.sentIndex, inflightRoom));
    const count = batchCount((at) => opBytes(this.core.log.entryAt(progress.sentIndex + 1 + at).op), available, {
      countMax: this.core.tuning.appendEntriesMax,
      bytesMax: this.core.tuning.batchBytesMax,
    });
    if (count === 0 && !force && progress.commitSent >= this.core.commitIndex) return;
    progress.deferredSinceMs = null;
    const entries = count === 0 ? [] : this.core.log.slice(progress.sentIndex + 1, progress.sentIndex + count);
    progress.seq += 1;
    this.core.send(peer, {
      kind: 'append',
      term: this.core.term,
      prevIndex: progress.sentIndex,
      prevTerm,
      entries,
      commitIndex: this.core.commitIndex,
      durableIndex: this.durableIndex(),
      round: this.reads.round,
      seq: progress.seq,
      quiet: count === 0 && !force,
      replicaEpoch: this.core.replicaEpoch,
      ...this.leaseFields(progress),
    });
    progress.sentIndex += count;
    progress.sentMax = Math.max(progress.sentMax, progress.sentIndex);
    progress.commitSent = this.core.commitIndex;
  }

  /** How far our log is durable by the time a message sent now leaves (see flushAsLeader). */
  private durableIndex(): number {
    return this.core.log.lastIndex() - this.notDurableCount;
  }

  /**
   * The follower needs compacted entries: keep it in touch and push it a state transfer, once it
   * answers. A transfer fetches the whole replica: none goes to a peer that is down, and one that
   * comes back gets its first at once rather than when a transfer lost to its silence would retry.
   */
  private sendHeartbeatForTransfer(peer: PeerId, progress: Progress): void {
    progress.seq += 1;
    this.core.send(peer, {
      kind: 'append',
      term: this.core.term,
      prevIndex: this.core.log.snapshotIndex,
      prevTerm: this.core.log.snapshotTerm,
      entries: [],
      commitIndex: this.core.commitIndex,
      durableIndex: this.durableIndex(),
      round: this.reads.round,
      seq: progress.seq,
      quiet: false,
      replicaEpoch: this.core.replicaEpoch,
      ...(this.leases === null ? {} : { sentMs: this.core.nowMs }),
    });
    progress.commitSent = this.core.commitIndex;
    const heard = this.core.nowMs - progress.lastAckMs < this.core.failureTimeoutMs;
    const due = this.core.nowMs - progress.transferStartedMs >= this.core.tuning.requestTimeoutFailureTimeouts * this.core.failureTimeoutMs;
    if (heard && due && this.startTransfer(peer, 0)) progress.transferStartedMs = this.core.nowMs;
  }

  /**
   * The followers a read-confirming round goes to. Its acks must make a majority with us; with
   * three nodes one follower does: the one heard from last. With more nodes, all. (Should that
   * one not answer, the next heartbeat goes to every follower and confirms it.)
   */
  private roundConfirmers(): readonly PeerId[] {
    if (this.core.majority !== 2) return this.core.peers;
    const freshest = this.progress.freshest();
    return freshest === null ? this.core.peers : [freshest];
  }
}
