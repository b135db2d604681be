/**
 * memcached 1.6 semantics for one key, as a pure function: given what is stored under a key and a
 * single-key op, what to write back and what to reply. It is memcached's `do_store_item`,
 * `do_add_delta`, delete and touch with the item table replaced by one `Entry`, so every replica
 * (and every mode) decides alike; `nowMs` and the new `cas` come in, nothing reads the clock. The
 * rules it follows (header cas, incr/decr byte for byte, the value size limit): docs/design.md,
 * "memcached's semantics, key by key".
 *
 * Invariants:
 * - A tombstone or an expired entry (`expiresAtMs !== 0 && expiresAtMs <= nowMs`) is a missing key.
 * - Every successful change carries `cas = ctx.cas`, and so does its reply; a failed op never writes.
 * - An op of a kind or verb no client can send changes nothing and is answered SERVER_ERROR: a typed
 *   refusal, never an exception.
 * - Deviation, on purpose: touch gives the entry a new cas (memcached keeps it).
 */

import type { Reply } from '../protocol/types.ts';
import { refused, type Refusal } from '../protocol/refusals.ts';
import type { Entry, Op } from './types.ts';
import { counterStep, plainEntry } from './counter.ts';

/** The version and time an op is applied with. */
export interface ApplyContext {
  cas: bigint;
  nowMs: number;
  /**
   * Eventual and causal modes: the applying node's index. incr/decr then keep per-node totals
   * (./counter.ts) so that a merge counts increments made at once on several nodes.
   */
  counterNode?: number;
}

/** What applying an op decided: `write` a new entry, `null` to remove, `undefined` to leave it. */
export interface ApplyResult {
  write: Entry | null | undefined;
  reply: Reply;
}

/** The single-key ops `applyToEntry` handles. */
export type SingleKeyOp = Extract<Op, { kind: 'store' | 'arith' | 'delete' | 'touch' }>;

export function isSingleKeyOp(op: Op): op is SingleKeyOp {
  return op.kind === 'store' || op.kind === 'arith' || op.kind === 'delete' || op.kind === 'touch';
}

const U64_MODULUS = 1n << 64n;
const U64_MAX = U64_MODULUS - 1n;
const I64_SIGN = 1n << 63n;

/** memcached's reply for incr/decr on a value that is not a number. */
export const NON_NUMERIC_MESSAGE = 'cannot increment or decrement non-numeric value';

/** True if `entry` reads as present at `nowMs` (not a tombstone, not expired). */
export function isLive(entry: Entry | undefined, nowMs: number): entry is Entry {
  if (entry === undefined || entry.tombstone === true) return false;
  return entry.expiresAtMs === 0 || entry.expiresAtMs > nowMs;
}

/**
 * Whether a purge of the tombstone at `cas` removes `entry`: that tombstone itself, or any older
 * version (the tombstone superseded it; a write memcached refused may have left it in its place).
 */
export function purgeRemoves(entry: Entry, cas: bigint): boolean {
  return entry.cas < cas || (entry.cas === cas && entry.tombstone === true);
}

/** Applies one single-key op to the entry stored under its key. Pure. */
export function applyToEntry(
  current: Entry | undefined,
  op: SingleKeyOp,
  ctx: ApplyContext,
  valueBytesMax = Number.POSITIVE_INFINITY,
): ApplyResult {
  const live = isLive(current, ctx.nowMs) ? current : undefined;
  switch (op.kind) {
    case 'store':
      return applyStore(live, op, ctx, valueBytesMax);
    case 'arith':
      return applyArith(live, op, ctx);
    case 'delete':
      if (live === undefined) return NOT_FOUND;
      if (casMismatch(live, op.casUnique)) return EXISTS;
      return { write: null, reply: { kind: 'deleted' } };
    case 'touch':
      return live === undefined
        ? NOT_FOUND
        : {
            // A touch is a reset: the counter folds into a plain value at the touch's version.
            write: { ...plainEntry(live), expiresAtMs: op.expiresAtMs, cas: ctx.cas },
            reply: { kind: 'touched', cas: ctx.cas, flags: live.flags },
          };
    default: {
      // Ops come from logs and peers, outside this process: an unknown one is refused, not a crash.
      const unknown: never = op;
      return unknownOp(unknown);
    }
  }
}

type StoreOp = Extract<Op, { kind: 'store' }>;
type ArithOp = Extract<Op, { kind: 'arith' }>;

/** The reply to an op this replica cannot read (never made by a client: see ./op-rules.ts). */
export const UNKNOWN_OP_REFUSAL: Refusal = refused('unknown_op', 'not applied');

function unknownOp(_op: unknown): ApplyResult {
  return { write: undefined, reply: UNKNOWN_OP_REFUSAL };
}

const NOT_STORED: ApplyResult = { write: undefined, reply: { kind: 'not_stored' } };
const NOT_FOUND: ApplyResult = { write: undefined, reply: { kind: 'not_found' } };
const EXISTS: ApplyResult = { write: undefined, reply: { kind: 'exists' } };

/** A conditional op (non-zero `casUnique`) on a live entry holding another version. */
function casMismatch(live: Entry, casUnique: bigint | undefined): boolean {
  return casUnique !== undefined && casUnique !== 0n && live.cas !== casUnique;
}

