/**
 * Reading the replica back in eventual mode: every `fetch` this node issues (the start-up rebuild,
 * the dirty keys' results for pushing, entries shipped to a peer, keys whose write the replica
 * refused), and the index brought in line with each result. Local writes mark their keys dirty;
 * their results are fetched at most once per pushIntervalMs (a `wake` effect brings the machine
 * back when the interval is up), so one push carries every write of the interval.
 *
 * Owns: the fetches in flight, the dirty keys and the pacing of their fetch, and the token and
 * sequence number every effect on the replica takes (a fetch's result is judged by what was issued
 * after it). The index is the machine's (./machine.ts); what is dead in it, ./collection.ts's.
 *
 * Invariants: at most one dirty fetch is outstanding. A fetch's result sets the index exactly,
 * unless the version the index claims was issued after the fetch (that write may still land):
 * the index never goes on claiming a version the replica lost or never took.
 */

import { FetchPacer } from '../fetch-pacer.ts';
import type { Effect, KeyedEntry, PeerId } from '../types.ts';
import type { Collection } from './collection.ts';
import type { VersionIndex } from './digest.ts';
import type { EventualMessage } from './messages.ts';
import type { EventualTuning } from './tuning.ts';

type Out = Effect<EventualMessage>[];

/** Why a fetch was issued. */
export type FetchPurpose =
  | { kind: 'rebuild' }
  | { kind: 'dirty' }
  | { kind: 'ship'; to: PeerId }
  /** Keys whose write the replica refused: the index learns what they hold instead. */
  | { kind: 'refresh' };

export interface PendingFetch {
  purpose: FetchPurpose;
  keys: string[] | null;
  issuedSeq: number;
  /**
   * The keys returned so far, to tell the index which keys the replica lacks once the whole
   * result is in; null when no key can be lacking (see `issue`).
   */
  returned: Set<string> | null;
  /**
   * Keys whose claimed write never landed, and that a later effect touched (a merge of an older
   * version, which the index does not show): what the replica holds now is fetched again once
   * the whole result is in.
   */
  again: string[];
}

/** The fetches of one node, and the dirty keys waiting for one. */
export class Fetches {
  private readonly inFlight = new Map<number, PendingFetch>();
  private readonly dirty = new Set<string>();
  private nextToken = 1;
  /** Counts effects that reach the local replica; a fetch's issuedSeq is its own. */
  private replicaSeq = 0;
  private flushSeq = 0;
  private dirtyAll = false;
  private dirtyFetchToken: number | null = null;
  /** Dirty fetches are paced (pushes are, see the tuning). */
  private readonly pacer: FetchPacer;

  constructor(
    private readonly index: VersionIndex,
    private readonly collection: Collection,
    private readonly tuning: Pick<EventualTuning, 'pushIntervalMs' | 'fetchKeysMax'>,
  ) {
    this.pacer = new FetchPacer(tuning.pushIntervalMs);
  }

  /** The token of the next effect whose completion is awaited (a fetch, a merge). */
  takeToken(): number {
    const token = this.nextToken;
    this.nextToken += 1;
    return token;
  }

  /** The sequence number of the next effect that reaches the replica. */
  nextSeq(): number {
    this.replicaSeq += 1;
    return this.replicaSeq;
  }

  /**
   * Fetches `keys` (null: every key, whose result comes in slices, so that no step takes the
   * whole replica at once) from the replica; returns the fetch's token. A read that only tells the
   * index what the replica holds (at start, that is every key) takes the entries without values.
   */
  issue(out: Out, keys: string[] | null, purpose: FetchPurpose): number {
    const token = this.takeToken();
    const issuedSeq = this.nextSeq();
    // A key the result lacks is removed only if the index claimed it no later than the fetch. With
    // an empty index and no older fetch to fill it, the index claims nothing the fetch did not
    // return: a rebuild of millions of keys keeps no set of them.
    const lacksNone = keys === null && this.index.size === 0 && this.inFlight.size === 0;
    this.inFlight.set(token, { purpose, keys, issuedSeq, returned: lacksNone ? null : new Set(), again: [] });
    const fetch: Extract<Effect<EventualMessage>, { kind: 'fetch' }> = { kind: 'fetch', token, keys };
    if (keys === null) fetch.sliced = true;
    if (purpose.kind === 'rebuild' || purpose.kind === 'refresh') fetch.versionsOnly = true;
    out.push(fetch);
    return token;
  }

  /** Keys being read to be shipped to `peer`. */
  shippingTo(peer: PeerId): number {
    let keys = 0;
    for (const { purpose, keys: fetched } of this.inFlight.values()) {
      if (purpose.kind === 'ship' && purpose.to === peer) keys += fetched?.length ?? 0;
    }
    return keys;
  }

  /** A slice of fetch `token`'s result came, more follows: what it was issued for, or undefined if it is not awaited. */
  sliceOf(token: number): PendingFetch | undefined {
    return this.inFlight.get(token);
  }

