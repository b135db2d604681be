/**
 * The backend watch: what this controller knows of its local memcached, and when and how it tells
 * the mode that the replica must be rebuilt (a `backend_reset` event).
 *
 * It polls memcached's health, keeps the epoch file (memcached restarted while we were down) and
 * the loss file (its eviction and flush counters), and turns failed store calls into a reset,
 * backing off when the repair keeps failing. A reset is queued as a bare event; its details
 * (`emptied`, `kept`, the requests `awaiting` it) are decided when the controller takes it from the
 * queue (`takeReset`), from everything seen since it was queued, so no queued event is edited.
 *
 * Invariants: at most one reset is queued; the epoch file names a restart, and the loss file an
 * eviction or a flush, only once the mode's reset is durable; the replica is trusted again only
 * once that reset is durable.
 */

import assert from 'node:assert';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { clockMs } from '../runtime/clock.ts';
import type { Event, RequestId } from '../consistency/types.ts';
import type { Logger } from '../runtime/log.ts';
import { replacePrivateTextFile } from '../runtime/private-files.ts';
import { refusalText } from '../protocol/refusals.ts';
import { DEFAULT_LIMITS } from '../protocol/types.ts';
import { LossWatch } from '../store/loss-watch.ts';
import type { Replica } from '../store/replica.ts';
import { storedItemBytes } from '../store/slab-room.ts';
import { StoreError, type BackendHealth, type KVBackend } from '../store/types.ts';
import type { MemoryReporter } from './memory-reporter.ts';

export type BackendResetEvent = Extract<Event<unknown>, { kind: 'backend_reset' }>;

export interface BackendWatchOptions {
  replica: Pick<Replica, 'health' | 'suspect' | 'acknowledgeReset'>;
  backend: Pick<KVBackend, 'expectEpoch'>;
  /** Where this node keeps its state files (data_dir/node id). */
  stateDir: string;
  memory: MemoryReporter;
  /** The log modes: failed applies' replies wait for the next reset; repeated failures back off. */
  holdsFailedApplies: boolean;
  /** Eventual mode: a write memcached refused for want of memory leaves the replica trusted. */
  refusalsKeepTrust: boolean;
  valueBytesMax: number;
  log: Logger;
  /** Queues an event for the mode. */
  enqueue: (event: Event<unknown>) => void;
  /** Runs `work` once everything the mode has written so far is durable. */
  whenDurable: (work: () => void) => void;
}

/**
 * Most failed applies whose replies wait for the next backend reset (a memcached down for long
 * would otherwise pile up the ids of requests long timed out); past it, they are answered at once.
 */
const awaitingApplyMax = 10_000;
export const backendPollIntervalMs = 1000;
/** How often memcached is polled while its last poll failed. */
const downPollIntervalMs = 100;
/**
 * How long memcached must have gone unanswered before new requests are refused: a restart by its
 * supervisor (kill and start again, milliseconds) is ridden through, requests waiting for it.
 */
const refuseWhenDownForMs = 1000;
/** A backend failure this soon after the last reset counts as the repair failing again. */
const resetRetryWindowMs = 5000;
/** The first wait before telling the mode again of such a failure; it doubles each time. */
const resetRetryDelayMs = 50;

export class BackendWatch {
  private health: BackendHealth;
  private readonly epochFile: string;
  /** What memcached's counters said at the last poll (LossWatch.state), kept across restarts. */
  private readonly lossesFile: string;
  private readonly losses: LossWatch;
  private backendFailed = false;
  /**
   * Every backend failure since the last reset left the replica as it was but for writes whose
   * outcome is unknown (timeouts, broken connections) or that memcached refused without touching
   * the key (StoreError.untouched: an add or replace it had no memory for; a refused set drops
   * the old value), and no reset failed. The reset then says `kept`.
   */
  private failuresKept = true;
  /**
   * The reset queued and not yet taken, if any: what has been seen since it was queued (whether
   * memcached emptied, whether every failure kept the replica). `takeReset` turns it into the event.
   */
  private resetDue: { emptied: boolean; kept: boolean } | null = null;
  /** When the last backend_reset was queued, and how many in a row a failure followed within the retry window. */
  private lastResetQueuedMs = Number.NEGATIVE_INFINITY;
  private resetRetries = 0;
  /** memcached's words for the last write it refused without storing it, and when (for `show`). */
  private lastRefusal: { message: string; atMs: number } | null = null;
  /** Requests whose apply failed since the last reset, answered by the mode at the next one. */
  private awaitingApply: RequestId[] = [];
  /**
   * A new backend epoch (memcached restarted), written to the epoch file only once the mode's
   * reset is on disk: written earlier, a crash in between would restart onto the emptied replica
   * believing it had seen that restart, and trust it.
   */
  private epochAfterReset: string | null = null;
  /**
   * memcached's counters showed a loss (an eviction, another client's flush) whose reset is not
   * durable yet: like a new epoch, they are saved only then, or a crash in between would restart
   * comparing with counters that already include the loss, and trust the replica.
   */
  private lossesUnsaved = false;
  /**
   * The replica is to be rebuilt at the first poll, as if memcached had restarted empty (see
   * replica-owner.ts), and then this runs, once that reset is durable; null otherwise.
   */
  private emptiedAtStart: (() => void) | null = null;
  /** Refusals that kept the replica trusted so far (logged at powers of two; each event's `serial`). */
  private refusalsKept = 0;
  private warnedEvictsWhenFull = false;
  private warnedItemLimit = false;
  /** The longest item memcached must take: the longest key with a value of value_bytes_max (and flags). */
  private readonly itemBytesNeeded: number;
  private timer: NodeJS.Timeout | null = null;
  /** The next poll while memcached is down, if one is due. */
  private downTimer: NodeJS.Timeout | null = null;
  /** Since when (monotonic ms) the polls have gone unanswered, or null while the last one was answered. */
  private downSinceMs: number | null = null;
  private stopped = false;

