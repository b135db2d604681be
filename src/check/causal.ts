/**
 * Causal-consistency checker for register histories: causal convergence (CCv, ≈ causal+), by the
 * bad patterns of Bouajjani, Enea, Guerraoui and Hamza, "On verifying causal consistency" (POPL
 * 2017). Whole history at once: causality crosses keys.
 *
 * Intuition: with unique written values a read names the write it read from (RF). The causal
 * order CO is (session order ∪ RF)+. A history is CCv exactly when none of these occurs:
 * CyclicCO; ThinAirRead (a value nobody wrote); WriteCOInitRead (a read of the initial "absent"
 * after, in CO, a write of its key); WriteCORead (w1 →CO w2 →CO r, r reading w1, w2 writing its
 * key); CyclicCF (CO ∪ CF cyclic, w1 →CF w2 when w1 →CO a read of w2 on its key: one total
 * arbitration order must explain every read, as mckv's last-writer-wins promises).
 *
 * Mapping: a write, a delete that deleted (writes "absent"), a cas that returned true (reads
 * `expected`, writes the new value, atomically) are operations; a delete that found nothing reads
 * "absent" and writes nothing (memcached's NOT_FOUND changes no state, and mckv replicates none);
 * a cas that returned false reads nothing we can name. Indeterminate writes may have happened:
 * they can be read from and, unread, order nothing after them. Sessions are processes, and connections when the history names them.
 * Values written more than once, or reads of "absent" where a delete could explain them, give
 * no RF edge, and a pattern is reported only if every possible writer shows it: never a false
 * alarm. An append that succeeded wrote `prefix + suffix`: when a value read (or a prefix so
 * found) ends with the suffix of exactly one append of its key, that append wrote it and read
 * the prefix (unique suffixes, as mckv's fault runner writes, make every step unique). Sessions
 * that only write keys no operation reads (a bulk loader's) are set aside first: they cannot
 * change the verdict (see ./causal-nodes.ts), and the operation limit counts what is left.
 */

import { totalmem } from 'node:os';
import { itemAt, wordAt } from '../runtime/item-at.ts';
import { causalNodes, type CausalNode } from './causal-nodes.ts';
import { findCycle, successorsOfPredecessors, topologicalOrder, type Successors } from './digraph.ts';
import { describeOperation, isIndeterminate, show, type CheckResult, type History, type Operation, type RegisterValue } from './history.ts';

export interface CausalCheckOptions {
  /** Most operations checked, once writes nobody reads are set aside; more is `unknown`. */
  operationsMax?: number;
  /**
   * Most entries of CO's clock matrix (operations × session chains); more is `unknown`. Chains are
   * processes, cut after each call that got no answer. Default: CLOCK_BYTES_MAX's worth.
   */
  clockEntriesMax?: number;
}

const OPERATIONS_MAX = 2_000_000;
const GiB = 1024 * 1024 * 1024;
/**
 * The clocks may take an eighth of this machine's memory, between 512 MiB and 4 GiB: 2 bytes an
 * entry while no chain is longer than CLOCK_U16_PLACES, else 4. Sessions end at each call left
 * unanswered, and every fault leaves some: a 20 s run of 8 clients × 4 in flight under every fault
 * recorded 92,630 operations in 3,576 sessions, most ending in an unanswered call nobody read,
 * which takes no column (see CausalGraph.dropSinksFromChains); a 240 s one, 1,059,434 operations in
 * 464 chains (958 MB of clocks, 4 GB in all, checked in 50 s).
 */
const CLOCK_BYTES_MAX = Math.min(4 * GiB, Math.max(GiB / 2, Math.floor(totalmem() / 8)));
/** The most operations a chain may hold for 2-byte clock entries (a place is stored plus one). */
const CLOCK_U16_PLACES = 0xffff - 1;
/** The initial state of every key: a writer of "absent" before everything. */
const INIT = -1;

type Pattern = { name: string; ops: Operation[]; key: string; why: string };

