/**
 * The restriction of the sequential checker's gated passes (sequential.ts): an operation it gates
 * may be placed only once every determinate operation that returned before it was called is.
 * A gated search sees only some orders, so only its "ok" counts.
 *
 * Invariants: `frontier` is the length of the longest run of placed operations at the start of
 * the return-time order; place and unplace keep it so.
 */

import { itemAt } from '../runtime/item-at.ts';
import { isIndeterminate, type Operation } from './history.ts';

/**
 * Keeps each gated operation (indeterminate ones, or every one that may change the register)
 * after every determinate one that returned before it was called. Determinate ops are ranked by
 * return time; `frontier` is how many of the first ones in that order are all placed. This never
 * deadlocks a search on its own: what an operation waits for returned before it was called, so
 * before its process-order predecessors, and the real-time order is acyclic.
 */
export class RealTimeGate {
  private readonly rankOf = new Map<number, number>();
  private readonly placed: Uint8Array;
  private readonly needed = new Map<number, number>();
  private frontier = 0;

  constructor(queues: Operation[][], gated: (op: Operation) => boolean) {
    const determinate = queues.flat().filter((op) => !isIndeterminate(op)).sort((a, b) => a.return - b.return);
    determinate.forEach((op, rank) => this.rankOf.set(op.id, rank));
    this.placed = new Uint8Array(determinate.length);
    for (const op of queues.flat()) {
      if (!gated(op)) continue;
      let low = 0;
      let high = determinate.length;
      while (low < high) {
        const middle = (low + high) >> 1;
        if (itemAt(determinate, middle).return < op.call) low = middle + 1;
        else high = middle;
      }
      this.needed.set(op.id, low);
    }
  }

  allows(op: Operation): boolean {
    return this.frontier >= (this.needed.get(op.id) ?? 0);
  }

  place(op: Operation): void {
    const rank = this.rankOf.get(op.id);
    if (rank === undefined) return;
    this.placed[rank] = 1;
    while (this.frontier < this.placed.length && this.placed[this.frontier] === 1) this.frontier++;
  }

  unplace(op: Operation): void {
    const rank = this.rankOf.get(op.id);
    if (rank === undefined) return;
    this.placed[rank] = 0;
    if (rank < this.frontier) this.frontier = rank;
  }
}
