/**
 * The peers' chains to us, merged: a batch's parts assembled and chain batches parked (./inbox.ts)
 * until they follow on and their dependencies are visible; each merged in one put that raises the
 * visible vector at once, and acknowledged, in issue order, once memcached has taken it. And after
 * a backend reset, the snapshots peers owe: they bring back our own writes the replica lost, which
 * our chains then ship again.
 *
 * Owns: the inboxes, the merges not yet acknowledged, the snapshots waiting for what they need, our
 * component at the last reset and the peers owing a snapshot that covers it. The visible vector and
 * the clock are the core's (./core.ts).
 * Invariants: a chain batch is merged only when prev <= visible[sender] and deps <= visible
 * elsewhere; snapshots are taken one at a time, without the entries the told vector covers; a
 * snapshot with `needs` only when needs <= visible at every other node, or that
 * node's own snapshot covering it is merged with it (`mergeableSnapshots`); a refused merge rolls
 * the vector back to before it and forgets the later ones; what peers are told (`told`) stops
 * before the first merge memcached has not taken, and claims none of our writes while a snapshot
 * is owed.
 */

import type { KeyedEntry, PeerId } from '../types.ts';
import { latestVersionAllowed, packVersion, tickHlc, versionNode } from '../hlc.ts';
import type { MemoryAdmission } from '../memory-admission.ts';
import type { AheadKeys } from './ahead-keys.ts';
import type { CausalCore, Out } from './core.ts';
import { Inbox } from './inbox.ts';
import type { LocalWrites } from './local-writes.ts';
import type { RebuildGate } from './rebuild-gate.ts';
import { SnapshotTimes } from './snapshot-times.ts';
import { componentOf, type Batch, type CausalMessage, type VersionVector } from './messages.ts';
import type { Tombstones } from './tombstones.ts';

type BatchMessage = Extract<CausalMessage, { kind: 'batch' }>;

/** A merge issued and not yet acknowledged (see `merges`). */
interface PendingMerge {
  to: PeerId;
  batchTo: bigint;
  before: VersionVector;
  done: boolean;
  /** A snapshot's: what it covers (the rebuild gate counts it once memcached has taken it). */
  snapshotDeps: VersionVector | null;
  /** After a reset: what the merge brings back of our lost writes, acted on once memcached has taken it. */
  recovered: { snapshot: boolean; deps: VersionVector; back: string[] } | null;
  /** What its put writes, and the vector it made visible (held back if it is undone: ./ahead-keys.ts). */
  entries: readonly KeyedEntry[];
  after: VersionVector;
}

export class Merging {
  private readonly inboxes = new Map<PeerId, Inbox>();
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
  /** After a reset: the peers that have not yet sent a snapshot covering `lostOwnTo`. */
  private readonly owedSnapshots = new Set<PeerId>();
  /** When snapshots were last asked for, sent in part, or taken (see askForSnapshot, snapshotTakenElsewhere). */
  private readonly snapshotTimes: SnapshotTimes;
  /**
   * Per peer, its latest snapshot while it lacks what its entries depend on (`lacks`): merged once
   * that is visible here, unacknowledged meanwhile, so its sender waits instead of starting over.
   */
  private readonly waitingSnapshots = new Map<PeerId, Batch>();

  constructor(
    private readonly core: CausalCore,
    private readonly tombstones: Tombstones,
    /** The memory guard: peers' pushes count in it as they arrive. */
    private readonly memory: MemoryAdmission,
    /** Our writes: a merge may make states of ours (counter joins), and brings back lost ones. */
    private readonly writes: LocalWrites,
    /** After a reset: told of each snapshot memcached has taken. */
    private readonly gate: RebuildGate,
    /** The keys an undone merge left written beyond the vector. */
    private readonly ahead: AheadKeys,
    /** The peers the failure detector held up at the last tick (../machine.ts). */
    private readonly peersUp: () => ReadonlySet<PeerId>,
  ) {
    for (const peer of core.peers) this.inboxes.set(peer, new Inbox(core.nodes.indexOf(peer), core.selfIndex));
    this.snapshotTimes = new SnapshotTimes(core.tuning.resyncAfterMs);
  }

  /** Batches parked, and snapshots waiting. */
  get parkedCount(): number {
    return [...this.inboxes.values()].reduce((sum, box) => sum + box.parkedCount, this.waitingSnapshots.size);
  }

