/**
 * What the replicated log itself costs per entry, with no I/O: `node --import tsx bench/log-cost.ts`.
 *
 * Intuition: the three state machines run in one process; writes arrive at the leader in turns of
 * BATCH (env, default 5) and every message is delivered with the flushes a controller would give.
 * With CODEC=1 every message also goes through the peer frame codec and every persisted record
 * through the write-ahead encoding, so the figure covers the pure-JS work of a write. The end-to-end
 * CPU per write (the benchmark's "CPU µs/op") minus this is the price of I/O: syscalls, wake-ups,
 * fsync hand-offs and memcached round trips. Prints µs per entry, summed over the three machines.
 * With COLD_MB=N, each turn is followed by a sweep over N MB of memory and a few thousand small
 * functions (not timed), as when other processes ran on the core between two of a controller's
 * wake-ups: what the same work costs with cold caches.
 */

import { createReplicatedLog, type LogMessage, type ReplicatedLog } from '../src/consistency/replicated-log.ts';
import { asPeerId, asRequestId, type Effect, type PeerId } from '../src/consistency/types.ts';
import { encodeFrame, FrameDecoder } from '../src/peer/frame.ts';
import { encodeValueAfter } from '../src/peer/value-codec.ts';
import { mulberry32 } from '../src/runtime/random.ts';
import type { Op } from '../src/store/types.ts';

const IDS = ['n1', 'n2', 'n3'].map(asPeerId);
const withCodecs = process.env.CODEC === '1';
const batch = Math.max(1, Number(process.env.BATCH ?? 5));
const entriesPerRun = 20_000;
const runs = 5;

let nowMs = 1_000;
let queue: Array<{ from: PeerId; to: PeerId; message: LogMessage }> = [];
let encodedBytes = 0;
const decoder = new FrameDecoder();
const machines = new Map<PeerId, ReplicatedLog>(
  IDS.map((id, index) => [
    id,
    createReplicatedLog({
      self: id, peers: IDS.filter((peer) => peer !== id), random: mulberry32(index + 1),
      heartbeatIntervalMs: 50, failureTimeoutMs: 500, persisted: [], nowMs, mode: 'sequential',
    }),
  ]),
);
const machine = (id: PeerId): ReplicatedLog => machines.get(id) as ReplicatedLog;

function carryOut(id: PeerId, effects: Effect<LogMessage>[]): void {
  for (const effect of effects) {
    if (effect.kind === 'send') {
      let message = effect.message;
      if (withCodecs) {
        const frame = encodeFrame(message);
        encodedBytes += frame.length;
        message = decoder.push(frame).messages[0] as LogMessage;
      }
      queue.push({ from: id, to: effect.to, message });
    } else if (effect.kind === 'persist' && withCodecs) {
      encodedBytes += encodeValueAfter(12, effect.record).length;
    } else if (effect.kind === 'apply' && effect.token !== null) {
      carryOut(id, machine(id).step({ kind: 'applied', nowMs, token: effect.token }));
    }
  }
}

function deliver(): void {
  while (queue.length > 0) {
    const turn = queue;
    queue = [];
    for (const { from, to, message } of turn) carryOut(to, machine(to).step({ kind: 'message', nowMs, from, message }));
    for (const id of IDS) carryOut(id, machine(id).step({ kind: 'flush', nowMs }));
  }
}

for (let tick = 0; tick < 200; tick += 1) {
  nowMs += 10;
  for (const id of IDS) carryOut(id, machine(id).step({ kind: 'tick', nowMs, peersUp: IDS }));
  deliver();
}
const leader = IDS.find((id) => machine(id).status().role === 'leader');
if (leader === undefined) throw new Error('no leader elected');

/** COLD_MB's sweep: this much memory and this many small functions, touched after each turn. */
const coldBytes = Math.max(0, Number(process.env.COLD_MB ?? 0)) * 1024 * 1024;
const sweep = new Uint8Array(coldBytes);
const strangers = Array.from({ length: coldBytes > 0 ? 2_000 : 0 }, (_, at) =>
  new Function('a', `let s = a + ${at}; for (let i = 0; i < 3; i++) s = (s * 31 + ${at}) | 0; return s;`) as (a: number) => number);
let swept = 0;
/** Evicts this process's data and code from the CPU's caches; returns the milliseconds it took. */
function chill(): number {
  if (coldBytes === 0) return 0;
  const startMs = performance.now();
  for (let at = 0; at < sweep.length; at += 64) sweep[at] = ((sweep[at] as number) + 1) & 255;
  for (const stranger of strangers) swept = stranger(swept);
  return performance.now() - startMs;
}

const value = Buffer.alloc(100, 120);
let nextRequestId = 1;
function usPerEntry(): number {
  const startMs = performance.now();
  let chilledMs = 0;
  for (let written = 0; written < entriesPerRun; written += batch) {
    for (let offset = 0; offset < batch; offset += 1) {
      const op: Op = { kind: 'store', verb: 'set', key: `key:${(written + offset) % 10_000}`, value, flags: 0, expiresAtMs: 0, casUnique: 0n };
      carryOut(leader as PeerId, machine(leader as PeerId).step({ kind: 'request', nowMs, requestId: asRequestId(nextRequestId++), session: 1, op }));
    }
    carryOut(leader as PeerId, machine(leader as PeerId).step({ kind: 'flush', nowMs }));
    deliver();
    nowMs += 1;
    chilledMs += chill();
  }
  return ((performance.now() - startMs - chilledMs) * 1000) / entriesPerRun;
}

for (let run = 0; run < runs; run += 1) {
  encodedBytes = 0;
  const cost = usPerEntry();
  const bytes = withCodecs ? `, ${(encodedBytes / entriesPerRun).toFixed(0)} bytes encoded per entry` : '';
  const cold = coldBytes > 0 ? `, caches swept (${coldBytes / 1024 / 1024} MB) after each turn` : '';
  console.log(`${cost.toFixed(2)} µs per entry over the three machines${withCodecs ? ' with codecs' : ''} (batches of ${batch})${bytes}${cold}`);
}