/** Judge a history for causal convergence (see the file header). */
export function checkCausal(history: History, options: CausalCheckOptions = {}): CheckResult {
  const { nodes, setAside } = causalNodes(history);
  const note = setAside === 0 ? undefined : `${setAside} writes set aside: sessions that only write keys no operation reads take no part in causality`;
  if (nodes.length > (options.operationsMax ?? OPERATIONS_MAX)) {
    const detail = `${nodes.length} operations: more than the causal checker takes (${options.operationsMax ?? OPERATIONS_MAX})`;
    return { verdict: 'unknown', detail: note === undefined ? detail : `${detail}; ${note}` };
  }
  const graph = new CausalGraph(nodes);
  const clockEntriesMax = options.clockEntriesMax ?? CLOCK_BYTES_MAX / graph.clockEntryBytes;
  if (graph.clockEntries > clockEntriesMax) {
    const detail = `${nodes.length} operations in ${graph.chainCount} session chains: more than the causal checker takes (${clockEntriesMax} clock entries, ${options.clockEntriesMax === undefined ? 'an eighth of this machine\'s memory' : 'as asked'})`;
    return { verdict: 'unknown', detail: note === undefined ? detail : `${detail}; ${note}` };
  }
  graph.computeOrder();
  const found = graph.thinAirRead() ?? graph.cyclicCo() ?? graph.readPatterns() ?? graph.cyclicCf();
  if (found === null) return note === undefined ? { verdict: 'ok' } : { verdict: 'ok', detail: note };
  const detail = [`${found.name}: ${found.why}`, ...found.ops.map((op) => `  ${describeOperation(op)}`), ...(note === undefined ? [] : [note])];
  return { verdict: 'violation', key: found.key, detail: detail.join('\n') };
}

/**
 * Nodes, their session and RF edges, and CO as a vector clock per node over the session chains:
 * each chain is totally ordered in CO, so a →CO b exactly when b's clock reaches a's place in a's
 * chain (n × chains entries, where a bit matrix would take n² bits).
 */
class CausalGraph {
  private readonly nodes: CausalNode[];
  /** key → value → indexes of the nodes that wrote it (INIT for the initial absent). */
  private readonly writers = new Map<string, Map<RegisterValue, number[]>>();
  /** key → every node that wrote it (built on first use, once `writers` is complete). */
  private readonly keyWriters = new Map<string, number[]>();
  /**
   * Each process's operations, cut after any call that got no answer (a parsed history's process
   * takes a new id after one, so only a history built otherwise is cut): within one, each operation
   * precedes the next in session order, hence in CO. Every node something follows in CO is in
   * exactly one (see dropSinksFromChains).
   */
  private chains: number[][] = [];
  /** key → its writers, chain by chain, each in its chain's order. */
  private readonly keyChains = new Map<string, number[][]>();
  private readonly predecessors: number[][];
  /** Each node's chain, and its place in it. */
  private readonly chainOf: Int32Array;
  private readonly placeOf: Int32Array;
  /**
   * CO as clocks: row `b` (`chains.length` entries from `b * chains.length`) holds, per chain, one
   * more than the last place in it of a node that precedes b in CO (0: none). Two bytes an entry
   * while every chain is short enough (see clockEntryBytes).
   */
  private clocks: Uint16Array | Int32Array = new Int32Array(0);
  private order: number[] | null = null;
  /** Bytes per clock entry: 2 while no chain is longer than CLOCK_U16_PLACES, else 4. */
  readonly clockEntryBytes: 2 | 4;

  constructor(nodes: CausalNode[]) {
    this.nodes = nodes;
    this.predecessors = nodes.map(() => []);
    nodes.forEach((node, index) => {
      if (node.writes !== undefined) this.writersOf(node.op.key, node.writes).push(index);
    });
    this.addSessionEdges();
    nodes.forEach((_node, index) => {
      const from = this.readFrom(index);
      if (from !== null && from !== INIT && from !== index) itemAt(this.predecessors, index).push(from);
    });
    this.dropSinksFromChains();
    this.clockEntryBytes = this.chains.every((chain) => chain.length <= CLOCK_U16_PLACES) ? 2 : 4;
    this.addKeyChains();
    this.chainOf = new Int32Array(nodes.length).fill(-1);
    this.placeOf = new Int32Array(nodes.length);
    this.chains.forEach((chain, chainIndex) => {
      chain.forEach((index, place) => {
        this.chainOf[index] = chainIndex;
        this.placeOf[index] = place;
      });
    });
  }

  /**
   * A node nothing follows in CO (an unread call that got no answer, a session's last unread
   * write) precedes nothing, so it needs no place in a chain, and a chain of only such nodes no
   * column of clocks: runs under faults end thousands of sessions with one unanswered call.
   * Only a chain's last node can be one (each other has its session successor).
   */
  private dropSinksFromChains(): void {
    const followed = new Uint8Array(this.nodes.length);
    for (const list of this.predecessors) for (const predecessor of list) followed[predecessor] = 1;
    this.chains = this.chains.map((chain) => chain.filter((index) => followed[index] === 1)).filter((chain) => chain.length > 0);
  }

  /** Session chains (see `chains`). */
  get chainCount(): number {
    return this.chains.length;
  }

  /** The clock matrix's size once computed (`computeOrder`). */
  get clockEntries(): number {
    return this.nodes.length * this.chains.length;
  }

  /** Orders the nodes and, unless CO has a cycle, computes their clocks. */
  computeOrder(): void {
    this.order = this.topologicalOrder();
    if (this.order !== null) this.computeClocks(this.order);
  }

