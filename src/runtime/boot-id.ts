/**
 * Which boot of the machine this process runs in. With `wal_sync = write` a record written before
 * this boot may have been lost with the operating system's cache, so the replicated log trusts its
 * records only if they were known complete in this very boot (see consistency/log/recovery.ts).
 *
 * Linux names each boot in /proc/sys/kernel/random/boot_id. MCKV_BOOT_ID stands in for it (the
 * fault runner and the tests use it to present a restart as a reboot). Where neither is readable,
 * every start counts as a new boot: the node then always recovers from its peers, which is safe.
 */

import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';

const BOOT_ID_FILE = '/proc/sys/kernel/random/boot_id';
/** What a boot id may be: a short run of printable characters (Linux gives a UUID). */
const BOOT_ID_PATTERN = /^[\x21-\x7e]{1,64}$/;

/** This boot's id; throws for an MCKV_BOOT_ID that is not one. */
export function machineBootId(env: NodeJS.ProcessEnv = process.env): string {
  const given = env.MCKV_BOOT_ID;
  if (given !== undefined) {
    if (!BOOT_ID_PATTERN.test(given)) throw new Error('MCKV_BOOT_ID must be 1 to 64 printable characters without spaces');
    return given;
  }
  try {
    const id = readFileSync(BOOT_ID_FILE, 'utf8').trim();
    if (BOOT_ID_PATTERN.test(id)) return id;
  } catch {
    // Not Linux, or /proc is not mounted: fall through.
  }
  return `unknown-${randomUUID()}`;
}
