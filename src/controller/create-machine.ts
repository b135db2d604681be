/**
 * The consistency machine a controller runs: the mode's, or without replication (tests of the
 * fault runner's deliberately broken cluster) the local one; and which of its messages the peer
 * network sends in the priority lane (votes, pings and acknowledgements: small, and late ones
 * start elections or hold commits; a forward gap's report, which holds up its origin's writes).
 * Every mode tolerates reordered messages, as its simulator checks.
 */

import { createCausal } from '../consistency/causal.ts';
import { createEventual } from '../consistency/eventual.ts';
import { createLocal } from '../consistency/local.ts';
import { createReplicatedLog, type ReadLeaseOptions } from '../consistency/replicated-log.ts';
import type { CausalMessage } from '../consistency/causal/messages.ts';
import type { EventualMessage } from '../consistency/eventual/messages.ts';
import type { LogMessage } from '../consistency/log/types.ts';
import type { Machine, MachineOptions, Mode } from '../consistency/types.ts';

const LOG_PRIORITY_KINDS: ReadonlySet<LogMessage['kind']> = new Set([
  'pre_vote', 'pre_vote_reply', 'vote', 'vote_reply', 'append_reply', 'held', 'ping', 'pong', 'read_index', 'read_index_reply', 'transfer_ack',
  'forward_gap',
] as const);
const EVENTUAL_PRIORITY_KINDS: ReadonlySet<EventualMessage['kind']> = new Set(['push_ack'] as const);
const CAUSAL_PRIORITY_KINDS: ReadonlySet<CausalMessage['kind']> = new Set(['batch_ack', 'part_ack', 'visible'] as const);

/** The message kinds of `mode` that go in the peer network's priority lane. */
export function priorityKinds(mode: Mode): ReadonlySet<string> {
  switch (mode) {
    case 'linearizability':
    case 'sequential':
      return LOG_PRIORITY_KINDS;
    case 'eventual':
      return EVENTUAL_PRIORITY_KINDS;
    case 'causal':
      return CAUSAL_PRIORITY_KINDS;
    default: {
      const unreachable: never = mode;
      throw new Error(`unknown mode ${String(unreachable)}`);
    }
  }
}

/** What only the replicated log takes (see ReplicatedLogOptions). */
export interface LogExtras {
  /** config.ini's read leases (linearizability only); null: off. */
  readLeases: ReadLeaseOptions | null;
  /** This machine's boot with `wal_sync = write`; null with fsync. */
  bootId: string | null;
  /** The node lost its data_dir (--rejoin). */
  rejoin: boolean;
  /** The least incarnation the log's run may take (see LogCoreOptions.incarnationFloor). */
  incarnationFloor: number;
}

export function createMachine(
  mode: Mode,
  replication: boolean,
  compactAfterEntries: number,
  options: MachineOptions,
  log: LogExtras = { readLeases: null, bootId: null, rejoin: false, incarnationFloor: 0 },
): Machine<unknown> {
  if (!replication) return createLocal({ ...options, mode }) as Machine<unknown>;
  switch (mode) {
    case 'linearizability':
    case 'sequential':
      return createReplicatedLog({
        ...options,
        mode,
        replicaSkipsApplied: true,
        compactionThresholdEntries: compactAfterEntries,
        ...log,
      }) as Machine<unknown>;
    case 'eventual':
      return createEventual(options) as Machine<unknown>;
    case 'causal':
      return createCausal(options) as Machine<unknown>;
    default: {
      const unreachable: never = mode;
      throw new Error(`unknown mode ${String(unreachable)}`);
    }
  }
}

