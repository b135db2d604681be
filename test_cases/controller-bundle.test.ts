/**
 * The controller bundle the fault runner, the bench and the tests start controllers from: built
 * from the sources under node_modules/.cache/mckv, named by its content (the same sources give
 * the same file), runnable as the controller's entry point, and bundles no run has used for a day
 * are removed when another is built.
 */

import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildControllerBundle, controllerEntryArgs, removeUnusedBundles } from '../src/jepsen/controller-bundle.ts';
import { repoRoot } from '../src/jepsen/cluster.ts';
import { CONTROLLER_NODE_FLAGS } from '../src/runtime/node-flags.ts';

const scratch = mkdtempSync(path.join(os.tmpdir(), 'mckv-bundle-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe('the controller bundle', () => {
  it('is named by its content and runs as the controller entry point', () => {
    const first = buildControllerBundle(repoRoot);
    expect(path.relative(repoRoot, first)).toMatch(/^node_modules\/\.cache\/mckv\/controller-[0-9a-f]{16}\.mjs$/);
    expect(buildControllerBundle(repoRoot)).toBe(first);
    // Its source map beside it, named in its last line: stack traces name the sources.
    expect(existsSync(`${first}.map`)).toBe(true);
    expect(readFileSync(first, 'utf8').trimEnd().split('\n').at(-1)).toBe(`//# sourceMappingURL=${path.basename(first)}.map`);
    const args = controllerEntryArgs(repoRoot);
    expect(args.slice(0, -1)).toEqual([...CONTROLLER_NODE_FLAGS, '--enable-source-maps']);
    const result = spawnSync(process.execPath, [...args, '--help'], { cwd: repoRoot, encoding: 'utf8', timeout: 30_000 });
    expect(result.status, result.stderr).toBe(0);
    expect(result.stdout).toContain('-cons');
  }, 60_000);

  it('removes other bundles unused for a day, and keeps recent ones and the one just built', () => {
    const dayAgo = new Date(Date.now() - 25 * 60 * 60 * 1000);
    const names = ['controller-old.mjs', 'controller-old.mjs.123.partial', 'controller-recent.mjs', 'controller-kept.mjs', 'other.txt'];
    for (const name of names) writeFileSync(path.join(scratch, name), 'x');
    for (const name of ['controller-old.mjs', 'controller-old.mjs.123.partial', 'controller-kept.mjs', 'other.txt']) {
      utimesSync(path.join(scratch, name), dayAgo, dayAgo);
    }
    removeUnusedBundles(scratch, path.join(scratch, 'controller-kept.mjs'));
    expect(names.filter((name) => existsSync(path.join(scratch, name)))).toEqual(['controller-recent.mjs', 'controller-kept.mjs', 'other.txt']);
  });
});
