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
 * `step` hands a client's request to ./local-writes.ts and a peer's batch to ./merging.ts; it
 * ships our chains (./outbox.ts, one per peer), tells peers the visible vector, purges what is
 * stable, and starts over after a backend reset. What the parts share is ./core.ts's.
 * Invariants: the visible vector goes back only at a backend reset or a refused merge (to what
 * peers were told); the HLC is >= every version merged or fetched, so a local write's version
 * beats what the replica holds.
 */

import type { Event, KeyedEntry, LocalRead, Machine, MachineOptions, MachineStatus, PeerId } from '../types.ts';
import type { Hlc } from '../hlc.ts';
import { packVersion, tickHlc, versionNode } from '../hlc.ts';
import { MemoryAdmission } from '../memory-admission.ts';
import { OP_LIMITS_DEFAULT } from '../../store/op-rules.ts';
import { defaultCausalTuning, type CausalTuning } from './tuning.ts';
import { CausalCore, type FetchPurpose, type Out } from './core.ts';
import { LocalWrites } from './local-writes.ts';
import { Merging } from './merging.ts';
import { causalMessageProblem, componentOf, type CausalMessage, type CausalMessageLimits, type VersionVector } from './messages.ts';
import { Outbox } from './outbox.ts';
import { RebuildGate } from './rebuild-gate.ts';
import { AheadKeys } from './ahead-keys.ts';
import { Tombstones } from './tombstones.ts';
import { formatToken, parseToken } from './token.ts';
import { CUT_PAGED_ROUNDS_MAX, SnapshotCuts, spliceRead } from './snapshot-cuts.ts';

/** Every so many ticks the visible vector goes to the peers even if it did not change (one may have missed it). */
const VISIBLE_EVERY_TICKS = 10;

function assertNever(value: never): never {
  throw new Error(`unexpected ${JSON.stringify(value)}`);
}

export class CausalMachine implements Machine<CausalMessage> {
  /** Configuration, clock, visible vector, time and store tokens, shared with the parts. */
  private readonly core: CausalCore;
  /** Client requests and our writes to ship. */
  private readonly writes: LocalWrites;
  /** The peers' chains to us, and the snapshots owed after a reset. */
  private readonly merging: Merging;
  /** The memory guard: asked for every write this node takes; peers' pushes count in it as they arrive. */
  private readonly memory: MemoryAdmission;
  private readonly limits: CausalMessageLimits;
  private readonly peerVisible = new Map<PeerId, VersionVector>();
  private readonly outboxes = new Map<PeerId, Outbox>();
  private readonly tombstones: Tombstones;
  /** The keys written while a snapshot is read, read again for its cut. */
  private readonly cuts = new SnapshotCuts();
  /** After a backend reset: reads wait until the replica holds again what was visible before. */
  private readonly gate: RebuildGate;
  /** Keys an undone merge left written beyond the vector: not shown until it covers them. */
  private readonly ahead: AheadKeys;
  private peersUp: Set<PeerId>;
  /** Stopping: local writes are read back at once, unpaced (see `handingOver`). */
  private leaving = false;
  private started = false;
  private ticks = 0;
  /** The visible vector last sent to the peers (joined), to send it again only when it changed. */
  private visibleTold = '';

  constructor(options: MachineOptions, tuning: Partial<CausalTuning> = {}) {
    const core = new CausalCore(options, tuning);
    this.core = core;
    // Each node's versions are its own writer's (versionNode); the peers in config order.
    const peers = [...new Set(options.peers)].filter((peer) => peer !== options.self);
    this.memory = new MemoryAdmission(peers, versionNode, options.keyHeld);
    const defaults = defaultCausalTuning(options);
    this.limits = {
      keyBytesMax: OP_LIMITS_DEFAULT.keyBytesMax,
      valueBytesMax: options.valueBytesMax ?? OP_LIMITS_DEFAULT.valueBytesMax,
      nodeCount: core.nodes.length,
      entriesMax: Math.max(core.tuning.batchEntriesMax, defaults.batchEntriesMax),
      partsMax: core.tuning.partsMax,
    };
    this.tombstones = new Tombstones(core.tuning);
    for (const peer of core.peers) this.outboxes.set(peer, new Outbox(core.tuning));
    this.ahead = new AheadKeys(core.selfIndex);
    this.gate = new RebuildGate(core.peers, core.selfIndex, () => this.merging.told(), this.ahead);
    this.writes = new LocalWrites(core, this.memory, this.gate);
    this.merging = new Merging(core, this.tombstones, this.memory, this.writes, this.gate, this.ahead, () => this.peersUp);
    this.peersUp = new Set(core.peers);
  }

