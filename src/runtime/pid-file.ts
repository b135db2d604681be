/**
 * A running controller's PID file, `<data_dir>/<node>/controller.pid`: "PID START", START being
 * field 22 of /proc/PID/stat (the process's start time in clock ticks after boot), as
 * scripts/pid-record.sh records the processes startup.sh starts. Written once the controller
 * listens, removed when it stops. ./stop.sh stops the controller it names too, and startup.sh counts
 * it as running, so a controller restarted by hand (as startup.sh's banner shows how) stops with
 * the rest of the cluster instead of living on, holding the cluster's ports. A controller does not
 * start on a node folder whose PID file names another live controller: two writing one
 * write-ahead file would corrupt it.
 *
 * Where /proc is missing (not Linux) no file is written: the scripts need /proc anyway.
 */

import { readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { makePrivateDirectory, replacePrivateTextFile } from './private-files.ts';

export const PID_FILE_NAME = 'controller.pid';

/** This process's start time, field 22 of /proc/self/stat; null where there is no /proc. */
export function processStartTime(): number | null {
  return startTimeOf(process.pid);
}

/**
 * The start time of process `pid` (field 22 of its /proc stat); null if there is no such process,
 * or only its zombie (killed, not yet reaped by its parent).
 */
export function startTimeOf(pid: number): number | null {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // Past the command name, which may hold spaces and parentheses: field 3 (the state) comes
  // first, field 22 is the 20th.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  if (fields[0] === 'Z' || fields[0] === 'X') return null;
  const start = Number(fields[19]);
  return Number.isSafeInteger(start) ? start : null;
}

/**
 * The PID of another live process that `nodeDir`'s PID file names, with the start time it
 * recorded (a reused PID has another); null when there is none. The file is input from disk: one
 * that does not parse names nobody.
 */
export function pidFileOwner(nodeDir: string): number | null {
  let text: string;
  try {
    text = readFileSync(path.join(nodeDir, PID_FILE_NAME), 'utf8');
  } catch {
    return null;
  }
  const match = /^([1-9][0-9]{0,9}) ([0-9]{1,20})\n?$/.exec(text);
  if (match === null) return null;
  const pid = Number(match[1]);
  if (pid === process.pid || startTimeOf(pid) !== Number(match[2])) return null;
  return pid;
}

/** Writes this process's PID file in `nodeDir`; returns what `removePidFile` needs, or null if none was written. */
export function writePidFile(nodeDir: string): { file: string; text: string } | null {
  const start = processStartTime();
  if (start === null) return null;
  const file = path.join(nodeDir, PID_FILE_NAME);
  const text = `${process.pid} ${start}\n`;
  makePrivateDirectory(nodeDir, { tighten: false });
  replacePrivateTextFile(file, text);
  return { file, text };
}

/** Removes the PID file, unless another process has written its own there since. */
export function removePidFile(written: { file: string; text: string } | null): void {
  if (written === null) return;
  try {
    if (readFileSync(written.file, 'utf8') === written.text) rmSync(written.file, { force: true });
  } catch {
    // Gone already: nothing to remove.
  }
}
