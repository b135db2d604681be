/**
 * Peer authentication end to end, on 127.0.0.1 free ports: three PeerNetworks sharing a secret
 * see each other; a process without the secret, with another secret or of another cluster gets no
 * message through and cuts no real peer off; a dialer sends nothing to a listener that cannot
 * prove the secret; a huge frame before the handshake is refused from its header; a flood of
 * unauthenticated connections is bounded; a peer's newer authenticated connection replaces its
 * older one; a node run with other settings (another mode) stays out; with mutual TLS a
 * certificate from another CA, or naming another node, is refused.
 */

import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { asPeerId, type PeerId } from '../src/consistency/types.ts';
import type { PeerTls } from '../src/peer/credentials.ts';
import { FRAME_HEADER_BYTES, FrameDecoder, encodeFrame } from '../src/peer/frame.ts';
import { HANDSHAKE_VERSION, answerChallenge, challengeMessage, type Welcome } from '../src/peer/handshake.ts';
import { memoryReportWire } from '../src/peer/memory-report.ts';
import { PeerNetwork, type PeerLog } from '../src/peer/network.ts';
import type { PeerMemoryReport } from '../src/store/memory-guard.ts';
import { freePort } from '../src/jepsen/cluster.ts';

const heartbeatIntervalMs = 20;
const failureTimeoutMs = 300;
const ids = [asPeerId('n1'), asPeerId('n2'), asPeerId('n3')] as const;
const [n1, n2, n3] = ids;
const secret = randomBytes(32);
const settings = 'mode=sequential value_bytes_max=1048576';
const clusterId = 'alpha';

interface LogLine {
  level: 'info' | 'warn';
  message: string;
  meta?: Record<string, unknown>;
}

function recordingLog(lines: LogLine[]): PeerLog {
  return {
    info: (message, meta) => lines.push({ level: 'info', message, meta }),
    warn: (message, meta) => lines.push({ level: 'warn', message, meta }),
  };
}

