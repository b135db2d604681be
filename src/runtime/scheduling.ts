/**
 * Asks Linux to run this process as SCHED_BATCH (config.ini's `cpu_scheduling = batch`).
 *
 * Intuition: a controller sleeps between events, and every event wakes it — a client's request,
 * memcached's reply, a peer's message. Under the default policy a woken process may preempt the
 * one running on its core at once; when the cores are busy (the controllers, their memcached
 * servers and the clients sharing a few cores), each request then costs several context
 * switches, and each wake-up finds one event to handle. A SCHED_BATCH process never preempts on
 * wake-up: it runs when the running process blocks or its slice ends, finds several events
 * ready, and handles them in one turn of the event loop. Its share of the CPU is unchanged (the
 * same fair scheduler, the same weight); only the wake-up preemption goes. On an idle core it
 * runs at once, as before. The README's benchmark section has what it bought.
 *
 * Node has no binding for sched_setscheduler, so this runs util-linux's `chrt` (essential on
 * Debian and Ubuntu) once at start-up, for every thread of the process; threads started later
 * inherit the policy. Where that is not possible (another system, no chrt) the controller runs
 * as before and says why.
 */

import { spawnSync } from 'node:child_process';

/** Switches every thread of this process to SCHED_BATCH; null when done, else why not. */
export function scheduleAsBatch(): string | null {
  if (process.platform !== 'linux') return `not on Linux (${process.platform})`;
  const result = spawnSync('chrt', ['--batch', '--all-tasks', '--pid', '0', String(process.pid)], { encoding: 'utf8', timeout: 5000 });
  if (result.error !== undefined) return `chrt could not run: ${result.error.message}`;
  if (result.status !== 0) return `chrt failed: ${(result.stderr || `exit ${result.status}`).trim()}`;
  return null;
}
