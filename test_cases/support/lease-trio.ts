/**
 * Three replicated-log machines in linearizability mode with read leases, over a network a test
 * drives by hand: FIFO, no faults unless a node is cut; a test may also deliver or hold back
 * single messages (`queue`, `deliver`) to set up an exact interleaving.
 */

import { asPeerId, asRequestId, type Effect, type Event, type PeerId } from '../../src/consistency/types.ts';
import { createReplicatedLog, type LogMessage, type ReplicatedLog } from '../../src/consistency/replicated-log.ts';
import type { ReadLeaseOptions } from '../../src/consistency/log/lease.ts';
import type { Op } from '../../src/store/types.ts';
import { mulberry32 } from './log-sim.ts';

export const LEASES: ReadLeaseOptions = { leaseMs: 200, clockDriftPpmMax: 10_000, marginMs: 5 };
export const IDS = ['n1', 'n2', 'n3'].map(asPeerId);

export type Untimed<T> = T extends unknown ? Omit<T, 'nowMs'> : never;

/** Three machines with read leases over a network the test drives by hand (FIFO, no faults unless cut). */
export class Trio {
  nowMs = 1_000;
  readonly machines = new Map<PeerId, ReplicatedLog>();
  readonly cut = new Set<PeerId>();
  /** Links (`from>to`) whose messages are lost, beside those of cut nodes. */
  readonly cutLinks = new Set<string>();
  /** What each node's ticks say of its connections (`peersCut`): none closed unless a test says. */
  peersCutBy: (id: PeerId) => PeerId[] = () => [];
  readonly replies = new Map<number, Effect<LogMessage>>();
  /** Messages sent and not yet delivered, in order (a test may deliver some by hand: `deliver`). */
  queue: Array<{ from: PeerId; to: PeerId; message: LogMessage }> = [];
  private nextRequest = 1;

  constructor() {
    for (const [at, id] of IDS.entries()) {
      this.machines.set(id, createReplicatedLog({
        self: id, peers: IDS, random: mulberry32(at + 1), heartbeatIntervalMs: 50, failureTimeoutMs: 300, persisted: [],
        nowMs: this.nowMs, mode: 'linearizability', readLeases: LEASES,
      }));
    }
  }

  machine(id: PeerId): ReplicatedLog {
    return this.machines.get(id) as ReplicatedLog;
  }

  /** Steps one machine now, carrying out what it does; returns its effects. */
  step(id: PeerId, event: Untimed<Event<LogMessage>>): Effect<LogMessage>[] {
    const effects = this.machine(id).step({ ...event, nowMs: this.nowMs } as Event<LogMessage>);
    this.carryOut(id, effects);
    return effects;
  }

  /** Delivers `message` from `from` to `to` now, and whatever its receiver sends back to `from`. */
  deliver(from: PeerId, to: PeerId, message: LogMessage): void {
    const before = this.queue.length;
    this.step(to, { kind: 'message', from, message });
    this.step(to, { kind: 'flush' });
    const replies = this.queue.splice(before).filter((sent) => sent.to === from);
    for (const reply of replies) this.step(from, { kind: 'message', from: to, message: reply.message });
  }

  private carryOut(from: PeerId, effects: Effect<LogMessage>[]): void {
    for (const effect of effects) {
      if (effect.kind === 'send') this.queue.push({ from, to: effect.to, message: effect.message });
      if ((effect.kind === 'reply' || effect.kind === 'read' || effect.kind === 'apply') && 'requestId' in effect && effect.requestId !== null) {
        this.replies.set(effect.requestId, effect);
      }
    }
  }

  /** Ticks every 10 ms for `ms`, delivering everything (but to or from a cut node) after each. */
  run(ms: number): void {
    const endMs = this.nowMs + ms;
    while (this.nowMs < endMs) {
      this.nowMs += 10;
      for (const id of IDS) {
        if (!this.cut.has(id)) this.carryOut(id, this.machine(id).step({ kind: 'tick', nowMs: this.nowMs, peersUp: IDS, peersCut: this.peersCutBy(id) }));
      }
      for (let turns = 0; turns < 20 && this.queue.length > 0; turns += 1) {
        const turn = this.queue;
        this.queue = [];
        for (const { from, to, message } of turn) {
          if (this.cut.has(from) || this.cut.has(to) || this.cutLinks.has(`${from}>${to}`)) continue;
          this.carryOut(to, this.machine(to).step({ kind: 'message', nowMs: this.nowMs, from, message }));
        }
        for (const id of IDS) if (!this.cut.has(id)) this.carryOut(id, this.machine(id).step({ kind: 'flush', nowMs: this.nowMs }));
      }
    }
  }

  request(id: PeerId, op: Op): number {
    const requestId = this.nextRequest++;
    this.carryOut(id, this.machine(id).step({ kind: 'request', nowMs: this.nowMs, requestId: asRequestId(requestId), session: requestId, op }));
    this.carryOut(id, this.machine(id).step({ kind: 'flush', nowMs: this.nowMs }));
    return requestId;
  }

  leader(): PeerId {
    const leader = IDS.find((id) => !this.cut.has(id) && this.machine(id).inspect().role === 'leader');
    if (leader === undefined) throw new Error('no leader');
    return leader;
  }
}

