/**
 * The reference the checkers are tested against: try every order of a small history, one
 * operation at a time. `mustFollow(later, earlier)` says `later` may not be placed while `earlier`
 * is unplaced (real time for linearizability, process order for sequential). Indeterminate
 * operations may be left out. Exponential: for histories of a few operations only.
 */

import type { Operation } from '../../src/check/history.ts';
import { step } from '../../src/check/model.ts';

export type MustFollow = (later: Operation, earlier: Operation) => boolean;

/** Real-time order: `earlier` returned before `later` was called. */
export const realTime: MustFollow = (later, earlier) => earlier.return < later.call;

/** Process order: the same process issued `earlier` first. */
export const processOrder: MustFollow = (later, earlier) => earlier.process === later.process && earlier.id < later.id;

/** Whether some order allowed by `mustFollow` explains every output. */
export function bruteForce(ops: readonly Operation[], mustFollow: MustFollow): boolean {
  const placed = new Set<Operation>();
  const search = (state: string | null): boolean => {
    if (ops.every((op) => placed.has(op) || op.output.kind === 'indeterminate')) return true;
    for (const op of ops) {
      if (placed.has(op)) continue;
      if (ops.some((other) => !placed.has(other) && other !== op && mustFollow(op, other))) continue;
      const result = step(state, op.input, op.output);
      if (!result.ok) continue;
      placed.add(op);
      const found = search(result.state);
      placed.delete(op);
      if (found) return true;
    }
    return false;
  };
  return search(null);
}
