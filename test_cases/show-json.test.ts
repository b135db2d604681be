/**
 * `show json` and `mckv status` without a cluster: the text protocol's `show json`, the client's
 * `show --json`, the status JSON's round trip and validation, the status table, and when
 * `mckv status --wait` takes the cluster to be ready.
 */

import { describe, expect, it } from 'vitest';
import { parseLine } from '../src/client/repl.ts';
import { notReady, renderStatusTable, type EndpointStatus } from '../src/client/status.ts';
import { TextRequestDecoder } from '../src/protocol/text.ts';
import { DEFAULT_LIMITS } from '../src/protocol/types.ts';
import { renderShow, type NodeSummary } from '../src/status/show.ts';
import { clusterStatus, parseClusterStatus, renderShowJson } from '../src/status/show-json.ts';
import { decodeEveryWay } from './support/chunks.ts';
import { itemAt } from '../src/runtime/item-at.ts';

function summary(node: string, role: string, backendOk = true): NodeSummary {
  // A peer's summary may carry fields `show json` does not echo (backendStored, backendPoll).
  const sent = {
    node, mode: 'linearizability', role, term: 3, leader: 'n1', committed: '12', applied: '11', queueDepth: 0, opsServed: 4,
    backend: 'memcache 127.0.0.1:11201', backendOk, backendDetail: backendOk ? 'memcached 1.6.18' : 'connection refused — ü',
    peersUp: [{ peer: 'n2', up: true }], backendPoll: 2, backendStored: [[0, '11']],
  };
  return sent;
}

describe('show json', () => {
  it('is decoded from the text protocol; plain show stays as it was', () => {
    const decode = (input: string): unknown[] => decodeEveryWay(() => new TextRequestDecoder(DEFAULT_LIMITS), input);
    expect(decode('show json\r\nshow\r\n')).toEqual([
      { kind: 'command', command: { kind: 'show', json: true } },
      { kind: 'command', command: { kind: 'show' } },
    ]);
  });

  it('is what the client sends for show --json, and the client refuses other arguments', () => {
    expect(parseLine('show --json')).toEqual({ raw: 'show json\r\n', verb: 'show' });
    expect(parseLine('show json')).toEqual({ raw: 'show json\r\n', verb: 'show' });
    expect(parseLine('show')).toEqual({ raw: 'show\r\n', verb: 'show' });
    expect(parseLine('show --yaml')).toEqual({ usage: 'usage: show [--json]' });
  });

  it('is one ASCII line that reads back as the same status; a peer never heard from has no summary', () => {
    const status = clusterStatus(summary('n1', 'leader', false), [
      { peer: 'n2', up: true, lastHeardAgoMs: 12.4, info: summary('n2', 'follower') },
      { peer: 'n3', up: false, lastHeardAgoMs: null, info: undefined },
      { peer: 'n4', up: false, lastHeardAgoMs: 900, info: { node: 'n4', peersUp: [] } },
    ]);
    const lines = renderShowJson(status);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^[\x20-\x7e]+$/);
    expect(parseClusterStatus(itemAt(lines, 0))).toEqual(status);
    expect(status.nodes.map((node) => [node.node, node.state, node.lastHeardAgoMs, node.summary?.role ?? null])).toEqual([
      ['n1', 'self', 0, 'leader'], ['n2', 'up', 12, 'follower'], ['n3', 'down', null, null], ['n4', 'down', 900, null],
    ]);
    expect(itemAt(status.nodes, 0).summary).not.toHaveProperty('backendStored');
  });

  it('refuses JSON without the shape of a status', () => {
    for (const text of ['', 'null', '[]', '{"from":"n1","mode":"x","nodes":[{"node":"n1","state":"boss","lastHeardAgoMs":0,"summary":null}]}', '{"from":"n1","mode":"x","nodes":[{"node":"n1","state":"up","lastHeardAgoMs":0,"summary":{"node":"n1"}}]}']) {
      expect(parseClusterStatus(text)).toBeNull();
    }
  });
});

describe('mckv status table', () => {
  it('has one bordered row per controller and says why one is down', () => {
    const statuses: EndpointStatus[] = [
      { node: 'n1', address: '127.0.0.1:8000', state: 'up', summary: summary('n1', 'leader'), error: null },
      { node: 'n2', address: '127.0.0.1:8001', state: 'down', summary: null, error: 'cannot connect to 127.0.0.1:8001: connect ECONNREFUSED' },
    ];
    expect(renderStatusTable(statuses)).toEqual([
      '+------+----------------+--------+------+--------+-----------+---------+-------+-----------------------------+',
      '| NODE | ADDRESS        | ROLE   | TERM | LEADER | COMMITTED | APPLIED | STATE | BACKEND                     |',
      '+------+----------------+--------+------+--------+-----------+---------+-------+-----------------------------+',
      '| n1   | 127.0.0.1:8000 | leader | 3    | n1     | 12        | 11      | up    | memcache 127.0.0.1:11201 ok |',
      '| n2   | 127.0.0.1:8001 | -      | -    | -      | -         | -       | down  | -                           |',
      '+------+----------------+--------+------+--------+-----------+---------+-------+-----------------------------+',
      'n2: cannot connect to 127.0.0.1:8001: connect ECONNREFUSED',
    ]);
  });

  it('says catching up for a controller whose replica is not whole yet', () => {
    const statuses: EndpointStatus[] = [{ node: 'n3', address: '127.0.0.1:8002', state: 'up', summary: { ...summary('n3', 'follower'), caughtUp: false }, error: null }];
    expect(itemAt(renderStatusTable(statuses), 3)).toBe('| n3   | 127.0.0.1:8002 | follower | 3    | n1     | 12        | 11      | catching up | memcache 127.0.0.1:11201 ok |');
  });
});

