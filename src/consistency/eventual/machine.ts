/**
 * The eventual-mode state machine: serve locally, replicate results, repair by anti-entropy.
 * (The user-facing semantics are in ../eventual.ts; the design in docs/design.md, "Eventual mode".)
 *
 * A request becomes an `apply` (a write, at a fresh HLC version) or a `read`, at once. The
 * results of a push interval's writes are fetched back once (./fetches.ts) and pushed to every
 * peer, which merges them and acks (./peer-pushes.ts). Every anti-entropy interval a round with
 * the next peer up ships only what differs (./anti-entropy.ts). Dead entries every peer holds are
 * collected (./collection.ts). This class owns the clock, the requests held at start-up, and
 * hands each event to the part it concerns.
 *
 * Invariants: the HLC never goes back and is >= every version seen (a peer's version more than
 * clockAheadMaxMs ahead is dropped, so the clock always fits in a version); requests are served
 * only once the start-up fetch has rebuilt the index and clock.
 */

import { newestVersion } from './entries.ts';
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
import { opKeys } from '../../store/types.ts';
import { refused, type Refusal } from '../../protocol/refusals.ts';
import { formatHlc, HLC_ZERO, latestVersionAllowed, mergeHlc, packVersion, tickHlc, versionClock, versionNode, type Hlc } from '../hlc.ts';
import { DroppedPeerMessages } from '../peer-input.ts';
import { MemoryAdmission } from '../memory-admission.ts';
import { OP_LIMITS_DEFAULT } from '../../store/op-rules.ts';
import { AntiEntropy } from './anti-entropy.ts';
import { Collection } from './collection.ts';
import { VersionIndex, type IndexEntry } from './digest.ts';
import { Fetches } from './fetches.ts';
import { eventualMessageProblem, type EventualMessage, type EventualMessageLimits } from './messages.ts';
import { PeerPushes } from './peer-pushes.ts';
import { PushQueues } from './push.ts';
import { defaultTuning, type EventualTuning } from './tuning.ts';

type Out = Effect<EventualMessage>[];
type RequestEvent = Extract<Event<EventualMessage>, { kind: 'request' }>;

function assertNever(value: never): never {
  throw new Error(`unexpected ${JSON.stringify(value)}`);
}

