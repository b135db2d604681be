/**
 * A mode's memory guard (store/memory-guard.ts) and what feeds it, changed only by the mode's
 * step: this node's polls of its memcached (`memory_polled` events), its peers' reports of theirs
 * (`memory_report` events, counted while the failure detector sees the peer up, as each tick
 * says), and the items that arrive from peers to be stored here (each `put` the mode issues).
 *
 * The node that puts writes in order asks once per write, right before the write takes its place
 * (a replicated log's leader, for its own clients' writes and forwarded ones alike; in eventual
 * and causal mode the node that took it): every write of the cluster is counted there. A refused
 * write is answered with the refusal and changes nothing. Why each rule: docs/memory-full.md.
 */

import { MemoryGuard, type BackendMemory, type PeerMemoryReport, type Stored, type WriterOf } from '../store/memory-guard.ts';
import type { Refusal } from '../protocol/refusals.ts';
import type { KeyedEntry, Op } from '../store/types.ts';
import type { Event, PeerId } from './types.ts';

/** The events that feed the guard. */
export type MemoryEvent = Extract<Event<unknown>, { kind: 'memory_polled' | 'memory_report' }>;

export class MemoryAdmission {
  readonly #guard: MemoryGuard;
  readonly #peers: readonly PeerId[];
  /** Each peer's latest report, counted while it is up (none: it says nothing of its memory). */
  readonly #reports = new Map<PeerId, PeerMemoryReport>();
  readonly #keyHeld: (key: string) => boolean;

  /**
   * `peers`: the other nodes. `writerOf`: which writer a version is from (default: one, a log).
   * `keyHeld`: whether this node's replica holds a key (MachineOptions.keyHeld).
   */
  constructor(peers: readonly PeerId[], writerOf?: WriterOf, keyHeld: (key: string) => boolean = () => false) {
    this.#peers = peers;
    this.#guard = new MemoryGuard(writerOf);
    this.#keyHeld = keyHeld;
  }

  /** A memory event, as every machine steps it. */
  step(event: MemoryEvent): void {
    if (event.kind === 'memory_polled') this.polled(event.memory, event.stored);
    else this.reported(event.from, event.report);
  }

  /** A poll of our memcached read its memory (null: it said nothing); `stored` as of the poll's start. */
  polled(memory: BackendMemory | null, stored: Stored): void {
    this.#guard.polled(memory ?? undefined, stored);
  }

  /** What our replica's memcached holds, in bytes, as the last poll said (null: unknown). */
  replicaBytes(): number | null {
    return this.#guard.ownUsedBytes();
  }

  /** A peer's new report; it counts from the next tick that sees the peer up. */
  reported(from: PeerId, report: PeerMemoryReport | null): void {
    if (!this.#peers.includes(from)) return;
    if (report === null) this.#reports.delete(from);
    else this.#reports.set(from, report);
  }

  /** The failure detector's view, at each tick: a peer that is down counts no more. */
  peersUp(up: readonly PeerId[]): void {
    for (const peer of this.#peers) this.#guard.peerReported(peer, up.includes(peer) ? this.#reports.get(peer) : undefined);
  }

  /**
   * Why some replica's memcached cannot take `op`, stored as `version` (its log index, or its HLC
   * version) — memcached's own refusal — or null, and then `op` is counted until reports cover it.
   */
  refusal(op: Op, version: bigint): Refusal | null {
    return this.#guard.refusal(op, version, () => op.kind === 'store' && this.#keyHeld(op.key));
  }

  /**
   * Entries another node admitted, about to be stored here: a push or a chain batch (`byKey`:
   * counted by key, see MemoryGuard.arrived), or a snapshot or a state transfer's chunk.
   */
  arrived(entries: readonly KeyedEntry[], byKey = false): void {
    if (entries.length > 0) this.#guard.arrived(entries.map(([key, entry]) => [key, entry.value.length, entry.cas] as const), byKey);
  }
}
