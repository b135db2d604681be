/**
 * The settings every controller of a cluster must run with alike, as the one line the peer
 * handshake compares (../peer/handshake.ts). A node that differs is refused by its peers and
 * stays out, its log and theirs naming both lines, instead of joining a cluster whose promise it
 * would quietly break:
 * - the mode: a controller restarted without the `-cons` the others were started with runs
 *   config.ini's `consistency`, and would serve its clients another mode's promise;
 * - read leases, in linearizability: a holder counts its lease on its own `read_lease_ms`, the
 *   leader honours it on its own guard (lease, drift bound, margin), and a new leader waits out
 *   old leases only with leases on. Any difference can let a lease holder read stale data.
 *   With them on, followers commit between themselves (`holds`, see
 *   consistency/log/follower-holds.ts): a leader that does not know it would hand out read
 *   indexes below writes its followers already answered;
 * - `value_bytes_max`: a value one node took and another refuses to apply would leave that
 *   replica failing the same entry again and again.
 */

import type { ReadLeaseOptions } from '../consistency/replicated-log.ts';
import type { Mode } from '../consistency/types.ts';

export function clusterSettings(mode: Mode, readLeases: ReadLeaseOptions | null, valueBytesMax: number): string {
  const parts = [`mode=${mode}`];
  if (mode === 'linearizability') {
    if (readLeases === null) parts.push('read_leases=off');
    else {
      const { leaseMs, clockDriftPpmMax, marginMs } = readLeases;
      parts.push('read_leases=on', `read_lease_ms=${leaseMs}`, `clock_drift_ppm_max=${clockDriftPpmMax}`, `read_lease_margin_ms=${marginMs}`, 'holds=on');
    }
  }
  parts.push(`value_bytes_max=${valueBytesMax}`);
  return parts.join(' ');
}
