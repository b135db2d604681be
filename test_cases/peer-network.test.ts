/**
 * Three PeerNetworks on free 127.0.0.1 ports: they find each other, carry messages both ways,
 * report a stopped peer down within the failure timeout and back up when it returns (and its
 * connections closed at once, but not those that were only reset), refuse a taken port clearly,
 * and shrug off garbage connections. Small timings: heartbeat 20 ms, failure 150 ms.
 */

import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { asPeerId, type PeerId } from '../src/consistency/types.ts';
import { FRAME_HEADER_BYTES, FRAME_VERSION, FrameDecoder, encodeFrame } from '../src/peer/frame.ts';
import { HANDSHAKE_VERSION, challengeMessage, checkHello } from '../src/peer/handshake.ts';
import { PeerNetwork, PeerNetworkError, type PeerLog } from '../src/peer/network.ts';
import { freePort } from '../src/jepsen/cluster.ts';
import { LinkProxy } from '../src/jepsen/proxy.ts';
import { itemAt } from '../src/runtime/item-at.ts';

const heartbeatIntervalMs = 20;
const failureTimeoutMs = 150;
/** Scheduling slack on a loaded two-core machine. */
const slackMs = 150;
const ids = [asPeerId('n1'), asPeerId('n2'), asPeerId('n3')] as const;
const [n1, n2, n3] = ids;
const secret = randomBytes(32);

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

async function freePorts(count: number): Promise<number[]> {
  const ports: number[] = [];
  for (let index = 0; index < count; index++) ports.push(await freePort());
  return ports;
}

/** Polls `condition` every 5 ms; fails after `timeoutMs`. */
async function waitFor(condition: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadlineMs = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadlineMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** A network of `self` on `port` whose one peer, `peer`, is dialled at `peerPort`. */
function onePeerNetwork(self: PeerId, port: number, peer: PeerId, peerPort: number): PeerNetwork {
  return new PeerNetwork({
    self, listen: { host: '127.0.0.1', port }, peers: [{ id: peer, host: '127.0.0.1', port: peerPort }],
    secret, clusterId: 'test', heartbeatIntervalMs, failureTimeoutMs, log: recordingLog([]),
  });
}

function nextEvent(network: PeerNetwork, event: 'peer-up' | 'peer-down' | 'peer-cut', peer: PeerId): Promise<number> {
  return new Promise((resolve) => {
    const listener = (which: PeerId): void => {
      if (which !== peer) return;
      network.off(event, listener);
      resolve(Date.now());
    };
    network.on(event, listener);
  });
}

function nextMessage(network: PeerNetwork): Promise<{ from: PeerId; message: unknown }> {
  return new Promise((resolve) => network.once('message', (from, message) => resolve({ from, message })));
}

/** Opens a raw TCP connection, writes `bytes`, resolves when the other side closes it. */
function rawConnectionClosed(port: number, bytes: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port }, () => socket.write(bytes));
    socket.resume(); // the listener's challenge is read and ignored
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('garbage connection was not dropped'));
    }, 2000);
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

