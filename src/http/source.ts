/**
 * What the HTTP status server reads of its controller: everything is read when asked (a scrape, a
 * page), so the controller threads no counters for it. The controller builds one of these from its
 * parts; tests can build one from plain values.
 */

import type { KeyedEntry } from '../consistency/types.ts';
import type { ProtocolServerStats } from '../protocol/server.ts';
import type { NodeSummary, PeerViewRow } from '../status/show.ts';
import type { IndexRecord } from '../store/replica.ts';

export interface StatusSource {
  /** The controller's own line of `show` (role, term, indexes, queue, backend health and memory). */
  summary(): NodeSummary;
  /** Each peer: up or down, when last heard, and the summary its latest heartbeat carried. */
  peerView(): readonly PeerViewRow[];
  /** The client protocol server's counters (connections, requests held back by backpressure). */
  clientStats(): ProtocolServerStats;
  /** Keys the replica's index holds, tombstones included. */
  keyCount(): number;
  /** The most keys this controller indexes (controller/key-room.ts). */
  keysMax(): number;
  /** The replica's index of keys, in no particular order. */
  indexEntries(): Iterable<readonly [string, Readonly<IndexRecord>]>;
  /** The stored entries of `keys` (tombstones and expired ones included), read in key order. */
  fetch(keys: readonly string[]): Promise<KeyedEntry[]>;
}
