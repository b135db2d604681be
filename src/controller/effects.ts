/**
 * Carries out a mode's effects, in the order the mode gave them, behind the durability gate.
 *
 * A persist goes to the gate (./durability.ts); every other effect runs once every record before
 * it is durable and every effect before it has run (at once when nothing waits), so nothing that
 * depends on a record leaves this process before the record is on disk, while the event loop keeps
 * taking input. A send the mode marks `beforeDurable` rests on no record and leaves at once.
 * `apply`, `read`, `put`, `fetch` reach the replica in issue order (the Replica keeps per-key
 * order); what the store says back becomes an event, a reply, or a failure for the backend watch.
 */

import { clockMs } from '../runtime/clock.ts';
import type { Effect, Event, KeyedEntry, RequestId } from '../consistency/types.ts';
import type { Logger } from '../runtime/log.ts';
import type { PeerNetwork } from '../peer/network.ts';
import { refused } from '../protocol/refusals.ts';
import type { Reply } from '../protocol/types.ts';
import type { PacedRead, Replica } from '../store/replica.ts';
import { opKeys, type Op } from '../store/types.ts';
import type { BackendWatch } from './backend-watch.ts';
import { keysHeldBy } from '../consistency/changed-keys.ts';
import { HeldKeys } from './held-keys.ts';
import { DurabilityGate, type DurabilityError, type WriteAhead } from './durability.ts';
import type { MemoryReporter } from './memory-reporter.ts';
import type { PendingRequests } from './requests.ts';
import { storeErrorReply } from './stats.ts';
import type { ControllerStatus } from './status.ts';

/** Most entries of a `sliced` fetch's result stepped at once (see `deliverSliced`). */
export const FETCHED_SLICE_ENTRIES = 16_384;

/** What the durability gate holds back: an effect, or a step of the controller's own. */
type Deferred = Effect<unknown> | (() => void);

export interface EffectRunnerOptions {
  writeAhead: WriteAhead;
  /** config.ini's wal_sync. */
  sync: 'fsync' | 'write';
  /** The write-ahead file refused a write: durability is lost. */
  failed: (error: DurabilityError) => void;
  /** Each fsync's duration, in ms. */
  fsynced: (ms: number) => void;
  replica: Replica;
  network: Pick<PeerNetwork, 'send'>;
  watch: BackendWatch;
  memory: MemoryReporter;
  requests: PendingRequests;
  status: ControllerStatus;
  enqueue: (event: Event<unknown>) => void;
  log: Logger;
  /** Closes every client connection (an `end_sessions` effect). */
  endSessions: () => void;
}

export class EffectRunner {
  readonly durability: DurabilityGate<Deferred>;
  /** Client connections with a write's apply waiting for the disk, and how many each has. */
  private readonly heldApplies = new Map<number, number>();
  /** Paced fetches under way (a `fetch_more` reads the next slice), by token. */
  private readonly pacedReads = new Map<number, PacedRead>();
  /** The keys store effects waiting for the disk change: a read of others may run ahead (`keysOnly`). */
  private readonly heldKeys = new HeldKeys();
  /** The mode's pending wake-up (a `wake` effect): when it is due, and its timer. */
  private wakeAtMs = Infinity;
  private wakeTimer: NodeJS.Timeout | null = null;
  /** Stopped: sends are dropped (see `stop`). */
  private stopped = false;

  constructor(private readonly options: EffectRunnerOptions) {
    this.durability = new DurabilityGate<Deferred>({
      writeAhead: options.writeAhead,
      sync: options.sync,
      release: (work) => (typeof work === 'function' ? work() : this.execute(work)),
      failed: options.failed,
      fsynced: options.fsynced,
    });
  }

  /** Whether an apply of this client connection's own write waits for the disk. */
  holdsApplyOf(session: number): boolean {
    return this.heldApplies.has(session);
  }

  /** Whether a store effect waiting for the disk changes one of `keys`. */
  holdsKeys(keys: readonly string[]): boolean {
    return this.heldKeys.touches(keys);
  }

  /** Runs `work` once everything persisted so far is durable, after every effect before it. */
  whenDurable(work: () => void): void {
    this.durability.whenDurable(this.durability.latest(), work);
  }

