/**
 * The durability gate (src/controller/durability.ts) over a write-ahead whose batches complete
 * when the test says, and the background write-ahead file (src/controller/wal-background.ts)
 * over a real file: effects keep their order behind persists, many records of a turn and of the
 * turns while a batch is on its way take one fsync, a slow fsync holds only what waits for it,
 * a refused batch stops everything after it, a batch without fsync is written inline unless an
 * inline write was slow, and the file reads back as wal.ts writes it.
 */

import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  DurabilityError,
  DurabilityGate,
  SlowestRecent,
  type WalBatch,
  type WalWriteResult,
  type WriteAhead,
} from '../src/controller/durability.ts';
import { BackgroundWriteAhead } from '../src/controller/wal-background.ts';
import { WriteAheadFile } from '../src/wal.ts';
import { itemAt } from '../src/runtime/item-at.ts';

/** A write-ahead that keeps what it was given and completes a batch when the test says. */
class ManualWriteAhead implements WriteAhead {
  readonly batches: WalBatch[] = [];
  private done: Array<(result: WalWriteResult) => void> = [];
  closed = false;

  write(batch: WalBatch, done: (result: WalWriteResult) => void): void {
    this.batches.push(batch);
    this.done.push(done);
  }

  close(): void {
    this.closed = true;
  }

  inFlight(): number {
    return this.done.length;
  }

  /** Completes the oldest batch, fsynced in `ms` (or refused with `error`). */
  complete(ms = 1, error?: DurabilityError): void {
    const done = this.done.shift();
    if (done === undefined) throw new Error('no batch in flight');
    done(error === undefined ? { ok: true, fsync: { endedAtMs: 1000, ms } } : { ok: false, error });
  }
}

function gate(sync: 'fsync' | 'write' = 'fsync'): { gate: DurabilityGate<string>; writeAhead: ManualWriteAhead; ran: string[]; failures: DurabilityError[] } {
  const writeAhead = new ManualWriteAhead();
  const ran: string[] = [];
  const failures: DurabilityError[] = [];
  return {
    gate: new DurabilityGate<string>({ writeAhead, sync, release: (work) => ran.push(work), failed: (error) => failures.push(error) }),
    writeAhead,
    ran,
    failures,
  };
}

const record = (name: string): { record: unknown; compact: boolean } => ({ record: { name }, compact: false });

