/**
 * The push protocol of eventual mode, both ends. Out: what waits in the push queues (./push.ts)
 * leaves for the peers up, in the batches each one's window allows. In: a peer's push is merged
 * into the replica (`put` how 'merge': greater version wins, counters join: ../../store/counter.ts)
 * and acked once applied; the ack names the versions that are or may become dead, so the sender
 * learns we hold them and may collect them. A merge that may have made a state neither side had
 * marks the key dirty: the result is read back and pushed on.
 *
 * Owns: which peers are up (as of the last tick), and the acks waiting for their merge to apply.
 * The clock and the notes of dropped messages are the machine's (`host`); tokens and fetches
 * ./fetches.ts's; what is dead and purged ./collection.ts's.
 *
 * Invariants: a push is acked only once its merge is applied, and a refused merge never; a peer's
 * version more than clockAheadMaxMs ahead of local time is dropped, never merged.
 */

import type { Effect, KeyedEntry, PeerId } from '../types.ts';
import type { Entry } from '../../store/types.ts';
import { latestVersionAllowed } from '../hlc.ts';
import type { MemoryAdmission } from '../memory-admission.ts';
import type { Collection } from './collection.ts';
import type { VersionIndex } from './digest.ts';
import { mayDie, mayRejoin } from './entries.ts';
import type { Fetches } from './fetches.ts';
import type { EventualMessage, KeyVersion } from './messages.ts';
import type { PushQueues } from './push.ts';
import type { EventualTuning } from './tuning.ts';

type Out = Effect<EventualMessage>[];

/** What the push protocol needs of the machine that runs it. */
export interface PushHost {
  /** The clock follows the newest of `entries` it may. */
  observe(entries: readonly KeyedEntry[]): void;
  /** Ticks the clock to `nowMs`: a fresh version of this node. */
  freshVersion(nowMs: number): bigint;
  /** Drops (part of) a message this node cannot use. */
  dropMessage(from: PeerId, reason: string, out: Out): void;
}

/** The parts pushes are queued in, merged against and read back through. */
export interface PushParts {
  index: VersionIndex;
  queues: PushQueues;
  collection: Collection;
  fetches: Fetches;
  /** The memory guard: peers' pushes count in it as they arrive. */
  memory: MemoryAdmission;
}

/** One node's end of the push protocol with each peer. */
export class PeerPushes {
  private up: ReadonlySet<PeerId>;
  /** This node is stopping: what is queued leaves at once, without waiting for window slots. */
  #leaving = false;
  /** put token → the push_ack to send once it is applied. */
  private readonly pendingAcks = new Map<number, { to: PeerId; batch: number; versions: KeyVersion[] }>();
  private readonly index: VersionIndex;
  private readonly pushes: PushQueues;
  private readonly collection: Collection;
  private readonly fetches: Fetches;
  private readonly memory: MemoryAdmission;

  constructor(
    private readonly peers: readonly PeerId[],
    /** Each peer's bit in an entry's heldByMask. */
    private readonly peerBits: ReadonlyMap<PeerId, number>,
    parts: PushParts,
    private readonly tuning: Pick<EventualTuning, 'clockAheadMaxMs'>,
    private readonly host: PushHost,
  ) {
    this.up = new Set(peers);
    this.index = parts.index;
    this.pushes = parts.queues;
    this.collection = parts.collection;
    this.fetches = parts.fetches;
    this.memory = parts.memory;
  }

  /** The peers up as of the last tick. */
  get peersUp(): ReadonlySet<PeerId> {
    return this.up;
  }

  /** Merges awaiting their apply. */
  get acksAwaitingApply(): number {
    return this.pendingAcks.size;
  }

  /** A tick: `peersUp` are up; batches unacked for too long free their window slots. */
  onTick(peersUp: readonly PeerId[], nowMs: number): void {
    this.up = new Set(peersUp.filter((peer) => this.peerBits.has(peer)));
    this.pushes.expire(nowMs);
  }

  /** The replica was emptied: no merge issued before it will be acked. */
  reset(): void {
    this.pendingAcks.clear();
  }

  enqueueAll(peer: PeerId, entries: KeyedEntry[]): void {
    for (const [key, entry] of entries) this.pushes.enqueue(peer, key, entry);
  }

  /** This node is stopping: from now on every queued entry leaves at once (see `drainAll`). */
  leave(): void {
    this.#leaving = true;
  }

  /** Whether `leave` was called. */
  get leaving(): boolean {
    return this.#leaving;
  }

  /** Entries queued for the peers up, not yet sent. */
  queuedForPeersUp(): number {
    let queued = 0;
    for (const peer of this.up) queued += this.pushes.queued(peer);
    return queued;
  }

