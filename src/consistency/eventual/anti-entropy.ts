/**
 * Anti-entropy rounds of eventual mode: every antiEntropyIntervalMs this node starts a round with
 * the next peer up (round-robin), and the two ship each other only what differs, narrowing down
 * by digests of the version index (./digest.ts): group digests, then the differing groups' bucket
 * digests, then the differing buckets' key → version lists, then the entries.
 *
 * A round carries at most aeKeysMax differences. One that carried entries and found more (a
 * replica rebuilt empty: a whole memcached's worth) is followed by the next round with that peer
 * at the next tick between the due rounds, once at most half a round's worth is still on its way
 * there, not a round interval later. Each node starts its key lists and bucket walks at its own
 * point of the ring of buckets, so two peers rebuilding a third ship it different buckets, and a
 * list or walk cut short makes the next one start where it stopped: a difference only the peer's
 * own list resolves (a dead entry the peer has purged) never holds the other buckets back.
 *
 * Owns: the round this node started (one at a time), when the next is due, and whose turn it is.
 * The index, what peers hold, and the fetches that ship entries belong to the machine (`host`).
 *
 * Invariants: at most one round of our own is in progress, and its bucket digests are taken only
 * from the peer it was started with; key lists sent, and keys shipped or asked for, number at most
 * aeKeysMax, and a responder walks buckets only until it has that many.
 */

import { itemAt } from '../../runtime/item-at.ts';
import type { Effect, PeerId } from '../types.ts';
import { BUCKET_COUNT, bucketOfKey, bucketsOfGroup, differingGroups, groupOfBucket, type IndexEntry, type VersionIndex } from './digest.ts';
import type { EventualMessage, KeyVersion } from './messages.ts';
import type { EventualTuning } from './tuning.ts';

type Out = Effect<EventualMessage>[];

/** What a round needs of the machine that runs it. */
export interface AntiEntropyHost {
  /** `peer` holds `key` at `version` or later. */
  learnHeld(key: string, version: bigint, peer: PeerId): void;
  /** Dead entries in the index (they wait on every peer to hold them). */
  graveyard(): ReadonlySet<string>;
  /** Whether `entry` is dead and `peer` is known to hold it. */
  heldDeadBy(entry: IndexEntry, peer: PeerId): boolean;
  /** The greatest version the clock may follow now. */
  latestVersionAllowed(): bigint;
  /** Whether `key` at `version` was purged here. */
  purgedCovers(key: string, version: bigint): boolean;
  /** `peer` holds `key` at `version`, older than an entry purged here: send it the tombstone. */
  answerSuperseded(peer: PeerId, key: string, version: bigint): void;
  /** Fetches `keys` from the replica and pushes them to `to`. */
  ship(keys: string[], to: PeerId, out: Out): void;
  /** Sends what the push queues allow. */
  drainAll(out: Out): void;
  /** Entries on their way to `peer` (being read for shipping, queued, or sent and unacknowledged). */
  backlog(peer: PeerId): number;
  /** Drops (part of) a message this node cannot use. */
  dropMessage(from: PeerId, reason: string, out: Out): void;
}

interface Round {
  id: number;
  peer: PeerId;
  /** The group digests sent, to tell later whether a group still matches. */
  groups: number[];
}

/** The anti-entropy rounds of one node, as initiator and as responder. */
export class AntiEntropy {
  private round: Round | null = null;
  private nextRoundId = 1;
  private nextRoundAtMs: number;
  private roundRobin = 0;
  /** Peers a round carried entries to or from and found more differences with: the next round with them is due at once. */
  private readonly more = new Set<PeerId>();
  /** Peers our last key list to was cut short: if they ask for entries, there is more. */
  private readonly listedShort = new Set<PeerId>();
  /** Where on the ring of buckets this node's next key list starts, and its next walk of a peer's list. */
  private listFrom: number;
  private walkFrom: number;

  /** `start` in [0, 1): where on the ring of buckets this node starts its lists (random per node). */
  constructor(
    private readonly peers: readonly PeerId[],
    private readonly index: VersionIndex,
    private readonly tuning: Pick<EventualTuning, 'antiEntropyIntervalMs' | 'aeKeysMax'>,
    firstRoundAtMs: number,
    start: number,
    private readonly host: AntiEntropyHost,
  ) {
    this.nextRoundAtMs = firstRoundAtMs;
    this.listFrom = Math.floor(start * BUCKET_COUNT) % BUCKET_COUNT;
    this.walkFrom = this.listFrom;
  }

