/**
 * The causal sender's chain to one peer (src/consistency/causal/outbox.ts): its byte bound counts
 * what is queued now, so entries a purge drops stop counting, and only a chain that really holds
 * more than pendingBytesMax is given up for a snapshot (a queued snapshot does not count); it tells
 * when a snapshot not yet acknowledged would be sent again holding stale entries; and a batch in
 * parts (a snapshot larger than a peer connection queues) leaves PART_WINDOW_BYTES at a time, more
 * as the peer acks parts, and no more of it once the peer says it holds every part; sent again
 * after the ack timeout, it starts with its first part alone, so a peer holding it all is not sent
 * a window each time, and goes on from the first part the peer lacks, its parts as cut the first
 * time. The inbox acks the parts it holds from the first on, and keeps a snapshot's apart from a
 * chain batch's.
 */

import { describe, expect, it } from 'vitest';
import { Inbox } from '../src/consistency/causal/inbox.ts';
import { Outbox } from '../src/consistency/causal/outbox.ts';
import { SEND_WINDOW_BYTES as PART_WINDOW_BYTES } from '../src/consistency/send-window.ts';
import type { CausalMessage } from '../src/consistency/causal/messages.ts';
import type { KeyedEntry } from '../src/store/types.ts';

const LIMITS = { windowBatchesMax: 8, ackTimeoutMs: 1000, batchEntriesMax: 100, batchBytesMax: 1 << 20, pendingBytesMax: 1500 };

function entries(prefix: string, count: number, cas: bigint): KeyedEntry[] {
  return Array.from({ length: count }, (_, index): KeyedEntry => [
    `${prefix}${index}`, { value: Buffer.alloc(100, 1), flags: 0, expiresAtMs: 0, cas },
  ]);
}

/** An outbox whose peer acknowledged a snapshot up to 1: chain batches follow on from it. */
function synced(): Outbox {
  const outbox = new Outbox(LIMITS);
  outbox.startSnapshot(1n, 7);
  outbox.onSnapshotFetched(7, { to: 1n, deps: [1n, 0n, 0n], entries: [] }, 0);
  outbox.takeDue(0);
  outbox.onAck(1n, 1n);
  return outbox;
}

type Part = Extract<CausalMessage, { kind: 'batch' }>;

/** An outbox with a snapshot of `count` entries of 1000 bytes fetched: sent in parts. */
function snapshotInParts(count: number): { outbox: Outbox; replica: KeyedEntry[] } {
  const outbox = new Outbox({ ...LIMITS, batchEntriesMax: 256, batchBytesMax: 512 * 1024, pendingBytesMax: 1 << 30 });
  outbox.startSnapshot(5n, 9);
  const replica: KeyedEntry[] = Array.from({ length: count }, (_, index): KeyedEntry => [
    `k${index}`, { value: Buffer.alloc(1000, 1), flags: 0, expiresAtMs: 0, cas: 5n },
  ]);
  outbox.onSnapshotFetched(9, { to: 5n, deps: [5n, 0n, 0n], entries: replica }, 0);
  return { outbox, replica };
}

