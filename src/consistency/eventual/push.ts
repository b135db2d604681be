/**
 * Per-peer push queues of eventual mode, with a window of unacked batches.
 *
 * Intuition: entries to push wait in one queue per peer, keyed by key so a key written ten times
 * before it leaves is sent once (the greatest version). Batches leave while fewer than
 * `windowBatchesMax` are unacked; an ack (or its timeout, when a batch or its ack was lost)
 * frees a slot. Queues are bounded: an entry that does not fit is dropped and counted, and
 * anti-entropy later repairs whatever it would have carried.
 *
 * Invariants: per peer, queuedEntries <= queueEntriesMax and queuedBytes <= queueBytesMax
 * (an entry alone may exceed the byte bound only if the queue was empty); a batch holds at most
 * batchEntriesMax entries and batchBytesMax bytes unless a single entry is larger.
 */

import type { KeyedEntry, PeerId } from '../types.ts';
import type { Entry } from '../../store/types.ts';
import type { EventualTuning } from './tuning.ts';

/** Bounds on pushing: the push fields of the mode's tuning (documented there). */
export type PushLimits = Pick<
  EventualTuning,
  'batchEntriesMax' | 'batchBytesMax' | 'queueEntriesMax' | 'queueBytesMax' | 'windowBatchesMax' | 'ackTimeoutMs'
>;

/** Approximate bytes an entry costs on the wire. */
export function entryBytes(key: string, entry: Entry): number {
  return key.length + entry.value.length + 48;
}

interface PeerQueue {
  queued: Map<string, Entry>;
  queuedBytes: number;
  /** batch id → sent at. */
  inFlight: Map<number, number>;
}

/** The push queues of one node. */
export class PushQueues {
  private readonly queues = new Map<PeerId, PeerQueue>();
  private nextBatch = 1;
  /** Entries dropped because a queue was full, since start. */
  dropped = 0;

  constructor(
    peers: readonly PeerId[],
    private readonly limits: PushLimits,
  ) {
    for (const peer of peers) {
      this.queues.set(peer, { queued: new Map(), queuedBytes: 0, inFlight: new Map() });
    }
  }

  /** Queue one entry for a peer, keeping the greater version per key. False if dropped. */
  enqueue(peer: PeerId, key: string, entry: Entry): boolean {
    const queue = this.queues.get(peer);
    if (queue === undefined) return false;
    const previous = queue.queued.get(key);
    if (previous !== undefined) {
      if (previous.cas >= entry.cas) return true;
      queue.queuedBytes -= entryBytes(key, previous);
      queue.queued.delete(key);
    }
    const bytes = entryBytes(key, entry);
    const full =
      queue.queued.size >= this.limits.queueEntriesMax ||
      (queue.queued.size > 0 && queue.queuedBytes + bytes > this.limits.queueBytesMax);
    if (full) {
      this.dropped += 1;
      return false;
    }
    queue.queued.set(key, entry);
    queue.queuedBytes += bytes;
    return true;
  }

  /**
   * Take the batches the window allows for `peer` (`windowed` false: every batch queued, as a
   * stopping node sends them); each gets a batch id. Entries `keep` turns down (superseded since
   * they were queued) leave the queue unsent.
   */
  drain(
    peer: PeerId,
    nowMs: number,
    keep: (key: string, entry: Entry) => boolean = () => true,
    windowed = true,
  ): Array<{ batch: number; entries: KeyedEntry[] }> {
    const queue = this.queues.get(peer);
    const batches: Array<{ batch: number; entries: KeyedEntry[] }> = [];
    if (queue === undefined) return batches;
    while (queue.queued.size > 0 && (!windowed || queue.inFlight.size < this.limits.windowBatchesMax)) {
      const entries = this.takeBatch(queue, keep);
      if (entries.length === 0) break;
      const batch = this.nextBatch;
      this.nextBatch += 1;
      queue.inFlight.set(batch, nowMs);
      batches.push({ batch, entries });
    }
    return batches;
  }

  /** A peer acked a batch: free its window slot. */
  onAck(peer: PeerId, batch: number): void {
    this.queues.get(peer)?.inFlight.delete(batch);
  }

  /** Free the window slots of batches unacked for longer than ackTimeoutMs. */
  expire(nowMs: number): void {
    for (const queue of this.queues.values()) {
      for (const [batch, sentAtMs] of queue.inFlight) {
        if (nowMs - sentAtMs >= this.limits.ackTimeoutMs) queue.inFlight.delete(batch);
      }
    }
  }

  /** Entries queued for `peer`, and sent to it unacknowledged (counted as full batches). */
  backlog(peer: PeerId): number {
    const queue = this.queues.get(peer);
    return queue === undefined ? 0 : queue.queued.size + queue.inFlight.size * this.limits.batchEntriesMax;
  }

  /** Entries queued for `peer`, not yet sent. */
  queued(peer: PeerId): number {
    return this.queues.get(peer)?.queued.size ?? 0;
  }

  /** Entries queued over all peers. */
  depth(): number {
    let total = 0;
    for (const queue of this.queues.values()) total += queue.queued.size;
    return total;
  }

  /** Forget everything queued for a peer and its unacked batches. */
  clear(peer: PeerId): void {
    const queue = this.queues.get(peer);
    if (queue === undefined) return;
    queue.queued.clear();
    queue.queuedBytes = 0;
    queue.inFlight.clear();
  }

  private takeBatch(queue: PeerQueue, keep: (key: string, entry: Entry) => boolean): KeyedEntry[] {
    const entries: KeyedEntry[] = [];
    let bytes = 0;
    for (const [key, entry] of queue.queued) {
      const size = entryBytes(key, entry);
      const fits = entries.length < this.limits.batchEntriesMax && bytes + size <= this.limits.batchBytesMax;
      if (entries.length > 0 && !fits) break;
      queue.queued.delete(key);
      queue.queuedBytes -= size;
      if (!keep(key, entry)) continue;
      entries.push([key, entry]);
      bytes += size;
    }
    return entries;
  }
}
