/**
 * A state transfer's chunks held packed while they wait to be sent: what is sent equals what was
 * read, entry for entry, and chunks that would not pack exactly are held as they are.
 */

import { describe, expect, it } from 'vitest';
import { packChunk, unpackChunk } from '../src/consistency/log/packed-chunk.ts';
import type { KeyedEntry } from '../src/consistency/types.ts';

const plain = (key: string, value: string, cas: bigint, flags = 0, expiresAtMs = 0): KeyedEntry =>
  [key, { value: Buffer.from(value), flags, expiresAtMs, cas }];

describe('packChunk', () => {
  it('packs plain entries into one buffer, and unpacks them equal, values, flags, expiry and cas', () => {
    const entries = [
      plain('a', 'first value', 1n),
      plain('b', '', 2n, 0xffff_ffff, 1_900_000_000_123),
      plain('c', 'x'.repeat(70_000), (1n << 64n) - 1n, 7, 0.5),
      plain('d\u00e9', '\u0000\u00ff', 0n),
    ];
    const held = packChunk(entries);
    expect(Array.isArray(held)).toBe(false);
    // What was read can change or go: the packed chunk holds its own copy.
    for (const [, entry] of entries) entry.value.fill(0x21);
    const again = unpackChunk(held);
    expect(again.map(([key]) => key)).toEqual(['a', 'b', 'c', 'd\u00e9']);
    expect(again.map(([, entry]) => entry.value.toString('latin1'))).toEqual(['first value', '', 'x'.repeat(70_000), '\u0000\u00ff'].map((text) => Buffer.from(text).toString('latin1')));
    expect(again.map(([, entry]) => [entry.flags, entry.expiresAtMs, entry.cas])).toEqual([
      [0, 0, 1n], [0xffff_ffff, 1_900_000_000_123, 2n], [7, 0.5, (1n << 64n) - 1n], [0, 0, 0n],
    ]);
    expect(unpackChunk(held)).toEqual(again);
  });

  it.each([
    ['a tombstone', { tombstone: true }],
    ['a reset version', { resetCas: 3n }],
    ['a counter', { counter: { base: 1n, incs: [], decs: [] } }],
    ['a negative cas', { cas: -1n }],
    ['a cas past 64 bits', { cas: 1n << 64n }],
    ['flags past 32 bits', { flags: 2 ** 32 }],
  ])('holds a chunk with %s as it is', (_name, change) => {
    const odd: KeyedEntry = ['odd', { value: Buffer.from('v'), flags: 0, expiresAtMs: 0, cas: 5n, ...change } as KeyedEntry[1]];
    const entries = [plain('a', '1', 1n), odd];
    const held = packChunk(entries);
    expect(Array.isArray(held)).toBe(true);
    expect(unpackChunk(held)).toEqual(entries);
  });

  it('holds an empty chunk as it is', () => {
    expect(unpackChunk(packChunk([]))).toEqual([]);
  });
});
