/**
 * What a controller reports of itself beyond memcached's own counters: the `mckv_*` lines of
 * `stats` for its peers, its write-ahead file and its read cache; and how a failed store call is
 * answered.
 */

import { refused } from '../protocol/refusals.ts';
import type { Reply } from '../protocol/types.ts';
import type { PeerNetwork } from '../peer/network.ts';
import type { Replica } from '../store/replica.ts';
import { StoreError } from '../store/types.ts';
import type { DurabilityStats } from './durability.ts';

/** What peers sent that was refused, and this node's own pauses (a stalled machine, a GC). */
export function peerStatsLines(network: PeerNetwork, invalidPeerMessages: number): Array<[string, string]> {
  const peer = network.counters();
  const refusedHandshakes = Object.values(peer.handshakesRefused).reduce((sum, count) => sum + count, 0);
  const pauses = network.pauseStats();
  return [
    ['mckv_peer_handshakes_accepted', String(peer.handshakesAccepted)],
    ['mckv_peer_handshakes_refused', String(refusedHandshakes)],
    ['mckv_peer_frames_refused', String(peer.framesRefused)],
    ['mckv_peer_messages_invalid', String(invalidPeerMessages)],
    ['mckv_stalls', String(pauses.pauses)],
    ['mckv_stall_longest_ms', String(pauses.longestPauseMs)],
  ];
}

/** How the write-ahead file's fsyncs go, and how much waits for one (wal_sync = write: no fsyncs). */
export function walStatsLines(wal: DurabilityStats): Array<[string, string]> {
  return [
    ['mckv_wal_fsyncs', String(wal.fsyncs)],
    ['mckv_wal_fsync_last_ms', formatMs(wal.fsyncLastMs)],
    ['mckv_wal_fsync_slowest_recent_ms', formatMs(wal.fsyncSlowestRecentMs)],
    ['mckv_wal_records_waiting', String(wal.recordsWaiting)],
  ];
}

export function cacheStatsLines(replica: Replica): Array<[string, string]> {
  const usage = replica.cacheUsage();
  return [
    ['mckv_cache_entries', String(usage.entries)],
    ['mckv_cache_bytes', String(usage.bytes)],
    ['mckv_cache_bytes_max', String(usage.bytesMax)],
    ['mckv_cache_hits', String(usage.hits)],
    ['mckv_cache_misses', String(usage.misses)],
  ];
}

/** A failed store call's reply: memcached's own words for a refusal that changed nothing, else what failed. */
export function storeErrorReply(error: unknown): Reply {
  if (error instanceof StoreError && error.refusal !== undefined) return error.refusal;
  return refused('backend', error instanceof Error ? error.message : String(error));
}

/** A duration in ms to two decimals: fsyncs take from a tenth of a ms to seconds. */
function formatMs(ms: number): string {
  return String(Math.round(ms * 100) / 100);
}