  /**
   * A tick: starts a round with the next peer up when one is due; between those, continues with a
   * peer the last round carried entries to or from and left differences with, once what was
   * shipped to it has gone out. (Those never hold the due rounds back: a peer only a third node
   * can settle a difference with must still meet that node.)
   */
  onTick(nowMs: number, peersUp: ReadonlySet<PeerId>, out: Out): void {
    if (nowMs >= this.nextRoundAtMs) {
      this.nextRoundAtMs = nowMs + this.tuning.antiEntropyIntervalMs;
      const candidates = this.peers.filter((peer) => peersUp.has(peer));
      if (candidates.length === 0) return;
      this.startRound(itemAt(candidates, this.roundRobin % candidates.length), out);
      this.roundRobin += 1;
      return;
    }
    if (this.round !== null) return;
    for (const peer of this.more) {
      if (!peersUp.has(peer)) this.more.delete(peer);
      else if (this.host.backlog(peer) <= this.tuning.aeKeysMax / 2) return this.startRound(peer, out);
    }
  }

  /** The replica was emptied: the round in progress is dropped, and the next one is due now. */
  onBackendReset(nowMs: number): void {
    this.round = null;
    this.more.clear();
    this.listedShort.clear();
    this.nextRoundAtMs = nowMs;
  }

  private startRound(peer: PeerId, out: Out): void {
    this.more.delete(peer);
    const groups = this.index.groupDigestList();
    this.round = { id: this.nextRoundId, peer, groups };
    this.nextRoundId += 1;
    out.push({ kind: 'send', to: peer, message: { kind: 'ae_groups', round: this.round.id, groups } });
  }

  /** Responder, step 1: which groups differ, and their bucket digests. */
  onAeGroups(from: PeerId, round: number, groups: number[], out: Out): void {
    const differing = differingGroups(this.index.groupDigestList(), groups);
    const differs = new Set(differing);
    this.learnMatchingBuckets(from, (bucket) => !differs.has(groupOfBucket(bucket)));
    const buckets: Array<[number, number]> = differing
      .flatMap(bucketsOfGroup)
      .map((bucket) => [bucket, this.index.bucketDigest(bucket)]);
    out.push({ kind: 'send', to: from, message: { kind: 'ae_buckets', round, groups: differing, buckets } });
  }

  /** Initiator, step 2: send the key → version lists of the differing buckets. */
  onAeBuckets(from: PeerId, message: Extract<EventualMessage, { kind: 'ae_buckets' }>, out: Out): void {
    const round = this.round;
    if (round === null || round.id !== message.round || round.peer !== from) return;
    this.round = null;
    const differs = new Set(message.groups);
    const matchingGroup = (group: number): boolean =>
      !differs.has(group) && this.index.groupDigest(group) === round.groups[group];
    const differingBuckets: number[] = [];
    const matchingBuckets = new Set<number>();
    for (const [bucket, digest] of message.buckets) {
      if (this.index.bucketDigest(bucket) === digest) matchingBuckets.add(bucket);
      else differingBuckets.push(bucket);
    }
    this.learnMatchingBuckets(from, (b) => matchingBuckets.has(b) || matchingGroup(groupOfBucket(b)));
    if (differingBuckets.length > 0) this.sendKeyLists(from, round.id, fromBucket(differingBuckets, this.listFrom), out);
  }

  /**
   * Whole buckets while they fit in aeKeysMax pairs. A first bucket larger than that is listed in
   * part, so the message stays bounded (the peer checks the bound): the responder then ships some
   * keys we hold already, which costs bytes, not correctness.
   */
  private sendKeyLists(to: PeerId, round: number, differing: number[], out: Out): void {
    const buckets: number[] = [];
    const versions: KeyVersion[] = [];
    let cutShort = false;
    for (const bucket of differing) {
      const size = this.index.bucketSize(bucket);
      if (buckets.length > 0 && versions.length + size > this.tuning.aeKeysMax) {
        cutShort = true;
        break;
      }
      buckets.push(bucket);
      if (size > this.tuning.aeKeysMax - versions.length) cutShort = true;
      for (const [key, entry] of this.index.bucketEntries(bucket)) {
        if (versions.length >= this.tuning.aeKeysMax) break;
        versions.push([key, entry.version]);
      }
    }
    const last = buckets.at(-1);
    this.listedShort.delete(to);
    if (cutShort && last !== undefined) {
      this.listedShort.add(to);
      this.listFrom = (last + 1) % BUCKET_COUNT;
    }
    out.push({ kind: 'send', to, message: { kind: 'ae_keys', round, buckets, versions } });
  }

