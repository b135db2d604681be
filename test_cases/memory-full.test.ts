/**
 * A cluster whose memcached servers fill up, as real processes over real memcached (-M, small):
 * writes that add data are refused with memcached's own "SERVER_ERROR out of memory storing object"
 * before any replica runs out, and the cluster keeps serving reads and deletes. (Before this guard
 * a write failed at every replica at once, no replica could rebuild another, and every node
 * refused everything from then on.) The leader decides for every write of the cluster, so clients
 * writing through all three controllers at once cannot together overshoot it (when each controller
 * checked only the writes it took itself, nine such clients did, with the same ending). And the
 * guard counts memcached's size classes: after small items filled memory and were deleted, their
 * pages stay with their class, and larger items find no room although few bytes are used (before,
 * such writes failed at every replica and the cluster stopped for good, as when full). And every
 * replica's memcached counts, as its controller reports it in its heartbeats: with memcached
 * servers of different sizes, the cluster refuses what the smallest has no room for (before, the
 * smaller replicas failed the writes the leader admitted and refused everything from then on).
 * And should other clients fill every memcached between two polls, so that a write the leader
 * admitted is refused by every memcached, the cluster waits until memory is freed and then applies
 * it everywhere, losing nothing (before, memcached's refused set dropped the key at every replica,
 * none could be repaired, and the cluster refused everything until restarted). In eventual mode,
 * a peer whose memcached refuses a push keeps serving and re-reads only that key, which arrives by
 * anti-entropy once there is room (before, it re-read its whole replica, refusing everything).
 */

import { readFileSync } from 'node:fs';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TextClient } from '../src/client/text-client.ts';
import type { Mode } from '../src/consistency/types.ts';
import { Cluster } from '../src/jepsen/cluster.ts';
import { eventually, findLeader } from './support/fault-kit.ts';
import { lastLine, lastLineOf } from './support/text-request.ts';
import { itemAt } from '../src/runtime/item-at.ts';

const VALUE = 'x'.repeat(200_000);
const WRITES_MAX = 400;

/**
 * The value lengths a node serves for `keys`, once it serves all of them (polled, bounded): a
 * node other than the one that took the writes applies them a little later in sequential mode,
 * and has them pushed within moments in eventual mode.
 */
async function servedLengths(port: number, keys: readonly string[]): Promise<number[]> {
  const served = await eventually(
    async () => {
      const read = await TextClient.connect('127.0.0.1', port);
      try {
        const got = await read.request(`get ${keys.join(' ')}\r\n`, 'get');
        return got.values.map((item) => item.value.length);
      } finally {
        read.close();
      }
    },
    (lengths) => lengths.length === keys.length,
    { timeoutMs: 10_000, intervalMs: 200 },
  );
  return served.value;
}

/**
 * Another client fills a memcached with 200 KB values, straight, until it refuses one; returns
 * their keys. (Not the fault runner's BackendFiller: it fills every size class, which takes
 * longer than the controllers' poll interval, so the guard would see it before the write.)
 */
async function fillStraight(memcachedPort: number, tag: string): Promise<string[]> {
  const client = await TextClient.connect('127.0.0.1', memcachedPort);
  const keys: string[] = [];
  try {
    // Pipelined, eight at a time: the fill must fit between two of the controllers' polls.
    for (let first = 0; first < WRITES_MAX; first += 8) {
      const batch = Array.from({ length: 8 }, (_, index) => `foreign_${tag}_${first + index}`);
      const replies = await Promise.all(batch.map((key) => client.request(`set ${key} 0 0 ${VALUE.length}\r\n${VALUE}\r\n`, 'set')));
      batch.forEach((key, index) => {
        if (lastLineOf(itemAt(replies, index)) === 'STORED') keys.push(key);
      });
      if (keys.length < first + batch.length) break;
    }
  } finally {
    client.close();
  }
  return keys;
}

async function deleteStraight(memcachedPort: number, keys: readonly string[]): Promise<void> {
  const client = await TextClient.connect('127.0.0.1', memcachedPort);
  try {
    for (const key of keys) await client.request(`delete ${key}\r\n`, 'delete');
  } finally {
    client.close();
  }
}