  onBatchPart(from: PeerId, message: BatchMessage, out: Out): void {
    const core = this.core;
    const latest = latestVersionAllowed(core.nowMs, core.tuning.clockAheadMaxMs);
    if (message.to > latest || message.entries.some(([, entry]) => entry.cas > latest)) {
      return core.dropMessage(from, 'batch: versions too far ahead of local time', out);
    }
    const sender = core.nodes.indexOf(from);
    if (!message.snapshot && message.base > componentOf(core.visible, sender)) {
      // The sender believes we hold more of its chain than we do (our replica was reset).
      return this.ack(from, message.to, true, out);
    }
    // A snapshot on its way is what an ask waits for (askForSnapshot).
    if (message.snapshot) {
      this.snapshotTimes.partCame(from, core.nowMs);
      // One snapshot at a time, and none while the start-up fetch reads the replica back (each a
      // whole replica's worth of entries; the merge would wait for that fetch anyway). A part not
      // taken goes unacknowledged: its sender probes with its first part until it is.
      if (!this.writes.loaded || this.snapshotTakenElsewhere(from)) return;
      this.snapshotTimes.partTaken(from, core.nowMs);
    }
    const inbox = this.inbox(from);
    const batch = inbox.assemble(message, message.snapshot ? this.notHeld() : undefined);
    if (batch === 'held') return this.onSnapshotAgain(from, message, out);
    if (message.parts > 1) {
      // What we hold lets the sender send on (../send-window.ts).
      const received = batch === null ? inbox.assembledParts(message.snapshot) : message.parts;
      const { snapshot, to, parts } = message;
      out.push({ kind: 'send', to: from, message: { kind: 'part_ack', snapshot, to, parts, received } });
    }
    if (batch !== null) this.onBatch(from, batch, out);
  }

  /**
   * A part of the snapshot last merged from `from`, sent again: the sender holds every part
   * received, and is acknowledged now unless the merge still runs (its ack follows it).
   */
  private onSnapshotAgain(from: PeerId, message: BatchMessage, out: Out): void {
    const { snapshot, to, parts } = message;
    if (parts > 1) out.push({ kind: 'send', to: from, message: { kind: 'part_ack', snapshot, to, parts, received: parts } });
    if (this.waitingSnapshots.get(from)?.to === to) return;
    if (!this.mergingSnapshot({ from, to })) this.ack(from, to, false, out);
  }

  /**
   * Whether a part of `from`'s snapshot waits: another peer's is being assembled (its sender is up,
   * or a part of it came within resyncAfterMs) or merged.
   * Snapshots are taken one at a time, so this node holds one whole replica's worth at once (two,
   * at millions of keys, outgrew a default heap), and the next comes without what the first
   * brought (`notHeld`). One waiting for another node's writes (`lacks`) is neither, so two that
   * need each other are still taken together.
   * (A gap between parts is no sign of a sender gone: with every controller restarted at once,
   * each reading millions of keys, pauses of seconds at either end let the second in, and both
   * came whole: 2.6 million entries each, a heap 86% full.)
   */
  private snapshotTakenElsewhere(from: PeerId): boolean {
    const core = this.core;
    return core.peers.some((peer) => {
      if (peer === from) return false;
      const senderThere = this.peersUp().has(peer) || this.snapshotTimes.takenLately(peer, core.nowMs);
      return (senderThere && this.inbox(peer).assemblingSnapshot()) || this.mergingSnapshot({ from: peer });
    });
  }

  /**
   * Whether a snapshot's entry is news here. Every write of a node up to its component of the
   * vector peers are told is in memcached, or overwritten there by a later write of its key, so
   * merging one it covers changes nothing. (Our own component there is 0 after a reset, until the
   * snapshots owed bring our lost writes back.)
   */
  private notHeld(): (pair: KeyedEntry) => boolean {
    const told = this.told();
    return ([, entry]) => {
      // A version naming no node here (stamped by another mode or memcached itself) is news to any vector.
      const writer = versionNode(entry.cas);
      return entry.cas <= 0n || writer >= told.length || entry.cas > componentOf(told, writer);
    };
  }

  /** Whether a snapshot is on its way (a part of one came within resyncAfterMs) or being merged. */
  private snapshotUnderway(): boolean {
    return this.snapshotTimes.partLately(this.core.nowMs) || this.mergingSnapshot(null);
  }

