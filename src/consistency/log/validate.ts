/**
 * The schema of the replicated log's peer messages, checked before the machine acts on one.
 *
 * A message that fails is dropped whole (etcd-io/raft drops what it cannot use): every field has
 * its type; terms, indexes, rounds, seqs and ids are safe non-negative integers (terms at most
 * TERM_MAX, so a term + 1 stays exact); arrays are bounded; ops pass the client's rules
 * (../../store/op-rules.ts); an append's entries follow its prevIndex one by one with terms that
 * never decrease and never pass the message's term. What needs this node's state to judge (a
 * second leader in a term, a change to a committed entry) is checked by the machine itself.
 *
 * Pure and total: any value in, a reason or null out; nothing throws.
 */

import { isCount, isValidKey, isValidOp, isU64, type OpLimits } from '../../store/op-rules.ts';
import type { Entry } from '../../store/types.ts';
import { isRefusalReason } from '../../protocol/refusals.ts';
import type { LogEntry, LogMessage } from './types.ts';

/** The largest term taken: far beyond any real count of elections, and + 1 is still exact. */
export const TERM_MAX = 2 ** 48;
/** Longest refusal detail a forward_refused may carry (it reaches a client as SERVER_ERROR). */
const REFUSAL_CHARS_MAX = 512;

/** Bounds of a valid message. */
export interface LogMessageLimits {
  /** Every node's id, this one's included: what an entry's origin may be. */
  nodes: ReadonlySet<string>;
  op: OpLimits;
  /** Most entries in an append. */
  appendEntriesMax: number;
  /** Most requests in a forward, ids in a forward_refused, committed forwards in a chunk. */
  requestsMax: number;
  /** Most replica entries in one transfer chunk. */
  chunkEntriesMax: number;
  /** Most chunks in one transfer. */
  chunkCountMax: number;
}

type Fields = Record<string, unknown>;

const isObject = (value: unknown): value is Fields => typeof value === 'object' && value !== null && !Array.isArray(value);
const isTerm = (value: unknown): value is number => isCount(value) && value <= TERM_MAX;
const isOptionalCount = (value: unknown): boolean => value === undefined || isCount(value);
const isBoolean = (value: unknown): value is boolean => typeof value === 'boolean';

function isBoundedArray(value: unknown, max: number): value is unknown[] {
  return Array.isArray(value) && value.length <= max;
}

/** Absent, or a printable one-line text (no control characters: it ends up in a client's reply line). */
function isRefusalDetail(value: unknown): value is string | undefined {
  if (value === undefined) return true;
  if (typeof value !== 'string' || value.length > REFUSAL_CHARS_MAX) return false;
  for (let index = 0; index < value.length; index += 1) {
    const code = value.charCodeAt(index);
    if (code < 0x20 || code === 0x7f) return false;
  }
  return true;
}

function isLogEntry(value: unknown, limits: LogMessageLimits): value is LogEntry {
  if (!isObject(value)) return false;
  return (
    isTerm(value.term) &&
    isCount(value.index) &&
    value.index > 0 &&
    isCount(value.nowMs) &&
    (value.op === null || isValidOp(value.op, limits.op)) &&
    typeof value.origin === 'string' &&
    limits.nodes.has(value.origin) &&
    isCount(value.incarnation) &&
    (value.requestId === null || isCount(value.requestId))
  );
}

/** A replica entry as a transfer carries it. */
function isReplicaEntry(value: unknown, limits: LogMessageLimits): boolean {
  if (!Array.isArray(value) || value.length !== 2 || !isValidKey(value[0], limits.op.keyBytesMax)) return false;
  const entry = value[1] as Partial<Entry> | null;
  if (!isObject(entry)) return false;
  return (
    Buffer.isBuffer(entry.value) &&
    entry.value.length <= limits.op.valueBytesMax &&
    isCount(entry.flags) &&
    entry.flags <= 0xffffffff &&
    isCount(entry.expiresAtMs) &&
    isU64(entry.cas) &&
    (entry.tombstone === undefined || isBoolean(entry.tombstone))
  );
}

