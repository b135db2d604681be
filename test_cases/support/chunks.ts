/**
 * Runs a streaming decoder case three ways — as one chunk, byte by byte, and split in two at every
 * boundary — and checks that every way decodes to the same items.
 *
 * Intuition: TCP delivers bytes in arbitrary pieces, so a decoder's output must depend only on the
 * bytes, never on where the chunks fall (docs/design.md: "every decoder test runs each case as one chunk,
 * byte by byte, and split at every boundary").
 */

import { expect } from 'vitest';

/** Anything fed Buffers that returns what each chunk completes. */
export interface StreamingDecoder<Item> {
  push(chunk: Buffer): Item[];
}

/** Every way of chunking `bytes` that the helper tries, with a name for failure messages. */
export function chunkings(bytes: Buffer): Array<{ name: string; chunks: Buffer[] }> {
  const ways: Array<{ name: string; chunks: Buffer[] }> = [{ name: 'whole', chunks: [bytes] }];
  const bytewise: Buffer[] = [];
  for (let index = 0; index < bytes.length; index++) bytewise.push(bytes.subarray(index, index + 1));
  ways.push({ name: 'byte by byte', chunks: bytewise });
  for (let split = 1; split < bytes.length; split++) {
    ways.push({ name: `split at ${split}`, chunks: [bytes.subarray(0, split), bytes.subarray(split)] });
  }
  return ways;
}

/** Feeds `chunks` to a fresh decoder and collects all items. Chunks are copies, so reuse is caught. */
export function decodeChunks<Item>(makeDecoder: () => StreamingDecoder<Item>, chunks: Buffer[]): Item[] {
  const decoder = makeDecoder();
  const items: Item[] = [];
  for (const chunk of chunks) {
    const copy = Buffer.from(chunk);
    items.push(...decoder.push(copy));
    copy.fill(0xee); // a decoder that kept a view of the chunk would now see garbage
  }
  return items;
}

/**
 * Decodes `bytes` whole, byte by byte and split at every boundary; asserts all agree and returns
 * the items of the whole run. Splitting at every boundary is quadratic: keep cases short, or pass
 * `splitEvery` false for long inputs (whole and byte by byte still run).
 */
export function decodeEveryWay<Item>(
  makeDecoder: () => StreamingDecoder<Item>,
  bytes: Buffer | string,
  splitEvery = true,
): Item[] {
  const input = typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes;
  const [whole, ...others] = chunkings(input).filter((way) => splitEvery || !way.name.startsWith('split'));
  if (whole === undefined) throw new Error('chunkings gave no way to split the input');
  const reference = decodeChunks(makeDecoder, whole.chunks);
  for (const way of others) {
    expect(decodeChunks(makeDecoder, way.chunks), way.name).toEqual(reference);
  }
  return reference;
}
