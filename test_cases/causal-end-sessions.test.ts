/**
 * Causal mode after its memcached lost the replica: a write this node answered that no peer has
 * said it holds may be lost for good, so the node ends every session (the controller closes every
 * client connection) instead of letting a connection that wrote or read it go on without it. The
 * fault matrix's causal run with memcached restarts caught a connection reading an older value
 * of its own write after such a loss. A reset that loses nothing no peer holds ends none. And
 * what its chains still carry to the peers is put back into the replica: the peers merge it, some
 * after they took their snapshot for this node, and their later writes depend on it (the same run
 * caught this node showing such writes without it). What a tombstone merged since deleted is not
 * put back: the peers may have purged it, and their snapshots would not delete it again (the same
 * run caught a deleted value read back after a controller restart then a memcached restart).
 */

import { describe, expect, it } from 'vitest';
import { createCausal } from '../src/consistency/causal.ts';
import type { CausalMessage } from '../src/consistency/causal/messages.ts';
import { packVersion } from '../src/consistency/hlc.ts';
import { asPeerId, type Effect, type Event, type KeyedEntry } from '../src/consistency/types.ts';

const [N1, N2, N3] = [asPeerId('n1'), asPeerId('n2'), asPeerId('n3')] as const;
const PEERS = [N2, N3];
const SET = { kind: 'store', verb: 'set', key: 'k', flags: 0, expiresAtMs: 0, value: Buffer.from('v'), casUnique: 0n } as const;

/** One node that takes a write; `held`: a peer then says it holds it. The effects of its reset. */
function resetAfterAWrite(held: 'none' | 'all' | 'older'): Array<Effect<CausalMessage>> {
  const machine = createCausal({
    self: N1, peers: PEERS, random: () => 0.5, heartbeatIntervalMs: 100, failureTimeoutMs: 1000, persisted: [], nowMs: 0,
  });
  let ownCas = 0n;
  const step = (event: Event<CausalMessage>): Array<Effect<CausalMessage>> => {
    const all: Array<Effect<CausalMessage>> = [];
    const pending: Array<Event<CausalMessage>> = [event];
    for (let budget = 1000; pending.length > 0 && budget > 0; budget--) {
      const effects: Array<Effect<CausalMessage>> = machine.step(pending.shift() as Event<CausalMessage>);
      for (const effect of effects) {
        if (effect.kind === 'apply') ownCas = effect.cas;
        if (effect.kind === 'fetch') pending.push({ kind: 'fetched', nowMs: 0, token: effect.token, entries: [] });
      }
      all.push(...effects);
    }
    return all;
  };
  step({ kind: 'tick', nowMs: 0, peersUp: [...PEERS] });
  step({ kind: 'request', nowMs: 0, requestId: 1 as never, session: 1, op: SET });
  const first = ownCas;
  step({ kind: 'request', nowMs: 1, requestId: 2 as never, session: 1, op: { ...SET, key: 'j' } });
  if (held !== 'none') {
    const told = held === 'all' ? ownCas : first;
    step({ kind: 'message', nowMs: 2, from: N3, message: { kind: 'visible', visible: [told, 0n, 0n] } });
  }
  return step({ kind: 'backend_reset', nowMs: 3, emptied: true });
}

const ends = (effects: ReadonlyArray<Effect<CausalMessage>>): number => effects.filter((effect) => effect.kind === 'end_sessions').length;

describe('causal mode: sessions after memcached lost the replica', () => {
  it('ends every session when a write of ours no peer held is lost', () => {
    expect(ends(resetAfterAWrite('none'))).toBe(1);
    // A peer holds the first write, not the second.
    expect(ends(resetAfterAWrite('older'))).toBe(1);
  });

  it('ends none when a peer holds every write of ours (they come back with its snapshot)', () => {
    expect(ends(resetAfterAWrite('all'))).toBe(0);
  });
});

