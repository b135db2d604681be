/**
 * Replica semantics on a memory backend: memcached's, plus what replication needs on top. Deletes
 * kept as tombstones and purged only unchanged, conditional (header cas) appends and deletes,
 * merges by greatest cas (decided from a complete key index without a read, distinct idle keys in
 * one backend call), flush_all with a delay capping every expiry, and gat. After a restart the
 * index holds listed keys whose versions it reads only when needed: a log replay over them ends as
 * it did, and a listed key gone meanwhile reads as absent and leaves the index.
 */

import { describe, expect, it } from 'vitest';
import { MemoryBackend } from '../src/store/memory.ts';
import { Replica } from '../src/store/replica.ts';
import { StoreError, type Op } from '../src/store/types.ts';
import { itemAt } from '../src/runtime/item-at.ts';
import { appendOp, CountingBackend, entry, getOp, incrOp, NOW, setOp, values } from './support/replica-kit.ts';

describe('Replica semantics', () => {
  it('keeps deletes as tombstones and purges only unchanged ones', async () => {
    const replica = new Replica(new MemoryBackend(), { tombstones: true });
    await replica.apply(setOp('a', '1'), { cas: 1n, nowMs: NOW });
    await replica.apply(setOp('b', '2'), { cas: 2n, nowMs: NOW });
    expect(await replica.apply({ kind: 'delete', key: 'a' }, { cas: 3n, nowMs: NOW })).toEqual({ kind: 'deleted' });
    expect(await replica.apply({ kind: 'delete', key: 'a' }, { cas: 4n, nowMs: NOW })).toEqual({ kind: 'not_found' });
    expect(values(await replica.read(getOp('a', 'b'), NOW))).toEqual([['b', '2']]);
    expect(await replica.fetch(['a'])).toEqual([['a', { value: Buffer.alloc(0), flags: 0, expiresAtMs: 0, cas: 3n, tombstone: true }]]);
    expect(replica.keyCount()).toBe(2);
    await replica.purge([['a', 2n], ['b', 2n]]); // wrong cas for a; b is no tombstone
    expect((await replica.fetch(null)).map(([key]) => key)).toEqual(['a', 'b']);
    await replica.purge([['a', 3n]]);
    expect((await replica.fetch(null)).map(([key]) => key)).toEqual(['b']);
    expect(await replica.apply({ kind: 'flush_all', delayMs: 0 }, { cas: 9n, nowMs: NOW })).toEqual({ kind: 'ok' });
    expect(await replica.fetch(null)).toEqual([['b', { value: Buffer.alloc(0), flags: 0, expiresAtMs: 0, cas: 9n, tombstone: true }]]);
    expect(await replica.apply({ kind: 'store', verb: 'add', key: 'b', flags: 0, expiresAtMs: 0, value: Buffer.from('x'), casUnique: 0n }, { cas: 10n, nowMs: NOW })).toEqual({ kind: 'stored', cas: 10n });
  });

  it('a conditional (header cas) append or delete changes nothing on a mismatch; the reply carries the new cas', async () => {
    for (const replay of ['plain', 'skip-applied'] as const) {
      const replica = new Replica(new MemoryBackend(), { tombstones: replay === 'plain', replay });
      expect(await replica.apply(setOp('k', 'v'), { cas: 1n, nowMs: NOW })).toEqual({ kind: 'stored', cas: 1n });
      const append = (casUnique: bigint): Op => ({ ...setOp('k', '+'), verb: 'append', casUnique }) as Op;
      expect(await replica.apply(append(7n), { cas: 2n, nowMs: NOW })).toEqual({ kind: 'exists' });
      expect(await replica.apply({ kind: 'delete', key: 'k', casUnique: 7n }, { cas: 3n, nowMs: NOW })).toEqual({ kind: 'exists' });
      expect(itemAt(await replica.fetch(['k']), 0)[1]).toMatchObject({ value: Buffer.from('v'), cas: 1n });
      expect(await replica.apply(append(1n), { cas: 4n, nowMs: NOW })).toEqual({ kind: 'stored', cas: 4n });
      expect((await replica.read(getOp('k'), NOW))).toEqual({ kind: 'values', items: [{ key: 'k', flags: 0, value: Buffer.from('v+'), cas: 4n }] });
      expect(await replica.apply({ kind: 'delete', key: 'k', casUnique: 4n }, { cas: 5n, nowMs: NOW })).toEqual({ kind: 'deleted' });
      expect(values(await replica.read(getOp('k'), NOW))).toEqual([]);
    }
  });

  it('replays a log over listed keys to the state it had, and drops a listed key found gone', async () => {
    const backend = new MemoryBackend();
    const log: Array<[Op, bigint]> = [
      [setOp('a', '1'), 1n], [appendOp('a', '+2'), 2n], [setOp('b', 'x'), 3n], [incrOp('c'), 4n], [setOp('c', '10'), 5n],
      [incrOp('c'), 6n], [setOp('a', '3'), 7n], [appendOp('a', '+4'), 8n], [{ kind: 'delete', key: 'b' }, 9n],
    ];
    const first = new Replica(backend, { tombstones: false, replay: 'skip-applied' });
    for (const [op, cas] of log) await first.apply(op, { cas, nowMs: NOW });
    const before = await first.fetch(['a', 'b', 'c']);
    // A restart beside the kept backend: listed, not read; the log replayed from its start.
    const restarted = new Replica(backend, { tombstones: false, replay: 'skip-applied' });
    expect(await restarted.loadIndex()).toBe(2);
    for (const [op, cas] of log) await restarted.apply(op, { cas, nowMs: NOW });
    expect(await restarted.fetch(['a', 'b', 'c'])).toEqual(before);
    expect(values(await restarted.read(getOp('a', 'c'), NOW))).toEqual([['a', '3+4'], ['c', '11']]);
    // A key listed at start and gone before its first read: absent, and out of the index.
    const again = new Replica(backend, { tombstones: false, replay: 'skip-applied' });
    expect(await again.loadIndex()).toBe(2);
    await backend.delete('a');
    expect(values(await again.read(getOp('a', 'c'), NOW))).toEqual([['c', '11']]);
    expect(again.indexRecord('a')).toBeUndefined();
    expect(again.indexRecord('c')).toMatchObject({ settled: true, cas: 6n });
  });

  it('merges by greatest cas, overwrites on request', async () => {
    const replica = new Replica(new MemoryBackend(), { tombstones: true });
    await replica.put([['k', entry('five', 5n)]], 'merge');
    await replica.put([['k', entry('three', 3n)], ['k', entry('five-again', 5n)], ['j', entry('j', 1n)]], 'merge');
    expect(values(await replica.read(getOp('k', 'j'), NOW))).toEqual([['k', 'five'], ['j', 'j']]);
    await replica.put([['k', entry('', 8n, { tombstone: true })]], 'merge');
    expect(values(await replica.read(getOp('k'), NOW))).toEqual([]);
    await replica.put([['k', entry('old', 1n)]], 'overwrite');
    expect(values(await replica.read(getOp('k'), NOW))).toEqual([['k', 'old']]);
  });

  it('decides a merge from a complete index without reading, and reads when the index cannot tell', async () => {
    const backend = new CountingBackend();
    await backend.set('old', entry('before the replica', 9n));
    const replica = new Replica(backend, { tombstones: true });
    // Index not complete yet: a key it has no record of must be read.
    await replica.put([['old', entry('older', 4n)]], 'merge');
    expect(backend.gets).toBe(1);
    expect(values(await replica.read(getOp('old'), NOW))).toEqual([['old', 'before the replica']]);
    await replica.loadIndex();
    backend.gets = 0;
    await replica.put([['k', entry('five', 5n)], ['old', entry('older', 4n)]], 'merge');
    await replica.put([['k', entry('three', 3n)]], 'merge');
    // 'old' was only listed, its version unknown: read once, which settles its record.
    expect(backend.gets).toBe(1);
    await replica.put([['old', entry('oldest', 2n)]], 'merge');
    expect(backend.gets).toBe(1);
    expect(values(await replica.read(getOp('k', 'old'), NOW))).toEqual([['k', 'five'], ['old', 'before the replica']]);
    // A failed write leaves the record unsettled: the next merge reads what the backend holds.
    backend.failNextSetBeforeStoring = true;
    await expect(replica.put([['k', entry('nine', 9n)]], 'merge')).rejects.toBeInstanceOf(StoreError);
    replica.acknowledgeReset();
    backend.gets = 0;
    await replica.put([['k', entry('seven', 7n)]], 'merge');
    expect(backend.gets).toBe(1);
    expect(values(await replica.read(getOp('k'), NOW))).toEqual([['k', 'seven']]);
  });

  it('merges distinct idle keys in one backend call; a repeated or busy key goes alone, in order', async () => {
    const backend = new CountingBackend();
    const replica = new Replica(backend, { tombstones: true });
    await replica.loadIndex(); // the index is complete: no merge needs a read
    await replica.put([['a', entry('a1', 1n)], ['b', entry('b1', 1n)], ['c', entry('c1', 1n)]], 'merge');
    expect([backend.batches, backend.sets, backend.gets]).toEqual([1, 3, 0]);
    backend.batches = 0;
    backend.sets = 0;
    // 'a' twice (alone, in order), 'b' older than what is held (not written), 'd' new (the batch).
    await replica.put([['a', entry('a3', 3n)], ['a', entry('a2', 2n)], ['b', entry('b0', 0n)], ['d', entry('d1', 1n)]], 'merge');
    expect([backend.batches, backend.sets]).toEqual([1, 2]);
    // A merge issued while a write on its key runs waits for it, then loses to its greater cas.
    const applying = replica.apply(setOp('e', 'e5'), { cas: 5n, nowMs: NOW });
    await replica.put([['e', entry('e4', 4n)], ['f', entry('f1', 1n)]], 'merge');
    await applying;
    expect(values(await replica.read(getOp('a', 'b', 'c', 'd', 'e', 'f'), NOW))).toEqual([
      ['a', 'a3'], ['b', 'b1'], ['c', 'c1'], ['d', 'd1'], ['e', 'e5'], ['f', 'f1'],
    ]);
    // A failing batch leaves the replica suspect, as a failing single write does.
    backend.failNextSetBeforeStoring = true;
    await expect(replica.put([['g', entry('g1', 1n)], ['h', entry('h1', 1n)]], 'merge')).rejects.toBeInstanceOf(StoreError);
    expect(replica.suspect).not.toBeNull();
  });

  it('flush_all with a delay caps every live expiry', async () => {
    const replica = new Replica(new MemoryBackend(), { tombstones: false });
    await replica.apply(setOp('never', 'v'), { cas: 1n, nowMs: NOW });
    await replica.apply(setOp('soon', 'v', NOW + 1000), { cas: 2n, nowMs: NOW });
    await replica.apply(setOp('later', 'v', NOW + 60_000), { cas: 3n, nowMs: NOW });
    await replica.apply({ kind: 'flush_all', delayMs: 5000 }, { cas: 4n, nowMs: NOW });
    const fetched = new Map(await replica.fetch(null));
    expect(fetched.get('never')).toMatchObject({ expiresAtMs: NOW + 5000, cas: 4n });
    expect(fetched.get('soon')).toMatchObject({ expiresAtMs: NOW + 1000, cas: 2n });
    expect(fetched.get('later')).toMatchObject({ expiresAtMs: NOW + 5000, cas: 4n });
    expect(values(await replica.read(getOp('never', 'soon'), NOW + 999))).toHaveLength(2);
    expect(values(await replica.read(getOp('never', 'soon', 'later'), NOW + 4999))).toEqual([['never', 'v'], ['later', 'v']]);
    expect(values(await replica.read(getOp('never', 'soon', 'later'), NOW + 5000))).toEqual([]);
  });

  it('gat reads, sets the expiry and gives a new cas; get skips expired items', async () => {
    const replica = new Replica(new MemoryBackend(), { tombstones: false });
    await replica.apply(setOp('a', '1'), { cas: 1n, nowMs: NOW });
    await replica.apply(setOp('gone', '2', NOW - 1), { cas: 2n, nowMs: NOW });
    const reply = await replica.apply({ kind: 'gat', keys: ['a', 'gone', 'missing', 'a'], expiresAtMs: NOW + 10 }, { cas: 7n, nowMs: NOW });
    expect(reply).toEqual({
      kind: 'values',
      items: [
        { key: 'a', flags: 0, value: Buffer.from('1'), cas: 7n },
        { key: 'a', flags: 0, value: Buffer.from('1'), cas: 7n },
      ],
    });
    expect(values(await replica.apply(getOp('a'), { cas: 8n, nowMs: NOW + 10 }))).toEqual([]);
    expect(() => replica.read(setOp('a', 'x'), NOW)).toThrow();
  });
});