/** Polls `condition` every 5 ms; fails after `timeoutMs`. */
async function waitFor(condition: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadlineMs = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadlineMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A cluster of networks on fresh ports; `stop` stops every one it made. */
class Networks {
  readonly ports = new Map<PeerId, number>();
  readonly logs = new Map<PeerId | string, LogLine[]>();
  readonly made: PeerNetwork[] = [];

  static async create(): Promise<Networks> {
    const networks = new Networks();
    for (const id of ids) networks.ports.set(id, await freePort());
    return networks;
  }

  port(id: PeerId): number {
    const port = this.ports.get(id);
    if (port === undefined) throw new Error(`no port for ${id}`);
    return port;
  }

  make(
    self: PeerId,
    options: {
      secret?: Buffer; clusterId?: string; settings?: string; tls?: PeerTls | null; listenPort?: number; peers?: PeerId[]; logName?: string;
    } = {},
  ): PeerNetwork {
    const lines: LogLine[] = [];
    this.logs.set(options.logName ?? self, lines);
    const network = new PeerNetwork({
      self,
      listen: { host: '127.0.0.1', port: options.listenPort ?? this.port(self) },
      peers: (options.peers ?? ids.filter((id) => id !== self)).map((id) => ({ id, host: '127.0.0.1', port: this.port(id) })),
      secret: options.secret ?? secret,
      clusterId: options.clusterId ?? clusterId,
      settings: options.settings ?? settings,
      tls: options.tls ?? null,
      heartbeatIntervalMs,
      failureTimeoutMs,
      log: recordingLog(lines),
    });
    this.made.push(network);
    return network;
  }

  warnings(name: PeerId | string): string[] {
    return (this.logs.get(name) ?? []).filter((line) => line.level === 'warn').map((line) => line.message);
  }

  async stop(): Promise<void> {
    await Promise.all(this.made.map((network) => network.stop()));
  }
}

/** Every node connected to and hearing from both others. */
function allConnected(networks: Map<PeerId, PeerNetwork>): boolean {
  return [...networks].every(
    ([id, network]) => network.up().length === 2 && ids.every((other) => other === id || network.isConnected(other)),
  );
}

/** A message from `from` reaches `to` within two seconds. */
async function delivers(networks: Map<PeerId, PeerNetwork>, from: PeerId, to: PeerId): Promise<void> {
  const receiver = networks.get(to);
  const sender = networks.get(from);
  if (receiver === undefined || sender === undefined) throw new Error('no such network');
  const token = randomBytes(8).toString('hex');
  const arrived = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no message ${from} → ${to}`)), 2000);
    const listener = (sentBy: PeerId, message: unknown): void => {
      if (sentBy !== from || (message as { token?: string }).token !== token) return;
      clearTimeout(timer);
      receiver.off('message', listener);
      resolve();
    };
    receiver.on('message', listener);
  });
  expect(sender.send(to, { kind: 'probe', token })).toBe(true);
  await arrived;
}

/** A raw TCP client: collects the frames it receives; `closed` resolves when the other side hangs up. */
class RawPeer {
  readonly socket: net.Socket;
  readonly frames: unknown[] = [];
  readonly closed: Promise<void>;
  private readonly decoder = new FrameDecoder({ frameBytesMax: 1024 * 1024 });

  constructor(port: number) {
    this.socket = net.connect({ host: '127.0.0.1', port });
    this.socket.on('error', () => undefined);
    this.socket.on('data', (chunk: Buffer) => this.frames.push(...this.decoder.push(chunk).messages));
    this.closed = new Promise((resolve) => this.socket.on('close', () => resolve()));
  }

  async frame(index: number): Promise<unknown> {
    await waitFor(() => this.frames.length > index || this.socket.destroyed, 2000, `frame ${index}`);
    return this.frames[index];
  }

  /** Resolves true if closed within `timeoutMs`. */
  async closedWithin(timeoutMs: number): Promise<boolean> {
    return Promise.race([this.closed.then(() => true), sleep(timeoutMs).then(() => false)]);
  }
}

/** Runs the dialer's side of the handshake as `self` towards `to` and returns the connection. */
async function authenticatedRawPeer(port: number, self: string, to: string): Promise<RawPeer> {
  const peer = new RawPeer(port);
  const outcome = answerChallenge(await peer.frame(0), { self, peer: to, clusterId, settings, secret, nonce: randomBytes(32) });
  if (outcome.kind !== 'answered') throw new Error('challenge refused');
  peer.socket.write(encodeFrame(outcome.hello));
  const welcome = (await peer.frame(1)) as Welcome;
  expect(welcome.proof.equals(outcome.expectedWelcomeProof)).toBe(true);
  return peer;
}

describe('peer authentication over plain TCP', () => {
  let cluster: Networks;
  const networks = new Map<PeerId, PeerNetwork>();
  const network = (id: PeerId): PeerNetwork => networks.get(id) as PeerNetwork;
  const messagesAtN1: Array<{ from: PeerId; message: unknown }> = [];

  beforeAll(async () => {
    cluster = await Networks.create();
    for (const id of ids) networks.set(id, cluster.make(id));
    await Promise.all(ids.map((id) => network(id).start()));
    network(n1).on('message', (from, message) => messagesAtN1.push({ from, message }));
    await waitFor(() => allConnected(networks), 5000, 'the three to connect');
  });

  afterAll(async () => {
    await cluster.stop();
  });

  it('refuses a spoofed hello without the secret; no message gets through; the real peers stay connected', async () => {
    const before = network(n1).counters();
    messagesAtN1.length = 0;
    // The previous release's hello, then a raft append, as a local process could write them.
    const oldStyle = new RawPeer(cluster.port(n1));
    oldStyle.socket.write(
      Buffer.concat([
        encodeFrame({ kind: 'hello', from: 'n2', to: 'n1', version: 2 }),
        encodeFrame({ kind: 'append', term: 99, entries: [] }),
      ]),
    );
    // A hello of the right shape whose proof is made up.
    const forged = new RawPeer(cluster.port(n1));
    const challenge = (await forged.frame(0)) as { kind: string; from: string };
    expect(challenge).toMatchObject({ kind: 'challenge', from: 'n1', clusterId });
    forged.socket.write(
      Buffer.concat([
        encodeFrame({ kind: 'hello', version: HANDSHAKE_VERSION, from: 'n2', to: 'n1', clusterId, settings, nonce: randomBytes(32), proof: randomBytes(32) }),
        encodeFrame({ kind: 'append', term: 99, entries: [] }),
      ]),
    );
    expect(await oldStyle.closedWithin(2000)).toBe(true);
    expect(await forged.closedWithin(2000)).toBe(true);
    expect(forged.frames).toHaveLength(1); // the challenge, never a welcome

    const after = network(n1).counters();
    expect(after.handshakesRefused.version_mismatch).toBe(before.handshakesRefused.version_mismatch + 1);
    expect(after.handshakesRefused.bad_proof).toBe(before.handshakesRefused.bad_proof + 1);
    expect(cluster.warnings(n1).some((line) => /handshake refused: "n2" did not prove it holds the cluster secret/.test(line))).toBe(true);
    await delivers(networks, n2, n1);
    await delivers(networks, n3, n1);
    expect(messagesAtN1.map((entry) => (entry.message as { kind: string }).kind)).toEqual(['probe', 'probe']);
    expect(network(n1).up()).toEqual([n2, n3]);
  });

  it('refuses a network holding another secret; it never gets to send', async () => {
    const impostorPort = await freePort();
    const impostor = cluster.make(n2, { secret: randomBytes(32), listenPort: impostorPort, peers: [n1], logName: 'impostor' });
    const impostorMessages: unknown[] = [];
    impostor.on('message', (_from, message) => impostorMessages.push(message));
    const refusedBefore = network(n1).counters().handshakesRefused.bad_proof;
    await impostor.start();
    try {
      await waitFor(() => network(n1).counters().handshakesRefused.bad_proof > refusedBefore, 3000, 'n1 to refuse the impostor');
      expect(impostor.isConnected(n1)).toBe(false);
      expect(impostor.send(n1, { kind: 'append' })).toBe(false);
      expect(impostor.counters().handshakesAccepted).toBe(0);
    } finally {
      await impostor.stop();
    }
    expect(impostorMessages).toEqual([]);
    await delivers(networks, n2, n1);
  });

  it('a dialer sends nothing but its hello to a listener that cannot prove the secret', async () => {
    const received: unknown[] = [];
    const sockets = new Set<net.Socket>();
    const fakeListener = net.createServer((socket) => {
      sockets.add(socket);
      const decoder = new FrameDecoder({ frameBytesMax: 1024 * 1024 });
      socket.write(encodeFrame(challengeMessage({ self: 'n1', clusterId, settings, nonce: randomBytes(32) })));
      socket.on('error', () => undefined);
      socket.on('data', (chunk: Buffer) => {
        for (const message of decoder.push(chunk).messages) {
          received.push(message);
          if ((message as { kind?: string }).kind === 'hello') {
            socket.write(encodeFrame({ kind: 'welcome', version: HANDSHAKE_VERSION, from: 'n1', to: 'n3', proof: randomBytes(32) }));
          }
        }
      });
    });
    await new Promise<void>((resolve) => fakeListener.listen(0, '127.0.0.1', resolve));
    const dialer = new PeerNetwork({
      self: n3,
      listen: { host: '127.0.0.1', port: await freePort() },
      peers: [{ id: n1, host: '127.0.0.1', port: (fakeListener.address() as net.AddressInfo).port }],
      secret,
      clusterId,
      settings,
      heartbeatIntervalMs,
      failureTimeoutMs,
      log: recordingLog([]),
    });
    await dialer.start();
    try {
      await waitFor(() => dialer.counters().handshakesRefused.bad_proof >= 1, 3000, 'the dialer to refuse the welcome');
      expect(dialer.isConnected(n1)).toBe(false);
      expect(dialer.send(n1, { kind: 'secret stuff' })).toBe(false);
      await sleep(heartbeatIntervalMs * 3);
    } finally {
      await dialer.stop();
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => fakeListener.close(resolve));
    }
    expect(received.length).toBeGreaterThan(0);
    expect(received.every((message) => (message as { kind?: string }).kind === 'hello')).toBe(true);
  });

  it('refuses another cluster with one line naming both cluster ids', async () => {
    const foreignPort = await freePort();
    const foreign = cluster.make(n2, { clusterId: 'beta', listenPort: foreignPort, peers: [n1], logName: 'foreign' });
    await foreign.start();
    try {
      await waitFor(() => foreign.counters().handshakesRefused.cluster_mismatch >= 1, 3000, 'the foreign node to refuse n1');
      expect(foreign.isConnected(n1)).toBe(false);
    } finally {
      await foreign.stop();
    }
    const lines = cluster.warnings('foreign').filter((line) => /cluster id mismatch/.test(line));
    expect(lines.length).toBeGreaterThanOrEqual(1);
    expect(lines[0]).toMatch(/cluster 'alpha', this node in 'beta'/);

    // The listener's side: a hello naming another cluster.
    const raw = new RawPeer(cluster.port(n1));
    await raw.frame(0);
    raw.socket.write(
      encodeFrame({ kind: 'hello', version: HANDSHAKE_VERSION, from: 'n2', to: 'n1', clusterId: 'beta', settings, nonce: randomBytes(32), proof: randomBytes(32) }),
    );
    expect(await raw.closedWithin(2000)).toBe(true);
    expect(cluster.warnings(n1).filter((line) => /cluster id mismatch/.test(line))).toEqual([
      "peer handshake refused: cluster id mismatch: the peer is in cluster 'beta', this node in 'alpha'; connection dropped",
    ]);
  });

  it('a node run with other settings (another mode) stays out, its log naming both', async () => {
    const otherPort = await freePort();
    const otherSettings = 'mode=linearizability read_leases=off value_bytes_max=1048576';
    const other = cluster.make(n2, { settings: otherSettings, listenPort: otherPort, peers: [n1], logName: 'other' });
    await other.start();
    try {
      await waitFor(() => other.counters().handshakesRefused.settings_mismatch >= 1, 3000, 'the other node to refuse n1');
      await sleep(heartbeatIntervalMs * 3);
      expect(other.isConnected(n1)).toBe(false);
      expect(other.up()).toEqual([]);
    } finally {
      await other.stop();
    }
    expect(cluster.warnings('other').filter((line) => /settings/.test(line))[0]).toBe(
      'peer handshake refused: "n1" runs with "mode=sequential value_bytes_max=1048576", this node with ' +
        '"mode=linearizability read_leases=off value_bytes_max=1048576": every controller must run the same mode (-cons) and ' +
        'read-lease settings; connection dropped',
    );
    await delivers(networks, n2, n1);
  });

  it('refuses a 4 MiB frame before the handshake from its header, without buffering it', async () => {
    const payloadBytes = 4 * 1024 * 1024;
    const payload = Buffer.alloc(payloadBytes, 7);
    const header = encodeFrame('x').subarray(0, FRAME_HEADER_BYTES);
    header.writeUInt32BE(payloadBytes, 5);
    const memoryBytes = (): number => {
      const usage = process.memoryUsage();
      return usage.heapUsed + usage.arrayBuffers;
    };
    const baselineBytes = memoryBytes();
    const raw = new RawPeer(cluster.port(n1));
    raw.socket.write(header);
    // Refused before a byte of the body was sent, and well before the handshake deadline (1 s).
    expect(await raw.closedWithin(500)).toBe(true);
    const late = new RawPeer(cluster.port(n1));
    late.socket.write(header);
    late.socket.write(payload);
    expect(await late.closedWithin(500)).toBe(true);
    expect(memoryBytes() - baselineBytes).toBeLessThan(3 * 1024 * 1024);
    expect(payload[0]).toBe(7); // kept alive until after the measurement
    expect(cluster.warnings(n1).some((line) => /exceeds frameBytesMax 1024/.test(line))).toBe(true);
    await delivers(networks, n2, n1);
  });

  it('closes connections beyond 16 unauthenticated at once; the real peers stay up', async () => {
    const refusedBefore = network(n1).counters().handshakesRefused.too_many_pending;
    const flood: RawPeer[] = [];
    for (let index = 0; index < 100; index++) flood.push(new RawPeer(cluster.port(n1)));
    try {
      const closedEarly = await Promise.all(flood.map((peer) => peer.closedWithin(500)));
      const refused = network(n1).counters().handshakesRefused.too_many_pending - refusedBefore;
      expect(refused).toBeGreaterThanOrEqual(84);
      expect(closedEarly.filter(Boolean).length).toBeGreaterThanOrEqual(84);
      expect(closedEarly.filter((closed) => !closed).length).toBeLessThanOrEqual(16);
      expect(cluster.warnings(n1).filter((line) => /more than 16 connections not yet authenticated/.test(line)).length).toBeLessThanOrEqual(8);
      await delivers(networks, n2, n1);
      await delivers(networks, n3, n1);
      expect(network(n1).up()).toEqual([n2, n3]);
    } finally {
      for (const peer of flood) peer.socket.destroy();
      await Promise.all(flood.map((peer) => peer.closed));
    }
    // Once the flood is gone, a new connection is challenged again.
    let challenged = false;
    for (let attempt = 0; attempt < 20 && !challenged; attempt++) {
      const probe = new RawPeer(cluster.port(n1));
      challenged = (await probe.frame(0)) !== undefined;
      probe.socket.destroy();
    }
    expect(challenged).toBe(true);
  });

  it("reads a heartbeat's memory report; a malformed one is dropped, counted and logged, and the peer then reports nothing", async () => {
    const reports: Array<PeerMemoryReport | null> = [];
    network(n1).on('memory-report', (from, report) => {
      if (from === n2) reports.push(report);
    });
    const before = network(n1).counters().memoryReportsRefused;
    const raw = await authenticatedRawPeer(cluster.port(n1), 'n2', 'n1');
    const memory = { usedBytes: 10, limitBytes: 100 };
    // Both at once: the real n2 dials again soon and its connection replaces this one.
    raw.socket.write(Buffer.concat([
      encodeFrame({ kind: 'heartbeat', info: null, memory: memoryReportWire(7, memory, new Map([[0, 3n]])) }),
      encodeFrame({ kind: 'heartbeat', info: null, memory: { poll: 8, memory, stored: 'everything' } }),
    ]));
    await waitFor(() => network(n1).counters().memoryReportsRefused === before + 1, 2000, 'the second report to be refused');
    expect(reports.slice(-2)).toEqual([{ poll: 7, memory, stored: new Map([[0, 3n]]) }, null]);
    expect(cluster.warnings(n1).some((line) => /peer memory report refused/.test(line))).toBe(true);
    raw.socket.destroy();
    await waitFor(() => network(n2).isConnected(n1), 3000, 'n2 to reconnect');
    await delivers(networks, n2, n1);
  });

  it("a peer's newer authenticated connection replaces its older one", async () => {
    const before = network(n1).counters();
    messagesAtN1.length = 0;
    const second = await authenticatedRawPeer(cluster.port(n1), 'n2', 'n1');
    expect(network(n1).counters().inboundReplaced).toBe(before.inboundReplaced + 1);
    second.socket.write(encodeFrame({ kind: 'via-second' }));
    await waitFor(() => messagesAtN1.length > 0, 2000, 'the message on the second connection');
    expect(messagesAtN1[0]).toEqual({ from: n2, message: { kind: 'via-second' } });
    // The real n2 lost its connection, dials again, and its new connection replaces this one.
    expect(await second.closedWithin(3000)).toBe(true);
    expect(network(n1).counters().inboundReplaced).toBe(before.inboundReplaced + 2);
    await waitFor(() => network(n2).isConnected(n1), 3000, 'n2 to reconnect');
    await delivers(networks, n2, n1);
  });
});

describe('peer authentication over mutual TLS', () => {
  let directory = '';
  let cluster: Networks;
  const networks = new Map<PeerId, PeerNetwork>();
  const network = (id: PeerId): PeerNetwork => networks.get(id) as PeerNetwork;

  const openssl = (...args: string[]): void => {
    execFileSync('openssl', args, { cwd: directory, stdio: 'ignore', timeout: 20_000 });
  };
  /** A key and a certificate for `name`, signed by `ca` (or self-signed when `ca` is null). */
  const issue = (name: string, ca: string | null, file: string): void => {
    const curve = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${file}.key`];
    if (ca === null) {
      openssl('req', '-x509', ...curve, '-out', `${file}.pem`, '-days', '2', '-subj', `/CN=${name}`);
    } else {
      openssl('req', ...curve, '-out', `${file}.csr`, '-subj', `/CN=${name}`);
      openssl('x509', '-req', '-in', `${file}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`, '-CAcreateserial', '-out', `${file}.pem`, '-days', '2');
    }
  };
  const credentials = (file: string, ca: string): PeerTls => ({
    ca: readFileSync(path.join(directory, `${ca}.pem`)),
    cert: readFileSync(path.join(directory, `${file}.pem`)),
    key: readFileSync(path.join(directory, `${file}.key`)),
  });

  beforeAll(async () => {
    directory = mkdtempSync(path.join(os.tmpdir(), 'mckv-peer-tls-'));
    issue('mckv test ca', null, 'ca');
    issue('other ca', null, 'other-ca');
    for (const id of ids) issue(id, 'ca', id);
    issue('n2', 'other-ca', 'n2-other-ca');
    cluster = await Networks.create();
    for (const id of ids) networks.set(id, cluster.make(id, { tls: credentials(id, 'ca') }));
    await Promise.all(ids.map((id) => network(id).start()));
  }, 60_000);

  afterAll(async () => {
    await cluster?.stop();
    if (directory !== '') rmSync(directory, { recursive: true, force: true });
  });

  it('three networks connect and carry messages over TLS', async () => {
    await waitFor(() => allConnected(networks), 5000, 'the three to connect over TLS');
    await delivers(networks, n1, n2);
    await delivers(networks, n3, n1);
    // Plain TCP towards a TLS port gets nowhere.
    const plain = new RawPeer(cluster.port(n1));
    plain.socket.write(encodeFrame({ kind: 'hello', version: HANDSHAKE_VERSION }));
    expect(await plain.closedWithin(3000)).toBe(true);
    expect(plain.frames).toEqual([]);
  });

  it('refuses a certificate from another CA, and one naming another node', async () => {
    const before = network(n1).counters().handshakesRefused;
    const otherCa = cluster.make(n2, { tls: credentials('n2-other-ca', 'ca'), listenPort: await freePort(), peers: [n1], logName: 'other-ca' });
    // n3's genuine certificate, presented by a process claiming to be n2.
    const wrongName = cluster.make(n2, { tls: credentials('n3', 'ca'), listenPort: await freePort(), peers: [n1], logName: 'wrong-name' });
    await Promise.all([otherCa.start(), wrongName.start()]);
    try {
      await waitFor(() => network(n1).counters().handshakesRefused.tls_failed > before.tls_failed, 3000, 'the foreign CA refused');
      await waitFor(
        () => network(n1).counters().handshakesRefused.certificate_mismatch > before.certificate_mismatch,
        3000,
        'the wrong name refused',
      );
      expect(otherCa.isConnected(n1)).toBe(false);
      expect(wrongName.isConnected(n1)).toBe(false);
      expect(cluster.warnings(n1).some((line) => /TLS certificate names \["n3"\], not the peer "n2"/.test(line))).toBe(true);
    } finally {
      await Promise.all([otherCa.stop(), wrongName.stop()]);
    }
    await delivers(networks, n2, n1);
  });

  it('the dialer refuses a listener whose certificate names another node', async () => {
    // A listener holding n3's certificate where n2 should be.
    const listenPort = await freePort();
    const impostor = cluster.make(n3, { tls: credentials('n3', 'ca'), listenPort, peers: [], logName: 'listener-impostor' });
    await impostor.start();
    const dialer = new PeerNetwork({
      self: n1,
      listen: { host: '127.0.0.1', port: await freePort() },
      peers: [{ id: n2, host: '127.0.0.1', port: listenPort }],
      secret,
      clusterId,
      settings,
      tls: credentials('n1', 'ca'),
      heartbeatIntervalMs,
      failureTimeoutMs,
      log: recordingLog([]),
    });
    await dialer.start();
    try {
      await waitFor(() => dialer.counters().handshakesRefused.certificate_mismatch >= 1, 3000, 'the dialer to refuse');
      expect(dialer.isConnected(n2)).toBe(false);
      expect(impostor.counters().handshakesAccepted).toBe(0);
    } finally {
      await Promise.all([dialer.stop(), impostor.stop()]);
    }
  });
});
