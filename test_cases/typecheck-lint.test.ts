/**
 * The code base as the project's standards want it: the type checker clean on the sources and on
 * the tests (`npm run typecheck`), the linter clean everywhere (`npm run lint`). vitest strips
 * types without checking them, so without this a test that the checker refuses still passes.
 */

import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const repoRoot = path.resolve(import.meta.dirname, '..');

/** Runs a package's bin with node; its exit code and everything it printed. */
function run(bin: string, args: string[]): { status: number | null; output: string } {
  const result = spawnSync(process.execPath, [path.join(repoRoot, 'node_modules', ...bin.split('/')), ...args], { cwd: repoRoot, encoding: 'utf8', timeout: 240_000 });
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

describe('the code base', () => {
  it('type-checks, sources and tests', () => {
    for (const project of ['tsconfig.json', path.join('test_cases', 'tsconfig.json')]) {
      const { status, output } = run('typescript/bin/tsc', ['--noEmit', '-p', project]);
      expect(output, project).toBe('');
      expect(status, project).toBe(0);
    }
  }, 300_000);

  it('lints clean', () => {
    const { status, output } = run('eslint/bin/eslint.js', ['.']);
    expect(output).toBe('');
    expect(status).toBe(0);
  }, 300_000);
});
