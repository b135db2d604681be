/**
 * Keys that hold a peer's write beyond the visible vector. memcached may refuse part of a merge
 * for want of memory: the merge is then undone in the vector (./merging.ts's onRefused), but the
 * keys it and the merges after it did write keep their new values. Read, one of them would show a
 * write without what it depends on (a key merged from a later batch, read beside an older key of
 * an earlier batch memcached refused). So until the vector peers are told covers what those
 * merges had made visible (their senders send those batches again), every request whose outcome
 * shows one of those keys is refused (`not_caught_up`), the controller's fast read path included
 * (the machine's readsLocally); and what this node ships while they are held (its chain's
 * batches, its snapshots) says it depends on that too, so no peer shows it without those writes.
 *
 * Owns: key → the vector the undone merges that wrote it had made visible (the greatest of them);
 * the serial of the last refusal stepped, the fence of what is served now.
 * Invariants: a key is held while the told vector is below its vector in any component but ours;
 * a write of ours to a held key does not release it (memcached may refuse that write too).
 */

import type { Op } from '../../store/types.ts';
import { opKeys } from '../../store/types.ts';
import { refused, type Refusal } from '../../protocol/refusals.ts';
import { componentOf, type VersionVector } from './messages.ts';

export class AheadKeys {
  private readonly ahead = new Map<string, VersionVector>();
  /**
   * The `serial` of the last refusal stepped. A refusal reaches the controller before the machine
   * steps it: a read (or a write whose result shows the key) issued before then carries this as its
   * `fence`, and is not answered if a later refusal came before its answer (../types.ts, `read`).
   */
  private refusalsStepped = 0;

  constructor(
    /** Our own component, which every vector here may pass (our writes are ours). */
    private readonly selfIndex: number,
  ) {}

  get size(): number {
    return this.ahead.size;
  }

  /** Whether `key` holds a write beyond the vector. */
  has(key: string): boolean {
    return this.ahead.has(key);
  }

  /** A merge that had made `visible` visible wrote `keys` (or may have), and was undone in the vector. */
  note(keys: readonly string[], visible: VersionVector): void {
    for (const key of keys) {
      const held = this.ahead.get(key);
      this.ahead.set(key, held === undefined ? [...visible] : joined(held, visible));
    }
  }

  /** The fence of what is served now: the serial of the last refusal stepped. */
  get fence(): number {
    return this.refusalsStepped;
  }

  /** A refusal was stepped (its serial, if the controller numbered it). */
  refusalStepped(serial: number | undefined): void {
    if (serial !== undefined && serial > this.refusalsStepped) this.refusalsStepped = serial;
  }

  /** Releases the keys whose vector `told` covers again. */
  prune(told: VersionVector): void {
    for (const [key, vector] of this.ahead) if (!this.exceeds(vector, told)) this.ahead.delete(key);
  }

  /**
   * `base` raised to what the held keys depend on, when that is more than `base` outside our own
   * component; else null. (What this node ships depends on it while the keys are held.)
   */
  beyond(base: VersionVector): VersionVector | null {
    let raised: VersionVector | null = null;
    for (const vector of this.ahead.values()) {
      if (this.exceeds(vector, raised ?? base)) raised = joined(raised ?? base, vector);
    }
    return raised;
  }

  /** Why `op` is refused now: it touches a key held here (the rebuild gate lets through those that show nothing). */
  refusal(op: Op): Refusal | null {
    return this.showsAny(opKeys(op) ?? []) ? NOT_SHOWN : null;
  }

  /** Whether any of `keys` is held. */
  showsAny(keys: readonly string[]): boolean {
    return this.ahead.size > 0 && keys.some((key) => this.ahead.has(key));
  }

  /** The replica was emptied. */
  clear(): void {
    this.ahead.clear();
  }

  /** Whether `vector` passes `base` in a component other than ours. */
  private exceeds(vector: VersionVector, base: VersionVector): boolean {
    return vector.some((version, index) => index !== this.selfIndex && version > componentOf(base, index));
  }
}

const NOT_SHOWN = refused('not_caught_up', 'memcached refused part of a merge for want of memory; this key waits until it is merged again');

function joined(left: VersionVector, right: VersionVector): VersionVector {
  return left.map((version, index) => {
    const other = componentOf(right, index);
    return other > version ? other : version;
  });
}
