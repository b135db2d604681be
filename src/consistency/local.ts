/**
 * The local mode: every op is applied to this controller's own replica and answered at once,
 * with no replication. It is what a mode falls back to before its protocol exists, and the
 * baseline the benchmark compares the replicated modes with. Versions are a local counter.
 */

import { OUT_OF_MEMORY, type Effect, type Machine, type MachineOptions, type MachineStatus, type Mode } from './types.ts';

export type LocalMessage = never;

export function createLocal(options: MachineOptions & { mode: Mode }): Machine<LocalMessage> {
  let version = 0n;
  return {
    step(event): Effect<LocalMessage>[] {
      if (event.kind !== 'request') return [];
      if (event.op.kind === 'get') {
        return [{ kind: 'read', requestId: event.requestId, op: event.op, nowMs: event.nowMs }];
      }
      if (options.admit !== undefined && !options.admit(event.op)) {
        return [{ kind: 'reply', requestId: event.requestId, reply: { kind: 'server_error', message: OUT_OF_MEMORY } }];
      }
      version += 1n;
      return [
        { kind: 'apply', op: event.op, cas: version, nowMs: event.nowMs, requestId: event.requestId, token: null },
      ];
    },
    readsLocally: () => true,
    status(): MachineStatus {
      return {
        mode: options.mode,
        role: 'local',
        term: 0,
        leader: null,
        committed: String(version),
        applied: String(version),
        queueDepth: 0,
      };
    },
  };
}
