/**
 * The eventual-mode state machine: serve locally, replicate results, repair by anti-entropy.
 * (The user-facing semantics are in ../eventual.ts; the design in docs/design.md, "Eventual mode".)
 *
 * A request becomes an `apply` (a write, at a fresh HLC version) or a `read`, at once. The
 * results of a push interval's writes are fetched back once and pushed to every peer, which
 * merges them (greater version wins; counters join: ../../store/counter.ts) and acks. Every
 * anti-entropy interval a round with the next peer up ships only what differs (./anti-entropy.ts).
 *
 * Invariants: the HLC never goes back and is >= every version seen (a peer's version more than
 * clockAheadMaxMs ahead is dropped, so the clock always fits in a version); at most one dirty
 * fetch is outstanding; an entry is purged only when dead and held by every peer, and a purged
 * (key, version) is remembered for purgedMemoryMs so late copies are not resurrected.
 */

import { mayDie, mayRejoin, newestVersion, tombstoneEntry } from './entries.ts';
import type {
  Effect,
  Event,
  KeyedEntry,
  Machine,
  MachineOptions,
  MachineStatus,
  PeerId,
  RequestId,
} from '../types.ts';
import type { Entry } from '../../store/types.ts';
import { opKeys } from '../../store/types.ts';
import { refused, type Refusal } from '../../protocol/refusals.ts';
import { formatHlc, HLC_ZERO, latestVersionAllowed, mergeHlc, packVersion, tickHlc, versionClock, versionNode, type Hlc } from '../hlc.ts';
import { DroppedPeerMessages } from '../peer-input.ts';
import { MemoryAdmission } from '../memory-admission.ts';
import { PurgedVersions } from '../purged.ts';
import { OP_LIMITS_DEFAULT } from '../../store/op-rules.ts';
import { AntiEntropy } from './anti-entropy.ts';
import { BUCKET_COUNT, VersionIndex, type IndexEntry } from './digest.ts';
import { eventualMessageProblem, type EventualMessage, type EventualMessageLimits, type KeyVersion } from './messages.ts';
import { PushQueues } from './push.ts';
import { defaultTuning, type EventualTuning } from './tuning.ts';

type Out = Effect<EventualMessage>[];
type RequestEvent = Extract<Event<EventualMessage>, { kind: 'request' }>;

/** Why a fetch was issued. */
type FetchPurpose =
  | { kind: 'rebuild' }
  | { kind: 'dirty' }
  | { kind: 'ship'; to: PeerId }
  /** Keys whose write the replica refused: the index learns what they hold instead. */
  | { kind: 'refresh' };

interface PendingFetch {
  purpose: FetchPurpose;
  keys: string[] | null;
  issuedSeq: number;
}

function assertNever(value: never): never {
  throw new Error(`unexpected ${JSON.stringify(value)}`);
}

export class EventualMachine implements Machine<EventualMessage> {
  private readonly self: PeerId;
  private readonly peers: PeerId[];
  private readonly nodeIndex: number;
  private readonly peerBits = new Map<PeerId, number>();
  private readonly allPeersMask: number;
  private readonly tuning: EventualTuning;
  /** The memory guard: asked for every write this node takes; peers' pushes count in it as they arrive. */
  private readonly memory: MemoryAdmission;
  private readonly index = new VersionIndex();
  /** Keys of dead entries in the index, waiting to be collected. */
  private readonly graveyard = new Set<string>();
  private readonly purged: PurgedVersions;
  private readonly fetches = new Map<number, PendingFetch>();
  private readonly dirty = new Set<string>();
  /** put token → the push_ack to send once it is applied. */
  private readonly pendingAcks = new Map<number, { to: PeerId; batch: number; versions: KeyVersion[] }>();
  private readonly pushes: PushQueues;
  private peersUp: Set<PeerId>;
  private clock: Hlc = HLC_ZERO;
  private nowMs: number;
  private nextToken = 1;
  /** Counts effects that reach the local replica; a fetch's issuedSeq is its own. */
  private replicaSeq = 0;
  private flushSeq = 0;
  private dirtyAll = false;
  private dirtyFetchToken: number | null = null;
  /** The next dirty fetch may be issued from this time on (pushes are paced, see the tuning). */
  private nextDirtyFetchAtMs = 0;
  /** When the wake-up this machine asked for is due; null when none is pending. */
  private wakeAtMs: number | null = null;
  private started = false;
  /** Requests wait here until the start-up fetch has rebuilt the index and clock. */
  private held: RequestEvent[] | null = [];
  private pendingPurges: Array<[string, bigint]> = [];
  private readonly antiEntropy: AntiEntropy;
  private sweepBucket = 0;
  private readonly messageLimits: EventualMessageLimits;
  private readonly dropped = new DroppedPeerMessages();