  /** Sends what the push queues allow to each peer up (all of it once leaving). */
  drainAll(nowMs: number, out: Out): void {
    const keep = (key: string, entry: Entry): boolean => this.collection.stillCurrent(key, entry.cas);
    for (const peer of this.peers) {
      if (!this.up.has(peer)) continue;
      for (const { batch, entries } of this.pushes.drain(peer, nowMs, keep, !this.#leaving)) {
        out.push({ kind: 'send', to: peer, message: { kind: 'push', batch, entries } });
      }
    }
  }

  onPush(from: PeerId, batch: number, pushed: KeyedEntry[], nowMs: number, out: Out): void {
    const versions: KeyVersion[] = [];
    const merge: KeyedEntry[] = [];
    const latest = latestVersionAllowed(nowMs, this.tuning.clockAheadMaxMs);
    const entries = pushed.filter(([, entry]) => entry.cas <= latest);
    if (entries.length < pushed.length) this.host.dropMessage(from, 'push: entries with clocks too far ahead of local time dropped', out);
    this.host.observe(entries);
    for (const [key, entry] of entries) {
      // Only what is or may become dead is ever collected, so only that needs "held" news.
      if (mayDie(entry)) versions.push([key, entry.cas]);
      if (!this.collection.purgedCovers(key, entry.cas)) merge.push([key, entry]);
      else this.collection.answerSuperseded(from, key, entry.cas);
    }
    if (merge.length === 0) {
      out.push({ kind: 'send', to: from, message: { kind: 'push_ack', batch, versions } });
      this.drainAll(nowMs, out);
      return;
    }
    const token = this.fetches.takeToken();
    const seq = this.fetches.nextSeq();
    // A counter merge may make a state neither side had: it takes this fresh version.
    const joinCas = this.host.freshVersion(nowMs);
    this.memory.arrived(merge, true);
    out.push({ kind: 'put', entries: merge, how: 'merge', token, joinCas });
    this.pendingAcks.set(token, { to: from, batch, versions });
    const unread = this.fetches.keysBeingRead();
    for (const [key, entry] of merge) {
      // What the merge made (a join, or an older reset winning) is read back and pushed on. A
      // local write the index has not read back yet may be a counter the merge joins: read again.
      const readPending = unread === null || unread.has(key);
      if (readPending || mayRejoin(entry, this.index.versionOf(key))) this.fetches.addDirty(key);
      this.noteMerged(key, entry, from, seq, nowMs);
    }
    this.drainAll(nowMs, out);
  }

  /** The index after merging `entry` from `from` (the sender holds it). */
  private noteMerged(key: string, entry: Entry, from: PeerId, seq: number, nowMs: number): void {
    const current = this.index.get(key);
    const bit = this.peerBits.get(from) ?? 0;
    if (current === undefined || entry.cas > current.version) {
      this.collection.setIndex(key, entry, bit, seq, seq, nowMs);
      return;
    }
    this.index.touch(key, seq);
    if (entry.cas === current.version) this.collection.learnHeld(key, entry.cas, from, nowMs);
  }

  /** The effect `token` was applied: a merge's push is acked now. */
  onApplied(token: number, out: Out): void {
    const ack = this.pendingAcks.get(token);
    if (ack === undefined) return;
    this.pendingAcks.delete(token);
    out.push({ kind: 'send', to: ack.to, message: { kind: 'push_ack', batch: ack.batch, versions: ack.versions } });
  }

  /**
   * memcached refused an apply or a merge and kept what `keys` held. The index claims the refused
   * versions: it learns what the keys hold instead, and anti-entropy brings the writes again once
   * there is room (a peer's digest then differs from ours).
   *
   * A refused merge is never acknowledged. Its tombstones and expiring entries (the versions its
   * push_ack would have carried) may still be collected: while the merge was in flight, our
   * digests claimed them, and a peer may have counted them as held here. What they supersede is
   * removed now, as their purge would have, so no older value outlives them here once every
   * peer has forgotten them (a purge is remembered only for purgedMemoryMs, and not across a
   * restart).
   */
  onRefused(keys: readonly string[], token: number | null, out: Out): void {
    const ack = token === null ? undefined : this.pendingAcks.get(token);
    if (token !== null) this.pendingAcks.delete(token);
    if (ack !== undefined && ack.versions.length > 0) {
      this.fetches.nextSeq();
      out.push({ kind: 'purge', tombstones: ack.versions });
    }
    this.fetches.issue(out, [...new Set(keys)], { kind: 'refresh' });
  }

  onPushAck(from: PeerId, batch: number, versions: KeyVersion[], nowMs: number, out: Out): void {
    this.pushes.onAck(from, batch);
    for (const [key, version] of versions) this.collection.learnHeld(key, version, from, nowMs);
    this.drainAll(nowMs, out);
  }
}
