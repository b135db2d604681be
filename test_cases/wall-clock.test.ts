/**
 * A step of the system clock (an operator, NTP) must not touch the ordered modes' failover: real
 * controller processes, each run with libfaketime (see src/jepsen/wall-clock.ts) so that one
 * controller's wall clock can jump while the monotonic clock runs on, as in a real step.
 *
 * - A leader whose wall clock jumps an hour ahead goes on leading: no election, no refused write.
 *   (Timed by the wall clock, it found its followers' last acks an hour old and stepped down.)
 * - Followers whose wall clocks jump an hour back still replace a killed leader within a few
 *   failure timeouts. (Timed by the wall clock, their election timers ran an hour longer.)
 * - Under read leases, a follower whose wall clock jumps ahead of its monotonic clock (as on a
 *   resume from a suspend) drops its lease and keeps answering every read with the latest write.
 */

import { afterEach, describe, expect, it } from 'vitest';
import type { Mode } from '../src/consistency/types.ts';
import { Cluster } from '../src/jepsen/cluster.ts';
import { WALL_CLOCK_REREAD_SECONDS } from '../src/jepsen/wall-clock.ts';
import { findLeader, nowMs, selfStatus, sleep } from './support/fault-kit.ts';
import { lastLine } from './support/text-request.ts';
import { TextClient } from '../src/client/text-client.ts';
import { itemAt } from '../src/runtime/item-at.ts';

const HEARTBEAT_INTERVAL_MS = 50;
const FAILURE_TIMEOUT_MS = 500;
/** How long a step takes to reach a controller, with slack. */
const STEP_SETTLE_MS = WALL_CLOCK_REREAD_SECONDS * 1000 + 500;
const HOUR_SECONDS = 3600;
/** The bound a new leader is held to (generous: the machine is shared). */
const SERVE_BOUND_MS = 6 * FAILURE_TIMEOUT_MS;

let cluster: Cluster | null = null;

afterEach(async () => {
  await cluster?.stop();
  cluster = null;
});

async function startCluster(mode: Mode, extraConfig: string[] = []): Promise<Cluster> {
  cluster = await Cluster.start({
    mode, heartbeatIntervalMs: HEARTBEAT_INTERVAL_MS, failureTimeoutMs: FAILURE_TIMEOUT_MS, wallClockSteps: true, extraConfig,
  });
  return cluster;
}

/** Writes that span a step: at least this many (a busy machine may take 0.3 s a write). */
const WRITES_MIN = 11;
/** Gives up on WRITES_MIN after this long (a stuck cluster fails the count, not the test's timeout). */
const WRITES_BOUND_MS = 20_000;

/**
 * Sets `key` through `port` every 50 ms for `durationMs` and at least WRITES_MIN times (within
 * WRITES_BOUND_MS); the last line of each reply.
 */
async function writeFor(port: number, key: string, durationMs: number): Promise<string[]> {
  const replies: string[] = [];
  const startMs = nowMs();
  const endMs = startMs + durationMs;
  const enough = (): boolean => nowMs() >= endMs && (replies.length >= WRITES_MIN || nowMs() - startMs >= WRITES_BOUND_MS);
  for (let i = 0; i < 1000 && !enough(); i++) {
    replies.push(await lastLine(port, `set ${key} 0 0 ${String(i).length}\r\n${i}\r\n`, 'set'));
    await sleep(50);
  }
  return replies;
}

