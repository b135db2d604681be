/**
 * Our chain to one peer in causal mode, the sender's half of ./messages.ts: the batches queued
 * for the peer until it acknowledges them, sent a window at a time and again after ackTimeoutMs.
 * A batch in parts (a snapshot of a whole replica, say) leaves a window of parts at a time, more
 * as the peer acks the parts it holds (../send-window.ts). Sent again, it starts with its first
 * part alone, a probe: the peer's part ack says how much it still holds (every part, while it
 * waits to merge a snapshot), so a peer that holds it is not sent a window again each timeout.
 *
 * Owns: the queue, its bytes, what the peer acknowledged, how far the chain is covered, and the
 * snapshot being fetched. The machine decides when a snapshot is fetched, and with what deps.
 *
 * Invariants: the queue is in chain order (each batch's prev is the previous one's to), a queued
 * snapshot first; past pendingBytesMax queued the chain is given up, and a snapshot goes next. The
 * machine sends nothing to the peer while a snapshot must be fetched or is being fetched.
 */

import type { KeyedEntry } from '../types.ts';
import { entryBytes } from '../eventual/push.ts';
import { sendableThrough } from '../send-window.ts';
import type { Batch, CausalMessage, VersionVector } from './messages.ts';
import type { CausalTuning } from './tuning.ts';

/** Bounds on one chain: the sending fields of the mode's tuning (documented there). */
export type OutboxLimits = Pick<
  CausalTuning,
  'windowBatchesMax' | 'ackTimeoutMs' | 'batchEntriesMax' | 'batchBytesMax' | 'pendingBytesMax'
>;

/** A batch being sent in parts: the parts, how many left, how many the peer holds. */
interface Sending {
  parts: KeyedEntry[][];
  partBytes: number[];
  sent: number;
  acked: number;
  /** Sent again: the first part alone until the peer acks it. */
  probing: boolean;
}

/** A queued batch: sentAtMs null, not sent yet; else when it was sent, or last acked a part. */
type Queued = Batch & { queuedAtMs: number; sentAtMs: number | null; sending?: Sending };

/** Our chain to one peer. */
export class Outbox {
  /** What the peer acknowledged of our chain; null: unknown, a snapshot goes first. */
  private ackedTo: bigint | null = null;
  /** Unacknowledged batches in chain order (a snapshot first, if any). */
  private queue: Queued[] = [];
  /**
   * Bytes of the queued chain batches' entries. A queued snapshot's do not count: it is what giving
   * up the chain would send, and a replica larger than pendingBytesMax would be sent over and over.
   */
  private queueBytes = 0;
  /** The `to` of the last batch queued, or of the snapshot being fetched: the next batch's prev. */
  private coveredTo = 0n;
  /** The token of the snapshot fetch in flight, if any. */
  private snapshotFetch: number | null = null;
  /**
   * The chain was given up while that fetch ran: its result is dropped and a fresh one read then.
   * (A replica's read cannot be called off: started over at once, each time, the reads ran together.)
   */
  private startOver = false;
  /**
   * A snapshot is being read and its cut not made yet (./snapshot-cuts.ts): the batches fetched
   * meanwhile are dropped, as the snapshot will cover them.
   */
  private cutPending = false;

  constructor(private readonly limits: OutboxLimits) {}

  /** Whether a queued chain batch (not a snapshot) has a part not sent yet. */
  get unsentBatches(): boolean {
    return this.queue.some((batch) => !batch.snapshot && (batch.sending === undefined || batch.sending.sent < batch.sending.parts.length));
  }

  /** Batches queued, sent or not. */
  get depth(): number {
    return this.queue.length;
  }

  /** Whether a snapshot is being fetched: chain batches wait for it. */
  get fetchingSnapshot(): boolean {
    return this.snapshotFetch !== null;
  }

  /** Whether fetch `token` is the read of the snapshot this waits for, its cut not made yet, and not to be dropped. */
  readsSnapshot(token: number): boolean {
    return this.snapshotFetch === token && this.cutPending && !this.startOver;
  }

  /** Whether the snapshot being fetched is to be dropped for a fresh one (see `startOver`). */
  get startingOver(): boolean {
    return this.startOver;
  }

  /** Whether the peer's state is unknown and no snapshot is queued: one must be fetched first. */
  needsSnapshot(): boolean {
    return this.ackedTo === null && this.queue[0]?.snapshot !== true;
  }

