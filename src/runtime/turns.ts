/**
 * Work over a whole replica's keys, cut into turns of the event loop. Millions of keys sorted in
 * one call stop the controller for seconds (a leader's transfer read of 3.9 million keys listed
 * in memcached's hash order sorted for 4 s: no heartbeat went out, and its followers elected
 * another), so such work yields between slices and heartbeats, votes and clients go on.
 */

/** Resolves on a later turn of the event loop, after the I/O waiting now. */
export function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Keys sorted, or moved by a merge, between two turns: about 10-20 ms of work on this kind of machine. */
const SORT_SLICE_KEYS = 16_384;

/**
 * `keys` sorted as `Array.prototype.sort` sorts strings (by UTF-16 code units), in place, yielding
 * between slices: runs of SORT_SLICE_KEYS sorted natively, then merged pairwise bottom-up.
 * Resolves to `keys`. An array of one slice or less is sorted at once.
 */
export async function sortInTurns(keys: string[]): Promise<string[]> {
  if (keys.length <= SORT_SLICE_KEYS) return keys.sort();
  for (let start = 0; start < keys.length; start += SORT_SLICE_KEYS) {
    const run = keys.slice(start, start + SORT_SLICE_KEYS).sort();
    for (let at = 0; at < run.length; at += 1) keys[start + at] = run[at] as string;
    await nextTurn();
  }
  let from = keys;
  let to = new Array<string>(keys.length);
  let moved = 0;
  for (let width = SORT_SLICE_KEYS; width < keys.length; width *= 2) {
    for (let left = 0; left < keys.length; left += 2 * width) {
      const middle = Math.min(left + width, keys.length);
      const end = Math.min(left + 2 * width, keys.length);
      let i = left;
      let j = middle;
      for (let out = left; out < end; out += 1) {
        // Take from the left run while its key is not greater: the sort stays stable.
        if (j >= end || (i < middle && (from[i] as string) <= (from[j] as string))) to[out] = from[i++] as string;
        else to[out] = from[j++] as string;
        moved += 1;
        if (moved % SORT_SLICE_KEYS === 0) await nextTurn();
      }
    }
    [from, to] = [to, from];
  }
  if (from !== keys) for (let at = 0; at < keys.length; at += 1) keys[at] = from[at] as string;
  return keys;
}