describe.each<Mode>(['sequential', 'eventual'])('%s: memcached full', (mode) => {
  let cluster: Cluster;

  beforeAll(async () => {
    cluster = await Cluster.start({ mode, memcachedMemoryMb: 16, compactAfterEntries: 20 });
  }, 60_000);

  afterAll(async () => {
    await cluster?.stop();
  });

  it('refuses writes that add data before a replica runs out, and keeps serving reads and deletes', async () => {
    const port = itemAt(cluster.nodes, 0).clientPort;
    const client = await TextClient.connect('127.0.0.1', port);
    const outcomes: string[] = [];
    try {
      for (let i = 0; i < WRITES_MAX; i++) {
        const reply = await client.request(`set big${i} 0 0 ${VALUE.length}\r\n${VALUE}\r\n`, 'set');
        const line = lastLineOf(reply);
        outcomes.push(line);
        if (line !== 'STORED') break;
      }
    } finally {
      client.close();
    }
    const stored = outcomes.filter((line) => line === 'STORED').length;
    // 70% of 16 MB holds 58 such values. The guard refuses a few early while its peers' reports lag
    // (48–50 stored on a machine with a load of 5 on its two cores), never far from the mark.
    expect(stored).toBeGreaterThan(40);
    expect(stored).toBeLessThanOrEqual(60);
    expect(outcomes[outcomes.length - 1]).toBe('SERVER_ERROR out of memory storing object');
    // Every controller polls its memcached once a second and reports it in its heartbeats. Writes
    // a replica stored while its poll was being answered count twice (in memcached's bytes, and
    // above the poll's marks) until the next report: once every report covers everything there
    // may be room for a few values more (more on a busy machine, where pushes land in that window,
    // or where the first refusal came early), never for more than memcached holds. The loop stops
    // past that: a guard that let every write through fails both checks below.
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const topUpMax = 64 - stored;
    let topUp = 0;
    while (topUp < topUpMax && (await lastLine(port, `set extra${topUp} 0 0 ${VALUE.length}\r\n${VALUE}\r\n`, 'set')) === 'STORED') topUp += 1;
    const counts = `${stored} stored, then ${topUp} more`;
    expect(topUp, counts).toBeLessThan(topUpMax);
    expect(stored + topUp, counts).toBeLessThanOrEqual(60);
    for (const node of cluster.nodes) {
      expect(await servedLengths(node.clientPort, ['big0', 'big1']), node.id).toEqual([VALUE.length, VALUE.length]);
      expect(await lastLine(node.clientPort, `set more 0 0 ${VALUE.length}\r\n${VALUE}\r\n`, 'set')).toBe('SERVER_ERROR out of memory storing object');
    }
    expect(await lastLine(itemAt(cluster.nodes, 1).clientPort, 'delete big1\r\n', 'delete')).toBe('DELETED');
  }, 120_000);
});

