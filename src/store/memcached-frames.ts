/**
 * The request frames the memcached backend sends (binary protocol): a get, delete, flush or stats
 * request, and an entry's store written straight into its frame; and what memcached's answer to
 * a store means — send it again as the other command, or a refusal that left the key as it was.
 *
 * Pure functions over Buffers; the header layout is ../protocol/binary-header.ts.
 */

import { clockMs } from '../runtime/clock.ts';
import { BINARY_STATUS, HEADER_BYTES, OPCODE, REQUEST_MAGIC, writeHeader } from '../protocol/binary-header.ts';
import { refused, type Refusal } from '../protocol/refusals.ts';
import { encodedEntryBytes, encodeEntryInto, memcachedExptimeSeconds, memcachedKey } from './codec.ts';
import type { Entry, KeyPresence } from './types.ts';

/** A store's extras: memcached's flags (unused: ours are in the value) and its exptime. */
const SET_EXTRAS_BYTES = 8;
/** An add or replace that found the key otherwise than expected is sent again as the other, this often at most, then as a set. */
const STORE_SWITCHES_MAX = 2;

/** The binary store request of `key` (its memcached key, and our key kept in the value if hashed). */
export function setFrame(key: string, entry: Entry, present: KeyPresence): Buffer {
  const target = memcachedKey(key);
  return encodeSetRequest(storeOpcode(present), target.key, entry, target.hashed ? key : null);
}

/**
 * The command that stores an entry: add for a key memcached does not hold, else replace (a wrong
 * guess costs one more round trip: see storeRetry). Never a plain set, though all three write the
 * same item: they differ in what a refusal leaves. memcached drops the key's old item when it
 * cannot store a set ("to avoid stale data"), and leaves it when it refuses an add or a replace;
 * so a replica whose write memcached refused for want of memory still holds what it held, and
 * replaying its log onto it repairs it once memory is freed.
 */
function storeOpcode(present: KeyPresence): number {
  return present === false ? OPCODE.add : OPCODE.replace;
}

/** The quiet form of a store opcode (set, add, replace): memcached answers it only if it fails. */
export function quietOpcode(opcode: number): number {
  if (opcode === OPCODE.set) return OPCODE.setq;
  if (opcode === OPCODE.add) return OPCODE.addq;
  if (opcode === OPCODE.replace) return OPCODE.replaceq;
  throw new Error(`no quiet form of opcode ${opcode}`);
}

/** The refusal memcached's binary `status` for a store says, if it says what happened. */
export function refusalOf(status: number | null): Refusal | undefined {
  if (status === BINARY_STATUS.outOfMemory) return refused('out_of_memory');
  if (status === BINARY_STATUS.valueTooLarge) return refused('too_large');
  return undefined;
}

/** The command to send a store again as, when memcached answered `status` because the key was (not) there; else null. */
export function storeRetry(sent: { opcode: number; switches?: number }, status: number): number | null {
  const mismatch =
    (sent.opcode === OPCODE.replace && status === BINARY_STATUS.keyNotFound) ||
    (sent.opcode === OPCODE.add && status === BINARY_STATUS.keyExists);
  if (!mismatch) return null;
  if ((sent.switches ?? 0) >= STORE_SWITCHES_MAX) return OPCODE.set;
  return sent.opcode === OPCODE.replace ? OPCODE.add : OPCODE.replace;
}

/** A request frame; the connection fills in the opaque when it sends it. Keys are latin1 (one byte per char; ours are ASCII). */
export function encodeRequest(opcode: number, key: string, extras: Buffer | null, value: Buffer | null): Buffer {
  const extrasBytes = extras === null ? 0 : extras.length;
  const valueBytes = value === null ? 0 : value.length;
  const frame = requestHeader(opcode, key, extrasBytes, valueBytes);
  let offset = HEADER_BYTES;
  if (extras !== null) offset += extras.copy(frame, offset);
  offset += frame.write(key, offset, 'latin1');
  if (value !== null) value.copy(frame, offset);
  return frame;
}

/** A store (set, add or replace: `opcode`) of `entry` under `memcachedKeyText`, encoded straight into the frame (one copy of the value). */
function encodeSetRequest(opcode: number, memcachedKeyText: string, entry: Entry, keptKey: string | null): Buffer {
  const frame = requestHeader(opcode, memcachedKeyText, SET_EXTRAS_BYTES, encodedEntryBytes(entry, keptKey));
  frame.writeUInt32BE(0, HEADER_BYTES); // memcached flags: unused, ours are in the value
  frame.writeUInt32BE(memcachedExptimeSeconds(entry.expiresAtMs, clockMs()), HEADER_BYTES + 4);
  const keyAt = HEADER_BYTES + SET_EXTRAS_BYTES;
  frame.write(memcachedKeyText, keyAt, 'latin1');
  encodeEntryInto(frame, keyAt + memcachedKeyText.length, entry, keptKey);
  return frame;
}

/** A frame with its request header written and room for the body. */
function requestHeader(opcode: number, key: string, extrasBytes: number, valueBytes: number): Buffer {
  const bodyBytes = extrasBytes + key.length + valueBytes;
  const frame = Buffer.allocUnsafe(HEADER_BYTES + bodyBytes);
  // vbucket 0, cas unused; the opaque is set when the frame is sent.
  writeHeader(frame, { magic: REQUEST_MAGIC, opcode, keyBytes: key.length, extrasBytes, bodyBytes });
  return frame;
}
