import { describe, expect, it } from 'vitest';
import { applyToEntry } from '../src/store/apply.ts';
import { counterValue, mergeEntries, resetOf } from '../src/store/counter.ts';
import { decodeEntry, encodeEntry } from '../src/store/codec.ts';
import type { Entry } from '../src/store/types.ts';
import { mulberry32 } from '../src/runtime/random.ts';
import { MemoryBackend } from '../src/store/memory.ts';
import { Replica } from '../src/store/replica.ts';
import { itemAt } from '../src/runtime/item-at.ts';

const NOW = 1_000;
const U64 = 1n << 64n;

function set(value: string, cas: bigint): Entry {
  return { value: Buffer.from(value, 'latin1'), flags: 0, expiresAtMs: 0, cas };
}

function arith(entry: Entry, verb: 'incr' | 'decr', delta: bigint, node: number, cas: bigint): Entry {
  const { write } = applyToEntry(entry, { kind: 'arith', verb, key: 'k', delta, initial: null, expiresAtMs: 0 }, { cas, nowMs: NOW, counterNode: node });
  if (write === null || write === undefined) throw new Error('no write');
  return write;
}

const read = (entry: Entry): bigint => BigInt(entry.value.toString('latin1').trim());

/** Content a merge must agree on: reset, base, totals and the value read. */
function content(entry: Entry): string {
  const counter = entry.counter;
  const totals = counter === undefined ? '' : `${counter.base}|${JSON.stringify(counter.incs.map(String))}|${JSON.stringify(counter.decs.map(String))}`;
  return `${resetOf(entry)}:${totals}:${read(entry)}`;
}

let joinCas = 1_000n;
const merge = (a: Entry, b: Entry): Entry => {
  joinCas += 16n;
  return mergeEntries(a, b, joinCas > a.cas && joinCas > b.cas ? joinCas : (a.cas > b.cas ? a.cas : b.cas) + 16n);
};

describe('counter merge', () => {
  it('counts increments made at once on two nodes', () => {
    const base = set('10', 1n);
    const onA = arith(base, 'incr', 1n, 0, 17n);
    const onB = arith(base, 'incr', 1n, 1, 18n);
    const merged = merge(onA, onB);
    expect(read(merged)).toBe(12n);
    expect(merged.cas > 18n).toBe(true);
    expect(content(merge(onB, onA))).toBe(content(merged));
  });

  it('is commutative, associative and idempotent over random histories', () => {
    const random = mulberry32(7);
    for (let round = 0; round < 200; round += 1) {
      let cas = 16n;
      const states: Entry[] = [set('5', cas)];
      for (let step = 0; step < 12; step += 1) {
        cas += 16n;
        const from = itemAt(states, Math.floor(random() * states.length));
        const node = Math.floor(random() * 3);
        const choice = random();
        if (choice < 0.1) states.push(set(String(Math.floor(random() * 9)), cas + BigInt(node)));
        else states.push(arith(from, choice < 0.6 ? 'incr' : 'decr', BigInt(Math.floor(random() * 4)), node, cas + BigInt(node)));
      }
      joinCas = cas + 1_000n;
      const anyState = (): Entry => itemAt(states, Math.floor(random() * states.length));
      const a = anyState();
      const b = anyState();
      const c = anyState();
      expect(content(merge(a, b))).toBe(content(merge(b, a)));
      expect(content(merge(merge(a, b), c))).toBe(content(merge(a, merge(b, c))));
      expect(merge(a, a)).toBe(a);
    }
  });

  it('lets a newer reset win over counts on an older one, whatever the cas', () => {
    const base = set('10', 16n);
    const reset = set('100', 32n);
    const counted = arith(base, 'incr', 5n, 1, 48n);
    const merged = merge(counted, reset);
    expect(read(merged)).toBe(100n);
    expect(resetOf(merged)).toBe(32n);
    expect(merged.cas > 48n).toBe(true);
    expect(content(merge(reset, counted))).toBe(content(merged));
    // Counts on the newer reset survive a later merge with the rewritten reset.
    const counted2 = arith(reset, 'incr', 1n, 2, 64n);
    expect(read(merge(merged, counted2))).toBe(101n);
  });

  it('wraps at 2^64 as memcached', () => {
    const base = set(String(U64 - 2n), 16n);
    const onA = arith(base, 'incr', 1n, 0, 32n);
    const onB = arith(base, 'incr', 2n, 1, 33n);
    expect(read(onA)).toBe(U64 - 1n);
    expect(read(onB)).toBe(0n);
    expect(read(merge(onA, onB))).toBe(1n);
  });

  it('follows memcached for one node: decr stops at 0, then incr counts from 0', () => {
    let entry = set('5', 16n);
    entry = arith(entry, 'decr', 10n, 0, 32n);
    expect(read(entry)).toBe(0n);
    entry = arith(entry, 'incr', 3n, 0, 48n);
    expect(read(entry)).toBe(3n);
  });

  it('clamps concurrent decrements at 0 alike on every replica, and an incr then counts from 0', () => {
    const base = set('5', 16n);
    const onA = arith(base, 'decr', 4n, 0, 32n);
    const onB = arith(base, 'decr', 4n, 1, 33n);
    const merged = merge(onA, onB);
    expect(counterValue(merged.counter!)).toBe(0n);
    expect(read(merged)).toBe(0n);
    expect(content(merge(onB, onA))).toBe(content(merged));
    expect(read(arith(merged, 'incr', 2n, 2, merged.cas + 16n))).toBe(2n);
  });

  it('changes the cas on every increment', () => {
    const base = set('1', 16n);
    const once = arith(base, 'incr', 1n, 0, 32n);
    expect(arith(once, 'incr', 1n, 0, 48n).cas).toBe(48n);
  });

  it('round-trips counter metadata through the memcached codec', () => {
    const entry = arith(arith(set('7', 16n), 'incr', U64 - 1n, 3, 32n), 'decr', 2n, 1, 48n);
    const decoded = decodeEntry(encodeEntry(entry, null));
    expect(decoded?.entry).toEqual(entry);
    expect(decodeEntry(encodeEntry(entry, 'kept'))?.keptKey).toBe('kept');
  });

  it('joins in a Replica: a merge with joinCas counts both nodes, even under a greater cas held', async () => {
    const replica = new Replica(new MemoryBackend(), { tombstones: true });
    const incr = { kind: 'arith', verb: 'incr', key: 'k', delta: 1n, initial: null, expiresAtMs: 0 } as const;
    await replica.apply({ kind: 'store', verb: 'set', key: 'k', flags: 0, expiresAtMs: 0, value: Buffer.from('10'), casUnique: 0n }, { cas: 16n, nowMs: NOW });
    const [, before] = itemAt(await replica.fetch(['k']), 0);
    await replica.apply(incr, { cas: 48n, nowMs: NOW, counterNode: 0 });
    const fromPeer = arith(before, 'incr', 5n, 1, 32n);
    await replica.put([['k', fromPeer]], 'merge', 64n);
    const [, merged] = itemAt(await replica.fetch(['k']), 0);
    expect(merged.value.toString()).toBe('16');
    expect(merged.cas).toBe(64n);
    // Without joinCas (the log modes), greater cas wins as before.
    await replica.put([['k', arith(before, 'incr', 7n, 2, 33n)]], 'merge');
    expect(itemAt(await replica.fetch(['k']), 0)[1].cas).toBe(64n);
  });
});
