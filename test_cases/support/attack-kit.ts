/**
 * Helpers for the end-to-end attack tests (attacks-*.integration.test.ts): a hostile local
 * process against real controller processes started by `Cluster`.
 *
 * - `HostilePeer`: a raw TCP connection to a controller's peer port that can write any bytes, or
 *   first run the real handshake with the cluster's own secret (a compromised or buggy peer
 *   impersonating a node: the controller then closes that node's real connection, as it would for
 *   a restarted peer, and the real node dials in again, replacing the impersonator).
 * - `Survivors`: keys written through every controller before the attacks, and the check made
 *   after each: every controller process alive, a write and a read through every controller, and
 *   every key written before still there.
 * - `stats`, `rssBytes`: what a controller says of itself, and what Linux says of its memory.
 *
 * Every loop is bounded in count and time; every socket opened is closed by its owner.
 */

import { readFileSync } from 'node:fs';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import zlib from 'node:zlib';
import { expect } from 'vitest';
import { TextClient, type TextReply } from '../../src/client/text-client.ts';
import { loadConfig } from '../../src/config.ts';
import type { Cluster } from '../../src/jepsen/cluster.ts';
import { readClusterSecret } from '../../src/peer/credentials.ts';
import { FRAME_HEADER_BYTES, FRAME_MAGIC, FRAME_VERSION, FrameDecoder, encodeFrame } from '../../src/peer/frame.ts';
import { answerChallenge, checkWelcome } from '../../src/peer/handshake.ts';

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `probe` until `accept` holds or `timeoutMs` passes; returns the last value probed. */
export async function pollUntil<T>(probe: () => Promise<T>, accept: (value: T) => boolean, timeoutMs: number, intervalMs = 50): Promise<T> {
  const deadlineMs = Date.now() + timeoutMs;
  let value = await probe();
  while (!accept(value) && Date.now() < deadlineMs) {
    await sleep(intervalMs);
    value = await probe();
  }
  return value;
}

/**
 * Sends `messages` as an authenticated impostor of `self` and waits until `countPort`'s
 * mckv_peer_messages_invalid has grown by their number. The real peer redials and replaces the
 * impostor's connection (by design: the newest authenticated one wins), so on a busy machine it
 * may win before the messages are read: then the impostor tries again, at most four times.
 */
export async function sendAsImpostor(
  options: { port: number; self: string; to: string; clusterId: string; secret: Buffer },
  messages: unknown[],
  countPort: number,
): Promise<{ before: number; after: number }> {
  const before = await stat(countPort, 'mckv_peer_messages_invalid');
  let after = before;
  for (let attempt = 0; attempt < 4 && after < before + messages.length; attempt += 1) {
    const impostor = await HostilePeer.impersonate(options);
    impostor.send(messages);
    after = await pollUntil(() => stat(countPort, 'mckv_peer_messages_invalid'), (count) => count >= before + messages.length, 3000);
    impostor.close();
  }
  return { before, after };
}

/** One request on a connection of its own; a lost connection or timeout becomes an `ERROR lost` line. */
export async function request(port: number, raw: string | Buffer, verb: string, timeoutMs = 5000): Promise<TextReply> {
  try {
    return await TextClient.requestOnce('127.0.0.1', port, raw, verb, timeoutMs);
  } catch (error) {
    return { lines: [`ERROR lost (${error instanceof Error ? error.message : String(error)})`], values: [] };
  }
}

/** A `set` retried while the reply is a SERVER_ERROR (an election or a catch-up under way), for at most `timeoutMs`. */
export async function setUntilStored(port: number, key: string, value: string, timeoutMs = 10_000): Promise<string> {
  const reply = await pollUntil(
    () => request(port, `set ${key} 0 0 ${Buffer.byteLength(value)}\r\n${value}\r\n`, 'set'),
    (answer) => answer.lines[0] === 'STORED',
    timeoutMs,
  );
  return reply.lines[0] ?? '';
}

/** The value of `key` through `port` (null: absent), or the error line. */
export async function read(port: number, key: string): Promise<{ value: string | null } | { error: string }> {
  const reply = await request(port, `get ${key}\r\n`, 'get');
  const last = reply.lines[reply.lines.length - 1] ?? '';
  if (last !== 'END') return { error: last };
  const found = reply.values.find((item) => item.key === key);
  return { value: found === undefined ? null : found.value.toString('latin1') };
}

