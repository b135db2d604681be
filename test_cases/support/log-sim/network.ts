/**
 * The simulated network: messages in flight between nodes, dropped, duplicated, delayed (a few
 * very late) at the run's rates, plus a malformed copy now and then (`junkRate`), and links cut by
 * a partition (one node isolated, maybe one way). Separate so the order in which the wire draws
 * from its random streams, which every seed's run rests on, lives in one place.
 */

import type { PeerId } from '../../../src/consistency/types.ts';
import type { LogMessage } from '../../../src/consistency/replicated-log.ts';
import { itemAt } from '../../../src/runtime/item-at.ts';
import { certainlyInvalid } from '../junk.ts';
import type { SimWorld } from './world.ts';

export interface Flight {
  atMs: number;
  from: PeerId;
  to: PeerId;
  message: LogMessage;
  /** A malformed message (`junkRate`): the receiver must drop it. */
  junk?: boolean;
}

export class SimNetwork {
  private flights: Flight[] = [];
  private readonly cut = new Set<string>();

  constructor(private readonly world: SimWorld) {}

  transmit(from: PeerId, to: PeerId, message: LogMessage): void {
    const world = this.world;
    world.result.messages[message.kind] = (world.result.messages[message.kind] ?? 0) + 1;
    const random = message.kind === 'ping' || message.kind === 'pong' ? world.pingRandom : world.random;
    const copies = random() < world.rates.drop ? 0 : random() < world.rates.duplicate ? 2 : 1;
    for (let copy = 0; copy < copies; copy += 1) {
      const slow = random() < 0.05 ? 4 : 1;
      this.flights.push({ atMs: world.nowMs + 1 + Math.floor(random() * world.rates.delayMaxMs * slow), from, to, message });
    }
    if (world.junkRandom() < (world.options.junkRate ?? 0)) {
      const junk = certainlyInvalid(message as unknown as Record<string, unknown>, world.junkRandom, ['term']) as LogMessage;
      const atMs = world.nowMs + 1 + Math.floor(world.junkRandom() * world.rates.delayMaxMs);
      this.flights.push({ atMs, from, to, message: junk, junk: true });
    }
  }

  /** The earlier of `nextMs` and the first arrival. */
  nextArrivalMs(nextMs: number): number {
    let next = nextMs;
    for (const flight of this.flights) next = Math.min(next, flight.atMs);
    return next;
  }

  /** Takes off the wire every flight due now, in the order they were sent. */
  takeDue(): Flight[] {
    const nowMs = this.world.nowMs;
    const due = this.flights.filter((flight) => flight.atMs <= nowMs);
    if (due.length === 0) return due;
    this.flights = this.flights.filter((flight) => flight.atMs > nowMs);
    return due;
  }

  /** Puts a flight back on the wire, to arrive at `atMs` (a sleeper's links wake after it). */
  hold(flight: Flight, atMs: number): void {
    this.flights.push({ ...flight, atMs });
  }

  isCut(from: PeerId, to: PeerId): boolean {
    return this.cut.has(`${from}>${to}`);
  }

  togglePartition(): void {
    if (this.cut.size > 0) {
      this.cut.clear();
      return;
    }
    const ids = this.world.ids;
    const isolated = itemAt(ids, Math.floor(this.world.random() * ids.length));
    const oneWay = this.world.random() < 0.3;
    for (const other of ids) {
      if (other === isolated) continue;
      this.cut.add(`${isolated}>${other}`);
      if (!oneWay) this.cut.add(`${other}>${isolated}`);
    }
  }

  /** After the faulty phase: every link up, nothing dropped or duplicated (delays stay). */
  heal(): void {
    this.cut.clear();
    this.world.rates.drop = 0;
    this.world.rates.duplicate = 0;
  }
}
