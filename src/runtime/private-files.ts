/**
 * Files and folders only the owner may read: the write-ahead file and the state files beside it
 * hold every value and vote in clear, and the logs name keys.
 *
 * A mode given to open or mkdir applies only when the file is created, so a file or folder left
 * over with a wider mode is tightened explicitly; a file replaced through a rename gets its mode
 * from the temporary file, which is tightened the same way before anything is written to it.
 */

import { closeSync, fchmodSync, mkdirSync, openSync, renameSync, writeSync } from 'node:fs';

/** Owner read and write, nobody else. */
export const PRIVATE_FILE_MODE = 0o600;
/** Owner read, write and search, nobody else. */
export const PRIVATE_DIRECTORY_MODE = 0o700;

/**
 * Creates `directory` and any missing parents as 0700. With `tighten`, an existing `directory`
 * (never its parents, which may be shared) is set to 0700 too: for folders only mckv uses.
 */
export function makePrivateDirectory(directory: string, options: { tighten: boolean }): void {
  mkdirSync(directory, { recursive: true, mode: PRIVATE_DIRECTORY_MODE });
  if (options.tighten) {
    const fd = openSync(directory, 'r');
    try {
      fchmodSync(fd, PRIVATE_DIRECTORY_MODE);
    } finally {
      closeSync(fd);
    }
  }
}

/** Opens `file` with `flags` ('a', 'w', …) as 0600, whether it is created now or was there before. */
export function openPrivateFile(file: string, flags: string): number {
  const fd = openSync(file, flags, PRIVATE_FILE_MODE);
  try {
    fchmodSync(fd, PRIVATE_FILE_MODE);
  } catch (error) {
    closeSync(fd);
    throw error;
  }
  return fd;
}

/** Replaces `file` with `text` through a 0600 temporary file and a rename. */
export function replacePrivateTextFile(file: string, text: string): void {
  const temporary = `${file}.tmp`;
  const fd = openPrivateFile(temporary, 'w');
  try {
    const bytes = Buffer.from(text);
    for (let written = 0; written < bytes.length; ) written += writeSync(fd, bytes, written, bytes.length - written);
  } finally {
    closeSync(fd);
  }
  renameSync(temporary, file);
}
