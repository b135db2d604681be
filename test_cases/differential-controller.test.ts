/**
 * memcached is the reference: the same command sequences go to a real memcached and to a
 * controller of a real cluster (in each mode), and the replies must match byte for byte. The one
 * thing allowed to differ is the value of a cas token (the controller's are its own versions), so
 * `gets` replies are compared with the token masked, and each side's `cas` uses its own token.
 */

import type { ChildProcess } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Mode } from '../src/consistency/types.ts';
import { Cluster, freePort, spawnMemcached } from '../src/jepsen/cluster.ts';
import { exchange } from './support/raw.ts';

/** One step: the request (with `{cas}` standing for the last token this side saw) and the end of its reply. */
type Step = [request: string, replyEnd: string];

const sessions: Record<string, Step[]> = {
  'storage commands': [
    ['set a 5 0 3\r\nabc\r\n', '\r\n'],
    ['get a\r\n', 'END\r\n'],
    ['add a 0 0 1\r\nx\r\n', '\r\n'],
    ['add b 7 0 2\r\nbb\r\n', '\r\n'],
    ['replace c 0 0 1\r\nx\r\n', '\r\n'],
    ['replace b 1 0 3\r\nnew\r\n', '\r\n'],
    ['append a 0 0 2\r\nde\r\n', '\r\n'],
    ['prepend a 0 0 2\r\nzz\r\n', '\r\n'],
    ['append missing 0 0 1\r\nx\r\n', '\r\n'],
    ['get a b c\r\n', 'END\r\n'],
    ['set empty 0 0 0\r\n\r\n', '\r\n'],
    ['get empty\r\n', 'END\r\n'],
  ],
  'cas': [
    ['set k 0 0 1\r\n1\r\n', '\r\n'],
    ['gets k\r\n', 'END\r\n'],
    ['cas k 0 0 1 {cas}\r\n2\r\n', '\r\n'],
    ['cas k 0 0 1 {cas}\r\n3\r\n', '\r\n'],
    ['cas nope 0 0 1 1\r\nx\r\n', '\r\n'],
    ['gets k\r\n', 'END\r\n'],
    ['get k\r\n', 'END\r\n'],
  ],
  'incr and decr': [
    ['set n 0 0 2\r\n10\r\n', '\r\n'],
    ['incr n 5\r\n', '\r\n'],
    ['decr n 100\r\n', '\r\n'],
    ['incr n 18446744073709551615\r\n', '\r\n'],
    ['incr missing 1\r\n', '\r\n'],
    ['set s 0 0 3\r\nabc\r\n', '\r\n'],
    ['incr s 1\r\n', '\r\n'],
    ['set big 0 0 20\r\n18446744073709551615\r\n', '\r\n'],
    ['incr big 1\r\n', '\r\n'],
    ['get n big\r\n', 'END\r\n'],
  ],
  'delete, touch and expiry': [
    ['set d 0 0 1\r\nx\r\n', '\r\n'],
    ['delete d\r\n', '\r\n'],
    ['delete d\r\n', '\r\n'],
    ['get d\r\n', 'END\r\n'],
    ['set t 0 100 1\r\nx\r\n', '\r\n'],
    ['touch t 0\r\n', '\r\n'],
    ['touch none 10\r\n', '\r\n'],
    ['set gone 0 -1 1\r\nx\r\n', '\r\n'],
    ['get gone t\r\n', 'END\r\n'],
    ['gat 100 t gone\r\n', 'END\r\n'],
  ],
  'noreply and pipelining': [
    ['set p 0 0 1 noreply\r\nx\r\nget p\r\n', 'END\r\n'],
    ['add p 0 0 1 noreply\r\ny\r\nappend p 0 0 1 noreply\r\nz\r\nget p\r\n', 'END\r\n'],
    ['incr p 1 noreply\r\ndelete p noreply\r\nget p\r\n', 'END\r\n'],
    ['set q 0 0 1\r\n1\r\nset r 0 0 1\r\n2\r\nget q r\r\n', 'END\r\n'],
  ],
  'errors': [
    ['bogus\r\n', '\r\n'],
    ['get\r\n', '\r\n'],
    ['set k 0 0 2\r\nabc\r\n', 'chunk\r\nERROR\r\n'],
    ['incr k abc\r\n', '\r\n'],
    ['delete k 5\r\n', '\r\n'],
    [`get ${'x'.repeat(251)}\r\n`, '\r\n'],
  ],
};

async function play(port: number, steps: Step[]): Promise<string[]> {
  const replies: string[] = [];
  let cas = '0';
  for (const [template, end] of steps) {
    const request = template.replaceAll('{cas}', cas);
    const reply = (await exchange(port, request, (received) => received.toString('latin1').endsWith(end), 10_000)).toString('latin1');
    const token = /^VALUE \S+ \d+ \d+ (\d+)\r\n/m.exec(reply);
    if (token) cas = token[1];
    replies.push(reply.replace(/^(VALUE \S+ \d+ \d+) \d+\r\n/gm, '$1 <cas>\r\n'));
  }
  return replies;
}

describe.each<Mode>(['linearizability', 'sequential', 'eventual'])('a %s controller answers like memcached', (mode) => {
  let cluster: Cluster;
  let memcached: ChildProcess;
  let memcachedPort: number;

  beforeAll(async () => {
    memcachedPort = await freePort();
    memcached = await spawnMemcached(memcachedPort, path.join(os.tmpdir(), `mckv-differential-${process.pid}.log`));
    cluster = await Cluster.start({ mode, backend: 'memcache' });
  }, 60_000);

  afterAll(async () => {
    memcached?.kill('SIGTERM');
    await cluster?.stop();
  });

  it.each(Object.keys(sessions))('%s', async (name) => {
    const steps = sessions[name];
    const expected = await play(memcachedPort, steps);
    const actual = await play(cluster.nodes[1].clientPort, steps);
    expect(actual).toEqual(expected);
  });
});
