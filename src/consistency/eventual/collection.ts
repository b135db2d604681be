/**
 * Collection of dead entries in eventual mode: a tombstone, or an entry expired longer than
 * expiredGraceMs ago, is purged from every replica once every peer is known to hold it (at that
 * version or later); until then it waits in the graveyard. Every index write goes through here,
 * so an entry is filed as dead or alive the moment the index learns it.
 *
 * Owns: the graveyard, what was purged (remembered for purgedMemoryMs, ../purged.ts), the purges
 * not yet emitted, the keys indexed with an expiry (the only ones the expiry sweep looks at: most
 * keys never expire, and a sweep of the whole index cost an idle controller holding 1,500,000 keys
 * a fifth of a core), and where the sweep is. The index and the push queues are the machine's
 * (./machine.ts); the time comes in with each call.
 *
 * Invariants: the graveyard holds exactly the index's keys found dead; an entry is purged only
 * when dead and held by every peer, and is then remembered so late copies are not resurrected;
 * every indexed entry with an expiry not yet found dead is among the mortal keys.
 */

import type { PeerId } from '../types.ts';
import type { Entry } from '../../store/types.ts';
import { PurgedVersions } from '../purged.ts';
import type { IndexEntry, VersionIndex } from './digest.ts';
import { tombstoneEntry } from './entries.ts';
import type { PushQueues } from './push.ts';
import type { EventualTuning } from './tuning.ts';

/** The tuning collection runs on (documented in ./tuning.ts). */
export type CollectionTuning = Pick<EventualTuning, 'expiredGraceMs' | 'sweepEntriesPerTick' | 'purgedMemoryMs' | 'purgedMemoryEntriesMax'>;

/** The dead entries of one node's index, and what it purged. */
export class Collection {
  /** Keys of dead entries in the index, waiting to be collected. */
  readonly graveyard = new Set<string>();
  private readonly purged: PurgedVersions;
  private pendingPurges: Array<[string, bigint]> = [];
  /** Keys indexed with an expiry and not found dead yet (a few may no longer be: the sweep drops them). */
  private readonly mortal = new Set<string>();
  /** Where the sweep is in `mortal`; null: it starts over. */
  private sweepAt: Iterator<string> | null = null;

  constructor(
    private readonly index: VersionIndex,
    /** Each peer's bit in an entry's heldByMask. */
    private readonly peerBits: ReadonlyMap<PeerId, number>,
    /** Every peer's bit: an entry held by all of them may be collected. */
    private readonly allPeersMask: number,
    private readonly tuning: CollectionTuning,
    private readonly pushes: PushQueues,
  ) {
    this.purged = new PurgedVersions(tuning);
  }

  /** Purges remembered. */
  get purgedRemembered(): number {
    return this.purged.size;
  }

  /** Indexes `entry` for `key`, filed as dead or alive, and collects it if it is done. */
  setIndex(key: string, entry: Entry, heldByMask: number, touchedSeq: number, claimedSeq: number, nowMs: number): void {
    const indexed: IndexEntry = {
      version: entry.cas,
      tombstone: entry.tombstone === true,
      expiresAtMs: entry.expiresAtMs,
      heldByMask,
      touchedSeq,
      claimedSeq,
      resetVersion: entry.resetCas === entry.cas ? undefined : entry.resetCas,
    };
    this.index.set(key, indexed);
    if (this.isDead(indexed, nowMs)) {
      this.graveyard.add(key);
    } else {
      this.graveyard.delete(key);
      // A key no longer mortal is dropped by the sweep: no set operation on the writes that set none.
      if (indexed.expiresAtMs !== 0) this.mortal.add(key);
    }
    this.collectIfDone(key, indexed, nowMs);
  }

  /** Removes `key` from the index (the replica does not hold it), without purging it. */
  remove(key: string): void {
    this.index.delete(key);
    this.graveyard.delete(key);
    this.mortal.delete(key);
  }

  /** The replica was emptied: the index is being rebuilt, and with it the graveyard. */
  clear(): void {
    this.graveyard.clear();
    this.mortal.clear();
    this.sweepAt = null;
  }

  isDead(entry: IndexEntry, nowMs: number): boolean {
    if (entry.tombstone) return true;
    return entry.expiresAtMs !== 0 && entry.expiresAtMs + this.tuning.expiredGraceMs <= nowMs;
  }