  constructor(options: MachineOptions, tuning: Partial<EventualTuning> = {}) {
    this.self = options.self;
    this.peers = [...new Set(options.peers)].filter((peer) => peer !== options.self).sort();
    const everyone = [...this.peers, this.self].sort();
    this.nodeIndex = everyone.indexOf(this.self);
    let mask = 0;
    for (const peer of this.peers) {
      const bit = 1 << everyone.indexOf(peer);
      this.peerBits.set(peer, bit);
      mask |= bit;
    }
    this.allPeersMask = mask;
    this.tuning = { ...defaultTuning(options), ...tuning };
    // Each node's versions are its own writer's (versionNode); the peers in config order.
    this.memory = new MemoryAdmission([...new Set(options.peers)].filter((peer) => peer !== options.self), versionNode);
    this.pushes = new PushQueues(this.peers, this.tuning);
    this.purged = new PurgedVersions(this.tuning);
    // A bound tuned below the default still takes what a peer running the defaults sends.
    const defaults = defaultTuning(options);
    this.messageLimits = {
      keyBytesMax: OP_LIMITS_DEFAULT.keyBytesMax,
      valueBytesMax: options.valueBytesMax ?? OP_LIMITS_DEFAULT.valueBytesMax,
      pushEntriesMax: Math.max(this.tuning.batchEntriesMax, defaults.batchEntriesMax),
      keysMax: Math.max(this.tuning.aeKeysMax, defaults.aeKeysMax),
    };
    this.peersUp = new Set(this.peers);
    this.nowMs = options.nowMs;
    this.clock = tickHlc(HLC_ZERO, options.nowMs);
    const firstRoundAtMs = options.nowMs + this.tuning.antiEntropyIntervalMs * options.random();
    this.antiEntropy = new AntiEntropy(this.peers, this.index, this.tuning, firstRoundAtMs, {
      learnHeld: (key, version, peer) => this.learnHeld(key, version, peer),
      graveyard: () => this.graveyard,
      heldDeadBy: (entry, peer) => this.isDead(entry) && (entry.heldByMask & (this.peerBits.get(peer) ?? 0)) !== 0,
      latestVersionAllowed: () => this.latestVersionAllowed(),
      purgedCovers: (key, version) => this.purged.covers(key, version),
      answerSuperseded: (peer, key, version) => this.answerSuperseded(peer, key, version),
      ship: (keys, to, out) => this.issueFetch(out, keys, { kind: 'ship', to }),
      drainAll: (out) => this.drainAll(out),
      dropMessage: (from, reason, out) => this.dropMessage(from, reason, out),
    });
    packVersion(this.clock, this.nodeIndex); // asserts the node index fits
  }

  step(event: Event<EventualMessage>): Out {
    const out: Out = [];
    this.nowMs = event.nowMs;
    if (this.wakeAtMs !== null && this.nowMs >= this.wakeAtMs) this.wakeAtMs = null;
    if (!this.started) {
      this.started = true;
      this.issueFetch(out, null, { kind: 'rebuild' });
    }
    switch (event.kind) {
      case 'request':
        this.onRequest(event, out);
        break;
      case 'message':
        this.onMessage(event.from, event.message, out);
        break;
      case 'tick':
        this.memory.peersUp(event.peersUp);
        this.onTick(event.peersUp, out);
        break;
      case 'clock_jump':
        // Nothing here is timed by a lease.
        break;
      case 'fetched':
        this.onFetched(event.token, event.entries, out);
        break;
      case 'applied':
        this.onApplied(event.token, out);
        break;
      case 'backend_reset':
        this.onBackendReset(out);
        break;
      case 'refused':
        this.onRefused(event.keys, event.token ?? null, out);
        break;
      case 'flush':
        break;
      case 'memory_polled':
      case 'memory_report':
        this.memory.step(event);
        break;
      default:
        assertNever(event);
    }
    this.scheduleDirtyFetch(out);
    this.emitPurges(out);
    return out;
  }

