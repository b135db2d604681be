/**
 * The rules an `Op` obeys, checked where one arrives from outside this process: a peer's message,
 * a record handed back at restart. A client's ops already pass them (the protocol decoders refuse
 * the rest), so an op that fails here was never made by a well-behaved controller.
 *
 * Pure and total: any value in, a reason or null out; nothing throws. Keys are latin1 strings
 * (one char per byte), 1..keyBytesMax bytes, with no space or control byte (memcached's
 * protocol.txt, the same check the decoders use).
 */

import { keyHasForbiddenByte } from '../protocol/errors.ts';
import type { Op } from './types.ts';

/** Bounds of an op's fields. */
export interface OpLimits {
  keyBytesMax: number;
  valueBytesMax: number;
  /** Most keys in one get or gat. */
  keysPerOpMax: number;
  /** Longest flush_all delay. */
  flushDelayMsMax: number;
}

export const OP_LIMITS_DEFAULT: Readonly<OpLimits> = Object.freeze({
  keyBytesMax: 250,
  valueBytesMax: 1024 * 1024,
  keysPerOpMax: 1024,
  // memcached's exptime is a 32-bit count of seconds.
  flushDelayMsMax: 2 ** 32 * 1000,
});

const U32_MAX = 0xffffffff;
const U64_LIMIT = 1n << 64n;
const STORE_VERBS: ReadonlySet<unknown> = new Set(['set', 'add', 'replace', 'append', 'prepend', 'cas']);
const ARITH_VERBS: ReadonlySet<unknown> = new Set(['incr', 'decr']);

const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null;

/** A finite, non-negative safe integer. */
export const isCount = (value: unknown): value is number =>
  typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;

/** A bigint in [0, 2^64): what a memcached u64 holds. */
export const isU64 = (value: unknown): value is bigint => typeof value === 'bigint' && value >= 0n && value < U64_LIMIT;

export const isU32 = (value: unknown): value is number => isCount(value) && value <= U32_MAX;

/** A key as the protocol takes it: a latin1 string of 1..keyBytesMax bytes, no space or control byte. */
export function isValidKey(value: unknown, keyBytesMax: number = OP_LIMITS_DEFAULT.keyBytesMax): value is string {
  if (typeof value !== 'string' || value.length === 0 || value.length > keyBytesMax) return false;
  for (let index = 0; index < value.length; index += 1) if (value.charCodeAt(index) > 0xff) return false;
  return !keyHasForbiddenByte(value);
}

function keysProblem(value: unknown, limits: OpLimits): string | null {
  // Empty is allowed: the text decoder takes `gat <exptime>` with no key, and a peer must accept
  // every op a client can make, or one such op would stall replication.
  if (!Array.isArray(value) || value.length > limits.keysPerOpMax) return 'bad key list';
  return value.every((key) => isValidKey(key, limits.keyBytesMax)) ? null : 'bad key';
}

/** Why `value` is not an `Op` within `limits`, or null when it is one. */
export function opProblem(value: unknown, limits: OpLimits = OP_LIMITS_DEFAULT): string | null {
  if (!isObject(value)) return 'op not an object';
  switch (value.kind) {
    case 'store':
      if (!STORE_VERBS.has(value.verb)) return 'unknown store verb';
      if (!isValidKey(value.key, limits.keyBytesMax)) return 'bad key';
      if (!Buffer.isBuffer(value.value) || value.value.length > limits.valueBytesMax) return 'bad value';
      if (!isU32(value.flags) || !isCount(value.expiresAtMs) || !isU64(value.casUnique)) return 'bad store fields';
      return null;
    case 'arith':
      if (!ARITH_VERBS.has(value.verb)) return 'unknown arith verb';
      if (!isValidKey(value.key, limits.keyBytesMax)) return 'bad key';
      if (!isU64(value.delta) || !(value.initial === null || isU64(value.initial))) return 'bad arith fields';
      if (!isCount(value.expiresAtMs) || !(value.casUnique === undefined || isU64(value.casUnique))) return 'bad arith fields';
      return null;
    case 'delete':
      if (!isValidKey(value.key, limits.keyBytesMax)) return 'bad key';
      return value.casUnique === undefined || isU64(value.casUnique) ? null : 'bad delete fields';
    case 'touch':
      if (!isValidKey(value.key, limits.keyBytesMax)) return 'bad key';
      return isCount(value.expiresAtMs) ? null : 'bad touch fields';
    case 'gat':
      return keysProblem(value.keys, limits) ?? (isCount(value.expiresAtMs) ? null : 'bad gat fields');
    case 'get':
      return keysProblem(value.keys, limits);
    case 'flush_all':
      return isCount(value.delayMs) && value.delayMs <= limits.flushDelayMsMax ? null : 'bad flush_all delay';
    default:
      return 'unknown op kind';
  }
}

/** True when `value` is an `Op` within `limits`. */
export function isValidOp(value: unknown, limits: OpLimits = OP_LIMITS_DEFAULT): value is Op {
  return opProblem(value, limits) === null;
}
