/**
 * What the Replica tests share (replica-backend, replica-semantics, replica-cache): ops and entries
 * built in one line, a reply's keys and values, the time every op runs at, and a MemoryBackend
 * that counts its calls and fails a set on request.
 */

import { MemoryBackend } from '../../src/store/memory.ts';
import { StoreError, type Entry, type KeyedPair, type Op } from '../../src/store/types.ts';
import type { Reply } from '../../src/protocol/types.ts';

/** A set of `value` under `key`, expiring at `expiresAtMs` (0: never). */
export const setOp = (key: string, value: string, expiresAtMs = 0): Op => ({
  kind: 'store', verb: 'set', key, flags: 0, expiresAtMs, value: Buffer.from(value), casUnique: 0n,
});
/** An append of `value` to `key`. */
export const appendOp = (key: string, value: string): Op => ({ ...setOp(key, value), verb: 'append' }) as Op;
/** An incr of `key` by one (absent: created holding 0). */
export const incrOp = (key: string): Op => ({ kind: 'arith', verb: 'incr', key, delta: 1n, initial: 0n, expiresAtMs: 0 });
/** A get of `keys`. */
export const getOp = (...keys: string[]): Op => ({ kind: 'get', keys });
/** An entry holding `value` at version `cas`, with `extra` fields over the defaults. */
export const entry = (value: string, cas: bigint, extra: Partial<Entry> = {}): Entry => ({
  value: Buffer.from(value), flags: 0, expiresAtMs: 0, cas, ...extra,
});
/** The (key, value) pairs of a values reply as strings; [] for any other reply. */
export const values = (reply: Reply): Array<[string, string]> =>
  reply.kind === 'values' ? reply.items.map((item) => [item.key, item.value.toString()]) : [];

/** The time every op of these tests runs at. */
export const NOW = 1_000_000;

/**
 * A MemoryBackend that counts its calls, and can fail the next set before storing it (it never
 * arrived) or after (the reply was lost).
 */
export class CountingBackend extends MemoryBackend {
  gets = 0;
  sets = 0;
  failNextSetBeforeStoring = false;
  failNextSetAfterStoring = false;
  override async get(key: string): Promise<Entry | undefined> {
    this.gets += 1;
    return super.get(key);
  }
  /** Counted as a get of each key. */
  override async getMany(keys: readonly string[]): Promise<Array<Entry | undefined>> {
    this.gets += keys.length;
    return super.getMany(keys);
  }
  override async set(key: string, stored: Entry): Promise<void> {
    this.sets += 1;
    if (this.failNextSetBeforeStoring) {
      this.failNextSetBeforeStoring = false;
      throw new StoreError('BACKEND_DOWN', 'injected');
    }
    await super.set(key, stored);
    if (this.failNextSetAfterStoring) {
      this.failNextSetAfterStoring = false;
      throw new StoreError('BACKEND_TIMEOUT', 'injected: stored, reply lost');
    }
  }
  /** One batch: counted (and failed on request) as its sets. */
  override async setMany(entries: readonly KeyedPair[]): Promise<void> {
    this.batches += 1;
    for (const [key, stored] of entries) await this.set(key, stored);
  }
  batches = 0;
}
