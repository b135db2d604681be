/**
 * The order of a node's forwards within a term. The peer network resends nothing: a forward on a
 * connection that was reset is lost, and the origin's next one goes on a new connection. Were the
 * leader to log whatever arrives, a client connection's later write could enter the log ahead of
 * its earlier, lost one, and sending the lost one again would put it after the later one. So each
 * origin numbers its forwards within a term, one sequence number per write, in *streams*; the
 * leader logs a stream's writes only in that order and reports the first gap it sees
 * (`forward_gap`), and the origin answers a gap by sending every write of its stream from the gap
 * on again, renumbered from 1 in a new stream. Nothing after a lost write is logged before it.
 *
 *   origin:  stream 0: w1 w2 [w3 w4 lost with the connection] w5 …
 *   leader:  logs w1 w2; w5 is 5, expected 3: drops it, sends forward_gap(stream 0, expected 3)
 *   origin:  stream 1: w3→1 w4→2 w5→3 …
 *   leader:  a newer stream: expects 1 from it; logs w3 w4 w5
 *
 * A stream older than the leader's is stale (its writes were sent again in the newer one) and
 * dropped; another run of the origin (`incarnation`) starts afresh. A gap is reported once per
 * heartbeat interval while it lasts, so a lost report is made again by the next out-of-order
 * forward. A lost stream tail that nothing follows is found by the origin's probe
 * (Turn.probeForwards): an empty forward numbered after its last, which shows the leader the gap.
 *
 * Owns: the leader's per-origin intake; the origin's current stream and next number.
 * Invariant: an origin's writes enter the log in the order it sent them within a term.
 */

import type { PeerId } from '../types.ts';

/** A stream of forwards: an origin's run (`incarnation`), the term it was sent in, and its number in the term. */
interface StreamPosition {
  incarnation: number;
  term: number;
  stream: number;
}

/** Streams of one run of an origin in the order it starts them: by term, then number. */
function compareStreams(a: StreamPosition, b: StreamPosition): number {
  return a.term - b.term || a.stream - b.stream;
}

/** Where the leader stands with one origin's forwards. */
interface Intake extends StreamPosition {
  /** The sequence number the next write taken from this stream must carry. */
  expected: number;
  /** The gap last reported, and when (so it is said once per heartbeat interval). */
  reportedStream: number;
  reportedExpected: number;
  reportedAtMs: number;
}

/** What the leader does with a forward: take its requests from `skip` on, or drop it (reporting a gap when `report`). */
export type Admission = { kind: 'take'; skip: number } | { kind: 'stale' } | { kind: 'gap'; expected: number; report: boolean };

export class ForwardIntake {
  private readonly origins = new Map<PeerId, Intake>();

  /**
   * Whether a forward of `incarnation` in `term`, `stream`, whose `count` writes are numbered from
   * `seq`, continues what this leader took from `from`. Taken, the caller takes its writes from
   * `skip` on (logged, deduplicated or refused: each is answered for).
   */
  admit(from: PeerId, message: StreamPosition & { seq: number; count: number }, nowMs: number, reportEveryMs: number): Admission {
    let intake = this.origins.get(from);
    // Another run of the origin starts afresh, whichever way its number went: a node that lost
    // its data_dir rejoins numbering its runs from 1 again.
    const order = intake === undefined || intake.incarnation !== message.incarnation ? 1 : compareStreams(message, intake);
    if (order < 0) return { kind: 'stale' };
    if (intake === undefined || order > 0) {
      const { incarnation, term, stream } = message;
      intake = { incarnation, term, stream, expected: 1, reportedStream: -1, reportedExpected: 0, reportedAtMs: 0 };
      this.origins.set(from, intake);
    }
    if (message.seq <= intake.expected) {
      const skip = intake.expected - message.seq;
      intake.expected = Math.max(intake.expected, message.seq + message.count);
      return { kind: 'take', skip };
    }
    const same = intake.reportedStream === intake.stream && intake.reportedExpected === intake.expected;
    const report = !same || nowMs - intake.reportedAtMs >= reportEveryMs;
    if (report) {
      intake.reportedStream = intake.stream;
      intake.reportedExpected = intake.expected;
      intake.reportedAtMs = nowMs;
    }
    return { kind: 'gap', expected: intake.expected, report };
  }

}

/** The origin's numbering of its forwards in its current term. */
export class ForwardNumbering {
  private term = -1;
  private stream = 0;
  private next = 1;

  /** The stream and first number for `count` writes sent now in `term`. */
  take(term: number, count: number): { stream: number; seq: number } {
    this.enter(term);
    const seq = this.next;
    this.next += count;
    return { stream: this.stream, seq };
  }

  /** Whether a gap report of `term` and `stream` is about the stream this node sends in now. */
  isCurrent(term: number, stream: number): boolean {
    return term === this.term && stream === this.stream;
  }

  /** Starts a new stream (after a gap, or to send a lost tail again): numbers start from 1. */
  restart(term: number): void {
    this.enter(term);
    this.stream += 1;
    this.next = 1;
  }

  private enter(term: number): void {
    if (term === this.term) return;
    this.term = term;
    this.stream = 0;
    this.next = 1;
  }
}
