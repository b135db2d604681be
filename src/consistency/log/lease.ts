/**
 * Read leases (quorum leases, Moraru, Andersen, Kaminsky, SoCC 2014; Hermes, ASPLOS 2020): with
 * `read_leases = on`, in linearizability mode with at most three nodes, a node holding a lease
 * answers a linearizable read from its own replica, once every entry it holds for the read's keys
 * is applied, instead of asking for a read index.
 *
 * Intuition: the holders are the configuration's members. A follower asks on every append reply,
 * dated by its own clock; the leader grants on its next append, echoing that date, and from the
 * ask's arrival commits nothing the follower has not acked until a guard has run out on its clock
 * (the lease stretched by the drift bound, plus the margin). The holder's lease runs from its ask,
 * so no message delay lengthens it. The leader's own lease runs from the sending of an append a
 * follower acked. A new leader honours every peer for a guard from its election: an older
 * leader's lease, or one it granted, was dated before a node of the new majority left its term.
 * A clock jump (the machine was suspended: its monotonic clock stood still while the others ran
 * on) ends every lease dated before it: the holder's clock lost that time.
 * Invariants: a lease is used only in the term (and the role) it was granted in, and in one
 * process lifetime; a grant is used only once the holder knows its index committed; nothing
 * dated at or before the last clock jump counts.
 */

import type { LogCore } from './core.ts';
import type { LeaseAsk, LeaseGrant } from './types.ts';

/** The one timing assumption of read leases: how long, and how far clocks may run apart. */
export interface ReadLeaseOptions {
  /** How long a lease lasts, from its holder's ask (holder's clock), in ms. */
  leaseMs: number;
  /** How far any node's monotonic clock may run fast or slow against real time, in ppm. */
  clockDriftPpmMax: number;
  /** Added to every guard, in ms: the clock's whole-millisecond steps, timer lateness. */
  marginMs: number;
}

/**
 * How long a leader honours a lease, on its own clock, from a moment after the lease was asked
 * for: a lease of `leaseMs` on a clock running slow ends at most leaseMs / (1 − ρ) later in real
 * time, and the leader's clock, running fast, counts at least guard / (1 + ρ) of real time.
 */
export function leaseGuardMs(options: ReadLeaseOptions): number {
  const drift = options.clockDriftPpmMax / 1_000_000;
  return Math.ceil((options.leaseMs * (1 + drift)) / (1 - drift)) + options.marginMs;
}

/** This node's side of read leases: the lease it holds as a follower, and when it may read by one. */
export class ReadLeases {
  readonly guardMs: number;
  /** Our grant as a follower: the term it came in, and the grant. */
  private held: { term: number; grant: LeaseGrant } | null = null;
  /** The last clock jump, our clock: asks and confirmations dated at or before it count for nothing. */
  private jumpedAtMs = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly core: LogCore,
    readonly options: ReadLeaseOptions,
  ) {
    this.guardMs = leaseGuardMs(options);
  }

  /** What a follower's append reply asks for: a lease dated now. */
  ask(): LeaseAsk {
    return { incarnation: this.core.incarnation, askedMs: this.core.nowMs };
  }

  /** A grant on an append of our term, from its leader (the caller checked both). */
  onGrant(grant: LeaseGrant): void {
    const core = this.core;
    // Only our own asks of this process lifetime: a restarted node holds no lease until asked anew.
    if (grant.incarnation !== core.incarnation || grant.askedMs > core.nowMs || grant.askedMs <= this.jumpedAtMs) return;
    const held = this.held;
    if (held !== null && held.term === core.term && held.grant.askedMs >= grant.askedMs) return;
    this.held = { term: core.term, grant };
  }

  /**
   * The clock jumped (see the header): drop what we hold, as the leader and as a follower, until
   * asks and confirmations dated after now renew it. Whether we held anything.
   */
  forget(): boolean {
    const held = this.held !== null || this.core.role === 'leader';
    this.held = null;
    this.jumpedAtMs = this.core.nowMs;
    return held;
  }

  /** Whether our follower's lease lets a read arriving at `atMs` be served locally. */
  holdsAsFollower(atMs: number): boolean {
    const core = this.core;
    const held = this.held;
    if (held === null || core.role !== 'follower' || core.leader === null || held.term !== core.term) return false;
    return atMs < held.grant.askedMs + this.options.leaseMs && core.commitIndex >= held.grant.index;
  }

  /**
   * Whether the leader's own lease covers `atMs`: `confirmedSentMs` is when it sent an append a
   * majority (with itself) acked in this term; `termStarted` — its first entry is committed.
   */
  holdsAsLeader(atMs: number, confirmedSentMs: number, termStarted: boolean): boolean {
    if (this.core.role !== 'leader' || !termStarted || confirmedSentMs <= this.jumpedAtMs) return false;
    return atMs < confirmedSentMs + this.options.leaseMs;
  }
}
