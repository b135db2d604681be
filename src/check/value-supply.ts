/**
 * What the sequential search (sequential-search.ts) knows of the values a key's operations need
 * and produce: the starvation pruning, and which present values some operation can tell apart.
 *
 * Invariants: the per-value counts cover exactly the unplaced operations (placing counts an
 * operation out, unplacing counts it back in); what appends may build is over-approximated,
 * never under, so a branch is only cut when no order could complete it.
 */

import type { Operation, RegisterValue } from './history.ts';

/**
 * Starvation pruning: a value that some unplaced operation needs to find in the register (a read
 * of it, a cas expecting it that succeeded) but that the register does not hold and no unplaced
 * operation can produce is a dead end, however the rest is ordered. Counts are kept per value;
 * `null` is produced by deletes. A value `p + s` may also be built by an unplaced append of `s`,
 * but only if `p` is in the register now or can itself still appear: the check follows these
 * prefix chains (an over-approximation of what can appear, so the pruning stays exact). Without
 * the chain, a read of "a+b" kept the search alive long after "a" was overwritten for good.
 */
export class ValueSupply {
  private readonly producers = new Map<RegisterValue, number>();
  private readonly consumers = new Map<RegisterValue, number>();
  /** Unplaced appends that may succeed, by suffix. */
  private readonly suffixes = new Map<string, number>();
  /** For a needed value or one of its prefix chain: the ways an append may build it. */
  private readonly builds = new Map<string, { prefix: string; suffix: string }[]>();
  /** The inverse of `builds`: the needed values (and chain members) built on a value or suffix. */
  private readonly builtOn = new Map<RegisterValue, string[]>();
  /** For each value, everything built on it transitively (filled on first use). */
  private readonly builtOnClosure = new Map<RegisterValue, string[]>();

  constructor(queues: Operation[][]) {
    const suffixLengths = new Set<number>();
    for (const queue of queues) {
      for (const op of queue) {
        this.count(op, 1);
        const suffix = appendedSuffix(op);
        if (suffix !== undefined) suffixLengths.add(suffix.length);
      }
    }
    const compared = queues.flat().map(comparedValue).filter((value) => value !== undefined);
    const pending = [...this.consumers.keys(), ...compared].filter((value) => value !== null);
    for (let value = pending.pop(); value !== undefined; value = pending.pop()) {
      if (this.builds.has(value)) continue;
      const ways: { prefix: string; suffix: string }[] = [];
      for (const length of suffixLengths) {
        if (length > value.length) continue;
        const suffix = value.slice(value.length - length);
        if (!this.suffixes.has(suffix)) continue;
        const prefix = value.slice(0, value.length - length);
        ways.push({ prefix, suffix });
        this.link(prefix, value);
        this.link(suffix, value);
        if (!this.builds.has(prefix)) pending.push(prefix);
      }
      this.builds.set(value, ways);
    }
  }

  /**
   * Whether some operation may tell `value` apart from any other present value: one reads it or
   * compares with it, or with a value appends may build on it. Registers holding two present
   * values that are not distinguishable this way have the same futures.
   */
  distinguishable(value: string): boolean {
    return this.builds.has(value);
  }

  private link(from: string, to: string): void {
    const list = this.builtOn.get(from);
    if (list) list.push(to);
    else this.builtOn.set(from, [to]);
  }

  /**
   * After `op` was placed (and counted out), turning the register from `before` into `state`:
   * whether some value still needed can no longer appear. Only values whose supply `op` changed
   * are looked at: the one it overwrote, the one it writes, the suffix it appends, and everything
   * built on those by appends.
   */
  starvedBy(op: Operation, before: RegisterValue, state: RegisterValue): boolean {
    if (this.starvedAround(before, state)) return true;
    const produced = producedValue(op);
    if (produced !== undefined && this.starvedAround(produced, state)) return true;
    const suffix = appendedSuffix(op);
    return suffix !== undefined && this.starvedAround(suffix, state);
  }

  /** Account for placing (`delta = -1`) or unplacing (`+1`) an operation. */
  count(op: Operation, delta: number): void {
    const produced = producedValue(op);
    if (produced !== undefined) this.producers.set(produced, (this.producers.get(produced) ?? 0) + delta);
    const needed = neededValue(op);
    if (needed !== undefined) this.consumers.set(needed, (this.consumers.get(needed) ?? 0) + delta);
    const suffix = appendedSuffix(op);
    if (suffix !== undefined) this.suffixes.set(suffix, (this.suffixes.get(suffix) ?? 0) + delta);
  }

  /** Whether `value`, or a needed value built on it, is starved. */
  private starvedAround(value: RegisterValue, state: RegisterValue): boolean {
    if (this.starved(value, state)) return true;
    return this.closure(value).some((built) => this.starved(built, state));
  }

  private closure(value: RegisterValue): string[] {
    const known = this.builtOnClosure.get(value);
    if (known !== undefined) return known;
    const found = new Set<string>();
    const pending = [...(this.builtOn.get(value) ?? [])];
    for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
      if (found.has(next)) continue;
      found.add(next);
      pending.push(...(this.builtOn.get(next) ?? []));
    }
    const list = [...found];
    this.builtOnClosure.set(value, list);
    return list;
  }

  /** Whether `value` is needed later but can no longer appear, given the register holds `state`. */
  private starved(value: RegisterValue, state: RegisterValue): boolean {
    return value !== state && (this.consumers.get(value) ?? 0) > 0 && !this.producible(value, state);
  }

  /** Whether some unplaced operations may still leave `value` in the register. */
  private producible(value: RegisterValue, state: RegisterValue): boolean {
    if ((this.producers.get(value) ?? 0) > 0) return true;
    if (value === null) return false;
    for (const { prefix, suffix } of this.builds.get(value) ?? []) {
      if ((this.suffixes.get(suffix) ?? 0) > 0 && (prefix === state || this.producible(prefix, state))) return true;
    }
    return false;
  }
}

/** The suffix an append may add (not one that returned false). */
export function appendedSuffix(op: Operation): string | undefined {
  if (op.input.f !== 'append') return undefined;
  return op.output.kind === 'done' && op.output.result === false ? undefined : op.input.value;
}

/** The value an operation may leave in the register, if it writes one. */
export function producedValue(op: Operation): RegisterValue | undefined {
  switch (op.input.f) {
    case 'write': return op.input.value;
    case 'cas': return op.output.kind === 'done' && op.output.result === false ? undefined : op.input.value;
    case 'delete': return op.output.kind === 'done' && op.output.result === false ? undefined : null;
    case 'read':
    case 'append': return undefined;
    default: {
      const unreachable: never = op.input;
      return unreachable;
    }
  }
}

/** The value a cas compares the register with, when the outcome is not a needed value. */
function comparedValue(op: Operation): RegisterValue | undefined {
  return op.input.f === 'cas' && neededValue(op) === undefined ? op.input.expected : undefined;
}

/** The value an operation must find in the register, if one (a delete or append that returned false needs absent). */
function neededValue(op: Operation): RegisterValue | undefined {
  if (op.output.kind === 'read') return op.output.value;
  if (op.output.kind !== 'done') return undefined;
  if (op.input.f === 'cas' && op.output.result === true) return op.input.expected;
  if ((op.input.f === 'delete' || op.input.f === 'append') && op.output.result === false) return null;
  return undefined;
}

/** Whether two registers have the same futures: equal, or both present and not distinguishable. */
export function equivalent(supply: ValueSupply, a: RegisterValue, b: RegisterValue): boolean {
  if (a === b) return true;
  return a !== null && b !== null && !supply.distinguishable(a) && !supply.distinguishable(b);
}