function applyStore(live: Entry | undefined, op: StoreOp, ctx: ApplyContext, valueBytesMax: number): ApplyResult {
  const fresh: Entry = {
    value: op.value,
    flags: op.flags,
    expiresAtMs: op.expiresAtMs,
    cas: ctx.cas,
  };
  const stored: ApplyResult = { write: fresh, reply: { kind: 'stored', cas: ctx.cas } };
  switch (op.verb) {
    case 'set':
      return stored;
    case 'add':
      return live === undefined ? stored : NOT_STORED;
    case 'replace':
      return live === undefined ? NOT_STORED : stored;
    case 'append':
    case 'prepend': {
      if (live === undefined) return NOT_STORED;
      if (casMismatch(live, op.casUnique)) return EXISTS;
      // memcached cannot allocate the longer item, keeps the old one and answers NOT_STORED.
      if (live.value.length + op.value.length > valueBytesMax) return NOT_STORED;
      const parts = op.verb === 'append' ? [live.value, op.value] : [op.value, live.value];
      return {
        write: { ...plainEntry(live), value: Buffer.concat(parts), cas: ctx.cas },
        reply: { kind: 'stored', cas: ctx.cas },
      };
    }
    case 'cas':
      if (live === undefined) return NOT_FOUND;
      if (live.cas !== op.casUnique) return EXISTS;
      return stored;
    default: {
      const unknown: never = op.verb;
      return unknownOp(unknown);
    }
  }
}

function applyArith(live: Entry | undefined, op: ArithOp, ctx: ApplyContext): ApplyResult {
  if (live === undefined) {
    if (op.initial === null) return NOT_FOUND;
    // Binary protocol: a missing key is created holding `initial`; the delta is not applied.
    const value = Buffer.from(op.initial.toString(), 'latin1');
    return {
      write: { value, flags: 0, expiresAtMs: op.expiresAtMs, cas: ctx.cas },
      reply: { kind: 'number', value: op.initial, cas: ctx.cas },
    };
  }
  // memcached compares the cas before it looks at the value.
  if (casMismatch(live, op.casUnique)) return EXISTS;
  const current = parseUnsigned(live.value);
  if (current === null) {
    return { write: undefined, reply: { kind: 'client_error', message: NON_NUMERIC_MESSAGE } };
  }
  const counted =
    ctx.counterNode === undefined
      ? null
      : counterStep({ counter: live.counter, current, node: ctx.counterNode, verb: op.verb, delta: op.delta });
  if (counted !== null) {
    const value = arithValue(counted.value, live.value.length);
    const write: Entry = { ...live, value, cas: ctx.cas, resetCas: live.resetCas ?? live.cas, counter: counted.counter };
    return { write, reply: { kind: 'number', value: counted.value, cas: ctx.cas } };
  }
  const next = op.verb === 'incr' ? (current + op.delta) % U64_MODULUS : floorSubtract(current, op.delta);
  return {
    write: { ...plainEntry(live), value: arithValue(next, live.value.length), cas: ctx.cas },
    reply: { kind: 'number', value: next, cas: ctx.cas },
  };
}

function floorSubtract(value: bigint, delta: bigint): bigint {
  return delta > value ? 0n : value - delta;
}

/** memcached rewrites a shorter result in place, padding the old length with spaces. */
function arithValue(value: bigint, oldLengthBytes: number): Buffer {
  const digits = value.toString();
  if (digits.length > oldLengthBytes) return Buffer.from(digits, 'latin1');
  return Buffer.from(digits.padEnd(oldLengthBytes, ' '), 'latin1');
}

/** C's isspace in the "C" locale. */
function isSpace(byte: number | undefined): boolean {
  return byte !== undefined && (byte === 0x20 || (byte >= 0x09 && byte <= 0x0d));
}

function isDigit(byte: number): boolean {
  return byte >= 0x30 && byte <= 0x39;
}

/**
 * memcached's `safe_strtoull` over an item's data: `strtoull(…, 10)` then the character after the
 * digits must be whitespace or the end (the item's data is followed by "\r\n"; a NUL ends the C
 * string). A leading '-' is accepted only when the wrapped result stays below 2^63, exactly as
 * memcached's check does. Returns null for anything memcached calls non-numeric.
 */
export function parseUnsigned(value: Buffer): bigint | null {
  // Zero-length values are non-numeric in memcached (nbytes <= 2).
  if (value.length === 0) return null;
  let index = 0;
  while (index < value.length && isSpace(value[index])) index += 1;
  let negative = false;
  if (index < value.length && (value[index] === 0x2b || value[index] === 0x2d)) {
    negative = value[index] === 0x2d;
    index += 1;
  }
  const digitsStart = index;
  let magnitude = 0n;
  for (let byte = value[index]; byte !== undefined && isDigit(byte); byte = value[index]) {
    magnitude = magnitude * 10n + BigInt(byte - 0x30);
    index += 1;
  }
  if (index === digitsStart) return null;
  if (magnitude > U64_MAX) return null; // ERANGE
  const end = value[index] ?? 0x0d; // past the data: its "\r\n"
  if (!isSpace(end) && end !== 0x00) return null;
  const result = negative ? (U64_MODULUS - magnitude) % U64_MODULUS : magnitude;
  if (negative && result >= I64_SIGN) return null;
  return result;
}
