/**
 * What the client port may take under an open-files limit: connections_max, or what the limit
 * leaves after the files open and the reserve, never less than one; the configured bound where
 * the limit is unknown. And this process's limit and open files read from /proc.
 */

import { describe, expect, it } from 'vitest';
import { clientConnectionsRoom, OPEN_FILES_RESERVE, openFilesLimit, openFilesNow } from '../src/runtime/open-files.ts';

describe('the room an open-files limit leaves for clients', () => {
  it('is connections_max when the limit leaves more, else what it leaves, at least one', () => {
    expect(clientConnectionsRoom(1024, 1_048_576, 30).max).toBe(1024);
    expect(clientConnectionsRoom(1024, 1024, 30).max).toBe(1024 - 30 - OPEN_FILES_RESERVE);
    expect(clientConnectionsRoom(1024, 100, 30).max).toBe(1);
    expect(clientConnectionsRoom(1024, null, 30).max).toBe(1024);
    expect(clientConnectionsRoom(1024, 1024, null).max).toBe(1024);
  });

  it("reads this process's limit and open files", () => {
    const limit = openFilesLimit();
    const open = openFilesNow();
    expect(limit === null || limit > 0).toBe(true);
    expect(open === null || open >= 3).toBe(true);
    if (limit !== null && open !== null) expect(open).toBeLessThanOrEqual(limit);
  });
});
