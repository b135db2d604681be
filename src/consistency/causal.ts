/**
 * Causal consistency mode: every controller serves every operation from its own replica and
 * answers at once, as in eventual mode, and never shows an effect before its cause.
 *
 * ## What a user gets (for the README)
 * - **Availability.** Reads and writes are answered by the controller the client talks to, with
 *   no peer in the path, through partitions, as in eventual mode.
 * - **Causality.** A write depends on everything visible at its controller when it was made:
 *   the connection's earlier writes and every write it could have read. A replica shows a peer's
 *   write only together with all of them. Whoever reads an answer can read the question.
 * - **Convergence.** Concurrent writes to one key end as in eventual mode: the greatest hybrid
 *   timestamp wins, node id breaking ties. Once faults stop all replicas hold the same entries.
 * - **Sessions.** On one controller a connection reads its writes, reads never go back, writes
 *   stay in order and follow what was read. `mckv_token` names the connection's causal context;
 *   `mckv_wait <token>` on another controller waits (bounded) until that one has caught up.
 * - **Cost.** A partition delays visibility, never answers: a write whose dependencies only a
 *   cut-off node holds waits, and after `resyncAfterMs` its sender ships a whole snapshot instead.
 *
 * How: ./causal/machine.ts (chains of batches per peer, visible vectors, snapshots).
 */

import type { Machine, MachineOptions } from './types.ts';
import { CausalMachine } from './causal/machine.ts';
import type { CausalTuning } from './causal/tuning.ts';
import type { CausalMessage } from './causal/messages.ts';

export type { CausalMessage } from './causal/messages.ts';
export { CausalMachine } from './causal/machine.ts';
export { defaultCausalTuning, type CausalTuning } from './causal/tuning.ts';

/** The causal-mode state machine. `tuning` overrides defaults derived from `options`. */
export function createCausal(options: MachineOptions, tuning: Partial<CausalTuning> = {}): Machine<CausalMessage> {
  return new CausalMachine(options, tuning);
}
