/**
 * The Node.js flags a controller runs with, and whether this process has them.
 *
 * `--no-memory-reducer`: V8's memory reducer shrinks the heap once the process looks idle. A
 * controller that was stopped a while (a stalled machine, a paused VM, a frozen benchmark target)
 * looks idle when it resumes: the reducer shrank its old generation to its live size, after which
 * the log's entries (alive about a second, so promoted) filled it every 0.4 s: a major collection
 * that often, about a fifth more CPU per ordered write and twice the p99, for minutes
 * (bench/PERFORMANCE.md, "Scheduling and the runtime"). A server holds its heap instead. V8 reads
 * the flag only as the heap is made, so it must be on node's command line: startup.sh, `npm start`,
 * the `mckv` bin's shebang and the test and benchmark clusters pass it.
 */

/** Node's flags for a controller process, before the script. */
export const CONTROLLER_NODE_FLAGS: readonly string[] = ['--no-memory-reducer'];

/** The controller flags this process was started without (empty when it has them all). */
export function missingControllerFlags(execArgv: readonly string[] = process.execArgv): string[] {
  return CONTROLLER_NODE_FLAGS.filter((flag) => !execArgv.includes(flag));
}