  step(event: Event<CausalMessage>): Out {
    const out: Out = [];
    this.core.nowMs = event.nowMs;
    this.writes.clearDueWake();
    if (!this.started) {
      this.started = true;
      this.core.issueFetch(out, null, { kind: 'rebuild' });
    }
    switch (event.kind) {
      case 'request':
        this.writes.onRequest(event, out);
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
        this.merging.onApplied(event.token, out);
        break;
      case 'backend_reset':
        this.onBackendReset(out);
        break;
      case 'refused':
        this.ahead.refusalStepped(event.serial);
        this.merging.onRefused(event.token ?? null);
        break;
      case 'stopping':
        this.leaving = true;
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
    this.writes.scheduleDirtyFetch(out, this.leaving);
    for (const peer of this.core.peers) this.sendNext(peer, out);
    this.cuts.noteWrites(out);
    return out;
  }

  /**
   * Stopping: whether local writes are still to be read back, or a batch of our chain to a peer
   * that is up has not all left (one waiting for a snapshot of ours first is not waited for: a
   * whole replica does not go in the time a stop allows).
   */
  handingOver(): boolean {
    if (!this.leaving || !this.writes.loaded) return false;
    if (this.writes.dirtyPending) return true;
    for (const peer of this.peersUp) {
      const box = this.outbox(peer);
      if (!box.fetchingSnapshot && !box.needsSnapshot() && box.unsentBatches) return true;
    }
    return false;
  }

  /** Whether a get may be served from the replica without a step: not while it would show a key held back. */
  readsLocally(_nowMs: number, _session: number, read?: LocalRead): boolean {
    return this.writes.loaded && this.gate.servesLocally(read?.keys);
  }

  status(): MachineStatus {
    const core = this.core;
    return {
      mode: 'causal',
      role: 'peer',
      term: 0,
      leader: null,
      committed: core.visible.map(String).join(','),
      applied: String(core.visible[core.selfIndex]),
      queueDepth: [...this.outboxes.values()].reduce((sum, box) => sum + box.depth, 0),
      invalidPeerMessages: core.dropped.count,
      caughtUp: this.writes.loaded && this.gate.servesLocally(undefined),
    };
  }

  /** The causal context of everything visible here, as a short token (see ./token.ts). */
  contextToken(): string {
    return formatToken(this.core.visible);
  }

  /** Whether everything `token` names is visible here; null when it is not a token of this cluster. */
  coversToken(token: string): boolean | null {
    const core = this.core;
    const wanted = parseToken(token, core.nodes.length);
    if (wanted === null) return null;
    return wanted.every((version, index) => index === core.selfIndex || version <= componentOf(core.visible, index));
  }

  /** For tests and the simulator: the current clock. */
  hlc(): Hlc {
    return this.core.clock;
  }

  /** For the simulator, which asks every mode: causal mode keeps no index of keys. */
  indexEntry(_key: string): undefined {
    return undefined;
  }

  /** For tests: the visible vector. */
  visibleVector(): readonly bigint[] {
    return [...this.core.visible];
  }

  /** For tests: batches parked here, and tombstones not yet purged. */
  counters(): { parked: number; graveyard: number } {
    const parked = this.merging.parkedCount;
    return { parked, graveyard: this.tombstones.size };
  }

  // ---- fetch results --------------------------------------------------------------------

  private onFetched(token: number, fetched: KeyedEntry[], out: Out): void {
    const core = this.core;
    const purpose = core.fetches.get(token);
    if (purpose === undefined) return;
    core.fetches.delete(token);
    if (purpose.kind === 'snapshot-read') return this.onSnapshotRead(token, purpose, fetched, out);
    const entries = purpose.kind === 'snapshot' && purpose.read !== undefined ? spliceRead(purpose.read, fetched) : fetched;
    core.observe(entries);
    this.tombstones.noteFetched(entries);
    this.writes.noteCounted(entries);
    switch (purpose.kind) {
      case 'rebuild':
        this.writes.onRebuilt(entries, out);
        break;
      case 'dirty':
        this.writes.onDirtyFetched();
        for (const peer of core.peers) this.outbox(peer).append(entries, purpose.to, purpose.deps, core.nowMs);
        break;
      case 'snapshot': {
        const { to, deps, needs } = purpose;
        // One read for every peer it serves: each queues the same entries (outboxes never change them in place).
        for (const peer of purpose.peers) this.outbox(peer).onSnapshotFetched(token, { to, deps, needs, entries }, core.nowMs);
        break;
      }
      case 'graves':
        break;
      default:
        assertNever(purpose);
    }
  }

  /**
   * A read of a snapshot returned (./snapshot-cuts.ts): the keys written since are read again,
   * page by page while many, then in one read that makes the cut. The snapshot covers what is
   * visible, and was told, when that read is issued.
   */
  private onSnapshotRead(token: number, purpose: Extract<FetchPurpose, { kind: 'snapshot-read' }>, fetched: KeyedEntry[], out: Out): void {
    const core = this.core;
    const { round } = purpose;
    const written = this.cuts.finish(token);
    if (written === undefined) return;
    // (awaitsSnapshot drops the read for a peer whose chain was given up meanwhile: it reads afresh.)
    const peers = purpose.peers.filter((peer) => this.outbox(peer).awaitsSnapshot(token));
    if (peers.length === 0) return;
    const entries = purpose.read === null ? fetched : spliceRead(purpose.read, fetched);
    if (written !== null && written.length > core.tuning.snapshotCutKeysMax && round < CUT_PAGED_ROUNDS_MAX) {
      const again = { kind: 'snapshot-read', peers, round: round + 1, read: { entries, keys: written } } as const;
      const next = core.issueFetch(out, written, again, true);
      for (const peer of peers) this.outbox(peer).readSnapshot(next);
      this.cuts.begin(next);
      return;
    }
    const to = core.own(core.visible);
    const deps = this.merging.told();
    const needs = this.gate.needsBeyond(deps);
    // A flush while it was read (every key written): the last read is of every key, at one point.
    const read = written === null ? {} : { read: { entries, keys: written } };
    const last = core.issueFetch(out, written, { kind: 'snapshot', peers, to, deps, needs, ...read });
    for (const peer of peers) this.outbox(peer).startSnapshot(to, last);
    core.note(out, 'info', 'reading a snapshot for peers', { peers: peers.join(','), keys: entries.length, rounds: round + 1, readAgain: written?.length ?? 'every key' });
  }

  /**
   * Has `peer` join a snapshot read page by page and not yet cut, if one runs; returns its token,
   * else null. The cut is taken when its last read is issued, so it is as good for a peer that
   * needs one now as a fresh read, and the replica is read, and held, once instead of once per peer.
   */
  private joinSnapshotRead(peer: PeerId): number | null {
    for (const [token, purpose] of this.core.fetches) {
      if (purpose.kind !== 'snapshot-read' || !purpose.peers.some((each) => this.outbox(each).readsSnapshot(token))) continue;
      purpose.peers.push(peer);
      return token;
    }
    return null;
  }

  // ---- sending --------------------------------------------------------------------------

  /**
   * Sends what the window allows to `peer`: first a snapshot when the peer's state is unknown,
   * then queued batches in chain order. Chain batches wait while the snapshot is fetched.
   */
  private sendNext(peer: PeerId, out: Out): void {
    const core = this.core;
    const box = this.outbox(peer);
    if (!this.peersUp.has(peer) || !this.writes.loaded || box.fetchingSnapshot) return;
    // A peer that has not acknowledged our snapshot may have restarted since, forgetting the
    // tombstones it purged: an entry a tombstone here has superseded would come back to life there.
    // A chain that has waited and holds one is given up for a fresh snapshot.
    // (Each look reads every queued entry, a whole replica's with a snapshot: not while there is no tombstone.)
    if (!this.tombstones.none && box.sendsStale(core.nowMs, ([key, entry]) => this.tombstones.supersedes(key, entry.cas))) box.forget();
    // A snapshot read while our replica was rebuilt (or held keys back) lacks what its entries
    // depend on, and its receiver may wait for that: once that is over, a fresh one does not.
    if (box.sendsLackingSnapshot() && !this.gate.snapshotsLack) box.forget();
    if (box.needsSnapshot()) {
      // Read page by page, then cut (onSnapshotRead): the receiver takes a snapshot's deps as what
      // it now holds, so only merges memcached has taken count. While our replica is rebuilt, or
      // holds keys back, what it holds may depend on more (`needs`).
      const joined = this.joinSnapshotRead(peer);
      if (joined !== null) {
        box.readSnapshot(joined);
        return;
      }
      const token = core.issueFetch(out, null, { kind: 'snapshot-read', peers: [peer], round: 0, read: null }, true);
      box.readSnapshot(token);
      this.cuts.begin(token);
      return;
    }
    for (const message of box.takeDue(core.nowMs)) out.push({ kind: 'send', to: peer, message });
  }

  private onBatchAck(from: PeerId, message: Extract<CausalMessage, { kind: 'batch_ack' }>, out: Out): void {
    this.peerVisible.set(from, message.visible);
    const box = this.outbox(from);
    this.merging.askForLostWrites(from, message.visible, out);
    if (!message.resync) return box.onAck(message.to, this.core.own(message.visible));
    // Asked again while one is read (once per batch it could not use, a window's worth): noted once.
    if (!box.startingOver) this.core.note(out, 'info', 'a peer asked for a snapshot of our replica', { peer: from });
    box.forget();
  }

  /**
   * A peer's visible vector. Holding less of our chain than it acknowledged, it lost part of its
   * replica (memcached emptied): it gets a snapshot, which also brings back what others wrote.
   */
  private onVisible(from: PeerId, visible: VersionVector, out: Out): void {
    this.peerVisible.set(from, visible);
    this.outbox(from).onPeerHolds(this.core.own(visible));
    this.merging.askForLostWrites(from, visible, out);
  }

  // ---- messages, ticks, resets ----------------------------------------------------------

  private onMessage(from: PeerId, raw: unknown, out: Out): void {
    if (!this.outboxes.has(from)) return this.core.dropMessage(from, 'not from a peer of this cluster', out);
    const problem = causalMessageProblem(raw, this.limits);
    if (problem !== null) return this.core.dropMessage(from, problem, out);
    const message = raw as CausalMessage;
    switch (message.kind) {
      case 'batch':
        this.merging.onBatchPart(from, message, out);
        break;
      case 'batch_ack':
        this.onBatchAck(from, message, out);
        break;
      case 'part_ack':
        this.outbox(from).onPartAck(message, this.core.nowMs);
        this.sendNext(from, out);
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
    this.merging.resyncStuck(out);
    this.merging.askForRebuild(out);
    this.ticks += 1;
    const told = this.merging.told();
    if (told.join(',') !== this.visibleTold || this.ticks % VISIBLE_EVERY_TICKS === 0) {
      this.visibleTold = told.join(',');
      for (const peer of this.peersUp) out.push({ kind: 'send', to: peer, message: { kind: 'visible', visible: [...told] } });
    }
    this.purgeStable(out);
    this.tombstones.forgetOld(this.core.nowMs);
  }

  /** Purges tombstones every node's visible vector covers: no replica can still hold what they deleted. */
  private purgeStable(out: Out): void {
    const core = this.core;
    if (this.tombstones.size === 0 || this.peerVisible.size < core.peers.length) return;
    const stable = core.visible.map((version, index) =>
      [...this.peerVisible.values()].reduce((least, vector) => {
        const theirs = componentOf(vector, index);
        return theirs < least ? theirs : least;
      }, version),
    );
    const purges = this.tombstones.takeStable(stable, core.nowMs);
    if (purges.length === 0) return;
    out.push({ kind: 'purge', tombstones: purges });
    // What a queued or parked batch still holds of those keys, older, would bring them back.
    const dead = new Map(purges);
    const alive = ([key, entry]: KeyedEntry): boolean => !(entry.cas <= (dead.get(key) ?? -1n));
    for (const box of this.outboxes.values()) box.filterEntries(alive);
    this.merging.filterEntries(alive);
  }

  private onBackendReset(out: Out): void {
    const core = this.core;
    // Our writes no peer has said it holds are lost for good with the replica: a connection that
    // wrote or read one would go on without it, so every session here ends.
    if (core.own(core.visible) > this.ownHeldByAPeer()) {
      out.push({ kind: 'end_sessions', reason: 'memcached lost writes of this node that no peer held yet' });
    }
    // Lost own writes that a peer holds come back with its snapshot (./merging.ts).
    this.merging.onBackendReset();
    this.gate.onReset(core.visible);
    // Our own component stays: it names our latest write, the next batch's `to`.
    core.visible = core.visible.map((version, index) => (index === core.selfIndex ? version : 0n));
    // Read while the graveyard still knows what the lost replica's tombstones deleted.
    const carried = this.carriedNotDeleted();
    this.tombstones.onBackendReset();
    this.ahead.clear();
    // Before the fetches in flight are dropped: the dirty one's keys must be shipped still.
    this.writes.onBackendReset();
    core.fetches.clear();
    this.cuts.clear();
    for (const box of this.outboxes.values()) box.onBackendReset();
    this.putBack(carried, out);
    core.issueFetch(out, null, { kind: 'rebuild' });
  }

  /**
   * What our chains still carry to the peers (read from the replica before it was lost), the
   * latest of each key, but what a tombstone the replica held, or one purged here, deleted since
   * (the peers may have purged that tombstone too, and their snapshots would not delete it again).
   */
  private carriedNotDeleted(): KeyedEntry[] {
    const latest = new Map<string, KeyedEntry[1]>();
    for (const box of this.outboxes.values()) for (const [key, entry] of box.carried()) {
      const held = latest.get(key);
      if (held === undefined || entry.cas > held.cas) latest.set(key, entry);
    }
    // Nor what a key held back had (./ahead-keys.ts): beyond the vector, and no longer held once put back.
    return [...latest].filter(([key, entry]) => !this.tombstones.supersedes(key, entry.cas) && !this.ahead.has(key));
  }

  /**
   * Puts back into the emptied replica what our chains still carry. They send it on: a peer may
   * merge it after it took its snapshot for us, and its later writes depend on it, so we must
   * hold it too (else we would show those writes without it).
   */
  private putBack(entries: KeyedEntry[], out: Out): void {
    if (entries.length === 0) return;
    const core = this.core;
    this.tombstones.noteMerged(entries);
    core.clock = tickHlc(core.clock, core.nowMs);
    this.memory.arrived(entries);
    out.push({ kind: 'put', entries, how: 'merge', token: null, joinCas: packVersion(core.clock, core.selfIndex) });
  }

  /** The greatest of our versions some peer has said its replica holds (0: none said so). */
  private ownHeldByAPeer(): bigint {
    let held = 0n;
    for (const vector of this.peerVisible.values()) {
      const theirs = componentOf(vector, this.core.selfIndex);
      if (theirs > held) held = theirs;
    }
    return held;
  }

  private outbox(peer: PeerId): Outbox {
    const box = this.outboxes.get(peer);
    if (box === undefined) throw new Error(`no outbox for ${peer}`);
    return box;
  }
}
