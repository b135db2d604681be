/**
 * Junk peer messages for fuzzing the machines: random values, and real messages with one part
 * mutated (wrong types, Infinity, NaN, -1, strings, huge bigints, 2^64 − 1, null, {}, missing
 * fields, unknown kinds, oversized arrays, unknown op kinds and verbs, bad keys).
 *
 * `mutate` may yield a message that is still valid (a field replaced by another valid value): the
 * fuzz test only asks that nothing throws and invariants hold. `certainlyInvalid` yields only
 * messages every machine must drop, for runs that also count the drops.
 */

type Random = () => number;

const U64_MAX = (1n << 64n) - 1n;

/** Values no field of a well-formed message holds in that place (well, rarely). */
const ODD_VALUES: readonly unknown[] = [
  null, undefined, {}, [], Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, -1, 0.5, 2 ** 53, 2 ** 64,
  '9', '', 'x'.repeat(300), true, false, -1n, U64_MAX, 1n << 64n, 1n << 1100n, 0n, Buffer.alloc(0), Buffer.from('junk'),
  { kind: 'nope' }, [null], [[]], ['k', null], ['k', {}],
];

/** Values no count field (term, index, round, batch...) may hold. */
const NOT_COUNTS: readonly unknown[] = [
  null, undefined, {}, [], Number.NaN, Number.POSITIVE_INFINITY, -1, 0.5, 2 ** 53, '9', '', true, 9n, U64_MAX, 1n << 1100n,
];

const BAD_KEYS: readonly unknown[] = ['', 'has space', 'line\nbreak', 'tab\t', '\u0000', 'k'.repeat(251), 'ключ', 42, null];

const BAD_OPS: readonly unknown[] = [
  { kind: 'explode', key: 'k' },
  { kind: 'store', verb: 'upsert', key: 'k', flags: 0, expiresAtMs: 0, value: Buffer.from('v'), casUnique: 0n },
  { kind: 'arith', verb: 'mul', key: 'k', delta: 1n, initial: null, expiresAtMs: 0 },
  { kind: 'arith', verb: 'incr', key: 'k', delta: 1n << 64n, initial: null, expiresAtMs: 0 },
  { kind: 'store', verb: 'set', key: 'k', flags: 2 ** 32, expiresAtMs: 0, value: Buffer.from('v'), casUnique: 0n },
  { kind: 'store', verb: 'set', key: 'k', flags: 0, expiresAtMs: -5, value: 'not a buffer', casUnique: 0n },
  { kind: 'flush_all', delayMs: Number.POSITIVE_INFINITY },
  { kind: 'delete', key: 'bad key' },
  { kind: 'get', keys: [] },
  null,
  'set',
];

/** One of `items` (which may hold undefined itself: the range is checked, not the value). */
export function pick<T>(random: Random, items: readonly T[]): T {
  const index = Math.floor(random() * items.length);
  if (index < 0 || index >= items.length) throw new RangeError(`no item ${index} among ${items.length}`);
  return items[index]!;
}

/** A deep copy that keeps Buffers Buffers and bigints bigints (structuredClone does not). */
export function deepCopy<T>(value: T): T {
  if (Buffer.isBuffer(value)) return Buffer.from(value) as T;
  if (Array.isArray(value)) return value.map((item: unknown) => deepCopy(item)) as T;
  if (typeof value === 'object' && value !== null) {
    const copy: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) copy[key] = deepCopy(item);
    return copy as T;
  }
  return value;
}

/** A random value of any shape (a few levels deep at most). */
export function randomJunk(random: Random, depth = 0): unknown {
  const roll = random();
  if (depth >= 3 || roll < 0.5) return pick(random, ODD_VALUES);
  if (roll < 0.75) return Array.from({ length: Math.floor(random() * 4) }, () => randomJunk(random, depth + 1));
  const object: Record<string, unknown> = {};
  const fields = ['kind', 'term', 'entries', 'batch', 'round', 'op', 'key', 'index', 'cas'];
  for (let count = Math.floor(random() * 5); count > 0; count -= 1) object[pick(random, fields)] = randomJunk(random, depth + 1);
  return object;
}

type Container = Record<string, unknown> | unknown[];

/** Every (container, key) inside `value`, the root's own fields included. */
function slots(value: unknown, found: Array<[Container, string | number]> = [], depth = 0): Array<[Container, string | number]> {
  if (depth > 6 || Buffer.isBuffer(value)) return found;
  if (Array.isArray(value)) {
    value.forEach((item, index) => {
      found.push([value, index]);
      slots(item, found, depth + 1);
    });
  } else if (typeof value === 'object' && value !== null) {
    for (const [key, item] of Object.entries(value)) {
      found.push([value as Record<string, unknown>, key]);
      slots(item, found, depth + 1);
    }
  }
  return found;
}

/** `message` (copied) with one part mutated; the message itself may be replaced too. */
export function mutate(message: unknown, random: Random, kinds: readonly string[]): unknown {
  const copy = deepCopy(message);
  const places = slots(copy);
  const roll = random();
  if (roll < 0.05 || places.length === 0) return randomJunk(random);
  if (roll < 0.1) return { ...(copy as object), kind: pick(random, ['nope', '', 'APPEND', ...kinds]) };
  const [container, key] = pick(random, places);
  const target = (container as Record<string | number, unknown>)[key];
  const what = random();
  if (what < 0.15 && !Array.isArray(container)) {
    delete (container as Record<string, unknown>)[key as string];
  } else if (what < 0.3 && Array.isArray(target) && target.length > 0) {
    // Oversized: the same element many times over.
    (container as Record<string | number, unknown>)[key] = Array.from({ length: 5000 + Math.floor(random() * 20_000) }, () => target[0]);
  } else if (what < 0.45 && (key === 'key' || (Array.isArray(container) && typeof target === 'string'))) {
    (container as Record<string | number, unknown>)[key] = pick(random, BAD_KEYS);
  } else if (what < 0.6 && (key === 'op' || key === 'kind' || key === 'verb')) {
    (container as Record<string | number, unknown>)[key] = key === 'op' ? pick(random, BAD_OPS) : pick(random, ['explode', 'upsert', 'mul', 7]);
  } else if (what < 0.7) {
    (container as Record<string | number, unknown>)[key] = pick(random, NOT_COUNTS);
  } else {
    (container as Record<string | number, unknown>)[key] = randomJunk(random);
  }
  return copy;
}

/**
 * A message every machine drops: junk at the root, an unknown kind, or `message` with one of its
 * required count fields (`countFields`, those the message has) made a non-count.
 */
export function certainlyInvalid(message: Record<string, unknown>, random: Random, countFields: readonly string[]): unknown {
  const roll = random();
  if (roll < 0.1) return pick(random, [null, undefined, {}, [], 'push', 9, Buffer.from('x')]);
  if (roll < 0.2) return { ...deepCopy(message), kind: pick(random, ['nope', '', 'constructor', '__proto__']) };
  const fields = countFields.filter((field) => field in message);
  const copy = deepCopy(message);
  if (fields.length === 0) return { ...copy, kind: 'nope' };
  const field = pick(random, fields);
  if (random() < 0.2) delete copy[field];
  else copy[field] = pick(random, NOT_COUNTS.filter((value) => value !== undefined));
  return copy;
}