  /** A get is read locally unless requests are held (the replica is being rebuilt). */
  readsLocally(): boolean {
    return this.held === null;
  }

  status(): MachineStatus {
    return {
      mode: 'eventual',
      role: 'peer',
      term: 0,
      leader: null,
      committed: formatHlc(this.clock),
      applied: String(this.index.size),
      queueDepth: this.pushes.depth(),
      invalidPeerMessages: this.dropped.count,
    };
  }

  /** For tests and the simulator: what the index holds for a key. */
  indexEntry(key: string): Readonly<IndexEntry> | undefined {
    return this.index.get(key);
  }

  /** For tests and the simulator: the current clock. */
  hlc(): Hlc {
    return this.clock;
  }

  /** For tests and the simulator: counters. */
  counters(): { indexSize: number; graveyard: number; purgedRemembered: number; pushesDropped: number; acksAwaitingApply: number } {
    return {
      indexSize: this.index.size,
      graveyard: this.graveyard.size,
      purgedRemembered: this.purged.size,
      pushesDropped: this.pushes.dropped,
      acksAwaitingApply: this.pendingAcks.size,
    };
  }

  // ---- requests -------------------------------------------------------------------------

  private onRequest(event: RequestEvent, out: Out): void {
    if (this.held === null) {
      this.serve(event, out);
      return;
    }
    if (this.held.length >= this.tuning.heldRequestsMax) {
      out.push({ kind: 'reply', requestId: event.requestId, reply: busyReply() });
      return;
    }
    this.held.push(event);
  }

  private serve(event: RequestEvent, out: Out): void {
    const { op, requestId, nowMs } = event;
    if (op.kind === 'get') {
      out.push({ kind: 'read', requestId, op, nowMs });
      return;
    }
    // A refused write leaves the clock ticked: harmless, it only ever has to move forward.
    this.clock = tickHlc(this.clock, nowMs);
    const cas = packVersion(this.clock, this.nodeIndex);
    const refusal = this.memory.refusal(op, cas);
    if (refusal !== null) {
      out.push({ kind: 'reply', requestId, reply: refusal });
      return;
    }
    const seq = this.nextSeq();
    // No token: nothing here waits for the apply (the client gets its result; the dirty fetch
    // that reads it back runs after it by the replica's per-key order).
    out.push({ kind: 'apply', op, cas, nowMs, requestId: requestId as RequestId, token: null, counterNode: this.nodeIndex });
    this.markDirty(opKeys(op), seq);
  }

  private markDirty(keys: readonly string[] | null, seq: number): void {
    if (keys === null) {
      this.dirtyAll = true;
      this.flushSeq = seq;
      return;
    }
    for (const key of keys) {
      this.dirty.add(key);
      const entry = this.index.get(key);
      if (entry !== undefined) entry.touchedSeq = seq;
    }
  }

  /**
   * Fetches the dirty keys' results for pushing, at most once per pushIntervalMs: when the
   * interval has not passed yet, asks to be woken when it has. Runs after every event.
   */
  private scheduleDirtyFetch(out: Out): void {
    if (this.dirtyFetchToken !== null || this.held !== null) return;
    if (this.dirty.size === 0 && !this.dirtyAll) return;
    if (this.nowMs >= this.nextDirtyFetchAtMs) {
      this.nextDirtyFetchAtMs = this.nowMs + this.tuning.pushIntervalMs;
      this.requestDirtyFetch(out);
      return;
    }
    if (this.wakeAtMs !== null && this.wakeAtMs <= this.nextDirtyFetchAtMs) return;
    this.wakeAtMs = this.nextDirtyFetchAtMs;
    out.push({ kind: 'wake', afterMs: this.nextDirtyFetchAtMs - this.nowMs });
  }

  private requestDirtyFetch(out: Out): void {
    if (this.dirtyAll) {
      this.dirtyAll = false;
      this.dirty.clear();
      this.dirtyFetchToken = this.issueFetch(out, null, { kind: 'dirty' });
      return;
    }
    if (this.dirty.size === 0) return;
    const keys: string[] = [];
    for (const key of this.dirty) {
      if (keys.length >= this.tuning.fetchKeysMax) break;
      keys.push(key);
      this.dirty.delete(key);
    }
    this.dirtyFetchToken = this.issueFetch(out, keys, { kind: 'dirty' });
  }

  // ---- fetch results --------------------------------------------------------------------