describe.each<Mode>(['linearizability', 'sequential'])('%s: the wall clock steps', (mode) => {
  it('a leader whose wall clock jumps an hour ahead goes on leading, refusing nothing', async () => {
    const running = await startCluster(mode);
    const ids = running.nodes.map((node) => node.id);
    const leader = await findLeader(running, ids, 10_000);
    const follower = ids.find((id) => id !== leader) as string;
    const before = await selfStatus(running.node(leader).clientPort);
    expect(before?.role).toBe('leader');

    running.stepWallClock(leader, HOUR_SECONDS);
    const replies = await writeFor(running.node(follower).clientPort, 'clock-ahead', STEP_SETTLE_MS + 1000);

    expect(replies.length).toBeGreaterThanOrEqual(WRITES_MIN);
    expect(replies.filter((line) => line !== 'STORED')).toEqual([]);
    const after = await selfStatus(running.node(leader).clientPort);
    expect(after).toEqual({ role: 'leader', term: before?.term, leader });
  }, 60_000);

  it('followers whose wall clocks jump an hour back still replace a killed leader within seconds', async () => {
    const running = await startCluster(mode);
    const ids = running.nodes.map((node) => node.id);
    const leader = await findLeader(running, ids, 10_000);
    const followers = ids.filter((id) => id !== leader);
    for (const id of followers) running.stepWallClock(id, -HOUR_SECONDS);
    await sleep(STEP_SETTLE_MS);

    const killedAtMs = nowMs();
    await running.kill(leader);
    const port = running.node(itemAt(followers, 0)).clientPort;
    let servedAfterMs: number | null = null;
    for (let attempt = 0; attempt < 1000 && nowMs() - killedAtMs < 4 * SERVE_BOUND_MS; attempt++) {
      if ((await lastLine(port, 'set clock-back 0 0 1\r\n1\r\n', 'set')) === 'STORED') {
        servedAfterMs = nowMs() - killedAtMs;
        break;
      }
      await sleep(20);
    }

    expect(servedAfterMs, 'no write stored after the leader was killed').not.toBeNull();
    expect(servedAfterMs).toBeLessThan(SERVE_BOUND_MS);
    expect(followers).toContain(await findLeader(running, followers, 5_000));
  }, 60_000);
});

async function followerStats(port: number): Promise<Map<string, string>> {
  const client = await TextClient.connect('127.0.0.1', port);
  try {
    const reply = await client.request('stats\r\n', 'stats');
    return new Map(reply.lines.filter((line) => line.startsWith('STAT ')).map((line) => {
      const [, name = '', value = ''] = line.split(' ');
      return [name, value] as [string, string];
    }));
  } finally {
    client.close();
  }
}

describe('linearizability with read leases: the wall clock runs ahead of the monotonic clock', () => {
  it('a follower whose wall clock jumps ahead (as after a suspend) drops its lease and reads the latest write', async () => {
    const running = await startCluster('linearizability', ['read_leases = on']);
    const ids = running.nodes.map((node) => node.id);
    const leader = await findLeader(running, ids, 10_000);
    const follower = ids.find((id) => id !== leader) as string;
    const from = running.logBytes(follower);

    running.stepWallClock(follower, 60);
    const stale: string[] = [];
    const endMs = nowMs() + STEP_SETTLE_MS + 1000;
    let writes = 0;
    for (let i = 0; i < 1000 && (nowMs() < endMs || writes < WRITES_MIN); i++) {
      expect(await lastLine(running.node(leader).clientPort, `set jump 0 0 ${String(i).length}\r\n${i}\r\n`, 'set')).toBe('STORED');
      writes += 1;
      const client = await TextClient.connect('127.0.0.1', running.node(follower).clientPort);
      try {
        const reply = await client.request('get jump\r\n', 'get');
        const value = reply.values[0]?.value.toString() ?? `(${reply.lines.join(' ')})`;
        if (value !== String(i)) stale.push(`wrote ${i}, read ${value}`);
      } finally {
        client.close();
      }
      await sleep(20);
    }

    expect(stale).toEqual([]);
    const log = await running.logSince(follower, from, 'read lease dropped', 5_000);
    expect(log, 'the follower did not drop its lease').not.toBeNull();
    expect(log).toMatch(/aheadMs[^0-9]+(59\d{3}|60\d{3})/);
    // `stats` counts the jump, and shows the lease renewed by the heartbeats since.
    const stats = await followerStats(running.node(follower).clientPort);
    expect(Number(stats.get('mckv_clock_jumps'))).toBeGreaterThanOrEqual(1);
    expect(stats.get('mckv_read_lease')).toBe('held');
  }, 60_000);
});