  /** The fetch `token` returned: what it was issued for, or undefined if it is not awaited. */
  complete(token: number): PendingFetch | undefined {
    const pending = this.inFlight.get(token);
    if (pending === undefined) return undefined;
    this.inFlight.delete(token);
    if (pending.purpose.kind === 'dirty') this.dirtyFetchToken = null;
    return pending;
  }

  /** The replica was emptied: no fetch issued before is awaited any more. */
  reset(): void {
    this.inFlight.clear();
    this.dirtyFetchToken = null;
  }

  /** A local write of `keys` (null: every key, a flush) went to the replica as effect `seq`. */
  markDirty(keys: readonly string[] | null, seq: number): void {
    if (keys === null) {
      this.dirtyAll = true;
      this.flushSeq = seq;
      return;
    }
    for (const key of keys) {
      this.dirty.add(key);
      this.index.touch(key, seq);
    }
  }

  /** `key` is to be read back and pushed on with the next dirty fetch. */
  addDirty(key: string): void {
    this.dirty.add(key);
  }

  /** Keys of the dirty fetch in flight (null: every key): their local writes are not in the index yet. */
  keysBeingRead(): ReadonlySet<string> | null {
    const pending = this.dirtyFetchToken === null ? undefined : this.inFlight.get(this.dirtyFetchToken);
    if (pending === undefined) return new Set();
    return pending.keys === null ? null : new Set(pending.keys);
  }

  /** Time has come to `nowMs`: a wake-up due by then has come. */
  advance(nowMs: number): void {
    this.pacer.advance(nowMs);
  }

  /**
   * Fetches the dirty keys' results for pushing, at most once per pushIntervalMs (`unpaced`: at
   * once, as a stopping node does): when the interval has not passed yet, asks to be woken when it
   * has. Runs after every event, unless requests are held (the replica is being rebuilt).
   */
  scheduleDirtyFetch(nowMs: number, out: Out, unpaced = false): void {
    if (this.dirtyFetchToken !== null) return;
    if (this.dirty.size === 0 && !this.dirtyAll) return;
    if (unpaced || this.pacer.mayFetch(nowMs, out)) this.requestDirtyFetch(out);
  }

  /** Whether local writes wait to be read back for pushing: keys dirty, or their read-back under way. */
  get dirtyPending(): boolean {
    return this.dirtyFetchToken !== null || this.dirty.size > 0 || this.dirtyAll;
  }

  private requestDirtyFetch(out: Out): void {
    if (this.dirtyAll) {
      this.dirtyAll = false;
      this.dirty.clear();
      this.dirtyFetchToken = this.issue(out, null, { kind: 'dirty' });
      return;
    }
    if (this.dirty.size === 0) return;
    const keys: string[] = [];
    for (const key of this.dirty) {
      if (keys.length >= this.tuning.fetchKeysMax) break;
      keys.push(key);
      this.dirty.delete(key);
    }
    this.dirtyFetchToken = this.issue(out, keys, { kind: 'dirty' });
  }

  /**
   * Bring the index in line with what the replica returned (see the header); the clock has seen
   * `entries`. `more`: they are a slice of the result, more follows; keys absent from the replica
   * are told only once the whole result is in.
   */
  refreshIndex(pending: PendingFetch, entries: KeyedEntry[], nowMs: number, out: Out, more = false): void {
    const { issuedSeq, returned, again } = pending;
    const flushedSince = this.flushSeq > issuedSeq;
    for (const [key, entry] of entries) {
      // A purged version reads as absent: its purge, ordered after this fetch, removes it.
      if (this.collection.purgedCovers(key, entry.cas)) continue;
      returned?.add(key);
      const current = this.index.get(key);
      if (current !== undefined && current.version === entry.cas) continue;
      if (current !== undefined && current.version > entry.cas) {
        // The claimed write was issued after this fetch (or a flush came since): it may still land.
        if (flushedSince || current.claimedSeq > issuedSeq) continue;
        if (current.touchedSeq > issuedSeq) again.push(key);
      }
      this.collection.setIndex(key, entry, 0, current?.touchedSeq ?? 0, issuedSeq, nowMs);
    }
    if (more) return;
    if (returned !== null) this.removeLacking(pending, returned);
    if (again.length > 0) this.issue(out, again.slice(0, this.tuning.fetchKeysMax), { kind: 'refresh' });
  }

  /**
   * A key the replica did not return is absent there (a write it refused never landed), unless
   * merged since the fetch was issued. A flush since then changes nothing here: it removes keys,
   * and creates none.
   */
  private removeLacking({ keys, issuedSeq, again }: PendingFetch, returned: ReadonlySet<string>): void {
    for (const key of keys ?? this.index.keys()) {
      const current = this.index.get(key);
      if (returned.has(key) || current === undefined || current.claimedSeq > issuedSeq) continue;
      this.collection.remove(key);
      if (current.touchedSeq > issuedSeq) again.push(key);
    }
  }
}
