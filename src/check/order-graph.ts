/**
 * A quick, sound prover of sequential-consistency violations for one key: it can only answer
 * "violation" (with a cycle of operations that must each precede the next), never "ok".
 *
 * In any sequential order that explains a register history some pairs of operations are forced
 * one way (process order; a unique value's producer before its observers; a clobberer before the
 * producer or after the observer); a cycle of forced pairs is a violation. Polynomial, so it
 * decides in well under a second what the exhaustive search could only decide by exhausting every
 * order. The rules and why each is sound: docs/checking.md, "The order-graph prover".
 *
 * Invariants: nodes are indexed 0 (INIT) to n-1; `reach` rows are bitsets of n bits, recomputed
 * from the edge list whenever it is acyclic; every edge carries the reason it was added.
 */

import { itemAt, wordAt } from '../runtime/item-at.ts';
import { findCycle, successorsOfEdges, topologicalOrder } from './digraph.ts';
import { SuffixIndex } from './suffix-index.ts';
import { describeOperation, isIndeterminate, orderQueues, show, type Operation, type RegisterValue } from './history.ts';

/** Why one operation must precede the next on a cycle. */
export type EdgeReason =
  | { kind: 'initial' }
  | { kind: 'process' }
  | { kind: 'observes'; value: RegisterValue }
  | { kind: 'clobbers-before'; value: RegisterValue; observer: Operation }
  | { kind: 'clobbers-after'; value: RegisterValue; producer: Operation | null };

/** A step of a cycle: `op` (null for the initial register) must precede the next step's op. */
export interface CycleStep {
  op: Operation | null;
  reason: EdgeReason;
}

/** The result of the prover: a cycle of forced precedences, or nothing proven. */
export type OrderProof =
  | { verdict: 'violation'; cycle: CycleStep[] }
  | { verdict: 'unknown' };

/**
 * The reachability matrix's bound, n² bits for a key's n operations: 256 MiB, about 46,000
 * operations. Each round of rule 3 visits every unique value against every operation, so a key
 * far larger than that would spend minutes a round, past any budget, rather than prove anything.
 */
const REACH_BYTES_MAX = 256 * 1024 * 1024;
/** How many unique values rule 3 visits between looks at the clock. */
const VALUES_PER_CLOCK_LOOK = 64;

/** How many cycle steps a report shows before cutting. */
const CYCLE_SHOWN_MAX = 24;
const INIT = 0;

/** What a placed operation leaves in the register, for clobbering. */
type Leaves =
  | { kind: 'value'; value: string }
  | { kind: 'absent' }
  | { kind: 'appended' }
  | { kind: 'absent-or-appended' }
  | { kind: 'unchanged' };

interface UniqueValue {
  value: RegisterValue;
  producer: number;
  observers: number[];
}

interface Graph {
  /** Operation of each node; `null` for INIT. */
  nodes: (Operation | null)[];
  leaves: Leaves[];
  values: UniqueValue[];
  from: number[];
  to: number[];
  reasons: EdgeReason[];
  edgeSet: Set<number>;
}

/**
 * Try to prove that one key's operations are not sequentially consistent. Gives up (unknown)
 * when the rules find no new edge, at `deadlineMs`, or at once for a key past REACH_BYTES_MAX.
 */
export function proveKeyViolation(ops: Operation[], deadlineMs: number): OrderProof {
  const nodesMax = ops.length + 1; // INIT and at most every operation
  if (nodesMax * rowWords(nodesMax) * 4 > REACH_BYTES_MAX || performance.now() > deadlineMs) return { verdict: 'unknown' };
  const graph = buildGraph(ops);
  const words = rowWords(graph.nodes.length);
  for (;;) {
    const reach = computeReach(graph, words);
    if (reach === null) return { verdict: 'violation', cycle: cycleSteps(graph) };
    if (performance.now() > deadlineMs) return { verdict: 'unknown' };
    if (addDerivedEdges(graph, reach, words, deadlineMs) === 0) return { verdict: 'unknown' };
  }
}