describe('the durability gate', () => {
  it('says work would run at once only while its ticket is durable and nothing waits', () => {
    const { gate: durability, writeAhead } = gate();
    expect(durability.runsNow(durability.latest())).toBe(true);
    durability.append([record('entry')]);
    expect(durability.runsNow(durability.latest())).toBe(false);
    durability.writeAppended();
    writeAhead.complete();
    const durableTicket = durability.latest();
    expect(durability.runsNow(durableTicket)).toBe(true);
    durability.append([record('next')]);
    durability.whenDurable(durability.latest(), 'after-next');
    durability.writeAppended();
    // A durable ticket still waits behind work handed over before it.
    expect(durability.runsNow(durableTicket)).toBe(false);
    writeAhead.complete(1, new DurabilityError('WAL_FSYNC_FAILED', 'refused'));
    expect(durability.runsNow(durability.latest())).toBe(false);
  });

  it('runs an effect at once when no record precedes it, and holds every effect after a persist, in order, until it is durable', () => {
    const { gate: durability, writeAhead, ran } = gate();
    durability.whenDurable(durability.latest(), 'before');
    expect(ran).toEqual(['before']);
    // One turn: persist, ack, reply; then (a later turn) a send that needs no new record.
    durability.append([record('vote')]);
    durability.whenDurable(durability.latest(), 'vote-reply');
    durability.whenDurable(durability.latest(), 'reply');
    durability.writeAppended();
    durability.whenDurable(durability.latest(), 'later-send');
    expect(ran).toEqual(['before']);
    expect(durability.waitingCount()).toBe(3);
    expect(durability.stats(0).recordsWaiting).toBe(1);
    writeAhead.complete();
    expect(ran).toEqual(['before', 'vote-reply', 'reply', 'later-send']);
    expect(durability.waitingCount()).toBe(0);
    expect(durability.stats(0).recordsWaiting).toBe(0);
  });

  it('writes the records of a turn, and of every turn while a batch is on its way, as one batch with one fsync', () => {
    const { gate: durability, writeAhead, ran } = gate();
    durability.append([record('a1'), record('a2')]);
    durability.whenDurable(durability.latest(), 'after-a');
    durability.writeAppended();
    expect(writeAhead.batches).toHaveLength(1);
    // Three turns while the first batch is on its way.
    for (const turn of ['b', 'c', 'd']) {
      durability.append([record(`${turn}1`)]);
      durability.append([record(`${turn}2`)]);
      durability.whenDurable(durability.latest(), `after-${turn}`);
      durability.writeAppended();
    }
    expect(writeAhead.batches).toHaveLength(1);
    writeAhead.complete();
    expect(ran).toEqual(['after-a']);
    expect(writeAhead.batches).toHaveLength(2);
    expect(itemAt(writeAhead.batches, 1).records.map((each) => (each.record as { name: string }).name)).toEqual(['b1', 'b2', 'c1', 'c2', 'd1', 'd2']);
    expect(writeAhead.batches.every((batch) => batch.sync)).toBe(true);
    writeAhead.complete();
    expect(ran).toEqual(['after-a', 'after-b', 'after-c', 'after-d']);
    expect(durability.stats(0).fsyncs).toBe(2);
  });

  it('lets a slow fsync delay only what waits behind it, and counts it among the recent slowest', () => {
    const { gate: durability, writeAhead, ran } = gate();
    durability.append([record('entry')]);
    durability.writeAppended();
    // Nothing was issued after the record yet: the gate holds nothing.
    expect(durability.waitingCount()).toBe(0);
    durability.whenDurable(durability.latest(), 'ack');
    expect(ran).toEqual([]);
    writeAhead.complete(1500);
    expect(ran).toEqual(['ack']);
    const stats = durability.stats(1000 + 59_000);
    expect(stats).toMatchObject({ fsyncs: 1, fsyncLastMs: 1500, fsyncSlowestRecentMs: 1500 });
    expect(durability.stats(1000 + 60_000).fsyncSlowestRecentMs).toBe(0);
  });

  it('with wal_sync = write asks for no fsync, except of a batch that compacts', () => {
    const { gate: durability, writeAhead } = gate('write');
    durability.append([record('a')]);
    durability.writeAppended();
    writeAhead.complete();
    durability.append([record('b'), { record: { snapshot: 1 }, compact: true }]);
    durability.writeAppended();
    expect(writeAhead.batches.map((batch) => batch.sync)).toEqual([false, true]);
  });

  it('after a refused batch runs nothing more, writes nothing more, and says so once', () => {
    const { gate: durability, writeAhead, ran, failures } = gate();
    durability.append([record('a')]);
    durability.whenDurable(durability.latest(), 'after-a');
    durability.writeAppended();
    durability.append([record('b')]);
    durability.writeAppended();
    writeAhead.complete(1, new DurabilityError('WAL_WRITE_FAILED', 'disk full'));
    durability.whenDurable(durability.latest(), 'after-b');
    durability.writeAppended();
    expect(ran).toEqual([]);
    expect(writeAhead.batches).toHaveLength(1);
    expect(failures.map((error) => error.code)).toEqual(['WAL_WRITE_FAILED']);
  });

  it('keeps the slowest recent value as a sliding-window maximum', () => {
    const slowest = new SlowestRecent(100);
    slowest.note(0, 5);
    slowest.note(10, 50);
    slowest.note(20, 7);
    slowest.note(30, 3);
    expect(slowest.slowest(30)).toBe(50);
    expect(slowest.slowest(110)).toBe(7);
    expect(slowest.slowest(125)).toBe(3);
    expect(slowest.slowest(200)).toBe(0);
  });
});

