/**
 * Eventual mode collects what is dead only once every peer holds it, since a peer still holding an
 * older value would bring the key back: a tombstone is purged after every peer acked it (or matched
 * digests), a late copy does not resurrect a purged key, and an entry expired longer than the grace
 * goes the same way; the expiry sweep looks only at entries with an expiry.
 */

import { describe, expect, it } from 'vitest';
import type { EventualMachine } from '../src/consistency/eventual.ts';
import { GROUP_COUNT, VersionIndex } from '../src/consistency/eventual/digest.ts';
import { asRequestId } from '../src/consistency/types.ts';
import { itemAt } from '../src/runtime/item-at.ts';
import { boot, entry, firstOfKind, machine, message, N1, N2, N3, ofKind, type Out, sent, T0, tombstone } from './support/eventual-kit.ts';

describe('tombstones', () => {
  function deleted(): { m: EventualMachine; version: bigint; out: Out } {
    const m = machine();
    boot(m, [['k', entry('v', 5n)]]);
    const del = m.step({ kind: 'request', nowMs: T0 + 20, requestId: asRequestId(1), session: 1, op: { kind: 'delete', key: 'k' } });
    const version = firstOfKind(del, 'apply').cas;
    const fetch = firstOfKind(del, 'fetch');
    const out = m.step({ kind: 'fetched', nowMs: T0 + 21, token: fetch.token, entries: [['k', tombstone(version)]] });
    return { m, version, out };
  }

  it('pushes the tombstone and purges it only after every peer acked it', () => {
    const { m, version, out } = deleted();
    const pushes = sent(out, 'push');
    expect(pushes.map((p) => p.message.entries)).toEqual([[['k', tombstone(version)]], [['k', tombstone(version)]]]);
    const byPeer = new Map(pushes.map((p) => [p.to, p.message.batch]));
    const first = m.step(message(N2, { kind: 'push_ack', batch: byPeer.get(N2) ?? -1, versions: [['k', version]] }));
    expect(ofKind(first, 'purge')).toEqual([]);
    expect(m.indexEntry('k')?.tombstone).toBe(true);
    const older = m.step(message(N3, { kind: 'push_ack', batch: byPeer.get(N3) ?? -1, versions: [['k', version - 1n]] }));
    expect(ofKind(older, 'purge')).toEqual([]);
    const second = m.step(message(N3, { kind: 'push_ack', batch: byPeer.get(N3) ?? -1, versions: [['k', version]] }));
    expect(ofKind(second, 'purge')).toEqual([{ kind: 'purge', tombstones: [['k', version]] }]);
    expect(m.indexEntry('k')).toBeUndefined();
  });

  it('does not resurrect a purged key from a late copy: acks it and answers with the tombstone', () => {
    const { m, version, out } = deleted();
    for (const push of sent(out, 'push')) m.step(message(push.to, { kind: 'push_ack', batch: push.message.batch, versions: [['k', version]] }));
    expect(m.indexEntry('k')).toBeUndefined();
    const late = m.step(message(N2, { kind: 'push', batch: 99, entries: [['k', entry('v', 5n)]] }));
    expect(ofKind(late, 'put')).toEqual([]);
    expect(sent(late, 'push_ack')).toEqual([{ to: N2, message: { kind: 'push_ack', batch: 99, versions: [] } }]);
    // N2 missed the delete (say its replica was emptied): it gets the tombstone back.
    expect(sent(late, 'push').map((p) => [p.to, p.message.entries])).toEqual([[N2, [['k', tombstone(version)]]]]);
    const newer = m.step(message(N2, { kind: 'push', batch: 100, entries: [['k', entry('w', version + 1n)]] }));
    expect(ofKind(newer, 'put')).toHaveLength(1);
  });

  it('learns from matching digests that a peer holds the tombstone', () => {
    const { m, version, out } = deleted();
    const ackN2 = sent(out, 'push').find((p) => p.to === N2);
    m.step(message(N2, { kind: 'push_ack', batch: ackN2?.message.batch ?? -1, versions: [['k', version]] }));
    const twin = new VersionIndex();
    twin.set('k', { version, tombstone: true, expiresAtMs: 0, heldByMask: 0, touchedSeq: 0, claimedSeq: 0 });
    const different = m.step(message(N3, { kind: 'ae_groups', round: 1, groups: new Array(GROUP_COUNT).fill(0) }));
    expect(ofKind(different, 'purge')).toEqual([]);
    const matching = m.step(message(N3, { kind: 'ae_groups', round: 2, groups: twin.groupDigestList() }));
    expect(ofKind(matching, 'purge')).toEqual([{ kind: 'purge', tombstones: [['k', version]] }]);
    expect(itemAt(sent(matching, 'ae_buckets'), 0).message).toMatchObject({ groups: [], buckets: [] });
  });
});

describe('expiry', () => {
  it('collects an entry expired longer than the grace, once every peer holds it, and not before', () => {
    const m = machine(N1, { expiredGraceMs: 1000, sweepEntriesPerTick: 1 });
    const expiring = entry('v', 77n, { expiresAtMs: T0 + 500 });
    boot(m, [['k', expiring]]);
    m.step(message(N2, { kind: 'push_ack', batch: 0, versions: [['k', 77n]] }));
    m.step(message(N3, { kind: 'push_ack', batch: 0, versions: [['k', 77n]] }));
    expect(m.indexEntry('k')?.heldByMask).toBe(0b110);
    const early = m.step({ kind: 'tick', nowMs: T0 + 1400, peersUp: [N2, N3] });
    expect(ofKind(early, 'purge')).toEqual([]);
    const late = m.step({ kind: 'tick', nowMs: T0 + 1500, peersUp: [N2, N3] });
    expect(ofKind(late, 'purge')).toEqual([{ kind: 'purge', tombstones: [['k', 77n]] }]);
    expect(m.indexEntry('k')).toBeUndefined();
  });

  it('sweeps only the entries with an expiry: one among 5,000 that never expire is collected at the first tick past its grace', () => {
    const m = machine(N1, { expiredGraceMs: 1000, sweepEntriesPerTick: 1 });
    const immortal = Array.from({ length: 5000 }, (_, i) => [`key${i}`, entry(`v${i}`, BigInt(100 + i))] as [string, ReturnType<typeof entry>]);
    boot(m, [...immortal, ['k', entry('v', 77n, { expiresAtMs: T0 + 500 })]]);
    m.step(message(N2, { kind: 'push_ack', batch: 0, versions: [['k', 77n]] }));
    m.step(message(N3, { kind: 'push_ack', batch: 0, versions: [['k', 77n]] }));
    expect(ofKind(m.step({ kind: 'tick', nowMs: T0 + 1400, peersUp: [N2, N3] }), 'purge')).toEqual([]);
    // A sweep of the whole index, one entry a tick, would reach k a few thousand ticks from now.
    const late = m.step({ kind: 'tick', nowMs: T0 + 1500, peersUp: [N2, N3] });
    expect(ofKind(late, 'purge')).toEqual([{ kind: 'purge', tombstones: [['k', 77n]] }]);
    expect(m.indexEntry('key4999')?.version).toBe(5099n);
  });
});
