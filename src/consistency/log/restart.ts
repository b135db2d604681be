/**
 * A restart's first half: the durable state (term, vote, incarnation, the leader's replica epoch,
 * the replica's trust, the snapshot and the entries) rebuilt from the records the node persisted,
 * in order. Each record is checked first (./restore.ts); what cannot be used is skipped and noted,
 * never thrown, so a bad record cannot make every restart crash. Commit and applied start at the
 * snapshot. (The second half, what to do with the kept replica, is ./replica.ts's.)
 */

import assert from 'node:assert';
import type { LogCore } from './core.ts';
import type { EntryLog } from './entry-log.ts';
import { restoredRecord } from './restore.ts';
import type { HardState, LogEntry } from './types.ts';

/**
 * Rebuilds the durable state from the records, skipping what it cannot use (see
 * ./restore.ts): a record that fails its schema, entries that do not continue the log.
 */
export function restoreDurableState(core: LogCore, records: readonly unknown[]): void {
  const limits = { nodes: core.messageLimits.nodes, op: core.messageLimits.op };
  let skipped = 0;
  let opsDropped = 0;
  let firstProblem: string | null = null;
  for (const raw of records) {
    const restored = restoredRecord(raw, limits);
    if ('problem' in restored) {
      skipped += 1;
      firstProblem ??= restored.problem;
      continue;
    }
    opsDropped += restored.opsDropped;
    const record = restored.record;
    switch (record.kind) {
      case 'hard':
        restoreHardState(core, record);
        break;
      case 'entries':
        for (const entry of record.entries) {
          if (!restoreEntry(core.log, entry)) skipped += 1;
        }
        break;
      case 'truncate':
        if (record.fromIndex <= core.log.snapshotIndex) skipped += 1;
        else if (record.fromIndex <= core.log.lastIndex()) core.log.truncateFrom(record.fromIndex);
        break;
      case 'replica':
        core.replicaTrusted = record.trusted;
        core.replicaEmptiedPersisted = record.emptied === true;
        break;
      case 'snapshot':
        core.replicaTrusted = record.replicaTrusted === true;
        core.replicaEmptiedPersisted = record.replicaEmptied === true;
        core.replicaStartOverIndex = Math.min(record.replicaStartOverIndex ?? 0, record.snapshotIndex);
        restoreHardState(core, record);
        core.log.resetTo(record.snapshotIndex, record.snapshotTerm);
        for (const entry of record.entries) {
          if (!restoreEntry(core.log, entry)) skipped += 1;
        }
        break;
      default: {
        const never: never = record;
        assert.fail(`unknown persisted record ${JSON.stringify(never)}`);
      }
    }
  }
  if (skipped > 0 || opsDropped > 0) {
    core.note('warn', 'persisted records held what this node cannot use', { skipped, firstProblem, opsMadeNoOps: opsDropped });
  }
  for (const entry of core.log.entries) core.rememberProposal(entry);
  core.commitIndex = core.log.snapshotIndex;
  core.appliedIndex = core.log.snapshotIndex;
}

/** The hard state a `hard` or `snapshot` record carries (absent optional fields: their defaults). */
function restoreHardState(core: LogCore, hard: HardState): void {
  core.term = hard.term;
  core.votedFor = hard.votedFor;
  core.incarnation = hard.incarnation;
  core.leaderReplicaEpoch = hard.leaderReplicaEpoch ?? 0;
  core.recordedBootId = hard.bootId ?? null;
  core.recordedRecovering = hard.recovering === true;
}

/** Puts a persisted entry in the log where it continues it (maybe cutting a suffix); false: skipped. */
function restoreEntry(log: EntryLog, entry: LogEntry): boolean {
  if (entry.index <= log.snapshotIndex || entry.index > log.lastIndex() + 1) return false;
  const termBefore = log.termAt(entry.index - 1);
  if (termBefore === null || entry.term < termBefore) return false;
  if (entry.index <= log.lastIndex()) log.truncateFrom(entry.index);
  log.append([entry]);
  return true;
}
