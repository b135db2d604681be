/**
 * The causal-mode state machine: serve locally at once, replicate in the background, and make a
 * peer's writes visible only together with everything they depend on. (User-facing semantics:
 * ../causal.ts; the design: docs/design.md, "Causal mode, in the machine's terms".)
 *
 * Glossary: *visible vector* — per node, the greatest of its versions up to which every write of
 * that node is in the local replica (or overwritten there); *chain* — the batches one node sends
 * another, each covering its writes in (prev, to]; *snapshot* — a batch of the whole replica;
 * *stable* — covered by the visible vector of every node.
 *
 * Invariants: the visible vector goes back only at a backend reset or a refused merge (to what
 * peers were told); a chain batch is merged only when prev <= visible[sender] and deps <= visible
 * elsewhere; the HLC is >= every version merged or fetched, so a local write's version beats
 * what the replica holds. Chains: ./outbox.ts (ours to each peer), ./inbox.ts (each peer's to us).
 */

import { refused } from '../../protocol/refusals.ts';
import type { Effect, Event, KeyedEntry, Machine, MachineOptions, MachineStatus, PeerId, RequestId } from '../types.ts';
import type { Entry } from '../../store/types.ts';
import { opKeys } from '../../store/types.ts';
import { HLC_ZERO, latestVersionAllowed, mergeHlc, packVersion, tickHlc, versionClock, versionNode, type Hlc } from '../hlc.ts';
import { DroppedPeerMessages } from '../peer-input.ts';
import { MemoryAdmission } from '../memory-admission.ts';
import { OP_LIMITS_DEFAULT } from '../../store/op-rules.ts';
import { defaultCausalTuning, type CausalTuning } from './tuning.ts';
import { Inbox } from './inbox.ts';
import { causalMessageProblem, componentOf, type Batch, type CausalMessage, type CausalMessageLimits, type VersionVector } from './messages.ts';
import { Outbox } from './outbox.ts';
import { Tombstones } from './tombstones.ts';
import { formatToken, parseToken } from './token.ts';

type Out = Effect<CausalMessage>[];
type RequestEvent = Extract<Event<CausalMessage>, { kind: 'request' }>;
type BatchMessage = Extract<CausalMessage, { kind: 'batch' }>;

/** A merge issued and not yet acknowledged (see `merges`). */
interface PendingMerge {
  to: PeerId;
  batchTo: bigint;
  before: VersionVector;
  done: boolean;
  /** After a reset: what the merge brings back of our lost writes, acted on once memcached has taken it. */
  recovered: { snapshot: boolean; deps: VersionVector; back: string[] } | null;
}

type FetchPurpose =
  | { kind: 'rebuild' }
  | { kind: 'dirty'; keys: string[] | null; to: bigint; deps: VersionVector }
  | { kind: 'snapshot'; peer: PeerId; to: bigint; deps: VersionVector }
  | { kind: 'graves' };

/** Every so many ticks the visible vector goes to the peers even if it did not change (one may have missed it). */
const VISIBLE_EVERY_TICKS = 10;

function assertNever(value: never): never {
  throw new Error(`unexpected ${JSON.stringify(value)}`);
}

