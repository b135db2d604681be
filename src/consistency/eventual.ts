/**
 * Eventual consistency mode: every controller serves every operation from its own replica and
 * answers at once; replicas converge by last-writer-wins on hybrid-logical-clock versions.
 *
 * ## What a user gets (for the README)
 *
 * - **Availability.** Every controller accepts reads and writes while it can reach its own
 *   memcached, whatever happened to its peers (partitions included). Replies never wait for a
 *   peer.
 * - **Convergence.** Once the faults stop, all replicas hold the same keys and values within a
 *   few anti-entropy rounds (a round runs every 3 heartbeat intervals, with one peer at a time).
 *   Each key ends with the write that has the greatest version.
 * - **Versions and last writer wins.** Each write gets a version: a hybrid logical clock
 *   (wall-clock ms and a counter; it never goes back and always moves past every version the
 *   controller has seen) with the controller's index as tie-breaker. Of two concurrent writes to
 *   one key, the one with the greater version wins on every replica, in any arrival order; the
 *   other is silently lost. A write made after seeing another one always wins over it.
 * - **Deletes** leave tombstones, so a delete wins over the older value it deleted even on a
 *   replica that hears of the delete last. A tombstone is removed once every controller holds
 *   it (so a controller down for good keeps tombstones around). `flush_all` tombstones every key
 *   the receiving controller's replica holds at that moment (keys it has not yet heard of
 *   survive).
 * - **Expiry** is absolute, fixed by the controller that took the write, and replicated with it;
 *   all replicas expire an item at the same moment (up to clock skew between the machines).
 * - **Read-modify-write commands** (incr, decr, append, prepend, add, replace, cas, touch, gat)
 *   act on the local replica and replicate their *result* as a new version. Under concurrent
 *   updates on different controllers:
 *   - incr and decr are the exception: they replicate as per-node deltas since the key's last
 *     store (../store/counter.ts), so two concurrent `incr k 1` on two controllers both reply
 *     value+1 and the key ends at value+2. A store (set, append, touch, delete, flush) resets
 *     the counter: increments concurrent with it on the older value are lost. Concurrent
 *     decrements that together pass 0 read as 0 on every replica;
 *   - two concurrent `append`s: one suffix is lost, the same way;
 *   - `add` may succeed on two controllers at once (each saw no key); the later version wins;
 *   - `cas` tokens are versions. A `cas` succeeds if the token matches the version *this*
 *     replica holds: it guards only against writes this replica has already seen. A concurrent
 *     write on another controller can still overwrite it, or be overwritten by it;
 *   - `gets` right after a write on another controller may return the old value and token until
 *     the push arrives (normally within a network round trip).
 *   - a `delete` of a key this replica has not yet received replies NOT_FOUND and deletes
 *     nothing.
 * - **Session guarantees**: a client that stays on one controller reads its own writes and never
 *   sees that controller's state go back (unless its memcached restarts empty); across
 *   controllers there is no guarantee until convergence.
 *
 * ## How (see ./eventual/machine.ts for the invariants)
 * Writes become `apply` effects stamped with the version; the results are fetched back from
 * the replica (one outstanding fetch, dirty keys batched) and pushed to every peer in bounded
 * batches; a peer merges them (`put` how 'merge': greater cas wins; counters join, at a fresh
 * version, read back and pushed on) and acks. Anti-entropy
 * compares XOR digests of 1024 key-hash buckets in 32 groups, then key → version lists of the
 * differing buckets, and ships only what is missing or older. A replica that was emptied
 * (`backend_reset`) or a controller that restarts rebuilds its index from its replica and is
 * repaired by the same rounds.
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
