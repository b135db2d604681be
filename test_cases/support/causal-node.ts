/**
 * One causal-mode machine (n1 of n1, n2, n3) driven by hand, for tests of its peer protocol: its
 * replica is a map that fetches read and puts write; every batch it sends is acknowledged by the
 * peer at once (the peer holds it); peers' messages are whatever the test hands it.
 */

import { CausalMachine } from '../../src/consistency/causal/machine.ts';
import type { CausalMessage, VersionVector } from '../../src/consistency/causal/messages.ts';
import { HLC_ZERO, packVersion, tickHlc } from '../../src/consistency/hlc.ts';
import { asPeerId, type Effect, type Event, type KeyedEntry, type PeerId } from '../../src/consistency/types.ts';

export const [N1, N2, N3] = [asPeerId('n1'), asPeerId('n2'), asPeerId('n3')] as const;
export type Batch = Extract<CausalMessage, { kind: 'batch' }>;

/** A version written by node `index` (n1, n2, n3 → 0, 1, 2) at `atMs`. */
export const version = (index: number, atMs: number): bigint => packVersion(tickHlc(HLC_ZERO, atMs), index);

/**
 * Node n1 alone, its replica a map: fetches read it, puts and applies write it; peers' acks come
 * back at once for every batch n1 sends (the peers hold it), unless `peersAck` is false; the
 * effects of each step are kept.
 */
