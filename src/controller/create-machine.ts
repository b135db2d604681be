/**
 * The consistency machine a controller runs: the mode's, or without replication (tests of the
 * fault runner's deliberately broken cluster) the local one.
 */

import { createCausal } from '../consistency/causal.ts';
import { createEventual } from '../consistency/eventual.ts';
import { createLocal } from '../consistency/local.ts';
import { createReplicatedLog } from '../consistency/replicated-log.ts';
import type { Machine, MachineOptions, Mode } from '../consistency/types.ts';

export function createMachine(
  mode: Mode,
  replication: boolean,
  compactAfterEntries: number,
  options: MachineOptions,
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

