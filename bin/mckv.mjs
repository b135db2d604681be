#!/usr/bin/env -S node --no-memory-reducer
/* global process, URL */
/**
 * The `mckv` bin: runs the compiled entry point, dist/main.js (`npm run build` makes it, and
 * ./startup.sh builds before it starts a cluster). The bin is this file, kept in the repository,
 * rather than dist/main.js itself: npx links a project's bins once, the first time it runs one, and
 * a bin whose file did not exist then stays "mckv: not found" after the build.
 */

import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const entry = new URL('../dist/main.js', import.meta.url);
if (existsSync(fileURLToPath(entry))) {
  await import(entry.href);
} else {
  process.stderr.write('mckv: not built yet (dist/main.js is missing): run npm run build, or ./startup.sh, which builds it\n');
  process.exitCode = 1;
}