  /** Whether memcached has yet to take the merge of a snapshot (`of` that sender's, ending there if `to` is given). */
  private mergingSnapshot(of: { from: PeerId; to?: bigint } | null): boolean {
    for (const merge of this.merges.values()) {
      if (merge.done || merge.snapshotDeps === null) continue;
      if (of === null || (merge.to === of.from && (of.to === undefined || merge.batchTo === of.to))) return true;
    }
    return false;
  }

  private onBatch(from: PeerId, batch: Batch, out: Out): void {
    const sender = this.core.nodes.indexOf(from);
    if (batch.snapshot) {
      // A newer snapshot replaces one waiting; the ready one is merged at once.
      this.waitingSnapshots.set(from, batch);
      this.mergeParked(out);
      return;
    }
    if (batch.to <= componentOf(this.core.visible, sender)) return this.ack(from, batch.to, false, out);
    this.inbox(from).park(batch, this.core.nowMs, this.core.tuning.parkedBatchesMax);
    this.mergeParked(out);
  }

  /** Merges every waiting snapshot and parked batch that may be merged now, until none may. */
  private mergeParked(out: Out): void {
    for (let progress = true; progress; ) {
      progress = false;
      for (const [peer, snapshot] of this.mergeableSnapshots()) {
        this.waitingSnapshots.delete(peer);
        this.merge(peer, snapshot, out);
        progress = true;
      }
      for (const peer of this.core.peers) {
        if (this.inbox(peer).mergeReady(() => this.core.visible, (batch) => this.merge(peer, batch, out))) progress = true;
      }
    }
  }

  /**
   * The waiting snapshots that may be merged now, together: each lacks nothing (`lacks`) that is
   * not visible here nor brought by another of them, its writer's own snapshot covering it. So
   * two snapshots each lacking the other's writes do not wait on each other for ever, and none is
   * merged on the strength of one that itself still waits.
   */
  private mergeableSnapshots(): Array<[PeerId, Batch]> {
    if (this.waitingSnapshots.size === 0) return [];
    const together = new Map(this.waitingSnapshots);
    for (let dropped = true; dropped; ) {
      dropped = false;
      for (const [peer, snapshot] of together) {
        if (!this.lacks(peer, snapshot, together)) continue;
        together.delete(peer);
        dropped = true;
      }
    }
    return [...together];
  }

  /**
   * Whether `from`'s snapshot depends on writes of another node neither visible here nor in that
   * node's own snapshot among `alongside`. Its sender's own writes it brings itself; ours we hold
   * (or our own rebuild gate waits for them).
   */
  private lacks(from: PeerId, snapshot: Batch, alongside: ReadonlyMap<PeerId, Batch>): boolean {
    const { needs } = snapshot;
    if (needs === undefined) return false;
    const core = this.core;
    const sender = core.nodes.indexOf(from);
    return needs.some((version, index) => {
      if (index === core.selfIndex || index === sender || version <= componentOf(core.visible, index)) return false;
      const node = core.nodes[index];
      const theirs = node === undefined ? undefined : alongside.get(node);
      return theirs === undefined || theirs.to < version;
    });
  }

  /** Makes a batch visible: one put, and the vector raised. */
  private merge(from: PeerId, batch: Batch, out: Out): void {
    const core = this.core;
    const sender = core.nodes.indexOf(from);
    const before = [...core.visible];
    const entries = this.tombstones.notPurged(batch.entries);
    core.observe(entries);
    const unsureGraves = this.tombstones.noteMerged(entries);
    batch.deps.forEach((version, index) => {
      if (index !== core.selfIndex && version > componentOf(core.visible, index)) core.visible[index] = version;
    });
    if (batch.to > componentOf(core.visible, sender)) core.visible[sender] = batch.to;
    const token = core.takeToken();
    const recovered = this.lostOwnTo > 0n ? this.lostWritesIn(batch, entries) : null;
    const snapshotDeps = batch.snapshot ? batch.deps : null;
    const after = [...core.visible];
    if (batch.snapshot) core.note(out, 'info', "merging a peer's snapshot", { peer: from, entries: entries.length });
    this.merges.set(token, { to: from, batchTo: batch.to, before, done: false, snapshotDeps, recovered, entries, after });
    if (entries.length === 0) return this.onApplied(token, out);
    // A counter merge may make a state neither side had: a write of ours at this fresh version.
    core.clock = tickHlc(core.clock, core.nowMs);
    const joinCas = packVersion(core.clock, core.selfIndex);
    this.memory.arrived(entries, !batch.snapshot);
    out.push({ kind: 'put', entries, how: 'merge', token, joinCas });
    // Which of those tombstones the replica kept (noteFetched, for every fetch).
    if (unsureGraves.length > 0) core.issueFetch(out, unsureGraves, { kind: 'graves' });
    const rejoined = entries.filter(([key, entry]) => this.writes.mayRejoin(key, entry)).map(([key]) => key);
    if (rejoined.length > 0) this.writes.rejoined(rejoined);
  }

