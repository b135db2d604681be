/**
 * Prints one plain closing line after vitest's own summary: "Tests: N passed, N failed, N skipped",
 * the form CI reads to know how many tests ran. Failed tests are named just above it, one per line,
 * so that the last lines of a long log say which ones failed (a rare failure is otherwise lost
 * with the scrollback).
 */

import type { Reporter, RunnerTestFile } from 'vitest/node';

type Task = RunnerTestFile['tasks'][number];

interface Totals {
  passed: number;
  failed: number;
  skipped: number;
  /** "file > suite > test" of each failed test. */
  failedNames: string[];
}

function count(tasks: readonly Task[], totals: Totals, path: string): void {
  for (const task of tasks) {
    const name = `${path} > ${task.name}`;
    if (task.type === 'suite') {
      count(task.tasks, totals, name);
      continue;
    }
    const state = task.result?.state;
    if (state === 'pass') totals.passed += 1;
    else if (state === 'fail') {
      totals.failed += 1;
      totals.failedNames.push(name);
    } else totals.skipped += 1;
  }
}

export default class SummaryReporter implements Reporter {
  onFinished(files: RunnerTestFile[] = [], errors: unknown[] = []): void {
    const totals: Totals = { passed: 0, failed: 0, skipped: 0, failedNames: [] };
    for (const file of files) count(file.tasks, totals, file.name);
    // A file that failed to load, or an unhandled error, fails the run without failing a test.
    const fileFailures = files.filter((file) => file.result?.state === 'fail' && file.tasks.length === 0);
    for (const file of fileFailures) totals.failedNames.push(`${file.name} (did not load)`);
    totals.failed += fileFailures.length + errors.length;
    if (errors.length > 0) totals.failedNames.push(`${errors.length} unhandled error(s)`);
    const named = totals.failedNames.map((name) => `FAILED ${name}\n`).join('');
    process.stdout.write(`\n${named}Tests: ${totals.passed} passed, ${totals.failed} failed, ${totals.skipped} skipped\n`);
  }
}
