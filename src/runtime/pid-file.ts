/**
 * A running controller's PID file, `<data_dir>/<node>/controller.pid`: "PID START", START being
 * field 22 of /proc/PID/stat (the process's start time in clock ticks after boot), as
 * scripts/pid-record.sh records the processes startup.sh starts. Written once the controller
 * listens, removed when it stops. ./stop.sh stops the controller it names too, and startup.sh counts
 * it as running, so a controller restarted by hand (as startup.sh's banner shows how) stops with
 * the rest of the cluster instead of living on, holding the cluster's ports.
 *
 * Where /proc is missing (not Linux) no file is written: the scripts need /proc anyway.
 */

import { readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { makePrivateDirectory, replacePrivateTextFile } from './private-files.ts';

export const PID_FILE_NAME = 'controller.pid';

/** This process's start time, field 22 of /proc/self/stat; null where there is no /proc. */
export function processStartTime(): number | null {
  let stat: string;
  try {
    stat = readFileSync('/proc/self/stat', 'utf8');
  } catch {
    return null;
  }
  // Past the command name, which may hold spaces and parentheses; fields[0] is field 3.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const start = Number(fields[19]);
  return Number.isSafeInteger(start) ? start : null;
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