export class CausalMachine implements Machine<CausalMessage> {
  private readonly self: PeerId;
  private readonly peers: PeerId[];
  /** Every node, sorted: the index of a vector's components and of a version's node bits. */
  private readonly nodes: PeerId[];
  private readonly selfIndex: number;
  private readonly tuning: CausalTuning;
  /** The memory guard: asked for every write this node takes; peers' pushes count in it as they arrive. */
  private readonly memory: MemoryAdmission;
  private readonly limits: CausalMessageLimits;
  private readonly dropped = new DroppedPeerMessages();
  private clock: Hlc = HLC_ZERO;
  private visible: VersionVector;
  private readonly peerVisible = new Map<PeerId, VersionVector>();
  private readonly outboxes = new Map<PeerId, Outbox>();
  private readonly inboxes = new Map<PeerId, Inbox>();
  private readonly fetches = new Map<number, FetchPurpose>();
  /**
   * Merges issued and not yet acknowledged, in issue order (token → the ack to send, and the
   * visible vector before the merge). `visible` counts them at once, so the next batch's
   * dependencies can be met in the same step; what peers are told (`told()`) stops before the
   * first one memcached has not yet taken, and a refused merge rolls `visible` back to it.
   */
  private readonly merges = new Map<number, PendingMerge>();
  /**
   * After a reset: our own component then, and the peers that have not yet sent a snapshot
   * covering it. Our own writes up to it that such a snapshot brings back are shipped again
   * (the replica lost them; the other peer may not have them).
   */
  private lostOwnTo = 0n;
  /** Peer → when it was last asked for that snapshot, or last sent part of one. */
  private readonly owedSnapshots = new Map<PeerId, number>();
  private rebuilds = 0;
  private readonly tombstones: Tombstones;
  private readonly dirty = new Set<string>();
  /**
   * Keys holding counter metadata (store/counter.ts) → the version the replica was last seen to
   * hold: a merged version other than that may have made a new state, which is shipped as ours.
   */
  private readonly counted = new Map<string, bigint>();
  /** A merge made states of ours (counter joins) that the next dirty fetch ships at a version of its own. */
  private rejoinPending = false;
  private dirtyAll = false;
  private dirtyFetchToken: number | null = null;
  private nextDirtyFetchAtMs = 0;
  private wakeAtMs: number | null = null;
  private peersUp: Set<PeerId>;
  private held: RequestEvent[] | null = [];
  private started = false;
  private nowMs: number;
  private nextToken = 1;
  private ticks = 0;
  /** The visible vector last sent to the peers (joined), to send it again only when it changed. */
  private visibleTold = '';

  constructor(options: MachineOptions, tuning: Partial<CausalTuning> = {}) {
    this.self = options.self;
    this.peers = [...new Set(options.peers)].filter((peer) => peer !== options.self).sort();
    this.nodes = [...this.peers, this.self].sort();
    this.selfIndex = this.nodes.indexOf(this.self);
    this.tuning = { ...defaultCausalTuning(options), ...tuning };
    // Each node's versions are its own writer's (versionNode); the peers in config order.
    this.memory = new MemoryAdmission([...new Set(options.peers)].filter((peer) => peer !== options.self), versionNode);
    const defaults = defaultCausalTuning(options);
    this.limits = {
      keyBytesMax: OP_LIMITS_DEFAULT.keyBytesMax,
      valueBytesMax: options.valueBytesMax ?? OP_LIMITS_DEFAULT.valueBytesMax,
      nodeCount: this.nodes.length,
      entriesMax: Math.max(this.tuning.batchEntriesMax, defaults.batchEntriesMax),
      partsMax: this.tuning.partsMax,
    };
    this.tombstones = new Tombstones(this.tuning);
    this.visible = this.nodes.map(() => 0n);
    for (const peer of this.peers) {
      this.outboxes.set(peer, new Outbox(this.tuning));
      this.inboxes.set(peer, new Inbox(this.nodes.indexOf(peer), this.selfIndex));
    }
    this.peersUp = new Set(this.peers);
    this.nowMs = options.nowMs;
    this.clock = tickHlc(HLC_ZERO, options.nowMs);
    packVersion(this.clock, this.selfIndex); // asserts the node index fits
  }

  step(event: Event<CausalMessage>): Out {
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
        this.onRefused(event.token ?? null);
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
    for (const peer of this.peers) this.sendNext(peer, out);
    return out;
  }

  readsLocally(): boolean {
    return this.held === null;
  }

  status(): MachineStatus {
    return {
      mode: 'causal',
      role: 'peer',
      term: 0,
      leader: null,
      committed: this.visible.map(String).join(','),
      applied: String(this.visible[this.selfIndex]),
      queueDepth: [...this.outboxes.values()].reduce((sum, box) => sum + box.depth, 0),
      invalidPeerMessages: this.dropped.count,
    };
  }

  /** The causal context of everything visible here, as a short token (see ./token.ts). */
  contextToken(): string {
    return formatToken(this.visible);
  }

  /** Whether everything `token` names is visible here; null when it is not a token of this cluster. */
  coversToken(token: string): boolean | null {
    const wanted = parseToken(token, this.nodes.length);
    if (wanted === null) return null;
    return wanted.every((version, index) => index === this.selfIndex || version <= componentOf(this.visible, index));
  }

