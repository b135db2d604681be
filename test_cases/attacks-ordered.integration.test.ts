/**
 * Attacks by a hostile local process on a linearizability cluster of real controller processes
 * over real memcached (one cluster shared by every attack, in order): hellos without the secret
 * and with a made-up proof, a 4 MiB frame of empty objects before the handshake, and then, with
 * the cluster's own secret (a compromised or buggy peer impersonating a node), messages no correct
 * peer sends — an unknown kind, null, {}, an append in the leader's own term, terms Infinity, "9"
 * and 2^60, an append whose entry holds an op of unknown kind, a 4 MiB frame of empty objects. Last,
 * the write-ahead file: another node's copied in, and a byte flipped in the last record.
 *
 * After each: every controller alive, a write and a read through each work, every key written
 * before is still there; the attacked controller counted what it dropped, no term went wild, and
 * it serves again after a restart. A refused write-ahead file is one line naming what is wrong and
 * exit code 1.
 */

import { copyFileSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cluster, waitUntilServing } from '../src/jepsen/cluster.ts';
import { TERM_MAX } from '../src/consistency/log/validate.ts';
import { HANDSHAKE_VERSION } from '../src/peer/handshake.ts';
import { WAL_RECORD_HEADER_BYTES } from '../src/wal.ts';
import {
  HostilePeer, Survivors, clusterCredentials, controllerPid, emptyObjectsPayload, frameOf, leaderOf, pollUntil, rssBytes,
  sendAsImpostor, stat,
} from './support/attack-kit.ts';

const MIB = 1024 * 1024;

