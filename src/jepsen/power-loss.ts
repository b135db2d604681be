/**
 * A power loss, as the fault runner's `power` fault makes one: with `wal_sync = write` the
 * operating system had not written every record of the controller's write-ahead file when the
 * machine went down, so the file ends at some record after the last one that was fsynced (the
 * header, and a compaction's snapshot, are always fsynced). This cuts it there.
 */

import { truncateSync } from 'node:fs';
import { WriteAheadFile, type WalOwner } from '../wal.ts';

/**
 * Cuts `file` after its fsynced records plus `keptFraction` (0 to 1) of the records written after
 * them; returns how many records were cut.
 */
export function loseUnsyncedRecords(file: string, owner: WalOwner, keptFraction: number): number {
  const { ends, records } = WriteAheadFile.recordEnds(file, owner);
  const first = records[0] as { kind?: unknown } | undefined;
  const synced = first?.kind === 'snapshot' ? 1 : 0;
  const unsynced = records.length - synced;
  const kept = synced + Math.min(unsynced, Math.floor(keptFraction * (unsynced + 1)));
  const end = ends[kept];
  if (end === undefined) return 0;
  truncateSync(file, end);
  return records.length - kept;
}
