/**
 * Directed graphs over the nodes 0…n−1, as successor lists, for the checkers: an order of the
 * nodes along their edges (Kahn's algorithm), or else a shortest cycle through a node on one. The
 * sequential checker's forced precedences (./order-graph.ts) and the causal checker's orders
 * (./causal.ts) both decide by these, each over its own nodes and edges.
 */

import { itemAt } from '../runtime/item-at.ts';

export type Successors = readonly (readonly number[])[];

/** Successor lists of the edges `from[e]` → `to[e]` among `count` nodes. */
export function successorsOfEdges(count: number, from: readonly number[], to: readonly number[]): number[][] {
  const successors: number[][] = Array.from({ length: count }, () => []);
  for (const [edge, node] of from.entries()) itemAt(successors, node).push(itemAt(to, edge));
  return successors;
}

/** Successor lists of a graph given as predecessor lists. */
export function successorsOfPredecessors(predecessors: Successors): number[][] {
  const successors: number[][] = predecessors.map(() => []);
  predecessors.forEach((list, node) => {
    for (const predecessor of list) itemAt(successors, predecessor).push(node);
  });
  return successors;
}

/** Every node after all of its predecessors (Kahn's algorithm), or null when there is a cycle. */
export function topologicalOrder(successors: Successors): number[] | null {
  const order = kahnOrder(successors);
  return order.length === successors.length ? order : null;
}

/**
 * A shortest cycle through a node that lies on one, as its nodes in edge order (each has an edge
 * to the next, the last to the first), or null when there is none.
 */
export function findCycle(successors: Successors): number[] | null {
  const count = successors.length;
  const order = kahnOrder(successors);
  if (order.length === count) return null;
  // The nodes Kahn's algorithm leaves lie on a cycle or after one; each has a predecessor it also leaves.
  const left = new Uint8Array(count).fill(1);
  for (const node of order) left[node] = 0;
  const predecessor = new Int32Array(count).fill(-1);
  successors.forEach((list, node) => {
    if (left[node] === 0) return;
    for (const next of list) if (left[next] === 1 && predecessor[next] === -1) predecessor[next] = node;
  });
  // Walking back through those must repeat a node, and the first repeated one lies on a cycle.
  const seen = new Uint8Array(count);
  let start = left.indexOf(1);
  while (seen[start] === 0) {
    seen[start] = 1;
    start = itemAt(predecessor, start);
  }
  // Breadth first from it, among the nodes left, back to it: a shortest cycle through it.
  const via = new Int32Array(count).fill(-1);
  const queue = [start];
  for (const node of queue) {
    for (const next of itemAt(successors, node)) {
      if (left[next] === 0 || via[next] !== -1) continue;
      via[next] = node;
      if (next === start) return pathBack(via, start);
      queue.push(next);
    }
  }
  throw new Error('findCycle: no cycle through a node on a cycle');
}

/** Kahn's algorithm: the nodes it can order, each after all of its predecessors. */
function kahnOrder(successors: Successors): number[] {
  const waiting = new Int32Array(successors.length);
  for (const list of successors) for (const next of list) waiting[next] = itemAt(waiting, next) + 1;
  const order: number[] = [];
  for (let node = 0; node < successors.length; node++) if (waiting[node] === 0) order.push(node);
  // `order` grows as it is walked: an array's iterator reads its length at every step.
  for (const node of order) {
    for (const next of itemAt(successors, node)) {
      const left = itemAt(waiting, next) - 1;
      waiting[next] = left;
      if (left === 0) order.push(next);
    }
  }
  return order;
}

/** The cycle the breadth-first tree `via` closes at `start`, in edge order from `start`. */
function pathBack(via: Int32Array, start: number): number[] {
  const nodes: number[] = [];
  let node = start;
  do {
    node = itemAt(via, node);
    nodes.push(node);
  } while (node !== start);
  return nodes.reverse();
}
