/**
 * Every child process the harness starts (controllers, memcached, the benchmark's pipes and
 * servers), and the last resort that ends them when the harness ends first: a script or a
 * benchmark that threw, a second Ctrl-C, a test run interrupted. Without it they would run on,
 * holding ports and memory, with nobody left to stop them.
 *
 * Invariants: a child is only ever signalled through the handle this process got when it spawned
 * it, never found by name; a signal another handler of this process listens for is left to that
 * handler (the benchmark and the fault runner stop gracefully on a first Ctrl-C).
 */

import type { ChildProcess } from 'node:child_process';

/** Children started here and not seen to exit: what the harness's end kills. */
const ownedChildren = new Set<ChildProcess>();
/** What else goes when the harness ends, after the children (see atHarnessEnd). */
const cleanups = new Set<() => void>();
let hooksInstalled = false;

/** Signals that end a process by default, and that a terminal or a test runner sends. */
const ENDING_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/**
 * Takes `child` as this harness's own: should this process exit while it runs, or be ended by
 * SIGINT, SIGTERM or SIGHUP that nothing else here handles, `child` is killed first. Returns `child`.
 */
export function ownChild(child: ChildProcess): ChildProcess {
  installHooks();
  ownedChildren.add(child);
  child.once('exit', () => ownedChildren.delete(child));
  return child;
}

/**
 * Runs `cleanup` (synchronous, best effort) when the harness ends as ownChild says, after its
 * children are killed. Returns what takes it back, once it is no longer needed.
 */
export function atHarnessEnd(cleanup: () => void): () => void {
  installHooks();
  cleanups.add(cleanup);
  return () => cleanups.delete(cleanup);
}

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', endHarness);
  for (const signal of ENDING_SIGNALS) process.on(signal, onEndingSignal);
}

function endHarness(): void {
  killStartedProcesses();
  for (const cleanup of cleanups) {
    try {
      cleanup();
    } catch {
      // best effort: the process is ending
    }
  }
  cleanups.clear();
}

/** SIGKILLs every owned child still running, through its handle. Synchronous, as an 'exit' handler must be. */
function killStartedProcesses(): void {
  for (const child of ownedChildren) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
  ownedChildren.clear();
}

/**
 * A signal that would have ended this process: the children go, then the signal is raised again
 * with its default action, so the process ends as it would have (exit status included). Unless
 * another handler listens for it: that one decides, and an exit it makes runs the 'exit' hook.
 */
function onEndingSignal(signal: NodeJS.Signals): void {
  if (process.listenerCount(signal) > 1) return;
  endHarness();
  for (const other of ENDING_SIGNALS) process.removeListener(other, onEndingSignal);
  process.kill(process.pid, signal);
}