export class EventualMachine implements Machine<EventualMessage> {
  private readonly self: PeerId;
  private readonly peers: PeerId[];
  private readonly nodeIndex: number;
  private readonly peerBits = new Map<PeerId, number>();
  private readonly tuning: EventualTuning;
  /** The memory guard: asked for every write this node takes; peers' pushes count in it as they arrive. */
  private readonly memory: MemoryAdmission;
  private readonly index = new VersionIndex();
  private readonly pushes: PushQueues;
  // The concerns, each owning its state (see their headers).
  private readonly collection: Collection;
  private readonly fetches: Fetches;
  private readonly peerPushes: PeerPushes;
  private readonly antiEntropy: AntiEntropy;
  private clock: Hlc = HLC_ZERO;
  private nowMs: number;
  private started = false;
  /** Requests wait here until the start-up fetch has rebuilt the index and clock. */
  private held: RequestEvent[] | null = [];
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
    this.tuning = { ...defaultTuning(options), ...tuning };
    // Each node's versions are its own writer's (versionNode); the peers in config order.
    const peers = [...new Set(options.peers)].filter((peer) => peer !== options.self);
    this.memory = new MemoryAdmission(peers, versionNode, options.keyHeld);
    this.pushes = new PushQueues(this.peers, this.tuning);
    this.collection = new Collection(this.index, this.peerBits, mask, this.tuning, this.pushes);
    this.fetches = new Fetches(this.index, this.collection, this.tuning);
    const parts = { index: this.index, queues: this.pushes, collection: this.collection, fetches: this.fetches, memory: this.memory };
    this.peerPushes = new PeerPushes(this.peers, this.peerBits, parts, this.tuning, {
      observe: (entries) => this.observe(entries),
      freshVersion: (nowMs) => this.freshVersion(nowMs),
      dropMessage: (from, reason, out) => this.dropMessage(from, reason, out),
    });
    // A bound tuned below the default still takes what a peer running the defaults sends.
    const defaults = defaultTuning(options);
    this.messageLimits = {
      keyBytesMax: OP_LIMITS_DEFAULT.keyBytesMax,
      valueBytesMax: options.valueBytesMax ?? OP_LIMITS_DEFAULT.valueBytesMax,
      pushEntriesMax: Math.max(this.tuning.batchEntriesMax, defaults.batchEntriesMax),
      keysMax: Math.max(this.tuning.aeKeysMax, defaults.aeKeysMax),
    };
    this.nowMs = options.nowMs;
    this.clock = tickHlc(HLC_ZERO, options.nowMs);
    const firstRoundAtMs = options.nowMs + this.tuning.antiEntropyIntervalMs * options.random();
    this.antiEntropy = new AntiEntropy(this.peers, this.index, this.tuning, firstRoundAtMs, options.random(), {
      learnHeld: (key, version, peer) => this.collection.learnHeld(key, version, peer, this.nowMs),
      graveyard: () => this.collection.graveyard,
      heldDeadBy: (entry, peer) => this.collection.heldDeadBy(entry, peer, this.nowMs),
      latestVersionAllowed: () => this.latestVersionAllowed(),
      purgedCovers: (key, version) => this.collection.purgedCovers(key, version),
      answerSuperseded: (peer, key, version) => this.collection.answerSuperseded(peer, key, version),
      ship: (keys, to, out) => this.fetches.issue(out, keys, { kind: 'ship', to }),
      drainAll: (out) => this.peerPushes.drainAll(this.nowMs, out),
      backlog: (peer) => this.fetches.shippingTo(peer) + this.pushes.backlog(peer),
      dropMessage: (from, reason, out) => this.dropMessage(from, reason, out),
    });
    packVersion(this.clock, this.nodeIndex); // asserts the node index fits
  }

  step(event: Event<EventualMessage>): Out {
    const out: Out = [];
    this.nowMs = event.nowMs;
    this.fetches.advance(this.nowMs);
    if (!this.started) {
      this.started = true;
      this.fetches.issue(out, null, { kind: 'rebuild' });
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
        this.onFetched(event.token, event.entries, event.more === true, out);
        break;
      case 'applied':
        this.peerPushes.onApplied(event.token, out);
        break;
      case 'backend_reset':
        this.onBackendReset(out);
        break;
      case 'refused':
        this.peerPushes.onRefused(event.keys, event.token ?? null, out);
        break;
      case 'stopping':
        this.peerPushes.leave();
        this.peerPushes.drainAll(this.nowMs, out);
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
    if (this.held === null) this.fetches.scheduleDirtyFetch(this.nowMs, out, this.peerPushes.leaving);
    this.emitPurges(out);
    return out;
  }

  /** Stopping: whether local writes are still to be read back, or queued for a peer that is up. */
  handingOver(): boolean {
    return this.peerPushes.leaving && this.held === null && (this.fetches.dirtyPending || this.peerPushes.queuedForPeersUp() > 0);
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
      caughtUp: this.held === null,
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
      graveyard: this.collection.graveyard.size,
      purgedRemembered: this.collection.purgedRemembered,
      pushesDropped: this.pushes.dropped,
      acksAwaitingApply: this.peerPushes.acksAwaitingApply,
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
    const cas = this.freshVersion(nowMs);
    const refusal = this.memory.refusal(op, cas);
    if (refusal !== null) {
      out.push({ kind: 'reply', requestId, reply: refusal });
      return;
    }
    const seq = this.fetches.nextSeq();
    // No token: nothing here waits for the apply (the client gets its result; the dirty fetch
    // that reads it back runs after it by the replica's per-key order).
    out.push({ kind: 'apply', op, cas, nowMs, requestId: requestId as RequestId, token: null, counterNode: this.nodeIndex });
    this.fetches.markDirty(opKeys(op), seq);
  }

  private releaseHeld(out: Out): void {
    const held = this.held;
    this.held = null;
    for (const event of held ?? []) this.serve(event, out);
  }

  // ---- fetch results, messages, ticks, resets -------------------------------------------

  /** `more`: `entries` are a slice of the fetch's result, more follows. */
  private onFetched(token: number, entries: KeyedEntry[], more: boolean, out: Out): void {
    const pending = more ? this.fetches.sliceOf(token) : this.fetches.complete(token);
    if (pending === undefined) return;
    const valid = entries.filter(([key, entry]) => typeof key === 'string' && entry.cas >= 0n);
    this.observe(valid);
    this.fetches.refreshIndex(pending, valid, this.nowMs, out, more);
    switch (pending.purpose.kind) {
      case 'rebuild':
        if (!more) this.releaseHeld(out);
        break;
      case 'dirty':
        for (const peer of this.peers) this.peerPushes.enqueueAll(peer, valid);
        break;
      case 'ship':
        this.peerPushes.enqueueAll(pending.purpose.to, valid);
        break;
      case 'refresh':
        break;
      default:
        assertNever(pending.purpose);
    }
    this.peerPushes.drainAll(this.nowMs, out);
  }

  private onMessage(from: PeerId, raw: unknown, out: Out): void {
    if (!this.peerBits.has(from)) return this.dropMessage(from, 'not from a peer of this cluster', out);
    const problem = eventualMessageProblem(raw, this.messageLimits);
    if (problem !== null) return this.dropMessage(from, problem, out);
    const message = raw as EventualMessage;
    switch (message.kind) {
      case 'push':
        this.peerPushes.onPush(from, message.batch, message.entries, this.nowMs, out);
        break;
      case 'push_ack':
        this.peerPushes.onPushAck(from, message.batch, message.versions, this.nowMs, out);
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
    this.peerPushes.onTick(peersUp, this.nowMs);
    this.antiEntropy.onTick(this.nowMs, this.peerPushes.peersUp, out);
    this.collection.sweep(this.nowMs);
    this.collection.forgetOld(this.nowMs);
    this.peerPushes.drainAll(this.nowMs, out);
  }

  private onBackendReset(out: Out): void {
    this.index.clear();
    this.collection.clear();
    this.fetches.reset();
    this.peerPushes.reset();
    this.antiEntropy.onBackendReset(this.nowMs);
    this.fetches.issue(out, null, { kind: 'rebuild' });
  }

  // ---- helpers --------------------------------------------------------------------------

  /** Dead entries collected during this step go to the replica as one purge. */
  private emitPurges(out: Out): void {
    const tombstones = this.collection.takePurges();
    if (tombstones === null) return;
    this.fetches.nextSeq();
    out.push({ kind: 'purge', tombstones });
  }

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

  /** Ticks the clock to `nowMs`: a fresh version of this node, above every one seen. */
  private freshVersion(nowMs: number): bigint {
    this.clock = tickHlc(this.clock, nowMs);
    return packVersion(this.clock, this.nodeIndex);
  }
}

function busyReply(): Refusal {
  return refused('busy', 'replica still loading');
}
