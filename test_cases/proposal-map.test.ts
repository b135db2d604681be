/**
 * The log's map of write requests by identity (origin, incarnation, request id): each part tells
 * requests apart, so a forward the network duplicated is recognised and one of another run of its
 * controller is not; `size` follows sets and deletes, and a delete of what is absent changes nothing.
 */

import { describe, expect, it } from 'vitest';
import { ProposalMap } from '../src/consistency/log/proposal-map.ts';
import { asPeerId, asRequestId } from '../src/consistency/types.ts';

const [n1, n2] = [asPeerId('n1'), asPeerId('n2')];
const [r1, r2] = [asRequestId(1), asRequestId(2)];

describe('ProposalMap', () => {
  it('tells requests apart by every part of their identity, and counts them', () => {
    const map = new ProposalMap<number>();
    map.set(n1, 4, r1, 10);
    map.set(n1, 4, r2, 11);
    map.set(n1, 5, r1, 12);
    map.set(n2, 4, r1, 13);
    expect(map.size).toBe(4);
    map.set(n1, 4, r1, 20);
    expect(map.size).toBe(4);
    expect([map.get(n1, 4, r1), map.get(n1, 4, r2), map.get(n1, 5, r1), map.get(n2, 4, r1)]).toEqual([20, 11, 12, 13]);
    expect(map.has(n2, 5, r1)).toBe(false);
    expect(map.get(n2, 4, r2)).toBeUndefined();
  });

  it('forgets what is deleted, and ignores a delete of what it does not hold', () => {
    const map = new ProposalMap<true>();
    map.set(n1, 4, r1, true);
    map.set(n1, 4, r2, true);
    map.delete(n1, 4, r1);
    map.delete(n1, 4, r1);
    map.delete(n2, 4, r1);
    map.delete(n1, 9, r2);
    expect(map.size).toBe(1);
    expect(map.has(n1, 4, r1)).toBe(false);
    expect(map.has(n1, 4, r2)).toBe(true);
    map.delete(n1, 4, r2);
    expect(map.size).toBe(0);
    map.set(n1, 4, r2, true);
    expect(map.has(n1, 4, r2)).toBe(true);
    map.clear();
    expect([map.size, map.has(n1, 4, r2)]).toEqual([0, false]);
  });
});
