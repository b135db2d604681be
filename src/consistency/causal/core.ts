/**
 * What every part of causal mode shares: the node's place in the sorted node list, the tuning, the
 * hybrid clock, the visible vector, the time of the step being taken, and the store tokens — one
 * sequence for fetches and merges, with what each fetch in flight is for. The parts,
 * ./local-writes.ts (this node's writes) and ./merging.ts (the peers' chains to us), own their
 * state and reach this one through it; the machine (./machine.ts) steps them and ships our chains.
 *
 * Invariants: the HLC never goes back and is >= every version merged or fetched (`observe`) that
 * is not too far ahead of local time; the visible vector has one component per node; a token
 * names one fetch or one merge.
 */

import type { Effect, KeyedEntry, MachineOptions, PeerId } from '../types.ts';
import { HLC_ZERO, latestVersionAllowed, mergeHlc, packVersion, tickHlc, versionClock, type Hlc } from '../hlc.ts';
import { DroppedPeerMessages } from '../peer-input.ts';
import { defaultCausalTuning, type CausalTuning } from './tuning.ts';
import { componentOf, type CausalMessage, type VersionVector } from './messages.ts';
import type { CutRead } from './snapshot-cuts.ts';

export type Out = Effect<CausalMessage>[];

/** What a fetch in flight is for (see the machine's onFetched). */
export type FetchPurpose =
  | { kind: 'rebuild' }
  | { kind: 'dirty'; keys: string[] | null; to: bigint; deps: VersionVector }
  /** A snapshot's last read, for `peers`; `read`: what its reads before held (./snapshot-cuts.ts). */
  | { kind: 'snapshot'; peers: PeerId[]; to: bigint; deps: VersionVector; needs: VersionVector | null; read?: CutRead }
  /**
   * A snapshot's read page by page: of every key (`read` null), or again of the keys written since.
   * One read serves every peer that needs a snapshot before its cut (`peers` grows).
   */
  | { kind: 'snapshot-read'; peers: PeerId[]; round: number; read: CutRead | null }
  | { kind: 'graves' };

export class CausalCore {
  readonly self: PeerId;
  readonly peers: PeerId[];
  /** Every node, sorted: the index of a vector's components and of a version's node bits. */
  readonly nodes: PeerId[];
  readonly selfIndex: number;
  readonly tuning: CausalTuning;
  clock: Hlc = HLC_ZERO;
  visible: VersionVector;
  nowMs: number;
  readonly fetches = new Map<number, FetchPurpose>();
  readonly dropped = new DroppedPeerMessages();
  private nextToken = 1;

  constructor(options: MachineOptions, tuning: Partial<CausalTuning>) {
    this.self = options.self;
    this.peers = [...new Set(options.peers)].filter((peer) => peer !== options.self).sort();
    this.nodes = [...this.peers, this.self].sort();
    this.selfIndex = this.nodes.indexOf(this.self);
    this.tuning = { ...defaultCausalTuning(options), ...tuning };
    this.visible = this.nodes.map(() => 0n);
    this.nowMs = options.nowMs;
    this.clock = tickHlc(HLC_ZERO, options.nowMs);
    packVersion(this.clock, this.selfIndex); // asserts the node index fits
  }

  /** This node's component of a vector. */
  own(vector: readonly bigint[]): bigint {
    return componentOf(vector, this.selfIndex);
  }

  /** Moves the clock up to the newest of `entries`' versions that is not too far ahead of local time. */
  observe(entries: readonly KeyedEntry[]): void {
    const latest = latestVersionAllowed(this.nowMs, this.tuning.clockAheadMaxMs);
    let newest = 0n;
    for (const [, entry] of entries) if (entry.cas > newest && entry.cas <= latest) newest = entry.cas;
    this.clock = mergeHlc(this.clock, versionClock(newest));
  }

  /** A peer message this node cannot use: dropped, counted, noted (rate-limited). */
  dropMessage(from: PeerId, reason: string, out: Out): void {
    const note = this.dropped.drop<CausalMessage>(from, reason, this.nowMs);
    if (note !== null) out.push({ ...note, meta: { node: this.self, ...note.meta } });
  }

  /** Something an operator wants in the log (a snapshot asked for or read): `node` added to `meta`. */
  note(out: Out, level: 'info' | 'warn', message: string, meta: Record<string, unknown>): void {
    out.push({ kind: 'note', level, message, meta: { node: this.self, ...meta } });
  }

  /**
   * Fetches `keys` (null: every key) for `purpose`, `paged` or as one read; returns the fetch's
   * token. A read to learn what the replica holds (at start, after a reset, of tombstones) takes
   * the entries without their values: at start that is every key.
   */
  issueFetch(out: Out, keys: string[] | null, purpose: FetchPurpose, paged = false): number {
    const token = this.takeToken();
    this.fetches.set(token, purpose);
    const fetch: Extract<Effect<CausalMessage>, { kind: 'fetch' }> = { kind: 'fetch', token, keys };
    if (paged) fetch.paged = true;
    if (purpose.kind === 'rebuild' || purpose.kind === 'graves') fetch.versionsOnly = true;
    out.push(fetch);
    return token;
  }

  takeToken(): number {
    const token = this.nextToken;
    this.nextToken += 1;
    return token;
  }
}