  /** Whether `entry` is dead and `peer` is known to hold it. */
  heldDeadBy(entry: IndexEntry, peer: PeerId, nowMs: number): boolean {
    return this.isDead(entry, nowMs) && (entry.heldByMask & (this.peerBits.get(peer) ?? 0)) !== 0;
  }

  /** `peer` holds `key` at `version` or later. */
  learnHeld(key: string, version: bigint, peer: PeerId, nowMs: number): void {
    const entry = this.index.get(key);
    const bit = this.peerBits.get(peer) ?? 0;
    if (entry === undefined || entry.version > version || (entry.heldByMask & bit) !== 0) return;
    this.index.markHeld(key, bit);
    entry.heldByMask |= bit;
    this.collectIfDone(key, entry, nowMs);
  }

  /** Purges `key` if it is dead and every peer holds it; `entry` is what the index holds of it now. */
  private collectIfDone(key: string, entry: IndexEntry, nowMs: number): void {
    if (!this.isDead(entry, nowMs)) return;
    if ((entry.heldByMask & this.allPeersMask) !== this.allPeersMask) return;
    this.pendingPurges.push([key, entry.version]);
    this.index.delete(key);
    this.graveyard.delete(key);
    this.mortal.delete(key);
    this.purged.remember(key, entry.version, nowMs, entry.resetVersion);
  }

  /** The purges collected since the last call (null when none), for one `purge` effect. */
  takePurges(): Array<[string, bigint]> | null {
    if (this.pendingPurges.length === 0) return null;
    const tombstones = this.pendingPurges;
    this.pendingPurges = [];
    return tombstones;
  }

  /** Whether `key` at `version` was purged here (or is older than what was). */
  purgedCovers(key: string, version: bigint): boolean {
    return this.purged.covers(key, version);
  }

  /** Forgets purges older than purgedMemoryMs (and the oldest beyond the count bound). */
  forgetOld(nowMs: number): void {
    this.purged.forgetOld(nowMs);
  }

  /**
   * `peer` holds `key` at `version`, older than an entry we purged: it missed that deletion
   * (its replica was emptied, or it took a concurrent write with an older clock). Nobody holds
   * the purged entry any more, so send it back a tombstone at the purged version; it then wins
   * there too and is collected again. The tombstone keeps the reset the purged entry counted from:
   * a merge may have joined that delete over a greater version, and a write the peer took after
   * the delete but below that version must still win over it there (then, rejoined at a fresh
   * version, it comes back here).
   */
  answerSuperseded(peer: PeerId, key: string, version: bigint): void {
    const purged = this.purged.last(key);
    if (purged === undefined || version >= purged.version) return;
    this.pushes.enqueue(peer, key, tombstoneEntry(purged.version, purged.resetVersion));
  }

  /**
   * Whether a version queued for a peer is still worth sending: no later version of the key is
   * indexed, and no later tombstone was purged. An entry that waited in a queue (its peer was down
   * or its window full) past the key's next write, or past a delete that every replica has since
   * collected, would only be overwritten there, or, once the purge is forgotten, bring the value
   * back.
   */
  stillCurrent(key: string, version: bigint): boolean {
    const indexed = this.index.versionOf(key);
    if (indexed !== undefined) return indexed <= version;
    const purged = this.purged.version(key);
    return purged === undefined || version >= purged;
  }

  /**
   * Moves entries that expired into the graveyard: the mortal keys round and round, up to
   * sweepEntriesPerTick of them per tick and none twice in one tick.
   */
  sweep(nowMs: number): void {
    const visits = Math.min(this.tuning.sweepEntriesPerTick, this.mortal.size);
    for (let i = 0; i < visits; i += 1) {
      this.sweepAt ??= this.mortal.values();
      let next = this.sweepAt.next();
      if (next.done === true) {
        this.sweepAt = this.mortal.values();
        next = this.sweepAt.next();
        if (next.done === true) return;
      }
      const key = next.value;
      const entry = this.index.get(key);
      if (entry === undefined || entry.expiresAtMs === 0) {
        this.mortal.delete(key);
      } else if (this.isDead(entry, nowMs)) {
        this.mortal.delete(key);
        this.graveyard.add(key);
        this.collectIfDone(key, entry, nowMs);
      }
    }
  }
}
