/**
 * Real-process fault tests of eventual mode: three controllers over three memcached.
 *
 * - Partition and pause: concurrent recorded clients write shared keys and keys of their own on
 *   all three controllers while one controller is paused (SIGSTOP) and another is cut off through
 *   the peer-link proxies. Both live sides keep serving; after resume and heal every controller
 *   answers every key the same within a bound (measured, printed), a key written by one client
 *   only ends at that client's last acknowledged value (or a later, unacknowledged one), and a
 *   shared key ends at a value somebody wrote.
 * - A memcached restarted empty is refilled by anti-entropy (measured, printed).
 * - Availability: with two controllers killed, the third still answers reads and writes.
 *
 * Intuition: eventual mode promises availability and convergence, not order, so the assertions
 * are about liveness (who answers) and about the state after the heal (agreement, no lost write
 * of a single writer), never about the order of concurrent writes.
 */

import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { HistoryRecorder } from '../src/check/history.ts';
import { Cluster } from '../src/jepsen/cluster.ts';
import {
  acceptableFinalValues, describeRecords, eventually, nowMs, readKeys, RecordingClient, sleep,
  startWorkload, waitForAgreement, type OpRecord,
} from './support/fault-kit.ts';
import { itemAt } from '../src/runtime/item-at.ts';

const HEARTBEAT_INTERVAL_MS = 50;
const FAILURE_TIMEOUT_MS = 500;
/** Generous bounds: the machine is shared with other work. */
const CONVERGENCE_BOUND_MS = 6 * FAILURE_TIMEOUT_MS;
const REPAIR_BOUND_MS = 10 * FAILURE_TIMEOUT_MS;
const CALL_TIMEOUT_MS = 1000;
const SHARED_KEYS = ['ev-a', 'ev-b', 'ev-c'];
const CLIENTS_PER_NODE = 2;
/** One key per workload client, written by that client only. */
const OWN_KEYS = Array.from({ length: 3 * CLIENTS_PER_NODE }, (_, client) => `ev-own-${client}`);

async function stopFast(cluster: Cluster | null): Promise<void> {
  if (!cluster) return;
  // SIGKILL first: a graceful stop costs seconds and proves nothing here.
  await Promise.all(cluster.nodes.map((node) => cluster.kill(node.id)));
  await cluster.stop();
}

const ms = (value: number): string => `${Math.round(value)} ms`;

