/**
 * Counters on real processes (controllers and memcached): two clients increment one key 300 times
 * each through two different controllers, at once; every replica then reads 600, in eventual and
 * in causal mode (incr replicates as per-node deltas, see src/store/counter.ts).
 */

import { describe, expect, it } from 'vitest';
import { TextClient } from '../src/client/text-client.ts';
import { clusterClients } from './support/cluster-clients.ts';
import type { Mode } from '../src/consistency/types.ts';

const INCREMENTS = 300;

const harness = clusterClients();
const connect = (id: string): Promise<TextClient> => harness.connect(id);

async function get(client: TextClient, key: string): Promise<string | null> {
  const reply = await client.request(`get ${key}\r\n`, 'get');
  return reply.values[0]?.value.toString().trim() ?? null;
}

async function increment(client: TextClient, key: string, times: number): Promise<void> {
  for (let index = 0; index < times; index += 1) {
    const line = (await client.request(`incr ${key} 1\r\n`, 'incr')).lines[0];
    expect(line).toMatch(/^\d+$/);
  }
}

/** What every node reads under `key` once they agree, or their reads at the bound. */
async function settledReads(readers: TextClient[], key: string, expected: string, boundMs: number): Promise<Array<string | null>> {
  const deadline = Date.now() + boundMs;
  for (;;) {
    const reads = await Promise.all(readers.map((reader) => get(reader, key)));
    if (reads.every((read) => read === expected) || Date.now() > deadline) return reads;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

async function concurrentIncrements(mode: Mode): Promise<Array<string | null>> {
  await harness.start({ mode });
  const [first, second, third] = [await connect('n1'), await connect('n2'), await connect('n3')];
  expect((await first.request('set hits 0 0 1\r\n0\r\n', 'set')).lines[0]).toBe('STORED');
  expect(await settledReads([first, second, third], 'hits', '0', 5000)).toEqual(['0', '0', '0']);
  await Promise.all([increment(first, 'hits', INCREMENTS), increment(second, 'hits', INCREMENTS)]);
  return settledReads([first, second, third], 'hits', String(2 * INCREMENTS), 10_000);
}

describe('counters on real processes', () => {
  for (const mode of ['eventual', 'causal'] as const) {
    it(`${mode} mode: 300 + 300 increments through two controllers read 600 on all three`, async () => {
      expect(await concurrentIncrements(mode)).toEqual(['600', '600', '600']);
    }, 60_000);
  }
});
