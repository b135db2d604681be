/**
 * Whether one controller would serve its clients now, for a load balancer's or an orchestrator's
 * health check: the status server's `/readyz` answers 200 or 503 by it (`/livez` answers while
 * the process does). A check that sends clients only where they are served, and away while a
 * controller catches up, rebuilds or is cut off, instead of letting them wait or be refused.
 *
 * Read from the node's own `show` line, so it judges by what the controller itself knows: its
 * memcached's last poll, its replica, and in the ordered modes its leader and its view of the
 * peers. Eventual and causal nodes serve alone by design: there only the first two count.
 */

import type { NodeSummary } from './show.ts';

/** The roles of the modes whose nodes follow a leader (eventual and causal nodes are all 'peer'). */
export const LOG_ROLES: ReadonlySet<string> = new Set(['leader', 'follower', 'candidate', 'recovering']);

/** Why this node would not serve a client's request now, or null when it would. */
export function nodeNotReady(summary: NodeSummary): string | null {
  if (!summary.backendOk) return `its memcached does not answer (${summary.backendDetail})`;
  if (summary.role === 'recovering') return 'recovering its log from its peers';
  if (summary.caughtUp === false) return 'catching up';
  if (!LOG_ROLES.has(summary.role)) return null;
  if (summary.role === 'candidate' || summary.leader === null) return 'no leader: an election is on';
  const peersUp = summary.peersUp.filter((view) => view.up).map((view) => view.peer);
  // With three nodes, a leader needs one peer for a majority; a follower needs its leader.
  if (summary.role === 'leader' && peersUp.length === 0) return 'leader without a majority: it sees no peer';
  if (summary.role === 'follower' && !peersUp.includes(summary.leader)) return `does not see its leader ${summary.leader}`;
  return null;
}
