/**
 * `mckv status -c config.ini`: asks every controller the config names for its own status (`show
 * json` on its client port, all at once, each bounded by a timeout) and prints one table, as
 * `etcdctl endpoint status --cluster -w table` does. A controller that does not answer is a row
 * marked down; the exit status is 1 when any is. With `--wait`, it asks again until every
 * controller answers, is caught up, sees the others and (ordered modes) follows the same leader
 * and has applied what it had committed a poll before: what a rolling restart waits for before it
 * stops the next controller.
 */

import { itemAt } from '../runtime/item-at.ts';
import type { ClusterConfig } from '../config.ts';
import { parseClusterStatus, type StatusSummary } from '../status/show-json.ts';
import { LOG_ROLES } from '../status/readiness.ts';
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
  const state = summary.caughtUp === false ? 'catching up' : status.state;
  return [status.node, status.address, summary.role, String(summary.term), summary.leader ?? '-', summary.committed, summary.applied, state, backend];
}

/**
 * Why the cluster is not ready to lose a controller, or null when it is: every controller answers,
 * is caught up (one too old to say counts as caught up) and sees every other up, and in the
 * ordered modes every one names the same leader and, given the `earlier` answers of a moment
 * before, has applied all that its leader had committed then. ("Caught up" alone is as far as the
 * leader had committed when the controller rejoined: under load a restarted one can be tens of
 * thousands of entries behind when it says so.)
 */
export function notReady(statuses: readonly EndpointStatus[], earlier: readonly EndpointStatus[] = []): string | null {
  const reasons: string[] = [];
  for (const status of statuses) {
    if (status.summary === null) {
      reasons.push(`${status.node} does not answer`);
      continue;
    }
    if (status.summary.caughtUp === false) reasons.push(`${status.node} is catching up`);
    const unseen = status.summary.peersUp.filter((view) => !view.up).map((view) => view.peer);
    if (unseen.length > 0) reasons.push(`${status.node} does not see ${unseen.join(', ')}`);
  }
  const summaries = statuses.flatMap((status) => (status.summary === null ? [] : [status.summary]));
  if (summaries.some((summary) => LOG_ROLES.has(summary.role))) {
    const leaders = new Set(summaries.map((summary) => summary.leader));
    if (leaders.has(null) || leaders.size > 1) reasons.push('the controllers do not follow one leader');
    const committedBefore = Math.max(0, ...earlier.map((status) => (status.summary?.role === 'leader' ? Number(status.summary.committed) : 0)));
    for (const summary of summaries) {
      const applied = Number(summary.applied);
      if (applied < committedBefore) reasons.push(`${summary.node} has applied ${applied} of the ${committedBefore} committed a moment before`);
    }
  }
  return reasons.length === 0 ? null : reasons.join('; ');
}

/** How often `--wait` asks again. */
const WAIT_POLL_MS = 200;

/**
 * Runs `mckv status`; resolves to the exit code: 1 when any controller did not answer, or, given
 * `waitMs` above 0, when the cluster was still not ready (see `notReady`) after that long.
 */
export async function runStatus(options: {
  config: Pick<ClusterConfig, 'nodes'>;
  timeoutMs: number;
  json: boolean;
  out: (line: string) => void;
  waitMs?: number;
}): Promise<number> {
  const waitMs = options.waitMs ?? 0;
  const deadlineMs = performance.now() + waitMs;
  let statuses = await endpointStatuses(options.config, options.timeoutMs);
  // Waiting, each answer is judged against the one before it (see notReady): at least two polls.
  let earlier: EndpointStatus[] | null = null;
  const why = (): string | null => (earlier === null ? 'not asked twice yet' : notReady(statuses, earlier));
  while (waitMs > 0 && why() !== null && performance.now() + WAIT_POLL_MS < deadlineMs) {
    await new Promise((resolve) => setTimeout(resolve, WAIT_POLL_MS));
    earlier = statuses;
    statuses = await endpointStatuses(options.config, options.timeoutMs);
  }
  if (options.json) options.out(JSON.stringify(statuses));
  else for (const line of renderStatusTable(statuses)) options.out(line);
  if (waitMs === 0) return statuses.every((status) => status.state === 'up') ? 0 : 1;
  const reason = why();
  if (reason !== null && !options.json) options.out(`not ready after ${waitMs / 1000} s: ${reason}`);
  return reason === null ? 0 : 1;
}
