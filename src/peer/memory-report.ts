/**
 * The memory report every heartbeat carries: what this node's memcached said of its memory at its
 * latest poll, and per writer the greatest version it had stored when that poll began. The node
 * that orders writes counts every replica's report in its memory guard (store/memory-guard.ts).
 *
 * A peer's report is input from outside the process: it is read against the schema below, with a
 * bound on every count and length, into a fresh object holding only the fields the guard reads.
 * What fails is a `MemoryReportProblem` value, never an exception; the network drops it, counts
 * and logs it, and the peer then counts as saying nothing of its memory.
 */

import { isBackendMemory, type BackendMemory, type PeerMemoryReport } from '../store/memory-guard.ts';
import type { SlabClass, SlabState } from '../store/types.ts';

/** Most writers a report names: one per node (eventual mode), or one (the log). */
export const MEMORY_REPORT_WRITERS_MAX = 64;
/** Largest writer number (a node's index in eventual mode). */
export const MEMORY_REPORT_WRITER_MAX = 1023;
/** Versions are below 2^64 (a log index, or a packed HLC version). */
export const MEMORY_REPORT_VERSION_BITS_MAX = 64;
/** Most slab classes, and sizes in the class table: memcached has at most 64 classes. */
export const MEMORY_REPORT_SLAB_CLASSES_MAX = 256;

/** A report as a heartbeat carries it. `memory` null: memcached said nothing, or did not answer. */
export interface MemoryReportWire {
  poll: number;
  memory: BackendMemory | null;
  /** Per writer, the greatest version stored when the poll began. */
  stored: Array<[writer: number, version: bigint]>;
}

/** Why a peer's report was not read. */
export interface MemoryReportProblem {
  kind: 'malformed';
  detail: string;
}

/** A report read: null when the peer says nothing of its memory. */
export type MemoryReportReading = { ok: true; report: PeerMemoryReport | null } | { ok: false; problem: MemoryReportProblem };

/** The wire form of this node's report (absent optional fields are left out, never sent as null). */
export function memoryReportWire(poll: number, memory: BackendMemory | undefined, stored: ReadonlyMap<number, bigint>): MemoryReportWire {
  return { poll, memory: memory === undefined ? null : copyMemory(memory), stored: [...stored] };
}

/** Reads a heartbeat's `memory` field; absent or null: the peer reports nothing. */
export function readMemoryReport(value: unknown): MemoryReportReading {
  if (value === undefined || value === null) return { ok: true, report: null };
  if (typeof value !== 'object' || Array.isArray(value)) return malformed('not an object');
  const fields = value as Record<string, unknown>;
  if (!Number.isSafeInteger(fields.poll) || (fields.poll as number) < 0) return malformed('poll is not a count');
  const stored = readStored(fields.stored);
  if (typeof stored === 'string') return malformed(stored);
  if (fields.memory === null) return { ok: true, report: null };
  const problem = memoryProblem(fields.memory);
  if (problem !== null) return malformed(problem);
  return { ok: true, report: { poll: fields.poll as number, memory: copyMemory(fields.memory as BackendMemory), stored } };
}

/** Whether two readings say the same: the same poll of the same peer, or nothing both times. */
export function sameMemoryReport(a: PeerMemoryReport | null, b: PeerMemoryReport | null): boolean {
  return a === null || b === null ? a === b : a.poll === b.poll;
}

function readStored(value: unknown): Map<number, bigint> | string {
  if (!Array.isArray(value)) return 'stored is not a list';
  if (value.length > MEMORY_REPORT_WRITERS_MAX) return `stored names more than ${MEMORY_REPORT_WRITERS_MAX} writers`;
  const stored = new Map<number, bigint>();
  for (const pair of value as unknown[]) {
    if (!Array.isArray(pair) || pair.length !== 2) return 'a mark is not a [writer, version] pair';
    const [writer, version] = pair as [unknown, unknown];
    if (!Number.isSafeInteger(writer) || (writer as number) < 0 || (writer as number) > MEMORY_REPORT_WRITER_MAX) {
      return `a writer is not a number from 0 to ${MEMORY_REPORT_WRITER_MAX}`;
    }
    if (typeof version !== 'bigint' || version < 0n || version >= 1n << BigInt(MEMORY_REPORT_VERSION_BITS_MAX)) {
      return `a version is not a bigint below 2^${MEMORY_REPORT_VERSION_BITS_MAX}`;
    }
    if (stored.has(writer as number)) return 'a writer is named twice';
    stored.set(writer as number, version);
  }
  return stored;
}

/** Lengths first (before anything walks the lists), then the shape the guard reads. */
function memoryProblem(value: unknown): string | null {
  if (typeof value !== 'object' || value === null) return 'memory is not an object';
  const slabs = (value as { slabs?: unknown }).slabs;
  if (typeof slabs === 'object' && slabs !== null) {
    const { classes, classSizes } = slabs as { classes?: unknown; classSizes?: unknown };
    if (Array.isArray(classes) && classes.length > MEMORY_REPORT_SLAB_CLASSES_MAX) return 'too many slab classes';
    if (Array.isArray(classSizes) && classSizes.length > MEMORY_REPORT_SLAB_CLASSES_MAX) return 'too many slab class sizes';
  }
  return isBackendMemory(value) ? null : 'memory is not what a memcached poll reads';
}

/** Only the fields the guard reads, in fresh objects (nothing else a peer sent is kept). */
function copyMemory(memory: BackendMemory): BackendMemory {
  const copy: BackendMemory = { usedBytes: memory.usedBytes, limitBytes: memory.limitBytes };
  if (memory.itemBytesMax !== undefined) copy.itemBytesMax = memory.itemBytesMax;
  if (memory.keys !== undefined && memory.keysMax !== undefined) {
    copy.keys = memory.keys;
    copy.keysMax = memory.keysMax;
  }
  if (memory.slabs !== undefined) copy.slabs = copySlabs(memory.slabs);
  return copy;
}

function copySlabs(slabs: SlabState): SlabState {
  return {
    pageBytes: slabs.pageBytes,
    freePages: slabs.freePages,
    chunkMaxBytes: slabs.chunkMaxBytes,
    classes: slabs.classes.map((slab: SlabClass) => ({ id: slab.id, chunkBytes: slab.chunkBytes, freeChunks: slab.freeChunks })),
    classSizes: slabs.classSizes === null ? null : [...slabs.classSizes],
  };
}

function malformed(detail: string): MemoryReportReading {
  return { ok: false, problem: { kind: 'malformed', detail } };
}
