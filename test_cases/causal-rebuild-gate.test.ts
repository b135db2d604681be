/**
 * Causal mode after its memcached was emptied (src/consistency/causal/rebuild-gate.ts): reads are
 * refused until the replica holds again what was visible before, as a peer's snapshot brings it
 * back, or until every peer has sent one; writes go on meanwhile, depending on what was visible
 * before; and peers are asked for their snapshots only when none has come for resyncAfterMs.
 */

import { describe, expect, it } from 'vitest';
import { entry, N2, N3, node, resetAfterSeeingX, version, type Batch } from './support/causal-node.ts';

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
