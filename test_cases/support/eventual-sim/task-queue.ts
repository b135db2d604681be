/**
 * The simulator's agenda: every future happening (a delivery, a tick, a store effect due, a heal
 * of a cut link) is a task at a simulated time, taken in (time, scheduling order). Separate
 * because that order, ties included, is what makes a seed replay exactly.
 */

import { itemAt } from '../../../src/runtime/item-at.ts';

interface Task {
  atMs: number;
  seq: number;
  run: () => void;
}

/** A binary min-heap of tasks by (atMs, seq). */
export class TaskQueue {
  private readonly heap: Task[] = [];

  push(task: Task): void {
    const heap = this.heap;
    heap.push(task);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(itemAt(heap, i), itemAt(heap, parent))) break;
      [heap[i], heap[parent]] = [itemAt(heap, parent), itemAt(heap, i)];
      i = parent;
    }
  }

  pop(): Task | undefined {
    const heap = this.heap;
    const top = heap[0];
    const last = heap.pop();
    if (heap.length === 0 || last === undefined) return top;
    heap[0] = last;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      const right = left + 1;
      let least = i;
      if (left < heap.length && before(itemAt(heap, left), itemAt(heap, least))) least = left;
      if (right < heap.length && before(itemAt(heap, right), itemAt(heap, least))) least = right;
      if (least === i) break;
      [heap[i], heap[least]] = [itemAt(heap, least), itemAt(heap, i)];
      i = least;
    }
    return top;
  }

  peekAtMs(): number {
    return this.heap.length === 0 ? Infinity : itemAt(this.heap, 0).atMs;
  }
}

const before = (a: Task, b: Task): boolean => a.atMs < b.atMs || (a.atMs === b.atMs && a.seq < b.seq);