  /** Our own writes the replica lost at the last reset that a merge brings back, and whether it settles a snapshot owed. */
  private lostWritesIn(batch: Batch, entries: readonly KeyedEntry[]): PendingMerge['recovered'] {
    const back = entries.filter(([, entry]) => versionNode(entry.cas) === this.core.selfIndex && entry.cas <= this.lostOwnTo);
    return { snapshot: batch.snapshot, deps: batch.deps, back: back.map(([key]) => key) };
  }

  /**
   * Our own writes the replica lost at the last reset, back from a peer and taken by memcached: the
   * chain ships them again. (A refused merge brought nothing back: the snapshot stays owed.)
   */
  private shipOwnWritesAgain(from: PeerId, recovered: NonNullable<PendingMerge['recovered']>): void {
    const core = this.core;
    if (this.lostOwnTo === 0n) return;
    if (recovered.back.length > 0) {
      this.writes.markDirty(recovered.back);
      // A batch covers (prev, to]: a version of its own moves `to` on, so the chain carries them.
      core.clock = tickHlc(core.clock, core.nowMs);
      core.visible[core.selfIndex] = packVersion(core.clock, core.selfIndex);
    }
    if (recovered.snapshot && core.own(recovered.deps) >= this.lostOwnTo) this.owedSnapshots.delete(from);
    if (this.owedSnapshots.size === 0) this.lostOwnTo = 0n;
  }