describe('the background write-ahead file', () => {
  const owner = { clusterId: 'mckv', nodeId: 'n1' };
  const dirs: string[] = [];
  afterEach(() => {
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });
  const tempDir = (): string => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mckv-durability-'));
    dirs.push(dir);
    return dir;
  };
  const write = (writeAhead: WriteAhead, batch: WalBatch): Promise<WalWriteResult> =>
    new Promise((resolve) => writeAhead.write(batch, resolve));

  it('appends batches, compacts through a temporary file, and reads back as wal.ts wrote it (0600)', async () => {
    const file = path.join(tempDir(), 'node', 'wal.bin');
    const writeAhead = new BackgroundWriteAhead({ file, owner, fsyncDelayFile: null });
    expect(await write(writeAhead, { records: [record('a'), record('b')], sync: true })).toMatchObject({ ok: true, fsync: { ms: expect.any(Number) } });
    expect(await write(writeAhead, { records: [record('c')], sync: false })).toEqual({ ok: true, fsync: null });
    expect(WriteAheadFile.read(file, owner)).toEqual([{ name: 'a' }, { name: 'b' }, { name: 'c' }]);
    const compacted = await write(writeAhead, { records: [record('d'), { record: { snapshot: 4, value: Buffer.from('v') }, compact: true }, record('e')], sync: true });
    expect(compacted.ok).toBe(true);
    expect(await write(writeAhead, { records: [record('f')], sync: true })).toMatchObject({ ok: true });
    expect(WriteAheadFile.read(file, owner)).toEqual([{ snapshot: 4, value: Buffer.from('v') }, { name: 'e' }, { name: 'f' }]);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    writeAhead.close();
    await writeAhead.whenClosed();
    // A new start appends after what is there, cutting nothing.
    const reopened = new BackgroundWriteAhead({ file, owner, fsyncDelayFile: null });
    expect(reopened.opened.tornBytesCut).toBe(0);
    expect(await write(reopened, { records: [record('g')], sync: true })).toMatchObject({ ok: true });
    reopened.close();
    await reopened.whenClosed();
    expect(WriteAheadFile.read(file, owner)).toEqual([{ snapshot: 4, value: Buffer.from('v') }, { name: 'e' }, { name: 'f' }, { name: 'g' }]);
  });

  it('writes a batch that needs no fsync inline once the file is open, and one that does through the thread pool', async () => {
    const file = path.join(tempDir(), 'node', 'wal.bin');
    const writeAhead = new BackgroundWriteAhead({ file, owner, fsyncDelayFile: null });
    // The first batch opens the file, off the event loop.
    expect(await write(writeAhead, { records: [record('a')], sync: false })).toEqual({ ok: true, fsync: null });
    const results: WalWriteResult[] = [];
    writeAhead.write({ records: [record('b'), record('c')], sync: false }, (result) => results.push(result));
    expect(results).toEqual([{ ok: true, fsync: null }]);
    writeAhead.write({ records: [record('d')], sync: true }, (result) => results.push(result));
    expect(results).toHaveLength(1);
    await writeAhead.whenClosed();
    expect(results[1]).toMatchObject({ ok: true, fsync: { ms: expect.any(Number) } });
    expect(WriteAheadFile.read(file, owner)).toEqual([{ name: 'a' }, { name: 'b' }, { name: 'c' }, { name: 'd' }]);
    writeAhead.close();
    await writeAhead.whenClosed();
  });

  it('after a slow inline write sends the next batches through the thread pool, in order', async () => {
    const file = path.join(tempDir(), 'node', 'wal.bin');
    // Every inline write counts as slow.
    const slowWrites: number[] = [];
    const writeAhead = new BackgroundWriteAhead({
      file, owner, fsyncDelayFile: null, inlineSlowMs: -1, onSlowWrite: (ms) => slowWrites.push(ms),
    });
    await write(writeAhead, { records: [record('a')], sync: false });
    const results: string[] = [];
    writeAhead.write({ records: [record('b')], sync: false }, () => results.push('b'));
    expect(results).toEqual(['b']);
    expect(slowWrites).toHaveLength(1);
    writeAhead.write({ records: [record('c')], sync: false }, () => results.push('c'));
    expect(results).toEqual(['b']);
    await writeAhead.whenClosed();
    expect(results).toEqual(['b', 'c']);
    expect(WriteAheadFile.read(file, owner)).toEqual([{ name: 'a' }, { name: 'b' }, { name: 'c' }]);
    writeAhead.close();
    await writeAhead.whenClosed();
  });

  it('delays each fsync by what the test file says, without blocking the event loop', async () => {
    const dir = tempDir();
    const file = path.join(dir, 'node', 'wal.bin');
    const delayFile = path.join(dir, 'fsync-delay');
    writeFileSync(delayFile, '300\n');
    const writeAhead = new BackgroundWriteAhead({ file, owner, fsyncDelayFile: delayFile });
    let ticks = 0;
    const timer = setInterval(() => (ticks += 1), 10);
    const startedMs = performance.now();
    const result = await write(writeAhead, { records: [record('a')], sync: true });
    const tookMs = performance.now() - startedMs;
    clearInterval(timer);
    expect(result.ok && result.fsync !== null && result.fsync.ms >= 290).toBe(true);
    expect(tookMs).toBeGreaterThanOrEqual(290);
    // The timer kept firing while the fsync waited.
    expect(ticks).toBeGreaterThanOrEqual(15);
    writeFileSync(delayFile, '0\n');
    const fast = await write(writeAhead, { records: [record('b')], sync: true });
    expect(fast.ok && fast.fsync !== null && fast.fsync.ms < 290).toBe(true);
    writeAhead.close();
    await writeAhead.whenClosed();
  });
});
