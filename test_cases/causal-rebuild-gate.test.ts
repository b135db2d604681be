/**
 * Causal mode after its memcached was emptied (src/consistency/causal/rebuild-gate.ts): reads are
 * refused until the replica holds again what was visible before, as a peer's snapshot brings it
 * back, or until every peer has sent one; writes go on meanwhile, depending on what was visible
 * before; and peers are asked for their snapshots only when none has come for resyncAfterMs.
 */

import { describe, expect, it } from 'vitest';
import { createCausal } from '../src/consistency/causal.ts';
import type { CausalMessage, VersionVector } from '../src/consistency/causal/messages.ts';
import { HLC_ZERO, packVersion, tickHlc } from '../src/consistency/hlc.ts';
import { asPeerId, type Effect, type Event, type KeyedEntry, type PeerId } from '../src/consistency/types.ts';

const [N1, N2, N3] = [asPeerId('n1'), asPeerId('n2'), asPeerId('n3')] as const;
type Batch = Extract<CausalMessage, { kind: 'batch' }>;

/** A version written by node `index` (n1, n2, n3 → 0, 1, 2) at `atMs`. */
const version = (index: number, atMs: number): bigint => packVersion(tickHlc(HLC_ZERO, atMs), index);

/**
 * Node n1 alone, its replica a map: fetches read it, puts and applies write it; peers' acks come
 * back at once for every batch n1 sends (the peers hold it); the effects of each step are kept.
 */
function node() {
  const machine = createCausal({
    self: N1, peers: [N2, N3], random: () => 0.5, heartbeatIntervalMs: 100, failureTimeoutMs: 1000, persisted: [], nowMs: 1000,
  });
  const replica = new Map<string, KeyedEntry[1]>();
  let nowMs = 1000;
  let nextRequest = 1;
  const sent: Array<{ to: PeerId; message: CausalMessage }> = [];
  const replies: Array<{ requestId: number; reply: unknown }> = [];
  const reads: number[] = [];
  const applies: number[] = [];
  const step = (event: Event<CausalMessage>): void => {
    const pending: Array<Event<CausalMessage>> = [event];
    for (let budget = 1000; pending.length > 0 && budget > 0; budget--) {
      for (const effect of machine.step(pending.shift() as Event<CausalMessage>) as Array<Effect<CausalMessage>>) {
        if (effect.kind === 'fetch') {
          const entries = [...replica].filter(([key]) => effect.keys === null || effect.keys.includes(key));
          pending.push({ kind: 'fetched', nowMs, token: effect.token, entries });
        } else if (effect.kind === 'put') {
          for (const [key, entry] of effect.entries) if ((replica.get(key)?.cas ?? -1n) < entry.cas) replica.set(key, entry);
          pending.push({ kind: 'applied', nowMs, token: effect.token });
        } else if (effect.kind === 'apply') {
          applies.push(effect.requestId as number);
          if (effect.op.kind !== 'store') continue;
          const { key, value, flags } = effect.op;
          replica.set(key, { value, flags, expiresAtMs: 0, cas: effect.cas });
        } else if (effect.kind === 'send') {
          sent.push({ to: effect.to, message: effect.message });
          const { message } = effect;
          if (message.kind === 'batch' && message.part === message.parts - 1) {
            const ack: CausalMessage = { kind: 'batch_ack', to: message.to, visible: [message.to, 0n, 0n], resync: false };
            pending.push({ kind: 'message', nowMs, from: effect.to, message: ack });
          }
        } else if (effect.kind === 'reply') {
          replies.push({ requestId: effect.requestId as number, reply: effect.reply });
        } else if (effect.kind === 'read') {
          reads.push(effect.requestId as number);
        }
      }
    }
  };
  const request = (op: Extract<Event<CausalMessage>, { kind: 'request' }>['op']): number => {
    const requestId = nextRequest++;
    step({ kind: 'request', nowMs, requestId: requestId as never, session: 1, op });
    return requestId;
  };
  return {
    step,
    sent,
    replica,
    advance(ms: number): void {
      nowMs += ms;
      step({ kind: 'tick', nowMs, peersUp: [N2, N3] });
    },
    /** A get of `key`: 'read' when served from the replica, else the refusal's reason. */
    get(key: string): string {
      const requestId = request({ kind: 'get', keys: [key] });
      if (reads.includes(requestId)) return 'read';
      const reply = replies.find((each) => each.requestId === requestId)?.reply as { reason?: string } | undefined;
      return reply?.reason ?? 'no answer';
    },
    set(key: string): void {
      request({ kind: 'store', verb: 'set', key, flags: 0, expiresAtMs: 0, value: Buffer.from(key), casUnique: 0n });
    },
    /** Any op: 'applied' when taken, else the refusal's reason. */
    call(op: Extract<Event<CausalMessage>, { kind: 'request' }>['op']): string {
      const requestId = request(op);
      if (applies.includes(requestId)) return 'applied';
      const reply = replies.find((each) => each.requestId === requestId)?.reply as { reason?: string } | undefined;
      return reply?.reason ?? 'no answer';
    },
    /** `from` sends its whole replica: `entries`, covering `deps`. */
    snapshot(from: PeerId, entries: KeyedEntry[], deps: VersionVector): void {
      const to = deps[[N1, N2, N3].indexOf(from)] ?? 0n;
      const message: Batch = { kind: 'batch', snapshot: true, base: 0n, prev: 0n, to, deps, part: 0, parts: 1, entries };
      step({ kind: 'message', nowMs, from, message });
    },
    /** The first of two parts of a snapshot from `from` (the second never comes). */
    snapshotPart(from: PeerId): void {
      const message: Batch = { kind: 'batch', snapshot: true, base: 0n, prev: 0n, to: 0n, deps: [0n, 0n, 0n], part: 0, parts: 2, entries: [] };
      step({ kind: 'message', nowMs, from, message });
    },
    /** Snapshots n1 asked `peer` for since `since` (a resync ack). */
    asks(peer: PeerId, since = 0): number {
      return sent.slice(since).filter(({ to, message }) => to === peer && message.kind === 'batch_ack' && message.resync).length;
    },
    nowMs: (): number => nowMs,
  };
}

