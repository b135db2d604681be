/**
 * A small HDR-style latency histogram: log-bucketed counts with bounded relative error.
 *
 * Intuition: a latency log must answer "what was p99.9?" without keeping every sample. Values
 * below 2^SUB_BUCKET_BITS are counted exactly; above that, each power of two [2^e, 2^(e+1)) is
 * split into 2^SUB_BUCKET_BITS equal sub-buckets, so a bucket's width is at most 1/128 of its
 * lower bound (< 0.8 % relative error) and the whole range up to 2^VALUE_BITS_MAX takes a few
 * thousand counters. This is HdrHistogram's layout with a fixed precision.
 *
 * Invariants: counts only grow; `count` is the sum of all bucket counts; a percentile is the
 * highest value equivalent to the bucket holding the sample of that rank, clamped to the
 * largest recorded value, so p50 ≤ p99 ≤ p999 ≤ max always holds. Values are non-negative
 * integers (the load generator records nanoseconds); larger values are clamped to the top.
 */

const SUB_BUCKET_BITS = 7;
const SUB_BUCKET_COUNT = 2 ** SUB_BUCKET_BITS;
/** 2^40 ns is about 18 minutes: nothing the benchmark measures is longer. */
const VALUE_BITS_MAX = 40;
const VALUE_MAX = 2 ** VALUE_BITS_MAX - 1;
const BUCKET_COUNT = (VALUE_BITS_MAX - SUB_BUCKET_BITS + 1) * SUB_BUCKET_COUNT;

/** A histogram in transferable form: non-zero buckets as [index, count] pairs. */
export interface HistogramSnapshot {
  buckets: Array<[number, number]>;
  valueMin: number;
  valueMax: number;
  sum: number;
}

/** Index of the bucket that counts `value` (a non-negative integer ≤ VALUE_MAX). */
export function bucketIndex(value: number): number {
  if (value < SUB_BUCKET_COUNT) return value;
  const exponent = Math.floor(Math.log2(value));
  const shift = exponent - SUB_BUCKET_BITS;
  // Math.log2 can round up just below a power of two; the sub-bucket must stay in range.
  let sub = Math.floor(value / 2 ** shift);
  let fixedShift = shift;
  if (sub >= 2 * SUB_BUCKET_COUNT) {
    fixedShift += 1;
    sub = Math.floor(value / 2 ** fixedShift);
  } else if (sub < SUB_BUCKET_COUNT) {
    fixedShift -= 1;
    sub = Math.floor(value / 2 ** fixedShift);
  }
  return fixedShift * SUB_BUCKET_COUNT + sub;
}

/** The inclusive range of values a bucket counts. */
export function bucketRange(index: number): { low: number; high: number } {
  if (index < SUB_BUCKET_COUNT) return { low: index, high: index };
  const shift = Math.floor(index / SUB_BUCKET_COUNT) - 1;
  const sub = index - shift * SUB_BUCKET_COUNT;
  return { low: sub * 2 ** shift, high: (sub + 1) * 2 ** shift - 1 };
}

/** Log-bucketed counts of non-negative integer values (nanoseconds in this benchmark). */
export class Histogram {
  private readonly counts = new Float64Array(BUCKET_COUNT);
  private total = 0;
  private sum = 0;
  private valueMin = Number.POSITIVE_INFINITY;
  private valueMax = 0;

  /** Counts one value; negatives count as 0, values past the range as the range's top. */
  record(value: number): void {
    const clamped = Math.min(VALUE_MAX, Math.max(0, Math.round(value)));
    this.add(bucketIndex(clamped), 1);
    this.total += 1;
    this.sum += clamped;
    if (clamped < this.valueMin) this.valueMin = clamped;
    if (clamped > this.valueMax) this.valueMax = clamped;
  }

  get count(): number {
    return this.total;
  }

  get min(): number {
    return this.total === 0 ? 0 : this.valueMin;
  }

  get max(): number {
    return this.valueMax;
  }

  get mean(): number {
    return this.total === 0 ? 0 : this.sum / this.total;
  }

  /**
   * The value at `percentile` (0–100): the highest value equivalent to the bucket holding the
   * sample of rank ceil(percentile/100 × count), clamped to [min, max]. 0 when empty.
   */
  percentile(percentile: number): number {
    if (this.total === 0) return 0;
    // The tolerance keeps 99.9 % of 1000 at rank 999: 99.9 / 100 × 1000 is 999.0000000000001 in binary floating point.
    const exactRank = (Math.min(100, Math.max(0, percentile)) / 100) * this.total;
    const rank = Math.max(1, Math.ceil(exactRank - 1e-9 * Math.max(1, exactRank)));
    let seen = 0;
    for (const [index, count] of this.counts.entries()) {
      seen += count;
      if (seen >= rank) return Math.min(this.valueMax, Math.max(this.valueMin, bucketRange(index).high));
    }
    return this.valueMax;
  }

  /** Adds `count` to bucket `index` (below BUCKET_COUNT: bucketIndex's, or a snapshot's checked). */
  private add(index: number, count: number): void {
    const counted = this.counts[index];
    if (counted === undefined) throw new RangeError(`no histogram bucket ${index}`);
    this.counts[index] = counted + count;
  }

  /** Adds every count of `other` into this histogram. */
  merge(other: Histogram): void {
    this.mergeSnapshot(other.snapshot());
  }

  /** The non-zero buckets and summary fields, small enough to send over IPC. */
  snapshot(): HistogramSnapshot {
    const buckets: Array<[number, number]> = [];
    for (const [index, count] of this.counts.entries()) {
      if (count > 0) buckets.push([index, count]);
    }
    return { buckets, valueMin: this.min, valueMax: this.valueMax, sum: this.sum };
  }

  /** Adds a snapshot's counts; malformed pairs (bad index or count) are skipped. */
  mergeSnapshot(snapshot: HistogramSnapshot): void {
    let added = 0;
    for (const [index, count] of snapshot.buckets) {
      if (!Number.isInteger(index) || index < 0 || index >= BUCKET_COUNT || !(count > 0)) continue;
      this.add(index, count);
      added += count;
    }
    if (added === 0) return;
    this.total += added;
    this.sum += snapshot.sum;
    this.valueMin = Math.min(this.valueMin, snapshot.valueMin);
    this.valueMax = Math.max(this.valueMax, snapshot.valueMax);
  }

  /** A histogram holding exactly a snapshot's counts. */
  static fromSnapshot(snapshot: HistogramSnapshot): Histogram {
    const histogram = new Histogram();
    histogram.mergeSnapshot(snapshot);
    return histogram;
  }
}
