/**
 * Refusals: the replies that say a request was not served, as typed values, and the one table
 * that renders them for clients.
 *
 * Intuition: the machines, the store and the controller say *why* (`reason`, plus a free `detail`
 * for people); only this table says how that reads on the wire — the text after `SERVER_ERROR `,
 * the binary status — and whether a refused write certainly had no effect. Rewording a message
 * here changes neither a binary status nor how a history classifies a write.
 * Invariants: every reason has one row; a rendered text carries no CR or LF; `parseRefusalText`
 * gives back the reason of any text `refusalText` renders.
 */

import { BINARY_STATUS, TEXT_ERRORS, type BinaryStatus } from './errors.ts';

/** Why a request was refused. */
export type RefusalReason =
  /** A queue is full, or a replica is still loading: try again soon. */
  | 'busy'
  /** No leader with a quorum could take the request (or it was lost before answering a read). */
  | 'no_quorum'
  /** This replica is being rebuilt, or a state transfer passed the request. */
  | 'not_caught_up'
  /** No quorum answered in time; a write may or may not take effect. */
  | 'timeout'
  /** The leader changed or was lost before the write committed; it may still commit. */
  | 'outcome_unknown'
  /** The write committed, but its result was lost here (a state transfer replaced the replica). */
  | 'result_unknown'
  /** memcached's own: no room for the item. */
  | 'out_of_memory'
  /** memcached's own: an item over its size limit. */
  | 'too_large'
  /** The controller is stopping. */
  | 'shutting_down'
  /** The controller's own deadline passed with no answer from the mode. */
  | 'controller_timeout'
  /** The local memcached failed (down, timed out, or lost the write's result). */
  | 'backend'
  /** An operation of a kind this release does not know: nothing was applied. */
  | 'unknown_op'
  /** A handler failed; `detail` is the whole text. */
  | 'internal';

/** A refused request, as every layer passes it on until a codec renders it. */
export interface Refusal {
  readonly kind: 'refused';
  readonly reason: RefusalReason;
  /** For people (logs, the reply text); no code decides anything by it. */
  readonly detail?: string;
}

interface RefusalRow {
  /** The text after `SERVER_ERROR `, followed by `: <detail>` when there is one. */
  readonly words: string;
  readonly status: BinaryStatus;
  /** The binary body: the text line, or memcached's own message for the status. */
  readonly body: 'text' | 'status';
  /** What a refused write did: certainly nothing (`none`), or it may have or may yet take effect. */
  readonly effect: 'none' | 'unknown';
  /** The detail alone is the text (a handler's failure message as it was). */
  readonly detailIsText?: true;
}

const TEMPORARY = BINARY_STATUS.temporaryFailure;

/** The one table: memcached's own refusals as memcached words and codes them; the cluster's as "temporary failure" unless busy. */
const REFUSALS: Readonly<Record<RefusalReason, RefusalRow>> = Object.freeze({
  busy: { words: 'busy', status: BINARY_STATUS.busy, body: 'text', effect: 'none' },
  no_quorum: { words: 'no quorum', status: TEMPORARY, body: 'text', effect: 'none' },
  not_caught_up: { words: 'not caught up', status: TEMPORARY, body: 'text', effect: 'none' },
  timeout: { words: 'timeout', status: TEMPORARY, body: 'text', effect: 'unknown' },
  outcome_unknown: { words: 'write outcome unknown', status: TEMPORARY, body: 'text', effect: 'unknown' },
  result_unknown: { words: 'write committed, but its result is unknown here', status: TEMPORARY, body: 'text', effect: 'unknown' },
  out_of_memory: { words: TEXT_ERRORS.outOfMemory, status: BINARY_STATUS.outOfMemory, body: 'text', effect: 'none' },
  too_large: { words: TEXT_ERRORS.objectTooLarge, status: BINARY_STATUS.valueTooLarge, body: 'status', effect: 'none' },
  shutting_down: { words: 'controller shutting down', status: TEMPORARY, body: 'text', effect: 'unknown' },
  controller_timeout: { words: 'timed out waiting for the cluster', status: TEMPORARY, body: 'text', effect: 'unknown' },
  backend: { words: 'backend', status: TEMPORARY, body: 'text', effect: 'unknown' },
  unknown_op: { words: 'unknown operation', status: TEMPORARY, body: 'text', effect: 'unknown' },
  internal: { words: 'internal error', status: TEMPORARY, body: 'text', effect: 'unknown', detailIsText: true },
});

const REASONS = Object.keys(REFUSALS) as RefusalReason[];

/** A refusal for `reason`, with `detail` for people. */
export function refused(reason: RefusalReason, detail?: string): Refusal {
  return Object.freeze(detail === undefined ? { kind: 'refused', reason } : { kind: 'refused', reason, detail });
}

/** True for a reason of the table (a peer's message is checked with it). */
export function isRefusalReason(value: unknown): value is RefusalReason {
  return typeof value === 'string' && Object.hasOwn(REFUSALS, value);
}

/**
 * The text after `SERVER_ERROR ` in the text protocol (and a binary error's body): printable ASCII
 * on one line, whatever the detail holds (a backend's message, a key), as clients read it as
 * ASCII and a line break would end the reply early.
 */
export function refusalText(refusal: Pick<Refusal, 'reason' | 'detail'>): string {
  const row = REFUSALS[refusal.reason];
  if (refusal.detail === undefined) return row.words;
  const detail = printableAscii(refusal.detail);
  return row.detailIsText === true ? detail : `${row.words}: ${detail}`;
}

/** `text` in printable ASCII: arrows and ellipses spelled out, anything else outside it as `?`. */
function printableAscii(text: string): string {
  if (!/[^\x20-\x7e]/.test(text)) return text;
  return text.replaceAll('\u2192', '->').replaceAll('\u2026', '...').replace(/[^\x20-\x7e]/g, '?');
}

/** The binary status and body (undefined: memcached's own message for the status). */
export function refusalBinary(refusal: Refusal): { status: BinaryStatus; body: string | undefined } {
  const row = REFUSALS[refusal.reason];
  return { status: row.status, body: row.body === 'text' ? refusalText(refusal) : undefined };
}

/** True when a refused write certainly had no effect and never will (a history may record it as failed). */
export function refusalChangedNothing(refusal: Pick<Refusal, 'reason'>): boolean {
  return REFUSALS[refusal.reason].effect === 'none';
}

/**
 * The refusal a text (after `SERVER_ERROR `) renders, or null when no row renders it: for
 * histories, which record the lines clients were sent. A `internal` text is never recognised.
 */
export function parseRefusalText(text: string): Refusal | null {
  for (const reason of REASONS) {
    const row = REFUSALS[reason];
    if (row.detailIsText === true) continue;
    if (text === row.words) return refused(reason);
    if (text.startsWith(`${row.words}: `)) return refused(reason, text.slice(row.words.length + 2));
  }
  return null;
}