  thinAirRead(): Pattern | null {
    for (const [index, node] of this.nodes.entries()) {
      if (node.reads === undefined || node.reads === null) continue;
      if (this.candidates(index).next().done === true) {
        return { name: 'ThinAirRead', ops: [node.op], key: node.op.key, why: `${show(node.reads)} was never written to this key` };
      }
    }
    return null;
  }

  cyclicCo(): Pattern | null {
    if (this.order !== null) return null;
    return this.cyclePattern('CyclicCO', cycleOf(successorsOfPredecessors(this.predecessors)), 'session order and read-from make a cycle');
  }

  /** WriteCOInitRead and WriteCORead: a read whose every possible writer was overwritten before it in CO. */
  readPatterns(): Pattern | null {
    for (const [index, node] of this.nodes.entries()) {
      if (node.reads === undefined) continue;
      // Latest first: the likeliest not to be overwritten, which clears the read (an "absent" may
      // have thousands of deletes to try). The first candidate is the one a pattern names.
      let first: { writer: number; overwriter: number } | null = null;
      let cleared = false;
      for (const writer of this.candidates(index)) {
        if (writer !== INIT && this.before(index, writer)) continue; // written after the read
        const overwriter = this.overwrittenBefore(writer, index);
        if (overwriter === null) {
          cleared = true;
          break;
        }
        first = { writer, overwriter };
      }
      if (cleared || first === null) continue;
      const { writer, overwriter } = first;
      const ops = [...(writer === INIT ? [] : [this.node(writer).op]), this.node(overwriter).op, node.op];
      const name = writer === INIT ? 'WriteCOInitRead' : 'WriteCORead';
      return { name, ops, key: node.op.key, why: `the read returns ${show(node.reads)}, overwritten before it in causal order` };
    }
    return null;
  }

  /**
   * CyclicCF: no arbitration order of each key's writes agrees with CO and every read. Each read r
   * of w adds w' →CF w for the writes w' of its key before r in CO; only the last such write of
   * each chain (see `chains`) gets its edge, since every earlier one precedes it in CO already: the
   * graph reaches what it did, with a few edges per read instead of one per write before it.
   */
  cyclicCf(): Pattern | null {
    const edges = this.predecessors.map((list) => [...list]);
    for (const [index, node] of this.nodes.entries()) {
      if (node.reads === undefined) continue;
      const from = this.readFrom(index);
      if (from === null || from === INIT) continue;
      for (const chain of this.chainsOfKey(node.op.key)) {
        const last = this.lastBefore(chain, index);
        // Up to `from` itself: every earlier write of the chain precedes it in CO, no edge needed.
        if (last !== null && last !== from) itemAt(edges, from).push(last);
      }
    }
    const successors = successorsOfPredecessors(edges);
    if (topologicalOrder(successors) !== null) return null;
    return this.cyclePattern('CyclicCF', cycleOf(successors), 'no single order of the writes explains every read causally after them');
  }

  /** A pattern made of a cycle's operations (a cycle has at least one node), named by its first one's key. */
  private cyclePattern(name: string, cycle: number[], why: string): Pattern {
    const ops = cycle.map((index) => this.node(index).op);
    return { name, ops, key: itemAt(ops, 0).key, why };
  }

  private node(index: number): CausalNode {
    return itemAt(this.nodes, index);
  }

  /**
   * A write of the read's key that `writer` precedes and that precedes the read (CO), or null. Only
   * each chain's last write before the read is tried: if `writer` precedes an earlier one, it
   * precedes that one too; if that one is `writer`, nothing before it in the chain follows `writer`.
   */
  private overwrittenBefore(writer: number, read: number): number | null {
    for (const chain of this.chainsOfKey(this.node(read).op.key)) {
      const other = this.lastBefore(chain, read);
      if (other === null || other === writer) continue;
      if (writer === INIT || this.before(writer, other)) return other;
    }
    return null;
  }

  /**
   * The writers a read may have read from (of its value on its key, and INIT for absent), latest
   * first, without building a list: an "absent" may have thousands.
   */
  private *candidates(index: number): Generator<number> {
    const node = this.node(index);
    if (node.reads === undefined) return;
    const list = this.writers.get(node.op.key)?.get(node.reads) ?? [];
    for (let at = list.length - 1; at >= 0; at--) {
      const writer = itemAt(list, at);
      if (writer !== index) yield writer;
    }
    if (node.reads === null) yield INIT;
  }

  /** The one writer a read names, or null when none or several could be it. */
  private readFrom(index: number): number | null {
    let only: number | null = null;
    for (const writer of this.candidates(index)) {
      if (only !== null) return null;
      only = writer;
    }
    return only;
  }