  /** A persist goes to the gate; any other effect runs once what it depends on is durable. */
  carryOut(effect: Effect<unknown>): void {
    if (effect.kind === 'persist') {
      this.durability.append([{ record: effect.record, compact: effect.compact }]);
      return;
    }
    // Nothing waits for the disk (always so in a mode without records): no key or apply is held.
    if (this.durability.runsNow(this.durability.latest())) this.execute(effect);
    else if (effect.kind === 'send' && effect.beforeDurable === true) this.execute(effect);
    else if (effect.kind === 'read' && effect.keysOnly === true && !this.heldKeys.touches(opKeys(effect.op) ?? [])) this.execute(effect);
    else if (effect.kind === 'apply' && effect.requestId !== null) this.holdApply(effect, effect.requestId);
    else this.holdForDisk(effect);
  }

  /** Hands an effect to the gate, noting the keys it changes while it waits (see HeldKeys). */
  private holdForDisk(effect: Effect<unknown>, run: () => void = () => this.execute(effect)): void {
    const keys = keysHeldBy(effect);
    if (keys === undefined) {
      this.durability.whenDurable(this.durability.latest(), effect);
      return;
    }
    this.heldKeys.hold(keys);
    this.durability.whenDurable(this.durability.latest(), () => {
      this.heldKeys.release(keys);
      run();
    });
  }

  /**
   * No wake-up is due any more, and nothing more goes to the peers: the mode's last messages (its
   * `leave`) are out, and a send the gate still holds (an ack waiting for its fsync) must not follow
   * them, or a peer would take it for this node back and honour its read lease again.
   */
  stop(): void {
    this.stopped = true;
    if (this.wakeTimer !== null) clearTimeout(this.wakeTimer);
  }

  /** An apply answering a client waits for the disk; its connection reads no further locally until it runs. */
  private holdApply(effect: Effect<unknown>, requestId: RequestId): void {
    const session = this.options.requests.sessionOf(requestId);
    if (session === undefined) {
      this.holdForDisk(effect);
      return;
    }
    this.heldApplies.set(session, (this.heldApplies.get(session) ?? 0) + 1);
    this.holdForDisk(effect, () => {
      const left = (this.heldApplies.get(session) ?? 1) - 1;
      if (left > 0) this.heldApplies.set(session, left);
      else this.heldApplies.delete(session);
      this.execute(effect);
    });
  }

  private execute(effect: Effect<unknown>): void {
    const { replica, requests, watch, memory, enqueue } = this.options;
    switch (effect.kind) {
      case 'send':
        if (!this.stopped) this.options.network.send(effect.to, effect.message);
        return;
      case 'reply':
        requests.resolve(effect.requestId, effect.reply);
        return;
      case 'apply': {
        const { requestId, token } = effect;
        const ctx = { cas: effect.cas, nowMs: effect.nowMs, counterNode: effect.counterNode };
        const applied = (reply: Reply): void => {
          memory.noteStored(effect.cas);
          if (requestId !== null) requests.resolve(requestId, this.fenced(effect.fence) ? RESULT_FENCED : reply);
          if (token !== null) enqueue({ kind: 'applied', nowMs: clockMs(), token });
        };
        const appliedNow = replica.applyNow(effect.op, ctx);
        if (appliedNow !== null) {
          applied(appliedNow);
          return;
        }
        replica.apply(effect.op, ctx).then(
          applied,
          (error: unknown) => {
            watch.storeFailed('apply', opKeys(effect.op), token, error);
            // A committed write of the log modes: the mode answers it at the reset.
            if (requestId !== null && !watch.awaitReset(requestId)) requests.resolve(requestId, storeErrorReply(error));
          },
        );
        return;
      }
      case 'put': {
        const { token } = effect;
        replica.put(effect.entries, effect.how, effect.joinCas).then(
          () => {
            for (const [, entry] of effect.entries) memory.noteStored(entry.cas);
            if (token !== null) enqueue({ kind: 'applied', nowMs: clockMs(), token });
          },
          (error: unknown) => watch.storeFailed('put', effect.entries.map(([key]) => key), token, error),
        );
        return;
      }
      case 'read': {
        const { requestId, op, fence } = effect;
        const served = replica.readNow(op, effect.nowMs);
        if (served !== null) {
          this.answerRead(requestId, op, served, fence);
          return;
        }
        replica.read(op, effect.nowMs).then(
          (reply) => this.answerRead(requestId, op, reply, fence),
          (error: unknown) => requests.resolve(requestId, storeErrorReply(error)),
        );
        return;
      }
      case 'settle': {
        const { token } = effect;
        replica.settled().then(
          () => enqueue({ kind: 'applied', nowMs: clockMs(), token }),
          (error: unknown) => watch.failed('settle', error),
        );
        return;
      }
      case 'fetch': {
        const { token, sliced, paged, paced, versionsOnly } = effect;
        if (paced === true) {
          const read = replica.readPaced(versionsOnly === true);
          this.pacedReads.set(token, read);
          return this.nextPaced(token, read);
        }
        replica.fetch(effect.keys, { paged: paged === true, versionsOnly: versionsOnly === true }).then(
          (entries) => (sliced === true ? this.deliverSliced(token, entries, 0) : enqueue({ kind: 'fetched', nowMs: clockMs(), token, entries })),
          (error: unknown) => watch.failed('fetch', error),
        );
        return;
      }
      case 'fetch_more': {
        const read = this.pacedReads.get(effect.token);
        if (effect.stop === true) this.pacedReads.delete(effect.token);
        else if (read !== undefined) this.nextPaced(effect.token, read);
        return;
      }
      case 'purge':
        replica.purge(effect.tombstones).catch((error: unknown) => watch.failed('purge', error));
        return;
      case 'reset':
        replica.reset().catch((error: unknown) => watch.failed('reset', error));
        return;
      case 'end_sessions':
        this.options.log.warn('closing every client connection', { reason: effect.reason });
        this.options.endSessions();
        return;
      case 'persist':
        throw new Error('persist effects go to the durability gate (carryOut)');
      case 'note':
        this.options.log[effect.level](effect.message, effect.meta);
        return;
      case 'wake':
        this.wakeAfter(effect.afterMs);
        return;
      default: {
        const unreachable: never = effect;
        throw new Error(`unknown effect ${JSON.stringify(unreachable)}`);
      }
    }
  }

