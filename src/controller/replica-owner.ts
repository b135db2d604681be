/**
 * Which mode last served over this node's replica (`data_dir/<node>/replica-mode`), and whether an
 * ordered mode may take the replica as its own.
 *
 * An ordered mode trusts its replica to hold exactly what its log applied: after a restart it
 * replays the log onto it and serves it. Eventual and causal modes write to memcached without that
 * log, and a memcached that held keys before this node had a log was written by someone else. Such a
 * replica is *foreign*: it may differ from its peers' in ways no replay mends, and served as it is,
 * one key would read differently at different nodes, with no fault at all. So an ordered controller
 * refuses to start over a foreign replica that holds keys, saying how to empty it, and rebuilds an
 * empty one from its log and peers (as after a memcached restarted empty).
 *
 * Linearizability and sequential share the log and its replica: either may follow the other.
 */

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { isOrderedMode, MODES, type Mode } from '../consistency/types.ts';
import { replacePrivateTextFile } from '../runtime/private-files.ts';

export const REPLICA_MODE_FILE = 'replica-mode';
const NO_LOG_YET = 'this node has no log yet, so nothing in it came through this cluster';

/** A node's facts that decide whether its mode takes the replica as its own (see replicaAtStart). */
export interface ReplicaOwner {
  mode: Mode;
  /** data_dir/<node>: where the replica-mode file is. */
  stateDir: string;
  /** The write-ahead file held records at start. */
  logRecords: boolean;
  /** Started with --rejoin. */
  rejoin: boolean;
}

/** What the file says: no file, the mode that last served, or something no controller wrote. */
export type ReplicaMarker = { kind: 'none' } | { kind: 'mode'; mode: Mode } | { kind: 'unreadable'; text: string };

/** Reads `stateDir`'s replica-mode file (written by any controller: trusted only as far as it parses). */
export function readReplicaMarker(stateDir: string): ReplicaMarker {
  let text: string;
  try {
    text = readFileSync(path.join(stateDir, REPLICA_MODE_FILE), 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'none' };
    return { kind: 'unreadable', text: String((error as Error).message) };
  }
  const mode = MODES.find((known) => known === text.trim());
  return mode === undefined ? { kind: 'unreadable', text: text.slice(0, 40) } : { kind: 'mode', mode };
}

/** Records that `mode` serves over this replica from now on. */
export function writeReplicaMarker(stateDir: string, mode: Mode): void {
  replacePrivateTextFile(path.join(stateDir, REPLICA_MODE_FILE), `${mode}\n`);
}

/** What an ordered controller does with its replica at start (any other mode takes it as it is). */
export type ReplicaStart = { kind: 'own' } | { kind: 'refuse'; why: string } | { kind: 'rebuild'; why: string };

/**
 * Whether `mode` takes this node's replica as its own at start. `logRecords`: the write-ahead file
 * held records; `rejoin`: the node lost its data_dir and recovers from its peers (its replica is the
 * cluster's, as far as anyone knows); `keys`: how many keys memcached holds. A foreign replica that
 * holds keys is refused; an empty one under a log that thinks it full is rebuilt.
 */
export function replicaAtStart(
  mode: Mode,
  marker: ReplicaMarker,
  node: { logRecords: boolean; rejoin: boolean; keys: number },
): ReplicaStart {
  const why = foreignReason(mode, marker, node);
  if (why === null) return { kind: 'own' };
  if (node.keys > 0) return { kind: 'refuse', why };
  return node.logRecords ? { kind: 'rebuild', why } : { kind: 'own' };
}

function foreignReason(mode: Mode, marker: ReplicaMarker, node: { logRecords: boolean; rejoin: boolean }): string | null {
  if (!isOrderedMode(mode)) return null;
  switch (marker.kind) {
    case 'mode':
      return isOrderedMode(marker.mode) ? null : `${marker.mode} mode served it last, writing outside this cluster's log`;
    case 'unreadable':
      return `its ${REPLICA_MODE_FILE} file says ${JSON.stringify(marker.text)}, not a mode`;
    case 'none':
      // A data_dir of a release before this file (a log, no marker) is taken as the log's own.
      return !node.logRecords && !node.rejoin ? NO_LOG_YET : null;
  }
}

/** The refusal to start over a foreign replica holding `keys` keys, with what to do about it. */
export function foreignReplicaRefusal(backendAddress: string, keys: number, why: string, mode: Mode): string {
  return (
    `memcached ${backendAddress} holds ${keys} key${keys === 1 ? '' : 's'}, but ${why}: ${mode} mode would serve them as they are, ` +
    'and the three replicas may differ. Empty it (restart it, or send it flush_all) and start again: ' +
    "the replica is then rebuilt from what this cluster's log and peers hold (what was written outside the log is not kept)." +
    (why === NO_LOG_YET ? ' If this node lost its data_dir, start it with --rejoin instead.' : '')
  );
}
