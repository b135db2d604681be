/**
 * A follower that stays live but falls behind (a slow disk or machine, appends lost on the way)
 * holds the leader's log only up to what a state transfer would send (what the leader's memcached
 * holds) or LAGGING_FOLLOWER_THRESHOLDS times the byte threshold, whichever is more; past that the
 * leader compacts anyway and the follower gets a state transfer, so its lag cannot grow the
 * leader's memory without bound (a transfer in progress keeps the entries after its
 * index: transfer-large.integration.test.ts). The log's own floor: entry-log's `floorWithin`.
 */

import { describe, expect, it } from 'vitest';
import { LAGGING_FOLLOWER_THRESHOLDS } from '../src/consistency/log/compaction.ts';
import { EntryLog } from '../src/consistency/log/entry-log.ts';
import { opBytes, type LogEntry } from '../src/consistency/log/types.ts';
import { mulberry32 } from '../src/runtime/random.ts';
import { asPeerId } from '../src/consistency/types.ts';
import { Cluster, followers, set } from './support/log-cluster.ts';
import type { PeerId } from '../src/consistency/types.ts';

describe('a live follower that lags', () => {
  const THRESHOLD_BYTES = 4 * 1024;
  const VALUE = 'v'.repeat(200);

  /**
   * A sequential cluster whose follower `slow` loses every append carrying entries (it still
   * answers heartbeats, so it is live), 160 sets of 200 bytes; `replicaBytes`: what the leader's
   * memcached says it holds. The longest log the leader held before a transfer to `slow` started.
   */
  interface Lagging { cluster: Cluster; leader: PeerId; slow: PeerId; longest: number; transferStarted: boolean }

  function lagging(replicaBytes: number | null): Lagging {
    const cluster = new Cluster('sequential', 10_000, true, null, THRESHOLD_BYTES);
    cluster.run(1_000);
    if (replicaBytes !== null) cluster.polled({ usedBytes: replicaBytes, limitBytes: 1024 * 1024 * 1024 });
    const leader = cluster.leader();
    const slow = followers(cluster)[1];
    cluster.lose = (message, to) => to === slow && message.kind === 'append' && message.entries.length > 0;
    // Until a transfer to it starts (which keeps what follows its index while it progresses).
    const transferStarted = (): boolean => cluster.node(leader).effects.some((effect) => effect.kind === 'fetch');
    let longest = 0;
    for (let n = 0; n < 160; n += 1) {
      cluster.request(leader, set(`k${n % 40}`, VALUE + String(n)));
      cluster.run(10);
      const { lastIndex, snapshotIndex } = cluster.node(leader).machine.inspect();
      if (!transferStarted()) longest = Math.max(longest, lastIndex - snapshotIndex);
    }
    return { cluster, leader, slow, longest, transferStarted: transferStarted() };
  }

  it('holds the leader\'s log to a bound; past it, it gets a state transfer and ends with every write', () => {
    const { cluster, leader, slow, longest, transferStarted } = lagging(null);
    expect(transferStarted).toBe(true);
    const entryBytes = opBytes(set('k10', VALUE + '100'));
    expect(longest).toBeGreaterThan(THRESHOLD_BYTES / entryBytes);
    // A compaction waits for its turn (half a threshold at least): the bound, plus that.
    expect(longest).toBeLessThanOrEqual((LAGGING_FOLLOWER_THRESHOLDS + 1) * THRESHOLD_BYTES / entryBytes + 1);
    cluster.lose = () => false;
    cluster.run(3_000);
    expect(cluster.node(slow).effects.some((effect) => effect.kind === 'put')).toBe(true);
    const expected = [...cluster.node(leader).replica.entries()].sort();
    expect([...cluster.node(slow).replica.entries()].sort()).toEqual(expected);
    expect(cluster.node(slow).replica.get('k39')?.value.toString()).toBe(VALUE + '159');
  });

  it('is kept up to what the replica holds, when that is more: a transfer would cost as much', () => {
    const { cluster, leader, slow, longest, transferStarted } = lagging(1024 * 1024);
    expect(transferStarted).toBe(false);
    expect(longest).toBeGreaterThanOrEqual(160);
    cluster.lose = () => false;
    cluster.run(3_000);
    expect(cluster.node(slow).effects.some((effect) => effect.kind === 'put')).toBe(false);
    expect(cluster.node(slow).replica.get('k39')?.value.toString()).toBe(VALUE + '159');
    expect(cluster.node(leader).replica.get('k39')?.value.toString()).toBe(VALUE + '159');
  });
});

describe('EntryLog.floorWithin', () => {
  const entry = (index: number, bytes: number): LogEntry => ({
    term: 1, index, nowMs: 0, origin: asPeerId('n1'), incarnation: 1, requestId: null,
    op: { kind: 'store', verb: 'set', key: 'k', flags: 0, expiresAtMs: 0, value: Buffer.alloc(bytes), casUnique: 0n },
  });

  it('names the greatest index to compact to that leaves at most the bytes and entries given', () => {
    const log = new EntryLog();
    log.append(Array.from({ length: 10 }, (_, at) => entry(at + 1, 100)));
    const each = log.bytes / 10;
    expect(log.floorWithin(log.bytes, 10)).toBe(0);
    expect(log.floorWithin(log.bytes, 4)).toBe(6);
    expect(log.floorWithin(3 * each, 10)).toBe(7);
    expect(log.floorWithin(3 * each - 1, 10)).toBe(8);
    expect(log.floorWithin(0, 10)).toBe(10);
    log.compactTo(5);
    expect(log.floorWithin(log.bytes, 10)).toBe(5);
    expect(log.floorWithin(log.bytes, 2)).toBe(8);
  });

  it('agrees with a walk from the snapshot through appends, truncations, compactions and resets', () => {
    const random = mulberry32(7);
    const log = new EntryLog();
    const naive = (bytesMax: number, countMax: number): number => {
      let floor = log.snapshotIndex;
      let bytes = log.bytes;
      for (const each of log.entries) {
        if (bytes <= bytesMax && log.lastIndex() - floor <= countMax) break;
        bytes -= opBytes(each.op);
        floor = each.index;
      }
      return floor;
    };
    for (let round = 0; round < 2_000; round += 1) {
      const choice = random();
      const held = log.lastIndex() - log.snapshotIndex;
      if (choice < 0.6) log.append([entry(log.lastIndex() + 1, Math.floor(random() * 300))]);
      else if (choice < 0.7 && held > 0) log.truncateFrom(log.lastIndex() - Math.floor(random() * held));
      else if (choice < 0.95) log.compactTo(log.snapshotIndex + Math.floor(random() * (held + 1)));
      else if (choice < 0.96) log.resetTo(log.lastIndex() + 5, 1);
      const bytesMax = Math.floor(random() * (log.bytes + 10));
      const countMax = Math.floor(random() * (log.entries.length + 3));
      expect(log.floorWithin(bytesMax, countMax)).toBe(naive(bytesMax, countMax));
    }
  });
});
