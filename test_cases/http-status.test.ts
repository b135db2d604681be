/**
 * The HTTP status server in one process, over a status source made of plain values: /metrics in
 * Prometheus text format (families present, request counters moving), /entries paged and escaped
 * against hostile keys, bad requests answered without harm, and the `http` option of config.ini.
 */

import { refused } from '../src/protocol/refusals.ts';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config.ts';
import type { KeyedEntry } from '../src/consistency/types.ts';
import { displayKey, keysAfter } from '../src/http/entries.ts';
import { escapeHtml } from '../src/http/pages.ts';
import { ControllerMetrics } from '../src/http/metrics.ts';
import { StatusHttp } from '../src/http/server.ts';
import type { StatusSource } from '../src/http/source.ts';
import { freePort } from '../src/jepsen/cluster.ts';
import type { ProtocolServerStats } from '../src/protocol/server.ts';
import type { Command, Reply } from '../src/protocol/types.ts';
import type { NodeSummary } from '../src/status/show.ts';
import type { IndexRecord } from '../src/store/replica.ts';
import { sample } from './support/prometheus.ts';
import { itemAt } from '../src/runtime/item-at.ts';

const hostileKey = '<script>alert("x")</script>&\'"\u00ff\u0001';

function summary(node: string, role: string): NodeSummary {
  return {
    node,
    mode: 'linearizability',
    role,
    term: 7,
    leader: 'n1',
    committed: '42',
    applied: '40',
    queueDepth: 3,
    opsServed: 9,
    backend: 'memcache 127.0.0.1:1',
    backendOk: true,
    backendDetail: 'ok',
    peersUp: [],
    backendMemory: { usedBytes: 1000, limitBytes: 4000 },
  };
}

const clientStats: ProtocolServerStats = {
  connectionsCurrent: 2,
  connectionsTotal: 5,
  commandsTotal: 10,
  connectionsRefused: 1,
  connectionsClosedIdle: 0,
  connectionsPausedByOutput: 0,
  connectionsPausedByInFlight: 1,
  pausesByOutputTotal: 4,
  pausesByInFlightTotal: 6,
  requestsHeldBack: 17,
  requestsInFlight: 20,
  outputBytesUnsent: 0,
  overloaded: false,
  overloadsTotal: 0,
};

function record(overrides: Partial<IndexRecord> = {}): IndexRecord {
  return { cas: 1n, expiresAtMs: 0, tombstone: false, settled: true, counted: false, listed: false, ...overrides };
}

