/**
 * The process plumbing every benchmark target shares: find a binary, spawn it with its output in
 * a log file, name its PID for the CPU report, and stop it.
 *
 * Invariants: a process is stopped only through the ChildProcess this benchmark spawned (its own
 * PID: SIGTERM, then SIGKILL after a grace period; a memcached, SIGKILL at once), and stopping
 * waits until it has exited.
 */

import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import path from 'node:path';
import { ownChild } from '../src/jepsen/owned-children.ts';
import { logOutputTo, stopChild as stopWithGrace } from '../src/jepsen/processes.ts';

/** One process of a target, named by what it is there, so its CPU can be reported on its own. */
export interface TargetProcess {
  /** "memcached", "nutcracker", "pipe 2", "memcached 2", "n1", "memcached n1", "etcd n1". */
  label: string;
  pid: number;
}

const STOP_GRACE_MS = 3000;

/** Stops `child` (SIGTERM, SIGKILL after a grace period) and resolves once it has exited. */
export function stopChild(child: ChildProcess): Promise<void> {
  return stopWithGrace(child, 'SIGTERM', STOP_GRACE_MS);
}

/** Spawns `command` with its stdout and stderr appended to `logFile`; it is killed if the benchmark exits first. */
export function spawnLogged(command: string, args: string[], logFile: string): ChildProcess {
  const child = ownChild(spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] }));
  logOutputTo(child, logFile);
  return child;
}

/**
 * Stops (SIGSTOP) or resumes (SIGCONT) every process of a target, by the PIDs this benchmark
 * started: a target not being measured is frozen so that its idle timers and heartbeats take no
 * CPU from the one that is. A process already gone is skipped.
 */
export function signalProcesses(processes: readonly TargetProcess[], signal: 'SIGSTOP' | 'SIGCONT'): void {
  for (const { pid } of processes) {
    try {
      process.kill(pid, signal);
    } catch {
      // gone: its run reports it
    }
  }
}

/** The processes that are running, with their labels (a process not started has no PID). */
export function labelled(entries: ReadonlyArray<readonly [string, ChildProcess | null | undefined]>): TargetProcess[] {
  return entries.flatMap(([label, child]) => (child?.pid === undefined ? [] : [{ label, pid: child.pid }]));
}

/** The executable `name` on PATH or in the sbin folders, or null if it is not installed. */
export function findBinary(name: string): string | null {
  const folders = [...(process.env.PATH ?? '').split(path.delimiter), '/usr/sbin', '/usr/local/sbin', '/sbin'];
  for (const folder of folders) {
    if (folder === '') continue;
    const candidate = path.join(folder, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return null;
}