  /** For tests and the simulator: the current clock. */
  hlc(): Hlc {
    return this.clock;
  }

  /** For the simulator, which asks every mode: causal mode keeps no index of keys. */
  indexEntry(_key: string): undefined {
    return undefined;
  }

  /** For tests: the visible vector. */
  visibleVector(): readonly bigint[] {
    return [...this.visible];
  }

  /** For tests: batches parked here, and tombstones not yet purged. */
  counters(): { parked: number; graveyard: number } {
    const parked = [...this.inboxes.values()].reduce((sum, box) => sum + box.parkedCount, 0);
    return { parked, graveyard: this.tombstones.size };
  }

  // ---- requests -------------------------------------------------------------------------

  private onRequest(event: RequestEvent, out: Out): void {
    if (this.held === null) return this.serve(event, out);
    if (this.held.length >= this.tuning.heldRequestsMax) {
      out.push({ kind: 'reply', requestId: event.requestId, reply: refused('busy', 'replica still loading') });
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
    this.clock = tickHlc(this.clock, nowMs);
    const cas = packVersion(this.clock, this.selfIndex);
    const refusal = this.memory.refusal(op, cas);
    if (refusal !== null) {
      out.push({ kind: 'reply', requestId, reply: refusal });
      return;
    }
    out.push({ kind: 'apply', op, cas, nowMs, requestId: requestId as RequestId, token: null, counterNode: this.selfIndex });
    this.visible[this.selfIndex] = cas;
    this.markDirty(opKeys(op));
    if (op.kind === 'arith') this.counted.set(op.key, cas);
  }

  /** Keys whose local writes the next dirty fetch ships (null: every key). */
  private markDirty(keys: readonly string[] | null): void {
    if (keys === null) this.dirtyAll = true;
    else for (const key of keys) this.dirty.add(key);
  }

  private scheduleDirtyFetch(out: Out): void {
    if (this.dirtyFetchToken !== null || this.held !== null) return;
    if (this.dirty.size === 0 && !this.dirtyAll) return;
    if (this.nowMs >= this.nextDirtyFetchAtMs) {
      this.nextDirtyFetchAtMs = this.nowMs + this.tuning.pushIntervalMs;
      if (this.rejoinPending) {
        // The batch covers the joins: a version of ours moves its `to` on (as shipOwnWritesAgain).
        this.rejoinPending = false;
        this.clock = tickHlc(this.clock, this.nowMs);
        this.visible[this.selfIndex] = packVersion(this.clock, this.selfIndex);
      }
      const keys = this.dirtyAll ? null : [...this.dirty];
      this.dirty.clear();
      this.dirtyAll = false;
      const purpose: FetchPurpose = { kind: 'dirty', keys, to: this.own(this.visible), deps: [...this.visible] };
      this.dirtyFetchToken = this.issueFetch(out, keys, purpose);
      return;
    }
    if (this.wakeAtMs !== null && this.wakeAtMs <= this.nextDirtyFetchAtMs) return;
    this.wakeAtMs = this.nextDirtyFetchAtMs;
    out.push({ kind: 'wake', afterMs: this.nextDirtyFetchAtMs - this.nowMs });
  }

  // ---- fetch results --------------------------------------------------------------------

  private onFetched(token: number, entries: KeyedEntry[], out: Out): void {
    const purpose = this.fetches.get(token);
    if (purpose === undefined) return;
    this.fetches.delete(token);
    this.observe(entries);
    this.tombstones.noteFetched(entries);
    this.noteCounted(entries);
    switch (purpose.kind) {
      case 'rebuild':
        this.onRebuilt(entries, out);
        break;
      case 'dirty':
        this.dirtyFetchToken = null;
        for (const peer of this.peers) this.outbox(peer).append(entries, purpose.to, purpose.deps, this.nowMs);
        break;
      case 'snapshot':
        this.outbox(purpose.peer).onSnapshotFetched(token, { to: purpose.to, deps: purpose.deps, entries }, this.nowMs);
        break;
      case 'graves':
        break;
      default:
        assertNever(purpose);
    }
  }

  /**
   * The replica as found at start or after a reset. It holds our own writes in order, so our
   * greatest version in it bounds a prefix of them; but it need not be a causally closed cut of
   * the others' writes: a merge memcached refused, or one cut short by a crash or a reset, may
   * have left a later entry without an earlier one. So their components stay zero, and every peer
   * sends a snapshot (onVisible, onBatchPart).
   */
  private onRebuilt(entries: KeyedEntry[], out: Out): void {
    this.rebuilds += 1;
    // After a reset our own component stays (onBackendReset): it names our latest write.
    if (this.rebuilds === 1) this.raiseOwnToHeld(entries);
    const held = this.held;
    this.held = null;
    for (const event of held ?? []) this.serve(event, out);
  }

  private raiseOwnToHeld(entries: readonly KeyedEntry[]): void {
    for (const [, entry] of entries) {
      if (versionNode(entry.cas) === this.selfIndex && entry.cas > this.own(this.visible)) this.visible[this.selfIndex] = entry.cas;
    }
  }

  // ---- sending --------------------------------------------------------------------------

  /**
   * Sends what the window allows to `peer`: first a snapshot when the peer's state is unknown,
   * then queued batches in chain order. Chain batches wait while the snapshot is fetched.
   */
  private sendNext(peer: PeerId, out: Out): void {
    const box = this.outbox(peer);
    if (!this.peersUp.has(peer) || this.held !== null || box.fetchingSnapshot) return;
    // A peer that has not acknowledged our snapshot may have restarted since, forgetting the
    // tombstones it purged: an entry a tombstone here has superseded would come back to life there.
    // A chain that has waited and holds one is given up for a fresh snapshot.
    if (box.sendsStale(this.nowMs, ([key, entry]) => this.tombstones.supersedes(key, entry.cas))) box.forget();
    if (box.needsSnapshot()) {
      const to = this.own(this.visible);
      // The receiver takes a snapshot's deps as what it now holds: only merges memcached has taken count.
      box.startSnapshot(to, this.issueFetch(out, null, { kind: 'snapshot', peer, to, deps: this.told() }));
      return;
    }
    for (const message of box.takeDue(this.nowMs)) out.push({ kind: 'send', to: peer, message });
  }

  private onBatchAck(from: PeerId, message: Extract<CausalMessage, { kind: 'batch_ack' }>, out: Out): void {
    this.peerVisible.set(from, message.visible);
    const box = this.outbox(from);
    this.askForLostWrites(from, message.visible, out);
    if (message.resync) box.forget();
    else box.onAck(message.to, this.own(message.visible));
  }

  /**
   * A peer's visible vector. Holding less of our chain than it acknowledged, it lost part of its
   * replica (memcached emptied): it gets a snapshot, which also brings back what others wrote.
   */
  private onVisible(from: PeerId, visible: VersionVector, out: Out): void {
    this.peerVisible.set(from, visible);
    this.outbox(from).onPeerHolds(this.own(visible));
    this.askForLostWrites(from, visible, out);
  }

  /**
   * After a reset, a peer that holds every write we made before it, and has not sent a snapshot
   * saying so, is asked for one: it brings back those of our writes our replica lost (the last
   * batches of our chain may have reached it after it sent the snapshot our reset prompted).
   */
  private askForLostWrites(from: PeerId, visible: VersionVector, out: Out): void {
    const askedAtMs = this.owedSnapshots.get(from);
    if (askedAtMs === undefined || this.own(visible) < this.lostOwnTo) return;
    // Asked again only when nothing of a snapshot came for a while: each ask makes the peer start
    // its snapshot over (a barrier on its replica), so asking while one is on its way, as under a
    // bulk load it can be for seconds, would start it over for ever.
    if (this.nowMs - askedAtMs < this.tuning.resyncAfterMs) return;
    this.owedSnapshots.set(from, this.nowMs);
    this.ack(from, 0n, true, out);
  }

  // ---- receiving ------------------------------------------------------------------------

  private onBatchPart(from: PeerId, message: BatchMessage, out: Out): void {
    const latest = latestVersionAllowed(this.nowMs, this.tuning.clockAheadMaxMs);
    if (message.to > latest || message.entries.some(([, entry]) => entry.cas > latest)) {
      return this.dropMessage(from, 'batch: versions too far ahead of local time', out);
    }
    const sender = this.nodes.indexOf(from);
    if (!message.snapshot && message.base > componentOf(this.visible, sender)) {
      // The sender believes we hold more of its chain than we do (our replica was reset).
      return this.ack(from, message.to, true, out);
    }
    // A snapshot on its way is what an ask for lost writes waits for (askForLostWrites).
    if (message.snapshot && this.owedSnapshots.has(from)) this.owedSnapshots.set(from, this.nowMs);
    const batch = this.inbox(from).assemble(message);
    if (batch !== null) this.onBatch(from, batch, out);
  }

  private onBatch(from: PeerId, batch: Batch, out: Out): void {
    const sender = this.nodes.indexOf(from);
    if (batch.snapshot) {
      this.merge(from, batch, out);
      this.mergeParked(out);
      return;
    }
    if (batch.to <= componentOf(this.visible, sender)) return this.ack(from, batch.to, false, out);
    this.inbox(from).park(batch, this.nowMs, this.tuning.parkedBatchesMax);
    this.mergeParked(out);
  }

  /** Merges every parked batch that follows on and whose dependencies are visible, until none does. */
  private mergeParked(out: Out): void {
    for (let progress = true; progress; ) {
      progress = false;
      for (const peer of this.peers) {
        if (this.inbox(peer).mergeReady(() => this.visible, (batch) => this.merge(peer, batch, out))) progress = true;
      }
    }
  }

  /** Makes a batch visible: one put, and the vector raised. */
  private merge(from: PeerId, batch: Batch, out: Out): void {
    const sender = this.nodes.indexOf(from);
    const before = [...this.visible];
    const entries = this.tombstones.notPurged(batch.entries);
    this.observe(entries);
    const unsureGraves = this.tombstones.noteMerged(entries);
    batch.deps.forEach((version, index) => {
      if (index !== this.selfIndex && version > componentOf(this.visible, index)) this.visible[index] = version;
    });
    if (batch.to > componentOf(this.visible, sender)) this.visible[sender] = batch.to;
    const token = this.takeToken();
    const recovered = this.lostOwnTo > 0n ? this.lostWritesIn(batch, entries) : null;
    this.merges.set(token, { to: from, batchTo: batch.to, before, done: false, recovered });
    if (entries.length === 0) return this.onApplied(token, out);
    // A counter merge may make a state neither side had: a write of ours at this fresh version.
    this.clock = tickHlc(this.clock, this.nowMs);
    const joinCas = packVersion(this.clock, this.selfIndex);
    this.memory.arrived(entries);
    out.push({ kind: 'put', entries, how: 'merge', token, joinCas });
    // Which of those tombstones the replica kept (noteFetched, for every fetch).
    if (unsureGraves.length > 0) this.issueFetch(out, unsureGraves, { kind: 'graves' });
    const rejoined = entries.filter(([key, entry]) => this.mayRejoin(key, entry)).map(([key]) => key);
    if (rejoined.length > 0) {
      this.markDirty(rejoined);
      this.rejoinPending = true;
    }
  }

  /** Whether merging `entry` may leave a state other than either (counter metadata on either side). */
  private mayRejoin(key: string, entry: Entry): boolean {
    const held = this.counted.get(key);
    if (held !== undefined) return held !== entry.cas;
    return entry.counter !== undefined || entry.resetCas !== undefined || this.dirty.has(key);
  }

  private noteCounted(entries: readonly KeyedEntry[]): void {
    for (const [key, entry] of entries) {
      if (entry.counter !== undefined || entry.resetCas !== undefined) this.counted.set(key, entry.cas);
      else this.counted.delete(key);
    }
  }

  /** Our own writes the replica lost at the last reset that a merge brings back, and whether it settles a snapshot owed. */
  private lostWritesIn(batch: Batch, entries: readonly KeyedEntry[]): PendingMerge['recovered'] {
    const back = entries.filter(([, entry]) => versionNode(entry.cas) === this.selfIndex && entry.cas <= this.lostOwnTo);
    return { snapshot: batch.snapshot, deps: batch.deps, back: back.map(([key]) => key) };
  }

  /**
   * Our own writes the replica lost at the last reset, back from a peer and taken by memcached: the
   * chain ships them again. (A refused merge brought nothing back: the snapshot stays owed.)
   */
  private shipOwnWritesAgain(from: PeerId, recovered: NonNullable<PendingMerge['recovered']>): void {
    if (this.lostOwnTo === 0n) return;
    if (recovered.back.length > 0) {
      this.markDirty(recovered.back);
      // A batch covers (prev, to]: a version of its own moves `to` on, so the chain carries them.
      this.clock = tickHlc(this.clock, this.nowMs);
      this.visible[this.selfIndex] = packVersion(this.clock, this.selfIndex);
    }
    if (recovered.snapshot && this.own(recovered.deps) >= this.lostOwnTo) this.owedSnapshots.delete(from);
    if (this.owedSnapshots.size === 0) this.lostOwnTo = 0n;
  }

  private onApplied(token: number, out: Out): void {
    const merge = this.merges.get(token);
    if (merge === undefined) return;
    merge.done = true;
    if (merge.recovered !== null) this.shipOwnWritesAgain(merge.to, merge.recovered);
    this.ackMerged(out);
  }

  /** Acknowledges merges memcached has taken, in the order they were issued. */
  private ackMerged(out: Out): void {
    for (const [token, merge] of this.merges) {
      if (!merge.done) return;
      this.merges.delete(token);
      this.ack(merge.to, merge.batchTo, false, out);
    }
  }

  /**
   * memcached refused a write for want of memory and kept what it held. A refused merge: the
   * vector goes back to before it and later merges are forgotten; their senders, never
   * acknowledged, send those batches again. A refused local write is simply lost.
   */
  private onRefused(token: number | null): void {
    const merge = token === null ? undefined : this.merges.get(token);
    if (merge === undefined) return;
    let later = false;
    for (const key of [...this.merges.keys()]) {
      if (key === token) later = true;
      if (later) this.merges.delete(key);
    }
    const own = this.own(this.visible);
    this.visible = merge.before.map((version, index) => (index === this.selfIndex ? own : version));
  }

  /**
   * The vector peers are told: `visible` before the first merge memcached has not taken yet. After
   * a reset, until the snapshots owed bring our lost writes back, none of ours: a peer holding one
   * of them (a tombstone) must not count it as held everywhere.
   */
  private told(): VersionVector {
    const first = this.merges.values().next();
    const told = first.done === true ? [...this.visible] : [...first.value.before];
    told[this.selfIndex] = this.lostOwnTo > 0n ? 0n : this.own(this.visible);
    return told;
  }

  private ack(to: PeerId, batchTo: bigint, resync: boolean, out: Out): void {
    out.push({ kind: 'send', to, message: { kind: 'batch_ack', to: batchTo, visible: this.told(), resync } });
  }

  // ---- messages, ticks, resets ----------------------------------------------------------

  private onMessage(from: PeerId, raw: unknown, out: Out): void {
    if (!this.outboxes.has(from)) return this.dropMessage(from, 'not from a peer of this cluster', out);
    const problem = causalMessageProblem(raw, this.limits);
    if (problem !== null) return this.dropMessage(from, problem, out);
    const message = raw as CausalMessage;
    switch (message.kind) {
      case 'batch':
        this.onBatchPart(from, message, out);
        break;
      case 'batch_ack':
        this.onBatchAck(from, message, out);
        break;
      case 'visible':
        this.onVisible(from, message.visible, out);
        break;
      default:
        assertNever(message);
    }
  }

  private onTick(peersUp: readonly PeerId[], out: Out): void {
    this.peersUp = new Set(peersUp.filter((peer) => this.outboxes.has(peer)));
    for (const peer of this.peers) {
      const inbox = this.inbox(peer);
      if (!inbox.stuck(this.nowMs, this.tuning.resyncAfterMs)) continue;
      // Waiting longer would wait on a node cut off from us: take the sender's whole replica instead.
      inbox.unpark();
      this.ack(peer, 0n, true, out);
    }
    this.ticks += 1;
    const told = this.told();
    if (told.join(',') !== this.visibleTold || this.ticks % VISIBLE_EVERY_TICKS === 0) {
      this.visibleTold = told.join(',');
      for (const peer of this.peersUp) out.push({ kind: 'send', to: peer, message: { kind: 'visible', visible: [...told] } });
    }
    this.purgeStable(out);
    this.tombstones.forgetOld(this.nowMs);
  }

  /** Purges tombstones every node's visible vector covers: no replica can still hold what they deleted. */
  private purgeStable(out: Out): void {
    if (this.tombstones.size === 0 || this.peerVisible.size < this.peers.length) return;
    const stable = this.visible.map((version, index) =>
      [...this.peerVisible.values()].reduce((least, vector) => {
        const theirs = componentOf(vector, index);
        return theirs < least ? theirs : least;
      }, version),
    );
    const purges = this.tombstones.takeStable(stable, this.nowMs);
    if (purges.length === 0) return;
    out.push({ kind: 'purge', tombstones: purges });
    // What a queued or parked batch still holds of those keys, older, would bring them back.
    const dead = new Map(purges);
    const alive = ([key, entry]: KeyedEntry): boolean => !(entry.cas <= (dead.get(key) ?? -1n));
    for (const box of this.outboxes.values()) box.filterEntries(alive);
    for (const inbox of this.inboxes.values()) inbox.filterEntries(alive);
  }

  private onBackendReset(out: Out): void {
    this.lostOwnTo = this.own(this.visible);
    // None of our writes was ever seen (a first start on an empty memcached): none can be lost, and
    // no peer owes a snapshot for them (one owed could never be paid: asked for again and again).
    if (this.lostOwnTo > 0n) for (const peer of this.peers) this.owedSnapshots.set(peer, -Infinity);
    // Our own component stays: it names our latest write, the next batch's `to`. Lost own writes
    // that a peer holds come back with its snapshot (askForLostWrites, shipOwnWritesAgain).
    this.visible = this.visible.map((version, index) => (index === this.selfIndex ? version : 0n));
    this.tombstones.onBackendReset();
    this.counted.clear();
    // The dirty fetch in flight is dropped with the others, but its keys still hold local writes
    // the chain claims up to `visible[self]`: the next dirty fetch must ship them.
    const dirtyFetch = this.dirtyFetchToken === null ? undefined : this.fetches.get(this.dirtyFetchToken);
    if (dirtyFetch?.kind === 'dirty') this.markDirty(dirtyFetch.keys);
    this.fetches.clear();
    this.merges.clear();
    this.dirtyFetchToken = null;
    for (const inbox of this.inboxes.values()) inbox.onBackendReset();
    for (const box of this.outboxes.values()) box.onBackendReset();
    this.issueFetch(out, null, { kind: 'rebuild' });
  }

  // ---- helpers --------------------------------------------------------------------------

  /** This node's component of a vector. */
  private own(vector: readonly bigint[]): bigint {
    return componentOf(vector, this.selfIndex);
  }

  private observe(entries: readonly KeyedEntry[]): void {
    const latest = latestVersionAllowed(this.nowMs, this.tuning.clockAheadMaxMs);
    let newest = 0n;
    for (const [, entry] of entries) if (entry.cas > newest && entry.cas <= latest) newest = entry.cas;
    this.clock = mergeHlc(this.clock, versionClock(newest));
  }

  private dropMessage(from: PeerId, reason: string, out: Out): void {
    const note = this.dropped.drop<CausalMessage>(from, reason, this.nowMs);
    if (note !== null) out.push({ ...note, meta: { node: this.self, ...note.meta } });
  }

  private issueFetch(out: Out, keys: string[] | null, purpose: FetchPurpose): number {
    const token = this.takeToken();
    this.fetches.set(token, purpose);
    out.push({ kind: 'fetch', token, keys });
    return token;
  }

  private takeToken(): number {
    const token = this.nextToken;
    this.nextToken += 1;
    return token;
  }

  private outbox(peer: PeerId): Outbox {
    const box = this.outboxes.get(peer);
    if (box === undefined) throw new Error(`no outbox for ${peer}`);
    return box;
  }

  private inbox(peer: PeerId): Inbox {
    const box = this.inboxes.get(peer);
    if (box === undefined) throw new Error(`no inbox for ${peer}`);
    return box;
  }
}