  constructor(private readonly options: BackendWatchOptions) {
    // The backend's epoch when this controller last saw it: if memcached restarted (emptied) while
    // the controller was down, the first health poll sees a new epoch and the replica is rebuilt.
    this.epochFile = path.join(options.stateDir, 'backend-epoch');
    this.health = { ok: true, detail: 'starting', epoch: readTextIfExists(this.epochFile) };
    // Evictions and flushes while this controller was down count too: what it last saw is on disk.
    this.lossesFile = path.join(options.stateDir, 'backend-counters');
    this.losses = new LossWatch(readTextIfExists(this.lossesFile));
    if (this.health.epoch !== '') options.backend.expectEpoch?.(this.health.epoch);
    this.itemBytesNeeded = storedItemBytes('k'.repeat(DEFAULT_LIMITS.keyBytesMax), options.valueBytesMax) + 4;
  }

  /** What the last poll said (before the first: the epoch last seen, and "starting"). */
  current(): BackendHealth {
    return this.health;
  }

  /**
   * Why memcached cannot be reached (the last poll's failure), once the polls have gone unanswered
   * for refuseWhenDownForMs; null otherwise. The controller then refuses requests at once rather
   * than hold them until memcached is back.
   */
  unreachable(nowMs: number): string | null {
    if (this.health.ok || this.downSinceMs === null || nowMs - this.downSinceMs < refuseWhenDownForMs) return null;
    return this.health.detail;
  }

  /** memcached's words for a write it refused lately (within two polls), for `show`. */
  recentRefusal(nowMs: number): string | undefined {
    // A replica waiting for room fails again at least once a poll interval (see `failed`).
    return this.lastRefusal !== null && nowMs - this.lastRefusal.atMs <= 2 * backendPollIntervalMs ? this.lastRefusal.message : undefined;
  }

  /** How many refusals that kept the replica trusted have been passed on to the mode (the last `serial`). */
  get refusalsPassedOn(): number {
    return this.refusalsKept;
  }

  /**
   * Before the first poll: the replica is to be rebuilt as if memcached had restarted empty;
   * `then` runs once that reset is durable (so a crash before it rebuilds again at the next start).
   */
  rebuildAtStart(then: () => void): void {
    this.emptiedAtStart = then;
  }

