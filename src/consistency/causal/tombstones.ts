/**
 * The tombstones of causal mode: those the replica holds, waiting to be stable, and those purged.
 *
 * A tombstone is purged once it is stable (every node's visible vector covers it): then no replica
 * can still hold what it deleted, and none needs it to win over an older copy. A purged (key,
 * version) is remembered for a while (../purged.ts) so that a late copy of what it deleted is not
 * merged back. A restart forgets it: so a sender whose chain to a peer waited unacknowledged does
 * not send it again while it holds a copy a tombstone here supersedes (the machine's sendNext).
 *
 * Owns: the graveyard (key → version of the tombstone the replica holds) and the purge memory.
 * Invariants: a merge of an older entry leaves a grave in place; a tombstone merged where the
 * replica may hold a newer entry is checked by a fetch; a purge takes only tombstones the stable
 * vector covers, and at most purgesPerTickMax of them.
 */

import type { KeyedEntry } from '../types.ts';
import { versionNode } from '../hlc.ts';
import { PurgedVersions } from '../purged.ts';
import type { VersionVector } from './messages.ts';
import type { CausalTuning } from './tuning.ts';

/** The tombstone fields of the mode's tuning (documented there). */
export type TombstoneLimits = Pick<CausalTuning, 'purgesPerTickMax' | 'purgedMemoryMs' | 'purgedMemoryEntriesMax'>;

/** The tombstones of one node. */
export class Tombstones {
  /** Tombstones in the replica: key → version, purged once stable. */
  private readonly graveyard = new Map<string, bigint>();
  private readonly purged: PurgedVersions;

  constructor(private readonly limits: TombstoneLimits) {
    this.purged = new PurgedVersions(limits);
  }

  /** Tombstones not yet purged. */
  get size(): number {
    return this.graveyard.size;
  }

  /**
   * Tombstones in what the replica returned. A grave newer than the entry fetched came with a merge
   * issued after the fetch: it stays.
   */
  noteFetched(entries: readonly KeyedEntry[]): void {
    for (const [key, entry] of entries) {
      const grave = this.graveyard.get(key);
      if (grave !== undefined && entry.cas < grave) continue;
      if (entry.tombstone === true) this.graveyard.set(key, entry.cas);
      else this.graveyard.delete(key);
    }
  }

  /** What of `entries` may be merged: a version older than a tombstone purged here was deleted, and would come back. */
  notPurged(entries: readonly KeyedEntry[]): KeyedEntry[] {
    return entries.filter(([key, entry]) => !this.purged.covers(key, entry.cas));
  }

  /** Whether no tombstone is held or remembered as purged: then none supersedes anything (see `supersedes`). */
  get none(): boolean {
    return this.graveyard.size === 0 && this.purged.size === 0;
  }

  /** Whether a tombstone the replica holds, or one purged here, is newer than `key` at `version`. */
  supersedes(key: string, version: bigint): boolean {
    const grave = this.graveyard.get(key);
    return (grave !== undefined && version < grave) || this.purged.covers(key, version);
  }

  /**
   * Tombstones after a merge, which keeps the greater version: an older entry leaves the tombstone
   * in place (forgotten, it would never be purged, and a queued batch could bring back what it deleted).
   * Returns the keys of tombstones recorded where no grave was: the replica may hold a newer live
   * entry there, unknown here, so the caller fetches them back (noteFetched forgets those it lost to
   * one). Left in the graveyard, such a tombstone may never be stable: its writer, restarted, rebuilds
   * its own component from a replica where the delete was overwritten.
   */
  noteMerged(entries: readonly KeyedEntry[]): string[] {
    const unsure: string[] = [];
    for (const [key, entry] of entries) {
      const grave = this.graveyard.get(key);
      if (grave !== undefined && entry.cas <= grave) continue;
      if (entry.tombstone === true) {
        if (grave === undefined) unsure.push(key);
        this.graveyard.set(key, entry.cas);
      } else this.graveyard.delete(key);
    }
    return unsure;
  }

  /** Takes the tombstones `stable` covers (at most purgesPerTickMax), remembered as purged from `nowMs`. */
  takeStable(stable: VersionVector, nowMs: number): Array<[string, bigint]> {
    const purges: Array<[string, bigint]> = [];
    for (const [key, cas] of this.graveyard) {
      if (purges.length >= this.limits.purgesPerTickMax) break;
      const node = versionNode(cas);
      const held = stable[node];
      if (held !== undefined && cas <= held) purges.push([key, cas]);
    }
    for (const [key, cas] of purges) {
      this.graveyard.delete(key);
      this.purged.remember(key, cas, nowMs);
    }
    return purges;
  }

  /** Forgets purges past the memory's bounds. */
  forgetOld(nowMs: number): void {
    this.purged.forgetOld(nowMs);
  }

  /** The replica was emptied: it holds no tombstone. What was purged stays remembered. */
  onBackendReset(): void {
    this.graveyard.clear();
  }
}
