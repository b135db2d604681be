/**
 * Session tokens: a client's causal context, carried from one controller to another.
 *
 * A token is the visible vector of the controller that issued it — everything the connection has
 * written or read there is covered by it — written as `c1.` and one base-36 version per node in
 * sorted node order, e.g. `c1.k2x9p0a8g.k2x9p0b1s.0`. A controller given a token waits until its
 * own visible vector covers it. A token is input from a client: parsing it is total (null when
 * it is not a token for a cluster of this size), never an exception.
 */

const PREFIX = 'c1.';
const U64_LIMIT = 1n << 64n;
const COMPONENT = /^[0-9a-z]{1,13}$/;

/** The token of a visible vector. */
export function formatToken(vector: readonly bigint[]): string {
  return PREFIX + vector.map((version) => version.toString(36)).join('.');
}

/** The vector a token names, or null when it is malformed or for another cluster size. */
export function parseToken(token: string, nodeCount: number): bigint[] | null {
  if (!token.startsWith(PREFIX)) return null;
  const parts = token.slice(PREFIX.length).split('.');
  if (parts.length !== nodeCount) return null;
  const vector: bigint[] = [];
  for (const part of parts) {
    if (!COMPONENT.test(part)) return null;
    let value = 0n;
    for (const digit of part) value = value * 36n + BigInt(parseInt(digit, 36));
    if (value >= U64_LIMIT) return null;
    vector.push(value);
  }
  return vector;
}