  /** Polls once a poll interval from now on. */
  start(): void {
    this.timer = setInterval(() => void this.poll(), backendPollIntervalMs);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== null) clearInterval(this.timer);
    if (this.downTimer !== null) clearTimeout(this.downTimer);
  }

  /**
   * An apply or put failed. A refusal for want of memory that kept the replica trusted
   * (ReplicaOptions.refusalsKeepTrust) has the mode re-read `keys`; anything else is a failure.
   */
  storeFailed(what: 'apply' | 'put', keys: readonly string[] | null, token: number | null, error: unknown): void {
    if (!this.refusedKeepingTrust(keys, token, error)) this.failed(what, error);
  }

  /**
   * Whether a failed apply's reply waits for the next reset (the mode answers it there, with its
   * result if a replay applies it again: see the backend_reset event's `awaiting`).
   */
  awaitReset(requestId: RequestId): boolean {
    if (!this.options.holdsFailedApplies || !this.backendFailed || this.awaitingApply.length >= awaitingApplyMax) return false;
    this.awaitingApply.push(requestId);
    return true;
  }

  /**
   * A failed store operation means this replica may have missed an apply. Once the backend
   * answers again, the mode is told the replica must be rebuilt, or, when every failure since
   * the last reset left it as it was but for the failed writes (`kept`), repaired by a replay.
   */
  failed(what: string, error: unknown): void {
    // A call refused because it was issued before the last acknowledged reset says nothing new
    // about the backend: the replica is trusted again (suspect is null) and being rebuilt.
    if (error instanceof StoreError && error.code === 'BACKEND_RESET' && this.options.replica.suspect === null) return;
    // Calls the suspect replica refused (BACKEND_RESET) never reached memcached.
    const kept = error instanceof StoreError && (error.code !== 'BACKEND_FAILED' || error.untouched) && what !== 'reset';
    this.rememberRefusal(error);
    if (!kept) {
      this.failuresKept = false;
      if (this.resetDue !== null) this.resetDue.kept = false;
    }
    if (!this.backendFailed) {
      const delayMs = this.resetDelayMs(clockMs());
      if (isPowerOfTwoOrZero(this.resetRetries)) this.options.log.error('backend operation failed', { what, error: String(error), retries: this.resetRetries });
      // The replica refuses everything until the mode is told; tell it as soon as the backend
      // answers (after the delay, if any).
      if (delayMs === 0) setImmediate(() => void this.poll());
      else setTimeout(() => void this.poll(), delayMs).unref();
    }
    this.backendFailed = true;
  }

  /** Asks memcached how it is; queues a reset if it lost anything or a store call failed. */
  async poll(): Promise<void> {
    const stored = this.options.memory.pollStarting();
    let health: BackendHealth;
    try {
      health = await this.options.replica.health();
    } catch (error) {
      health = { ok: false, detail: String((error as Error).message ?? error), epoch: this.health.epoch };
    }
    const previous = this.health;
    this.health = health;
    this.downSinceMs = health.ok ? null : (this.downSinceMs ?? clockMs());
    this.options.memory.polled(health.memory, stored);
    if (previous.ok !== health.ok) {
      const level = health.ok ? 'info' : 'error';
      this.options.log[level](health.ok ? 'backend healthy' : 'backend down', { detail: health.detail });
    }
    if (this.stopped) return;
    if (!health.ok) {
      // Polled again soon: once down for refuseWhenDownForMs, requests are refused until it answers.
      this.downTimer ??= setTimeout(() => {
        this.downTimer = null;
        void this.poll();
      }, downPollIntervalMs).unref();
      return;
    }
    const restarted = previous.epoch !== '' && health.epoch !== previous.epoch;
    if (restarted) this.epochAfterReset = health.epoch;
    else if (health.epoch !== previous.epoch) replacePrivateTextFile(this.epochFile, health.epoch);
    const { evicted, flushed } = this.noteLosses(health);
    this.noteItemLimit(health);
    const emptied = restarted || flushed || this.emptiedAtStart !== null;
    if (!emptied && !evicted && !this.backendFailed && this.options.replica.suspect === null) return;
    if (this.resetDue !== null) {
      if (emptied) this.resetDue.emptied = true;
      if (emptied || evicted) this.resetDue.kept = false;
      return;
    }
    const kept = !emptied && !evicted && this.failuresKept;
    if (this.emptiedAtStart === null) this.options.log.warn('backend lost its contents or missed writes; rebuilding the replica', { restarted, flushed, evicted, kept });
    this.resetDue = { emptied, kept };
    this.lastResetQueuedMs = clockMs();
    this.options.enqueue({ kind: 'backend_reset', nowMs: this.lastResetQueuedMs });
  }

  /** The queued reset is being taken: the event the mode steps, as everything seen until now says. */
  takeReset(queued: BackendResetEvent): BackendResetEvent {
    assert(this.resetDue !== null, 'a backend_reset taken that the watch did not queue');
    const { emptied, kept } = this.resetDue;
    this.resetDue = null;
    const awaiting = this.awaitingApply;
    this.awaitingApply = [];
    return { kind: 'backend_reset', nowMs: queued.nowMs, emptied, kept, awaiting };
  }

  /**
   * The mode has stepped the reset, its effects not yet carried out: everything issued before now
   * goes to the replica first (so the reset refuses it, rather than running it against the emptied
   * replica); once the reset is durable the replica is trusted again.
   */
  resetStepped(): void {
    this.options.whenDurable(() => {
      this.options.replica.acknowledgeReset();
      this.backendFailed = false;
      this.failuresKept = true;
    });
  }

  /** The reset's effects are carried out: once what the mode wrote is durable, a new epoch and the counters' losses count as seen. */
  resetCarriedOut(): void {
    const files: Array<[file: string, text: string]> = [];
    // Every loss seen so far is behind this reset (a reset is queued at each, and taken here).
    if (this.lossesUnsaved) files.push([this.lossesFile, this.losses.state()]);
    if (this.epochAfterReset !== null) files.push([this.epochFile, this.epochAfterReset]);
    this.lossesUnsaved = false;
    this.epochAfterReset = null;
    const atStart = this.emptiedAtStart;
    this.emptiedAtStart = null;
    if (files.length > 0 || atStart !== null) {
      this.options.whenDurable(() => {
        files.forEach(([file, text]) => replacePrivateTextFile(file, text));
        atStart?.();
      });
    }
  }

  /**
   * Whether memcached refused a write for want of memory, leaving `keys` as they were, and the
   * replica stays trusted (ReplicaOptions.refusalsKeepTrust): the mode is told to re-read them.
   */
  private refusedKeepingTrust(keys: readonly string[] | null, token: number | null, error: unknown): boolean {
    if (!this.options.refusalsKeepTrust || keys === null || !(error instanceof StoreError) || !error.untouched) return false;
    if (this.options.replica.suspect !== null) return false;
    this.rememberRefusal(error);
    this.refusalsKept += 1;
    if (isPowerOfTwoOrZero(this.refusalsKept)) {
      const meta = { keys: keys.slice(0, 3), error: error.message, refusals: this.refusalsKept };
      this.options.log.warn('memcached refused a write and kept the keys as they were; re-reading them', meta);
    }
    this.options.enqueue({ kind: 'refused', nowMs: clockMs(), keys, token, serial: this.refusalsKept });
    return true;
  }

  /**
   * How long to wait before telling the mode of a failure. In the log modes a failure soon after
   * the last reset (the replay failing again, as while memcached stays full) waits longer each
   * time, up to a poll interval: each reset replays at once, so the replica would fail in a tight
   * loop. Eventual mode is told at once: its reset rebuilds the replica while holding requests and
   * fails again only when a new write comes, while a suspect replica refuses everything.
   */
  private resetDelayMs(nowMs: number): number {
    this.resetRetries = nowMs - this.lastResetQueuedMs < resetRetryWindowMs ? this.resetRetries + 1 : 0;
    if (!this.options.holdsFailedApplies || this.resetRetries === 0) return 0;
    return Math.min(backendPollIntervalMs, resetRetryDelayMs * 2 ** (this.resetRetries - 1));
  }

  /** memcached's words for a write it refused without storing it, for `show` (backendRefusal). */
  private rememberRefusal(error: unknown): void {
    if (!(error instanceof StoreError) || error.refusal === undefined) return;
    this.lastRefusal = { message: refusalText(error.refusal), atMs: clockMs() };
  }

  /**
   * What memcached threw away since the last poll of the same epoch (see LossWatch): evicted items
   * (the replica is rebuilt like one that missed writes) or a flush_all another client sent (the
   * replica counts as emptied). Warns once when memcached is set to evict at all (no -M).
   */
  private noteLosses(health: BackendHealth): { evicted: boolean; flushed: boolean } {
    const { log } = this.options;
    if (health.evictsWhenFull === true && !this.warnedEvictsWhenFull) {
      this.warnedEvictsWhenFull = true;
      log.warn('memcached evicts items when full (started without -M): an eviction loses data on this replica, which is then rebuilt from peers; start memcached with -M', { backend: health.detail });
    }
    const before = this.losses.state();
    const { evicted, flushedByOthers } = this.losses.observe(health);
    if (evicted > 0 || flushedByOthers > 0) this.lossesUnsaved = true;
    else if (!this.lossesUnsaved && this.losses.state() !== before) replacePrivateTextFile(this.lossesFile, this.losses.state());
    if (evicted > 0) log.error('memcached evicted items this replica held', { evictions: evicted });
    if (flushedByOthers > 0) log.error('memcached was flushed by another client: this replica is empty', { flushes: flushedByOthers });
    return { evicted: evicted > 0, flushed: flushedByOthers > 0 };
  }

  /** Warns once when memcached takes shorter items than value_bytes_max allows (its -I is too small). */
  private noteItemLimit(health: BackendHealth): void {
    const itemBytesMax = health.memory?.itemBytesMax;
    if (this.warnedItemLimit || itemBytesMax === undefined) return;
    if (this.itemBytesNeeded <= itemBytesMax) return;
    this.warnedItemLimit = true;
    this.options.log.warn('memcached takes shorter items than value_bytes_max allows: longer values are refused (object too large for cache); start memcached with -I 2m, as startup.sh does, or lower value_bytes_max', {
      backend: health.detail,
      itemBytesMax,
      valueBytesMax: this.options.valueBytesMax,
    });
  }
}

/** A small state file's trimmed text, or '' when there is none. */
function readTextIfExists(file: string): string {
  try {
    return readFileSync(file, 'utf8').trim();
  } catch {
    return '';
  }
}

function isPowerOfTwoOrZero(count: number): boolean {
  return (count & (count - 1)) === 0;
}
