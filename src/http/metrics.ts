/**
 * A controller's Prometheus metrics, in a registry of its own (several controllers can run in one
 * process, as tests do), served as `/metrics`.
 *
 * Only requests are counted as they happen (`observeRequest`, on the hot path: two map lookups, a
 * number added, one histogram observation); everything else is read from the controller when
 * scraped, through `collect` callbacks over one snapshot per scrape. Labels are bounded: command
 * names and reply kinds, roles, peer ids from config.ini; never a key.
 */

import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { RequestHistogram, type RequestSeries } from './request-histogram.ts';
import type { Mode } from '../consistency/types.ts';
import type { Command, Reply } from '../protocol/types.ts';
import type { ProtocolServerStats } from '../protocol/server.ts';
import type { NodeSummary, PeerViewRow } from '../status/show.ts';
import type { StatusSource } from './source.ts';

/** Request latency buckets, seconds: 50 µs (a read from the value cache) to 15 s (the request timeout). */
const requestBuckets = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15];
/** fsync latency buckets, seconds. */
const fsyncBuckets = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1];

/** One (command, outcome) pair's counters. */
interface RequestSlot {
  count: number;
  latency: RequestSeries;
}

/** What one scrape reads of the controller, once. */
interface Snapshot {
  summary: NodeSummary;
  peers: readonly PeerViewRow[];
  client: ProtocolServerStats;
  keys: number;
}

export class ControllerMetrics {
  readonly registry = new Registry();
  private readonly requestSlots = new Map<string, Map<string, RequestSlot>>();
  private readonly requestSeconds: RequestHistogram;
  private readonly walFsyncSeconds: Histogram;
  private snapshotTaken: Snapshot | null = null;

  /** `mode`: eventual mode has no log, so no commit or applied index. */
  constructor(private readonly source: StatusSource, options: { node: string; mode: Mode }) {
    this.registry.setDefaultLabels({ node: options.node });
    collectDefaultMetrics({ register: this.registry });
    const registers = [this.registry];
    this.requestSeconds = new RequestHistogram({
      name: 'mckv_request_duration_seconds',
      help: 'Time from a client request being handed to the controller to its reply, by command and outcome (the reply kind).',
      buckets: requestBuckets,
      registers,
    });
    this.walFsyncSeconds = new Histogram({
      name: 'mckv_wal_fsync_duration_seconds',
      help: 'Time one fsync of the write-ahead file took (linearizability and sequential modes).',
      buckets: fsyncBuckets,
      registers,
    });
    this.defineRequestCounters();
    this.defineConsensusGauges(options.mode);
    this.defineBackendGauges();
    this.defineClientGauges();
  }

  /** A request was answered `seconds` after it was handed over. The hot path: keep it cheap. */
  observeRequest(command: Command, reply: Reply, seconds: number): void {
    const name = commandLabel(command);
    let byOutcome = this.requestSlots.get(name);
    if (byOutcome === undefined) {
      byOutcome = new Map();
      this.requestSlots.set(name, byOutcome);
    }
    // A refusal's slot also names its reason (a bounded set: protocol/refusals.ts).
    const key = reply.kind === 'refused' ? `refused:${reply.reason}` : reply.kind;
    let slot = byOutcome.get(key);
    if (slot === undefined) {
      slot = { count: 0, latency: this.requestSeconds.series(name, reply.kind) };
      byOutcome.set(key, slot);
    }
    slot.count += 1;
    slot.latency.observe(seconds);
  }

  /** One fsync of the write-ahead file took `seconds`. */
  observeWalFsync(seconds: number): void {
    this.walFsyncSeconds.observe(seconds);
  }

  /** The Prometheus text exposition of every metric. */
  render(): Promise<string> {
    return this.registry.metrics();
  }

