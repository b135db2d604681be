/**
 * The durability gate: what a mode says after a write-ahead record leaves this controller only
 * once that record is durable, and nothing waits for the disk on the event loop.
 *
 * Records are appended at once and written in batches, one batch at a time and in order: while one
 * is on its way to the disk, the next gathers everything appended meanwhile (group commit: many
 * records, one fsync). `append` returns a ticket (the records appended so far); work handed to
 * `whenDurable` runs once its ticket is durable and all work handed over before it has run, so a
 * mode's effects keep their order across turns as within one. The gate does no I/O and reads no
 * clock: the WriteAhead it is given writes (a file, off the event loop; memory, in the simulator).
 *
 * Invariants: the durable count never passes the appended count and never goes back; work runs
 * in the order handed over, each once; after a failed write nothing more is written or run.
 */

declare const ticketBrand: unique symbol;
/** How many records were appended when it was issued: durable once that many are. */
export type Ticket = number & { readonly [ticketBrand]: true };

/** One record for the write-ahead file. `compact`: the file is rewritten to start with it. */
export interface WalAppend {
  record: unknown;
  compact: boolean;
}

/** What the gate hands its WriteAhead at once: records in order, maybe a compaction among them. */
export interface WalBatch {
  records: readonly WalAppend[];
  /** wal_sync = fsync: the batch counts as written only once fsynced. A compaction always is. */
  sync: boolean;
}

/** What went wrong writing a batch: the disk refused the write, the fsync, or a compaction. */
export type DurabilityErrorCode = 'WAL_WRITE_FAILED' | 'WAL_FSYNC_FAILED' | 'WAL_COMPACT_FAILED';

