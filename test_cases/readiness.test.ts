/**
 * A controller's readiness (status/readiness.ts) and the status server's `/livez` and `/readyz`:
 * each reason a node would not serve, judged from its own `show` line, and the HTTP answers a load
 * balancer's health check reads (200 `ok`, or 503 naming the reason).
 */

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StatusHttp } from '../src/http/server.ts';
import type { StatusSource } from '../src/http/source.ts';
import { freePort } from '../src/jepsen/cluster.ts';
import { nodeNotReady } from '../src/status/readiness.ts';
import type { NodeSummary } from '../src/status/show.ts';

function follower(overrides: Partial<NodeSummary> = {}): NodeSummary {
  return {
    node: 'n2',
    mode: 'linearizability',
    role: 'follower',
    term: 3,
    leader: 'n1',
    committed: '10',
    applied: '10',
    queueDepth: 0,
    opsServed: 0,
    backend: 'memcache 127.0.0.1:1',
    backendOk: true,
    backendDetail: 'ok',
    peersUp: [{ peer: 'n1', up: true }, { peer: 'n3', up: false }],
    caughtUp: true,
    ...overrides,
  };
}

describe('nodeNotReady', () => {
  it('passes a caught-up follower that sees its leader, and a leader that sees one peer', () => {
    expect(nodeNotReady(follower())).toBeNull();
    expect(nodeNotReady(follower({ node: 'n1', role: 'leader', leader: 'n1', peersUp: [{ peer: 'n2', up: false }, { peer: 'n3', up: true }] }))).toBeNull();
    // A peer too old to say whether it is caught up counts as caught up.
    expect(nodeNotReady(follower({ caughtUp: undefined }))).toBeNull();
  });

  it('names what keeps a node of an ordered mode from serving', () => {
    expect(nodeNotReady(follower({ backendOk: false, backendDetail: 'connect ECONNREFUSED' }))).toBe('its memcached does not answer (connect ECONNREFUSED)');
    expect(nodeNotReady(follower({ caughtUp: false }))).toBe('catching up');
    expect(nodeNotReady(follower({ role: 'recovering', caughtUp: false }))).toBe('recovering its log from its peers');
    expect(nodeNotReady(follower({ role: 'candidate', leader: null }))).toBe('no leader: an election is on');
    expect(nodeNotReady(follower({ leader: null }))).toBe('no leader: an election is on');
    expect(nodeNotReady(follower({ peersUp: [{ peer: 'n1', up: false }, { peer: 'n3', up: true }] }))).toBe('does not see its leader n1');
    expect(nodeNotReady(follower({ node: 'n1', role: 'leader', leader: 'n1', peersUp: [{ peer: 'n2', up: false }, { peer: 'n3', up: false }] })))
      .toBe('leader without a majority: it sees no peer');
  });

  it('asks an eventual or causal node only for its memcached and a whole replica: it serves alone', () => {
    for (const mode of ['eventual', 'causal']) {
      const alone = follower({ mode, role: 'peer', leader: null, peersUp: [{ peer: 'n1', up: false }, { peer: 'n3', up: false }] });
      expect(nodeNotReady(alone)).toBeNull();
      expect(nodeNotReady({ ...alone, caughtUp: false })).toBe('catching up');
      expect(nodeNotReady({ ...alone, backendOk: false, backendDetail: 'timed out' })).toBe('its memcached does not answer (timed out)');
    }
  });
});

describe('/livez and /readyz', () => {
  let summary = follower();
  const source: StatusSource = {
    summary: () => summary,
    peerView: () => [],
    clientStats: () => {
      throw new Error('not read by the health checks');
    },
    keyCount: () => 0,
    keysMax: () => 1,
    indexEntries: () => [],
    fetch: async () => [],
  };
  let http: StatusHttp;
  let base: string;

  beforeAll(async () => {
    const port = await freePort();
    http = new StatusHttp({ node: 'n2', mode: 'linearizability', listen: { host: '127.0.0.1', port }, source, log: { info: () => {}, warn: () => {} } });
    await http.listen();
    base = `http://127.0.0.1:${port}`;
  });

  afterAll(async () => {
    await http?.close();
  });

  it('answers 200 ok while the node would serve, 503 with the reason while it would not', async () => {
    summary = follower();
    const ready = await fetch(`${base}/readyz`);
    expect([ready.status, await ready.text()]).toEqual([200, 'ok\n']);
    expect(ready.headers.get('cache-control')).toBe('no-store');

    summary = follower({ caughtUp: false });
    const catching = await fetch(`${base}/readyz`);
    expect([catching.status, await catching.text()]).toEqual([503, 'not ready: catching up\n']);

    summary = follower({ peersUp: [{ peer: 'n1', up: false }, { peer: 'n3', up: false }] });
    const cut = await fetch(`${base}/readyz`, { method: 'HEAD' });
    expect(cut.status).toBe(503);

    const live = await fetch(`${base}/livez`);
    expect([live.status, await live.text()]).toEqual([200, 'ok\n']);
  });
});