  /** One read of the controller per scrape: every collect callback of a scrape runs in one turn. */
  private snapshot(): Snapshot {
    if (this.snapshotTaken === null) {
      this.snapshotTaken = {
        summary: this.source.summary(),
        peers: this.source.peerView(),
        client: this.source.clientStats(),
        keys: this.source.keyCount(),
      };
      setImmediate(() => (this.snapshotTaken = null));
    }
    return this.snapshotTaken;
  }

  private defineRequestCounters(): void {
    const slots = this.requestSlots;
    new Counter({
      name: 'mckv_requests_total',
      help: 'Client requests answered, by command and outcome (the reply kind: stored, values, not_found, refused, ...).',
      labelNames: ['command', 'outcome'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [command, byOutcome] of slots) {
          for (const [key, slot] of byOutcome) this.inc({ command, outcome: outcomeOf(key) }, slot.count);
        }
      },
    });
    new Counter({
      name: 'mckv_refusals_total',
      help: 'Client requests answered with an error rather than done, by reason (the cluster\'s: no_quorum, busy, timeout, ...; client_error: a bad request; error: an unknown command).',
      labelNames: ['command', 'reason'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [command, byOutcome] of slots) {
          for (const [key, slot] of byOutcome) {
            const reason = refusalReasonOf(key);
            if (reason !== null) this.inc({ command, reason }, slot.count);
          }
        }
      },
    });
  }

  private defineConsensusGauges(mode: Mode): void {
    const registers = [this.registry];
    const snapshot = (): Snapshot => this.snapshot();
    new Gauge({
      name: 'mckv_role',
      help: 'This controller\'s role (1 for the current one): leader, follower, pre_candidate, candidate, recovering (ordered modes), peer (eventual, causal).',
      labelNames: ['role', 'mode'],
      registers,
      collect() {
        const { summary } = snapshot();
        this.reset();
        this.set({ role: summary.role, mode: summary.mode }, 1);
      },
    });
    gauge('mckv_term', 'The election term this controller is in (0 in eventual mode).', registers, () => snapshot().summary.term);
    if (mode !== 'eventual') {
      gauge('mckv_commit_index', 'Index of the last log entry a majority holds.', registers, () => logPosition(snapshot().summary, 'committed'));
      gauge('mckv_applied_index', 'Index of the last log entry applied to the local replica.', registers, () => logPosition(snapshot().summary, 'applied'));
    }
    gauge('mckv_replication_lag_entries', 'Ordered modes: committed entries not yet applied here (commit index minus applied index). Eventual mode: writes this node has not yet pushed to every peer.', registers, () => replicationLag(snapshot().summary));
    gauge('mckv_queue_depth', 'Requests waiting in this controller for the cluster (the `queue` column of show).', registers, () => snapshot().summary.queueDepth);
    gauge('mckv_peers_up', 'Peers this controller hears from.', registers, () => snapshot().peers.filter((view) => view.up).length);
    new Gauge({
      name: 'mckv_peer_up',
      help: 'Whether this controller hears from the peer (1) or not (0).',
      labelNames: ['peer'],
      registers,
      collect() {
        for (const view of snapshot().peers) this.set({ peer: view.peer }, view.up ? 1 : 0);
      },
    });
    new Gauge({
      name: 'mckv_peer_last_heard_seconds',
      help: 'Seconds since the peer was last heard from (absent until it is heard from once).',
      labelNames: ['peer'],
      registers,
      collect() {
        this.reset();
        for (const view of snapshot().peers) if (view.lastHeardAgoMs !== null) this.set({ peer: view.peer }, view.lastHeardAgoMs / 1000);
      },
    });
  }

  private defineBackendGauges(): void {
    const registers = [this.registry];
    const snapshot = (): Snapshot => this.snapshot();
    gauge('mckv_backend_up', 'Whether the local memcached answered its latest health poll (1) or not (0).', registers, () => (snapshot().summary.backendOk ? 1 : 0));
    gauge('mckv_backend_memory_used_bytes', 'Bytes the local memcached holds, at its latest poll.', registers, () => snapshot().summary.backendMemory?.usedBytes ?? null);
    gauge('mckv_backend_memory_limit_bytes', 'The local memcached\'s memory limit (its -m), at its latest poll.', registers, () => snapshot().summary.backendMemory?.limitBytes ?? null);
    gauge('mckv_keys', 'Keys the local replica holds (eventual mode: tombstones included).', registers, () => snapshot().keys);
    gauge('mckv_keys_max', 'The most keys this controller indexes in its heap: a write of a new key past it is refused.', registers, () => this.source.keysMax());
  }

  private defineClientGauges(): void {
    const registers = [this.registry];
    const client = (): ProtocolServerStats => this.snapshot().client;
    gauge('mckv_client_connections', 'Open client connections.', registers, () => client().connectionsCurrent);
    gauge('mckv_requests_held_back', 'Client requests decoded and waiting behind earlier ones of their connection (backpressure).', registers, () => client().requestsHeldBack);
    gauge('mckv_requests_in_flight', 'Client requests decoded and not yet answered.', registers, () => client().requestsInFlight);
    gauge('mckv_client_output_bytes_unsent', 'Reply bytes handed to client sockets and not yet sent.', registers, () => client().outputBytesUnsent);
    new Gauge({
      name: 'mckv_client_connections_paused',
      help: 'Client connections not read now: output (too many unsent reply bytes) or in_flight (too many requests unanswered).',
      labelNames: ['reason'],
      registers,
      collect() {
        const stats = client();
        this.set({ reason: 'output' }, stats.connectionsPausedByOutput);
        this.set({ reason: 'in_flight' }, stats.connectionsPausedByInFlight);
      },
    });
    new Counter({
      name: 'mckv_client_pauses_total',
      help: 'Times a client connection stopped being read, by reason (output, in_flight).',
      labelNames: ['reason'],
      registers,
      collect() {
        const stats = client();
        this.reset();
        this.inc({ reason: 'output' }, stats.pausesByOutputTotal);
        this.inc({ reason: 'in_flight' }, stats.pausesByInFlightTotal);
      },
    });
    new Counter({
      name: 'mckv_client_connections_refused_total',
      help: 'Client connections turned away past connections_max.',
      registers,
      collect() {
        this.reset();
        this.inc(client().connectionsRefused);
      },
    });
  }
}

