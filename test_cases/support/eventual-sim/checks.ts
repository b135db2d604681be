/**
 * The end-of-run checks: whether the replicas read alike (live entries only) and, per key, as the
 * merge of every accepted write (without emptied replicas: last writer wins, counters joined) or
 * as some accepted write (with them, a replica may have lost the greatest); and how many dead
 * entries the machines still hold. The checks made at every step live where the step is
 * (controller.ts, replica.ts, network.ts).
 */

import { isLive } from '../../../src/store/apply.ts';
import { mergeEntries } from '../../../src/store/counter.ts';
import type { Entry } from '../../../src/store/types.ts';
import { itemAt } from '../../../src/runtime/item-at.ts';
import type { SimNode } from './node.ts';
import type { SimWorld } from './world.ts';

/** A version above every one a run makes: the checks merge for content only. */
const JOIN_CAS_CHECK = (1n << 64n) - 1n;

export class Checks {
  constructor(private readonly world: SimWorld) {}

  /** Why the replicas have not converged to the expected state, or null if they have. */
  divergence(): string | null {
    const world = this.world;
    const views = world.nodes.map((node) => this.view(node));
    for (let i = 1; i < views.length; i += 1) {
      const difference = compareViews(itemAt(views, 0), itemAt(views, i));
      if (difference !== null) return `${itemAt(world.nodes, 0).id} vs ${itemAt(world.nodes, i).id}: ${difference.text} [${this.explain(difference.key)}]`;
    }
    return world.config.backendResets ? this.someAcceptedWrite(itemAt(views, 0)) : this.greatestWrite(itemAt(views, 0));
  }

  private greatestWrite(view: Map<string, string>): string | null {
    for (const [key, versions] of this.world.replicas.accepted) {
      // The merge of every accepted write: the greatest one, but for counters (src/store/counter.ts).
      let greatest: Entry | undefined;
      const ordered = [...versions.values()].sort((left, right) => (left.cas < right.cas ? -1 : 1));
      for (const entry of ordered) greatest = greatest === undefined ? entry : mergeEntries(greatest, entry, JOIN_CAS_CHECK);
      const expected = greatest !== undefined && isLive(greatest, this.world.nowMs) ? describeContent(greatest) : undefined;
      const read = view.get(key);
      const readContent = read?.slice(0, read.lastIndexOf('@'));
      if (readContent !== expected) return `${key} reads ${read}, the merge of every accepted write is ${expected}`;
    }
    return null;
  }

  private someAcceptedWrite(view: Map<string, string>): string | null {
    for (const [key, read] of view) {
      const versions = this.world.replicas.accepted.get(key);
      const written = [...(versions?.values() ?? [])];
      // An incr/decr result merges with others into a state no single write produced.
      if (written.some((entry) => entry.counter !== undefined)) continue;
      const matches = written.some((entry) => describe(entry) === read);
      if (!matches) return `${key} reads ${read}, which no accepted write produced`;
    }
    return null;
  }

  /** What each node's replica and index hold for a key, for failure messages. */
  private explain(key: string): string {
    return this.world.nodes
      .map((node) => {
        const stored = node.replica.get(key);
        const indexed = node.machine?.indexEntry(key);
        const replica = stored === undefined ? 'none' : `${stored.tombstone === true ? 'tombstone' : 'value'}@${stored.cas}`;
        const index = indexed === undefined ? 'none' : `${indexed.tombstone ? 'tombstone' : 'value'}@${indexed.version} held by ${indexed.heldByMask}`;
        return `${node.id}: replica ${replica}, index ${index}`;
      })
      .join('; ');
  }

  private view(node: SimNode): Map<string, string> {
    const view = new Map<string, string>();
    for (const [key, entry] of node.replica) if (isLive(entry, this.world.nowMs)) view.set(key, describe(entry));
    return view;
  }

  /** Dead entries still held by some machine's index (tombstones, long-expired entries). */
  uncollected(): number {
    let total = 0;
    for (const node of this.world.nodes) total += node.machine?.counters().graveyard ?? 0;
    return total;
  }
}

function describe(entry: Entry): string {
  return `${describeContent(entry)}@${entry.cas}`;
}

function describeContent(entry: Entry): string {
  return `${entry.value.toString('latin1')}/${entry.flags}/${entry.expiresAtMs}`;
}

function compareViews(left: Map<string, string>, right: Map<string, string>): { key: string; text: string } | null {
  for (const key of new Set([...left.keys(), ...right.keys()])) {
    if (left.get(key) !== right.get(key)) return { key, text: `${key}: ${left.get(key)} vs ${right.get(key)}` };
  }
  return null;
}
