/**
 * The memory guard alone: bytes against memcached's limit, the room of the item's size class, keys
 * against the most a controller indexes, what was admitted since the last poll, and which
 * operations it may refuse at all.
 */

import { describe, expect, it } from 'vitest';
import { isBackendMemory, MemoryGuard } from '../src/store/memory-guard.ts';
import type { SlabState } from '../src/store/slab-room.ts';
import { slabClassSizes } from '../src/store/slab-room.ts';
import type { Op } from '../src/store/types.ts';
import { refused } from '../src/protocol/refusals.ts';

const MB = 1024 * 1024;
const set = (key: string, bytes: number, verb: 'set' | 'append' = 'set'): Op => ({
  kind: 'store', verb, key, flags: 0, expiresAtMs: 0, value: Buffer.alloc(bytes), casUnique: 0n,
});

/** Versions for admissions that no report names: every report covers them. */
let lastVersion = 0n;
const fits = (guard: MemoryGuard, op: Op): boolean => guard.refusal(op, ++lastVersion) === null;

function slabs(freePages: number, classes: SlabState['classes']): SlabState {
  return { pageBytes: MB, freePages, chunkMaxBytes: 512 * 1024, classes, classSizes: slabClassSizes(48, 1.25, 512 * 1024) };
}

describe('MemoryGuard', () => {
  it('refuses nothing before a poll said how much memory there is', () => {
    expect(fits(new MemoryGuard(), set('k', 10 * MB))).toBe(true);
  });

  it('counts what it admitted until the next poll, against 70% of the limit', () => {
    const guard = new MemoryGuard();
    guard.polled({ usedBytes: 0, limitBytes: 10 * MB });
    const admitted = Array.from({ length: 10 }, (_, i) => fits(guard, set(`k${i}`, MB)));
    expect(admitted).toEqual([true, true, true, true, true, true, false, false, false, false]);
    guard.polled({ usedBytes: 2 * MB, limitBytes: 10 * MB }); // deletes freed memory meanwhile
    expect(fits(guard, set('again', MB))).toBe(true);
  });

  it('never refuses what does not store (deletes, reads)', () => {
    const guard = new MemoryGuard();
    guard.polled({ usedBytes: 10 * MB, limitBytes: 10 * MB });
    expect(fits(guard, { kind: 'delete', key: 'k' })).toBe(true);
    expect(fits(guard, { kind: 'get', keys: ['k'] })).toBe(true);
    expect(fits(guard, set('k', 1))).toBe(false);
  });

  it('refuses items whose size class has no room although bytes are free, and keeps a reserve', () => {
    const guard = new MemoryGuard();
    // Few bytes used, every page held by the 152-byte class: no room for a 4 KB item.
    guard.polled({ usedBytes: MB, limitBytes: 64 * MB, slabs: slabs(0, [{ id: 3, chunkBytes: 152, freeChunks: 400_000 }]) });
    expect(fits(guard, set('big', 4000))).toBe(false);
    expect(fits(guard, set('small', 40))).toBe(true);
    // Ten free pages: 4544-byte chunks, 230 a page; 10% and one page are left: 2300 × 0.9 − 230.
    guard.polled({ usedBytes: MB, limitBytes: 64 * MB, slabs: slabs(10, [{ id: 3, chunkBytes: 152, freeChunks: 400_000 }]) });
    const stored = Array.from({ length: 3000 }, (_, i) => fits(guard, set(`b${i}`, 4000))).filter(Boolean).length;
    expect(stored).toBe(Math.floor(2300 * 0.9 - 230));
  });

  it('leaves at most 20% of a class\'s room: a class holding a single free page still takes writes', () => {
    // As after another client filled memcached and deleted its items: no free page left (the
    // large items' class holds them until memcached's slab mover hands them back), but the small
    // class keeps its one page, every chunk free. Leaving a whole page would leave nothing.
    const guard = new MemoryGuard();
    const perPage = Math.floor(MB / 96);
    const classes = [{ id: 1, chunkBytes: 96, freeChunks: perPage }, { id: 39, chunkBytes: 512 * 1024, freeChunks: 120 }];
    guard.polled({ usedBytes: 0, limitBytes: 64 * MB, slabs: slabs(0, classes) });
    const stored = Array.from({ length: perPage }, (_, i) => fits(guard, set(`s${String(i).padStart(5, '0')}`, 1))).filter(Boolean).length;
    expect(stored).toBe(Math.floor(perPage * 0.8));
  });

  it('counts a key written again as memcached does: its item replaced, not one more', () => {
    // As after another client filled memcached and deleted its items: the small class keeps its
    // one page. A bulk load overwriting a few keys must go on; as many new keys may not.
    const perPage = Math.floor(MB / 96);
    const classes = [{ id: 1, chunkBytes: 96, freeChunks: perPage }, { id: 39, chunkBytes: 512 * 1024, freeChunks: 120 }];
    const guard = new MemoryGuard();
    guard.polled({ usedBytes: 0, limitBytes: 64 * MB, slabs: slabs(0, classes) });
    const overwrites = Array.from({ length: 5 * perPage }, (_, i) => fits(guard, set(`k${i % 3}`, 1)));
    expect(overwrites.every(Boolean)).toBe(true);
    const fresh = Array.from({ length: perPage }, (_, i) => fits(guard, set(`n${i}`, 1))).filter(Boolean).length;
    expect(fresh).toBe(Math.floor(perPage * 0.8) - 3);
    // Bytes: the largest of a key's writes; appends add theirs.
    const bytes = new MemoryGuard();
    bytes.polled({ usedBytes: 0, limitBytes: 10 * MB });
    expect(Array.from({ length: 50 }, () => fits(bytes, set('big', MB))).every(Boolean)).toBe(true);
    const appended = Array.from({ length: 10 }, () => fits(bytes, set('big', MB, 'append')));
    expect(appended).toEqual([true, true, true, true, true, false, false, false, false, false]);
    // Peers' pushes of the same keys count the same way (byKey); a snapshot's items count whole.
    const pushed = new MemoryGuard();
    pushed.polled({ usedBytes: 0, limitBytes: 64 * MB, slabs: slabs(0, classes) });
    for (let i = 0; i < 5 * perPage; i++) pushed.arrived([[`k${i % 3}`, 1, BigInt(i + 1)]], true);
    expect(fits(pushed, set('p', 1))).toBe(true);
    const snapshot = new MemoryGuard();
    snapshot.polled({ usedBytes: 0, limitBytes: 64 * MB, slabs: slabs(0, classes) });
    snapshot.arrived(Array.from({ length: perPage }, (_, i) => [`k${i % 3}`, 1, BigInt(i + 1)] as const));
    expect(fits(snapshot, set('s', 1))).toBe(false);
  });

  it('counts only bytes for an append, whose item size depends on the value it extends', () => {
    const guard = new MemoryGuard();
    guard.polled({ usedBytes: MB, limitBytes: 64 * MB, slabs: slabs(0, []) });
    expect(fits(guard, set('k', 4000, 'append'))).toBe(true);
    expect(fits(guard, set('k', 4000))).toBe(false);
  });

  it('refuses, as memcached does, an item longer than memcached takes at all (its -I)', () => {
    const guard = new MemoryGuard();
    guard.polled({ usedBytes: 0, limitBytes: 64 * MB, itemBytesMax: MB });
    expect(guard.refusal(set('k', MB), ++lastVersion)).toEqual(refused('too_large'));
    expect(guard.refusal(set('k', MB - 200), ++lastVersion)).toBeNull();
    expect(guard.refusal(set('k', 50 * MB, 'append'), ++lastVersion)).toEqual(refused('out_of_memory')); // only its bytes count
  });

  it('counts every replica: a peer\'s smaller memcached refuses what ours has room for', () => {
    const guard = new MemoryGuard();
    guard.polled({ usedBytes: 0, limitBytes: 64 * MB });
    guard.peerReported('n2', { memory: { usedBytes: 0, limitBytes: 64 * MB }, poll: 1 });
    guard.peerReported('n3', { memory: { usedBytes: 0, limitBytes: 10 * MB }, poll: 1 });
    const admitted = Array.from({ length: 8 }, (_, i) => fits(guard, set(`k${i}`, MB)));
    expect(admitted).toEqual([true, true, true, true, true, true, false, false]); // 70% of n3's 10 MB
    // A report of the same poll keeps what was admitted since; a later poll replaces it.
    guard.peerReported('n3', { memory: { usedBytes: 0, limitBytes: 10 * MB }, poll: 1 });
    expect(fits(guard, set('same', MB))).toBe(false);
    guard.peerReported('n3', { memory: { usedBytes: 2 * MB, limitBytes: 10 * MB }, poll: 2 });
    expect(fits(guard, set('later', MB))).toBe(true);
    // A peer that is gone counts no more; ours still does: 70% of 64 MB is 44 such items, 7 admitted.
    guard.peerReported('n3', undefined);
    expect(Array.from({ length: 40 }, (_, i) => fits(guard, set(`m${i}`, MB))).filter(Boolean)).toHaveLength(44 - 7);
  });

  it('counts a peer\'s size classes, and an item longer than a peer\'s memcached takes', () => {
    const guard = new MemoryGuard();
    guard.polled({ usedBytes: MB, limitBytes: 64 * MB, slabs: slabs(60, []) });
    guard.peerReported('n2', { memory: { usedBytes: MB, limitBytes: 64 * MB, slabs: slabs(0, [{ id: 3, chunkBytes: 152, freeChunks: 400_000 }]) }, poll: 7 });
    expect(fits(guard, set('big', 4000))).toBe(false);
    expect(fits(guard, set('small', 40))).toBe(true);
    guard.peerReported('n2', undefined);
    guard.peerReported('n3', { memory: { usedBytes: 0, limitBytes: 64 * MB, itemBytesMax: 1000 }, poll: 1 });
    expect(guard.refusal(set('small', 2000), ++lastVersion)).toEqual(refused('too_large'));
  });

  it('counts items another node admitted as they arrive, against every replica, never refusing them', () => {
    const guard = new MemoryGuard();
    guard.polled({ usedBytes: 0, limitBytes: 20 * MB });
    guard.peerReported('n2', { memory: { usedBytes: 0, limitBytes: 10 * MB }, poll: 1 });
    // Six of the seven items of 1 MB that 70% of n2's 10 MB holds arrive from another node.
    guard.arrived(Array.from({ length: 6 }, (_, i) => [`pushed${i}`, MB, BigInt(i + 1)] as const));
    expect(fits(guard, set('mine', MB))).toBe(false);
    // n2's next poll sees what it holds (deletes freed some): what arrived before it is in there.
    guard.peerReported('n2', { memory: { usedBytes: 3 * MB, limitBytes: 10 * MB }, poll: 2 });
    expect(fits(guard, set('mine', MB))).toBe(true);
  });

  it('keeps counting what a replica had not stored when it polled, until a report covers it', () => {
    const guard = new MemoryGuard();
    const stored = (index: bigint) => new Map([[0, index]]);
    guard.polled({ usedBytes: 0, limitBytes: 10 * MB }, stored(0n));
    guard.peerReported('n2', { memory: { usedBytes: 0, limitBytes: 10 * MB }, poll: 1, stored: stored(0n) });
    // Log entries 1-6 admitted: 70% of 10 MB holds six values of 1 MB.
    expect([1n, 2n, 3n, 4n, 5n, 6n, 7n].map((index) => guard.refusal(set(`k${index}`, MB), index))).toEqual([null, null, null, null, null, null, refused('out_of_memory')]);
    // Our replica polled once it had applied 3 of them, n2 once it had applied 5: the rest is
    // still on its way there and still counts.
    guard.polled({ usedBytes: 3 * MB, limitBytes: 10 * MB }, stored(3n));
    guard.peerReported('n2', { memory: { usedBytes: 5 * MB, limitBytes: 10 * MB }, poll: 2, stored: stored(5n) });
    expect(guard.refusal(set('k7', MB), 7n)).toEqual(refused('out_of_memory'));
    // Polls that cover all six, after deletes left 2 MB in each: room for four more.
    guard.polled({ usedBytes: 2 * MB, limitBytes: 10 * MB }, stored(6n));
    expect(guard.refusal(set('k7', MB), 7n)).toEqual(refused('out_of_memory')); // n2 still counts 6
    guard.peerReported('n2', { memory: { usedBytes: 2 * MB, limitBytes: 10 * MB }, poll: 3, stored: stored(6n) });
    expect([7n, 8n, 9n, 10n, 11n].map((index) => guard.refusal(set(`k${index}`, MB), index))).toEqual([null, null, null, null, refused('out_of_memory')]);
  });

  it('reads marks per writer: eventual mode\'s own writes and those arriving from each peer', () => {
    const writerOf = (version: bigint) => Number(version % 16n);
    const version = (time: number, node: number) => BigInt(time * 16 + node);
    const guard = new MemoryGuard(writerOf);
    guard.peerReported('n2', { memory: { usedBytes: 0, limitBytes: 10 * MB }, poll: 1 });
    // Ours (node 0) at times 1-3; node 2's at times 1-3 arrive here, to be stored everywhere.
    for (const time of [1, 2, 3]) expect(guard.refusal(set(`mine${time}`, MB), version(time, 0))).toBeNull();
    guard.arrived([1, 2, 3].map((time) => [`theirs${time}`, MB, version(time, 2)] as const));
    expect(guard.refusal(set('one-more', MB), version(4, 0))).toEqual(refused('out_of_memory'));
    // n2 had stored ours up to time 2, and node 2's (its own writes) up to time 3, when it polled;
    // a writer it does not name (node 1) would count whole.
    guard.peerReported('n2', { memory: { usedBytes: 4.5 * MB, limitBytes: 10 * MB }, poll: 2, stored: new Map([[0, version(2, 0)], [2, version(3, 2)]]) });
    expect(guard.refusal(set('one-more', MB), version(4, 0))).toBeNull(); // 4.5 + mine3 + this: under 7 MB
    expect(guard.refusal(set('two-more', MB), version(5, 0))).toEqual(refused('out_of_memory'));
  });

  it('counts an arrival that came out of order until the mark passes it', () => {
    const guard = new MemoryGuard();
    guard.peerReported('n2', { memory: { usedBytes: 0, limitBytes: 10 * MB }, poll: 1 });
    guard.arrived([['late', MB, 9n], ['early', MB, 4n]]);
    guard.peerReported('n2', { memory: { usedBytes: 0, limitBytes: 10 * MB }, poll: 2, stored: new Map([[0, 5n]]) });
    // Both count still: 5 MB more fit, not 6.
    expect(Array.from({ length: 8 }, (_, i) => guard.refusal(set(`k${i}`, MB), BigInt(10 + i)) === null).filter(Boolean)).toHaveLength(4);
  });

  it('refuses a new key past the most keys some replica\'s controller indexes, and nothing that adds none', () => {
    const guard = new MemoryGuard();
    const memory = { usedBytes: 0, limitBytes: 1024 * MB };
    guard.polled({ ...memory, keys: 90, keysMax: 100 });
    guard.peerReported('n2', { memory: { ...memory, keys: 95, keysMax: 100 }, poll: 1 });
    // n2 has room for five more keys; a key written twice counts once once counted by key.
    const newKeys = Array.from({ length: 8 }, (_, i) => fits(guard, set(`new${i}`, 10)));
    expect(newKeys).toEqual([true, true, true, true, true, false, false, false]);
    expect(fits(guard, set('new0', 10))).toBe(true);
    // Writes of held keys, and verbs that never add a key, go on at the bound.
    expect(guard.refusal(set('held', 10), ++lastVersion, () => true)).toBeNull();
    for (const verb of ['replace', 'append', 'prepend', 'cas'] as const) {
      expect(fits(guard, { ...set('other', 10), verb } as Op), verb).toBe(true);
    }
    // A report that covers them (deletes freed twenty keys): room again.
    guard.peerReported('n2', { memory: { ...memory, keys: 80, keysMax: 100 }, poll: 2 });
    expect(fits(guard, set('again', 10))).toBe(true);
    // Keys arriving from a peer count until a report covers them.
    guard.arrived(Array.from({ length: 20 }, (_, i) => [`arrived${i}`, 10, ++lastVersion] as const));
    expect(fits(guard, set('one-more', 10))).toBe(false);
  });

  it('reads a peer\'s report only when it has the shape of one', () => {
    expect(isBackendMemory({ usedBytes: 1, limitBytes: 2 })).toBe(true);
    expect(isBackendMemory({ usedBytes: 1, limitBytes: 2, slabs: slabs(1, [{ id: 1, chunkBytes: 96, freeChunks: 3 }]) })).toBe(true);
    expect(isBackendMemory(null)).toBe(false);
    expect(isBackendMemory({ usedBytes: '1', limitBytes: 2 })).toBe(false);
    expect(isBackendMemory({ usedBytes: 1, limitBytes: -2 })).toBe(false);
    const badClasses = { pageBytes: 1, freePages: 0, chunkMaxBytes: 1, classes: [{ id: 1 }], classSizes: null };
    expect(isBackendMemory({ usedBytes: 1, limitBytes: 2, slabs: badClasses })).toBe(false);
    expect(isBackendMemory({ usedBytes: 1, limitBytes: 2, items: 3, keys: 4, keysMax: 5 })).toBe(true);
    expect(isBackendMemory({ usedBytes: 1, limitBytes: 2, keys: 4 })).toBe(false);
    expect(isBackendMemory({ usedBytes: 1, limitBytes: 2, keys: 4, keysMax: -1 })).toBe(false);
    expect(isBackendMemory({ usedBytes: 1, limitBytes: 2, items: '3' })).toBe(false);
  });
});