describe('the causal outbox', () => {
  it('forgets the chain once more than pendingBytesMax is queued', () => {
    const outbox = synced();
    outbox.append(entries('a', 8, 2n), 2n, [2n, 0n, 0n], 0);
    expect(outbox.depth).toBe(1);
    outbox.append(entries('b', 8, 3n), 3n, [3n, 0n, 0n], 0);
    expect(outbox.depth).toBe(0);
    expect(outbox.needsSnapshot()).toBe(true);
  });

  it('does not count a queued snapshot against pendingBytesMax: the chain after a large one is kept', () => {
    // A replica of more than pendingBytesMax: counted, the first batch after it gave it up, and
    // the next snapshot too, for as long as the sender took writes.
    const outbox = new Outbox(LIMITS);
    outbox.startSnapshot(1n, 7);
    outbox.onSnapshotFetched(7, { to: 1n, deps: [1n, 0n, 0n], entries: entries('s', 50, 1n) }, 0);
    outbox.append(entries('a', 8, 2n), 2n, [2n, 0n, 0n], 0);
    expect(outbox.depth).toBe(2);
    expect(outbox.needsSnapshot()).toBe(false);
    // The chain itself is still bounded.
    outbox.append(entries('b', 8, 3n), 3n, [3n, 0n, 0n], 0);
    expect(outbox.needsSnapshot()).toBe(true);
  });

  it('stops counting entries a purge dropped, so the chain is kept', () => {
    const outbox = synced();
    outbox.append(entries('a', 8, 2n), 2n, [2n, 0n, 0n], 0);
    outbox.filterEntries(([key]) => !key.startsWith('a'));
    outbox.append(entries('b', 8, 3n), 3n, [3n, 0n, 0n], 0);
    expect(outbox.depth).toBe(2);
    expect(outbox.needsSnapshot()).toBe(false);
    // Acknowledging both takes the count back to nothing: a full load fits again.
    outbox.onAck(3n, 3n);
    expect(outbox.depth).toBe(0);
    outbox.append(entries('c', 9, 4n), 4n, [4n, 0n, 0n], 0);
    expect(outbox.depth).toBe(1);
  });

  it('tells when a chain waiting on an unacknowledged snapshot holds a stale entry', () => {
    // A window of one batch: the chain batch behind the snapshot waits for its acknowledgement.
    const outbox = new Outbox({ ...LIMITS, windowBatchesMax: 1 });
    outbox.startSnapshot(5n, 7);
    outbox.onSnapshotFetched(7, { to: 5n, deps: [5n, 0n, 0n], entries: entries('a', 2, 3n) }, 0);
    outbox.append(entries('c', 1, 6n), 6n, [6n, 0n, 0n], 0);
    const stale = ([key]: KeyedEntry): boolean => key === 'c0';
    // Just fetched, or sent within the ack timeout: it goes out as it is.
    expect(outbox.sendsStale(0, stale)).toBe(false);
    expect(outbox.takeDue(0)).toHaveLength(1);
    expect(outbox.sendsStale(999, stale)).toBe(false);
    // Due to be sent again: the whole queue counts, beyond the window too.
    expect(outbox.sendsStale(1000, stale)).toBe(true);
    expect(outbox.sendsStale(1000, ([key]) => key === 'z')).toBe(false);
    // Once the peer acknowledged the snapshot, its state is known: the chain is kept.
    outbox.onAck(5n, 5n);
    expect(outbox.sendsStale(5000, stale)).toBe(false);
  });

  it('tells when a snapshot queued long ago, never sent (its peer was down), holds a stale entry', () => {
    const outbox = new Outbox(LIMITS);
    outbox.startSnapshot(5n, 7);
    outbox.onSnapshotFetched(7, { to: 5n, deps: [5n, 0n, 0n], entries: entries('a', 2, 3n) }, 0);
    expect(outbox.sendsStale(999, ([key]) => key === 'a1')).toBe(false);
    expect(outbox.sendsStale(1000, ([key]) => key === 'a1')).toBe(true);
  });

  it('sends a batch in parts a window at a time, on as the peer acks parts, and from its first part after the ack timeout', () => {
    // About 24 MiB: more than a peer connection's send queue holds (16 MiB).
    const { outbox, replica } = snapshotInParts(24_000);
    const bytesOf = (parts: readonly Part[]): number => parts.reduce((sum, part) => sum + part.entries.length * 1000, 0);
    const first = outbox.takeDue(0) as Part[];
    const partCount = first[0]?.parts ?? 0;
    expect(partCount).toBeGreaterThan(40);
    expect(first.length).toBeGreaterThan(1);
    expect(bytesOf(first)).toBeLessThanOrEqual(PART_WINDOW_BYTES);
    expect(outbox.takeDue(10)).toEqual([]); // nothing more until the peer acks
    const sent = [...first];
    for (let nowMs = 20; sent.length < partCount; nowMs += 10) {
      outbox.onPartAck({ snapshot: true, to: 5n, parts: partCount, received: sent.length - 1 }, nowMs);
      const more = outbox.takeDue(nowMs) as Part[];
      expect(more.length).toBeGreaterThan(0);
      sent.push(...more);
    }
    expect(sent.map((part) => part.part)).toEqual(Array.from({ length: partCount }, (_, index) => index));
    expect(sent.flatMap((part) => part.entries.map(([key]) => key))).toEqual(replica.map(([key]) => key));
    // No ack for the ack timeout: sent again from its first part, alone until the peer acks it,
    // its parts as cut the first time (not cut again: thousands of them for a large snapshot).
    const resentAtMs = 20 * partCount + LIMITS.ackTimeoutMs;
    const resent = outbox.takeDue(resentAtMs) as Part[];
    expect(resent.map((part) => part.part)).toEqual([0]);
    expect(resent[0]?.entries).toBe(first[0]?.entries);
    expect(outbox.takeDue(resentAtMs + 1)).toEqual([]);
    // The peer holds every part already (it is merging them): the rest is not sent again.
    outbox.onPartAck({ snapshot: true, to: 5n, parts: partCount, received: partCount }, resentAtMs + 1);
    expect(outbox.takeDue(resentAtMs + 2)).toEqual([]);
    // Still unacknowledged (the snapshot waits there): each timeout sends one part, not a window.
    for (let round = 1; round <= 3; round += 1) {
      const atMs = resentAtMs + 1 + round * LIMITS.ackTimeoutMs;
      expect((outbox.takeDue(atMs) as Part[]).map((part) => part.part)).toEqual([0]);
      outbox.onPartAck({ snapshot: true, to: 5n, parts: partCount, received: partCount }, atMs);
    }
  });

  it('sent again to a peer that holds its first parts (it was slow to ack), goes on from the first it lacks', () => {
    const { outbox } = snapshotInParts(12_000);
    const first = outbox.takeDue(0) as Part[];
    const partCount = first[0]?.parts ?? 0;
    // The peer holds the whole first window but its ack came after the timeout: the probe, then on
    // from the part after that window, not the window again.
    expect((outbox.takeDue(LIMITS.ackTimeoutMs) as Part[]).map((part) => part.part)).toEqual([0]);
    outbox.onPartAck({ snapshot: true, to: 5n, parts: partCount, received: first.length }, LIMITS.ackTimeoutMs + 1);
    const next = outbox.takeDue(LIMITS.ackTimeoutMs + 2) as Part[];
    expect(next[0]?.part).toBe(first.length);
  });

  it('sent again to a peer that lost it, goes on from the probe as the peer acks parts', () => {
    const { outbox } = snapshotInParts(12_000);
    const first = outbox.takeDue(0) as Part[];
    const partCount = first[0]?.parts ?? 0;
    expect(first.length).toBeGreaterThan(1);
    // Nothing came back (the peer restarted empty): the probe, then a window once it acks one part.
    expect((outbox.takeDue(LIMITS.ackTimeoutMs) as Part[]).map((part) => part.part)).toEqual([0]);
    outbox.onPartAck({ snapshot: true, to: 5n, parts: partCount, received: 1 }, LIMITS.ackTimeoutMs + 1);
    const window = outbox.takeDue(LIMITS.ackTimeoutMs + 2) as Part[];
    expect(window.length).toBeGreaterThan(1);
    expect(window.map((part) => part.part)).toEqual(Array.from({ length: window.length }, (_, index) => index + 1));
  });
});

describe('the causal inbox', () => {
  it('acks the parts it holds from the first on, not a count with a gap in it; keeps a snapshot\'s parts when a chain batch comes between them', () => {
    const inbox = new Inbox(1, 0);
    const part = (index: number): Part => ({
      kind: 'batch', snapshot: true, base: 0n, prev: 0n, to: 5n, deps: [0n, 5n, 0n], part: index, parts: 4, entries: entries(`p${index}-`, 1, 5n),
    });
    inbox.assemble(part(0));
    inbox.assemble(part(2));
    expect(inbox.assembledParts(true)).toBe(1);
    inbox.assemble(part(1));
    expect(inbox.assembledParts(true)).toBe(3);
    // A chain batch sent behind it comes between its parts: the snapshot's assembly is kept.
    const chain: Part = { kind: 'batch', snapshot: false, base: 0n, prev: 5n, to: 6n, deps: [0n, 6n, 0n], part: 0, parts: 1, entries: entries('c', 1, 6n) };
    expect(inbox.assemble(chain)).toMatchObject({ snapshot: false, to: 6n });
    expect(inbox.assembledParts(true)).toBe(3);
    expect(inbox.assemble(part(3))).toMatchObject({ snapshot: true, to: 5n });
  });
});
