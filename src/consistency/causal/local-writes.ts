/**
 * This node's own writes in causal mode: a client's request served at once (a read from the
 * replica, a write applied at a fresh version of ours), held while the replica is first loaded;
 * and the keys written since, fetched back now and then (the dirty fetch) for the machine to queue
 * as the next batch of every chain.
 *
 * Owns: the held requests, the dirty keys and the dirty fetch's schedule, and the keys holding
 * counter metadata (a merge over one may make a state of ours, which is shipped: a rejoin).
 * Invariants: requests wait for the start-up fetch, so a write's version beats what the replica
 * holds; a local write raises visible[self] to its version; at most one dirty fetch is in flight,
 * none while requests are held, and its batch covers our writes up to visible[self] at its issue.
 */

import { FetchPacer } from '../fetch-pacer.ts';
import type { Event, KeyedEntry, RequestId } from '../types.ts';
import type { Entry } from '../../store/types.ts';
import { opKeys, showsNothing } from '../../store/types.ts';
import { refused } from '../../protocol/refusals.ts';
import { packVersion, tickHlc, versionNode } from '../hlc.ts';
import type { MemoryAdmission } from '../memory-admission.ts';
import type { CausalCore, FetchPurpose, Out } from './core.ts';
import type { RebuildGate } from './rebuild-gate.ts';
import type { CausalMessage } from './messages.ts';

export type RequestEvent = Extract<Event<CausalMessage>, { kind: 'request' }>;

export class LocalWrites {
  /** Requests that came before the start-up fetch returned; null once it has. */
  private held: RequestEvent[] | null = [];
  private rebuilds = 0;
  private readonly dirty = new Set<string>();
  /**
   * Keys holding counter metadata (store/counter.ts) → the version the replica was last seen to
   * hold: a merged version other than that may have made a new state, which is shipped as ours.
   */
  private readonly counted = new Map<string, bigint>();
  /** A merge made states of ours (counter joins) that the next dirty fetch ships at a version of its own. */
  private rejoinPending = false;
  private dirtyAll = false;
  private dirtyFetchToken: number | null = null;
  private readonly pacer: FetchPacer;

  constructor(
    private readonly core: CausalCore,
    /** The memory guard: asked for every write this node takes. */
    private readonly memory: MemoryAdmission,
    /** What is held back from reads, and what writes depend on meanwhile. */
    private readonly gate: RebuildGate,
  ) {
    this.pacer = new FetchPacer(core.tuning.pushIntervalMs);
  }

  /** Whether the start-up fetch has returned: until then requests are held and nothing is shipped. */
  get loaded(): boolean {
    return this.held === null;
  }

  /** A wake asked for is due by now: the next one may be asked for. */
  clearDueWake(): void {
    this.pacer.advance(this.core.nowMs);
  }

  onRequest(event: RequestEvent, out: Out): void {
    if (this.held === null) return this.serve(event, out);
    if (this.held.length >= this.core.tuning.heldRequestsMax) {
      out.push({ kind: 'reply', requestId: event.requestId, reply: refused('busy', 'replica still loading') });
      return;
    }
    this.held.push(event);
  }

  private serve(event: RequestEvent, out: Out): void {
    const core = this.core;
    const { op, requestId, nowMs } = event;
    const notShown = this.gate.refusal(op);
    if (notShown !== null) {
      out.push({ kind: 'reply', requestId, reply: notShown });
      return;
    }
    if (op.kind === 'get') {
      out.push({ kind: 'read', requestId, op, nowMs, fence: this.gate.fence });
      return;
    }
    core.clock = tickHlc(core.clock, nowMs);
    const cas = packVersion(core.clock, core.selfIndex);
    const refusal = this.memory.refusal(op, cas);
    if (refusal !== null) {
      out.push({ kind: 'reply', requestId, reply: refusal });
      return;
    }
    const apply = { kind: 'apply', op, cas, nowMs, requestId: requestId as RequestId, token: null, counterNode: core.selfIndex } as const;
    out.push(showsNothing(op) ? apply : { ...apply, fence: this.gate.fence });
    core.visible[core.selfIndex] = cas;
    this.markDirty(opKeys(op));
    if (op.kind === 'arith') this.counted.set(op.key, cas);
  }