describe('linearizability: a hostile local process against the peer port and the write-ahead file', () => {
  let cluster: Cluster;
  let survivors: Survivors;
  let credentials: ReturnType<typeof clusterCredentials>;

  beforeAll(async () => {
    cluster = await Cluster.start({ mode: 'linearizability' });
    credentials = clusterCredentials(cluster);
    survivors = new Survivors(cluster);
    await survivors.writeThroughEvery(3);
  }, 60_000);

  afterAll(async () => {
    await cluster?.stop();
  });

  const port = (id: string): number => cluster.node(id).clientPort;
  const peerPort = (id: string): number => cluster.node(id).peerPort;

  it('refuses a hello without the secret and one with a made-up proof; nothing is cut off', async () => {
    const target = 'n1';
    const refusedBefore = await stat(port(target), 'mckv_peer_handshakes_refused');
    // The previous release's hello (no proof at all), then a raft append behind it.
    const oldStyle = new HostilePeer(peerPort(target));
    oldStyle.send([{ kind: 'hello', from: 'n2', to: target, version: 2 }, { kind: 'append', term: 99, entries: [] }]);
    // The right shape, claiming to be n2, with a proof made up.
    const forged = new HostilePeer(peerPort(target));
    const challenge = await forged.frame(0);
    expect(challenge).toMatchObject({ kind: 'challenge', from: target, clusterId: credentials.clusterId });
    forged.send([
      {
        kind: 'hello', version: HANDSHAKE_VERSION, from: 'n2', to: target, clusterId: credentials.clusterId, settings: (challenge as { settings: string }).settings,
        nonce: Buffer.alloc(32, 7), proof: Buffer.alloc(32, 9),
      },
      { kind: 'append', term: 99, prevIndex: 0, prevTerm: 0, entries: [], commitIndex: 0, durableIndex: 0, round: 0, seq: 0, quiet: false },
    ]);
    expect(await oldStyle.closedWithin(3000)).toBe(true);
    expect(await forged.closedWithin(3000)).toBe(true);
    expect(await stat(port(target), 'mckv_peer_handshakes_refused')).toBeGreaterThanOrEqual(refusedBefore + 2);
    expect(await stat(port(target), 'mckv_peer_messages_invalid')).toBe(0);
    await survivors.expectIntact('after spoofed hellos');
  }, 30_000);

  it('drops a 4 MiB frame of empty objects before the handshake from its header; memory stays flat', async () => {
    const target = 'n2';
    const pid = controllerPid(cluster, target);
    const rssBefore = rssBytes(pid);
    const refusedBefore = await stat(port(target), 'mckv_peer_handshakes_refused');
    const bomb = new HostilePeer(peerPort(target));
    await bomb.frame(0); // the challenge: the controller has taken the connection
    bomb.socket.write(frameOf(emptyObjectsPayload(4 * MIB)));
    expect(await bomb.closedWithin(3000)).toBe(true);
    expect(await stat(port(target), 'mckv_peer_handshakes_refused')).toBeGreaterThan(refusedBefore);
    expect(rssBytes(pid) - rssBefore).toBeLessThan(64 * MIB);
    await survivors.expectIntact('after a codec bomb before the handshake');
  }, 30_000);

  it('with the secret: drops and counts what no correct peer sends, at the leader and at a follower; terms stay sane', async () => {
    const leader = await leaderOf(cluster);
    const [follower, other] = cluster.nodes.map((node) => node.id).filter((id) => id !== leader);
    if (follower === undefined || other === undefined) throw new Error(`expected two nodes besides the leader ${leader}`);
    const term = await stat(port(leader), 'mckv_term');
    const leaderPid = controllerPid(cluster, leader);
    const rssBefore = rssBytes(leaderPid);
    const acceptedBefore = await stat(port(leader), 'mckv_peer_handshakes_accepted');
    const badOp = (entryTerm: number): unknown => ({
      kind: 'append', term: entryTerm, prevIndex: 0, prevTerm: 0, commitIndex: 0, durableIndex: 0, round: 1, seq: 1, quiet: false,
      entries: [{ term: entryTerm, index: 1, nowMs: Date.now(), op: { kind: 'explode', key: 'kept-1-n1-0' }, origin: leader, incarnation: 1, requestId: null }],
    });
    const heartbeat = (messageTerm: unknown): unknown => ({
      kind: 'append', term: messageTerm, prevIndex: 0, prevTerm: 0, entries: [], commitIndex: 0, durableIndex: 0, round: 1, seq: 1, quiet: false,
    });
    // At the leader, as a follower: an append in the leader's own term says there is a second leader.
    const junk: unknown[] = [
      { kind: 'gossip', term },
      null,
      {},
      heartbeat(term),
      heartbeat(Infinity),
      heartbeat('9'),
      { kind: 'vote', term: 2 ** 60, lastIndex: 2 ** 60, lastTerm: 2 ** 60 },
      { kind: 'pre_vote', term: Infinity, lastIndex: 0, lastTerm: 0 },
      badOp(term + 1),
    ];
    const atLeader = await sendAsImpostor({ port: peerPort(leader), self: follower, to: leader, ...credentials }, junk, port(leader));
    expect(atLeader.after).toBeGreaterThanOrEqual(atLeader.before + junk.length);

    // A 4 MiB frame of empty objects, within the authenticated frame cap: refused by the codec's heap estimate.
    // The real `other` is paused meanwhile: its redial would replace the impostor's connection
    // (a newer one from the same peer wins) before a loaded machine has read the 4 MiB.
    const framesRefusedBefore = await stat(port(leader), 'mckv_peer_frames_refused');
    const otherPid = controllerPid(cluster, other);
    process.kill(otherPid, 'SIGSTOP');
    try {
      const bomb = await HostilePeer.impersonate({ port: peerPort(leader), self: other, to: leader, ...credentials });
      bomb.socket.write(frameOf(emptyObjectsPayload(4 * MIB)));
      expect(await bomb.closedWithin(5000)).toBe(true);
    } finally {
      process.kill(otherPid, 'SIGCONT');
    }
    expect(await stat(port(leader), 'mckv_peer_frames_refused')).toBeGreaterThan(framesRefusedBefore);
    expect(rssBytes(leaderPid) - rssBefore).toBeLessThan(64 * MIB);

    // At a follower, as the leader: an entry with an op of unknown kind, in the leader's term and
    // in a later one, and terms no election reaches.
    const followerJunk = [badOp(term), badOp(term + 1), heartbeat(Infinity), heartbeat(2 ** 60), heartbeat(-1), { kind: 'append' }];
    const impostorOfLeader = { port: peerPort(follower), self: leader, to: follower, ...credentials };
    const atFollower = await sendAsImpostor(impostorOfLeader, followerJunk, port(follower));
    expect(atFollower.after).toBeGreaterThanOrEqual(atFollower.before + followerJunk.length);

    // The real peers dial in again (two impersonations at the leader, each replacing a real
    // peer's connection, then each real peer's own), and the cluster still elects and serves; no
    // term went wild.
    const accepted = await pollUntil(() => stat(port(leader), 'mckv_peer_handshakes_accepted'), (count) => count >= acceptedBefore + 4, 5000);
    expect(accepted).toBeGreaterThanOrEqual(acceptedBefore + 4);
    await leaderOf(cluster);
    for (const node of cluster.nodes) {
      const nodeTerm = await stat(node.clientPort, 'mckv_term');
      expect(Number.isSafeInteger(nodeTerm), `${node.id} term ${nodeTerm}`).toBe(true);
      expect(nodeTerm).toBeLessThan(term + 100);
      expect(nodeTerm).toBeLessThan(TERM_MAX);
    }
    await survivors.expectIntact('after junk from a peer holding the secret');

    // The attacked controllers restart and serve (nothing they persisted makes them crash).
    for (const id of [leader, follower]) {
      await cluster.kill(id);
      await cluster.startController(id);
      await waitUntilServing(port(id), 30_000);
    }
    await survivors.expectIntact('after restarting the attacked controllers');
  }, 90_000);

  describe('the write-ahead file', () => {
    const walOf = (id: string): string => path.join(credentials.dataDir, id, 'wal.bin');

    /** Starts n1, which must refuse: resolves with its exit code and the lines it printed this time. */
    async function startRefused(id: string): Promise<{ exitCode: number | null; lines: string[] }> {
      const logFile = cluster.logFile(id);
      const logBytesBefore = statSync(logFile).size;
      await expect(cluster.startController(id)).rejects.toThrow(/exited before answering/);
      const child = cluster.node(id).controller;
      // The process has exited; its output reaches the log file through a pipe, soon after.
      const text = await pollUntil(
        () => Promise.resolve(readFileSync(logFile).subarray(logBytesBefore).toString('utf8')),
        (printed) => printed.includes('write-ahead'),
        5000,
      );
      return { exitCode: child?.exitCode ?? null, lines: text.split('\n').filter((line) => line.trim() !== '') };
    }

    it('refuses another node\'s write-ahead file with one line naming both, exit code 1', async () => {
      await cluster.kill('n1');
      const own = readFileSync(walOf('n1'));
      copyFileSync(walOf('n2'), walOf('n1'));
      const refused = await startRefused('n1');
      writeFileSync(walOf('n1'), own);
      expect(refused.exitCode).toBe(1);
      expect(refused.lines).toHaveLength(1);
      expect(refused.lines[0]).toContain(walOf('n1'));
      expect(refused.lines[0]).toMatch(/node 'n2'.*node 'n1'/);
    }, 60_000);

    it('refuses a write-ahead file whose last complete record has a flipped byte, naming file and offset', async () => {
      const own = readFileSync(walOf('n1'));
      const lastRecord = lastRecordOffset(own);
      const damaged = Buffer.from(own);
      const payloadStart = lastRecord + WAL_RECORD_HEADER_BYTES;
      const flipAt = payloadStart + Math.floor((damaged.length - payloadStart) / 2);
      damaged.writeUInt8(damaged.readUInt8(flipAt) ^ 0x20, flipAt);
      writeFileSync(walOf('n1'), damaged);
      const refused = await startRefused('n1');
      writeFileSync(walOf('n1'), own);
      expect(refused.exitCode).toBe(1);
      expect(refused.lines).toHaveLength(1);
      expect(refused.lines[0]).toContain(walOf('n1'));
      expect(refused.lines[0]).toContain(`byte ${lastRecord}`);
      // Its own file back, n1 starts and the cluster has everything.
      await cluster.startController('n1');
      await waitUntilServing(port('n1'), 30_000);
      await survivors.expectIntact('after the refused write-ahead files');
    }, 60_000);
  });
});

/** Where the last whole record of a write-ahead file starts (records: u32 LE length, two crc32s, payload). */
function lastRecordOffset(bytes: Buffer): number {
  let offset = 0;
  let last = -1;
  for (let count = 0; count < 10_000_000 && offset + WAL_RECORD_HEADER_BYTES <= bytes.length; count++) {
    const end = offset + WAL_RECORD_HEADER_BYTES + bytes.readUInt32LE(offset);
    if (end > bytes.length) break;
    last = offset;
    offset = end;
  }
  if (last < 0) throw new Error('no whole record in the write-ahead file');
  return last;
}