/** Readable account of a cycle, in the style of the other violation reports. */
export function formatCycle(key: string, cycle: CycleStep[], opsTotal: number): string {
  const lines = [
    `key ${JSON.stringify(key)} is not sequentially consistent (${opsTotal} operations on this key).`,
    `These ${cycle.length} operation(s) would each have to come before the next in any sequential order, and the last before the first:`,
  ];
  const shown = cycle.slice(0, CYCLE_SHOWN_MAX);
  for (const step of shown) {
    lines.push(`  ${step.op === null ? 'the initial (absent) register' : describeOperation(step.op)}`);
    lines.push(`      before the next, as ${describeReason(step.reason)}`);
  }
  if (cycle.length > shown.length) lines.push(`  … ${cycle.length - shown.length} more step(s)`);
  const first = itemAt(cycle, 0).op;
  lines.push(`  (back to ${first === null ? 'the initial register' : `#${first.id}`})`);
  return lines.join('\n');
}

function describeReason(reason: EdgeReason): string {
  switch (reason.kind) {
    case 'initial': return 'every operation follows the initial register';
    case 'process': return 'its process ran it first';
    case 'observes': return `the next one observed ${show(reason.value)}, which only this one can produce`;
    case 'clobbers-before':
      return `it leaves the register without ${show(reason.value)} and comes before #${reason.observer.id}, which observed ` +
        `${show(reason.value)}: so ${show(reason.value)} must be produced after it (by the next one, its only producer)`;
    case 'clobbers-after':
      return `it observed ${show(reason.value)} and the next one leaves the register without it after ` +
        `${reason.producer === null ? 'the initial register' : `#${reason.producer.id}`}, its only producer`;
    default: {
      const unreachable: never = reason;
      return String(unreachable);
    }
  }
}

/** The nodes, unique values and first edges (process order, producer before observer). */
function buildGraph(ops: Operation[]): Graph {
  const producers = producersByValue(ops);
  const suffixes = new SuffixIndex<true>();
  for (const op of ops) if (op.input.f === 'append') suffixes.add(op.input.value, true);
  const hasDelete = ops.some((op) => op.input.f === 'delete');
  const observed = new Map<RegisterValue, Operation[]>();
  for (const op of ops) {
    const value = isIndeterminate(op) ? undefined : observedValue(op);
    if (value === undefined) continue;
    const list = observed.get(value);
    if (list) list.push(op);
    else observed.set(value, [op]);
  }
  const uniqueProducer = (value: RegisterValue): Operation | null | undefined => {
    if (value === null) return hasDelete ? undefined : null;
    const list = producers.get(value) ?? [];
    return list.length === 1 && !suffixes.endsAny(value, false) ? list[0] : undefined;
  };
  const forced = new Set<Operation>();
  for (const value of observed.keys()) {
    const producer = uniqueProducer(value);
    if (producer) forced.add(producer);
  }
  const placed = ops.filter((op) => !isIndeterminate(op) || forced.has(op));
  const graph: Graph = {
    nodes: [null, ...placed], leaves: [{ kind: 'unchanged' }, ...placed.map((op) => leavesOf(op, forced.has(op)))],
    values: [], from: [], to: [], reasons: [], edgeSet: new Set(),
  };
  const nodeOf = new Map<Operation, number>(placed.map((op, index) => [op, index + 1]));
  addProcessEdges(graph, ops, nodeOf);
  for (const [value, observers] of observed) {
    const producer = uniqueProducer(value);
    if (producer === undefined) continue;
    const producerNode = producer === null ? INIT : nodeOf.get(producer) ?? INIT;
    const observerNodes = observers.map((op) => nodeOf.get(op) ?? INIT);
    graph.values.push({ value, producer: producerNode, observers: observerNodes });
    for (const node of observerNodes) addEdge(graph, producerNode, node, { kind: 'observes', value });
  }
  return graph;
}

/** Every operation that may leave each string value in the register (appends aside). */
function producersByValue(ops: Operation[]): Map<string, Operation[]> {
  const producers = new Map<string, Operation[]>();
  for (const op of ops) {
    const value = op.input.f === 'write' ? op.input.value
      : op.input.f === 'cas' && !(op.output.kind === 'done' && op.output.result === false) ? op.input.value : undefined;
    if (value === undefined) continue;
    const list = producers.get(value);
    if (list) list.push(op);
    else producers.set(value, [op]);
  }
  return producers;
}

/** The value a determinate operation needs in the register just before it, if one. */
function observedValue(op: Operation): RegisterValue | undefined {
  if (op.output.kind === 'read') return op.output.value;
  if (op.output.kind !== 'done') return undefined;
  if (op.input.f === 'cas' && op.output.result === true) return op.input.expected;
  if ((op.input.f === 'delete' || op.input.f === 'append') && op.output.result === false) return null;
  return undefined;
}

/** What a placed operation leaves in the register; `forced` marks an indeterminate one that must take effect. */
function leavesOf(op: Operation, forced: boolean): Leaves {
  const result = op.output.kind === 'done' ? op.output.result : undefined;
  switch (op.input.f) {
    case 'read': return { kind: 'unchanged' };
    case 'write': return { kind: 'value', value: op.input.value };
    case 'cas': return result === true || forced ? { kind: 'value', value: op.input.value } : { kind: 'unchanged' };
    case 'delete': return { kind: 'absent' };
    case 'append':
      if (result === true) return { kind: 'appended' };
      return result === false ? { kind: 'absent' } : { kind: 'absent-or-appended' };
    default: {
      const unreachable: never = op.input;
      return unreachable;
    }
  }
}

/** Whether the register cannot hold unique `value` right after an operation that leaves `leaves`. */
function clobbers(leaves: Leaves, value: RegisterValue): boolean {
  switch (leaves.kind) {
    case 'value': return leaves.value !== value;
    case 'absent':
    case 'absent-or-appended': return value !== null;
    case 'appended': return true;
    case 'unchanged': return false;
    default: {
      const unreachable: never = leaves;
      return unreachable;
    }
  }
}

/** Consecutive placed operations of a process (or client connection: see orderQueues), INIT first. */
function addProcessEdges(graph: Graph, ops: readonly Operation[], nodeOf: Map<Operation, number>): void {
  for (const queue of orderQueues(ops)) {
    let previous = INIT;
    for (const op of queue) {
      const node = nodeOf.get(op);
      if (node === undefined) continue; // not placed: may not have taken effect
      addEdge(graph, previous, node, previous === INIT ? { kind: 'initial' } : { kind: 'process' });
      previous = node;
    }
  }
}

function addEdge(graph: Graph, from: number, to: number, reason: EdgeReason): boolean {
  const id = from * graph.nodes.length + to;
  if (graph.edgeSet.has(id)) return false;
  graph.edgeSet.add(id);
  graph.from.push(from);
  graph.to.push(to);
  graph.reasons.push(reason);
  return true;
}

/** 32-bit words in a reachability row of `nodes` bits. */
function rowWords(nodes: number): number {
  return (nodes + 31) >>> 5;
}

function has(reach: Uint32Array, words: number, row: number, node: number): boolean {
  return (wordAt(reach, row * words + (node >>> 5)) & (1 << (node & 31))) !== 0;
}

/**
 * Rules 3a and 3b over every unique value and clobberer; returns how many edges were added (0 once
 * past `deadlineMs`: the prover then gives up).
 */
function addDerivedEdges(graph: Graph, reach: Uint32Array, words: number, deadlineMs: number): number {
  let added = 0;
  const { nodes, leaves } = graph;
  for (const [index, { value, producer, observers }] of graph.values.entries()) {
    if (index % VALUES_PER_CLOCK_LOOK === 0 && performance.now() > deadlineMs) return 0;
    for (let node = 1; node < nodes.length; node++) {
      if (node === producer || !clobbers(itemAt(leaves, node), value)) continue;
      if (!has(reach, words, node, producer)) {
        const observer = observers.find((other) => other !== node && has(reach, words, node, other));
        if (observer !== undefined) {
          const reason: EdgeReason = { kind: 'clobbers-before', value, observer: itemAt(nodes, observer) as Operation };
          if (addEdge(graph, node, producer, reason)) added++;
        }
      }
      if (!has(reach, words, producer, node)) continue;
      for (const observer of observers) {
        if (observer === node || has(reach, words, observer, node)) continue;
        if (addEdge(graph, observer, node, { kind: 'clobbers-after', value, producer: itemAt(nodes, producer) })) added++;
      }
    }
  }
  return added;
}

/** Reachability bitsets (row per node, excluding itself unless on a cycle), or `null` on a cycle. */
function computeReach(graph: Graph, words: number): Uint32Array | null {
  const count = graph.nodes.length;
  const successors = successorsOfEdges(count, graph.from, graph.to);
  const order = topologicalOrder(successors);
  if (order === null) return null;
  const reach = new Uint32Array(count * words);
  for (let index = order.length - 1; index >= 0; index--) {
    const node = itemAt(order, index);
    const row = node * words;
    for (const next of itemAt(successors, node)) {
      const nextRow = next * words;
      for (let word = 0; word < words; word++) reach[row + word] = wordAt(reach, row + word) | wordAt(reach, nextRow + word);
      reach[row + (next >>> 5)] = wordAt(reach, row + (next >>> 5)) | (1 << (next & 31));
    }
  }
  return reach;
}

/** A shortest cycle of the graph (which has one), as steps: each node's op and its edge's reason. */
function cycleSteps(graph: Graph): CycleStep[] {
  const count = graph.nodes.length;
  const cycle = findCycle(successorsOfEdges(count, graph.from, graph.to));
  if (cycle === null) throw new Error('cycleSteps: the graph has no cycle');
  // One edge per ordered pair of nodes (addEdge): find each step's by its pair.
  const edgeOf = new Map<number, number>(graph.from.map((from, edge) => [from * count + itemAt(graph.to, edge), edge]));
  return cycle.map((node, index) => {
    const next = itemAt(cycle, (index + 1) % cycle.length);
    const edge = edgeOf.get(node * count + next);
    if (edge === undefined) throw new Error('cycleSteps: a cycle step has no edge');
    return { op: itemAt(graph.nodes, node), reason: itemAt(graph.reasons, edge) };
  });
}
