/**
 * The controller as one JavaScript file, bundled from the sources with esbuild, for the processes
 * the fault runner, the benchmark and the tests start and restart by the hundred. Started through
 * tsx, a controller compiles and resolves every module at every start (0.64–0.72 s of CPU on an
 * idle two-core machine, against 0.47–0.50 s from the bundle); a kill or power-loss heal waits for
 * that, and a busy machine stretches it to seconds.
 *
 * Invariants: the bundle is built from the sources as they are when this process first asks for
 * it, never reused across processes by name alone: its file name is its content's hash. It lives
 * under node_modules/.cache, so its packages resolve as the sources' do, and one no run used for a
 * day is removed when another is built, with its source map, a file beside it.
 */

import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { buildSync } from 'esbuild';
import { CONTROLLER_NODE_FLAGS } from '../runtime/node-flags.ts';

/** Bundles not used for this long are removed when another is built (one per change of the sources). */
const UNUSED_BUNDLE_MS = 24 * 60 * 60 * 1000;

/** Set by the test runner's global set-up to a bundle built once for the whole run. */
export const CONTROLLER_BUNDLE_ENV = 'MCKV_CONTROLLER_BUNDLE';

let built: string | null = null;

/**
 * Node's arguments that run the controller from the bundle (built on first call in this process
 * unless the environment names one) with the controller's flags, its stack traces naming the
 * sources' files and lines.
 */
export function controllerEntryArgs(repoRoot: string): string[] {
  const named = process.env[CONTROLLER_BUNDLE_ENV];
  const bundle = named !== undefined && named !== '' && existsSync(named) ? named : (built ??= buildControllerBundle(repoRoot));
  return [...CONTROLLER_NODE_FLAGS, '--enable-source-maps', bundle];
}

/**
 * Bundles main.ts and its sources (packages stay imports) into node_modules/.cache/mckv, with its
 * source map in a file beside it, without the sources' text (a stack trace needs only the
 * mappings): Node reads the whole map at every start, and inline, with the sources, it cost each
 * controller some 130 ms of CPU more.
 */
export function buildControllerBundle(repoRoot: string): string {
  const dir = path.join(repoRoot, 'node_modules', '.cache', 'mckv');
  const result = buildSync({
    entryPoints: [path.join(repoRoot, 'main.ts')],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    packages: 'external',
    // The map's source paths are relative to this folder; the file is named below, by its content.
    sourcemap: 'external',
    sourcesContent: false,
    outfile: path.join(dir, 'controller.mjs'),
    write: false,
    logLevel: 'silent',
  });
  const code = result.outputFiles.find((output) => output.path.endsWith('.mjs'));
  const map = result.outputFiles.find((output) => output.path.endsWith('.mjs.map'));
  if (code === undefined || map === undefined) throw new Error('esbuild produced no controller bundle');
  const hash = createHash('sha256').update(code.contents).update(map.contents).digest('hex').slice(0, 16);
  const file = path.join(dir, `controller-${hash}.mjs`);
  if (existsSync(file) && existsSync(`${file}.map`)) {
    // Used again: not unused, whatever its age.
    const now = new Date();
    utimesSync(file, now, now);
    utimesSync(`${file}.map`, now, now);
    return file;
  }
  mkdirSync(dir, { recursive: true });
  // Another process may build the same bundle at once: each writes its own files, then renames,
  // the map first, so that no bundle is ever found without it.
  writeRenamed(`${file}.map`, map.contents);
  writeRenamed(file, Buffer.concat([code.contents, Buffer.from(`//# sourceMappingURL=${path.basename(file)}.map\n`)]));
  removeUnusedBundles(dir, file);
  return file;
}

function writeRenamed(file: string, contents: Uint8Array): void {
  const partial = `${file}.${process.pid}.partial`;
  writeFileSync(partial, contents);
  renameSync(partial, file);
}

/** Removes bundles (and partial writes) in `dir` other than `keep` that no run has used for a day. */
export function removeUnusedBundles(dir: string, keep: string): void {
  const cutoffMs = Date.now() - UNUSED_BUNDLE_MS;
  for (const name of readdirSync(dir)) {
    const file = path.join(dir, name);
    if (file === keep || file === `${keep}.map` || !name.startsWith('controller-')) continue;
    try {
      if (statSync(file).mtimeMs < cutoffMs) rmSync(file, { force: true });
    } catch {
      // Removed by another process meanwhile.
    }
  }
}
