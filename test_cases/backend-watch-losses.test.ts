/**
 * The backend watch's loss file (memcached's eviction and flush counters, saved so that a
 * restarted controller counts what happened while it was down): a counter that shows a loss is
 * saved only once the reset that rebuilds the replica is durable. A controller that crashes in
 * between must see the loss again when it restarts, and rebuild, rather than trust the replica.
 * Counters that show no loss are saved at once. A replica the controller found foreign at start
 * (controller/replica-owner.ts) is rebuilt as emptied at the first poll.
 */

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { Event } from '../src/consistency/types.ts';
import { BackendWatch } from '../src/controller/backend-watch.ts';
import { MemoryReporter } from '../src/controller/memory-reporter.ts';
import { silentLogger } from '../src/runtime/log.ts';
import type { BackendHealth } from '../src/store/types.ts';

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** A watch over a fake memcached whose next poll answers `health`; durable work runs when `settle` says. */
function watchIn(stateDir: string) {
  const events: Event<unknown>[] = [];
  const durable: Array<() => void> = [];
  let health: BackendHealth = { ok: true, detail: 'fake', epoch: 'e1', evictions: 0, flushes: { total: 0, ours: 0 } };
  const watch = new BackendWatch({
    replica: { health: async () => health, suspect: null, acknowledgeReset: () => {} },
    backend: {},
    stateDir,
    memory: new MemoryReporter(() => 0, () => {}, { count: () => 0, max: 1000 }),
    holdsFailedApplies: true,
    refusalsKeepTrust: false,
    valueBytesMax: 1024 * 1024,
    log: silentLogger,
    enqueue: (event) => events.push(event),
    whenDurable: (work) => durable.push(work),
  });
  return {
    watch,
    resets: () => events.filter((event) => event.kind === 'backend_reset').length,
    answer: (next: Partial<BackendHealth>) => (health = { ...health, ...next }),
    settle: () => durable.splice(0).forEach((work) => work()),
  };
}

function savedCounters(stateDir: string): string {
  try {
    return readFileSync(path.join(stateDir, 'backend-counters'), 'utf8').trim();
  } catch {
    return '';
  }
}

describe("the backend watch's saved counters", () => {
  it('are saved at once while they show no loss', async () => {
    const stateDir = mkdtempSync(path.join(os.tmpdir(), 'mckv-watch-'));
    dirs.push(stateDir);
    const node = watchIn(stateDir);
    await node.watch.poll();
    expect(savedCounters(stateDir)).toBe('e1 0 0');
    node.answer({ flushes: { total: 1, ours: 1 } });
    await node.watch.poll();
    expect(savedCounters(stateDir)).toBe('e1 0 1');
    expect(node.resets()).toBe(0);
  });

  it('that show an eviction are saved only once the reset is durable; a crash before that sees the loss again', async () => {
    const stateDir = mkdtempSync(path.join(os.tmpdir(), 'mckv-watch-'));
    dirs.push(stateDir);
    const first = watchIn(stateDir);
    await first.watch.poll();
    first.answer({ evictions: 5 });
    await first.watch.poll();
    expect(first.resets()).toBe(1);
    // Our own flush meanwhile changes the counters too: still not saved, the loss is not repaired.
    first.answer({ flushes: { total: 1, ours: 1 } });
    await first.watch.poll();
    expect(savedCounters(stateDir)).toBe('e1 0 0');

    // The controller crashes here. Restarted, it compares with what was saved: the eviction counts.
    const restarted = watchIn(stateDir);
    restarted.answer({ evictions: 5, flushes: { total: 1, ours: 0 } });
    await restarted.watch.poll();
    expect(restarted.resets()).toBe(1);

    // The first controller's reset is taken, carried out, and becomes durable: now it is saved.
    const queued = { kind: 'backend_reset', nowMs: 0 } as Extract<Event<unknown>, { kind: 'backend_reset' }>;
    first.watch.takeReset(queued);
    first.watch.resetStepped();
    first.watch.resetCarriedOut();
    expect(savedCounters(stateDir)).toBe('e1 0 0');
    first.settle();
    expect(savedCounters(stateDir)).toBe('e1 5 1');
  });

  it("that show another client's flush are saved only once the reset is durable", async () => {
    const stateDir = mkdtempSync(path.join(os.tmpdir(), 'mckv-watch-'));
    dirs.push(stateDir);
    const node = watchIn(stateDir);
    await node.watch.poll();
    node.answer({ flushes: { total: 1, ours: 0 } });
    await node.watch.poll();
    expect(node.resets()).toBe(1);
    expect(savedCounters(stateDir)).toBe('e1 0 0');
    node.watch.takeReset({ kind: 'backend_reset', nowMs: 0 } as Extract<Event<unknown>, { kind: 'backend_reset' }>);
    node.watch.resetCarriedOut();
    node.settle();
    expect(savedCounters(stateDir)).toBe('e1 0 1');
  });

  it('rebuilds a replica it was told to at start, as emptied, and says so once that reset is durable', async () => {
    const stateDir = mkdtempSync(path.join(os.tmpdir(), 'mckv-watch-'));
    dirs.push(stateDir);
    const node = watchIn(stateDir);
    let claimed = 0;
    node.watch.rebuildAtStart(() => (claimed += 1));
    await node.watch.poll();
    expect(node.resets()).toBe(1);
    const reset = node.watch.takeReset({ kind: 'backend_reset', nowMs: 0 } as Extract<Event<unknown>, { kind: 'backend_reset' }>);
    expect(reset).toMatchObject({ emptied: true, kept: false });
    node.watch.resetStepped();
    node.watch.resetCarriedOut();
    expect(claimed).toBe(0);
    node.settle();
    expect(claimed).toBe(1);
    // Only once: the next polls see nothing lost.
    await node.watch.poll();
    expect(node.resets()).toBe(1);
  });
});
