/**
 * Causal mode on real processes (controllers and memcached, every peer link through a proxy).
 *
 * The anomaly: a question written on n1 is read on n2, whose answer is written there; the link
 * n1 → n3 is slow. Eventual mode lets n3 show the answer while the question is still missing;
 * causal mode holds the answer back until the question is visible. And causal tokens: a
 * connection that presents on n2 a token taken on n1 waits until n2 has what the token names,
 * or gets SERVER_ERROR at the bound. And a replica rebuilt after its memcached restarted: a set it
 * took meanwhile depends on a write it lost, and no peer shows the set without that write.
 */

import { describe, expect, it } from 'vitest';
import { TextClient } from '../src/client/text-client.ts';
import { clusterClients } from './support/cluster-clients.ts';
import type { Mode } from '../src/consistency/types.ts';
import { itemAt } from '../src/runtime/item-at.ts';

const harness = clusterClients();
const connect = (id: string): Promise<TextClient> => harness.connect(id);

async function get(client: TextClient, key: string): Promise<string | null> {
  const reply = await client.request(`get ${key}\r\n`, 'get');
  return reply.values[0]?.value.toString() ?? null;
}

/** Polls until `key` reads as something, for at most `boundMs`. */
async function awaitValue(client: TextClient, key: string, boundMs: number): Promise<string | null> {
  const deadline = Date.now() + boundMs;
  for (;;) {
    const value = await get(client, key);
    if (value !== null || Date.now() > deadline) return value;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Rounds in which n3 showed an answer before its question. */
async function answersBeforeQuestions(mode: Mode, rounds: number): Promise<number> {
  const cluster = await harness.start({ mode, proxies: true });
  const [asker, answerer, reader] = [await connect('n1'), await connect('n2'), await connect('n3')];
  const slowLink = cluster.links.get('n1->n3');
  if (slowLink === undefined) throw new Error('no proxy n1->n3');
  slowLink.slow(400);
  let anomalies = 0;
  for (let round = 0; round < rounds; round += 1) {
    expect((await asker.request(`set q${round} 0 0 8\r\nquestion\r\n`, 'set')).lines[0]).toBe('STORED');
    expect(await awaitValue(answerer, `q${round}`, 5000)).toBe('question');
    expect((await answerer.request(`set a${round} 0 0 6\r\nanswer\r\n`, 'set')).lines[0]).toBe('STORED');
    expect(await awaitValue(reader, `a${round}`, 10_000)).toBe('answer');
    if ((await get(reader, `q${round}`)) === null) anomalies += 1;
  }
  return anomalies;
}

describe('causal mode on real processes', () => {
  it('eventual mode shows an answer before its question through a slow link', async () => {
    expect(await answersBeforeQuestions('eventual', 3)).toBeGreaterThan(0);
  }, 60_000);

  it('causal mode never does', async () => {
    expect(await answersBeforeQuestions('causal', 3)).toBe(0);
  }, 60_000);

  it('a token taken on one controller makes another wait until it has caught up, bounded', async () => {
    const cluster = await harness.start({ mode: 'causal', proxies: true });
    const [writer, mover] = [await connect('n1'), await connect('n2')];
    // Under the failure timeout (500 ms): a slower link would be taken for a dead one.
    cluster.links.get('n1->n2')?.slow(300);
    expect((await writer.request('set moved 0 0 5\r\nhello\r\n', 'set')).lines[0]).toBe('STORED');
    const token = itemAt((await writer.request('causal_token\r\n', 'causal_token')).lines, 0);
    expect(token).toMatch(/^TOKEN c1\.[0-9a-z.]+$/);
    const tokenText = token.slice('TOKEN '.length);
    const tooShort = await mover.request(`causal_wait ${tokenText} 20\r\n`, 'causal_wait');
    expect(tooShort.lines[0]).toMatch(/^SERVER_ERROR timeout: causal wait of 20 ms: this controller has not caught up/);
    const waited = await mover.request(`causal_wait ${tokenText} 10000\r\n`, 'causal_wait');
    expect(waited.lines[0]).toBe('OK');
    expect(await get(mover, 'moved')).toBe('hello');
    expect((await mover.request('causal_wait c1.zz 100\r\n', 'causal_wait')).lines[0]).toBe('CLIENT_ERROR bad causal token');
  }, 60_000);

  it('a peer shows a set taken during a rebuild only with the lost write it depends on', async () => {
    const cluster = await harness.start({ mode: 'causal', proxies: true });
    const [n1, n2, n3] = [await connect('n1'), await connect('n2'), await connect('n3')];
    // x, written on n3, reaches n1 but not n2; then n3 is cut off from both.
    cluster.cut('n3', 'n2', true);
    expect((await n3.request('set x 0 0 1\r\nx\r\n', 'set')).lines[0]).toBe('STORED');
    expect(await awaitValue(n1, 'x', 5000)).toBe('x');
    cluster.isolate('n3');
    // n1's memcached restarts empty: n1 lost x, and cannot get it back while n3 is cut off.
    await cluster.restartBackend('n1');
    const refusedUntil = Date.now() + 10_000;
    let reply = '';
    while (Date.now() < refusedUntil && !reply.includes('not caught up')) {
      reply = (await n1.request('get x\r\n', 'get').catch((error: unknown) => ({ lines: [String(error)] }))).lines[0] ?? '';
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(reply).toMatch(/not caught up/);
    // A set n1 takes meanwhile depends on x (a client of n1 may have read it).
    expect((await n1.request('set s 0 0 1\r\ns\r\n', 'set')).lines[0]).toBe('STORED');
    // n2 gives up waiting on n3 and takes n1's whole replica: it must not show s without x.
    const watchUntil = Date.now() + 8000;
    let shownWithoutX = 0;
    while (Date.now() < watchUntil) {
      if ((await get(n2, 's')) !== null && (await get(n2, 'x')) === null) shownWithoutX += 1;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(shownWithoutX).toBe(0);
    // Healed, n2 shows both.
    cluster.healAll();
    expect(await awaitValue(n2, 's', 15_000)).toBe('s');
    expect(await get(n2, 'x')).toBe('x');
  }, 90_000);
});
