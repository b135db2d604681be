/**
 * Reading what a test's own setup guarantees is there: the reply to a request it just sent, a match
 * of a pattern it wrote, the entry for a key it stored. A miss fails the test with a message naming
 * what was missing, not with a TypeError some lines later. For an array position, use itemAt
 * (src/runtime/item-at.ts), which names the index and the length.
 */

/** `value`, which the test knows is there; `what` names it in the failure if it is not. */
export function must<T>(value: T | undefined, what: string): T {
  if (value === undefined) throw new Error(`expected ${what}, found nothing`);
  return value;
}

/** A tuple of `Count` items of type `Item`. */
export type Tuple<Item, Count extends number, Built extends Item[] = []> =
  Built['length'] extends Count ? Built : Tuple<Item, Count, [...Built, Item]>;

/** `items`, which the test knows holds exactly `count` of them, as a tuple it can destructure. */
export function exactly<Item, Count extends number>(items: readonly Item[], count: Count): Tuple<Item, Count> {
  if (items.length !== count) throw new Error(`expected ${count} items, found ${items.length}`);
  return [...items] as Tuple<Item, Count>;
}
