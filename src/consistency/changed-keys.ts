/**
 * The keys a store effect changes on the replica: what the controller counts as waiting for the
 * disk (../controller/held-keys.ts), what a causal snapshot's cut reads again
 * (./causal/snapshot-cuts.ts), and what the simulators order effects by.
 */

import type { Effect } from './types.ts';
import { opKeys } from '../store/types.ts';

/** The keys an effect changes on the replica (null: every key), or undefined if it changes none. */
export function changedKeys(effect: Effect<unknown>): readonly string[] | null | undefined {
  switch (effect.kind) {
    case 'apply':
      return opKeys(effect.op);
    case 'put':
      return effect.entries.map(([key]) => key);
    case 'purge':
      return effect.tombstones.map(([key]) => key);
    case 'reset':
      return null;
    default:
      return undefined;
  }
}

/**
 * The keys a store effect waiting for the disk holds back from reads that run ahead of it
 * (`keysOnly`, ../controller/held-keys.ts): those it changes, but every key for a `put`, one piece
 * of a replica being rebuilt: a read of a key it does not hold may find another piece still on
 * its way, and the replica is as of the rebuild's index only once all of them are in.
 */
export function keysHeldBy(effect: Effect<unknown>): readonly string[] | null | undefined {
  return effect.kind === 'put' ? null : changedKeys(effect);
}
