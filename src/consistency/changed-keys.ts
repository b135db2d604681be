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