/** Why an append's entries do not follow its prevIndex, or null. */
function appendEntriesProblem(message: Fields, limits: LogMessageLimits): string | null {
  const entries = message.entries;
  if (!isBoundedArray(entries, limits.appendEntriesMax)) return 'append: entries not a bounded list';
  let index = message.prevIndex as number;
  let term = message.prevTerm as number;
  for (const entry of entries) {
    if (!isLogEntry(entry, limits)) return 'append: bad entry';
    if (entry.index !== index + 1) return 'append: entries not contiguous';
    if (entry.term < term || entry.term > (message.term as number)) return 'append: entry terms out of order';
    index = entry.index;
    term = entry.term;
  }
  return null;
}

/** Absent, or a read-lease ask (`index` too: a grant) of counts. */
function isOptionalLease(value: unknown, kind: 'ask' | 'grant'): boolean {
  if (value === undefined) return true;
  if (!isObject(value) || !isCount(value.incarnation) || !isCount(value.askedMs)) return false;
  return kind === 'ask' || isCount(value.index);
}

function appendProblem(message: Fields, limits: LogMessageLimits): string | null {
  if (!isCount(message.prevIndex) || !isTerm(message.prevTerm) || (message.prevTerm as number) > (message.term as number)) {
    return 'append: bad prev';
  }
  if (!isCount(message.commitIndex) || !isCount(message.durableIndex) || !isCount(message.round) || !isCount(message.seq)) {
    return 'append: bad counters';
  }
  if (!isBoolean(message.quiet) || !isOptionalCount(message.replicaEpoch)) return 'append: bad fields';
  if (!isOptionalCount(message.sentMs) || !isOptionalLease(message.lease, 'grant')) return 'append: bad lease fields';
  if ((message.prevIndex as number) + (message.entries as unknown[] | undefined ?? []).length > Number.MAX_SAFE_INTEGER) {
    return 'append: index out of range';
  }
  return appendEntriesProblem(message, limits);
}

function appendReplyProblem(message: Fields): string | null {
  const counts = [message.matchIndex, message.hintIndex, message.round, message.seq, message.commitIndex];
  if (!isBoolean(message.success) || !counts.every(isCount)) return 'append_reply: bad fields';
  if (!isOptionalCount(message.replicaEpoch) || !isOptionalCount(message.lastIndex)) return 'append_reply: bad fields';
  if (!isOptionalCount(message.sentMs) || !isOptionalLease(message.leaseAsk, 'ask')) return 'append_reply: bad lease fields';
  return null;
}

function forwardProblem(message: Fields, limits: LogMessageLimits): string | null {
  const numbered = isCount(message.stream) && isCount(message.seq) && message.seq >= 1;
  if (!isCount(message.incarnation) || !numbered || !isOptionalCount(message.again)) return 'forward: bad fields';
  if (!isBoundedArray(message.requests, limits.requestsMax)) {
    return 'forward: bad fields';
  }
  for (const request of message.requests) {
    if (!isObject(request) || !isCount(request.requestId)) return 'forward: bad request';
    if (!isValidOp(request.op, limits.op) || request.op.kind === 'get') return 'forward: bad op';
  }
  return null;
}

function transferChunkProblem(message: Fields, limits: LogMessageLimits): string | null {
  const counts = [message.transferId, message.index, message.chunkNumber];
  const optionalCounts = [message.replicaEpoch, message.chunkCount];
  if (!counts.every(isCount) || !isTerm(message.indexTerm) || !optionalCounts.every(isOptionalCount)) {
    return 'transfer_chunk: bad fields';
  }
  // The count comes once the sender's read is done (absent before: more chunks follow).
  const chunkCount = (message.chunkCount as number | undefined) ?? limits.chunkCountMax;
  if (chunkCount < 1 || chunkCount > limits.chunkCountMax || (message.chunkNumber as number) >= chunkCount) {
    return 'transfer_chunk: bad chunk numbering';
  }
  // A start-over's state is copied from its index on: a replica as of an earlier index cannot descend from it.
  if (!isOptionalCount(message.startOverIndex) || ((message.startOverIndex as number | undefined) ?? 0) > (message.index as number)) {
    return 'transfer_chunk: bad start-over index';
  }
  // Read from the index on: its keys hold at least the state at the index.
  const fetchedThrough = message.fetchedThrough as number | undefined;
  const early = fetchedThrough !== undefined && message.chunkCount === undefined;
  if (!isOptionalCount(fetchedThrough) || (fetchedThrough ?? Infinity) < (message.index as number) || early) {
    return 'transfer_chunk: bad fetched-through index';
  }
  if (!isBoundedArray(message.entries, limits.chunkEntriesMax)) return 'transfer_chunk: entries not a bounded list';
  if (!message.entries.every((entry) => isReplicaEntry(entry, limits))) return 'transfer_chunk: bad replica entry';
  const forwards = message.committedForwards;
  if (forwards === undefined) return null;
  if (!isBoundedArray(forwards, limits.requestsMax)) return 'transfer_chunk: bad committed forwards';
  const isForward = (value: unknown): boolean =>
    isObject(value) && isCount(value.incarnation) && isCount(value.requestId) && isCount(value.index);
  return forwards.every(isForward) ? null : 'transfer_chunk: bad committed forward';
}