describe.each<Mode>(['sequential', 'eventual'])('%s: memcached servers of different sizes', (mode) => {
  let cluster: Cluster;

  beforeAll(async () => {
    cluster = await Cluster.start({ mode, memcachedMemoryMb: 64, compactAfterEntries: 20 });
  }, 60_000);

  afterAll(async () => {
    await cluster?.stop();
  });

  it('refuses what the smallest has no room for, and every replica stays whole', async () => {
    const ids = cluster.nodes.map((node) => node.id);
    // Writes go through the node that decides them (the leader; in eventual, the node taking
    // them), whose memcached is the big one; the two others get 16 MB ones, empty, before any data.
    const entry = mode === 'eventual' ? itemAt(ids, 0) : await findLeader(cluster, ids, 10_000);
    const small = ids.filter((id) => id !== entry);
    for (const id of small) await cluster.restartBackend(id, 16);
    // Each of them has rebuilt its (empty) replica and reported its memory in a heartbeat.
    const ready = await eventually(
      () => Promise.all(small.map((id) => lastLine(cluster.node(id).clientPort, 'set ready 0 0 1\r\n1\r\n', 'set'))),
      (lines) => lines.every((line) => line === 'STORED'),
      { timeoutMs: 15_000 },
    );
    expect(ready.value).toEqual(small.map(() => 'STORED'));
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const client = await TextClient.connect('127.0.0.1', cluster.node(entry).clientPort);
    const outcomes: string[] = [];
    try {
      for (let i = 0; i < WRITES_MAX; i++) {
        const reply = await client.request(`set big${i} 0 0 ${VALUE.length}\r\n${VALUE}\r\n`, 'set');
        outcomes.push(lastLineOf(reply));
        if (outcomes[i] !== 'STORED') break;
      }
    } finally {
      client.close();
    }
    const stored = outcomes.filter((line) => line === 'STORED').length;
    // What 70% of 16 MB holds (58 such values), not 70% of 64 MB (235). Each replica's report
    // covers only what it had stored when it polled, so the writes still on their way to it count
    // on (before, a writer at full speed on a loaded machine got 62 to 77 stored; 75 fill them).
    // Under load the guard has refused as early as 47 (once, in CI beside a typecheck; why is not
    // yet known), which errs the safe way. 40 still tells 16 MB's room from 64 MB's (235).
    expect(stored).toBeGreaterThan(40);
    expect(stored).toBeLessThanOrEqual(60);
    expect(outcomes[outcomes.length - 1]).toBe('SERVER_ERROR out of memory storing object');
    // No replica failed a write: every one serves what was stored (a replica rebuilding refuses).
    for (const node of cluster.nodes) {
      expect(await servedLengths(node.clientPort, ['big0', 'big1', `big${stored - 1}`]), node.id).toEqual([VALUE.length, VALUE.length, VALUE.length]);
    }
    expect(await lastLine(cluster.node(itemAt(small, 0)).clientPort, 'delete big1\r\n', 'delete')).toBe('DELETED');
  }, 120_000);
});

describe('sequential: memcached filled through every controller at once', () => {
  let cluster: Cluster;

  beforeAll(async () => {
    cluster = await Cluster.start({ mode: 'sequential', memcachedMemoryMb: 16, compactAfterEntries: 20 });
  }, 60_000);

  afterAll(async () => {
    await cluster?.stop();
  });

  it('refuses with out of memory, never with a backend error, and keeps serving', async () => {
    const clientsPerNode = 3;
    const writers = cluster.nodes.flatMap((node) => Array.from({ length: clientsPerNode }, () => node.clientPort));
    const outcomes = await Promise.all(
      writers.map(async (port, writer) => {
        const client = await TextClient.connect('127.0.0.1', port);
        const lines: string[] = [];
        try {
          for (let i = 0; i < WRITES_MAX && lines.filter((line) => line !== 'STORED').length < 3; i++) {
            const reply = await client.request(`set w${writer}_${i} 0 0 ${VALUE.length}\r\n${VALUE}\r\n`, 'set');
            lines.push(lastLineOf(reply));
          }
        } finally {
          client.close();
        }
        return lines;
      }),
    );
    const all = outcomes.flat();
    expect(all.filter((line) => line === 'STORED').length).toBeGreaterThan(10);
    expect(new Set(all.filter((line) => line !== 'STORED'))).toEqual(new Set(['SERVER_ERROR out of memory storing object']));
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    for (const node of cluster.nodes) {
      const read = await TextClient.connect('127.0.0.1', node.clientPort);
      try {
        const got = await read.request('get w0_0\r\n', 'get');
        expect(got.values.map((item) => item.value.length)).toEqual([VALUE.length]);
      } finally {
        read.close();
      }
    }
    expect(await lastLine(itemAt(cluster.nodes, 2).clientPort, 'delete w0_1\r\n', 'delete')).toBe('DELETED');
  }, 120_000);
});

