/**
 * The memory report a heartbeat carries: it survives the peer frame codec as it was sent, and a
 * peer's report of any other shape, or past a limit, is a problem value (never a throw).
 */

import { describe, expect, it } from 'vitest';
import { FrameDecoder, encodeFrame } from '../src/peer/frame.ts';
import {
  MEMORY_REPORT_SLAB_CLASSES_MAX,
  MEMORY_REPORT_WRITERS_MAX,
  memoryReportWire,
  readMemoryReport,
  sameMemoryReport,
} from '../src/peer/memory-report.ts';
import { slabClassSizes } from '../src/store/slab-room.ts';
import type { BackendMemory } from '../src/store/memory-guard.ts';

const MB = 1024 * 1024;
const memory: BackendMemory = {
  usedBytes: 3 * MB,
  limitBytes: 16 * MB,
  itemBytesMax: MB,
  slabs: {
    pageBytes: MB, freePages: 4, chunkMaxBytes: MB / 2,
    classes: [{ id: 1, chunkBytes: 96, freeChunks: 7 }], classSizes: slabClassSizes(48, 1.25, MB / 2),
  },
};

describe('memory report', () => {
  it('reads back what was sent, through the frame codec', () => {
    const wire = memoryReportWire(4, memory, new Map([[0, 17n], [2, (1n << 63n) + 5n]]));
    const decoded = new FrameDecoder().push(encodeFrame({ kind: 'heartbeat', info: null, memory: wire }));
    expect(decoded.error).toBeNull();
    const [heartbeat] = decoded.messages;
    const reading = readMemoryReport((heartbeat as { memory: unknown }).memory);
    expect(reading).toEqual({ ok: true, report: { poll: 4, memory, stored: new Map([[0, 17n], [2, (1n << 63n) + 5n]]) } });
  });

  it('leaves out what memcached did not say, and reads a report of nothing as none', () => {
    expect(memoryReportWire(1, { usedBytes: 1, limitBytes: 2 }, new Map()).memory).toStrictEqual({ usedBytes: 1, limitBytes: 2 });
    for (const nothing of [undefined, null, { poll: 3, memory: null, stored: [] }]) {
      expect(readMemoryReport(nothing)).toEqual({ ok: true, report: null });
    }
  });

  it('carries the keys a controller counts and the most it indexes, both or neither', () => {
    const counted = { ...memory, keys: 7, keysMax: 9 };
    const reading = readMemoryReport({ poll: 1, memory: counted, stored: [] });
    expect(reading.ok && reading.report?.memory).toEqual(counted);
    expect(readMemoryReport({ poll: 1, memory: { ...memory, keys: 7 }, stored: [] }).ok).toBe(false);
    expect(readMemoryReport({ poll: 1, memory: { ...memory, keys: 7, keysMax: Number.POSITIVE_INFINITY }, stored: [] }).ok).toBe(false);
  });

  it('keeps only the fields the guard reads', () => {
    const sent = { poll: 1, memory: { ...memory, extra: 'x'.repeat(100) }, stored: [] };
    const reading = readMemoryReport(sent);
    expect(reading.ok && reading.report?.memory).toEqual(memory);
  });

  it('refuses every other shape, and lists past their limits', () => {
    const report = (fields: Record<string, unknown>): unknown => ({ poll: 1, memory, stored: [], ...fields });
    const tooMany = MEMORY_REPORT_SLAB_CLASSES_MAX + 1;
    const slabsWith = (fields: Record<string, unknown>): unknown =>
      report({ memory: { ...memory, slabs: { ...memory.slabs, ...fields } } });
    const bad: unknown[] = [
      7, 'report', [], report({ poll: -1 }), report({ poll: 1.5 }), report({ poll: '1' }), report({ stored: null }),
      report({ stored: [[0]] }), report({ stored: [[0, 1]] }), report({ stored: [[-1, 1n]] }), report({ stored: [[0, -1n]] }),
      report({ stored: [[0, 1n << 64n]] }), report({ stored: [[0, 1n], [0, 2n]] }),
      report({ stored: Array.from({ length: MEMORY_REPORT_WRITERS_MAX + 1 }, (_, writer) => [writer, 1n]) }),
      report({ memory: 'full' }), report({ memory: { usedBytes: -1, limitBytes: 2 } }),
      report({ memory: { ...memory, itemBytesMax: null } }),
      slabsWith({ classes: Array.from({ length: tooMany }, (_, id) => ({ id, chunkBytes: 96, freeChunks: 1 })) }),
      slabsWith({ classSizes: Array.from({ length: tooMany }, () => 96) }),
      slabsWith({ classes: [{ id: 1 }] }),
    ];
    for (const value of bad) {
      const reading = readMemoryReport(value);
      const shown = JSON.stringify(value, (_, field: unknown) => (typeof field === 'bigint' ? `${field}n` : field));
      expect(reading.ok, shown).toBe(false);
    }
  });

  it('tells a new poll from a repeat', () => {
    const at = (poll: number) => ({ poll, memory, stored: new Map<number, bigint>() });
    expect(sameMemoryReport(at(1), at(1))).toBe(true);
    expect(sameMemoryReport(at(1), at(2))).toBe(false);
    expect(sameMemoryReport(null, null)).toBe(true);
    expect(sameMemoryReport(at(1), null)).toBe(false);
  });
});
