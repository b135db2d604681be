/**
 * An EffectRunner over a fake replica whose every call (read, apply, put, fetch) waits for the
 * test to settle it (a paced read hands over the slices the test gave it at once), with the
 * events it enqueues and the messages it sends collected: for tests of what the runner does with
 * the store's answers and the durability gate's releases.
 */

import os from 'node:os';
import type { Effect, Event, KeyedEntry, RequestId } from '../../src/consistency/types.ts';
import { BackendWatch } from '../../src/controller/backend-watch.ts';
import { EffectRunner } from '../../src/controller/effects.ts';
import type { WalWriteResult, WriteAhead } from '../../src/controller/durability.ts';
import { MemoryReporter } from '../../src/controller/memory-reporter.ts';
import { PendingRequests } from '../../src/controller/requests.ts';
import type { ControllerStatus } from '../../src/controller/status.ts';
import type { Reply } from '../../src/protocol/types.ts';
import { silentLogger } from '../../src/runtime/log.ts';
import type { Replica } from '../../src/store/replica.ts';
import type { Op } from '../../src/store/types.ts';

/** A promise and the hands that settle it. */
function deferred<T>(): { promise: Promise<T>; resolve: (value: T) => void; reject: (error: unknown) => void } {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((yes, no) => {
    resolve = yes;
    reject = no;
  });
  return { promise, resolve, reject };
}

/** A write-ahead file whose every batch waits for the test to finish it (`finish`). */
export function heldWriteAhead(): WriteAhead & { finish(): void } {
  const waiting: Array<(result: WalWriteResult) => void> = [];
  return {
    write: (_batch, done) => waiting.push(done),
    close: () => {},
    finish: () => waiting.shift()?.({ ok: true, fsync: null }),
  };
}

/** An effect runner over a replica whose every call waits for the test to settle it. */
export function runner(writeAhead?: WriteAhead) {
  const events: Event<unknown>[] = [];
  /** What was handed to the peer network, in order. */
  const sent: Array<{ to: string; message: unknown }> = [];
  const reads: Array<ReturnType<typeof deferred<Reply>>> = [];
  const applies: Array<ReturnType<typeof deferred<Reply>>> = [];
  const puts: Array<ReturnType<typeof deferred<void>>> = [];
  const fetches: Array<ReturnType<typeof deferred<KeyedEntry[]>>> = [];
  /** What a paced read hands over, a slice per `next()`; how many slices were read. */
  const paced = { slices: [] as KeyedEntry[][], read: 0 };
  const replica = {
    readPaced: () => ({
      next: async () => {
        paced.read += 1;
        return { entries: paced.slices[paced.read - 1] ?? [], done: paced.read >= paced.slices.length };
      },
    }),
    readNow: () => null,
    read: () => {
      reads.push(deferred<Reply>());
      return (reads.at(-1) as ReturnType<typeof deferred<Reply>>).promise;
    },
    applyNow: () => null,
    apply: () => {
      applies.push(deferred<Reply>());
      return (applies.at(-1) as ReturnType<typeof deferred<Reply>>).promise;
    },
    put: () => {
      puts.push(deferred<void>());
      return (puts.at(-1) as ReturnType<typeof deferred<void>>).promise;
    },
    fetch: () => {
      fetches.push(deferred<KeyedEntry[]>());
      return (fetches.at(-1) as ReturnType<typeof deferred<KeyedEntry[]>>).promise;
    },
  } as unknown as Replica;
  const memory = new MemoryReporter(() => 0, () => {}, { count: () => 0, max: 1000 });
  const watch = new BackendWatch({
    replica: { health: async () => ({ ok: true, detail: 'fake', epoch: 'e1', evictions: 0, flushes: { total: 0, ours: 0 } }), suspect: null, acknowledgeReset: () => {} },
    backend: {},
    stateDir: os.tmpdir(),
    memory,
    holdsFailedApplies: false,
    refusalsKeepTrust: true,
    valueBytesMax: 1024 * 1024,
    log: silentLogger,
    enqueue: (event) => events.push(event),
    whenDurable: (work) => work(),
  });
  const requests = new PendingRequests(() => {});
  const effects = new EffectRunner({
    writeAhead: writeAhead ?? { write: () => { throw new Error('causal mode writes no records'); }, close: () => {} },
    sync: 'write',
    failed: () => {},
    fsynced: () => {},
    replica,
    network: {
      send: (to, message) => {
        sent.push({ to, message });
        return true;
      },
    },
    watch,
    memory,
    requests,
    status: { countRead: (_op: Op, reply: Reply) => reply } as unknown as ControllerStatus,
    enqueue: (event) => events.push(event),
    log: silentLogger,
    endSessions: () => {},
  });
  /** Opens a request and carries out `effect` for it; resolves to its reply. */
  const carryOut = (make: (requestId: RequestId) => Effect<unknown>): Promise<Reply> => {
    const request = requests.open(1, 0);
    effects.carryOut(make(request.requestId));
    return Promise.resolve(request.reply());
  };
  return { effects, carryOut, reads, applies, puts, fetches, paced, events, sent };
}