  /** Whether the snapshot queued first says it lacks what its entries need (`needs`). */
  sendsLackingSnapshot(): boolean {
    const head = this.queue[0];
    return head?.snapshot === true && head.needs !== undefined;
  }

  /**
   * Whether fetch `token`'s result is the snapshot this waits for. One the chain was given up
   * during is not: it is dropped, and the next thing fetched is a fresh snapshot.
   */
  awaitsSnapshot(token: number): boolean {
    if (this.snapshotFetch !== token) return false;
    if (!this.startOver) return true;
    this.snapshotFetch = null;
    this.startOver = false;
    return false;
  }

  /** The chain starts over from a snapshot of our writes up to `to`, read by fetch `token`. */
  startSnapshot(to: bigint, token: number): void {
    this.queue = [];
    this.queueBytes = 0;
    this.coveredTo = to;
    this.snapshotFetch = token;
    this.cutPending = false;
  }

  /** The chain starts over from a snapshot whose cut is not made yet, read by fetch `token` (more may follow). */
  readSnapshot(token: number): void {
    this.queue = [];
    this.queueBytes = 0;
    this.snapshotFetch = token;
    this.cutPending = true;
  }

  /** Fetch `token` returned `entries`, at `nowMs`: queued first, if it is the snapshot fetch this waits for. */
  onSnapshotFetched(token: number, snapshot: Omit<Batch, 'snapshot' | 'prev' | 'needs'> & { needs?: VersionVector | null }, nowMs: number): void {
    if (!this.awaitsSnapshot(token)) return;
    this.snapshotFetch = null;
    const { to, deps, needs, entries } = snapshot;
    const queued: Queued = { snapshot: true, prev: 0n, to, deps, entries, queuedAtMs: nowMs, sentAtMs: null };
    if (needs !== undefined && needs !== null) queued.needs = needs;
    this.queue.unshift(queued);
  }

  /** Queues a dirty fetch's results, returned at `nowMs`, as the next batch of the chain. */
  append(entries: KeyedEntry[], to: bigint, deps: VersionVector, nowMs: number): void {
    if (this.cutPending || to <= this.coveredTo) return;
    this.queue.push({ snapshot: false, prev: this.coveredTo, to, deps, entries, queuedAtMs: nowMs, sentAtMs: null });
    this.coveredTo = to;
    this.queueBytes += entriesBytes(entries);
    if (this.queueBytes > this.limits.pendingBytesMax) this.forget();
  }

  /**
   * The messages the window allows now: each batch in it not sent yet, or not acknowledged within
   * ackTimeoutMs, in parts. Those batches count as sent now.
   */
  takeDue(nowMs: number): CausalMessage[] {
    const messages: CausalMessage[] = [];
    for (const batch of this.queue.slice(0, this.limits.windowBatchesMax)) {
      if (batch.sentAtMs === null || nowMs - batch.sentAtMs >= this.limits.ackTimeoutMs) {
        // (Again) from its first part: the peer acks at once what it holds already. Its parts are
        // cut once (a snapshot's thousands of them), and again only after its entries changed.
        const again = batch.sentAtMs !== null;
        batch.sentAtMs = nowMs;
        const parts = batch.sending?.parts ?? splitEntries(batch.entries, this.limits.batchEntriesMax, this.limits.batchBytesMax);
        const partBytes = batch.sending?.partBytes ?? parts.map(entriesBytes);
        batch.sending = { parts, partBytes, sent: 0, acked: 0, probing: again && parts.length > 1 };
      }
      if (batch.sending !== undefined) this.takeParts(batch, batch.sending, messages);
    }
    return messages;
  }

  /** The parts of `batch` its window allows now. */
  private takeParts(batch: Queued, sending: Sending, messages: CausalMessage[]): void {
    const base = this.ackedTo ?? 0n;
    const { snapshot, prev, to, deps, needs } = batch;
    const through = sending.probing ? 1 : sendableThrough(sending.partBytes, sending.acked, sending.sent);
    for (; sending.sent < through; sending.sent += 1) {
      const part = sending.sent;
      const message: CausalMessage = { kind: 'batch', snapshot, base, prev, to, deps, part, parts: sending.parts.length, entries: sending.parts[part] ?? [] };
      if (needs !== undefined) message.needs = needs;
      messages.push(message);
    }
  }