/** A controller's (or a memcached's) `stats`, or `stats GROUP`, by name. */
export async function stats(port: number, group = ''): Promise<Map<string, string>> {
  const reply = await request(port, group === '' ? 'stats\r\n' : `stats ${group}\r\n`, 'stats');
  return new Map(reply.lines.flatMap((line): Array<[string, string]> => {
    const [, name, value] = /^STAT (\S+) (.*)$/.exec(line) ?? [];
    return name === undefined || value === undefined ? [] : [[name, value]];
  }));
}

/** One numeric stat (NaN when the controller did not answer or has no such stat). */
export async function stat(port: number, name: string): Promise<number> {
  return Number((await stats(port)).get(name) ?? Number.NaN);
}

/** The resident set of a process, in bytes (VmRSS in /proc/PID/status). */
export function rssBytes(pid: number): number {
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'latin1'));
  if (match === null) throw new Error(`no VmRSS for process ${pid}`);
  return Number(match[1]) * 1024;
}

/** The PID of a node's controller process, which must be running. */
export function controllerPid(cluster: Cluster, id: string): number {
  const child = cluster.node(id).controller;
  if (child?.pid === undefined || child.exitCode !== null || child.signalCode !== null) throw new Error(`controller ${id} is not running`);
  return child.pid;
}

/** The node whose `stats` say it is the leader, polled for at most `timeoutMs`. */
export async function leaderOf(cluster: Cluster, timeoutMs = 10_000): Promise<string> {
  const roles = await pollUntil(
    () => Promise.all(cluster.nodes.map(async (node) => (await stats(node.clientPort)).get('mckv_role'))),
    (found) => found.filter((role) => role === 'leader').length === 1,
    timeoutMs,
  );
  const leader = cluster.nodes[roles.indexOf('leader')];
  if (leader === undefined) throw new Error(`no single leader within ${timeoutMs} ms (roles: ${roles.join(', ')})`);
  return leader.id;
}

// ------------------------------------------------------------------ hostile peer

/** A raw connection to a controller's peer port; collects the frames the controller sends back. */
export class HostilePeer {
  readonly socket: net.Socket;
  readonly frames: unknown[] = [];
  readonly closed: Promise<void>;
  private readonly decoder = new FrameDecoder({ frameBytesMax: 64 * 1024 });

  constructor(port: number) {
    this.socket = net.connect({ host: '127.0.0.1', port });
    this.socket.on('error', () => undefined);
    this.socket.on('data', (chunk: Buffer) => this.frames.push(...this.decoder.push(chunk).messages));
    this.closed = new Promise((resolve) => this.socket.on('close', () => resolve()));
  }

  /**
   * Runs the dialer's side of the real handshake towards `to` as node `self`, with `secret`;
   * resolves once the controller's welcome checks out.
   */
  static async impersonate(options: { port: number; self: string; to: string; clusterId: string; secret: Buffer }): Promise<HostilePeer> {
    const peer = new HostilePeer(options.port);
    const challenge = await peer.frame(0);
    // Holding the secret, it can claim whatever settings the controller announces.
    const settings = (challenge as { settings?: unknown }).settings;
    const outcome = answerChallenge(challenge, {
      self: options.self, peer: options.to, clusterId: options.clusterId, settings: typeof settings === 'string' ? settings : '',
      secret: options.secret, nonce: randomBytes(32),
    });
    if (outcome.kind !== 'answered') throw new Error(`challenge refused: ${outcome.refusal.kind}`);
    peer.socket.write(encodeFrame(outcome.hello));
    const welcomeFrame = await peer.frame(1);
    const welcome = checkWelcome(welcomeFrame, { self: options.self, peer: options.to, expectedProof: outcome.expectedWelcomeProof });
    if (welcome.kind !== 'accepted') throw new Error(`welcome refused: ${welcome.refusal.kind}`);
    return peer;
  }

  /** The `index`th frame received (undefined if the connection closed first or 5 s passed). */
  async frame(index: number): Promise<unknown> {
    const deadlineMs = Date.now() + 5000;
    while (this.frames.length <= index && !this.socket.destroyed && Date.now() < deadlineMs) await sleep(5);
    return this.frames[index];
  }