describe('eventual: one controller paused and another cut off', () => {
  let cluster: Cluster | null = null;
  const clients: RecordingClient[] = [];

  afterEach(async () => {
    for (const client of clients) client.close();
    await stopFast(cluster);
    cluster = null;
  }, 30_000);

  it('keeps both live sides serving, then converges after resume and heal', async () => {
    cluster = await Cluster.start({ mode: 'eventual', proxies: true, heartbeatIntervalMs: HEARTBEAT_INTERVAL_MS, failureTimeoutMs: FAILURE_TIMEOUT_MS });
    const live = cluster;
    const recorder = new HistoryRecorder();
    const records: OpRecord[] = [];
    const shared = startWorkload({
      cluster: live, recorder, records, keys: SHARED_KEYS, clientsPerNode: CLIENTS_PER_NODE, writeShare: 0.6,
      callTimeoutMs: CALL_TIMEOUT_MS, thinkMs: 5, callsPerClientMax: 5000,
    });
    const own = startOwnKeyWriters(live, recorder, records, clients);
    await sleep(300);

    const faultMs = nowMs();
    live.pause('n2');
    live.isolate('n3');
    await sleep(1500);
    const healMs = nowMs();
    live.resume('n2');
    live.healAll();
    await sleep(300);
    await shared.stop();
    await own.stop();
    const stoppedMs = nowMs();

    const keys = [...SHARED_KEYS, ...OWN_KEYS];
    const acceptable = (key: string): Set<string | null> =>
      key.startsWith('ev-own-') ? acceptableFinalValues(records, key) : writtenValues(records, key);
    const agreement = await waitForAgreement(live, keys, {
      timeoutMs: 2 * CONVERGENCE_BOUND_MS, callTimeoutMs: CALL_TIMEOUT_MS, acceptable,
    });
    const duringFault = (node: string): OpRecord[] => records.filter((record) => record.node === node && record.f === 'write'
      && record.outcome === 'ok' && record.startMs >= faultMs && record.endMs < healMs);
    console.log(`FAULT eventual pause+cut: replicas converged ${ms(agreement.elapsedMs)} after the workload stopped ` +
      `(${ms(stoppedMs - healMs + agreement.elapsedMs)} after the heal); writes acknowledged during the fault: ` +
      `n1 ${duringFault('n1').length}, n3 (cut off) ${duringFault('n3').length}, n2 (paused) ${duringFault('n2').length}; ${records.length} calls`);

    expect.soft(duringFault('n1').length, 'eventual: n1 (majority side) stopped acknowledging writes while n2 was paused and n3 cut off').toBeGreaterThan(0);
    expect.soft(duringFault('n3').length, 'eventual: n3 (cut off) stopped acknowledging writes; eventual mode must serve on both sides').toBeGreaterThan(0);
    expect.soft(duringFault('n2'), 'eventual: the paused n2 acknowledged writes while stopped (impossible: the clock is wrong)').toEqual([]);
    expect(agreement.differences, `eventual pause+cut: replicas did not converge to an acceptable value within ${2 * CONVERGENCE_BOUND_MS} ms:\n${agreement.differences.join('\n')}`).toEqual([]);
    expect(agreement.elapsedMs, `eventual pause+cut: convergence took ${ms(agreement.elapsedMs)}`).toBeLessThanOrEqual(CONVERGENCE_BOUND_MS);
  }, 60_000);
});

/** Every value ever offered to `key` by a write that was not refused. */
function writtenValues(records: readonly OpRecord[], key: string): Set<string | null> {
  return new Set(records.filter((record) => record.f === 'write' && record.key === key && record.outcome !== 'fail').map((record) => record.value));
}

/** One writer per own key (client numbers 50+), writing it in a loop on its own controller. */
function startOwnKeyWriters(
  cluster: Cluster,
  recorder: HistoryRecorder,
  records: OpRecord[],
  clients: RecordingClient[],
): { stop(): Promise<void> } {
  const stop = new AbortController();
  const runs = OWN_KEYS.map(async (key, index) => {
    const node = itemAt(cluster.nodes, index % cluster.nodes.length);
    const writer = new RecordingClient({
      recorder, records, client: 50 + index, node: node.id, port: node.clientPort, callTimeoutMs: CALL_TIMEOUT_MS,
    });
    clients.push(writer);
    for (let counter = 1; counter <= 5000 && !stop.signal.aborted; counter++) {
      const record = await writer.write(key, `own${index}.${counter}`);
      await sleep(record.outcome === 'ok' ? 10 : 50);
    }
  });
  return {
    stop: async () => {
      stop.abort();
      await Promise.all(runs);
    },
  };
}

