/**
 * The in-memory log counts the bytes its entries hold (values, keys and an allowance each, as
 * `opBytes`), through appends, a truncation, a compaction and a reset: what compaction by bytes
 * is decided on.
 */

import { describe, expect, it } from 'vitest';
import { EntryLog } from '../src/consistency/log/entry-log.ts';
import { opBytes, type LogEntry } from '../src/consistency/log/types.ts';
import { asPeerId } from '../src/consistency/types.ts';
import type { Op } from '../src/store/types.ts';

const set = (key: string, bytes: number): Op => ({ kind: 'store', verb: 'set', key, flags: 0, expiresAtMs: 0, value: Buffer.alloc(bytes), casUnique: 0n });
const entry = (index: number, op: Op | null): LogEntry =>
  ({ index, term: 1, op, origin: asPeerId('n1'), incarnation: 1, requestId: null, nowMs: 0 }) as LogEntry;

describe("the log's bytes", () => {
  it('follow appends, truncation, compaction and reset', () => {
    const log = new EntryLog();
    const ops = [set('a', 1000), set('b', 2000), null, set('c', 3000)];
    log.append(ops.map((op, at) => entry(at + 1, op)));
    const each = ops.map((op) => opBytes(op));
    expect(log.bytes).toBe(each.reduce((sum, bytes) => sum + bytes, 0));
    log.truncateFrom(4);
    expect(log.bytes).toBe((each[0] ?? 0) + (each[1] ?? 0) + (each[2] ?? 0));
    log.compactTo(2);
    expect(log.bytes).toBe(each[2]);
    log.resetTo(10, 1);
    expect(log.bytes).toBe(0);
  });
});