export function node(options: { peersAck?: boolean } = {}) {
  const peersAck = options.peersAck ?? true;
  const machine = new CausalMachine({
    self: N1, peers: [N2, N3], random: () => 0.5, heartbeatIntervalMs: 100, failureTimeoutMs: 1000, persisted: [], nowMs: 1000,
  });
  const replica = new Map<string, KeyedEntry[1]>();
  let nowMs = 1000;
  let nextRequest = 1;
  const sent: Array<{ to: PeerId; message: CausalMessage }> = [];
  const replies: Array<{ requestId: number; reply: unknown }> = [];
  const reads: number[] = [];
  const applies: number[] = [];
  const step = (event: Event<CausalMessage>): void => {
    const pending: Array<Event<CausalMessage>> = [event];
    for (let budget = 1000; pending.length > 0 && budget > 0; budget--) {
      for (const effect of machine.step(pending.shift() as Event<CausalMessage>) as Array<Effect<CausalMessage>>) {
        if (effect.kind === 'fetch') {
          const entries = [...replica].filter(([key]) => effect.keys === null || effect.keys.includes(key));
          pending.push({ kind: 'fetched', nowMs, token: effect.token, entries });
        } else if (effect.kind === 'put') {
          for (const [key, entry] of effect.entries) if ((replica.get(key)?.cas ?? -1n) < entry.cas) replica.set(key, entry);
          if (effect.token !== null) pending.push({ kind: 'applied', nowMs, token: effect.token });
        } else if (effect.kind === 'apply') {
          applies.push(effect.requestId as number);
          if (effect.op.kind !== 'store') continue;
          const { key, value, flags } = effect.op;
          replica.set(key, { value, flags, expiresAtMs: 0, cas: effect.cas });
        } else if (effect.kind === 'send') {
          sent.push({ to: effect.to, message: effect.message });
          const { message } = effect;
          if (peersAck && message.kind === 'batch' && message.part === message.parts - 1) {
            const ack: CausalMessage = { kind: 'batch_ack', to: message.to, visible: [message.to, 0n, 0n], resync: false };
            pending.push({ kind: 'message', nowMs, from: effect.to, message: ack });
          }
        } else if (effect.kind === 'reply') {
          replies.push({ requestId: effect.requestId as number, reply: effect.reply });
        } else if (effect.kind === 'read') {
          reads.push(effect.requestId as number);
        }
      }
    }
  };
  const request = (op: Extract<Event<CausalMessage>, { kind: 'request' }>['op']): number => {
    const requestId = nextRequest++;
    step({ kind: 'request', nowMs, requestId: requestId as never, session: 1, op });
    return requestId;
  };
  return {
    step,
    sent,
    replica,
    advance(ms: number): void {
      nowMs += ms;
      step({ kind: 'tick', nowMs, peersUp: [N2, N3] });
    },
    /** A get of `key`: 'read' when served from the replica, else the refusal's reason. */
    get(key: string): string {
      const requestId = request({ kind: 'get', keys: [key] });
      if (reads.includes(requestId)) return 'read';
      const reply = replies.find((each) => each.requestId === requestId)?.reply as { reason?: string } | undefined;
      return reply?.reason ?? 'no answer';
    },
    set(key: string): void {
      request({ kind: 'store', verb: 'set', key, flags: 0, expiresAtMs: 0, value: Buffer.from(key), casUnique: 0n });
    },
    /** Any op: 'applied' when taken, else the refusal's reason. */
    call(op: Extract<Event<CausalMessage>, { kind: 'request' }>['op']): string {
      const requestId = request(op);
      if (applies.includes(requestId)) return 'applied';
      const reply = replies.find((each) => each.requestId === requestId)?.reply as { reason?: string } | undefined;
      return reply?.reason ?? 'no answer';
    },
    /** `from` sends its whole replica: `entries`, covering `deps` (and depending on `needs`, if given). */
    snapshot(from: PeerId, entries: KeyedEntry[], deps: VersionVector, needs?: VersionVector): void {
      const to = deps[[N1, N2, N3].indexOf(from)] ?? 0n;
      const message: Batch = { kind: 'batch', snapshot: true, base: 0n, prev: 0n, to, deps, part: 0, parts: 1, entries };
      if (needs !== undefined) message.needs = needs;
      step({ kind: 'message', nowMs, from, message });
    },
    /** `from` sends the first batch of its chain: `entries`, its writes up to `to`, depending on `deps`. */
    chain(from: PeerId, entries: KeyedEntry[], to: bigint, deps: VersionVector): void {
      const message: Batch = { kind: 'batch', snapshot: false, base: 0n, prev: 0n, to, deps, part: 0, parts: 1, entries };
      step({ kind: 'message', nowMs, from, message });
    },
    /** Any message from a peer. */
    receive(from: PeerId, message: CausalMessage): void {
      step({ kind: 'message', nowMs, from, message });
    },
    /** The first of two parts of a snapshot from `from` (the second never comes). */
    snapshotPart(from: PeerId): void {
      const message: Batch = { kind: 'batch', snapshot: true, base: 0n, prev: 0n, to: 0n, deps: [0n, 0n, 0n], part: 0, parts: 2, entries: [] };
      step({ kind: 'message', nowMs, from, message });
    },
    /** Snapshots n1 asked `peer` for since `since` (a resync ack). */
    asks(peer: PeerId, since = 0): number {
      return sent.slice(since).filter(({ to, message }) => to === peer && message.kind === 'batch_ack' && message.resync).length;
    },
    nowMs: (): number => nowMs,
    /** The visible vector. */
    visibleVector: (): readonly bigint[] => machine.visibleVector(),
    /** Batches parked and snapshots waiting. */
    parked: (): number => machine.counters().parked,
  };
}

export const entry = (cas: bigint): KeyedEntry[1] => ({ value: Buffer.from('v'), flags: 0, expiresAtMs: 0, cas });

/** n1 after it saw n2's write of x (from n2's first snapshot) and then its memcached emptied. */
export function resetAfterSeeingX(options: { peersAck?: boolean } = {}): { n1: ReturnType<typeof node>; x: bigint } {
  const n1 = node(options);
  n1.advance(100);
  const x = version(1, 1050);
  n1.snapshot(N2, [['x', entry(x)]], [0n, x, 0n]);
  n1.step({ kind: 'backend_reset', nowMs: n1.nowMs(), emptied: true });
  n1.replica.clear();
  return { n1, x };
}
