/**
 * After memcached lost this replica's contents (a backend reset), reads wait for the replica to
 * hold again what was visible before: a connection may have read any of it, and a read answering
 * "absent" for a write in its causal past would break the session's promise. Until then reads are
 * refused (`not_caught_up`), and so is every write whose outcome shows what the replica holds (a
 * delete that finds nothing reads "absent" as surely as a get); plain sets and flushes are taken,
 * depending on that floor (`deps`), so a peer shows them only with what their writer may have read.
 *
 * The gate opens when the vector peers are told covers the floor and a snapshot brought our own
 * lost writes back; or when every peer has sent its snapshot since the reset: the replica then
 * holds whatever any of them still had, and what none of them had is lost for good.
 *
 * Keys an undone merge left beyond the vector (./ahead-keys.ts) are held back the same ways, key by
 * key: requests that would show one are refused, and writes and snapshots depend on those merges.
 * Invariants: the floor only grows while the gate is shut (a reset during the rebuild keeps it);
 * the gate, once open, stays open until the next reset.
 */

import type { PeerId } from '../types.ts';
import { showsNothing, type Op } from '../../store/types.ts';
import type { AheadKeys } from './ahead-keys.ts';
import { refused, type Refusal } from '../../protocol/refusals.ts';
import { componentOf, type VersionVector } from './messages.ts';

interface Rebuild {
  /** The visible vector before the reset (our own component: our latest write then). */
  floor: VersionVector;
  /** Peers whose snapshot since the reset memcached has taken. */
  snapshotsFrom: Set<PeerId>;
  /** A snapshot memcached has taken covered our own writes up to the floor. */
  ownBack: boolean;
}

export class RebuildGate {
  private rebuild: Rebuild | null = null;

  constructor(
    private readonly peers: readonly PeerId[],
    private readonly selfIndex: number,
    /** The vector peers are told: what memcached holds (../merging.ts's `told`). */
    private readonly told: () => VersionVector,
    /** Keys an undone merge left beyond the vector (./ahead-keys.ts): held back too, and depended on. */
    private readonly ahead: AheadKeys,
  ) {}

  /** Whether reads are refused now (it opens as soon as the replica holds what it waits for). */
  get shut(): boolean {
    return this.rebuild !== null && !this.opens(this.rebuild);
  }

  /** Whether a get of `keys` (unknown: undefined) may be served from the replica without a step. */
  servesLocally(keys: readonly string[] | undefined): boolean {
    if (this.ahead.size > 0 && (keys === undefined || this.ahead.showsAny(keys))) return false;
    return !this.shut;
  }

  /** The `fence` of a read, or of a write whose result shows the key (./ahead-keys.ts). */
  get fence(): number {
    return this.ahead.fence;
  }

  /** Whether a snapshot read now may depend on more than the replica holds (see `needsBeyond`). */
  get snapshotsLack(): boolean {
    return this.shut || this.ahead.size > 0;
  }

  /** The peers whose snapshot the shut gate still waits for (none when it is open). */
  waitingFor(): PeerId[] {
    const rebuild = this.rebuild;
    return rebuild === null || this.opens(rebuild) ? [] : this.peers.filter((peer) => !rebuild.snapshotsFrom.has(peer));
  }

  /** The replica was emptied; `visible` is the vector before it was. */
  onReset(visible: VersionVector): void {
    // A reset during the rebuild keeps the floor: what was visible before the first is still owed.
    const floor = this.withFloor(visible);
    if (floor.every((version) => version === 0n)) return;
    this.rebuild = { floor, snapshotsFrom: new Set(), ownBack: false };
  }

  /** memcached took a snapshot `from` a peer, covering what its `deps` say. */
  onSnapshotTaken(from: PeerId, deps: VersionVector): void {
    const rebuild = this.rebuild;
    if (rebuild === null) return;
    rebuild.snapshotsFrom.add(from);
    if (componentOf(deps, this.selfIndex) >= componentOf(rebuild.floor, this.selfIndex)) rebuild.ownBack = true;
  }

  /**
   * Why `op` is refused now: while the gate is shut, all whose outcome the replica's contents
   * decide (see the header); and those that would show a key held back.
   */
  refusal(op: Op): Refusal | null {
    if (showsNothing(op)) return null;
    if (this.rebuild !== null && !this.opens(this.rebuild)) return REBUILDING;
    return this.ahead.refusal(op);
  }

  /** Whether the replica holds what `rebuild` waits for: then the gate opens. */
  private opens(rebuild: Rebuild): boolean {
    const told = this.told();
    const everyPeerSent = this.peers.every((peer) => rebuild.snapshotsFrom.has(peer));
    const holdsFloor = rebuild.floor.every((version, index) => index === this.selfIndex || componentOf(told, index) >= version);
    const covered = rebuild.ownBack && holdsFloor;
    if (!everyPeerSent && !covered) return false;
    this.rebuild = null;
    return true;
  }

  /**
   * What a snapshot of the replica may depend on beyond `told`, what it holds (`deps`): while the
   * gate is shut, the sets taken meanwhile depend on the floor; keys held back, on the undone
   * merges. Null when that adds nothing.
   */
  needsBeyond(told: VersionVector): VersionVector | null {
    const needs = this.deps(told);
    return needs.some((version, index) => index !== this.selfIndex && version > componentOf(told, index)) ? needs : null;
  }

  /**
   * A write's dependencies: what is visible; while the gate is shut, everything visible before
   * the reset; while keys are held back, what the undone merges had made visible.
   */
  deps(visible: VersionVector): VersionVector {
    const deps = this.withFloor(visible);
    return this.ahead.beyond(deps) ?? deps;
  }

  /** `visible`, and while the gate is shut, everything visible before the reset. */
  private withFloor(visible: VersionVector): VersionVector {
    const floor = this.rebuild?.floor;
    if (floor === undefined) return [...visible];
    return visible.map((version, index) => {
      const least = componentOf(floor, index);
      return version > least ? version : least;
    });
  }
}

const REBUILDING = refused('not_caught_up', 'memcached lost this replica, which is being rebuilt from its peers (only plain sets are taken meanwhile)');