  private onFetched(token: number, entries: KeyedEntry[], out: Out): void {
    const pending = this.fetches.get(token);
    if (pending === undefined) return;
    this.fetches.delete(token);
    const valid = entries.filter(([key, entry]) => typeof key === 'string' && entry.cas >= 0n);
    this.refreshIndex(pending, valid, out);
    switch (pending.purpose.kind) {
      case 'rebuild':
        this.releaseHeld(out);
        break;
      case 'dirty':
        this.dirtyFetchToken = null;
        for (const peer of this.peers) this.enqueueAll(peer, valid);
        break;
      case 'ship':
        this.enqueueAll(pending.purpose.to, valid);
        break;
      case 'refresh':
        break;
      default:
        assertNever(pending.purpose);
    }
    this.drainAll(out);
  }

  /** Bring the index in line with what the replica returned (see the header). */
  private refreshIndex(pending: PendingFetch, entries: KeyedEntry[], out: Out): void {
    const { issuedSeq } = pending;
    const flushedSince = this.flushSeq > issuedSeq;
    const returned = new Set<string>();
    /**
     * Keys whose claimed write never landed, and that a later effect touched (a merge of an older
     * version, which the index does not show): what the replica holds now is fetched again.
     */
    const again: string[] = [];
    this.observe(entries);
    for (const [key, entry] of entries) {
      // A purged version reads as absent: its purge, ordered after this fetch, removes it.
      if (this.purged.covers(key, entry.cas)) continue;
      returned.add(key);
      const current = this.index.get(key);
      if (current !== undefined && current.version === entry.cas) continue;
      if (current !== undefined && current.version > entry.cas) {
        // The claimed write was issued after this fetch (or a flush came since): it may still land.
        if (flushedSince || current.claimedSeq > issuedSeq) continue;
        if (current.touchedSeq > issuedSeq) again.push(key);
      }
      this.setIndex(key, entry, 0, current?.touchedSeq ?? 0, issuedSeq);
    }
    // A key the replica did not return is absent there (a write it refused never landed), unless
    // merged since the fetch was issued. A flush since then changes nothing here: it removes keys,
    // and creates none.
    for (const key of pending.keys ?? this.index.keys()) {
      const current = this.index.get(key);
      if (returned.has(key) || current === undefined || current.claimedSeq > issuedSeq) continue;
      this.index.delete(key);
      this.graveyard.delete(key);
      if (current.touchedSeq > issuedSeq) again.push(key);
    }
    if (again.length > 0) this.issueFetch(out, again.slice(0, this.tuning.fetchKeysMax), { kind: 'refresh' });
  }

  private releaseHeld(out: Out): void {
    const held = this.held;
    this.held = null;
    for (const event of held ?? []) this.serve(event, out);
  }

  // ---- index, graveyard, collection ----------------------------------------------------

  private setIndex(key: string, entry: Entry, heldByMask: number, touchedSeq: number, claimedSeq: number): void {
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
    if (this.isDead(indexed)) this.graveyard.add(key);
    else this.graveyard.delete(key);
    this.collectIfDone(key);
  }

  private isDead(entry: IndexEntry): boolean {
    if (entry.tombstone) return true;
    return entry.expiresAtMs !== 0 && entry.expiresAtMs + this.tuning.expiredGraceMs <= this.nowMs;
  }

  /** `peer` holds `key` at `version` or later. */
  private learnHeld(key: string, version: bigint, peer: PeerId): void {
    const entry = this.index.get(key);
    const bit = this.peerBits.get(peer) ?? 0;
    if (entry === undefined || entry.version > version || (entry.heldByMask & bit) !== 0) return;
    entry.heldByMask |= bit;
    this.collectIfDone(key);
  }

