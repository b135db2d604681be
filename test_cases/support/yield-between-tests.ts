/**
 * Each test file's worker goes back to its event loop after every test. The simulators run for
 * seconds without awaiting anything, and between tests the runner awaits only promises, so a file
 * of them kept its worker from reading the runner's messages for its whole run: on a slow machine
 * past vitest's 60 s RPC timeout ("Timeout calling onTaskUpdate", an error that fails the run).
 */

import { afterEach } from 'vitest';

// A timer, then an immediate: one full turn of the loop, its poll phase (where messages arrive) included.
afterEach(async () => {
  await new Promise<void>((resolve) => setTimeout(resolve, 0));
  await new Promise<void>((resolve) => setImmediate(resolve));
});
