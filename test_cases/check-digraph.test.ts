/**
 * The checkers' graph algorithms (src/check/digraph.ts): an order along every edge, or a cycle
 * that really is one. Hand-made graphs, then 300 seeded random ones checked against both
 * properties (each graph has an order or a cycle, never both).
 */

import { describe, expect, it } from 'vitest';
import { findCycle, successorsOfEdges, successorsOfPredecessors, topologicalOrder } from '../src/check/digraph.ts';
import { itemAt } from '../src/runtime/item-at.ts';

/** Whether `order` holds every node once, each after all of its predecessors. */
function isOrder(successors: number[][], order: number[]): boolean {
  const place = new Map(order.map((node, index) => [node, index]));
  if (place.size !== successors.length || order.length !== successors.length) return false;
  return successors.every((list, node) => list.every((next) => (place.get(node) ?? -1) < (place.get(next) ?? -1)));
}

/** Whether `cycle` is a cycle: distinct nodes, each with an edge to the next, the last to the first. */
function isCycle(successors: number[][], cycle: number[]): boolean {
  if (cycle.length === 0 || new Set(cycle).size !== cycle.length) return false;
  return cycle.every((node, index) => itemAt(successors, node).includes(itemAt(cycle, (index + 1) % cycle.length)));
}

describe('digraph', () => {
  it('orders a graph without a cycle, and finds none in it', () => {
    const successors = successorsOfEdges(5, [0, 0, 1, 3, 2], [1, 2, 3, 4, 4]);
    const order = topologicalOrder(successors);
    expect(order).not.toBeNull();
    expect(isOrder(successors, order ?? [])).toBe(true);
    expect(findCycle(successors)).toBeNull();
  });

  it('finds a cycle that lies behind nodes before it and has nodes after it, and a self-loop', () => {
    // 0 → 1 → 2 → 3 → 1, 3 → 4 → 5: the cycle is 1 2 3.
    const successors = successorsOfEdges(6, [0, 1, 2, 3, 3, 4], [1, 2, 3, 1, 4, 5]);
    expect(topologicalOrder(successors)).toBeNull();
    const cycle = findCycle(successors) ?? [];
    expect(isCycle(successors, cycle)).toBe(true);
    expect([...cycle].sort()).toEqual([1, 2, 3]);
    expect(findCycle(successorsOfEdges(2, [0, 1], [1, 1]))).toEqual([1]);
  });

  it('takes predecessor lists as the causal checker keeps them', () => {
    // 1 after 0, 2 after 1, 0 after 2: one cycle, in edge order 0 → 1 → 2.
    const successors = successorsOfPredecessors([[2], [0], [1]]);
    expect(successors).toEqual([[1], [2], [0]]);
    const cycle = findCycle(successors) ?? [];
    expect(isCycle(successors, cycle)).toBe(true);
  });

  it('gives every random graph an order or a cycle, never both, each valid', () => {
    let seed = 12345;
    const random = (): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    let cyclic = 0;
    for (let graph = 0; graph < 300; graph += 1) {
      const count = 1 + Math.floor(random() * 30);
      const from: number[] = [];
      const to: number[] = [];
      const edges = Math.floor(random() * count * 1.5);
      for (let edge = 0; edge < edges; edge += 1) {
        from.push(Math.floor(random() * count));
        to.push(Math.floor(random() * count));
      }
      const successors = successorsOfEdges(count, from, to);
      const order = topologicalOrder(successors);
      const cycle = findCycle(successors);
      expect(order === null, `graph ${graph}: an order and a cycle, or neither`).toBe(cycle !== null);
      if (order !== null) expect(isOrder(successors, order), `graph ${graph}`).toBe(true);
      if (cycle !== null) {
        cyclic += 1;
        expect(isCycle(successors, cycle), `graph ${graph}: ${cycle.join(' ')}`).toBe(true);
      }
    }
    expect(cyclic).toBeGreaterThan(30);
    expect(cyclic).toBeLessThan(270);
  });
});
