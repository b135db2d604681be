/**
 * Attacks by a hostile local process on an eventual cluster of real controller processes over
 * real memcached, with idle_timeout_s on (one cluster shared by every attack, in order). On the
 * peer port, with the cluster's own secret (a compromised or buggy peer impersonating a node):
 * messages of no known kind, a push whose version is 2^64 − 1 (far ahead of any clock: followed,
 * it would win every later write) and one of 2^1100 (past what the codec takes: made by hand, as
 * our encoder refuses it). On the client port: a client that never reads its 1024-copy get of a
 * 1 MiB value, the same get read whole by another, and 1024 idle connections.
 *
 * After each: every controller alive, a write and a read through each work, every key written
 * before is still there (with its value); memory stays bounded and other clients are served; the
 * attacked controllers serve again after a restart.
 */

import { checkStreamedReply } from './support/streamed-reply.ts';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cluster, waitUntilServing } from '../src/jepsen/cluster.ts';
import { encodeFrame, FRAME_HEADER_BYTES } from '../src/peer/frame.ts';
import { HostilePeer, Survivors, clusterCredentials, controllerPid, frameOf, pollUntil, read, request, rssBytes, sendAsImpostor, sleep, stat } from './support/attack-kit.ts';
import { must } from './support/must.ts';

const MIB = 1024 * 1024;
const IDLE_TIMEOUT_S = 3;

