/** SessionOrder: which reads of a pipelining connection wait, and which go, as its requests settle. */

import { describe, expect, it } from 'vitest';
import { SessionOrder } from '../src/consistency/log/session-order.ts';
import { asRequestId, type RequestId } from '../src/consistency/types.ts';

/** Request ids, as many as numbers given (a tuple, so each can be named by destructuring). */
const ids = <const Numbers extends readonly number[]>(...numbers: Numbers): { [Place in keyof Numbers]: RequestId } =>
  numbers.map(asRequestId) as { [Place in keyof Numbers]: RequestId };

describe('SessionOrder', () => {
  it('holds reads behind an unsettled write and releases those before the next write as it settles', () => {
    const order = new SessionOrder();
    const [w1, r1, r2, w2, r3] = ids(1, 2, 3, 4, 5);
    order.add(1, w1, 'write');
    expect(order.hasUnsettledWrite(1)).toBe(true);
    expect(order.hasUnsettledWrite(2)).toBe(false);
    order.add(1, r1, 'held');
    order.add(1, r2, 'held');
    order.add(1, w2, 'write');
    order.add(1, r3, 'held');
    expect(order.isHeld(r1)).toBe(true);
    expect(order.settle(w1)).toEqual([r1, r2]);
    expect(order.isHeld(r1)).toBe(false);
    expect(order.isHeld(r3)).toBe(true);
    expect(order.settle(r1)).toEqual([]);
    expect(order.settle(r2)).toEqual([]);
    expect(order.settle(w2)).toEqual([r3]);
    expect(order.settle(r3)).toEqual([]);
    expect(order.size).toBe(0);
    expect(order.hasUnsettledWrite(1)).toBe(false);
  });

  it('hands over the reads sent before a write, held or started, and keeps the rest', () => {
    const order = new SessionOrder();
    const [r0, w1, r1, w2, r2] = ids(10, 11, 12, 13, 14);
    order.add(3, r0, 'read');
    order.add(3, w1, 'write');
    order.add(3, r1, 'held');
    order.add(3, w2, 'write');
    order.add(3, r2, 'held');
    // w2 is applied while w1 is still unsettled (w1 was lost): r0 and r1 must not see w2.
    expect(order.takeReadsBefore(w2)).toEqual([r0, r1]);
    expect(order.size).toBe(3);
    expect(order.settle(w2)).toEqual([]); // r2 still waits for w1
    expect(order.settle(w1)).toEqual([r2]);
    expect(order.settle(r2)).toEqual([]);
    expect(order.size).toBe(0);
  });

  it('ignores requests it does not track', () => {
    const order = new SessionOrder();
    expect(order.settle(asRequestId(99))).toEqual([]);
    expect(order.takeReadsBefore(asRequestId(99))).toEqual([]);
    expect(order.isHeld(asRequestId(99))).toBe(false);
  });
  it('hands over, for a jump past unsettled writes, every read sent before one, in every session', () => {
    const order = new SessionOrder();
    const [r0, w1, r1, w2, r2, r3, w4, q1] = ids(20, 21, 22, 23, 24, 25, 26, 27);
    order.add(1, r0, 'read');
    order.add(1, w1, 'write');
    order.add(1, r1, 'held');
    order.add(1, w2, 'write');
    order.add(1, r2, 'held'); // after the last write: it must see them, and may
    order.add(2, r3, 'read');
    order.add(2, w4, 'write');
    order.add(3, q1, 'read'); // no write after it
    expect(order.takeReadsBeforeUnsettledWrites()).toEqual([r0, r1, r3]);
    expect(order.size).toBe(5);
    expect(order.settle(w1)).toEqual([]);
    expect(order.settle(w2)).toEqual([r2]);
    expect(order.isHeld(q1)).toBe(false);
  });

  it('names the later writes of a session, and a write overtaken by a later write that settled first', () => {
    const order = new SessionOrder();
    const [w1, r1, w2, w3, other] = ids(1, 2, 3, 4, 5);
    order.add(1, w1, 'write');
    order.add(1, r1, 'held');
    order.add(1, w2, 'write');
    order.add(1, w3, 'write');
    order.add(2, other, 'write');
    expect(order.writesAfter(w1)).toEqual([w2, w3]);
    expect(order.writesAfter(w3)).toEqual([]);
    // A read settling (refused) changes no write's place; a later write settling does.
    order.settle(r1);
    expect(order.isOvertaken(w1)).toBe(false);
    order.settle(w3);
    expect(order.isOvertaken(w1)).toBe(true);
    expect(order.isOvertaken(w2)).toBe(true);
    expect(order.isOvertaken(other)).toBe(false);
    expect(order.writesAfter(w1)).toEqual([w2]);
  });
});
