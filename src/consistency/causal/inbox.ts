/**
 * One peer's chain to us in causal mode, the receiver's half of ./messages.ts: a batch's parts
 * assembled, and chain batches parked until they may be merged, which tracks their dependencies.
 *
 * Owns: the batch being assembled and the parked batches (by prev). The visible vector is
 * ./core.ts's; the merge that raises it, ./merging.ts's.
 *
 * Invariants: at most one parked batch per prev, and no more than the machine's bound; a parked
 * batch goes to merge only when it follows on (prev <= visible[sender] < to) and its deps are
 * visible at every other node's component but ours; one already covered is forgotten.
 */

import type { KeyedEntry } from '../types.ts';
import { componentOf, type Batch, type CausalMessage, type VersionVector } from './messages.ts';

type BatchMessage = Extract<CausalMessage, { kind: 'batch' }>;

interface Assembling {
  id: string;
  header: Omit<BatchMessage, 'entries' | 'part'>;
  parts: Array<KeyedEntry[] | undefined>;
  received: number;
  /** Parts held from the first on, without a gap: what the sender need not send again. */
  prefix: number;
}

/** One peer's chain to us. */
export class Inbox {
  /**
   * The batches being assembled, by `snapshot`: a snapshot's and a chain batch's apart, so the
   * chain batches sent behind a snapshot of thousands of parts (a window's worth, and again at each
   * ack timeout) do not throw away what was assembled of it. (One slot for both, the snapshot
   * never completed.)
   */
  private readonly assembling = new Map<boolean, Assembling>();
  /**
   * The last snapshot assembled whole (merged at once): a part of it again means its sender timed
   * out waiting for the ack of a merge still running, or lost; it is not assembled and merged anew.
   */
  private snapshotHeld: string | null = null;
  /** Complete chain batches that do not follow on yet, or whose dependencies are not all visible; by `prev`. */
  private readonly parked = new Map<bigint, { batch: Batch; sinceMs: number }>();

  /** `sender` and `self`: the sender's and our component in a vector. */
  constructor(
    private readonly sender: number,
    private readonly self: number,
  ) {}

  /** Parts held of the snapshot, or of the chain batch, being assembled, from its first on without a gap. */
  assembledParts(snapshot: boolean): number {
    return this.assembling.get(snapshot)?.prefix ?? 0;
  }

  /** Whether part of a snapshot is held, the rest still to come. */
  assemblingSnapshot(): boolean {
    return this.assembling.has(true);
  }

  /** Its sender was told to start over: what is assembled of its snapshot will never be completed. */
  dropSnapshot(): void {
    this.assembling.delete(true);
  }

  /** Batches parked. */
  get parkedCount(): number {
    return this.parked.size;
  }

  /**
   * Takes one part of a batch, holding only the entries `keep` (if given) lets through: the whole
   * batch once its last part is in, else null; 'held' for a part of the snapshot last assembled
   * (see `snapshotHeld`).
   */
  assemble(message: BatchMessage, keep?: (pair: KeyedEntry) => boolean): Batch | null | 'held' {
    const id = `${message.snapshot}/${message.prev}/${message.to}/${message.parts}/${message.deps.join(',')}`;
    if (message.snapshot && id === this.snapshotHeld) return 'held';
    let assembling = this.assembling.get(message.snapshot);
    if (assembling?.id !== id) {
      const { entries: _entries, part: _part, ...header } = message;
      assembling = { id, header, parts: new Array<KeyedEntry[] | undefined>(message.parts), received: 0, prefix: 0 };
      this.assembling.set(message.snapshot, assembling);
    }
    if (assembling.parts[message.part] !== undefined) return null;
    assembling.parts[message.part] = keep === undefined ? message.entries : message.entries.filter(keep);
    assembling.received += 1;
    while (assembling.parts[assembling.prefix] !== undefined) assembling.prefix += 1;
    if (assembling.received < assembling.parts.length) return null;
    this.assembling.delete(message.snapshot);
    if (message.snapshot) this.snapshotHeld = id;
    const { snapshot, prev, to, deps, needs } = assembling.header;
    const batch: Batch = { snapshot, prev, to, deps, entries: assembling.parts.flatMap((part) => part ?? []) };
    if (needs !== undefined) batch.needs = needs;
    return batch;
  }

  /** Parks a chain batch until it may be merged; dropped when one with its prev is parked or `parkedMax` are. */
  park(batch: Batch, nowMs: number, parkedMax: number): void {
    if (!this.parked.has(batch.prev) && this.parked.size < parkedMax) this.parked.set(batch.prev, { batch, sinceMs: nowMs });
  }

  /**
   * Hands `merge`, in the order parked, every batch that follows on and whose dependencies are
   * visible, and forgets those already covered. `visible()` is read for each batch: a merge raises
   * it. True when any batch was merged.
   */
  mergeReady(visible: () => readonly bigint[], merge: (batch: Batch) => void): boolean {
    let merged = false;
    for (const [prev, { batch }] of this.parked) {
      const vector = visible();
      const held = componentOf(vector, this.sender);
      if (batch.to <= held) this.parked.delete(prev);
      else if (prev <= held && this.depsVisible(batch.deps, vector)) {
        this.parked.delete(prev);
        merge(batch);
        merged = true;
      }
    }
    return merged;
  }

  /** Whether a parked batch has waited `waitMsMax` or longer. */
  stuck(nowMs: number, waitMsMax: number): boolean {
    return [...this.parked.values()].some(({ sinceMs }) => nowMs - sinceMs >= waitMsMax);
  }

  /** Forgets the parked batches (their sender sends a snapshot instead). */
  unpark(): void {
    this.parked.clear();
  }

  /** Drops the parked entries `keep` turns down. */
  filterEntries(keep: (pair: KeyedEntry) => boolean): void {
    for (const { batch } of this.parked.values()) batch.entries = batch.entries.filter(keep);
  }

  /** The snapshot last assembled is to be taken again: its merge was refused. */
  forgetHeldSnapshot(): void {
    this.snapshotHeld = null;
  }

  /** The replica was emptied: what was assembled or parked is dropped. */
  onBackendReset(): void {
    this.snapshotHeld = null;
    this.assembling.clear();
    this.parked.clear();
  }

  private depsVisible(deps: VersionVector, visible: readonly bigint[]): boolean {
    return deps.every((version, index) => index === this.sender || index === this.self || version <= componentOf(visible, index));
  }
}
