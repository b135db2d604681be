/**
 * `mckv status -c config.ini`: asks every controller the config names for its own status (`show
 * json` on its client port, all at once, each bounded by a timeout) and prints one table, as
 * `etcdctl endpoint status --cluster -w table` does. A controller that does not answer is a row
 * marked down; the exit status is 1 when any is.
 */

import { itemAt } from '../runtime/item-at.ts';
import type { ClusterConfig } from '../config.ts';
import { parseClusterStatus, type StatusSummary } from '../status/show-json.ts';
import { TextClient } from './text-client.ts';

/** One controller as it answered for itself (or did not). */
export interface EndpointStatus {
  node: string;
  /** Its client address, as in config.ini. */
  address: string;
  state: 'up' | 'down';
  /** What it said of itself; null when it did not answer. */
  summary: StatusSummary | null;
  /** Why it is down. */
  error: string | null;
}

const columns = ['node', 'address', 'role', 'term', 'leader', 'committed', 'applied', 'state', 'backend'] as const;

/** Asks every controller of `config` at once. */
export function endpointStatuses(config: Pick<ClusterConfig, 'nodes'>, timeoutMs: number): Promise<EndpointStatus[]> {
  return Promise.all(
    config.nodes.map(async (node): Promise<EndpointStatus> => {
      const address = `${node.client.host}:${node.client.port}`;
      try {
        const reply = await TextClient.requestOnce(node.client.host, node.client.port, 'show json\r\n', 'show', timeoutMs);
        const [json, end] = reply.lines;
        const status = reply.lines.length === 2 && json !== undefined && end === 'END' ? parseClusterStatus(json) : null;
        const self = status?.nodes.find((entry) => entry.state === 'self')?.summary ?? null;
        if (self === null) return { node: node.id, address, state: 'down', summary: null, error: `unexpected answer to show json: ${(reply.lines[0] ?? '').slice(0, 80)}` };
        return { node: node.id, address, state: 'up', summary: self, error: null };
      } catch (error) {
        return { node: node.id, address, state: 'down', summary: null, error: error instanceof Error ? error.message : String(error) };
      }
    }),
  );
}

/** The table's lines: a bordered grid, then one line per controller that did not answer. */
export function renderStatusTable(statuses: readonly EndpointStatus[]): string[] {
  const rows = statuses.map(cells);
  const widths = columns.map((title, index) => Math.max(title.length, ...rows.map((row) => itemAt(row, index).length)));
  const border = `+${widths.map((width) => '-'.repeat(width + 2)).join('+')}+`;
  const line = (row: readonly string[]): string => `| ${row.map((cell, index) => cell.padEnd(itemAt(widths, index))).join(' | ')} |`;
  const errors = statuses.filter((status) => status.error !== null).map((status) => `${status.node}: ${status.error}`);
  return [border, line(columns.map((title) => title.toUpperCase())), border, ...rows.map(line), border, ...errors];
}

function cells(status: EndpointStatus): string[] {
  const summary = status.summary;
  if (summary === null) return [status.node, status.address, '-', '-', '-', '-', '-', status.state, '-'];
  const backend = summary.backendOk ? `${summary.backend} ok` : `${summary.backend} DOWN (${summary.backendDetail})`;
  return [status.node, status.address, summary.role, String(summary.term), summary.leader ?? '-', summary.committed, summary.applied, status.state, backend];
}

/** Runs `mckv status`; resolves to the exit code (1 when any controller did not answer). */
export async function runStatus(options: { config: Pick<ClusterConfig, 'nodes'>; timeoutMs: number; json: boolean; out: (line: string) => void }): Promise<number> {
  const statuses = await endpointStatuses(options.config, options.timeoutMs);
  if (options.json) options.out(JSON.stringify(statuses));
  else for (const line of renderStatusTable(statuses)) options.out(line);
  return statuses.every((status) => status.state === 'up') ? 0 : 1;
}
