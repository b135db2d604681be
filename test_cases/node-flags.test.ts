/**
 * The controller's Node.js flags (src/runtime/node-flags.ts) reach node's command line on every way
 * the project starts a controller: the `mckv` bin's shebang, startup.sh, `npm start` and the
 * clusters the tests, the fault runner and the benchmark start. V8 reads them only as the heap is
 * made, so one missing from a start path is silently not applied there.
 */

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { controllerEntryArgs } from '../src/jepsen/controller-bundle.ts';
import { CONTROLLER_NODE_FLAGS, missingControllerFlags } from '../src/runtime/node-flags.ts';

const repoRoot = path.join(import.meta.dirname, '..');
const read = (file: string): string => readFileSync(path.join(repoRoot, file), 'utf8');

describe("the controller's node flags", () => {
  it('are named, and a process is told which it lacks', () => {
    expect(CONTROLLER_NODE_FLAGS).toContain('--no-memory-reducer');
    expect(missingControllerFlags([])).toEqual([...CONTROLLER_NODE_FLAGS]);
    expect(missingControllerFlags(['--enable-source-maps', ...CONTROLLER_NODE_FLAGS])).toEqual([]);
  });

  it('are on every start path', () => {
    const shebang = read('main.ts').split('\n')[0] ?? '';
    const startupLine = read('startup.sh').split('\n').find((line) => line.includes('exec nohup node')) ?? '';
    const start = (JSON.parse(read('package.json')) as { scripts: Record<string, string> }).scripts.start ?? '';
    const bundleArgs = controllerEntryArgs(repoRoot);
    expect(shebang.startsWith('#!/usr/bin/env -S node ')).toBe(true);
    for (const flag of CONTROLLER_NODE_FLAGS) {
      expect(shebang.split(' '), 'the mckv bin').toContain(flag);
      expect(startupLine.split(' '), 'startup.sh').toContain(flag);
      expect(start.split(' '), 'npm start').toContain(flag);
      // Before the script, where node takes its own flags.
      expect(bundleArgs.indexOf(flag), 'test and benchmark clusters').toBeLessThan(bundleArgs.length - 1);
      expect(bundleArgs.indexOf(flag)).toBeGreaterThanOrEqual(0);
    }
  });
});
