/**
 * The model replica: what memcached does with a store effect that reached it (the real Replica's
 * semantics with tombstones on, on a node's Map of entries), checked on the spot: a local write
 * must carry a version greater than the one its replica holds (last writer wins relies on it).
 * It also records every accepted write, the ground truth the final checks judge by (checks.ts).
 */

import type { KeyedEntry } from '../../../src/consistency/types.ts';
import { applyToEntry, isLive, purgeRemoves } from '../../../src/store/apply.ts';
import { mergeEntries, plainEntry } from '../../../src/store/counter.ts';
import { withoutValue } from '../../../src/store/replica-records.ts';
import type { Entry, Op } from '../../../src/store/types.ts';
import type { SimNode } from './node.ts';
import type { SimWorld } from './world.ts';

const TOMBSTONE_VALUE = Buffer.alloc(0);

const tombstone = (cas: bigint): Entry => ({ value: TOMBSTONE_VALUE, flags: 0, expiresAtMs: 0, cas, tombstone: true });

const copyEntry = (entry: Entry): Entry => ({ ...entry, value: Buffer.from(entry.value) });

export class ReplicaModel {
  /** key → version → the entry an accepted write produced. */
  readonly accepted = new Map<string, Map<bigint, Entry>>();

  constructor(private readonly world: SimWorld) {}

  /** `versionsOnly`: each entry without its value, as the real Replica reads it (store/replica.ts, FetchOptions). */
  fetch(node: SimNode, token: number, keys: string[] | null, versionsOnly = false): void {
    const wanted = keys ?? [...node.replica.keys()];
    const entries: KeyedEntry[] = [];
    for (const key of new Set(wanted)) {
      const entry = node.replica.get(key);
      if (entry !== undefined) entries.push([key, versionsOnly ? withoutValue(copyEntry(entry)) : copyEntry(entry)]);
    }
    this.world.controller.local(node, () => ({ kind: 'fetched', nowMs: this.world.nodeNow(node), token, entries }));
  }

  /**
   * A `paged` fetch, as the real Replica reads page by page: the keys (every key: those held at
   * `listAtMs`, once what was issued before took effect) are each read at a moment of their own
   * within 40 ms, after what was issued on that key before that moment; the answer, in key order,
   * comes once every one is read.
   */
  fetchPaged(node: SimNode, token: number, keys: string[] | null, listAtMs: number): void {
    const world = this.world;
    const incarnation = node.incarnation;
    world.at(listAtMs, () => {
      const wanted = [...new Set(keys ?? node.replica.keys())].sort();
      const found = new Map<string, Entry>();
      let left = wanted.length;
      const answer = (): void => {
        const entries = wanted.flatMap((key): KeyedEntry[] => {
          const entry = found.get(key);
          return entry === undefined ? [] : [[key, entry]];
        });
        world.controller.local(node, () => ({ kind: 'fetched', nowMs: world.nodeNow(node), token, entries }));
      };
      if (left === 0) return answer();
      for (const key of wanted) {
        const read = (): void => {
          if (node.incarnation !== incarnation) return;
          const dueMs = Math.max(node.barrierDueMs, node.keyDueMs.get(key) ?? 0);
          if (dueMs > world.nowMs) return world.at(dueMs, read);
          const entry = node.replica.get(key);
          if (entry !== undefined) found.set(key, copyEntry(entry));
          left -= 1;
          if (left === 0) answer();
        };
        world.at(world.nowMs + world.between(0, 40), read);
      }
    });
  }

  merge(node: SimNode, key: string, entry: Entry, joinCas: bigint | undefined): void {
    const current = node.replica.get(key);
    if (current !== undefined && joinCas !== undefined) {
      const merged = mergeEntries(current, entry, joinCas);
      if (merged !== current) node.replica.set(key, copyEntry(merged));
      return;
    }
    if (current === undefined || current.cas < entry.cas) node.replica.set(key, copyEntry(entry));
  }

  purge(node: SimNode, tombstones: Array<[string, bigint]>): void {
    for (const [key, cas] of tombstones) {
      const entry = node.replica.get(key);
      if (entry !== undefined && purgeRemoves(entry, cas)) {
        node.replica.delete(key);
        this.world.stats.purged += 1;
      }
    }
  }

  /** The model replica's apply (the real Replica's semantics with tombstones on). */
  apply(node: SimNode, op: Op, cas: bigint, nowMs: number, counterNode: number | undefined): void {
    switch (op.kind) {
      case 'store':
      case 'arith':
      case 'delete':
      case 'touch': {
        const current = this.checkVersion(node, op.key, cas);
        const { write, reply } = applyToEntry(current, op, { cas, nowMs, counterNode });
        if (op.kind === 'arith' && reply.kind === 'number') this.world.stats.incremented += 1;
        if (write !== undefined) this.write(node, op.key, write ?? tombstone(cas));
        break;
      }
      case 'gat':
        for (const key of new Set(op.keys)) {
          const current = this.checkVersion(node, key, cas);
          if (isLive(current, nowMs)) this.write(node, key, { ...plainEntry(current), expiresAtMs: op.expiresAtMs, cas });
        }
        break;
      case 'flush_all':
        this.flushAll(node, op.delayMs, cas, nowMs);
        break;
      case 'get':
        break;
      default: {
        const unreachable: never = op;
        this.world.fail(`unknown op ${JSON.stringify(unreachable)}`);
      }
    }
  }

  private flushAll(node: SimNode, delayMs: number, cas: bigint, nowMs: number): void {
    for (const key of [...node.replica.keys()]) {
      const entry = this.checkVersion(node, key, cas);
      if (entry === undefined) continue;
      if (delayMs <= 0) {
        if (entry.tombstone !== true) this.write(node, key, tombstone(cas));
        continue;
      }
      const deadlineMs = nowMs + delayMs;
      const expiresLater = entry.expiresAtMs === 0 || entry.expiresAtMs > deadlineMs;
      if (isLive(entry, nowMs) && expiresLater) this.write(node, key, { ...plainEntry(entry), expiresAtMs: deadlineMs, cas });
    }
  }

  /** A local write must carry a version greater than the one its replica holds. */
  private checkVersion(node: SimNode, key: string, cas: bigint): Entry | undefined {
    const current = node.replica.get(key);
    if (current !== undefined && current.cas >= cas) {
      this.world.fail(`${node.id}: write of ${key} at version ${cas} over version ${current.cas}`);
    }
    return current;
  }

  private write(node: SimNode, key: string, entry: Entry): void {
    node.replica.set(key, copyEntry(entry));
    let versions = this.accepted.get(key);
    if (versions === undefined) {
      versions = new Map();
      this.accepted.set(key, versions);
    }
    if (versions.has(entry.cas)) this.world.fail(`version ${entry.cas} of ${key} written twice`);
    versions.set(entry.cas, copyEntry(entry));
  }
}