  /**
   * Responder, step 3: ship what the initiator lacks, ask for what we lack. The buckets are walked
   * from this node's point of the ring until aeKeysMax keys are found either way; a walk cut short
   * makes our next round with the initiator due at once.
   */
  onAeKeys(from: PeerId, message: Extract<EventualMessage, { kind: 'ae_keys' }>, out: Out): void {
    const buckets = new Set(message.buckets);
    const theirs = new Map<string, bigint>();
    const latest = this.host.latestVersionAllowed();
    let tooFarAhead = false;
    for (const [key, version] of message.versions) {
      // A version we would drop when pushed is not asked for either.
      if (version > latest) tooFarAhead = true;
      else if (buckets.has(bucketOfKey(key))) theirs.set(key, version);
    }
    if (tooFarAhead) this.host.dropMessage(from, 'ae_keys: versions with clocks too far ahead of local time dropped', out);
    const ship: string[] = [];
    const want: string[] = [];
    const max = this.tuning.aeKeysMax;
    for (const bucket of fromBucket([...buckets].sort((a, b) => a - b), this.walkFrom)) {
      if (ship.length >= max || want.length >= max) {
        this.more.add(from);
        this.walkFrom = bucket;
        break;
      }
      this.compareBucket(from, bucket, theirs, { ship, want });
    }
    for (const [key, version] of theirs) {
      if (this.index.has(key)) continue;
      if (this.host.purgedCovers(key, version)) this.host.answerSuperseded(from, key, version);
      else want.push(key);
    }
    if (ship.length > max || want.length > max) this.more.add(from);
    const shipKeys = ship.slice(0, max);
    if (shipKeys.length > 0) this.host.ship(shipKeys, from, out);
    const wantKeys = want.slice(0, max);
    if (wantKeys.length > 0) {
      out.push({ kind: 'send', to: from, message: { kind: 'ae_want', round: message.round, keys: wantKeys } });
    }
    this.host.drainAll(out);
  }

  private compareBucket(
    from: PeerId,
    bucket: number,
    theirs: ReadonlyMap<string, bigint>,
    lists: { ship: string[]; want: string[] },
  ): void {
    const held: KeyVersion[] = [];
    for (const [key, entry] of this.index.bucketEntries(bucket)) {
      const version = theirs.get(key);
      if (version === undefined) {
        if (!this.host.heldDeadBy(entry, from)) lists.ship.push(key);
      } else if (version < entry.version) {
        lists.ship.push(key);
      } else {
        held.push([key, version]);
        if (version > entry.version) lists.want.push(key);
      }
    }
    for (const [key, version] of held) this.host.learnHeld(key, version, from);
  }

  /** Initiator, step 4: ship what the responder asked for. */
  onAeWant(from: PeerId, keys: string[], out: Out): void {
    // Our list was cut short, or theirs is full (they may have left some out): there is more.
    if (keys.length > 0 && (this.listedShort.has(from) || keys.length >= this.tuning.aeKeysMax)) this.more.add(from);
    const wanted = keys.slice(0, this.tuning.aeKeysMax);
    if (wanted.length > 0) this.host.ship(wanted, from, out);
  }

  /** `peer` holds the same versions as we do in the buckets `matches` accepts. */
  private learnMatchingBuckets(peer: PeerId, matches: (bucket: number) => boolean): void {
    const keys = [...this.host.graveyard()].filter((key) => matches(bucketOfKey(key)));
    for (const key of keys) {
      const version = this.index.versionOf(key);
      if (version !== undefined) this.host.learnHeld(key, version, peer);
    }
  }
}

/** `buckets` (ascending) rotated to begin at the first one at or past `start` on the ring. */
function fromBucket(buckets: readonly number[], start: number): number[] {
  const at = buckets.findIndex((bucket) => bucket >= start);
  return at <= 0 ? [...buckets] : [...buckets.slice(at), ...buckets.slice(0, at)];
}