  /** memcached took the put of merge `token` (or it had nothing to put). */
  onApplied(token: number, out: Out): void {
    const merge = this.merges.get(token);
    if (merge === undefined) return;
    merge.done = true;
    if (merge.snapshotDeps !== null) this.gate.onSnapshotTaken(merge.to, merge.snapshotDeps);
    if (merge.recovered !== null) this.shipOwnWritesAgain(merge.to, merge.recovered);
    this.ackMerged(out);
    if (this.ahead.size > 0) this.ahead.prune(this.told());
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
   * acknowledged, send those batches again. What those merges did write stays in memcached, beyond
   * the vector: their keys are held back from reads until it covers them again (./ahead-keys.ts).
   * A refused local write is simply lost.
   */
  onRefused(token: number | null): void {
    const core = this.core;
    const merge = token === null ? undefined : this.merges.get(token);
    if (merge === undefined) return;
    let later = false;
    for (const [key, undone] of [...this.merges]) {
      if (key === token) later = true;
      if (!later) continue;
      this.merges.delete(key);
      this.ahead.note(undone.entries.map(([written]) => written), undone.after);
    }
    const own = core.own(core.visible);
    core.visible = merge.before.map((version, index) => (index === core.selfIndex ? own : version));
    // A snapshot among the merges forgotten is taken again when its sender sends it again.
    for (const inbox of this.inboxes.values()) inbox.forgetHeldSnapshot();
  }

  /**
   * The vector peers are told: `visible` before the first merge memcached has not taken yet. After
   * a reset, until the snapshots owed bring our lost writes back, none of ours: a peer holding one
   * of them (a tombstone) must not count it as held everywhere.
   */
  told(): VersionVector {
    const core = this.core;
    const first = this.merges.values().next();
    const told = first.done === true ? [...core.visible] : [...first.value.before];
    told[core.selfIndex] = this.lostOwnTo > 0n ? 0n : core.own(core.visible);
    return told;
  }

  /** Acknowledges `to`'s batch ending at `batchTo` (0 with `resync`: send a snapshot next) with what peers are told. */
  ack(to: PeerId, batchTo: bigint, resync: boolean, out: Out): void {
    // The peer gives up its chain, and a snapshot it was sending with it: a fresh one comes instead.
    if (resync) this.inbox(to).dropSnapshot();
    out.push({ kind: 'send', to, message: { kind: 'batch_ack', to: batchTo, visible: this.told(), resync } });
  }

  /**
   * After a reset, a peer that holds every write we made before it, and has not sent a snapshot
   * saying so, is asked for one: it brings back those of our writes our replica lost (the last
   * batches of our chain may have reached it after it sent the snapshot our reset prompted).
   */
  askForLostWrites(from: PeerId, visible: VersionVector, out: Out): void {
    if (this.owedSnapshots.has(from) && this.core.own(visible) >= this.lostOwnTo) this.askForSnapshot(from, out);
  }

  /**
   * While the rebuild gate is shut, no snapshot is being merged and no part of one came for
   * resyncAfterMs, every peer up it still waits for is asked for one. A peer whose chain we held
   * sends one on its own when it sees our vector go back, and that one often opens the gate:
   * asking the others meanwhile would have them send whole replicas for nothing, or start one over.
   */
  askForRebuild(out: Out): void {
    if (this.snapshotUnderway()) return;
    const peersUp = this.peersUp();
    for (const peer of this.gate.waitingFor()) if (peersUp.has(peer)) this.askForSnapshot(peer, out);
  }

  /**
   * Asks `peer` for a snapshot, unless it was asked, or sent part of one, within resyncAfterMs:
   * each ask makes the peer start its snapshot over (a barrier on its replica), so asking while
   * one is on its way, as under a bulk load it can be for seconds, would start it over for ever.
   * Nor while its snapshot waits here for another node's writes: a fresh one would wait as long.
   */
  private askForSnapshot(peer: PeerId, out: Out): void {
    if (this.waitingSnapshots.has(peer) || !this.snapshotTimes.mayAsk(peer, this.core.nowMs)) return;
    this.core.note(out, 'info', 'asking a peer for a snapshot of its replica', { peer, rebuilding: this.gate.shut });
    this.ack(peer, 0n, true, out);
  }

  /**
   * A chain batch parked for resyncAfterMs gives up its sender's chain: a snapshot is asked for.
   * Not while a snapshot is on its way (a part came within resyncAfterMs) or being merged: the
   * batches behind it, and those waiting for its writer's writes, wait for it, and asking would
   * have a whole replica read and sent again.
   */
  resyncStuck(out: Out): void {
    const core = this.core;
    if (this.snapshotUnderway()) return;
    for (const peer of core.peers) {
      const inbox = this.inbox(peer);
      // Behind a snapshot waiting for another node's writes, a fresh one would wait as long.
      if (this.waitingSnapshots.has(peer) || !inbox.stuck(core.nowMs, core.tuning.resyncAfterMs)) continue;
      // Waiting longer would wait on a node cut off from us: take the sender's whole replica instead.
      inbox.unpark();
      this.core.note(out, 'info', 'a batch waited too long for what it depends on: asking its sender for a snapshot', { peer });
      this.ack(peer, 0n, true, out);
    }
  }

  /** Drops the parked entries `keep` turns down. */
  filterEntries(keep: (pair: KeyedEntry) => boolean): void {
    for (const inbox of this.inboxes.values()) inbox.filterEntries(keep);
    for (const snapshot of this.waitingSnapshots.values()) snapshot.entries = snapshot.entries.filter(keep);
  }

  /**
   * The replica was emptied: our writes it held may be lost, and merges in flight with them. None of
   * ours was ever seen (a first start on an empty memcached): none can be lost, and no peer owes a
   * snapshot for them (one owed could never be paid: asked for again and again).
   */
  onBackendReset(): void {
    this.lostOwnTo = this.core.own(this.core.visible);
    if (this.lostOwnTo > 0n) for (const peer of this.core.peers) this.owedSnapshots.add(peer);
    this.snapshotTimes.replicaEmptied(this.core.nowMs);
    this.merges.clear();
    // Their senders, never acknowledged, are asked again (the rebuild gate) or send them again.
    this.waitingSnapshots.clear();
    for (const inbox of this.inboxes.values()) inbox.onBackendReset();
  }

  private inbox(peer: PeerId): Inbox {
    const box = this.inboxes.get(peer);
    if (box === undefined) throw new Error(`no inbox for ${peer}`);
    return box;
  }
}