  private collectIfDone(key: string): void {
    const entry = this.index.get(key);
    if (entry === undefined || !this.isDead(entry)) return;
    if ((entry.heldByMask & this.allPeersMask) !== this.allPeersMask) return;
    this.pendingPurges.push([key, entry.version]);
    this.index.delete(key);
    this.graveyard.delete(key);
    this.purged.remember(key, entry.version, this.nowMs, entry.resetVersion);
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
  private answerSuperseded(peer: PeerId, key: string, version: bigint): void {
    const purged = this.purged.last(key);
    if (purged === undefined || version >= purged.version) return;
    this.pushes.enqueue(peer, key, tombstoneEntry(purged.version, purged.resetVersion));
  }

  private emitPurges(out: Out): void {
    if (this.pendingPurges.length === 0) return;
    this.nextSeq();
    out.push({ kind: 'purge', tombstones: this.pendingPurges });
    this.pendingPurges = [];
  }

  /** Move entries that expired into the graveyard, a few buckets per tick. */
  private sweep(): void {
    for (let i = 0; i < this.tuning.sweepBucketsPerTick; i += 1) {
      const bucket = this.sweepBucket;
      this.sweepBucket = (this.sweepBucket + 1) % BUCKET_COUNT;
      const expired = [...this.index.bucketEntries(bucket)]
        .filter(([key, entry]) => !this.graveyard.has(key) && this.isDead(entry))
        .map(([key]) => key);
      for (const key of expired) {
        this.graveyard.add(key);
        this.collectIfDone(key);
      }
    }
  }

  // ---- pushes ---------------------------------------------------------------------------

  private enqueueAll(peer: PeerId, entries: KeyedEntry[]): void {
    for (const [key, entry] of entries) this.pushes.enqueue(peer, key, entry);
  }

  private drainAll(out: Out): void {
    for (const peer of this.peers) {
      if (!this.peersUp.has(peer)) continue;
      for (const { batch, entries } of this.pushes.drain(peer, this.nowMs, (key, entry) => this.stillCurrent(key, entry.cas))) {
        out.push({ kind: 'send', to: peer, message: { kind: 'push', batch, entries } });
      }
    }
  }

  /**
   * Whether a version queued for a peer is still worth sending: no later version of the key is
   * indexed, and no later tombstone was purged. An entry that waited in a queue (its peer was down
   * or its window full) past the key's next write, or past a delete that every replica has since
   * collected, would only be overwritten there, or, once the purge is forgotten, bring the value
   * back.
   */
  private stillCurrent(key: string, version: bigint): boolean {
    const indexed = this.index.get(key);
    if (indexed !== undefined) return indexed.version <= version;
    const purged = this.purged.version(key);
    return purged === undefined || version >= purged;
  }

  private onPush(from: PeerId, batch: number, pushed: KeyedEntry[], out: Out): void {
    const versions: KeyVersion[] = [];
    const merge: KeyedEntry[] = [];
    const latest = this.latestVersionAllowed();
    const entries = pushed.filter(([, entry]) => entry.cas <= latest);
    if (entries.length < pushed.length) this.dropMessage(from, 'push: entries with clocks too far ahead of local time dropped', out);
    this.observe(entries);
    for (const [key, entry] of entries) {
      // Only what is or may become dead is ever collected, so only that needs "held" news.
      if (mayDie(entry)) versions.push([key, entry.cas]);
      if (!this.purged.covers(key, entry.cas)) merge.push([key, entry]);
      else this.answerSuperseded(from, key, entry.cas);
    }
    if (merge.length === 0) {
      out.push({ kind: 'send', to: from, message: { kind: 'push_ack', batch, versions } });
      this.drainAll(out);
      return;
    }
    const token = this.takeToken();
    const seq = this.nextSeq();
    // A counter merge may make a state neither side had: it takes this fresh version.
    this.clock = tickHlc(this.clock, this.nowMs);
    const joinCas = packVersion(this.clock, this.nodeIndex);
    this.memory.arrived(merge);
    out.push({ kind: 'put', entries: merge, how: 'merge', token, joinCas });
    this.pendingAcks.set(token, { to: from, batch, versions });
    const unread = this.keysBeingRead();
    for (const [key, entry] of merge) {
      // What the merge made (a join, or an older reset winning) is read back and pushed on. A
      // local write the index has not read back yet may be a counter the merge joins: read again.
      const readPending = unread === null || unread.has(key);
      if (readPending || mayRejoin(entry, this.index.get(key)?.version)) this.dirty.add(key);
      this.noteMerged(key, entry, from, seq);
    }
    this.drainAll(out);
  }

  /** Keys of the dirty fetch in flight (null: every key): their local writes are not in the index yet. */
  private keysBeingRead(): ReadonlySet<string> | null {
    const pending = this.dirtyFetchToken === null ? undefined : this.fetches.get(this.dirtyFetchToken);
    if (pending === undefined) return new Set();
    return pending.keys === null ? null : new Set(pending.keys);
  }

  /** The index after merging `entry` from `from` (the sender holds it). */
  private noteMerged(key: string, entry: Entry, from: PeerId, seq: number): void {
    const current = this.index.get(key);
    const bit = this.peerBits.get(from) ?? 0;
    if (current === undefined || entry.cas > current.version) {
      this.setIndex(key, entry, bit, seq, seq);
      return;
    }
    current.touchedSeq = seq;
    if (entry.cas === current.version) this.learnHeld(key, entry.cas, from);
  }

  private onApplied(token: number, out: Out): void {
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
  private onRefused(keys: readonly string[], token: number | null, out: Out): void {
    const ack = token === null ? undefined : this.pendingAcks.get(token);
    if (token !== null) this.pendingAcks.delete(token);
    if (ack !== undefined && ack.versions.length > 0) {
      this.nextSeq();
      out.push({ kind: 'purge', tombstones: ack.versions });
    }
    this.issueFetch(out, [...new Set(keys)], { kind: 'refresh' });
  }

  private onPushAck(from: PeerId, batch: number, versions: KeyVersion[], out: Out): void {
    this.pushes.onAck(from, batch);
    for (const [key, version] of versions) this.learnHeld(key, version, from);
    this.drainAll(out);
  }

  // ---- messages, ticks, resets ----------------------------------------------------------

  private onMessage(from: PeerId, raw: unknown, out: Out): void {
    if (!this.peerBits.has(from)) return this.dropMessage(from, 'not from a peer of this cluster', out);
    const problem = eventualMessageProblem(raw, this.messageLimits);
    if (problem !== null) return this.dropMessage(from, problem, out);
    const message = raw as EventualMessage;
    switch (message.kind) {
      case 'push':
        this.onPush(from, message.batch, message.entries, out);
        break;
      case 'push_ack':
        this.onPushAck(from, message.batch, message.versions, out);
        break;
      case 'ae_groups':
        this.antiEntropy.onAeGroups(from, message.round, message.groups, out);
        break;
      case 'ae_buckets':
        this.antiEntropy.onAeBuckets(from, message, out);
        break;
      case 'ae_keys':
        this.antiEntropy.onAeKeys(from, message, out);
        break;
      case 'ae_want':
        this.antiEntropy.onAeWant(from, message.keys, out);
        break;
      default:
        assertNever(message);
    }
  }

  private onTick(peersUp: readonly PeerId[], out: Out): void {
    this.peersUp = new Set(peersUp.filter((peer) => this.peerBits.has(peer)));
    this.pushes.expire(this.nowMs);
    this.antiEntropy.onTick(this.nowMs, this.peersUp, out);
    this.sweep();
    this.purged.forgetOld(this.nowMs);
    this.drainAll(out);
  }

  private onBackendReset(out: Out): void {
    this.index.clear();
    this.graveyard.clear();
    this.fetches.clear();
    this.pendingAcks.clear();
    this.dirtyFetchToken = null;
    this.antiEntropy.onBackendReset(this.nowMs);
    this.issueFetch(out, null, { kind: 'rebuild' });
  }

  // ---- helpers --------------------------------------------------------------------------

  /** A peer message (or part of one) this node cannot use: counted, noted (rate-limited). */
  private dropMessage(from: PeerId, reason: string, out: Out): void {
    const note = this.dropped.drop<EventualMessage>(from, reason, this.nowMs);
    if (note !== null) out.push({ ...note, meta: { node: this.self, ...note.meta } });
  }

  /** The greatest version the clock may follow now (see the header's invariants). */
  private latestVersionAllowed(): bigint {
    return latestVersionAllowed(this.nowMs, this.tuning.clockAheadMaxMs);
  }

  /** The clock follows the newest of `entries` it may (see the header's invariants). */
  private observe(entries: readonly KeyedEntry[]): void {
    this.clock = mergeHlc(this.clock, versionClock(newestVersion(entries, this.latestVersionAllowed())));
  }

  private issueFetch(out: Out, keys: string[] | null, purpose: FetchPurpose): number {
    const token = this.takeToken();
    const issuedSeq = this.nextSeq();
    this.fetches.set(token, { purpose, keys, issuedSeq });
    out.push({ kind: 'fetch', token, keys });
    return token;
  }

  private takeToken(): number {
    const token = this.nextToken;
    this.nextToken += 1;
    return token;
  }

  private nextSeq(): number {
    this.replicaSeq += 1;
    return this.replicaSeq;
  }
}

function busyReply(): Refusal {
  return refused('busy', 'replica still loading');
}