  /** Writes every message as a frame, in one write. */
  send(messages: readonly unknown[]): void {
    this.socket.write(Buffer.concat(messages.map((message) => encodeFrame(message))));
  }

  /** Resolves true if the controller closed the connection within `timeoutMs`. */
  closedWithin(timeoutMs: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs)));
    return Promise.race([this.closed.then(() => true), timeout]).finally(() => clearTimeout(timer));
  }

  close(): void {
    this.socket.destroy();
  }
}

/** The cluster's id and secret, as its controllers read them from its config. */
export function clusterCredentials(cluster: Cluster): { clusterId: string; secret: Buffer; dataDir: string } {
  const config = loadConfig(cluster.configFile);
  return { clusterId: config.clusterId, secret: readClusterSecret(config.secretFile), dataDir: config.dataDir };
}

// ------------------------------------------------------------------ what must survive

/** Keys written before the attacks, and the checks that every attack leaves the cluster serving them. */
export class Survivors {
  readonly written = new Map<string, string>();
  private round = 0;

  constructor(private readonly cluster: Cluster) {}

  /** Writes `perNode` keys through every controller; each must be STORED. */
  async writeThroughEvery(perNode: number): Promise<void> {
    this.round += 1;
    for (const node of this.cluster.nodes) {
      for (let index = 0; index < perNode; index += 1) {
        const key = `kept-${this.round}-${node.id}-${index}`;
        const value = `${key}-${randomBytes(4).toString('hex')}`;
        expect(await setUntilStored(node.clientPort, key, value), `set ${key} through ${node.id}`).toBe('STORED');
        this.written.set(key, value);
      }
    }
  }

  /**
   * After an attack: every controller process runs, a write and a read through each work, and
   * every key written before reads back through every controller (eventual mode: once the
   * replicas agree, within `timeoutMs`).
   */
  async expectIntact(what: string, timeoutMs = 15_000): Promise<void> {
    for (const node of this.cluster.nodes) {
      const child = node.controller;
      expect(child !== null && child.exitCode === null && child.signalCode === null, `${what}: controller ${node.id} alive`).toBe(true);
    }
    await this.writeThroughEvery(1);
    for (const node of this.cluster.nodes) {
      const missing = await pollUntil(() => this.missingAt(node.clientPort), (keys) => keys.length === 0, timeoutMs, 100);
      expect(missing, `${what}: keys missing or wrong through ${node.id}`).toEqual([]);
    }
  }

  /** The written keys that do not read back with their value through `port` (with what was read). */
  private async missingAt(port: number): Promise<string[]> {
    const keys = [...this.written.keys()];
    const missing: string[] = [];
    for (let start = 0; start < keys.length; start += 50) {
      const batch = keys.slice(start, start + 50);
      const reply = await request(port, `get ${batch.join(' ')}\r\n`, 'get');
      const found = new Map(reply.values.map((item) => [item.key, item.value.toString('latin1')]));
      for (const key of batch) if (found.get(key) !== this.written.get(key)) missing.push(`${key}=${found.get(key) ?? reply.lines.at(-1) ?? 'absent'}`);
    }
    return missing;
  }
}

// ------------------------------------------------------------------ hand-made frames

/** A peer frame around `payload` (any bytes), with a correct header and checksum. */
export function frameOf(payload: Buffer): Buffer {
  const header = Buffer.alloc(FRAME_HEADER_BYTES);
  header.writeUInt32BE(FRAME_MAGIC, 0);
  header.writeUInt8(FRAME_VERSION, 4);
  header.writeUInt32BE(payload.length, 5);
  header.writeUInt32BE(zlib.crc32(payload), 9);
  return Buffer.concat([header, payload]);
}

/** A value-codec payload of one array of `bytes` − 5 empty objects: `bytes` in all. */
export function emptyObjectsPayload(bytes: number): Buffer {
  const count = bytes - 5;
  const payload = Buffer.alloc(bytes, 0xb0); // 0xb0: an object of no fields
  payload[0] = 0xc7; // an array: u32 LE count, then the values
  payload.writeUInt32LE(count, 1);
  return payload;
}
