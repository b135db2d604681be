/**
 * Steps of a controller's wall clock, for tests and the `clock` fault: the controller runs with
 * libfaketime preloaded (Debian's libfaketime package), which reads the offset of the process's
 * wall clock from a file, so the harness can move one controller's clock forward or back while it
 * runs, as an operator or NTP stepping the system clock would. Only the wall clock moves: the
 * monotonic clock is left alone (FAKETIME_DONT_FAKE_MONOTONIC), as a real step leaves it.
 *
 * A new offset takes effect within FAKETIME_CACHE_DURATION (1 s): libfaketime re-reads the file
 * at most that often, instead of at every clock read.
 */

import { existsSync, writeFileSync } from 'node:fs';

/** Where Debian puts libfaketime (the multithreaded build: Node.js runs threads). */
const LIBRARY_CANDIDATES = [
  '/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1',
  '/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1',
  '/usr/lib/faketime/libfaketimeMT.so.1',
];

/** How long libfaketime keeps an offset before it reads the file again, in seconds. */
export const WALL_CLOCK_REREAD_SECONDS = 1;

/** libfaketime's path, or null when it is not installed. */
export function libfaketimePath(): string | null {
  return LIBRARY_CANDIDATES.find((candidate) => existsSync(candidate)) ?? null;
}

/**
 * The environment that runs a process with its wall clock offset by what `offsetFile` says
 * (written by setWallClockOffset; starts at no offset). Throws when libfaketime is missing.
 */
export function wallClockEnv(offsetFile: string): Record<string, string> {
  const library = libfaketimePath();
  if (library === null) throw new Error('libfaketime is not installed: apt-get install libfaketime');
  setWallClockOffset(offsetFile, 0);
  return {
    LD_PRELOAD: library,
    FAKETIME_TIMESTAMP_FILE: offsetFile,
    FAKETIME_CACHE_DURATION: String(WALL_CLOCK_REREAD_SECONDS),
    FAKETIME_DONT_FAKE_MONOTONIC: '1',
  };
}

/** Sets the wall-clock offset, in whole seconds, of the processes started with `offsetFile`. */
export function setWallClockOffset(offsetFile: string, offsetSeconds: number): void {
  if (!Number.isSafeInteger(offsetSeconds)) throw new Error(`wall-clock offset must be whole seconds, got ${offsetSeconds}`);
  writeFileSync(offsetFile, `${offsetSeconds >= 0 ? '+' : ''}${offsetSeconds}\n`);
}
