/**
 * Items by the suffix they stand for (an append's), grouped by the suffix's length: which of them
 * end a value takes one lookup per distinct length instead of a scan of them all. A long fault run
 * appends thousands of suffixes to each key and reads as many values of it, and the checkers ask
 * this of every value read.
 */
export class SuffixIndex<T> {
  private readonly byLength = new Map<number, Map<string, T[]>>();

  add(suffix: string, item: T): void {
    let bySuffix = this.byLength.get(suffix.length);
    if (bySuffix === undefined) this.byLength.set(suffix.length, (bySuffix = new Map()));
    const items = bySuffix.get(suffix);
    if (items === undefined) bySuffix.set(suffix, [item]);
    else items.push(item);
  }

  /**
   * The items of each suffix `value` ends with, one list per suffix; `shorter`: only suffixes
   * shorter than `value`, else the whole of it counts as a suffix too.
   */
  *ending(value: string, shorter: boolean): Generator<readonly T[]> {
    for (const [length, bySuffix] of this.byLength) {
      if (length > value.length || (shorter && length === value.length)) continue;
      const items = bySuffix.get(value.slice(value.length - length));
      if (items !== undefined) yield items;
    }
  }

  /** Whether `value` ends with any of the suffixes (`shorter` as for `ending`). */
  endsAny(value: string, shorter: boolean): boolean {
    return this.ending(value, shorter).next().done !== true;
  }
}