  /** Delivers a `flush` event after `afterMs`, unless a wake-up already pending comes sooner. */
  private wakeAfter(afterMs: number): void {
    const atMs = clockMs() + afterMs;
    if (this.wakeTimer !== null && this.wakeAtMs <= atMs) return;
    if (this.wakeTimer !== null) clearTimeout(this.wakeTimer);
    this.wakeAtMs = atMs;
    this.wakeTimer = setTimeout(() => {
      this.wakeTimer = null;
      this.wakeAtMs = Infinity;
      this.options.enqueue({ kind: 'flush', nowMs: clockMs() });
    }, afterMs);
  }

  /**
   * A `sliced` fetch's result, FETCHED_SLICE_ENTRIES entries per event and one event per turn of
   * the event loop: stepped whole, a 1,500,000-key replica's took the mode 6-8 s in one step, with
   * no heartbeat, status page or client served meanwhile.
   */
  private deliverSliced(token: number, entries: KeyedEntry[], from: number): void {
    const to = Math.min(entries.length, from + FETCHED_SLICE_ENTRIES);
    const more = to < entries.length;
    const slice = from === 0 && !more ? entries : entries.slice(from, to);
    this.options.enqueue({ kind: 'fetched', nowMs: clockMs(), token, entries: slice, ...(more ? { more: true as const } : {}) });
    if (more) setImmediate(() => this.deliverSliced(token, entries, to));
  }

  /** The next slice of a paced fetch, as a `fetched` event (`more` unless it was the last). */
  private nextPaced(token: number, read: PacedRead): void {
    read.next().then(
      ({ entries, done }) => {
        if (done) this.pacedReads.delete(token);
        this.options.enqueue({ kind: 'fetched', nowMs: clockMs(), token, entries, ...(done ? {} : { more: true as const }) });
      },
      (error: unknown) => {
        this.pacedReads.delete(token);
        this.options.watch.failed('fetch', error);
      },
    );
  }

  private answerRead(requestId: RequestId, op: Op, reply: Reply, fence: number | undefined): void {
    this.options.requests.resolve(requestId, this.fenced(fence) ? READ_FENCED : this.options.status.countRead(op, reply));
  }

  /**
   * Whether memcached refused a write (keeping the replica trusted) that the mode had not stepped
   * when it issued the effect fenced at `fence`: what the effect shows may be undone by it.
   */
  private fenced(fence: number | undefined): boolean {
    return fence !== undefined && this.options.watch.refusalsPassedOn > fence;
  }
}

const FENCE_DETAIL = 'memcached refused a write this result may depend on';
const READ_FENCED = refused('not_caught_up', FENCE_DETAIL);
const RESULT_FENCED = refused('result_unknown', `applied, but ${FENCE_DETAIL}`);
