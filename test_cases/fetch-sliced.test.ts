/**
 * A fetch of the whole replica comes back to the mode in slices, one per turn of the event loop:
 * stepped whole, a replica of 1,500,000 keys stopped a controller for 6-8 s (no heartbeat, no
 * status page, no client). The effect runner cuts a `sliced` fetch's result into slices of
 * FETCHED_SLICE_ENTRIES, all but the last marked `more`; eventual mode holds requests until the
 * last, indexes each slice as it comes, and tells keys absent from the replica only once the
 * whole result is in.
 */

import { describe, expect, it } from 'vitest';
import type { Event, KeyedEntry } from '../src/consistency/types.ts';
import { asRequestId } from '../src/consistency/types.ts';
import { FETCHED_SLICE_ENTRIES } from '../src/controller/effects.ts';
import { boot, entry, firstOfKind, machine, message, N2, ofKind, T0 } from './support/eventual-kit.ts';
import { runner } from './support/effect-runner-kit.ts';

const entries = (count: number, prefix = 'k'): KeyedEntry[] =>
  Array.from({ length: count }, (_, i) => [`${prefix}${i}`, entry(`v${i}`, BigInt(100 + i))]);

describe('the effect runner', () => {
  it('hands a sliced fetch back in slices, one per turn, all but the last marked more', async () => {
    const node = runner();
    const total = 2 * FETCHED_SLICE_ENTRIES + 5;
    node.effects.carryOut({ kind: 'fetch', token: 7, keys: null, sliced: true });
    node.fetches[0]?.resolve(entries(total));
    await new Promise((resolve) => setImmediate(resolve));
    const fetched = (): Array<Extract<Event<unknown>, { kind: 'fetched' }>> =>
      node.events.filter((event): event is Extract<Event<unknown>, { kind: 'fetched' }> => event.kind === 'fetched');
    // One slice per turn: the rest have not come yet.
    expect(fetched().length).toBe(1);
    for (let turn = 0; turn < 10 && fetched().length < 3; turn += 1) await new Promise((resolve) => setImmediate(resolve));
    expect(fetched().map((event) => [event.token, event.entries.length, event.more ?? false])).toEqual([
      [7, FETCHED_SLICE_ENTRIES, true],
      [7, FETCHED_SLICE_ENTRIES, true],
      [7, 5, false],
    ]);
    expect(fetched().flatMap((event) => event.entries)).toEqual(entries(total));
  });

  it('hands a paced fetch back a slice at a time, each only when a fetch_more asks, until the last or a stop', async () => {
    const node = runner();
    node.paced.slices = [entries(2, 'a'), entries(2, 'b'), entries(1, 'c')];
    const turns = async (): Promise<void> => {
      for (let turn = 0; turn < 5; turn += 1) await new Promise((resolve) => setImmediate(resolve));
    };
    const fetched = (): Array<[number, string[], boolean]> => node.events.flatMap((event) =>
      (event.kind === 'fetched' ? [[event.token, event.entries.map(([key]) => key), event.more ?? false] as [number, string[], boolean]] : []));
    node.effects.carryOut({ kind: 'fetch', token: 9, keys: null, paced: true });
    await turns();
    expect(fetched()).toEqual([[9, ['a0', 'a1'], true]]);
    node.effects.carryOut({ kind: 'fetch_more', token: 9 });
    await turns();
    node.effects.carryOut({ kind: 'fetch_more', token: 9 });
    await turns();
    expect(fetched()).toEqual([[9, ['a0', 'a1'], true], [9, ['b0', 'b1'], true], [9, ['c0'], false]]);
    // Done: asking again reads nothing.
    node.effects.carryOut({ kind: 'fetch_more', token: 9 });
    await turns();
    expect(node.paced.read).toBe(3);
    // Stopped: its next asks read nothing either.
    node.paced.read = 0;
    node.effects.carryOut({ kind: 'fetch', token: 10, keys: null, paced: true });
    node.effects.carryOut({ kind: 'fetch_more', token: 10, stop: true });
    node.effects.carryOut({ kind: 'fetch_more', token: 10 });
    await turns();
    expect(node.paced.read).toBe(1);
  });

  it('hands a fetch not marked sliced back whole', async () => {
    const node = runner();
    node.effects.carryOut({ kind: 'fetch', token: 8, keys: null });
    node.fetches[0]?.resolve(entries(FETCHED_SLICE_ENTRIES + 1));
    await new Promise((resolve) => setImmediate(resolve));
    expect(node.events.map((event) => (event.kind === 'fetched' ? [event.entries.length, event.more ?? false] : event.kind))).toEqual([
      [FETCHED_SLICE_ENTRIES + 1, false],
    ]);
  });
});

describe('eventual mode, given its start-up fetch in slices', () => {
  it('holds requests until the last slice, and indexes every slice as it comes', () => {
    const m = machine();
    const first = m.step({ kind: 'request', nowMs: T0, requestId: asRequestId(1), session: 1, op: { kind: 'get', keys: ['a0'] } });
    const rebuild = firstOfKind(first, 'fetch');
    expect(rebuild).toMatchObject({ keys: null, sliced: true });
    const a = entries(3, 'a');
    const b = entries(3, 'b');
    const one = m.step({ kind: 'fetched', nowMs: T0 + 1, token: rebuild.token, entries: a, more: true });
    expect(ofKind(one, 'read')).toEqual([]);
    expect(m.readsLocally()).toBe(false);
    expect(m.indexEntry('a2')?.version).toBe(102n);
    // A peer's push between slices is merged, and the slices after it do not undo it.
    const pushed = m.step(message(N2, { kind: 'push', batch: 1, entries: [['b1', entry('newer', 900n)]] }, T0 + 2));
    expect(ofKind(pushed, 'put').length).toBe(1);
    const two = m.step({ kind: 'fetched', nowMs: T0 + 3, token: rebuild.token, entries: b });
    expect(ofKind(two, 'read')).toEqual([expect.objectContaining({ requestId: 1 })]);
    expect(m.readsLocally()).toBe(true);
    expect(m.indexEntry('a0')?.version).toBe(100n);
    expect(m.indexEntry('b1')?.version).toBe(900n);
    expect(m.indexEntry('b2')?.version).toBe(102n);
    expect(m.status().applied).toBe('6');
  });

  it('drops keys the replica no longer holds only once the whole result is in', () => {
    const m = machine();
    boot(m, entries(3, 'a'));
    // flush_all: every key is fetched back, in slices.
    const flush = m.step({ kind: 'request', nowMs: T0 + 20, requestId: asRequestId(1), session: 1, op: { kind: 'flush_all', delayMs: 0 } });
    const all = firstOfKind(flush, 'fetch');
    expect(all).toMatchObject({ keys: null, sliced: true });
    m.step({ kind: 'fetched', nowMs: T0 + 21, token: all.token, entries: [['a0', entry('v0', 100n)]], more: true });
    expect(m.indexEntry('a1')?.version).toBe(101n);
    m.step({ kind: 'fetched', nowMs: T0 + 22, token: all.token, entries: [] });
    expect(m.indexEntry('a0')?.version).toBe(100n);
    expect(m.indexEntry('a1')).toBeUndefined();
    expect(m.indexEntry('a2')).toBeUndefined();
  });
});