/** A gauge read at scrape time; `read` returning null leaves it unset (absent). */
function gauge(name: string, help: string, registers: Registry[], read: () => number | null): void {
  new Gauge({
    name,
    help,
    registers,
    collect() {
      const value = read();
      this.reset();
      if (value !== null) this.set(value);
    },
  });
}

/** The command's name as a client spelled it (set, add, gets, incr, ...): a bounded label. */
export function commandLabel(command: Command): string {
  switch (command.kind) {
    case 'get':
      return command.cas ? 'gets' : 'get';
    case 'gat':
      return command.cas ? 'gats' : 'gat';
    case 'store':
    case 'arith':
      return command.verb;
    default:
      return command.kind;
  }
}

/** The reply kind of a slot key (`refused:no_quorum` → `refused`). */
function outcomeOf(key: string): string {
  return key.startsWith('refused:') ? 'refused' : key;
}

/** Why a slot's requests were not done, or null when they were. */
function refusalReasonOf(key: string): string | null {
  if (key.startsWith('refused:')) return key.slice('refused:'.length);
  return key === 'client_error' || key === 'error' ? key : null;
}

/** A log position as a number; null in eventual mode (its `committed` is a clock) or if unreadable. */
function logPosition(summary: NodeSummary, which: 'committed' | 'applied'): number | null {
  if (summary.mode === 'eventual' || !/^\d{1,15}$/.test(summary[which])) return null;
  return Number(summary[which]);
}

function replicationLag(summary: NodeSummary): number | null {
  if (summary.mode === 'eventual') return summary.queueDepth;
  const committed = logPosition(summary, 'committed');
  const applied = logPosition(summary, 'applied');
  return committed === null || applied === null ? null : Math.max(0, committed - applied);
}
