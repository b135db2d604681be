/**
 * Causal mode after its memcached was emptied: a node asks its peers for a snapshot only for
 * writes of its own that it may have lost, and asks again only when none comes. An empty replica
 * at a first start owes nothing; an ask repeated while a snapshot is on its way would make the
 * peer start it over (a barrier on its replica) for ever.
 */

import { describe, expect, it } from 'vitest';
import { createCausal } from '../src/consistency/causal.ts';
import type { CausalMessage } from '../src/consistency/causal/messages.ts';
import { asPeerId, type Effect, type Event } from '../src/consistency/types.ts';

const [N1, N2, N3] = [asPeerId('n1'), asPeerId('n2'), asPeerId('n3')] as const;
const PEERS = [N2, N3];

/** Steps one node for `spanMs` of ticks, answering its fetches with an empty replica; counts asks. */
function asksFor(setup: (step: (event: Event<CausalMessage>) => void) => void, spanMs: number): number {
  const machine = createCausal({
    self: N1, peers: PEERS, random: () => 0.5, heartbeatIntervalMs: 100, failureTimeoutMs: 1000, persisted: [], nowMs: 0,
  });
  let asks = 0;
  let nowMs = 0;
  /** Our latest write's version: the peer says it holds it. */
  let ownCas = 0n;
  const step = (event: Event<CausalMessage>): void => {
    const pending: Array<Event<CausalMessage>> = [event];
    for (let budget = 1000; pending.length > 0 && budget > 0; budget--) {
      const effects: Array<Effect<CausalMessage>> = machine.step(pending.shift() as Event<CausalMessage>);
      for (const effect of effects) {
        if (effect.kind === 'apply') ownCas = effect.cas;
        if (effect.kind === 'fetch') pending.push({ kind: 'fetched', nowMs, token: effect.token, entries: [] });
        if (effect.kind === 'send' && effect.to === N2 && effect.message.kind === 'batch_ack' && effect.message.resync) asks += 1;
      }
    }
  };
  step({ kind: 'tick', nowMs, peersUp: [...PEERS] });
  setup(step);
  for (; nowMs < spanMs; nowMs += 100) {
    step({ kind: 'tick', nowMs, peersUp: [...PEERS] });
    step({ kind: 'message', nowMs, from: N2, message: { kind: 'visible', visible: [ownCas, 0n, 0n] } });
  }
  return asks;
}

describe('causal mode: asks for lost writes after a reset', () => {
  it('an emptied replica that never held a write of ours asks no peer for a snapshot', () => {
    const asks = asksFor((step) => step({ kind: 'backend_reset', nowMs: 0, emptied: true }), 30_000);
    expect(asks).toBe(0);
  });

  it('one that held a write of ours asks, and asks again only after a while without a snapshot', () => {
    const asks = asksFor((step) => {
      const op = { kind: 'store', verb: 'set', key: 'k', flags: 0, expiresAtMs: 0, value: Buffer.from('v'), casUnique: 0n } as const;
      step({ kind: 'request', nowMs: 0, requestId: 1 as never, session: 1, op });
      step({ kind: 'backend_reset', nowMs: 0, emptied: true });
    }, 30_000);
    // Asked at once, then once per resyncAfterMs (4 s with a 1 s failure timeout) that passes
    // without a snapshot: not once per ack timeout.
    expect(asks).toBeGreaterThanOrEqual(1);
    expect(asks).toBeLessThanOrEqual(8);
  });
});