const entry = (cas: bigint): KeyedEntry[1] => ({ value: Buffer.from('v'), flags: 0, expiresAtMs: 0, cas });

/** n1 after it saw n2's write of x (from n2's first snapshot) and then its memcached emptied. */
function resetAfterSeeingX(): { n1: ReturnType<typeof node>; x: bigint } {
  const n1 = node();
  n1.advance(100);
  const x = version(1, 1050);
  n1.snapshot(N2, [['x', entry(x)]], [0n, x, 0n]);
  n1.step({ kind: 'backend_reset', nowMs: n1.nowMs(), emptied: true });
  return { n1, x };
}

describe('causal mode: reads after memcached lost the replica', () => {
  it('refuses reads until a snapshot brings back what was visible, and takes writes meanwhile', () => {
    const n1 = node();
    n1.advance(100);
    const x = version(1, 1050);
    n1.snapshot(N2, [['x', entry(x)]], [0n, x, 0n]);
    expect(n1.get('x')).toBe('read');

    n1.step({ kind: 'backend_reset', nowMs: n1.nowMs(), emptied: true });
    n1.replica.clear();
    expect(n1.get('x')).toBe('not_caught_up');

    // Writes whose outcome the replica's contents decide wait too: a delete finding nothing reads
    // "absent". A plain set and a flush are taken.
    const store = (verb: 'set' | 'add' | 'append', casUnique = 0n) =>
      ({ kind: 'store', verb, key: 'x', flags: 0, expiresAtMs: 0, value: Buffer.from('v'), casUnique }) as const;
    expect(n1.call({ kind: 'delete', key: 'x' })).toBe('not_caught_up');
    expect(n1.call(store('add'))).toBe('not_caught_up');
    expect(n1.call(store('append'))).toBe('not_caught_up');
    expect(n1.call(store('set', 7n))).toBe('not_caught_up');
    expect(n1.call({ kind: 'arith', verb: 'incr', key: 'x', delta: 1n, initial: null, expiresAtMs: 0 })).toBe('not_caught_up');
    expect(n1.call({ kind: 'touch', key: 'x', expiresAtMs: 0 })).toBe('not_caught_up');
    expect(n1.call({ kind: 'flush_all', delayMs: 1_000_000 })).toBe('applied');
    // A write is taken; the batch that ships it depends on x, which its writer may have read.
    n1.set('y');
    n1.advance(100);
    const shipped = n1.sent.map(({ message }) => message).filter((message): message is Batch =>
      message.kind === 'batch' && message.entries.some(([key]) => key === 'y'));
    const chained = shipped.filter((each) => !each.snapshot);
    expect(chained.length).toBeGreaterThan(0);
    for (const batch of chained) expect(batch.deps[1]).toBeGreaterThanOrEqual(x);

    // n3's snapshot does not hold x: reads still wait. n2's does: they are served again.
    n1.snapshot(N3, [], [0n, 0n, 0n]);
    expect(n1.get('x')).toBe('not_caught_up');
    n1.snapshot(N2, [['x', entry(x)]], [0n, x, 0n]);
    expect(n1.get('x')).toBe('read');
    expect(n1.call({ kind: 'delete', key: 'x' })).toBe('applied');
  });

  it('opens once every peer has sent a snapshot, even one that lacks what was lost for good', () => {
    const { n1 } = resetAfterSeeingX();
    // n2 lost x too (its memcached emptied as well): nobody holds it any more.
    n1.snapshot(N2, [], [0n, 0n, 0n]);
    expect(n1.get('x')).toBe('not_caught_up');
    n1.snapshot(N3, [], [0n, 0n, 0n]);
    expect(n1.get('x')).toBe('read');
  });

  it('waits for our own lost writes to come back from a peer that holds them', () => {
    const n1 = node();
    n1.advance(100);
    n1.set('own');
    n1.advance(100);
    const own = n1.replica.get('own')?.cas ?? 0n;
    expect(own).toBeGreaterThan(0n);
    n1.step({ kind: 'backend_reset', nowMs: n1.nowMs(), emptied: true });
    n1.replica.clear();
    // n2's snapshot predates our write: reads wait for one that has it.
    n1.snapshot(N2, [], [0n, 0n, 0n]);
    expect(n1.get('own')).toBe('not_caught_up');
    n1.snapshot(N3, [['own', entry(own)]], [own, 0n, 0n]);
    expect(n1.get('own')).toBe('read');
    expect(n1.replica.get('own')?.cas).toBe(own);
  });

  it('asks each peer it waits for once resyncAfterMs passed without any part of a snapshot, and again only after as long', () => {
    const { n1, x } = resetAfterSeeingX();
    const since = n1.sent.length;
    // resyncAfterMs is 4 s with a 1 s failure timeout: a peer whose chain we held may be sending
    // its snapshot on its own meanwhile, and an ask would start it over.
    for (let ticks = 0; ticks < 35; ticks++) n1.advance(100);
    expect([n1.asks(N2, since), n1.asks(N3, since)]).toEqual([0, 0]);
    for (let ticks = 0; ticks < 10; ticks++) n1.advance(100);
    expect([n1.asks(N2, since), n1.asks(N3, since)]).toEqual([1, 1]);
    // Parts of n3's snapshot keep coming: nobody is asked again (n3 would start over).
    for (let ticks = 0; ticks < 45; ticks++) {
      n1.advance(100);
      if (ticks % 10 === 0) n1.snapshotPart(N3);
    }
    expect([n1.asks(N2, since), n1.asks(N3, since)]).toEqual([1, 1]);
    // They stop: once resyncAfterMs passed without any, both are asked again.
    for (let ticks = 0; ticks < 45; ticks++) n1.advance(100);
    expect([n1.asks(N2, since), n1.asks(N3, since)]).toEqual([2, 2]);
    // Once the gate is open nobody is asked any more.
    n1.snapshot(N2, [['x', entry(x)]], [0n, x, 0n]);
    const after = n1.sent.length;
    for (let ticks = 0; ticks < 50; ticks++) n1.advance(100);
    expect([n1.asks(N2, after), n1.asks(N3, after)]).toEqual([0, 0]);
  });
});
