/**
 * cpu_scheduling = batch: scheduleAsBatch switches every thread of its process to SCHED_BATCH,
 * and says why when it cannot (here: no chrt on the PATH), leaving the process as it was.
 */

import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '../src/jepsen/cluster.ts';
import { SCHED_BATCH, SCHED_OTHER } from './support/proc.ts';

/** Runs scheduleAsBatch in a fresh Node process; returns its answer and its threads' policies after. */
function runInChild(env: NodeJS.ProcessEnv): { answer: string | null; policies: number[] } {
  const script = `
    const { scheduleAsBatch } = await import('./src/runtime/scheduling.ts');
    const { threadPolicies } = await import('./test_cases/support/proc.ts');
    const answer = scheduleAsBatch();
    const policies = threadPolicies('self');
    process.stdout.write(JSON.stringify({ answer, policies }));
  `;
  const child = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: repoRoot, env, encoding: 'utf8', timeout: 30_000 });
  expect(child.status, child.stderr).toBe(0);
  return JSON.parse(child.stdout) as { answer: string | null; policies: number[] };
}

describe.runIf(process.platform === 'linux')('cpu_scheduling = batch', () => {
  it('switches every thread of the process to SCHED_BATCH', () => {
    const { answer, policies } = runInChild(process.env);
    expect(answer).toBeNull();
    expect(policies.length).toBeGreaterThan(1);
    expect(new Set(policies)).toEqual(new Set([SCHED_BATCH]));
  });

  it('says why when chrt cannot run, and leaves the process as it was', () => {
    const { answer, policies } = runInChild({ ...process.env, PATH: '/nonexistent' });
    expect(answer).toMatch(/^chrt could not run: .*ENOENT/);
    expect(new Set(policies)).toEqual(new Set([SCHED_OTHER]));
  });
});
