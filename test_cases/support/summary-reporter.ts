/**
 * Prints one plain closing line after vitest's own summary: "Tests: N passed, N failed, N skipped",
 * the form CI reads to know how many tests ran.
 */

import type { Reporter, RunnerTestFile } from 'vitest/node';

type Task = RunnerTestFile['tasks'][number];

function count(tasks: readonly Task[], totals: { passed: number; failed: number; skipped: number }): void {
  for (const task of tasks) {
    if (task.type === 'suite') {
      count(task.tasks, totals);
      continue;
    }
    const state = task.result?.state;
    if (state === 'pass') totals.passed += 1;
    else if (state === 'fail') totals.failed += 1;
    else totals.skipped += 1;
  }
}

export default class SummaryReporter implements Reporter {
  onFinished(files: RunnerTestFile[] = [], errors: unknown[] = []): void {
    const totals = { passed: 0, failed: 0, skipped: 0 };
    count(files, totals);
    // A file that failed to load, or an unhandled error, fails the run without failing a test.
    const fileFailures = files.filter((file) => file.result?.state === 'fail' && file.tasks.length === 0).length;
    totals.failed += fileFailures + errors.length;
    process.stdout.write(`\nTests: ${totals.passed} passed, ${totals.failed} failed, ${totals.skipped} skipped\n`);
  }
}
