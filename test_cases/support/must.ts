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