describe('eventual: a hostile local process against the peer and client ports', () => {
  let cluster: Cluster;
  let survivors: Survivors;
  let credentials: ReturnType<typeof clusterCredentials>;

  beforeAll(async () => {
    cluster = await Cluster.start({ mode: 'eventual', extraConfig: [`idle_timeout_s = ${IDLE_TIMEOUT_S}`] });
    credentials = clusterCredentials(cluster);
    survivors = new Survivors(cluster);
    await survivors.writeThroughEvery(3);
  }, 60_000);

  afterAll(async () => {
    await cluster?.stop();
  });

  const port = (id: string): number => cluster.node(id).clientPort;
  const peerPort = (id: string): number => cluster.node(id).peerPort;

  it('with the secret: drops and counts junk and a push of version 2^64 − 1; the clock does not follow it', async () => {
    const victim = must([...survivors.written.keys()][0], 'a key the survivors wrote');
    const kept = survivors.written.get(victim);
    const entry = (cas: bigint): unknown => ({ value: Buffer.from('hijacked'), flags: 0, expiresAtMs: 0, cas });
    const junk: unknown[] = [
      { kind: 'gossip' },
      null,
      {},
      { kind: 'push', batch: 1, entries: [[victim, entry(2n ** 64n - 1n)], ['planted', entry(2n ** 64n - 1n)]] },
      { kind: 'push', batch: 2, entries: [[victim, entry(2n ** 64n)]] },
    ];
    const { before, after } = await sendAsImpostor({ port: peerPort('n1'), self: 'n2', to: 'n1', ...credentials }, junk, port('n1'));
    expect(after).toBeGreaterThanOrEqual(before + junk.length);
    expect(await read(port('n1'), victim)).toEqual({ value: kept });
    expect(await read(port('n1'), 'planted')).toEqual({ value: null });
    // A write after it still wins, and its version is near the wall clock, not near 2^64.
    await survivors.expectIntact('after a push of version 2^64 - 1');
    const reply = await request(port('n1'), `gets ${victim}\r\n`, 'gets');
    const cas = reply.values[0]?.cas ?? null;
    expect(cas).not.toBeNull();
    expect(cas as bigint).toBeLessThan(2n ** 63n);
  }, 60_000);

  it('refuses a frame holding a version of 2^1100 (made by hand: our encoder stops at 128 bits)', async () => {
    const push = (cas: bigint): unknown => ({ kind: 'push', batch: 3, entries: [['planted', { value: Buffer.from('x'), flags: 0, expiresAtMs: 0, cas }]] });
    expect(() => encodeFrame(push(2n ** 1100n))).toThrow(RangeError);
    // 2^64 is written as tag 0xcb, sign 0, u32 LE byte count 9, magnitude 01 00…00 (big-endian):
    // give it 138 bytes, 0x10 then 137 zeros, which is 2^1100.
    const payload = encodeFrame(push(2n ** 64n)).subarray(FRAME_HEADER_BYTES);
    const marker = Buffer.from([0xcb, 0, 9, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    const at = payload.indexOf(marker);
    expect(at).toBeGreaterThan(0);
    const huge = Buffer.alloc(6 + 138);
    huge.set([0xcb, 0]);
    huge.writeUInt32LE(138, 2);
    huge[6] = 0x10;
    const crafted = Buffer.concat([payload.subarray(0, at), huge, payload.subarray(at + marker.length)]);
    const framesRefusedBefore = await stat(port('n3'), 'mckv_peer_frames_refused');
    const hostile = await HostilePeer.impersonate({ port: peerPort('n3'), self: 'n1', to: 'n3', ...credentials });
    hostile.socket.write(frameOf(crafted));
    expect(await hostile.closedWithin(5000)).toBe(true);
    expect(await stat(port('n3'), 'mckv_peer_frames_refused')).toBe(framesRefusedBefore + 1);
    expect(await read(port('n3'), 'planted')).toEqual({ value: null });
    await survivors.expectIntact('after a version of 2^1100');
    // The attacked controllers restart and serve.
    for (const id of ['n1', 'n3']) {
      await cluster.kill(id);
      await cluster.startController(id);
      await waitUntilServing(port(id), 30_000);
    }
    await survivors.expectIntact('after restarting the attacked controllers');
  }, 90_000);

  describe('clients', () => {
    /** A value just under memcached's 1 MiB item limit, of varied bytes so a misplaced piece shows. */
    const big = Buffer.alloc(MIB - 1024);
    for (let index = 0; index < big.length; index += 1) big[index] = 0x21 + ((index * 7 + (index >> 12)) % 90);
    const copies = 1024;
    const bigGet = `get ${Array.from({ length: copies }, () => 'big').join(' ')}\r\n`;
    const sockets: net.Socket[] = [];

    afterAll(() => {
      for (const socket of sockets.splice(0)) socket.destroy();
    });

    function connect(): Promise<net.Socket> {
      return new Promise((resolve, reject) => {
        const socket = net.connect({ host: '127.0.0.1', port: port('n1') });
        sockets.push(socket);
        socket.on('error', () => undefined);
        socket.once('connect', () => resolve(socket));
        socket.once('error', reject);
      });
    }

    beforeAll(async () => {
      const reply = await request(port('n1'), Buffer.concat([Buffer.from(`set big 0 0 ${big.length}\r\n`), big, Buffer.from('\r\n')]), 'set');
      expect(reply.lines).toEqual(['STORED']);
    });

    it('a client that never reads its 1024-copy get of a 1 MiB value: no longer read, memory bounded, others served', async () => {
      const pid = controllerPid(cluster, 'n1');
      const rssBefore = rssBytes(pid);
      const silent = await connect();
      silent.pause();
      for (let index = 0; index < 4; index += 1) silent.write(bigGet);
      const paused = await pollUntil(() => stat(port('n1'), 'mckv_conns_paused_output'), (count) => count >= 1, 10_000);
      expect(paused).toBe(1);
      let rssPeak = rssBytes(pid);
      // Others are served meanwhile, and memory stays where it is (a flat reply would be 4 GiB).
      await survivors.expectIntact('beside a client that never reads');
      for (let sample = 0; sample < 10; sample += 1) {
        rssPeak = Math.max(rssPeak, rssBytes(pid));
        await sleep(50);
      }
      expect(rssPeak - rssBefore).toBeLessThan(128 * MIB);
      silent.destroy();
    }, 60_000);

    it('the 1024-copy get read whole arrives complete and correct, memory bounded', async () => {
      const pid = controllerPid(cluster, 'n1');
      const rssBefore = rssBytes(pid);
      let rssPeak = rssBefore;
      const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, rssBytes(pid))), 50);
      try {
        const reader = await connect();
        const record = Buffer.concat([Buffer.from(`VALUE big 0 ${big.length}\r\n`), big, Buffer.from('\r\n')]);
        const received = checkStreamedReply(reader, record, copies, 60_000);
        reader.write(bigGet);
        expect(await received).toBe(record.length * copies + 5);
        reader.destroy();
      } finally {
        clearInterval(sampler);
      }
      expect(rssPeak - rssBefore).toBeLessThan(128 * MIB);
      await survivors.expectIntact('after a 1 GiB reply');
    }, 90_000);

    it(`1024 idle connections: the 1025th client is refused, then idle_timeout_s ${IDLE_TIMEOUT_S} closes them all and clients are served`, async () => {
      const kicksBefore = await stat(port('n1'), 'idle_kicks');
      const idle: net.Socket[] = [];
      for (let batch = 0; batch < 8; batch += 1) idle.push(...(await Promise.all(Array.from({ length: 128 }, () => connect()))));
      const closed = idle.map((socket) => new Promise<void>((resolve) => socket.once('close', () => resolve())));
      // Past connections_max (1024) a client is told so, as memcached tells it.
      const refused = await request(port('n1'), 'version\r\n', 'version', 2000);
      expect(refused.lines[0]).toBe('ERROR Too many open connections');
      await Promise.race([Promise.all(closed), sleep((IDLE_TIMEOUT_S + 10) * 1000)]);
      expect(idle.filter((socket) => !socket.destroyed && !socket.readableEnded)).toHaveLength(0);
      expect(await stat(port('n1'), 'idle_kicks')).toBeGreaterThanOrEqual(kicksBefore + 1024);
      await survivors.expectIntact('after 1024 idle connections');
    }, 60_000);
  });
});

