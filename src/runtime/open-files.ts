/**
 * How many client connections a controller may hold without running out of files. Past the
 * process's open-files limit every accept and every open fails (EMFILE), the write-ahead file's
 * compaction among them, which stops the controller: clients holding connections could stop it.
 * So, as memcached sizes `-c` against its limit, the client port takes at most what the limit
 * leaves after the files open at start and a reserve for what the controller opens later.
 *
 * Node.js raises its soft limit to the hard one as it starts; /proc/self/limits tells the result.
 * Where /proc does not say (not Linux), the configured bound stands.
 */

import { readdirSync, readFileSync } from 'node:fs';

/**
 * Files the controller may open beyond those open at start: the HTTP port's connections (64),
 * peers' handshakes (16) and reconnections, the compaction's new file and folder, memcached's
 * key-listing connection, state files, with room to spare.
 */
export const OPEN_FILES_RESERVE = 128;

/** What the client port may take: the configured bound, or less where the limit leaves less. */
export interface ClientConnectionsRoom {
  max: number;
  /** The open-files limit read, or null where it is not known. */
  limit: number | null;
  /** Files open when it was worked out. */
  open: number | null;
}

/** `configured` bounded by what `limit` leaves after `open` files and the reserve (at least one). */
export function clientConnectionsRoom(configured: number, limit: number | null, open: number | null): ClientConnectionsRoom {
  if (limit === null || open === null) return { max: configured, limit, open };
  return { max: Math.max(1, Math.min(configured, limit - open - OPEN_FILES_RESERVE)), limit, open };
}

/** This process's limit on open files (RLIMIT_NOFILE's soft limit), or null if unknown or unlimited. */
export function openFilesLimit(): number | null {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8').split('\n').find((each) => each.startsWith('Max open files'));
    const soft = line?.slice('Max open files'.length).trim().split(/\s+/)[0];
    return soft === undefined || !/^\d+$/.test(soft) ? null : Number(soft);
  } catch {
    return null;
  }
}

/** How many files this process holds open now, or null if unknown. */
export function openFilesNow(): number | null {
  try {
    return readdirSync('/proc/self/fd').length;
  } catch {
    return null;
  }
}
