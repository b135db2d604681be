/**
 * The compiled product: `npm run build`'s config (tsconfig.build.json) compiled into a scratch
 * folder gives a dist/main.js that the `mckv` bin (bin/mckv.mjs) runs (a shebang, .ts imports
 * rewritten to .js, scripts/require-node.mjs beside it), and each command loads only what it runs: the checker
 * and the client load neither the controller, winston nor memjs. Which modules a process loaded
 * is recorded by a resolve hook (support/trace-imports.mjs).
 */

import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const repoRoot = path.resolve(import.meta.dirname, '..');
const scratch = mkdtempSync(path.join(tmpdir(), 'mckv-build-'));
const outDir = path.join(scratch, 'dist');
const mainJs = path.join(outDir, 'main.js');
const traceHook = path.join(repoRoot, 'test_cases', 'support', 'trace-imports.mjs');
const okHistory = path.join(repoRoot, 'test_cases', 'histories', 'concurrent-overlap.jsonl');

/** Modules that only the controller command may load. */
const CONTROLLER_ONLY = [/\/src\/controller\.js$/, /\/src\/controller\/main\.js$/, /\/src\/runtime\/log\.js$/, /\/node_modules\/winston\//, /\/node_modules\/memjs\//, /\/src\/store\/memcached\.js$/];

beforeAll(() => {
  const tsc = path.join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc');
  const args = [tsc, '-p', path.join(repoRoot, 'tsconfig.build.json'), '--outDir', outDir, '--incremental', 'false', '--sourceMap', 'false'];
  const build = spawnSync(process.execPath, args, { cwd: repoRoot, encoding: 'utf8', timeout: 120_000 });
  expect(build.stdout + build.stderr).toBe('');
  expect(build.status).toBe(0);
  // The compiled files import packages by name: let them find the repository's node_modules.
  symlinkSync(path.join(repoRoot, 'node_modules'), path.join(scratch, 'node_modules'));
}, 120_000);

afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** Runs dist/main.js with args; returns its exit code, output and the module URLs it loaded. */
function mckv(args: string[]): { code: number | null; stdout: string; stderr: string; loaded: string[] } {
  const trace = path.join(scratch, `trace-${Math.random().toString(36).slice(2)}.txt`);
  writeFileSync(trace, '');
  const result = spawnSync(process.execPath, ['--import', traceHook, mainJs, ...args], {
    cwd: repoRoot,
    encoding: 'utf8',
    timeout: 30_000,
    env: { ...process.env, MCKV_TRACE_IMPORTS: trace },
  });
  const loaded = readFileSync(trace, 'utf8').split('\n').filter((line) => line !== '');
  return { code: result.status, stdout: result.stdout, stderr: result.stderr, loaded };
}

function controllerOnly(loaded: string[]): string[] {
  return loaded.filter((url) => CONTROLLER_ONLY.some((pattern) => pattern.test(url)));
}

describe('the compiled mckv', () => {
  it('is a node script whose relative imports name .js files', () => {
    const text = readFileSync(mainJs, 'utf8');
    expect(text.startsWith('#!/usr/bin/env -S node --no-memory-reducer\n')).toBe(true);
    expect(text).toContain("import './scripts/require-node.mjs'");
    expect(text).not.toMatch(/from '\.{1,2}\/[^']*\.ts'|import\('\.{1,2}\/[^']*\.ts'\)/);
  });

  // npx links a project's bins the first time it runs one: a bin that did not exist yet (dist/
  // before the first build) stayed "mckv: not found" after the build. So the bin is a file in the
  // repository, bin/mckv.mjs, which runs ../dist/main.js or says how to build it.
  it('is run by bin/mckv.mjs, a file in the repository, which says how to build when dist/ is missing', () => {
    const bin = (JSON.parse(readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { bin: Record<string, string> }).bin;
    expect(bin).toEqual({ mckv: 'bin/mckv.mjs' });
    const launcher = path.join(repoRoot, 'bin', 'mckv.mjs');
    expect(statSync(launcher).mode & 0o111).not.toBe(0);
    expect(readFileSync(launcher, 'utf8').startsWith('#!/usr/bin/env -S node --no-memory-reducer\n')).toBe(true);
    const run = (folder: string): ReturnType<typeof spawnSync> => {
      mkdirSync(path.join(folder, 'bin'), { recursive: true });
      copyFileSync(launcher, path.join(folder, 'bin', 'mckv.mjs'));
      return spawnSync(process.execPath, [path.join(folder, 'bin', 'mckv.mjs'), 'check', okHistory, '--model', 'linearizability'], { encoding: 'utf8', timeout: 30_000 });
    };
    const built = run(scratch); // beside the dist/ this file compiled
    expect(built.stdout).toMatch(/^OK: linearizability\n/);
    expect(built.status).toBe(0);
    const unbuilt = run(path.join(scratch, 'unbuilt'));
    expect(unbuilt.stderr).toBe('mckv: not built yet (dist/main.js is missing): run npm run build, or ./startup.sh, which builds it\n');
    expect(unbuilt.status).toBe(1);
  });

  it('checks a history, loading the checker and nothing of the controller', () => {
    const run = mckv(['check', okHistory, '--model', 'linearizability']);
    expect(run.stderr).toBe('');
    expect(run.stdout).toMatch(/^OK: linearizability\n/);
    expect(run.code).toBe(0);
    expect(run.loaded.some((url) => url.endsWith('/src/check/cli.js'))).toBe(true);
    expect(controllerOnly(run.loaded)).toEqual([]);
  });

  it('runs the one-shot client without loading the controller', () => {
    // Nothing listens on port 1: the client says so and exits 1, having loaded what it runs.
    const run = mckv(['-cli', '-i', '127.0.0.1', '-p', '1', '-e', 'get k']);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^mckv: .*ECONNREFUSED/);
    expect(run.loaded.some((url) => url.endsWith('/src/client/repl.js'))).toBe(true);
    expect(controllerOnly(run.loaded)).toEqual([]);
  });

  it('loads the controller for the controller command, and a bad config is one line and exit 1', () => {
    const config = path.join(scratch, 'bad.ini');
    writeFileSync(config, '[cluster]\nconsistency = linearizability\n');
    const run = mckv(['-c', config, '-p', '47101', '--kvtype', 'memory']);
    expect(run.code).toBe(1);
    expect(run.stderr).toBe(`mckv: ${config}: no [node.<id>] sections\n`);
    // What the other commands must not load, this one does: the trace sees it.
    expect(controllerOnly(run.loaded).length).toBeGreaterThanOrEqual(4);
    expect(run.loaded.some((url) => url.includes('/node_modules/winston/'))).toBe(true);
  });
});
