/**
 * Causal mode, a snapshot from a node whose replica is being rebuilt (its rebuild gate shut): the
 * sets it took meanwhile depend on writes it lost and has not got back, so its snapshot is no
 * causally closed cut. It says so (`needs`), and its receiver merges it only once it sees those
 * writes of every other node, or holds that node's own snapshot too: a reader there never sees
 * such a set without the write its writer may have read.
 */

import { describe, expect, it } from 'vitest';
import { causalMessageProblem } from '../src/consistency/causal/messages.ts';
import { entry, N2, N3, node, resetAfterSeeingX, version, type Batch } from './support/causal-node.ts';

/** The batch acks n1 sent `to` a peer for the batch ending at `batchTo`. */
const acksOf = (n1: ReturnType<typeof node>, to: string, batchTo: bigint): number =>
  n1.sent.filter(({ to: peer, message }) => peer === to && message.kind === 'batch_ack' && !message.resync && message.to === batchTo).length;

describe('causal mode: a snapshot that depends on more than it holds', () => {
  it('is sent with what its entries need while the sender rebuilds, and without once it is rebuilt', () => {
    const { n1, x } = resetAfterSeeingX();
    // A set taken meanwhile depends on x, which n1 no longer holds.
    n1.set('s');
    const snapshotTo = (since: number): Batch[] =>
      n1.sent.slice(since).filter(({ to, message }) => to === N3 && message.kind === 'batch' && message.snapshot).map(({ message }) => message as Batch);

    // n3 asks for n1's whole replica.
    let since = n1.sent.length;
    n1.receive(N3, { kind: 'batch_ack', to: 0n, visible: [0n, 0n, 0n], resync: true });
    const rebuilding = snapshotTo(since);
    expect(rebuilding.length).toBe(1);
    const [first] = rebuilding;
    expect(first?.entries.map(([key]) => key)).toContain('s');
    expect(first?.deps[1]).toBeLessThan(x);
    expect(first?.needs?.[1]).toBe(x);

    // n2's snapshot brings x back: the gate opens, and the next snapshot is a closed cut again.
    n1.snapshot(N2, [['x', entry(x)]], [0n, x, 0n]);
    expect(n1.get('x')).toBe('read');
    since = n1.sent.length;
    n1.receive(N3, { kind: 'batch_ack', to: 0n, visible: [0n, 0n, 0n], resync: true });
    const rebuilt = snapshotTo(since);
    expect(rebuilt.length).toBe(1);
    expect(rebuilt[0]?.needs).toBeUndefined();
    expect(rebuilt[0]?.deps[1]).toBe(x);
  });

  it('is sent again, whole and closed, once the rebuild is done, to a peer that had not acknowledged it', () => {
    const { n1, x } = resetAfterSeeingX({ peersAck: false });
    n1.set('s');
    const since = n1.sent.length;
    n1.receive(N3, { kind: 'batch_ack', to: 0n, visible: [0n, 0n, 0n], resync: true });
    const toN3 = (): Batch[] =>
      n1.sent.slice(since).filter(({ to, message }) => to === N3 && message.kind === 'batch' && message.snapshot).map(({ message }) => message as Batch);
    expect(toN3().map((batch) => batch.needs?.[1])).toEqual([x]);
    // n3 waits for x (it never acknowledges); n2's snapshot brings x back here.
    n1.snapshot(N2, [['x', entry(x)]], [0n, x, 0n]);
    n1.advance(100);
    const sent = toN3();
    expect(sent.length).toBe(2);
    expect(sent[1]?.needs).toBeUndefined();
    expect(sent[1]?.entries.map(([key]) => key).sort()).toEqual(['s', 'x']);
  });

  it('waits, unacknowledged, until what it needs is visible, then is merged and acknowledged', () => {
    const n1 = node();
    n1.advance(100);
    const x3 = version(2, 1040);
    const s2 = version(1, 1060);
    // n2 lost x3 with its memcached; its set s depends on it.
    n1.snapshot(N2, [['s', entry(s2)]], [0n, s2, 0n], [0n, s2, x3]);
    expect(n1.replica.has('s')).toBe(false);
    expect(acksOf(n1, N2, s2)).toBe(0);
    expect(n1.visibleVector()[1]).toBe(0n);
    // A part of it sent again (n2's ack timeout) is not acknowledged either.
    n1.snapshot(N2, [['s', entry(s2)]], [0n, s2, 0n], [0n, s2, x3]);
    expect(acksOf(n1, N2, s2)).toBe(0);
    // Ticks past resyncAfterMs ask n2 for nothing new: a fresh snapshot would wait as long.
    const since = n1.sent.length;
    for (let ticks = 0; ticks < 60; ticks++) n1.advance(100);
    expect(n1.asks(N2, since)).toBe(0);
    expect(n1.replica.has('s')).toBe(false);

    // n3's chain brings x3: s may be seen now.
    n1.chain(N3, [['x3', entry(x3)]], x3, [0n, 0n, 0n]);
    expect(n1.replica.get('x3')?.cas).toBe(x3);
    expect(n1.replica.get('s')?.cas).toBe(s2);
    expect(acksOf(n1, N2, s2)).toBe(1);
    expect(n1.visibleVector()[1]).toBe(s2);
  });

  it('is merged at once when what it needs is visible already', () => {
    const n1 = node();
    n1.advance(100);
    const x3 = version(2, 1040);
    const s2 = version(1, 1060);
    n1.chain(N3, [['x3', entry(x3)]], x3, [0n, 0n, 0n]);
    n1.snapshot(N2, [['s', entry(s2)]], [0n, s2, 0n], [0n, s2, x3]);
    expect(n1.replica.get('s')?.cas).toBe(s2);
    expect(acksOf(n1, N2, s2)).toBe(1);
  });

  it('merges two snapshots that each need the other sender\'s writes together, not never', () => {
    const n1 = node();
    n1.advance(100);
    const x2 = version(1, 1030);
    const x3 = version(2, 1040);
    const s2 = version(1, 1060);
    const s3 = version(2, 1070);
    n1.snapshot(N2, [['s2', entry(s2)], ['x2', entry(x2)]], [0n, s2, 0n], [0n, s2, x3]);
    expect(n1.replica.has('s2')).toBe(false);
    // n3's snapshot from before it wrote x3 does not cover what n2's needs: neither is merged.
    const early = version(2, 1035);
    n1.snapshot(N3, [['e3', entry(early)]], [0n, 0n, early], [0n, x2, early]);
    expect(n1.replica.size).toBe(0);
    n1.snapshot(N3, [['s3', entry(s3)], ['x3', entry(x3)]], [0n, 0n, s3], [0n, x2, s3]);
    expect([...n1.replica.keys()].sort()).toEqual(['s2', 's3', 'x2', 'x3']);
    expect([acksOf(n1, N2, s2), acksOf(n1, N3, s3)]).toEqual([1, 1]);
    expect(n1.parked()).toBe(0);
  });

  it('is a malformed message anywhere but on a snapshot, or of the wrong length', () => {
    const limits = { keyBytesMax: 250, valueBytesMax: 1024, nodeCount: 3, entriesMax: 100, partsMax: 10 };
    const batch = { kind: 'batch', snapshot: true, base: 0n, prev: 0n, to: 5n, deps: [0n, 5n, 0n], part: 0, parts: 1, entries: [] };
    expect(causalMessageProblem({ ...batch, needs: [0n, 5n, 7n] }, limits)).toBeNull();
    expect(causalMessageProblem({ ...batch, snapshot: false, needs: [0n, 5n, 7n] }, limits)).toBe('batch: bad needs vector');
    expect(causalMessageProblem({ ...batch, needs: [0n, 5n] }, limits)).toBe('batch: bad needs vector');
    expect(causalMessageProblem({ ...batch, needs: [0n, 5n, -1n] }, limits)).toBe('batch: bad needs vector');
  });
});