describe('eventual: memcached restart and two controllers down', () => {
  let cluster: Cluster | null = null;
  const records: OpRecord[] = [];
  const recorder = new HistoryRecorder();
  const clients: RecordingClient[] = [];
  const client = (number: number, node: string): RecordingClient => {
    const live = cluster as Cluster;
    const recording = new RecordingClient({
      recorder, records, client: number, node, port: live.node(node).clientPort, callTimeoutMs: CALL_TIMEOUT_MS,
    });
    clients.push(recording);
    return recording;
  };

  beforeAll(async () => {
    cluster = await Cluster.start({ mode: 'eventual', heartbeatIntervalMs: HEARTBEAT_INTERVAL_MS, failureTimeoutMs: FAILURE_TIMEOUT_MS });
  }, 60_000);

  afterAll(async () => {
    for (const recording of clients) recording.close();
    await stopFast(cluster);
  }, 30_000);

  it('repairs a memcached restarted empty through anti-entropy', async () => {
    const live = cluster as Cluster;
    const keys = Array.from({ length: 40 }, (_, index) => `ev-seed-${index}`);
    const writer = client(1, 'n1');
    for (const key of keys) {
      const record = await writer.write(key, `seed-${key}`);
      expect(record.outcome, `eventual: seeding ${key} before any fault: ${describeRecords([record])}`).toBe('ok');
    }
    const expected = keys.map((key) => `seed-${key}`);
    const everywhere = await waitForAgreement(live, keys, { timeoutMs: CONVERGENCE_BOUND_MS, callTimeoutMs: CALL_TIMEOUT_MS });
    expect(everywhere.differences, 'eventual: the seeded keys never reached every replica').toEqual([]);

    const restartMs = nowMs();
    await live.restartBackend('n2');
    const port = live.node('n2').clientPort;
    const repaired = await eventually(
      () => readKeys(port, keys, CALL_TIMEOUT_MS),
      (answers) => answers.every((answer, index) => answer.ok && answer.value === expected[index]),
      { timeoutMs: 2 * REPAIR_BOUND_MS, intervalMs: 100 },
    );
    const missing = repaired.value.flatMap((answer, index) => (answer.ok && answer.value === expected[index] ? [] : [`${keys[index]}: ${answer.ok ? JSON.stringify(answer.value) : answer.error}`]));
    console.log(`FAULT eventual memcached-restart: n2's replica repaired ${repaired.ok ? ms(nowMs() - restartMs) : 'NEVER'} after the restart began (${keys.length} keys)`);
    expect(missing, `eventual memcached-restart: n2 still misses keys ${ms(nowMs() - restartMs)} after its memcached restarted empty:\n${missing.slice(0, 8).join('\n')}`).toEqual([]);
    expect(nowMs() - restartMs, 'eventual memcached-restart: repair time').toBeLessThanOrEqual(REPAIR_BOUND_MS);
  }, 40_000);

  it('answers reads and writes on the one controller left when two are killed', async () => {
    const live = cluster as Cluster;
    const killedMs = nowMs();
    await Promise.all([live.kill('n2'), live.kill('n3')]);
    const survivor = client(2, 'n1');
    const calls: OpRecord[] = [];
    // Right after the kills and on after the survivor's failure detector has declared both down.
    for (let index = 0; index < 200 && nowMs() - killedMs < 3 * FAILURE_TIMEOUT_MS; index++) {
      calls.push(await survivor.write(`ev-alone-${index}`, `alone-${index}`));
      calls.push(await survivor.read(`ev-alone-${index}`));
      await sleep(25);
    }
    const failed = calls.filter((record) => record.outcome !== 'ok');
    const wrong = calls.filter((record) => record.f === 'read' && record.outcome === 'ok' && record.value !== record.key.replace('ev-alone-', 'alone-'));
    const slowestMs = Math.max(...calls.map((record) => record.endMs - record.startMs));
    console.log(`FAULT eventual two-killed: n1 answered ${calls.length - failed.length}/${calls.length} calls, slowest ${ms(slowestMs)}, ` +
      `all done ${ms(nowMs() - killedMs)} after the kills`);
    expect(failed, `eventual two-killed: n1 refused or dropped calls with both peers dead:\n${describeRecords(failed)}`).toEqual([]);
    expect(wrong, `eventual two-killed: n1 read back other values than it just stored:\n${describeRecords(wrong)}`).toEqual([]);
    expect(slowestMs, 'eventual two-killed: slowest call (a local write must not wait for dead peers)').toBeLessThanOrEqual(FAILURE_TIMEOUT_MS);
  }, 30_000);
});