/** Why `value` is not a LogMessage within `limits`, or null when it is one. */
export function logMessageProblem(value: unknown, limits: LogMessageLimits): string | null {
  if (!isObject(value)) return 'not an object';
  if (!isTerm(value.term)) return `${typeof value.kind === 'string' ? value.kind.slice(0, 32) : 'message'}: bad term`;
  switch (value.kind) {
    case 'pre_vote':
    case 'vote':
      return isCount(value.lastIndex) && isTerm(value.lastTerm) ? null : `${value.kind}: bad fields`;
    case 'pre_vote_reply':
    case 'vote_reply':
      return isBoolean(value.granted) ? null : `${value.kind}: bad fields`;
    case 'append':
      return appendProblem(value, limits);
    case 'append_reply':
      return appendReplyProblem(value);
    case 'ping':
    case 'pong':
      return null;
    case 'leave':
      return value.next === undefined || (typeof value.next === 'string' && limits.nodes.has(value.next)) ? null : 'leave: bad next';
    case 'held':
      return isCount(value.matchIndex) ? null : 'held: bad fields';
    case 'forward':
      return forwardProblem(value, limits);
    case 'forward_gap':
      return isCount(value.incarnation) && isCount(value.stream) && isCount(value.expected) && value.expected >= 1 ? null : 'forward_gap: bad fields';
    case 'forward_refused':
      if (!isCount(value.incarnation) || !isRefusalReason(value.reason) || !isRefusalDetail(value.detail)) return 'forward_refused: bad fields';
      return isBoundedArray(value.requestIds, limits.requestsMax) && value.requestIds.every(isCount)
        ? null
        : 'forward_refused: bad request ids';
    case 'read_index':
      return isCount(value.incarnation) && isCount(value.batchId) ? null : 'read_index: bad fields';
    case 'read_index_reply':
      return isCount(value.incarnation) && isCount(value.batchId) && (value.readIndex === null || isCount(value.readIndex))
        ? null
        : 'read_index_reply: bad fields';
    case 'transfer_request':
      return isCount(value.minIndex) && isBoolean(value.emptied) && isOptionalCount(value.replicaEpoch)
        ? null
        : 'transfer_request: bad fields';
    case 'transfer_chunk':
      return transferChunkProblem(value, limits);
    case 'transfer_ack':
      return isCount(value.transferId) && isCount(value.received) && (value.received as number) <= limits.chunkCountMax
        ? null
        : 'transfer_ack: bad fields';
    case 'recover':
      return isCount(value.nonce) ? null : 'recover: bad fields';
    case 'recover_reply':
      return isCount(value.nonce) && isBoolean(value.recovering) && isBoolean(value.leads) && isCount(value.lastIndex)
        && isTerm(value.lastTerm)
        ? null
        : 'recover_reply: bad fields';
    default:
      return 'unknown message kind';
  }
}

/** `value` as a LogMessage, when `logMessageProblem` finds none. */
export function isLogMessage(value: unknown, limits: LogMessageLimits): value is LogMessage {
  return logMessageProblem(value, limits) === null;
}

/** True when `value` is a log entry a record may hold (the same rules as in a message). */
export function isValidLogEntry(value: unknown, limits: LogMessageLimits): value is LogEntry {
  return isLogEntry(value, limits);
}
