/**
 * Causal mode, a peer's batch holding entries whose versions name no node of the cluster: items an
 * ordered mode, or memcached itself, stamped (a cas that is a log index, or memcached's own counter)
 * and the sender's replica still held, or a peer's bad bytes. Such a version is news to every
 * vector: the receiver takes the entry as any other, and never indexes its vectors by it (which
 * crashed a causal controller started over replicas a linearizability run had written).
 */

import { describe, expect, it } from 'vitest';
import { versionNode } from '../src/consistency/hlc.ts';
import { entry as stored, N2, N3, node, version } from './support/causal-node.ts';


describe('causal mode: versions that name no node of the cluster', () => {
  it('a snapshot and a chain batch with such entries are taken, and nothing throws', () => {
    const foreign = 7n; // a log index as cas: node 7 of 3
    expect(versionNode(foreign)).toBeGreaterThanOrEqual(3);
    const n1 = node();
    n1.advance(100);
    const x2 = version(1, 1030);
    expect(() => n1.snapshot(N2, [['logged', stored(foreign)], ['x2', stored(x2)]], [0n, x2, 0n])).not.toThrow();
    expect([...n1.replica.keys()].sort()).toEqual(['logged', 'x2']);
    const x3 = version(2, 1040);
    expect(() => n1.chain(N3, [['other', stored(12n)], ['x3', stored(x3)]], x3, [0n, 0n, 0n])).not.toThrow();
    expect(n1.replica.has('x3')).toBe(true);
  });
});
