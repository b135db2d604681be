/** What Linux's /proc says of a process's threads, for tests. */

import { readdirSync, readFileSync } from 'node:fs';
import { statFields } from '../../bench/targets.ts';

export const SCHED_OTHER = 0;
export const SCHED_BATCH = 3;

/** The scheduling policy (stat field 41) of every thread of `pid` ('self' for this process). */
export function threadPolicies(pid: number | 'self'): number[] {
  return readdirSync(`/proc/${pid}/task`).map((thread) => Number(statFields(readFileSync(`/proc/${pid}/task/${thread}/stat`, 'latin1'))?.[41 - 3]));
}
