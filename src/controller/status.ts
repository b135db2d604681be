/**
 * What a controller says of itself: memcached's `stats` (and `stats reset`), its own line in
 * `show` (also sent to peers in every heartbeat), and the counters both read.
 *
 * It reads the controller's parts when asked and decides nothing; the counters are the only state
 * it keeps. The `mckv_*` lines themselves are made in ./stats.ts.
 */

import { clockJumpsSeen, clockMs } from '../runtime/clock.ts';
import type { Machine, Mode } from '../consistency/types.ts';
import type { PeerNetwork } from '../peer/network.ts';
import type { ProtocolServer } from '../protocol/server.ts';
import type { Reply } from '../protocol/types.ts';
import { renderShow, type NodeSummary } from '../status/show.ts';
import { clusterStatus, renderShowJson } from '../status/show-json.ts';
import { statsGroup } from './stats-group.ts';
import type { Replica } from '../store/replica.ts';
import type { Op } from '../store/types.ts';
import type { BackendWatch } from './backend-watch.ts';
import type { DurabilityStats } from './durability.ts';
import type { MemoryReporter } from './memory-reporter.ts';
import { cacheStatsLines, peerStatsLines, walStatsLines } from './stats.ts';

export const MCKV_VERSION = '0.1.0';

/** What `version` answers, and `stats` says of the version. */
export const VERSION_TEXT = `1.6.18 mckv-${MCKV_VERSION}`;

/** The parts a controller's status reads. */
export interface StatusSources {
  node: string;
  mode: Mode;
  /** The backend's kind and address, as `show` and `stats` print it. */
  backend: string;
  machine: Pick<Machine<unknown>, 'status'>;
  replica: Replica;
  network: PeerNetwork;
  server: ProtocolServer;
  durability: { stats(nowMs: number): DurabilityStats };
  watch: BackendWatch;
  memory: MemoryReporter;
  /** Events queued and not yet run. */
  eventsQueued: () => number;
}

export class ControllerStatus {
  readonly counters = { opsServed: 0, gets: 0, sets: 0, getHits: 0, getMisses: 0, errors: 0 };
  /** The server's connection count at the last `stats reset`: total_connections counts from there. */
  private connectionsTotalAtReset = 0;
  private readonly startedAtMs = clockMs();

  constructor(private readonly sources: StatusSources) {}

  /** A request taken for the mode: counted as a get or a set. */
  countOp(op: Op): void {
    this.counters.opsServed += 1;
    if (op.kind === 'get' || op.kind === 'gat') this.counters.gets += 1;
    else this.counters.sets += 1;
  }

  /** A read's reply: its hits and misses counted. */
  countRead(op: Op, reply: Reply): Reply {
    if (reply.kind === 'values') {
      this.counters.getHits += reply.items.length;
      if (op.kind === 'get') this.counters.getMisses += op.keys.length - reply.items.length;
    }
    return reply;
  }

  /** Any reply to a request the mode took. */
  countReply(reply: Reply): void {
    if (reply.kind === 'refused' || reply.kind === 'client_error') this.counters.errors += 1;
  }

  /** `show` and `show json`: this node's line and what its peers last said. */
  show(json: boolean): Reply {
    const { network } = this.sources;
    if (json) return { kind: 'text', lines: renderShowJson(clusterStatus(this.summary(), network.peerView())) };
    return { kind: 'text', lines: renderShow(this.summary(), network.peerView()) };
  }

  /** `stats [group]` (see stats-group.ts). */
  stats(group: string): Reply {
    const { server, machine, replica, network, durability, watch } = this.sources;
    const answer = statsGroup(group);
    if (answer.kind === 'reply') return answer.reply;
    if (answer.kind === 'reset') {
      this.counters.gets = this.counters.sets = this.counters.getHits = this.counters.getMisses = 0;
      this.connectionsTotalAtReset = server.stats().connectionsTotal;
      return { kind: 'reset' };
    }
    const serverStats = server.stats();
    const status = machine.status();
    const stats: Array<[string, string]> = [
      ['pid', String(process.pid)],
      ['uptime', String(Math.floor((clockMs() - this.startedAtMs) / 1000))],
      ['time', String(Math.floor(clockMs() / 1000))],
      ['version', VERSION_TEXT],
      ['curr_connections', String(serverStats.connectionsCurrent)],
      ['total_connections', String(serverStats.connectionsTotal - this.connectionsTotalAtReset)],
      ['cmd_get', String(this.counters.gets)],
      ['cmd_set', String(this.counters.sets)],
      ['get_hits', String(this.counters.getHits)],
      ['get_misses', String(this.counters.getMisses)],
      ['curr_items', String(replica.keyCount())],
      ['mckv_keys_max', String(this.sources.memory.keysMax)],
      ['mckv_node', this.sources.node],
      ['mckv_mode', this.sources.mode],
      ['mckv_role', status.role],
      ['mckv_term', String(status.term)],
      ['mckv_committed', status.committed],
      ['mckv_applied', status.applied],
      ['mckv_queue_depth', String(status.queueDepth)],
      ['mckv_backend', this.sources.backend],
      ['mckv_backend_ok', watch.current().ok ? '1' : '0'],
      ...peerStatsLines(network, status.invalidPeerMessages),
      ['mckv_read_lease', status.readLease ?? 'off'],
      ['mckv_clock_jumps', String(clockJumpsSeen())],
      ...walStatsLines(durability.stats(clockMs())),
      ...server.statsLines(),
      ...cacheStatsLines(replica),
    ];
    return { kind: 'stats', stats };
  }

  /** This controller's own line in `show`, also sent to peers in every heartbeat. */
  summary(): NodeSummary {
    const { machine, network, durability, watch, memory } = this.sources;
    const status = machine.status();
    const health = watch.current();
    return {
      node: this.sources.node,
      mode: this.sources.mode,
      role: status.role,
      term: status.term,
      leader: status.leader,
      committed: status.committed,
      applied: status.applied,
      queueDepth: status.queueDepth + this.sources.eventsQueued(),
      opsServed: this.counters.opsServed,
      backend: this.sources.backend,
      backendOk: health.ok,
      backendDetail: health.detail,
      peersUp: network.peerView().map((view) => ({ peer: view.peer, up: view.up })),
      backendMemory: memory.shown(),
      backendRefusal: watch.recentRefusal(clockMs()),
      walFsyncSlowestRecentMs: Math.round(durability.stats(clockMs()).fsyncSlowestRecentMs),
      caughtUp: status.caughtUp,
    };
  }
}
