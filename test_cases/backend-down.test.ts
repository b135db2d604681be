/**
 * A controller whose memcached is down (killed, not yet restarted by its supervisor), once it has
 * not answered for a second, refuses its clients at once with `SERVER_ERROR not caught up: its
 * memcached does not answer (...)`, which certainly changed nothing, so they retry at another
 * controller instead of waiting out their timeouts; the other two serve on, and once memcached is
 * back (empty) the controller serves again, its replica rebuilt. Real processes: three
 * controllers over three memcached.
 */

import { describe, expect, it } from 'vitest';
import { TextClient } from '../src/client/text-client.ts';
import { findLeader, nowMs, sleep } from './support/fault-kit.ts';
import { clusterClients } from './support/cluster-clients.ts';
import type { Cluster } from '../src/jepsen/cluster.ts';
import type { Mode } from '../src/consistency/types.ts';

const DOWN_REFUSAL = /^SERVER_ERROR not caught up: its memcached does not answer \(/;
/** A refusal must come this fast: it is decided before the request reaches the mode. */
const PROMPT_MS = 250;
const CALL_TIMEOUT_MS = 1000;

const harness = clusterClients();

/** One request on a fresh connection: its first line (or why none came) and how long it took. */
async function once(cluster: Cluster, id: string, raw: string, verb: string): Promise<{ line: string; ms: number }> {
  const startedMs = nowMs();
  try {
    const reply = await TextClient.requestOnce('127.0.0.1', cluster.node(id).clientPort, raw, verb, CALL_TIMEOUT_MS);
    const line = verb === 'get' ? (reply.values[0]?.value.toString() ?? reply.lines[0] ?? '') : (reply.lines[0] ?? '');
    return { line, ms: nowMs() - startedMs };
  } catch (error) {
    return { line: `no reply: ${(error as Error).message}`, ms: nowMs() - startedMs };
  }
}

/** Repeats `raw` at `id` until its first line matches `wanted` or `boundMs` passes; the last try. */
async function until(
  cluster: Cluster, id: string, raw: string, verb: string, wanted: RegExp, boundMs: number,
): Promise<{ line: string; ms: number }> {
  const deadline = nowMs() + boundMs;
  for (;;) {
    const answer = await once(cluster, id, raw, verb);
    if (wanted.test(answer.line) || nowMs() > deadline) return answer;
    await sleep(20);
  }
}

async function memcachedDown(mode: Mode, role: 'leader' | 'follower'): Promise<void> {
  const cluster = await harness.start({ mode, heartbeatIntervalMs: 50, failureTimeoutMs: 500 });
  const leader = mode === 'eventual' ? 'n1' : await findLeader(cluster, ['n1', 'n2', 'n3'], 10_000);
  const target = role === 'leader' ? leader : (['n1', 'n2', 'n3'].find((id) => id !== leader) as string);
  const other = ['n1', 'n2', 'n3'].find((id) => id !== target) as string;
  expect((await once(cluster, target, 'set bd-k 0 0 2\r\nv1\r\n', 'set')).line).toBe('STORED');

  await cluster.killBackend(target);
  // The first requests meet the failure itself, or wait out the second a restart would take.
  const write = await until(cluster, target, 'set bd-k 0 0 2\r\nv2\r\n', 'set', DOWN_REFUSAL, 3000);
  expect(write.line, `${mode}: a set at ${target} (${role}) with its memcached down`).toMatch(DOWN_REFUSAL);
  const refusals = [
    await once(cluster, target, 'set bd-never 0 0 1\r\nx\r\n', 'set'),
    await once(cluster, target, 'get bd-k\r\n', 'get'),
    await once(cluster, target, 'incr bd-k 1\r\n', 'incr'),
  ];
  for (const refusal of refusals) {
    expect(refusal.line).toMatch(DOWN_REFUSAL);
    expect(refusal.ms, `${mode}: refused after ${refusal.ms} ms`).toBeLessThan(PROMPT_MS);
  }
  // The others serve on, and the refused write took no effect anywhere.
  expect((await once(cluster, other, 'set bd-k 0 0 2\r\nv3\r\n', 'set')).line).toBe('STORED');
  await sleep(300);
  for (const id of ['n1', 'n2', 'n3'].filter((each) => each !== target)) {
    expect((await once(cluster, id, 'get bd-never\r\n', 'get')).line, `bd-never at ${id}`).toBe('END');
  }

  await cluster.startBackend(target);
  const back = await until(cluster, target, 'get bd-k\r\n', 'get', /^v3$/, 10_000);
  expect(back.line, `${mode}: ${target} reads what the others wrote once its memcached is back`).toBe('v3');
  expect((await once(cluster, target, 'set bd-k 0 0 2\r\nv4\r\n', 'set')).line).toBe('STORED');
}

describe('a controller whose memcached is down refuses its clients at once', () => {
  it('sequential, the leader\'s memcached', async () => memcachedDown('sequential', 'leader'), 60_000);
  it('linearizability, a follower\'s memcached', async () => memcachedDown('linearizability', 'follower'), 60_000);
  it('eventual', async () => memcachedDown('eventual', 'follower'), 60_000);
});
