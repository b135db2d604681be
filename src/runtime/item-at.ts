/**
 * Reading an array at an index that the caller's own structure guarantees: a node number a graph
 * handed out, a peer's place in a vector sized for every peer, a position below a length just
 * checked. A miss there is a programmer error, so these throw instead of returning undefined.
 *
 * Never for input from outside the process (a peer's frame, a client's bytes, a file): that is
 * checked where it arrives, and what is missing is refused or dropped there.
 *
 * `wordAt` is `itemAt` for bitsets: one receiver type keeps its reads monomorphic in hot loops.
 */

/** `items[index]`, which the caller knows is there. */
export function itemAt<T>(items: ArrayLike<T>, index: number): T {
  const item = items[index];
  if (item === undefined) throw new RangeError(`index ${index} is outside 0..${items.length - 1}`);
  return item;
}

/** `words[index]` of a typed array (a bitset, a clock matrix), which the caller knows is there. */
export function wordAt(words: Uint32Array | Int32Array | Uint16Array, index: number): number {
  const word = words[index];
  if (word === undefined) throw new RangeError(`word ${index} is outside 0..${words.length - 1}`);
  return word;
}