/** Sends `requests` over one connection, at most `depth` unanswered, and counts the reply lines. */
async function pipelined(port: number, requests: string[], depth: number): Promise<Map<string, number>> {
  const socket = net.connect(port, '127.0.0.1');
  const replies = new Map<string, number>();
  try {
    await new Promise<void>((resolve, reject) => {
      let pending = '';
      let sent = 0;
      let answered = 0;
      const timer = setTimeout(() => reject(new Error(`${answered} of ${requests.length} answered in time`)), 60_000);
      const fill = (): void => {
        while (sent < requests.length && sent - answered < depth) socket.write(itemAt(requests, sent++));
      };
      socket.on('error', reject);
      socket.on('connect', fill);
      socket.on('data', (chunk) => {
        pending += chunk.toString('latin1');
        for (let end = pending.indexOf('\r\n'); end !== -1; end = pending.indexOf('\r\n')) {
          const line = pending.slice(0, end);
          pending = pending.slice(end + 2);
          replies.set(line, (replies.get(line) ?? 0) + 1);
          answered += 1;
        }
        if (answered < requests.length) fill();
        else {
          clearTimeout(timer);
          resolve();
        }
      });
    });
  } finally {
    socket.destroy();
  }
  return replies;
}

describe('sequential: small items deleted, then larger ones (memcached\'s pages stay with their size class)', () => {
  let cluster: Cluster;
  const OUT_OF_MEMORY = 'SERVER_ERROR out of memory storing object';

  beforeAll(async () => {
    cluster = await Cluster.start({ mode: 'sequential', memcachedMemoryMb: 8 });
  }, 60_000);

  afterAll(async () => {
    await cluster?.stop();
  });

  it('refuses the larger items memcached has no room for, and keeps serving', async () => {
    const port = itemAt(cluster.nodes, 0).clientPort;
    const big = 'z'.repeat(4000);
    expect(await lastLine(port, `set first 0 0 ${big.length}\r\n${big}\r\n`, 'set')).toBe('STORED');
    const small = 'y'.repeat(40);
    const count = 60_000;
    const filled = await pipelined(port, Array.from({ length: count }, (_, i) => `set s${i} 0 0 ${small.length}\r\n${small}\r\n`), 200);
    expect([...filled.keys()].sort()).toEqual([OUT_OF_MEMORY, 'STORED']);
    const deleted = await pipelined(port, Array.from({ length: count }, (_, i) => `delete s${i}\r\n`), 200);
    expect(deleted.get('DELETED')).toBe(filled.get('STORED'));
    // Every controller polls its memcached once a second: let them see the deletes.
    await new Promise((resolve) => setTimeout(resolve, 1_200));

    // Few bytes are used now, but the pages belong to the small items' class.
    const written = await pipelined(port, Array.from({ length: 1500 }, (_, i) => `set b${i} 0 0 ${big.length}\r\n${big}\r\n`), 4);
    expect(written.get(OUT_OF_MEMORY)).toBeGreaterThan(0);
    expect([...written.keys()].filter((line) => line !== 'STORED' && line !== OUT_OF_MEMORY)).toEqual([]);
    for (const [i, node] of cluster.nodes.entries()) {
      const read = await TextClient.connect('127.0.0.1', node.clientPort);
      try {
        const got = await read.request('get first\r\n', 'get');
        expect(got.values.map((item) => item.value.length)).toEqual([big.length]);
      } finally {
        read.close();
      }
      // Items of the small size have room, and are taken through every controller.
      expect(await lastLine(node.clientPort, `set again${i} 0 0 ${small.length}\r\n${small}\r\n`, 'set')).toBe('STORED');
    }
    expect(await lastLine(itemAt(cluster.nodes, 1).clientPort, 'delete first\r\n', 'delete')).toBe('DELETED');
  }, 120_000);
});

