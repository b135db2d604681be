/**
 * What the eventual-mode unit tests share (eventual-writes, eventual-anti-entropy,
 * eventual-collection): a seeded machine for one of three nodes, entries and tombstones, a set, the
 * effects and messages of a step picked by kind, the start-up fetch answered, and a peer's message
 * as an event.
 */

import { expect } from 'vitest';
import { EventualMachine, type EventualMessage } from '../../src/consistency/eventual.ts';
import { asPeerId, type Effect, type Event, type KeyedEntry, type PeerId } from '../../src/consistency/types.ts';
import type { EventualTuning } from '../../src/consistency/eventual/tuning.ts';
import type { Entry, Op } from '../../src/store/types.ts';
import { mulberry32 } from './eventual-sim.ts';
import { must } from './must.ts';

/** The time every machine starts at. */
export const T0 = 1_700_000_000_000;
/** The first node. */
export const N1 = asPeerId('n1');
/** The second node. */
export const N2 = asPeerId('n2');
/** The third node. */
export const N3 = asPeerId('n3');
/** All three nodes. */
export const ALL = [N1, N2, N3];

/** The effects of one step of a machine. */
export type Out = Effect<EventualMessage>[];

/** A machine for `self` among the three nodes, seeded, with `tuning` over the defaults. */
export function machine(self: PeerId = N1, tuning: Partial<EventualTuning> = {}, seed = 7): EventualMachine {
  return new EventualMachine(
    {
      self,
      peers: ALL.filter((id) => id !== self),
      random: mulberry32(seed),
      heartbeatIntervalMs: 100,
      failureTimeoutMs: 400,
      persisted: [],
      nowMs: T0,
    },
    tuning,
  );
}

/** An entry holding `value` at version `cas`, with `extra` fields over the defaults. */
export const entry = (value: string, cas: bigint, extra: Partial<Entry> = {}): Entry => ({
  value: Buffer.from(value),
  flags: 0,
  expiresAtMs: 0,
  cas,
  ...extra,
});

/** A tombstone at version `cas`. */
export const tombstone = (cas: bigint): Entry => ({ value: Buffer.alloc(0), flags: 0, expiresAtMs: 0, cas, tombstone: true });

/** A set of `value` under `key`, never expiring. */
export const setOp = (key: string, value: string): Op => ({
  kind: 'store', verb: 'set', key, flags: 0, expiresAtMs: 0, value: Buffer.from(value), casUnique: 0n,
});

/** The effects of `kind` in `out`. */
export function ofKind<K extends Effect<EventualMessage>['kind']>(out: Out, kind: K): Array<Extract<Effect<EventualMessage>, { kind: K }>> {
  return out.filter((effect): effect is Extract<Effect<EventualMessage>, { kind: K }> => effect.kind === kind);
}

/** The first effect of `kind` in `out`, which the test expects to be there. */
export function firstOfKind<K extends Effect<EventualMessage>['kind']>(out: Out, kind: K): Extract<Effect<EventualMessage>, { kind: K }> {
  return must(ofKind(out, kind)[0], `a ${kind} effect`);
}

/** The messages of `kind` sent in `out`, with the peer each goes to. */
export function sent<K extends EventualMessage['kind']>(out: Out, kind: K): Array<{ to: PeerId; message: Extract<EventualMessage, { kind: K }> }> {
  return ofKind(out, 'send')
    .filter((effect) => effect.message.kind === kind)
    .map((effect) => ({ to: effect.to, message: effect.message as Extract<EventualMessage, { kind: K }> }));
}

/** First step (rebuild fetch) answered with `stored`; returns the effects of the answer. */
export function boot(m: EventualMachine, stored: KeyedEntry[] = [], peersUp: PeerId[] = [N2, N3]): Out {
  const first = m.step({ kind: 'tick', nowMs: T0 + 1, peersUp });
  const rebuild = firstOfKind(first, 'fetch');
  // Every key, for the versions only: a replica's worth of values would be held for nothing.
  expect(rebuild).toMatchObject({ keys: null, versionsOnly: true });
  return m.step({ kind: 'fetched', nowMs: T0 + 2, token: rebuild.token, entries: stored });
}

/** A message event: `body` from peer `from`, at `nowMs`. */
export const message = (from: PeerId, body: EventualMessage, nowMs = T0 + 10): Event<EventualMessage> => ({
  kind: 'message', nowMs, from, message: body,
});