  /** Keys whose local writes the next dirty fetch ships (null: every key). */
  markDirty(keys: readonly string[] | null): void {
    if (keys === null) this.dirtyAll = true;
    else for (const key of keys) this.dirty.add(key);
  }

  /** Issues the dirty fetch when one is due (`unpaced`: now, as a stopping node does), else asks to be woken when it will be. */
  scheduleDirtyFetch(out: Out, unpaced = false): void {
    const core = this.core;
    if (this.dirtyFetchToken !== null || this.held !== null) return;
    if (this.dirty.size === 0 && !this.dirtyAll) return;
    if (!unpaced && !this.pacer.mayFetch(core.nowMs, out)) return;
    if (this.rejoinPending) {
      // The batch covers the joins: a version of ours moves its `to` on (as ./merging.ts's shipOwnWritesAgain).
      this.rejoinPending = false;
      core.clock = tickHlc(core.clock, core.nowMs);
      core.visible[core.selfIndex] = packVersion(core.clock, core.selfIndex);
    }
    const keys = this.dirtyAll ? null : [...this.dirty];
    this.dirty.clear();
    this.dirtyAll = false;
    const purpose: FetchPurpose = { kind: 'dirty', keys, to: core.own(core.visible), deps: this.gate.deps(core.visible) };
    this.dirtyFetchToken = core.issueFetch(out, keys, purpose);
  }

  /** Whether local writes wait to be read back for shipping: keys dirty, or their read-back under way. */
  get dirtyPending(): boolean {
    return this.dirtyFetchToken !== null || this.dirty.size > 0 || this.dirtyAll;
  }

  /** The dirty fetch returned: the next one may be issued. */
  onDirtyFetched(): void {
    this.dirtyFetchToken = null;
  }

  /** Whether merging `entry` may leave a state other than either (counter metadata on either side). */
  mayRejoin(key: string, entry: Entry): boolean {
    const held = this.counted.get(key);
    if (held !== undefined) return held !== entry.cas;
    return entry.counter !== undefined || entry.resetCas !== undefined || this.dirty.has(key);
  }

  /** A merge may have made states of ours at `keys`: the next dirty fetch ships them. */
  rejoined(keys: readonly string[]): void {
    this.markDirty(keys);
    this.rejoinPending = true;
  }

  /** What the replica returned holds counter metadata at these keys, or none. */
  noteCounted(entries: readonly KeyedEntry[]): void {
    for (const [key, entry] of entries) {
      if (entry.counter !== undefined || entry.resetCas !== undefined) this.counted.set(key, entry.cas);
      else this.counted.delete(key);
    }
  }

  /**
   * The replica as found at start or after a reset. It holds our own writes in order, so our
   * greatest version in it bounds a prefix of them; but it need not be a causally closed cut of
   * the others' writes: a merge memcached refused, or one cut short by a crash or a reset, may
   * have left a later entry without an earlier one. So their components stay zero, and every peer
   * sends a snapshot (the machine's onVisible, ./merging.ts's onBatchPart).
   */
  onRebuilt(entries: KeyedEntry[], out: Out): void {
    this.rebuilds += 1;
    // After a reset our own component stays (the machine's onBackendReset): it names our latest write.
    if (this.rebuilds === 1) this.raiseOwnToHeld(entries);
    const held = this.held;
    this.held = null;
    for (const event of held ?? []) this.serve(event, out);
  }

  private raiseOwnToHeld(entries: readonly KeyedEntry[]): void {
    const core = this.core;
    for (const [, entry] of entries) {
      if (versionNode(entry.cas) === core.selfIndex && entry.cas > core.own(core.visible)) core.visible[core.selfIndex] = entry.cas;
    }
  }

  /**
   * The replica was emptied. The dirty fetch in flight is dropped with the others, but its keys
   * still hold local writes the chain claims up to `visible[self]`: the next dirty fetch must ship them.
   */
  onBackendReset(): void {
    this.counted.clear();
    const dirtyFetch = this.dirtyFetchToken === null ? undefined : this.core.fetches.get(this.dirtyFetchToken);
    if (dirtyFetch?.kind === 'dirty') this.markDirty(dirtyFetch.keys);
    this.dirtyFetchToken = null;
  }
}