describe('sequential: every memcached refuses a write the guard admitted (another client filled them)', () => {
  let cluster: Cluster;
  const BIG = 'b'.repeat(200_000);

  beforeAll(async () => {
    cluster = await Cluster.start({ mode: 'sequential', memcachedMemoryMb: 16, compactAfterEntries: 20 });
  }, 60_000);

  afterAll(async () => {
    await cluster?.stop();
  });

  /**
   * Other clients fill every memcached between two of the controllers' polls (once a second), and
   * a write of `value` to `target` lands before the next: the leader admits it, every memcached
   * refuses it. When a poll came first the guard refuses it instead (memcached's reply): free the
   * memory, and try again. Resolves with the write's reply and the keys the fill wrote.
   */
  async function admitWhileFull(
    entry: number,
    value: string,
    tag: string,
  ): Promise<{ outcome: Promise<string>; foreign: Map<number, string[]> }> {
    const foreign = new Map<number, string[]>();
    for (let attempt = 0; attempt < 10; attempt++) {
      const filled = await Promise.all(cluster.nodes.map((node) => fillStraight(node.memcachedPort, `${tag}_${attempt}_${node.id}`)));
      cluster.nodes.forEach((node, index) => foreign.set(node.memcachedPort, itemAt(filled, index)));
      const client = await TextClient.connect('127.0.0.1', entry);
      const reply = client.request(`set target 0 0 ${value.length}\r\n${value}\r\n`, 'set').then(lastLineOf);
      const early = await Promise.race([reply, new Promise<null>((resolve) => setTimeout(() => resolve(null), 500))]);
      if (early === 'SERVER_ERROR out of memory storing object') {
        client.close();
        await Promise.all([...foreign].map(([port, keys]) => deleteStraight(port, keys)));
        await new Promise((resolve) => setTimeout(resolve, 1_200));
        continue;
      }
      // Committed, and answered: the store of a key the replica knows is sent quietly, not awaited.
      expect(early).toBe('STORED');
      return { outcome: reply.finally(() => client.close()), foreign };
    }
    throw new Error('the leader refused the write in every attempt');
  }

  /** No node serves `target` as it was before the write every memcached refused: each refuses the read. */
  async function expectNoStaleTarget(): Promise<void> {
    for (const node of cluster.nodes) {
      const read = await TextClient.connect('127.0.0.1', node.clientPort);
      try {
        const reply = await read.request('get target\r\n', 'get');
        expect(reply.values.map((item) => item.value.length), node.id).toEqual([]);
        expect(reply.lines.join('\n'), node.id).toMatch(/^SERVER_ERROR/m);
      } finally {
        read.close();
      }
    }
  }

  /** Polls each node until it serves the four keys, then compares (long values by length and first byte). */
  async function expectEveryNodeServes(expected: readonly string[]): Promise<void> {
    for (const node of cluster.nodes) {
      const served = await eventually(
        async () => {
          const read = await TextClient.connect('127.0.0.1', node.clientPort);
          try {
            const got = await read.request('get base target k0 k29\r\n', 'get');
            return got.values.map((item) => `${item.key}=${item.value.length <= 8 ? item.value.toString() : `${item.value.length}×${item.value.toString('latin1', 0, 1)}`}`);
          } finally {
            read.close();
          }
        },
        (values) => values.length === 4,
        { timeoutMs: 15_000, intervalMs: 200 },
      );
      expect(served.value, node.id).toEqual(expected);
    }
  }

  it('waits until the other client frees memory, then applies the write everywhere and loses nothing', async () => {
    const entry = itemAt(cluster.nodes, 0).clientPort;
    expect(await lastLine(entry, 'set base 0 0 4\r\nabcd\r\n', 'set')).toBe('STORED');
    expect(await lastLine(entry, 'append base 0 0 4\r\nefgh\r\n', 'append')).toBe('STORED');
    expect(await lastLine(entry, 'set target 0 0 5\r\nsmall\r\n', 'set')).toBe('STORED');
    // Enough writes that the log is compacted past the ones above: only memcached holds them now.
    for (let i = 0; i < 30; i++) expect(await lastLine(entry, `set k${i} 0 0 1\r\n${i % 10}\r\n`, 'set')).toBe('STORED');
    await new Promise((resolve) => setTimeout(resolve, 1_200));

    const { outcome, foreign } = await admitWhileFull(entry, BIG, 'delete');
    expect(await outcome).toBe('STORED');
    // The cluster waits (it cannot apply a committed write anywhere), and `show` says why.
    const shown = await eventually(
      async () => {
        const client = await TextClient.connect('127.0.0.1', entry);
        try {
          return (await client.request('show\r\n', 'show')).lines.filter((line) => line.includes('refusing writes (out of memory storing object)')).length;
        } finally {
          client.close();
        }
      },
      (lines) => lines === cluster.nodes.length,
      { timeoutMs: 3_000, intervalMs: 100 },
    );
    expect(shown.value).toBe(cluster.nodes.length);
    // No replica serves the value the write replaced meanwhile.
    await expectNoStaleTarget();
    // Then the other client frees memory, and every replica applies it by itself: no operator,
    // no restart.
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    await Promise.all([...foreign].map(([port, keys]) => deleteStraight(port, keys)));
    await expectEveryNodeServes(['base=abcdefgh', `target=${BIG.length}×b`, 'k0=0', 'k29=9']);
    // New writes are taken again once every controller has polled its memcached since. (Of the
    // size just freed: memcached hands the pages of other sizes back only within a minute or so.)
    const after = await eventually(() => lastLine(entry, `set after 0 0 ${BIG.length}\r\n${BIG}\r\n`, 'set'), (line) => line === 'STORED', { timeoutMs: 10_000, intervalMs: 200 });
    expect(after.value).toBe('STORED');
  }, 120_000);

  it('waits, too, until an operator gives every memcached more memory at run time (cache_memlimit), with no restart', async () => {
    const entry = itemAt(cluster.nodes, 1).clientPort;
    const value = 'c'.repeat(BIG.length);
    const { outcome } = await admitWhileFull(entry, value, 'limit');
    expect(await outcome).toBe('STORED');
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    await expectNoStaleTarget();
    for (const node of cluster.nodes) expect(await lastLine(node.memcachedPort, 'cache_memlimit 32\r\n', 'cache_memlimit')).toBe('OK');
    await expectEveryNodeServes(['base=abcdefgh', `target=${value.length}×c`, 'k0=0', 'k29=9']);
  }, 120_000);
});

