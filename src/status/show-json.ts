/**
 * The cluster's status as data: what `show` prints, as JSON, for `show json`, the status page's
 * `/status.json` and `mckv status`.
 *
 * The answering controller's own summary comes first; each peer's is the one its latest heartbeat
 * carried (null before the first), next to whether the answering controller still hears from it.
 * A reader in another process validates what it gets (`parseClusterStatus`): input from outside.
 */

import type { NodeSummary, PeerViewRow } from './show.ts';

/** One node as the answering controller sees it. */
export interface NodeStatus {
  node: string;
  /** `self` for the answering controller; `up` or `down` as it hears from the peer. */
  state: 'self' | 'up' | 'down';
  /** Since the peer's last heartbeat; 0 for self; null if never heard. */
  lastHeardAgoMs: number | null;
  /** The node's own summary (for a peer: from its latest heartbeat), if known. */
  summary: StatusSummary | null;
}

/** The fields of a node's summary that a reader of the status can rely on. */
export type StatusSummary = Pick<
  NodeSummary,
  'node' | 'mode' | 'role' | 'term' | 'leader' | 'committed' | 'applied' | 'queueDepth' | 'opsServed' | 'backend' | 'backendOk' | 'backendDetail' | 'peersUp' | 'caughtUp'
> & { backendMemory?: { usedBytes: number; limitBytes: number } };

export interface ClusterStatus {
  /** The answering controller. */
  from: string;
  mode: string;
  nodes: NodeStatus[];
}

/** The status from a controller's own summary and its view of its peers. */
export function clusterStatus(self: NodeSummary, peers: readonly PeerViewRow[]): ClusterStatus {
  const nodes: NodeStatus[] = [{ node: self.node, state: 'self', lastHeardAgoMs: 0, summary: statusSummary(self) }];
  for (const view of peers) {
    const summary = isStatusSummary(view.info) ? statusSummary(view.info) : null;
    const lastHeardAgoMs = view.lastHeardAgoMs === null ? null : Math.round(view.lastHeardAgoMs);
    nodes.push({ node: view.peer, state: view.up ? 'up' : 'down', lastHeardAgoMs, summary });
  }
  return { from: self.node, mode: self.mode, nodes };
}

/** `show json`'s reply: one line of JSON, ASCII only (the text protocol's lines are bytes). */
export function renderShowJson(status: ClusterStatus): string[] {
  return [JSON.stringify(status).replace(/[\u007f-\uffff]/g, (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`)];
}

/** A status read from another process, or null when it does not have the shape of one. */
export function parseClusterStatus(text: string): ClusterStatus | null {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  if (!isRecord(value) || typeof value.from !== 'string' || typeof value.mode !== 'string' || !Array.isArray(value.nodes)) return null;
  const nodes: NodeStatus[] = [];
  for (const node of value.nodes as unknown[]) {
    if (!isRecord(node) || typeof node.node !== 'string' || !['self', 'up', 'down'].includes(node.state as string)) return null;
    if (node.lastHeardAgoMs !== null && typeof node.lastHeardAgoMs !== 'number') return null;
    if (node.summary !== null && !isStatusSummary(node.summary)) return null;
    nodes.push(node as unknown as NodeStatus);
  }
  return { from: value.from, mode: value.mode, nodes };
}

function statusSummary(summary: StatusSummary): StatusSummary {
  const memory = summary.backendMemory;
  return {
    node: summary.node,
    mode: summary.mode,
    role: summary.role,
    term: summary.term,
    leader: summary.leader,
    committed: summary.committed,
    applied: summary.applied,
    queueDepth: summary.queueDepth,
    opsServed: summary.opsServed,
    backend: summary.backend,
    backendOk: summary.backendOk,
    backendDetail: summary.backendDetail,
    peersUp: summary.peersUp.map((view) => ({ peer: view.peer, up: view.up })),
    ...(typeof summary.caughtUp === 'boolean' ? { caughtUp: summary.caughtUp } : {}),
    ...(isRecord(memory) && typeof memory.usedBytes === 'number' && typeof memory.limitBytes === 'number'
      ? { backendMemory: { usedBytes: memory.usedBytes, limitBytes: memory.limitBytes } }
      : {}),
  };
}

/** Whether a value (a peer's heartbeat, another process's JSON) has every field a status shows. */
function isStatusSummary(value: unknown): value is StatusSummary {
  if (!isRecord(value)) return false;
  const strings = ['node', 'mode', 'role', 'committed', 'applied', 'backend', 'backendDetail'];
  const numbers = ['term', 'queueDepth', 'opsServed'];
  return (
    strings.every((field) => typeof value[field] === 'string') &&
    numbers.every((field) => typeof value[field] === 'number') &&
    (value.leader === null || typeof value.leader === 'string') &&
    typeof value.backendOk === 'boolean' &&
    (value.caughtUp === undefined || typeof value.caughtUp === 'boolean') &&
    Array.isArray(value.peersUp) &&
    (value.peersUp as unknown[]).every((view) => isRecord(view) && typeof view.peer === 'string' && typeof view.up === 'boolean')
  );
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
