/**
 * The reference the checks judge by: the applied sequence as nodes reveal it (the op, or a no-op,
 * at each index; every node must agree, and no client op may sit at two indices), and a reference
 * replica built from it, with each reply and each key's history, so a read or a reply can be held
 * against the state at its position. Separate because it knows nothing of nodes or the network:
 * only what was applied where.
 */

import type { Reply } from '../../../src/protocol/types.ts';
import type { PeerId } from '../../../src/consistency/types.ts';
import { itemAt } from '../../../src/runtime/item-at.ts';
import { applyToEntry, isLive, type SingleKeyOp } from '../../../src/store/apply.ts';
import { opKeys, type Entry, type Op } from '../../../src/store/types.ts';

/** An op as text, to compare ops that are not the same object (bigints written as `1n`). */
export const opKey = (op: Op): string => JSON.stringify(op, (_key, value: unknown) => (typeof value === 'bigint' ? `${value}n` : value));

export class Reference {
  /** Op (or null for a no-op) at each index, as learned from applies. */
  private readonly sequence: Array<{ op: Op | null; nowMs: number } | undefined> = [];
  /** Where each client op (by identity: messages and records carry the same object) took effect: once at most. */
  private readonly indexOfOp = new WeakMap<Op, number>();
  private readonly reference = new Map<string, Entry>();
  private referenceIndex = 0;
  private readonly history = new Map<string, Array<{ index: number; entry: Entry | undefined }>>();
  private readonly referenceReplies: Reply[] = [];

  /** `perKeyReads`: read leases are on, so a get is judged per key (see unchangedAfter). */
  constructor(private readonly perKeyReads: boolean) {}

  /** How far the reference replica was built. */
  get index(): number {
    return this.referenceIndex;
  }

  /** The reference replica's entries. */
  get entries(): ReadonlyMap<string, Entry> {
    return this.reference;
  }

  /** What is known to sit at `index` of the applied sequence (undefined: nothing yet). */
  at(index: number): { op: Op | null; nowMs: number } | undefined {
    return this.sequence[index];
  }

  /** The reply the reference replica gave the op at `index` (once built that far). */
  replyAt(index: number): Reply | undefined {
    return this.referenceReplies[index];
  }

  /** Records what sits at `index` of the applied sequence; every node must agree. */
  learn(index: number, op: Op | null, nowMs: number, by: PeerId): void {
    const known = this.sequence[index];
    if (known === undefined) {
      this.sequence[index] = { op, nowMs };
      if (op === null) return;
      const earlier = this.indexOfOp.get(op);
      if (earlier !== undefined && earlier !== index) throw new Error(`${by} applies at ${index} the client op already at ${earlier}: ${opKey(op)}`);
      this.indexOfOp.set(op, index);
      return;
    }
    if (known.op !== op && (known.op === null || op === null || opKey(known.op) !== opKey(op))) {
      throw new Error(`${by} disagrees at index ${index}: ${op === null ? 'no-op' : opKey(op)} vs ${known.op === null ? 'no-op' : opKey(known.op)}`);
    }
  }

  advanceTo(toIndex: number): void {
    while (this.referenceIndex < toIndex) {
      const next = this.sequence[this.referenceIndex + 1];
      // Unseen below an applied or transferred position: nobody applied it, so it is a no-op.
      if (next === undefined) {
        this.sequence[this.referenceIndex + 1] = { op: null, nowMs: 0 };
        continue;
      }
      this.referenceIndex += 1;
      if (next.op === null) continue;
      const op = next.op as SingleKeyOp;
      const outcome = applyToEntry(this.reference.get(op.key), op, { cas: BigInt(this.referenceIndex), nowMs: next.nowMs });
      if (outcome.write === null) this.reference.delete(op.key);
      else if (outcome.write !== undefined) this.reference.set(op.key, outcome.write);
      this.referenceReplies[this.referenceIndex] = outcome.reply;
      const changes = this.history.get(op.key) ?? [];
      changes.push({ index: this.referenceIndex, entry: this.reference.get(op.key) });
      this.history.set(op.key, changes);
    }
  }

  /**
   * Whether every index in (from, to] is a no-op, so the states at `from` and `to` are the same:
   * a replica's position is its last apply, and a new leader's no-op is never applied.
   */
  private onlyNoOpsAfter(from: number, to: number): boolean {
    this.advanceTo(to);
    for (let index = from + 1; index <= to; index += 1) if (this.sequence[index]?.op !== null) return false;
    return true;
  }

  /**
   * Whether an op served at `from` reflects the state at `to` as well. With read leases a
   * linearizable read waits only for its own key's entries, and per key is exactly
   * linearizability (it is local: Herlihy and Wing), so a get needs only its key unchanged;
   * otherwise the whole state must be (the read index serves a state at least as new as every
   * completed op).
   */
  unchangedAfter(op: Op, from: number, to: number): boolean {
    if (!this.perKeyReads || op.kind !== 'get') return this.onlyNoOpsAfter(from, to);
    this.advanceTo(to);
    for (let index = from + 1; index <= to; index += 1) {
      const other = this.sequence[index]?.op ?? null;
      if (other === null) continue;
      const keys = opKeys(other);
      if (keys === null || keys.some((key) => op.keys.includes(key))) return false;
    }
    return true;
  }

  valueAt(key: string, index: number): string | null {
    const changes = this.history.get(key) ?? [];
    for (let at = changes.length - 1; at >= 0; at -= 1) {
      const change = itemAt(changes, at);
      if (change.index <= index) {
        const entry = change.entry;
        return isLive(entry, 0) ? entry.value.toString() : null;
      }
    }
    return null;
  }

  /** A start-over at `index`: from here the reference is an empty state at that index. */
  startOver(index: number): void {
    this.reference.clear();
    this.referenceIndex = index;
    this.referenceReplies.length = Math.min(this.referenceReplies.length, index + 1);
    for (const [key, changes] of this.history) {
      this.history.set(key, [...changes.filter((change) => change.index < index), { index, entry: undefined }]);
    }
  }
}