/** One node (n1) whose peers never acknowledge its chains, with a replica kept in a map: the puts it is told to do. */
function carryingNode(): { step: (event: Event<CausalMessage>) => void; replica: Map<string, KeyedEntry[1]>; puts: KeyedEntry[][] } {
  const machine = createCausal({
    self: N1, peers: PEERS, random: () => 0.5, heartbeatIntervalMs: 100, failureTimeoutMs: 1000, persisted: [], nowMs: 0,
  });
  const replica = new Map<string, KeyedEntry[1]>();
  const puts: KeyedEntry[][] = [];
  const step = (event: Event<CausalMessage>): void => {
    const pending: Array<Event<CausalMessage>> = [event];
    for (let budget = 1000; pending.length > 0 && budget > 0; budget--) {
      const current = pending.shift() as Event<CausalMessage>;
      for (const effect of machine.step(current) as Array<Effect<CausalMessage>>) {
        if (effect.kind === 'apply' && effect.op.kind === 'store') {
          replica.set(effect.op.key, { value: effect.op.value, flags: 0, expiresAtMs: 0, cas: effect.cas });
        }
        if (effect.kind === 'fetch') {
          const entries = [...replica].filter(([key]) => effect.keys === null || effect.keys.includes(key));
          pending.push({ kind: 'fetched', nowMs: current.nowMs, token: effect.token, entries });
        }
        if (effect.kind === 'put') {
          puts.push(effect.entries);
          for (const [key, entry] of effect.entries) if ((replica.get(key)?.cas ?? -1n) < entry.cas) replica.set(key, entry);
          if (effect.token !== null) pending.push({ kind: 'applied', nowMs: current.nowMs, token: effect.token });
        }
      }
    }
  };
  return { step, replica, puts };
}

describe('causal mode: what the chains carry after memcached lost the replica', () => {
  it('is put back into the replica, the latest of each key', () => {
    const { step, replica, puts } = carryingNode();
    step({ kind: 'tick', nowMs: 0, peersUp: [...PEERS] });
    // Writes shipped in batches the peers never acknowledge: they stay in the chains.
    for (let i = 0; i < 3; i++) {
      step({ kind: 'request', nowMs: 100 * i, requestId: (i + 1) as never, session: 1, op: { ...SET, value: Buffer.from(`v${i}`) } });
      step({ kind: 'request', nowMs: 100 * i, requestId: (i + 11) as never, session: 1, op: { ...SET, key: `j${i}` } });
      step({ kind: 'tick', nowMs: 100 * i + 50, peersUp: [...PEERS] });
    }
    const latest = replica.get('k');
    replica.clear();
    puts.length = 0;
    step({ kind: 'backend_reset', nowMs: 400, emptied: true });
    const putBack = new Map(puts.flat());
    expect(putBack.get('k')?.cas).toBe(latest?.cas);
    expect(putBack.get('k')?.value.toString()).toBe('v2');
    expect([...putBack.keys()].sort()).toEqual(['j0', 'j1', 'j2', 'k']);
  });

  it('leaves out what a tombstone merged since deleted (a peer may have purged it)', () => {
    const { step, replica, puts } = carryingNode();
    step({ kind: 'tick', nowMs: 0, peersUp: [...PEERS] });
    step({ kind: 'request', nowMs: 10, requestId: 1 as never, session: 1, op: SET });
    step({ kind: 'request', nowMs: 10, requestId: 2 as never, session: 1, op: { ...SET, key: 'j' } });
    step({ kind: 'tick', nowMs: 60, peersUp: [...PEERS] });
    // n2's snapshot: it deleted k after our write (its tombstone), and holds j as we wrote it.
    const deletedAt = packVersion({ physicalMs: 200, counter: 0 }, 1);
    const tombstone = { value: Buffer.alloc(0), flags: 0, expiresAtMs: 0, cas: deletedAt, tombstone: true };
    const j = replica.get('j');
    if (j === undefined) throw new Error('j was not written');
    const snapshot: CausalMessage = {
      kind: 'batch', snapshot: true, base: 0n, prev: 0n, to: deletedAt, deps: [0n, deletedAt, 0n], part: 0, parts: 1,
      entries: [['j', j], ['k', tombstone]],
    };
    step({ kind: 'message', nowMs: 250, from: N2, message: snapshot });
    expect(replica.get('k')?.tombstone).toBe(true);
    replica.clear();
    puts.length = 0;
    step({ kind: 'backend_reset', nowMs: 300, emptied: true });
    const putBack = new Map(puts.flat());
    expect(putBack.has('j')).toBe(true);
    expect(putBack.has('k')).toBe(false);
  });
});