  /** The peer holds `received` of the `parts` parts of the batch ending at `to`, at `nowMs`: its window moves on. */
  onPartAck(ack: { snapshot: boolean; to: bigint; parts: number; received: number }, nowMs: number): void {
    const batch = this.queue.find((each) => each.to === ack.to && each.snapshot === ack.snapshot);
    const sending = batch?.sending;
    if (batch === undefined || sending === undefined || sending.parts.length !== ack.parts || ack.received <= sending.acked) return;
    sending.probing = false;
    // Sent again after an ack timeout, it goes on from the first part the peer lacks.
    sending.sent = Math.max(sending.sent, ack.received);
    sending.acked = ack.received;
    // Progress: the ack timeout counts from here.
    batch.sentAtMs = nowMs;
  }

  /**
   * Whether, while no snapshot of ours is acknowledged (the peer's state unknown), the window is
   * due to send a batch that has waited ackTimeoutMs or more since it was queued or last sent, and
   * the queue holds an entry `stale` turns down. (Only then: a batch just fetched goes out as it is.)
   */
  sendsStale(nowMs: number, stale: (pair: KeyedEntry) => boolean): boolean {
    if (this.ackedTo !== null) return false;
    const waitedMs = (batch: (typeof this.queue)[number]): number => nowMs - (batch.sentAtMs ?? batch.queuedAtMs);
    if (!this.queue.slice(0, this.limits.windowBatchesMax).some((batch) => waitedMs(batch) >= this.limits.ackTimeoutMs)) return false;
    return this.queue.some((batch) => batch.entries.some(stale));
  }

  /** Gives up the chain: the next thing the peer gets is a snapshot. */
  forget(): void {
    this.ackedTo = null;
    // A snapshot being fetched would be followed by batches this drops: a new one is fetched once it is in.
    this.startOver = this.snapshotFetch !== null;
    this.cutPending = this.startOver;
    this.queue = [];
    this.queueBytes = 0;
  }

  /** The peer acknowledged the batch ending at `to`, and holds our chain up to `held`. */
  onAck(to: bigint, held: bigint): void {
    const head = this.queue[0];
    if (head?.snapshot === true && head.to === to) {
      this.ackedTo = head.to;
      this.queue.shift();
    }
    if (this.ackedTo === null) return;
    if (held > this.ackedTo) this.ackedTo = held;
    for (let done = this.queue[0]; done !== undefined && !done.snapshot && done.to <= held; done = this.queue[0]) {
      this.queue.shift();
      this.queueBytes -= entriesBytes(done.entries);
    }
  }

  /** The peer holds our chain up to `held`: less than it acknowledged, it lost part of its replica. */
  onPeerHolds(held: bigint): void {
    if (this.ackedTo !== null && held < this.ackedTo) this.forget();
  }

  /** Drops the queued entries `keep` turns down. */
  filterEntries(keep: (pair: KeyedEntry) => boolean): void {
    for (const batch of this.queue) {
      const kept = batch.entries.filter(keep);
      if (kept.length === batch.entries.length) continue;
      if (!batch.snapshot) this.queueBytes -= entriesBytes(batch.entries) - entriesBytes(kept);
      batch.entries = kept;
      // Its parts are cut anew when it is next due.
      batch.sending = undefined;
    }
  }

  /** Every entry still queued for the peer, oldest batch first (a queued snapshot first). */
  carried(): KeyedEntry[] {
    return this.queue.flatMap((batch) => batch.entries);
  }

  /** The replica was emptied: the snapshot being fetched is lost with it. */
  onBackendReset(): void {
    this.snapshotFetch = null;
    this.startOver = false;
    this.cutPending = false;
  }
}

function entriesBytes(entries: readonly KeyedEntry[]): number {
  return entries.reduce((sum, [key, entry]) => sum + entryBytes(key, entry), 0);
}

/** Entries in parts of at most `entriesMax` entries and about `bytesMax` bytes; always one part at least. */
function splitEntries(entries: readonly KeyedEntry[], entriesMax: number, bytesMax: number): KeyedEntry[][] {
  let current: KeyedEntry[] = [];
  const parts = [current];
  let bytes = 0;
  for (const pair of entries) {
    const size = entryBytes(pair[0], pair[1]);
    if (current.length > 0 && (current.length >= entriesMax || bytes + size > bytesMax)) {
      current = [pair];
      parts.push(current);
      bytes = size;
    } else {
      current.push(pair);
      bytes += size;
    }
  }
  return parts;
}