  private writersOf(key: string, value: RegisterValue): number[] {
    let byValue = this.writers.get(key);
    if (byValue === undefined) this.writers.set(key, (byValue = new Map()));
    let list = byValue.get(value);
    if (list === undefined) byValue.set(value, (list = []));
    return list;
  }

  private writersOfKey(key: string): number[] {
    let list = this.keyWriters.get(key);
    if (list === undefined) this.keyWriters.set(key, (list = [...(this.writers.get(key)?.values() ?? [])].flat()));
    return list;
  }

  /** The writers of `key` cut into chains: in one process's order, each preceding the next in CO. */
  private chainsOfKey(key: string): number[][] {
    return this.keyChains.get(key) ?? [];
  }

  /** Every key's writer chains (`keyChains`), in one pass over the chains. */
  private addKeyChains(): void {
    for (const chain of this.chains) {
      const mine = new Map<string, number[]>();
      for (const index of chain) {
        const { writes, op } = this.node(index);
        if (writes === undefined) continue;
        const writers = mine.get(op.key);
        if (writers === undefined) mine.set(op.key, [index]);
        else writers.push(index);
      }
      for (const [written, writers] of mine) {
        const chains = this.keyChains.get(written);
        if (chains === undefined) this.keyChains.set(written, [writers]);
        else chains.push(writers);
      }
    }
  }

  /**
   * The last of `writers` (one chain's, in its order) before `read` in CO, or null: a chain's
   * members before it are those placed below read's clock entry for that chain.
   */
  private lastBefore(writers: number[], read: number): number | null {
    const reached = wordAt(this.clocks, read * this.chains.length + wordAt(this.chainOf, itemAt(writers, 0)));
    if (reached === 0) return null;
    let low = 0;
    let high = writers.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (wordAt(this.placeOf, itemAt(writers, middle)) < reached) low = middle + 1;
      else high = middle;
    }
    return low === 0 ? null : itemAt(writers, low - 1);
  }

  /** Session order: each process's operations in order, and each connection's answered ones. */
  private addSessionEdges(): void {
    const sessions = new Map<string, number[]>();
    this.nodes.forEach((node, index) => {
      const names = [`p${node.op.process}`, ...(node.op.connection === undefined ? [] : [`c${node.op.connection}`])];
      for (const name of names) {
        const list = sessions.get(name);
        if (list === undefined) sessions.set(name, [index]);
        else list.push(index);
      }
    });
    for (const [name, list] of sessions) {
      list.sort((a, b) => this.node(a).op.id - this.node(b).op.id);
      let previous: number | null = null;
      const isProcess = name.startsWith('p');
      let chain: number[] = [];
      for (const index of list) {
        // A call that got no answer may not have happened: it orders nothing after it.
        if (previous !== null && !isIndeterminate(this.node(previous).op)) {
          itemAt(this.predecessors, index).push(previous);
        } else if (isProcess && chain.length > 0) {
          this.chains.push(chain);
          chain = [];
        }
        chain.push(index);
        previous = index;
      }
      if (isProcess && chain.length > 0) this.chains.push(chain);
    }
  }

  private topologicalOrder(): number[] | null {
    return topologicalOrder(successorsOfPredecessors(this.predecessors));
  }

  private computeClocks(order: number[]): void {
    const width = this.chains.length;
    const size = this.nodes.length * width;
    const clocks = this.clockEntryBytes === 2 ? new Uint16Array(size) : new Int32Array(size);
    for (const index of order) {
      const mine = index * width;
      for (const predecessor of itemAt(this.predecessors, index)) {
        const theirs = predecessor * width;
        for (let chain = 0; chain < width; chain++) {
          const seen = wordAt(clocks, theirs + chain);
          if (seen > wordAt(clocks, mine + chain)) clocks[mine + chain] = seen;
        }
        const own = mine + wordAt(this.chainOf, predecessor);
        const reached = wordAt(this.placeOf, predecessor) + 1;
        if (reached > wordAt(clocks, own)) clocks[own] = reached;
      }
    }
    this.clocks = clocks;
  }

  /** a →CO b (INIT precedes everything): b's clock reaches a's place in a's chain. */
  private before(a: number, b: number): boolean {
    if (a === INIT) return true;
    const chain = wordAt(this.chainOf, a);
    if (chain < 0) return false; // nothing follows it (see dropSinksFromChains)
    return wordAt(this.clocks, b * this.chains.length + chain) > wordAt(this.placeOf, a);
  }
}

/** A cycle of a graph known to have one, in edge order. */
function cycleOf(successors: Successors): number[] {
  const cycle = findCycle(successors);
  if (cycle === null) throw new Error('cycleOf: the graph has no cycle');
  return cycle;
}