describe('show', () => {
  it("marks a node catching up in its state, its own row and a peer's", () => {
    const lines = renderShow({ ...summary('n2', 'follower'), caughtUp: false }, [
      { peer: 'n1', up: true, lastHeardAgoMs: 5, info: { ...summary('n1', 'leader'), caughtUp: true } },
      { peer: 'n3', up: true, lastHeardAgoMs: 7, info: { ...summary('n3', 'follower'), caughtUp: false } },
    ]);
    expect(lines.slice(2).map((line) => line.split(/ {2,}/).slice(0, 2))).toEqual([['n2', 'self, catching up'], ['n1', 'up'], ['n3', 'up, catching up']]);
  });
});

describe('mckv status --wait: ready', () => {
  const up = (node: string, role: string, more: Partial<NodeSummary> = {}): EndpointStatus => ({
    node, address: `127.0.0.1:${node}`, state: 'up', summary: { ...summary(node, role), caughtUp: true, ...more }, error: null,
  });

  it('when every controller answers, is caught up and follows one leader', () => {
    expect(notReady([up('n1', 'leader'), up('n2', 'follower'), up('n3', 'follower')])).toBeNull();
    // Eventual and causal nodes follow no leader; a controller too old to say is taken as caught up.
    expect(notReady([up('n1', 'peer', { leader: null }), up('n2', 'peer', { leader: null, caughtUp: undefined })])).toBeNull();
  });

  it('not while one is down, catching up or recovering, does not see a peer, or the leaders differ or are unknown', () => {
    const down: EndpointStatus = { node: 'n2', address: '127.0.0.1:8001', state: 'down', summary: null, error: 'refused' };
    expect(notReady([up('n1', 'leader'), down, up('n3', 'follower')])).toBe('n2 does not answer');
    expect(notReady([up('n1', 'leader'), up('n2', 'follower', { caughtUp: false })])).toBe('n2 is catching up');
    expect(notReady([up('n1', 'leader'), up('n2', 'recovering', { caughtUp: false, leader: null })])).toBe(
      'n2 is catching up; the controllers do not follow one leader',
    );
    expect(notReady([up('n1', 'candidate', { leader: 'n3' }), up('n2', 'follower')])).toBe('the controllers do not follow one leader');
    expect(notReady([up('n1', 'peer', { leader: null, caughtUp: false })])).toBe('n1 is catching up');
    expect(notReady([up('n1', 'leader', { peersUp: [{ peer: 'n2', up: false }, { peer: 'n3', up: false }] })])).toBe('n1 does not see n2, n3');
  });

  it('not while one has applied less than its leader had committed a moment before', () => {
    const at = (committed: number, applied: number): Partial<NodeSummary> => ({ committed: String(committed), applied: String(applied) });
    const earlier = [up('n1', 'leader', at(500, 500)), up('n2', 'follower', at(300, 300))];
    // n2 said it was caught up: as far as the leader had committed when it rejoined, long before.
    const behind = [up('n1', 'leader', at(600, 600)), up('n2', 'follower', at(450, 420))];
    expect(notReady(behind, earlier)).toBe('n2 has applied 420 of the 500 committed a moment before');
    expect(notReady(behind)).toBeNull();
    expect(notReady([up('n1', 'leader', at(700, 690)), up('n2', 'follower', at(690, 650))], earlier)).toBeNull();
    // Eventual and causal positions are no log indexes: not compared.
    expect(notReady([up('n1', 'peer', { leader: null, applied: '3' })], [up('n1', 'peer', { leader: null, committed: '9' })])).toBeNull();
  });

  it('reads caughtUp back from show json, and refuses one that is not a boolean', () => {
    const status = clusterStatus({ ...summary('n1', 'leader'), caughtUp: false }, []);
    const text = itemAt(renderShowJson(status), 0);
    expect(parseClusterStatus(text)?.nodes[0]?.summary?.caughtUp).toBe(false);
    expect(parseClusterStatus(text.replace('"caughtUp":false', '"caughtUp":"no"'))).toBeNull();
  });
});

