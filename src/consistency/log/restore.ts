/**
 * The records a node persisted, checked as they are handed back at restart.
 *
 * A write-ahead file is input from outside the process: its checksums catch torn and flipped
 * bytes, but not a record an older or broken release wrote. Whatever this machine cannot use must
 * not stop it from starting, or every restart would crash the same way. So a record that fails its
 * schema is skipped (the caller notes it), and an entry whose op breaks the op rules keeps its
 * place in the log as a no-op: the log's indexes and terms stay what the peers agreed on, and no
 * node applies an op it cannot read. Value sizes are not judged here: a limit lowered since the
 * record was written must not turn committed writes into no-ops on this node alone.
 *
 * Pure and total: any value in, a record or a reason out; nothing throws.
 */

import { isCount, isValidOp, type OpLimits } from '../../store/op-rules.ts';
import { TERM_MAX } from './validate.ts';
import type { LogEntry, LogRecord } from './types.ts';

type Fields = Record<string, unknown>;

const isObject = (value: unknown): value is Fields => typeof value === 'object' && value !== null && !Array.isArray(value);
const isTerm = (value: unknown): value is number => isCount(value) && value <= TERM_MAX;
const isOptionalCount = (value: unknown): boolean => value === undefined || isCount(value);
const isOptionalBoolean = (value: unknown): boolean => value === undefined || typeof value === 'boolean';
/** A boot id as Linux names one (a UUID), or any short printable name a test gives. */
const isOptionalBootId = (value: unknown): boolean => value === undefined || (typeof value === 'string' && /^[\x21-\x7e]{1,64}$/.test(value));

/** What a persisted record is judged against. */
export interface RecordLimits {
  /** Every node's id: what `votedFor` and an entry's origin may be. */
  nodes: ReadonlySet<string>;
  op: OpLimits;
}

/** The entry with a readable op, or with a no-op in its place; null when the entry itself is junk. */
function restoredEntry(value: unknown, limits: RecordLimits): { entry: LogEntry; opDropped: boolean } | null {
  if (!isObject(value)) return null;
  const fieldsValid =
    isTerm(value.term) &&
    isCount(value.index) &&
    value.index > 0 &&
    isCount(value.nowMs) &&
    typeof value.origin === 'string' &&
    limits.nodes.has(value.origin) &&
    isCount(value.incarnation) &&
    (value.requestId === null || isCount(value.requestId));
  if (!fieldsValid) return null;
  const entry = value as unknown as LogEntry;
  const lenient = { ...limits.op, valueBytesMax: Number.POSITIVE_INFINITY };
  if (entry.op === null || isValidOp(entry.op, lenient)) return { entry, opDropped: false };
  return { entry: { ...entry, op: null }, opDropped: true };
}

function restoredEntries(value: unknown, limits: RecordLimits): { entries: LogEntry[]; opsDropped: number } | null {
  if (!Array.isArray(value)) return null;
  const entries: LogEntry[] = [];
  let opsDropped = 0;
  for (const item of value) {
    const restored = restoredEntry(item, limits);
    if (restored === null) return null;
    entries.push(restored.entry);
    if (restored.opDropped) opsDropped += 1;
  }
  return { entries, opsDropped };
}

const isVotedFor = (value: unknown, limits: RecordLimits): boolean =>
  value === null || (typeof value === 'string' && limits.nodes.has(value));

/** The hard state's fields, which a `hard` and a `snapshot` record both carry. */
const isHardState = (raw: Fields, limits: RecordLimits): boolean =>
  isTerm(raw.term) && isVotedFor(raw.votedFor, limits) && isCount(raw.incarnation) && isOptionalCount(raw.leaderReplicaEpoch)
  && isOptionalBootId(raw.bootId) && isOptionalBoolean(raw.recovering);

/**
 * The record as this machine may use it (entries with unreadable ops made no-ops, counted in
 * `opsDropped`), or the reason it cannot use it at all.
 */
export function restoredRecord(raw: unknown, limits: RecordLimits): { record: LogRecord; opsDropped: number } | { problem: string } {
  if (!isObject(raw)) return { problem: 'record not an object' };
  switch (raw.kind) {
    case 'hard':
      return isHardState(raw, limits) ? { record: raw as unknown as LogRecord, opsDropped: 0 } : { problem: 'hard: bad fields' };
    case 'entries': {
      const restored = restoredEntries(raw.entries, limits);
      if (restored === null) return { problem: 'entries: bad entry' };
      return { record: { kind: 'entries', entries: restored.entries }, opsDropped: restored.opsDropped };
    }
    case 'truncate':
      return isCount(raw.fromIndex) && raw.fromIndex > 0
        ? { record: raw as unknown as LogRecord, opsDropped: 0 }
        : { problem: 'truncate: bad index' };
    case 'replica':
      return typeof raw.trusted === 'boolean' && isOptionalBoolean(raw.emptied)
        ? { record: raw as unknown as LogRecord, opsDropped: 0 }
        : { problem: 'replica: bad fields' };
    case 'snapshot': {
      const hardValid = isHardState(raw, limits);
      const snapshotValid = isCount(raw.snapshotIndex) && isTerm(raw.snapshotTerm)
        && isOptionalBoolean(raw.replicaTrusted) && isOptionalBoolean(raw.replicaEmptied) && isOptionalCount(raw.replicaStartOverIndex);
      if (!hardValid || !snapshotValid) return { problem: 'snapshot: bad fields' };
      const restored = restoredEntries(raw.entries, limits);
      if (restored === null) return { problem: 'snapshot: bad entry' };
      return { record: { ...(raw as unknown as Extract<LogRecord, { kind: 'snapshot' }>), entries: restored.entries }, opsDropped: restored.opsDropped };
    }
    default:
      return { problem: 'unknown record kind' };
  }
}