/** The write-ahead file could not take a batch: nothing of it counts, and nothing after it runs. */
export class DurabilityError extends Error {
  override readonly name = 'DurabilityError';
  constructor(
    readonly code: DurabilityErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** How a batch went: written (and fsynced, maybe: when and how long), or refused. */
export type WalWriteResult = { ok: true; fsync: { endedAtMs: number; ms: number } | null } | { ok: false; error: DurabilityError };

/** Where the gate writes: a batch at a time (the gate never hands over the next before `done`). */
export interface WriteAhead {
  write(batch: WalBatch, done: (result: WalWriteResult) => void): void;
  /** Stops writing: a batch on its way may or may not reach the disk. */
  close(): void;
}

export interface DurabilityGateOptions<T> {
  writeAhead: WriteAhead;
  /** config.ini's wal_sync. */
  sync: 'fsync' | 'write';
  /** Carries out work once it may run. */
  release: (work: T) => void;
  /** Told once, when a batch is refused: durability is lost. */
  failed: (error: DurabilityError) => void;
  /** Told of each fsync's duration, in ms (for the metrics). */
  fsynced?: (ms: number) => void;
}

/** What `stats` reports, for the controller's `stats` and `show`. */
export interface DurabilityStats {
  fsyncs: number;
  fsyncLastMs: number;
  /** The slowest fsync that ended within FSYNC_RECENT_MS. */
  fsyncSlowestRecentMs: number;
  /** Records appended and not yet durable. */
  recordsWaiting: number;
}

/** How far back `fsyncSlowestRecentMs` looks. */
export const FSYNC_RECENT_MS = 60_000;

export class DurabilityGate<T> {
  private appended = 0;
  private durable = 0;
  /** Appended, not yet handed to the WriteAhead. */
  private unwritten: WalAppend[] = [];
  private writing = false;
  private failure: DurabilityError | null = null;
  /** Work waiting, in order; `waitingHead` is the first not yet run. */
  private waiting: Array<{ ticket: number; work: T }> = [];
  private waitingHead = 0;
  private releasing = false;
  private readonly fsyncTimes = new SlowestRecent(FSYNC_RECENT_MS);
  private fsyncs = 0;
  private fsyncLastMs = 0;

  constructor(private readonly options: DurabilityGateOptions<T>) {}

  /** Takes records for the write-ahead file; they go out on the next `writeAppended`. */
  append(records: readonly WalAppend[]): Ticket {
    for (const record of records) this.unwritten.push(record);
    this.appended += records.length;
    return this.appended as Ticket;
  }

  /** The ticket of everything appended so far. */
  latest(): Ticket {
    return this.appended as Ticket;
  }

  /** How much work waits for a record: effects the mode issued that have not run yet. */
  waitingCount(): number {
    return this.waiting.length - this.waitingHead;
  }

  /** Records appended so far, and how many of them are durable. */
  position(): { appended: number; durable: number } {
    return { appended: this.appended, durable: this.durable };
  }

  /** Whether work handed over now with `ticket` would run at once: it is durable and nothing waits. */
  runsNow(ticket: Ticket): boolean {
    return this.failure === null && this.waitingHead === this.waiting.length && ticket <= this.durable && !this.releasing;
  }

  /**
   * Runs `work` once `ticket` is durable and the work handed over before it has run: at once when
   * nothing waits. After a failed write, never.
   */
  whenDurable(ticket: Ticket, work: T): void {
    if (this.failure !== null) return;
    if (this.runsNow(ticket)) {
      this.options.release(work);
      return;
    }
    this.waiting.push({ ticket, work });
  }

  /**
   * Hands everything appended since the last batch to the WriteAhead, unless a batch is on its
   * way: then it goes as soon as that one is done (with whatever is appended until then).
   */
  writeAppended(): void {
    if (this.writing || this.failure !== null || this.unwritten.length === 0) return;
    const records = this.unwritten;
    const target = this.appended;
    this.unwritten = [];
    this.writing = true;
    const sync = this.options.sync === 'fsync' || records.some((record) => record.compact);
    this.options.writeAhead.write({ records, sync }, (result) => this.written(target, result));
  }

  stats(nowMs: number): DurabilityStats {
    return {
      fsyncs: this.fsyncs,
      fsyncLastMs: this.fsyncLastMs,
      fsyncSlowestRecentMs: this.fsyncTimes.slowest(nowMs),
      recordsWaiting: this.appended - this.durable,
    };
  }

  /** Stops: nothing more is written or run. */
  close(): void {
    this.failure ??= new DurabilityError('WAL_WRITE_FAILED', 'the write-ahead file was closed');
    this.waiting = [];
    this.waitingHead = 0;
    this.options.writeAhead.close();
  }

  private written(target: number, result: WalWriteResult): void {
    this.writing = false;
    if (this.failure !== null) return;
    if (!result.ok) {
      this.failure = result.error;
      this.waiting = [];
      this.waitingHead = 0;
      this.options.failed(result.error);
      return;
    }
    if (result.fsync !== null) {
      this.fsyncs += 1;
      this.fsyncLastMs = result.fsync.ms;
      this.fsyncTimes.note(result.fsync.endedAtMs, result.fsync.ms);
      this.options.fsynced?.(result.fsync.ms);
    }
    this.durable = target;
    this.release();
    this.writeAppended();
  }

  private release(): void {
    if (this.releasing) return;
    this.releasing = true;
    try {
      for (;;) {
        const next = this.waiting[this.waitingHead];
        if (next === undefined || next.ticket > this.durable || this.failure !== null) break;
        this.waitingHead += 1;
        this.options.release(next.work);
      }
    } finally {
      this.releasing = false;
    }
    if (this.waitingHead === this.waiting.length) {
      this.waiting = [];
      this.waitingHead = 0;
    }
  }
}

/** The largest value noted within the last `windowMs`: a sliding-window maximum. */
export class SlowestRecent {
  /** Values still in the window, each larger than every one noted after it. */
  private candidates: Array<{ atMs: number; value: number }> = [];

  constructor(private readonly windowMs: number) {}

  note(atMs: number, value: number): void {
    for (let last = this.candidates.at(-1); last !== undefined && last.value <= value; last = this.candidates.at(-1)) this.candidates.pop();
    this.candidates.push({ atMs, value });
  }

  /** The largest value noted after `nowMs - windowMs`, or 0. */
  slowest(nowMs: number): number {
    const cutoffMs = nowMs - this.windowMs;
    let expired = 0;
    for (let next = this.candidates[0]; next !== undefined && next.atMs <= cutoffMs; next = this.candidates[expired]) expired += 1;
    if (expired > 0) this.candidates.splice(0, expired);
    return this.candidates[0]?.value ?? 0;
  }
}
