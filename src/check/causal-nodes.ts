/**
 * The causal checker's operations (./causal.ts): each operation of a history as what it wrote and
 * read, with the values appends wrote inferred from the values read, and the sessions that take no
 * part in causality set aside. Pure functions of the history; the graph and the bad patterns are
 * ./causal.ts's.
 */

import { itemAt } from '../runtime/item-at.ts';
import { SuffixIndex } from './suffix-index.ts';
import { isIndeterminate, type History, type Operation, type RegisterValue } from './history.ts';

/** One operation as the checker sees it. */
export interface CausalNode {
  op: Operation;
  /** The value this operation wrote (`undefined`: none; `null`: absent). */
  writes?: RegisterValue;
  /** The value it read (`undefined`: nothing it can be held to). */
  reads?: RegisterValue;
}

/** The history's operations as nodes, appends inferred, and the writes nobody can observe set aside. */
export function causalNodes(history: History): { nodes: CausalNode[]; setAside: number } {
  const all = history.operations.map(toNode).filter((node) => node !== null);
  inferAppends(all);
  return setAsideUnobserved(all);
}

/**
 * Sets aside every session (a process, with every connection and process it shares one with) whose
 * operations are all plain writes or deletes of keys no operation anywhere reads, as a bulk
 * loader's are. The verdict cannot change: such a write reads nothing and nothing reads from it
 * (no RF edge in or out), it shares no session with what is kept (no session edge to lose or add),
 * and every pattern needs a read of its key.
 */
function setAsideUnobserved(nodes: CausalNode[]): { nodes: CausalNode[]; setAside: number } {
  const observed = new Set<string>();
  for (const node of nodes) if (!isBlindWrite(node)) observed.add(node.op.key);
  // Sessions joined by the operations they share: a union-find over session names.
  const parent = new Map<string, string>();
  const root = (name: string): string => {
    let at = name;
    for (let up = parent.get(at); up !== undefined && up !== at; up = parent.get(at)) at = up;
    parent.set(name, at);
    return at;
  };
  const sessionsOf = (node: CausalNode): string[] => [`p${node.op.process}`, ...(node.op.connection === undefined ? [] : [`c${node.op.connection}`])];
  for (const node of nodes) {
    const [first, ...rest] = sessionsOf(node);
    if (first === undefined) continue;
    if (!parent.has(first)) parent.set(first, first);
    for (const name of rest) {
      if (!parent.has(name)) parent.set(name, name);
      const a = root(first);
      const b = root(name);
      if (a !== b) parent.set(b, a);
    }
  }
  const keep = new Set<string>();
  for (const node of nodes) if (!isBlindWrite(node) || observed.has(node.op.key)) keep.add(root(`p${node.op.process}`));
  const kept = nodes.filter((node) => keep.has(root(`p${node.op.process}`)));
  return { nodes: kept, setAside: nodes.length - kept.length };
}

/** A plain write or delete: it reads nothing, whatever its outcome. */
function isBlindWrite(node: CausalNode): boolean {
  return (node.op.input.f === 'write' || node.op.input.f === 'delete') && node.reads === undefined;
}

function toNode(op: Operation): CausalNode | null {
  const done = op.output.kind === 'done' ? op.output.result : undefined;
  switch (op.input.f) {
    case 'read':
      return op.output.kind === 'read' ? { op, reads: op.output.value } : null;
    case 'write':
      return { op, writes: op.input.value };
    case 'delete':
      return done === false ? { op, reads: null } : { op, writes: null };
    case 'cas':
      if (done === false) return null;
      return isIndeterminate(op) ? { op, writes: op.input.value } : { op, reads: op.input.expected, writes: op.input.value };
    case 'append':
      return done === false ? null : { op };
    default: {
      const unreachable: never = op.input;
      throw new Error(`unknown operation ${JSON.stringify(unreachable)}`);
    }
  }
}

/**
 * Gives appends the values they wrote and read, from the values read (see the file header): a
 * value no write or cas wrote, ending with the suffix of exactly one append of its key.
 */
function inferAppends(nodes: CausalNode[]): void {
  const appends = new Map<string, SuffixIndex<CausalNode>>(); // by key
  const written = new Set<string>();
  for (const node of nodes) {
    if (node.op.input.f === 'append') {
      let index = appends.get(node.op.key);
      if (index === undefined) appends.set(node.op.key, (index = new SuffixIndex()));
      index.add(node.op.input.value, node);
    } else if (node.writes !== undefined) written.add(`${node.op.key}\0${node.writes}`);
  }
  const pending = nodes.flatMap((node) => (typeof node.reads === 'string' ? [{ key: node.op.key, value: node.reads }] : []));
  for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
    const { key, value } = next;
    if (written.has(`${key}\0${value}`)) continue;
    const match = onlyAppendEnding(appends, key, value);
    if (match === null || match.writes !== undefined || match.op.input.f !== 'append') continue;
    const prefix = value.slice(0, value.length - match.op.input.value.length);
    match.writes = value;
    match.reads = prefix;
    written.add(`${key}\0${value}`);
    pending.push({ key, value: prefix });
  }
}

/** The one append of `key` whose suffix `value` ends with, and is longer than; null if none or several. */
function onlyAppendEnding(appends: Map<string, SuffixIndex<CausalNode>>, key: string, value: string): CausalNode | null {
  let match: CausalNode | null = null;
  for (const nodes of appends.get(key)?.ending(value, true) ?? []) {
    if (match !== null || nodes.length > 1) return null;
    match = itemAt(nodes, 0);
  }
  return match;
}
