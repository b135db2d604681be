/**
 * Eventual consistency mode: every controller serves every operation from its own replica and
 * answers at once; replicas converge by last-writer-wins on hybrid-logical-clock versions, with
 * incr/decr as per-node deltas (../store/counter.ts) and deletes as tombstones.
 *
 * Writes become `apply` effects stamped with a version; their results are read back and pushed
 * to every peer in bounded batches; anti-entropy rounds (./eventual/anti-entropy.ts) repair what
 * pushes missed. The machine and its invariants: ./eventual/machine.ts. What a user gets, command
 * by command: docs/design.md, "Eventual mode: what a client sees".
 */

import type { Machine, MachineOptions } from './types.ts';
import { EventualMachine } from './eventual/machine.ts';
import type { EventualMessage } from './eventual/messages.ts';
import type { EventualTuning } from './eventual/tuning.ts';

export type { EventualMessage, KeyVersion } from './eventual/messages.ts';
export type { EventualTuning } from './eventual/tuning.ts';
export { defaultTuning } from './eventual/tuning.ts';
export { EventualMachine } from './eventual/machine.ts';

/** The eventual-mode state machine. `tuning` overrides defaults derived from `options`. */
export function createEventual(
  options: MachineOptions,
  tuning: Partial<EventualTuning> = {},
): Machine<EventualMessage> {
  return new EventualMachine(options, tuning);
}