describe('the HTTP status server', () => {
  const index = new Map<string, IndexRecord>();
  for (let number = 0; number < 250; number += 1) index.set(`key-${String(number).padStart(3, '0')}`, record());
  index.set('gone', record({ tombstone: true }));
  index.set(hostileKey, record({ expiresAtMs: Date.now() + 3_600_000 }));
  const source: StatusSource = {
    summary: () => summary('n1', 'leader'),
    peerView: () => [
      { peer: 'n2', up: true, lastHeardAgoMs: 20, info: summary('n2', 'follower') },
      { peer: 'n3', up: false, lastHeardAgoMs: 5000, info: undefined },
    ],
    clientStats: () => clientStats,
    keyCount: () => index.size,
    keysMax: () => 1_000_000,
    indexEntries: () => index.entries(),
    fetch: async (keys) =>
      keys.map((key): KeyedEntry => {
        const expiresAtMs = index.get(key)?.expiresAtMs ?? 0;
        return [key, { value: Buffer.alloc(key.length * 2), flags: 5, expiresAtMs, cas: 1n }];
      }),
  };
  let http: StatusHttp;
  let base: string;
  let port: number;

  beforeAll(async () => {
    port = await freePort();
    http = new StatusHttp({ node: 'n1', mode: 'linearizability', listen: { host: '127.0.0.1', port }, source, log: { info: () => {}, warn: () => {} } });
    await http.listen();
    base = `http://127.0.0.1:${port}`;
  });

  afterAll(async () => {
    await http?.close();
  });

  it('serves metrics in Prometheus text format, read from the controller when scraped', async () => {
    const response = await fetch(`${base}/metrics`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await response.text();
    expect(sample(text, 'mckv_role', { role: 'leader', node: 'n1' })).toBe(1);
    expect(sample(text, 'mckv_term')).toBe(7);
    expect(sample(text, 'mckv_commit_index')).toBe(42);
    expect(sample(text, 'mckv_applied_index')).toBe(40);
    expect(sample(text, 'mckv_replication_lag_entries')).toBe(2);
    expect(sample(text, 'mckv_peers_up')).toBe(1);
    expect(sample(text, 'mckv_peer_up', { peer: 'n3' })).toBe(0);
    expect(sample(text, 'mckv_peer_last_heard_seconds', { peer: 'n3' })).toBe(5);
    expect(sample(text, 'mckv_backend_up')).toBe(1);
    expect(sample(text, 'mckv_backend_memory_used_bytes')).toBe(1000);
    expect(sample(text, 'mckv_requests_held_back')).toBe(17);
    expect(sample(text, 'mckv_client_pauses_total', { reason: 'in_flight' })).toBe(6);
    expect(text).toContain('# TYPE mckv_request_duration_seconds histogram');
    expect(text).toContain('# TYPE mckv_wal_fsync_duration_seconds histogram');
    expect(text).toContain('process_cpu_seconds_total');
  });

  it('counts and times requests through the handler hook, by command and outcome', async () => {
    const handler = http.timed((command: Command): Reply | Promise<Reply> => {
      if (command.kind === 'get') return { kind: 'values', items: [] };
      return Promise.resolve(refused('no_quorum', 'no leader reachable'));
    });
    const connection = { id: 1, remoteAddress: 'test' };
    for (let count = 0; count < 3; count += 1) handler({ kind: 'get', keys: ['a'], cas: false }, connection);
    await handler({ kind: 'delete', key: 'a', noreply: false }, connection);
    const text = await (await fetch(`${base}/metrics`)).text();
    expect(sample(text, 'mckv_requests_total', { command: 'get', outcome: 'values' })).toBe(3);
    expect(sample(text, 'mckv_request_duration_seconds_count', { command: 'get', outcome: 'values' })).toBe(3);
    expect(sample(text, 'mckv_requests_total', { command: 'delete', outcome: 'refused' })).toBe(1);
    expect(sample(text, 'mckv_refusals_total', { command: 'delete', reason: 'no_quorum' })).toBe(1);
    expect(sample(text, 'mckv_refusals_total', { command: 'get' })).toBeUndefined();
  });

  it('serves the cluster as JSON and the page that shows it', async () => {
    const status = (await (await fetch(`${base}/status.json`)).json()) as { from: string; nodes: Array<{ node: string; state: string }> };
    expect(status.from).toBe('n1');
    expect(status.nodes.map((node) => [node.node, node.state])).toEqual([['n1', 'self'], ['n2', 'up'], ['n3', 'down']]);
    const page = await fetch(`${base}/`);
    expect(page.headers.get('content-security-policy')).toMatch(/script-src 'sha256-/);
    expect(await page.text()).toContain('<tbody id="nodes">');
  });

  it('lists stored entries 100 a page, in key order, live ones only, the cursor leading on', async () => {
    const first = await fetch(`${base}/entries`).then((response) => response.text());
    expect(rowsOf(first)).toHaveLength(100);
    expect(rowsOf(first)[1]).toContain('<code>key-000</code></td><td class="num">14</td><td class="num">5</td><td>never</td>');
    expect(first).not.toContain('>gone<');
    const next = /href="(entries\?cursor=[^"]+)"/.exec(first)?.[1]?.replace(/&amp;/g, '&');
    expect(next).toBe('entries?cursor=key-098&limit=100');
    const second = await fetch(`${base}/${next}`).then((response) => response.text());
    expect(rowsOf(second)[0]).toContain('key-099');
    const last = await fetch(`${base}/entries?cursor=key-199&limit=100`).then((response) => response.text());
    expect(rowsOf(last)).toHaveLength(50);
    expect(last).not.toContain('id="next"');
    const small = await fetch(`${base}/entries?limit=100000`).then((response) => response.text());
    expect(rowsOf(small)).toHaveLength(100);
  });

  it('escapes a hostile key everywhere it appears, and takes it back as a cursor', async () => {
    // '<' sorts before 'k': the hostile key is the first page's first row.
    const page = await fetch(`${base}/entries?limit=1`).then((response) => response.text());
    expect(page).not.toContain('<script>');
    expect(rowsOf(page)[0]).toContain('<code>&#60;script&#62;alert(&#34;x&#34;)&#60;/script&#62;&#38;&#39;&#34;\\xff\\x01</code>');
    const next = /href="entries\?cursor=(.*?)&amp;limit=1"/.exec(page)?.[1];
    expect(next).toBe(encodeURIComponent(hostileKey).replace(/'/g, '&#39;'));
    const after = await fetch(`${base}/entries?cursor=${encodeURIComponent(hostileKey)}&limit=1`).then((response) => response.text());
    expect(rowsOf(after)[0]).toContain('<code>key-000</code>');
  });

  it('answers bad requests without harm and keeps serving', async () => {
    expect((await fetch(`${base}/metrics`, { method: 'POST', body: 'x' })).status).toBe(405);
    expect((await fetch(`${base}/nothing`)).status).toBe(404);
    expect((await fetch(`${base}/entries?cursor=${'x'.repeat(2000)}`)).status).toBe(400);
    expect(await rawRequest(port, `GET /${'a'.repeat(20_000)} HTTP/1.1\r\nHost: x\r\n\r\n`)).toMatch(/^HTTP\/1\.1 (400|431)/);
    expect(await rawRequest(port, 'GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello')).toMatch(/^HTTP\/1\.1 413/);
    expect(await rawRequest(port, 'BLAH\r\n\r\n')).toMatch(/^HTTP\/1\.1 400/);
    expect((await fetch(`${base}/status.json`)).status).toBe(200);
  });
});

describe('metrics in eventual mode', () => {
  it('have no log positions; the replication lag is the writes not yet pushed to every peer', async () => {
    const eventual: NodeSummary = { ...summary('n1', 'peer'), mode: 'eventual', term: 0, leader: null, committed: '1700000000000.3', applied: '12', queueDepth: 4 };
    const metrics = new ControllerMetrics({
      summary: () => eventual,
      peerView: () => [],
      clientStats: () => clientStats,
      keyCount: () => 12,
      keysMax: () => 1_000_000,
      indexEntries: () => [],
      fetch: async () => [],
    }, { node: 'n1', mode: 'eventual' });
    const text = await metrics.render();
    expect(sample(text, 'mckv_role', { role: 'peer', mode: 'eventual' })).toBe(1);
    expect(sample(text, 'mckv_commit_index')).toBeUndefined();
    expect(sample(text, 'mckv_applied_index')).toBeUndefined();
    expect(sample(text, 'mckv_replication_lag_entries')).toBe(4);
    expect(sample(text, 'mckv_keys')).toBe(12);
  });
});

describe('entry listing helpers', () => {
  it('pages by key order whatever the index order, skipping tombstones and expired keys', () => {
    const index = new Map<string, IndexRecord>([
      ['d', record()],
      ['a', record()],
      ['c', record({ tombstone: true })],
      ['b', record({ expiresAtMs: 5 })],
      ['e', record({ expiresAtMs: 50 })],
      ['f', record()],
    ]);
    expect(keysAfter(index, { after: null, limit: 2, nowMs: 10 })).toEqual({ keys: ['a', 'd'], more: true });
    expect(keysAfter(index, { after: 'd', limit: 2, nowMs: 10 })).toEqual({ keys: ['e', 'f'], more: false });
    expect(keysAfter(index, { after: 'f', limit: 2, nowMs: 10 })).toEqual({ keys: [], more: false });
  });

  it('shows keys as UTF-8 when they are, else with escaped bytes', () => {
    expect(displayKey(Buffer.from('größe', 'utf8').toString('latin1'))).toBe('größe');
    expect(displayKey('a\u0000b\u00ff\\')).toBe('a\\x00b\\xff\\\\');
    expect(escapeHtml(`<a href='x'>&"`)).toBe('&#60;a href=&#39;x&#39;&#62;&#38;&#34;');
  });
});

describe('config.ini http', () => {
  const nodes = (n2Http: string): string => `[node.n1]\nclient = 127.0.0.1:8000\npeer = 127.0.0.1:9000\nmemcached = 127.0.0.1:11201\nhttp = 127.0.0.1:9100\n[node.n2]\nclient = 127.0.0.1:8001\npeer = 127.0.0.1:9001\nmemcached = 127.0.0.1:11202\n${n2Http}`;

  it('is optional, parsed as host:port, and distinct from every other address', () => {
    const config = parseConfig(nodes(''), 'test.ini');
    expect(itemAt(config.nodes, 0).http).toEqual({ host: '127.0.0.1', port: 9100 });
    expect(itemAt(config.nodes, 1).http).toBeNull();
    expect(() => parseConfig(nodes('http = nowhere'), 'test.ini')).toThrow(/\[node\.n2\] http: 'nowhere' is not host:port/);
    expect(() => parseConfig(nodes('http = 127.0.0.1:9100'), 'test.ini')).toThrow(/n2 http 127\.0\.0\.1:9100 is already used by n1 http/);
    expect(() => parseConfig(nodes('http = 127.0.0.1:8000'), 'test.ini')).toThrow(/already used by n1 client/);
    expect(() => parseConfig(nodes('http = 127.0.0.1:11201'), 'test.ini')).toThrow(/already used by n1 memcached/);
  });
});

function rowsOf(html: string): string[] {
  const body = /<tbody id="entries">([\s\S]*?)<\/tbody>/.exec(html)?.[1] ?? '';
  return body.split('\n').filter((line) => line.startsWith('<tr>'));
}

function rawRequest(port: number, request: string): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let received = '';
    const done = (): void => {
      socket.destroy();
      resolve(received);
    };
    socket.setTimeout(5000, done);
    socket.on('error', done);
    socket.on('data', (chunk) => {
      received += chunk.toString('latin1');
      if (received.includes('\r\n\r\n')) done();
    });
    socket.once('connect', () => socket.write(request));
  });
}