describe('PeerNetwork with three nodes', () => {
  let ports: number[] = [];
  const networks = new Map<PeerId, PeerNetwork>();
  const logs = new Map<PeerId, LogLine[]>();
  /** Heartbeat info a test has set in place of a node's usual one. */
  const info = new Map<PeerId, unknown>();

  function makeNetwork(self: PeerId, options: { info?: () => unknown } = {}): PeerNetwork {
    const lines: LogLine[] = [];
    logs.set(self, lines);
    return new PeerNetwork({
      self,
      listen: { host: '127.0.0.1', port: itemAt(ports, ids.indexOf(self)) },
      peers: ids.filter((id) => id !== self).map((id) => ({ id, host: '127.0.0.1', port: itemAt(ports, ids.indexOf(id)) })),
      secret,
      clusterId: 'test',
      heartbeatIntervalMs,
      failureTimeoutMs,
      heartbeatInfo: options.info,
      priorityKinds: new Set(['urgent']),
      log: recordingLog(lines),
    });
  }

  const network = (id: PeerId): PeerNetwork => {
    const found = networks.get(id);
    if (found === undefined) throw new Error(`no network ${id}`);
    return found;
  };
  const allSeeEachOther = (): boolean =>
    ids.every((id) => networks.get(id)?.up().length === 2 && ids.every((other) => other === id || network(id).isConnected(other)));

  beforeAll(async () => {
    ports = await freePorts(3);
    for (const id of ids) networks.set(id, makeNetwork(id, { info: () => info.get(id) ?? { role: `role-of-${id}` } }));
    await Promise.all(ids.map((id) => network(id).start()));
  });

  afterAll(async () => {
    await Promise.all([...networks.values()].map((each) => each.stop()));
  });

  it('all three see each other up, with heartbeat info', async () => {
    await waitFor(allSeeEachOther, 3000, 'every node to see both others up');
    await waitFor(() => network(n1).peerView().every((entry) => entry.info !== null), 1000, 'heartbeat info');
    const view = network(n1).peerView();
    expect(view.map((entry) => [entry.peer, entry.up])).toEqual([
      [n2, true],
      [n3, true],
    ]);
    expect(itemAt(view, 0).info).toEqual({ role: 'role-of-n2' });
    expect(itemAt(view, 1).lastHeardAgoMs).toBeLessThan(failureTimeoutMs);
    expect(logs.get(n1)?.filter((line) => line.message === 'peer up').map((line) => line.meta?.peer).sort()).toEqual([n2, n3]);
  });

  it('carries messages both ways, with Buffers and bigints, and never emits heartbeats', async () => {
    const atN2 = nextMessage(network(n2));
    expect(network(n1).send(n2, { kind: 'ping', value: Buffer.from([1, 2, 3]), cas: 99n })).toBe(true);
    expect(await atN2).toEqual({ from: n1, message: { kind: 'ping', value: Buffer.from([1, 2, 3]), cas: 99n } });

    const atN1 = nextMessage(network(n1));
    expect(network(n2).send(n1, { kind: 'pong' })).toBe(true);
    expect(await atN1).toEqual({ from: n2, message: { kind: 'pong' } });

    const seen: unknown[] = [];
    const listener = (_from: PeerId, message: unknown): void => void seen.push(message);
    network(n3).on('message', listener);
    await new Promise((resolve) => setTimeout(resolve, heartbeatIntervalMs * 4));
    network(n3).off('message', listener);
    expect(seen).toEqual([]); // heartbeats arrived meanwhile (the peers stayed up) but none was emitted
    expect(network(n3).up()).toEqual([n1, n2]);
  });

  it('skips a heartbeat that would say nothing new to a peer other frames reached; a change goes out', async () => {
    const before = network(n1).counters();
    const stopAtMs = Date.now() + 4 * failureTimeoutMs;
    let sent = 0;
    while (Date.now() < stopAtMs) {
      if (network(n1).send(n2, { kind: 'tick', sent })) sent += 1;
      await new Promise((resolve) => setTimeout(resolve, heartbeatIntervalMs / 4));
      expect(network(n2).up()).toContain(n1); // the messages alone keep n1 up at n2
    }
    const after = network(n1).counters();
    expect(sent).toBeGreaterThan(20);
    // Every interval n1 skipped n2's heartbeat (the same info, messages since) but still beat n3.
    const intervals = (4 * failureTimeoutMs) / heartbeatIntervalMs;
    expect(after.heartbeatsSkipped - before.heartbeatsSkipped).toBeGreaterThanOrEqual(intervals / 2);
    expect(after.heartbeatsSent - before.heartbeatsSent).toBeGreaterThanOrEqual(intervals / 2);
    expect(network(n3).up()).toContain(n1);

    info.set(n1, { role: 'changed' });
    const changeUntilMs = Date.now() + 1000;
    while (Date.now() < changeUntilMs && (network(n2).peerView().find((view) => view.peer === n1)?.info as { role?: string } | null)?.role !== 'changed') {
      network(n1).send(n2, { kind: 'tick', sent });
      await new Promise((resolve) => setTimeout(resolve, heartbeatIntervalMs / 4));
    }
    expect(network(n2).peerView().find((view) => view.peer === n1)?.info).toEqual({ role: 'changed' });
    info.delete(n1);
  });

  it('delivers a burst sent in one tick, in order', async () => {
    const received: unknown[] = [];
    const listener = (from: PeerId, message: unknown): void => {
      if (from === n3) received.push(message);
    };
    network(n1).on('message', listener);
    for (let index = 0; index < 200; index++) expect(network(n3).send(n1, { index })).toBe(true);
    await waitFor(() => received.length === 200, 3000, 'the burst');
    network(n1).off('message', listener);
    expect(received).toEqual(Array.from({ length: 200 }, (_, index) => ({ index })));
  });

  it('sends priority kinds ahead of bulk frames still waiting to enter the socket, each lane in order', async () => {
    const received: Array<{ kind: string; index: number }> = [];
    const listener = (from: PeerId, message: unknown): void => {
      if (from === n3) received.push(message as { kind: string; index: number });
    };
    network(n2).on('message', listener);
    // 8 MiB of bulk in one tick: far more than a socket buffer takes before the rest waits in the bulk lane.
    const filler = Buffer.alloc(128 * 1024, 7);
    for (let index = 0; index < 64; index++) expect(network(n3).send(n2, { kind: 'bulk', index, filler })).toBe(true);
    for (let index = 0; index < 3; index++) expect(network(n3).send(n2, { kind: 'urgent', index })).toBe(true);
    await waitFor(() => received.length === 67, 10_000, 'the bulk frames and the urgent ones');
    network(n2).off('message', listener);
    const order = received.map(({ kind, index }) => `${kind}${index}`);
    const bulkOrder = order.filter((name) => name.startsWith('bulk'));
    expect(bulkOrder).toEqual(Array.from({ length: 64 }, (_, index) => `bulk${index}`));
    expect(order.filter((name) => name.startsWith('urgent'))).toEqual(['urgent0', 'urgent1', 'urgent2']);
    // The urgent frames waited behind at most the socket's share of the bulk, not all 8 MiB of it.
    expect(order.indexOf('urgent2')).toBeLessThan(16);
  });

  it('drops a garbage connection with a warning and keeps serving the peers', async () => {
    await rawConnectionClosed(itemAt(ports, 0), Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    const unknownHello = encodeFrame({ kind: 'hello', from: 'n9', to: 'n1', version: FRAME_VERSION });
    await rawConnectionClosed(itemAt(ports, 0), unknownHello);
    const oversized = encodeFrame('x').subarray(0, FRAME_HEADER_BYTES);
    oversized.writeUInt32BE(0xffffffff, 5);
    await rawConnectionClosed(itemAt(ports, 0), oversized);

    const warnings = (logs.get(n1) ?? []).filter((line) => line.level === 'warn').map((line) => line.message);
    expect(warnings.some((line) => /handshake refused: bad frame before authentication \(bad magic/.test(line))).toBe(true);
    expect(warnings.some((line) => new RegExp(`handshake refused: handshake version 2, expected ${HANDSHAKE_VERSION}`).test(line))).toBe(true);
    expect(warnings.some((line) => /handshake refused: .*exceeds frameBytesMax 1024/.test(line))).toBe(true);

    // None of that cut anything: the real peers' connections still carry traffic.
    for (const from of [n2, n3]) {
      const atN1 = nextMessage(network(n1));
      expect(network(from).send(n1, { kind: 'still-here' })).toBe(true);
      expect(await atN1).toEqual({ from, message: { kind: 'still-here' } });
    }
    expect(network(n1).up()).toEqual([n2, n3]);
  });

  it('refuses a taken port with a clear error', async () => {
    const intruder = new PeerNetwork({
      self: n1,
      listen: { host: '127.0.0.1', port: itemAt(ports, 0) },
      peers: [],
      secret,
      clusterId: 'test',
      heartbeatIntervalMs,
      failureTimeoutMs,
      log: recordingLog([]),
    });
    const failure = await intruder.start().then(
      () => null,
      (error: unknown) => error,
    );
    expect(failure).toBeInstanceOf(PeerNetworkError);
    expect((failure as PeerNetworkError).code).toBe('address_in_use');
    expect((failure as PeerNetworkError).message).toBe(`peer port 127.0.0.1:${ports[0]} of n1 is already in use`);
    await intruder.stop();
  });

  it('reports a stopped peer\'s connections closed at once, the peer down within the failure timeout plus a heartbeat, and both back on restart', async () => {
    await waitFor(allSeeEachOther, 3000, 'every node to see both others up');
    const downAtN1 = nextEvent(network(n1), 'peer-down', n3);
    const downAtN2 = nextEvent(network(n2), 'peer-down', n3);
    const cutAtN1 = nextEvent(network(n1), 'peer-cut', n3);
    const stoppedAtMs = Date.now();
    await network(n3).stop();
    // Its connections closed at once: seen long before the failure detector calls it down.
    const cut = (at: PeerId): boolean => network(at).peerView().some((view) => view.peer === n3 && view.cut);
    await waitFor(() => cut(n1) && cut(n2), failureTimeoutMs / 2, 'n1 and n2 to see n3\'s connections closed');
    expect((await cutAtN1) - stoppedAtMs).toBeLessThan(failureTimeoutMs / 2); // told at once, as an event too
    const [n1SawMs, n2SawMs] = await Promise.all([downAtN1, downAtN2]);
    for (const sawMs of [n1SawMs, n2SawMs]) {
      expect(sawMs - stoppedAtMs).toBeLessThanOrEqual(failureTimeoutMs + heartbeatIntervalMs + slackMs);
      expect(sawMs - stoppedAtMs).toBeGreaterThanOrEqual(failureTimeoutMs / 2); // by timeout, not on close
    }
    expect(network(n1).up()).toEqual([n2]);
    await waitFor(() => !network(n1).isConnected(n3), 2000, 'n1 to lose its connection to n3');
    expect(network(n1).send(n3, { kind: 'lost' })).toBe(false);
    expect(logs.get(n2)?.some((line) => line.message === 'peer down' && line.meta?.peer === n3)).toBe(true);

    const upAtN1 = nextEvent(network(n1), 'peer-up', n3);
    const upAtN2 = nextEvent(network(n2), 'peer-up', n3);
    networks.set(n3, makeNetwork(n3));
    await network(n3).start();
    await Promise.all([upAtN1, upAtN2]);
    await waitFor(allSeeEachOther, 3000, 'the restarted node to see both others');
    expect(network(n1).peerView().map((view) => view.cut)).toEqual([false, false]);
    const atN3 = nextMessage(network(n3));
    expect(network(n1).send(n3, { kind: 'welcome back' })).toBe(true);
    expect(await atN3).toEqual({ from: n1, message: { kind: 'welcome back' } });
  });
});

describe('PeerNetwork sending', () => {
  it('returns false for a peer it is not connected to', async () => {
    const selfPort = await freePort();
    const deadPort = await freePort();
    const lonely = new PeerNetwork({
      self: asPeerId('a'),
      listen: { host: '127.0.0.1', port: selfPort },
      peers: [{ id: asPeerId('b'), host: '127.0.0.1', port: deadPort }],
      secret,
      clusterId: 'test',
      heartbeatIntervalMs,
      failureTimeoutMs,
      log: recordingLog([]),
    });
    expect(lonely.send(asPeerId('b'), 'before start')).toBe(false);
    await lonely.start();
    try {
      expect(lonely.send(asPeerId('b'), 'nobody listens')).toBe(false);
      await waitFor(() => lonely.peerView()[0]?.cut === true, 2000, 'the dial to b to be refused');
      expect(lonely.peerView()).toEqual([{ peer: 'b', up: false, lastHeardAgoMs: null, info: null, cut: true }]);
      expect(() => lonely.send(asPeerId('zz'), 'x')).toThrow(/unknown peer zz/);
    } finally {
      await lonely.stop();
    }
  });

  it('drops instead of queueing past sendQueueBytesMax when the peer does not read', async () => {
    const stalled = new Set<net.Socket>();
    const sink = net.createServer((socket) => {
      stalled.add(socket);
      // Completes the listener's side of the handshake as node b, then never reads again: the
      // sender's buffers fill up.
      const nonce = randomBytes(32);
      const decoder = new FrameDecoder({ frameBytesMax: 1024 });
      socket.write(encodeFrame(challengeMessage({ self: 'b', clusterId: 'test', settings: '', nonce })));
      socket.on('data', (chunk: Buffer) => {
        const [hello] = decoder.push(chunk).messages;
        if (hello === undefined) return;
        const outcome = checkHello(hello, { self: 'b', clusterId: 'test', settings: '', secret, peers: new Set(['a']), nonce, certificateNames: null });
        if (outcome.kind === 'accepted') socket.write(encodeFrame(outcome.welcome));
        socket.pause();
      });
    });
    await new Promise<void>((resolve) => sink.listen(0, '127.0.0.1', resolve));
    const selfPort = await freePort();
    const sender = new PeerNetwork({
      self: asPeerId('a'),
      listen: { host: '127.0.0.1', port: selfPort },
      peers: [{ id: asPeerId('b'), host: '127.0.0.1', port: (sink.address() as net.AddressInfo).port }],
      secret,
      clusterId: 'test',
      heartbeatIntervalMs,
      failureTimeoutMs,
      sendQueueBytesMax: 256 * 1024,
      log: recordingLog([]),
    });
    await sender.start();
    try {
      await waitFor(() => sender.isConnected(asPeerId('b')), 2000, 'the connection to the sink');
      const chunk = Buffer.alloc(128 * 1024, 1);
      let accepted = 0;
      for (let round = 0; round < 400 && sender.send(asPeerId('b'), { chunk }); round++) {
        accepted += 1;
        await new Promise((resolve) => setImmediate(resolve));
      }
      expect(accepted).toBeGreaterThan(0);
      expect(accepted).toBeLessThan(400);
      expect(sender.send(asPeerId('b'), { chunk })).toBe(false);
    } finally {
      await sender.stop();
      for (const socket of stalled) socket.destroy();
      await new Promise((resolve) => sink.close(resolve));
    }
  });
});

describe('PeerNetwork reconnecting', () => {
  it('backs off when a proxy accepts and closes at once, instead of redialling in a tight loop', async () => {
    let accepted = 0;
    const slammer = net.createServer((socket) => {
      accepted += 1;
      socket.destroy();
    });
    await new Promise<void>((resolve) => slammer.listen(0, '127.0.0.1', resolve));
    const selfPort = await freePort();
    const dialer = new PeerNetwork({
      self: asPeerId('a'),
      listen: { host: '127.0.0.1', port: selfPort },
      peers: [{ id: asPeerId('b'), host: '127.0.0.1', port: (slammer.address() as net.AddressInfo).port }],
      secret,
      clusterId: 'test',
      heartbeatIntervalMs,
      failureTimeoutMs,
      log: recordingLog([]),
    });
    await dialer.start();
    await new Promise((resolve) => setTimeout(resolve, 300));
    await dialer.stop();
    await new Promise((resolve) => slammer.close(resolve));
    // Delays of 50, 100, 200 ms (jittered into [½, 1]) allow at most 4 dials in 300 ms; a back-off
    // reset on every connect would allow 6 or more.
    expect(accepted).toBeGreaterThanOrEqual(2);
    expect(accepted).toBeLessThanOrEqual(5);
  });

  it('dials a returning peer as soon as it reaches us, not when its back-off runs out', async () => {
    const [portA, portB] = await freePorts(2) as [number, number];
    const a = onePeerNetwork(asPeerId('a'), portA, asPeerId('b'), portB);
    await a.start();
    try {
      // Twice: b away long enough for a's redials to back off to 0.5-1 s, then b back. b dials a at
      // once; a must dial b on hearing it, well before its next redial would. Without that, both
      // trials come in under 150 ms about one time in fifty.
      for (let trial = 0; trial < 2; trial += 1) {
        await new Promise((resolve) => setTimeout(resolve, 1800));
        expect(a.isConnected(asPeerId('b'))).toBe(false);
        const b = onePeerNetwork(asPeerId('b'), portB, asPeerId('a'), portA);
        await b.start();
        try {
          await waitFor(() => b.isConnected(asPeerId('a')), 2000, 'b to reach a');
          const reachedMs = Date.now();
          await waitFor(() => a.isConnected(asPeerId('b')), 2000, 'a to dial b back');
          expect(Date.now() - reachedMs, `trial ${trial}: ms until a dialled b back`).toBeLessThan(150);
        } finally {
          await b.stop();
        }
      }
    } finally {
      await a.stop();
    }
  });
});

describe('PeerNetwork links reset, not cut', () => {
  /** Two networks whose links both go through proxies (a dials b through `ab`, b dials a through `ba`). */
  async function proxiedPair(): Promise<{ a: PeerNetwork; b: PeerNetwork; ab: LinkProxy; ba: LinkProxy; close: () => Promise<void> }> {
    const [portA, portB] = await freePorts(2) as [number, number];
    const ab = new LinkProxy('a>b', { host: '127.0.0.1', port: portB });
    const ba = new LinkProxy('b>a', { host: '127.0.0.1', port: portA });
    await ab.listen();
    await ba.listen();
    const a = onePeerNetwork(asPeerId('a'), portA, asPeerId('b'), ab.port);
    const b = onePeerNetwork(asPeerId('b'), portB, asPeerId('a'), ba.port);
    await a.start();
    await b.start();
    await waitFor(() => a.isConnected(asPeerId('b')) && b.isConnected(asPeerId('a')), 3000, 'a and b to connect');
    const close = async (): Promise<void> => {
      await a.stop();
      await b.stop();
      await ab.close();
      await ba.close();
    };
    return { a, b, ab, ba, close };
  }

  it('does not call a peer cut when its connections were only reset: they are redialled at once', async () => {
    const { a, b, ab, ba, close } = await proxiedPair();
    try {
      const cuts: PeerId[] = [];
      a.on('peer-cut', (peer) => cuts.push(peer));
      for (let reset = 0; reset < 5; reset += 1) {
        ab.reset();
        ba.reset();
        let sawCut = false;
        const untilMs = Date.now() + 60;
        while (Date.now() < untilMs) {
          sawCut ||= a.peerView()[0]?.cut === true;
          await new Promise((resolve) => setTimeout(resolve, 2));
        }
        expect(sawCut, `reset ${reset}: a's view of b said cut`).toBe(false);
        await waitFor(() => a.isConnected(asPeerId('b')), 1000, 'a to redial b');
      }
      expect(cuts).toEqual([]);
      const atB = nextMessage(b);
      expect(a.send(asPeerId('b'), { kind: 'after resets' })).toBe(true);
      expect(await atB).toEqual({ from: asPeerId('a'), message: { kind: 'after resets' } });
    } finally {
      await close();
    }
  });

  it('calls a peer cut at once when its connections close and the redial is refused', async () => {
    const { a, ab, ba, close } = await proxiedPair();
    try {
      const cut = nextEvent(a, 'peer-cut', asPeerId('b'));
      const cutAtMs = Date.now();
      ab.cutLink();
      ba.cutLink();
      expect((await cut) - cutAtMs).toBeLessThan(failureTimeoutMs / 2);
      expect(a.peerView()[0]?.cut).toBe(true);
    } finally {
      await close();
    }
  });
});
