/**
 * The local mode: every op is applied to this controller's own replica and answered at once,
 * with no replication. It is what a mode falls back to before its protocol exists, and the
 * baseline the benchmark compares the replicated modes with. Versions are a local counter.
 */

import { MemoryAdmission } from './memory-admission.ts';
import { DroppedPeerMessages } from './peer-input.ts';
import type { Effect, Machine, MachineOptions, MachineStatus, Mode } from './types.ts';

export type LocalMessage = never;

export function createLocal(options: MachineOptions & { mode: Mode }): Machine<LocalMessage> {
  let version = 0n;
  const dropped = new DroppedPeerMessages();
  // The memory guard still counts every replica whose controller reports its memcached.
  const memory = new MemoryAdmission(options.peers.filter((peer) => peer !== options.self), undefined, options.keyHeld);
  return {
    step(event): Effect<LocalMessage>[] {
      switch (event.kind) {
        case 'message': {
          // No protocol here: whatever a peer sends is dropped.
          const note = dropped.drop<LocalMessage>(event.from, 'local mode takes no peer messages', event.nowMs);
          return note === null ? [] : [note];
        }
        case 'memory_polled':
        case 'memory_report':
          memory.step(event);
          return [];
        case 'tick':
          memory.peersUp(event.peersUp);
          return [];
        case 'clock_jump':
        case 'stopping':
          return [];
        case 'request':
          break;
        default:
          return [];
      }
      if (event.op.kind === 'get') {
        return [{ kind: 'read', requestId: event.requestId, op: event.op, nowMs: event.nowMs }];
      }
      const refused = memory.refusal(event.op, version + 1n);
      if (refused !== null) return [{ kind: 'reply', requestId: event.requestId, reply: refused }];
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
        invalidPeerMessages: dropped.count,
        caughtUp: true,
      };
    },
  };
}
