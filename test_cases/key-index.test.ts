/**
 * The replica's key index (src/store/key-index.ts): records kept by slot in typed arrays. A ref
 * names a record only while it is current: a write that replaced it, a delete, or a clear makes
 * every ref taken before stale, even when the slot is given to another key, so a write settled
 * after an await never settles a newer record. Slots are reused and the arrays grow without
 * losing what they hold.
 */

import { describe, expect, it } from 'vitest';
import { KeyIndex, NO_RECORD } from '../src/store/key-index.ts';
import type { Entry } from '../src/store/types.ts';

function entry(cas: bigint, extra: Partial<Entry> = {}): Entry {
  return { value: Buffer.from('v'), flags: 0, expiresAtMs: 0, cas, ...extra };
}

describe('KeyIndex', () => {
  it('keeps each field of a record, and a listed key reads as cas -1, unsettled', () => {
    const index = new KeyIndex();
    const ref = index.remember('a', entry(7n, { expiresAtMs: 1_800_000_000_000 }), true);
    expect(index.record(ref)).toEqual({
      cas: 7n, expiresAtMs: 1_800_000_000_000, tombstone: false, settled: true, counted: false, listed: false,
    });
    index.remember('t', entry(2n ** 64n - 1n, { tombstone: true, value: Buffer.alloc(0) }), false);
    expect(index.record(index.refOf('t'))).toMatchObject({ cas: 2n ** 64n - 1n, tombstone: true, settled: false });
    index.remember('c', entry(3n, { resetCas: 1n }), true);
    expect(index.counted(index.refOf('c'))).toBe(true);
    index.addListed('l');
    index.addListed('a'); // held already: unchanged
    expect(index.record(index.refOf('l'))).toEqual({ cas: -1n, expiresAtMs: 0, tombstone: false, settled: false, counted: false, listed: true });
    expect(index.record(index.refOf('a'))).toMatchObject({ cas: 7n, listed: false });
    expect(index.refOf('missing')).toBe(NO_RECORD);
    expect(index.record(NO_RECORD)).toBeUndefined();
    expect(index.size).toBe(4);
    expect(new Set(index.keys())).toEqual(new Set(['a', 't', 'c', 'l']));
  });

  it('makes a ref stale once a write replaced its record, and a stale ref changes nothing', () => {
    const index = new KeyIndex();
    const first = index.remember('k', entry(1n), false);
    const second = index.remember('k', entry(2n), false);
    expect(index.isCurrent(first)).toBe(false);
    expect(index.isCurrent(second)).toBe(true);
    index.setSettled(first, true); // the first write's ack arrives after the second was remembered
    expect(index.settled(second)).toBe(false);
    index.setSettled(second, true);
    expect(index.record(index.refOf('k'))).toMatchObject({ cas: 2n, settled: true });
    index.describe(first, entry(9n));
    expect(index.cas(index.refOf('k'))).toBe(2n);
  });

  it('never lets a ref of a deleted key name the key that reuses its slot', () => {
    const index = new KeyIndex();
    const old = index.remember('gone', entry(1n), false);
    index.delete('gone');
    expect(index.has('gone')).toBe(false);
    const reused = index.remember('new', entry(5n), false);
    expect(reused % 2 ** 24).toBe(old % 2 ** 24); // the freed slot is given again
    expect(index.isCurrent(old)).toBe(false);
    index.setSettled(old, true);
    expect(index.settled(reused)).toBe(false);
    index.deleteIf('new', old);
    expect(index.has('new')).toBe(true);
    index.deleteIf('new', reused);
    expect(index.has('new')).toBe(false);
  });

  it('makes every ref stale on clear, also once the slots are given out again', () => {
    const index = new KeyIndex();
    const refs = ['a', 'b', 'c'].map((key, at) => index.remember(key, entry(BigInt(at)), false));
    index.clear();
    expect(index.size).toBe(0);
    const again = ['x', 'y', 'z'].map((key) => index.remember(key, entry(1n), false));
    for (const ref of refs) expect(index.isCurrent(ref)).toBe(false);
    for (const ref of again) expect(index.isCurrent(ref)).toBe(true);
    index.setSettled(refs[0] ?? NO_RECORD, true);
    expect(index.settled(again[0] ?? NO_RECORD)).toBe(false);
  });

  it('grows past its first capacity, reusing freed slots, and keeps every record', () => {
    const index = new KeyIndex();
    const count = 5000;
    for (let at = 0; at < count; at += 1) index.remember(`k${at}`, entry(BigInt(at), { expiresAtMs: at }), at % 2 === 0);
    for (let at = 0; at < count; at += 3) index.delete(`k${at}`);
    for (let at = 0; at < count; at += 3) index.remember(`r${at}`, entry(BigInt(count + at)), true);
    expect(index.size).toBe(count + 0); // as many deleted as added again
    for (let at = 0; at < count; at += 1) {
      const ref = index.refOf(`k${at}`);
      if (at % 3 === 0) expect(ref).toBe(NO_RECORD);
      else expect(index.record(ref)).toMatchObject({ cas: BigInt(at), expiresAtMs: at, settled: at % 2 === 0 });
    }
    for (let at = 0; at < count; at += 3) expect(index.cas(index.refOf(`r${at}`))).toBe(BigInt(count + at));
    const entries = [...index.entries()];
    expect(entries).toHaveLength(count);
  });
});