describe('eventual: a peer\'s memcached refuses a push (another client filled it)', () => {
  let cluster: Cluster;

  beforeAll(async () => {
    cluster = await Cluster.start({ mode: 'eventual', memcachedMemoryMb: 16 });
  }, 60_000);

  afterAll(async () => {
    await cluster?.stop();
  });

  it('keeps serving at that peer, re-reading only the refused key, which arrives once there is room', async () => {
    const n1 = itemAt(cluster.nodes, 0);
    const n2 = itemAt(cluster.nodes, 1);
    expect(await lastLine(n2.clientPort, 'set probe 0 0 5\r\nhello\r\n', 'set')).toBe('STORED');
    // Fill n2's memcached between two polls, then write through n1 before n2's next report: n1
    // admits the write, and n2's memcached refuses the push. When the report came first, n1
    // refuses the write itself: free the memory, and try again.
    let foreign: string[] = [];
    let admitted = false;
    for (let attempt = 0; attempt < 10 && !admitted; attempt++) {
      foreign = await fillStraight(n2.memcachedPort, `push_${attempt}`);
      const outcome = await lastLine(n1.clientPort, `set target 0 0 ${VALUE.length}\r\n${VALUE}\r\n`, 'set');
      admitted = outcome === 'STORED';
      if (!admitted) {
        expect(outcome).toBe('SERVER_ERROR out of memory storing object');
        await deleteStraight(n2.memcachedPort, foreign);
        await new Promise((resolve) => setTimeout(resolve, 1_200));
      }
    }
    expect(admitted).toBe(true);
    const refusedAt = await eventually(
      async () => readFileSync(cluster.logFile(n2.id), 'utf8'),
      (log) => log.includes('memcached refused a write and kept the keys as they were'),
      { timeoutMs: 5_000 },
    );
    expect(refusedAt.ok).toBe(true);
    // n2 still serves what it holds, and rebuilt nothing (before: it refused everything while it
    // re-read its whole replica).
    expect((await TextClient.connect('127.0.0.1', n2.clientPort).then(async (client) => {
      try {
        return (await client.request('get probe target\r\n', 'get')).values.map((item) => item.key);
      } finally {
        client.close();
      }
    }))).toEqual(['probe']);
    // Memory freed: anti-entropy brings the write.
    await deleteStraight(n2.memcachedPort, foreign);
    expect(await servedLengths(n2.clientPort, ['target'])).toEqual([VALUE.length]);
    expect(readFileSync(cluster.logFile(n2.id), 'utf8')).not.toMatch(/rebuilding the replica/);
  }, 120_000);
});
