/**
 * The `show` extension: the cluster as every controller sees it, as a readable table.
 *
 * Each controller sends its own summary in every heartbeat, so the controller answering `show`
 * can print every peer's last known state next to whether it still hears from that peer.
 */

import { itemAt } from '../runtime/item-at.ts';

export interface NodeSummary {
  node: string;
  mode: string;
  role: string;
  term: number;
  leader: string | null;
  committed: string;
  applied: string;
  queueDepth: number;
  opsServed: number;
  backend: string;
  backendOk: boolean;
  backendDetail: string;
  /** This node's own view of its peers. */
  peersUp: Array<{ peer: string; up: boolean }>;
  /**
   * What its memcached said of its memory at its latest poll, for display. (The memory guard
   * reads the report every heartbeat carries in a field of its own: peer/memory-report.ts.)
   */
  backendMemory?: { usedBytes: number; limitBytes: number };
  /**
   * memcached's words for a write it refused lately without storing it (`out of memory storing
   * object`): while the replica waits for room to apply it, `show` says so next to its memory.
   */
  backendRefusal?: string;
  /**
   * The slowest fsync of its write-ahead file in the last minute, in whole ms (absent from older
   * peers, and 0 where nothing is fsynced: eventual mode, wal_sync = write).
   */
  walFsyncSlowestRecentMs?: number;
  /** Whether its replica is whole, so it serves reads (MachineStatus.caughtUp; absent from older peers). */
  caughtUp?: boolean;
}

export interface PeerViewRow {
  peer: string;
  up: boolean;
  lastHeardAgoMs: number | null;
  info?: unknown;
}

const MB = 1024 * 1024;

/** `fsync`: the slowest write-ahead fsync of the last minute (see NodeSummary). */
const columns = ['node', 'state', 'heard', 'role', 'term', 'leader', 'committed', 'applied', 'queue', 'ops', 'fsync', 'backend', 'sees'];

/** The lines of the `show` reply (the protocol adds END). */
export function renderShow(self: NodeSummary, peers: readonly PeerViewRow[]): string[] {
  const rows: string[][] = [row(self, 'self', '-')];
  for (const view of peers) {
    const summary = isNodeSummary(view.info) ? view.info : null;
    const heard = view.lastHeardAgoMs === null ? 'never' : formatAge(view.lastHeardAgoMs);
    const state = view.up ? 'up' : 'down';
    rows.push(summary ? row(summary, state, heard) : [view.peer, state, heard, ...columns.slice(3).map(() => '?')]);
  }
  const widths = columns.map((title, index) => Math.max(title.length, ...rows.map((cells) => itemAt(cells, index).length)));
  const format = (cells: string[]): string =>
    cells
      .map((cell, index) => (index === cells.length - 1 ? cell : cell.padEnd(itemAt(widths, index))))
      .join('  ')
      .trimEnd();
  return [
    `mckv cluster as seen by ${self.node}, mode ${self.mode}`,
    format(columns),
    ...rows.map(format),
  ];
}

function row(summary: NodeSummary, state: string, heard: string): string[] {
  const memory = summary.backendMemory;
  const used = memory === undefined || memory.limitBytes === 0 ? '' : `, ${Math.round((100 * memory.usedBytes) / memory.limitBytes)}% of ${Math.round(memory.limitBytes / MB)} MB`;
  const refusing = typeof summary.backendRefusal === 'string' ? `, refusing writes (${summary.backendRefusal})` : '';
  const backend = `${summary.backend} ${summary.backendOk ? `ok${used}${refusing}` : `DOWN (${summary.backendDetail})`}`;
  const sees = summary.peersUp.map((view) => `${view.peer}:${view.up ? 'up' : 'down'}`).join(',');
  const fsync = typeof summary.walFsyncSlowestRecentMs === 'number' ? `${summary.walFsyncSlowestRecentMs}ms` : '-';
  return [
    summary.node,
    summary.caughtUp === false ? `${state}, catching up` : state,
    heard,
    summary.role,
    String(summary.term),
    summary.leader ?? '-',
    summary.committed,
    summary.applied,
    String(summary.queueDepth),
    String(summary.opsServed),
    fsync,
    backend,
    sees,
  ];
}

function formatAge(ageMs: number): string {
  return ageMs < 10_000 ? `${Math.round(ageMs)}ms` : `${(ageMs / 1000).toFixed(1)}s`;
}

function isNodeSummary(value: unknown): value is NodeSummary {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as NodeSummary).node === 'string' &&
    Array.isArray((value as NodeSummary).peersUp)
  );
}
