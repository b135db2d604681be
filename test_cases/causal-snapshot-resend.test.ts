/**
 * A causal snapshot sent again while its receiver still merges it (the sender's ack timeout ran
 * out: a whole replica takes memcached seconds to take) is not assembled and merged anew: the
 * receiver says it holds every part, and acknowledges once the merge is done, or at once when it
 * is. Merged over and over, a snapshot of 160,000 keys kept a rebuild going for over 30 seconds.
 */

import { describe, expect, it } from 'vitest';
import { createCausal } from '../src/consistency/causal.ts';
import type { CausalMessage } from '../src/consistency/causal/messages.ts';
import { HLC_ZERO, packVersion, tickHlc } from '../src/consistency/hlc.ts';
import { asPeerId, type Effect, type Event, type KeyedEntry } from '../src/consistency/types.ts';

const [N1, N2, N3] = [asPeerId('n1'), asPeerId('n2'), asPeerId('n3')] as const;
type Batch = Extract<CausalMessage, { kind: 'batch' }>;

describe('causal mode: a snapshot sent again', () => {
  it('is merged once, acknowledged when memcached took it, and again at once when sent again', () => {
    const machine = createCausal({
      self: N1, peers: [N2, N3], random: () => 0.5, heartbeatIntervalMs: 100, failureTimeoutMs: 1000, persisted: [], nowMs: 1000,
    });
    const nowMs = 1100;
    const puts: number[] = [];
    const toN2: CausalMessage[] = [];
    const step = (event: Event<CausalMessage>): void => {
      for (const effect of machine.step(event) as Array<Effect<CausalMessage>>) {
        if (effect.kind === 'fetch') step({ kind: 'fetched', nowMs, token: effect.token, entries: [] });
        if (effect.kind === 'put' && effect.token !== null) puts.push(effect.token);
        if (effect.kind === 'send' && effect.to === N2) toN2.push(effect.message);
      }
    };
    step({ kind: 'tick', nowMs, peersUp: [N2, N3] });
    const version = packVersion(tickHlc(HLC_ZERO, 1050), 1);
    const entry = (key: string): KeyedEntry => [key, { value: Buffer.from(key), flags: 0, expiresAtMs: 0, cas: version }];
    const part = (index: number): Batch => ({
      kind: 'batch', snapshot: true, base: 0n, prev: 0n, to: version, deps: [0n, version, 0n], part: index, parts: 2, entries: [entry(`k${index}`)],
    });
    const send = (index: number): void => step({ kind: 'message', nowMs, from: N2, message: part(index) });
    const acks = (): CausalMessage[] => toN2.filter((message) => message.kind === 'batch_ack' && !message.resync);
    const partAcks = (): unknown[] => toN2.filter((message) => message.kind === 'part_ack').map((message) => message.kind === 'part_ack' && message.received);

    send(0);
    send(1);
    expect(puts).toHaveLength(1);
    expect(acks()).toHaveLength(0);
    // Sent again from its first part while memcached is still taking the merge.
    send(0);
    expect(puts).toHaveLength(1);
    expect(partAcks()).toEqual([1, 2, 2]);
    expect(acks()).toHaveLength(0);
    step({ kind: 'applied', nowMs, token: puts[0] as number });
    expect(acks()).toHaveLength(1);
    // And once more after the merge: acknowledged at once, nothing merged.
    send(0);
    expect(puts).toHaveLength(1);
    expect(acks()).toHaveLength(2);
    // After memcached lost the replica, the same snapshot is taken again.
    step({ kind: 'backend_reset', nowMs, emptied: true });
    send(0);
    send(1);
    expect(puts).toHaveLength(2);
  });
});
