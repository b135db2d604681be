/**
 * The fault runner's workload: concurrent clients that talk the memcached text protocol to one
 * controller each and record every call and reply in a history. Values are unique per client and
 * counter, so a value read names the one write that produced it. The kinds of client (a loop per
 * slot, pipelining, the bulk loader) and why: docs/checking.md, "The workload".
 *
 * Invariants:
 * - Every invoke gets exactly one completion: `ok`, `fail` (it certainly did not happen) or
 *   `info` (unknown). A timeout or a lost connection is always `info`, and the client then takes a
 *   fresh connection (a fresh process id); the calls in flight on the one it dropped are `info` too.
 * - A write gets `fail` only on an explicit refusal (see `classifyServerError`); when unsure it
 *   is `info`, which is always safe for the checker.
 * - Every loop is bounded by the run's stop signal; nothing retries forever.
 */

import { TextClient, type TextReply } from '../client/text-client.ts';
import type { HistoryRecorder, RecordHandle } from '../check/history.ts';
import { itemAt } from '../runtime/item-at.ts';
import { mulberry32, type Random } from '../runtime/random.ts';
import { parseRefusalText, refusalChangedNothing } from '../protocol/refusals.ts';

/** The operations a client issues. `cas` is a `gets` (recorded as a read) then `cas`/`add`. */
export type WorkloadOp = 'read' | 'write' | 'cas' | 'delete' | 'append';

export const WORKLOAD_OPS: readonly WorkloadOp[] = ['read', 'write', 'cas', 'delete', 'append'];

/** Relative weights of the operations a client picks. */
export const DEFAULT_OP_WEIGHTS: Readonly<Record<WorkloadOp, number>> = {
  read: 40,
  write: 30,
  cas: 15,
  delete: 5,
  append: 10,
};

/** How one call ended, for the report (the history has the details). */
export type CallOutcome = 'ok' | 'fail' | 'info';

/** One call as the report sees it: times in ms since the run started. */
export interface CallRecord {
  client: number;
  node: string;
  f: WorkloadOp | 'read-before-cas';
  startMs: number;
  endMs: number;
  outcome: CallOutcome;
  /** A failed or indeterminate call's error: the server's error line, or why no reply came. */
  error?: string;
}

export type { Random };

/** Creates a seeded generator; the same seed gives the same sequence. */
export const createRandom = mulberry32;

/** Picks an index in [0, count). */
export function pickIndex(random: Random, count: number): number {
  return Math.min(count - 1, Math.floor(random() * count));
}

/** Picks an operation by weight. */
export function pickOp(random: Random, weights: Readonly<Record<WorkloadOp, number>>): WorkloadOp {
  const total = WORKLOAD_OPS.reduce((sum, op) => sum + weights[op], 0);
  let point = random() * total;
  for (const op of WORKLOAD_OPS) {
    point -= weights[op];
    if (point < 0) return op;
  }
  return 'read';
}

/**
 * How to record a `SERVER_ERROR` reply. A read has no effect, so a refused read is `fail`. A
 * write is `fail` only for a refusal that certainly changed nothing (no quorum, not caught up,
 * busy, memcached's out of memory or too large: the table of protocol/refusals.ts says which);
 * anything else, timeouts above all, may have taken effect and is `info`.
 */
export function classifyServerError(message: string, isRead: boolean): 'fail' | 'info' {
  if (isRead) return 'fail';
  const refusal = parseRefusalText(message.trim());
  return refusal !== null && refusalChangedNothing(refusal) ? 'fail' : 'info';
}

/** What the runner gives each client. */
export interface ClientOptions {
  client: number;
  node: string;
  port: number;
  keys: readonly string[];
  recorder: HistoryRecorder;
  random: Random;
  weights: Readonly<Record<WorkloadOp, number>>;
  /** A call with no reply after this long is indeterminate. */
  callTimeoutMs: number;
  /** Pause between calls, drawn in [0, thinkMs]. */
  thinkMs: number;
  /**
   * Calls this client keeps in flight on its connection (default 1). Slot s of client c records
   * as client c × pipeline + s.
   */
  pipeline?: number;
  /** ms since the run started (the report's clock). */
  clockMs: () => number;
  calls: CallRecord[];
  stop: AbortSignal;
}

/** A completed reply, or why there is none. */
type Exchange = { kind: 'reply'; reply: TextReply } | { kind: 'lost'; error: string };

/** One client's connection, shared by its slots, replaced after any indeterminate call. */
class Connection {
  private client: TextClient | null = null;
  private connecting: Promise<TextClient | null> | null = null;
  /** Connections this client has opened so far: the current one's number. */
  private opened = 0;

  constructor(private readonly options: ClientOptions) {}

  /** Names the current connection in the history (client and connection number), for its order. */
  get id(): string {
    return `${this.options.client}.${this.opened}`;
  }

  /** Connects if needed; false when the node does not answer (the caller waits and retries). */
  async ready(): Promise<boolean> {
    if (this.client !== null) return true;
    this.connecting ??= TextClient.connect('127.0.0.1', this.options.port, this.options.callTimeoutMs).then(
      (client) => client,
      () => null,
    );
    const client = await this.connecting;
    this.connecting = null;
    if (client !== null && this.client === null) {
      this.client = client;
      this.opened += 1;
    } else if (client !== null && this.client !== client) client.close();
    return this.client !== null;
  }

  /** Sends one call; `client` is the connection it went on, for `drop`. */
  async send(raw: string, verb: string): Promise<Exchange & { client: TextClient | null }> {
    const client = this.client;
    if (client === null) return { kind: 'lost', error: 'not connected', client };
    try {
      return { kind: 'reply', reply: await client.request(raw, verb, this.options.callTimeoutMs), client };
    } catch (error) {
      this.drop(client);
      return { kind: 'lost', error: error instanceof Error ? error.message : String(error), client };
    }
  }

  /** Closes `client` (the current connection when not given), unless it was replaced already. */
  drop(client: TextClient | null = this.client): void {
    client?.close();
    if (client === this.client) this.client = null;
  }
}

/** Runs one client until `stop` aborts. Resolves once its last call has completed. */
export async function runClient(options: ClientOptions): Promise<void> {
  const connection = new Connection(options);
  const slots = Math.max(1, Math.floor(options.pipeline ?? 1));
  try {
    if (slots === 1) {
      await runSlot(options, connection);
      return;
    }
    // Each slot draws from a generator of its own, so a seed replays whatever the interleaving.
    const randoms = Array.from({ length: slots }, () => createRandom(Math.floor(options.random() * 2 ** 32)));
    await Promise.all(randoms.map((random, slot) => runSlot({ ...options, client: options.client * slots + slot, random }, connection)));
  } finally {
    connection.drop();
  }
}

/** One loop of calls, one at a time, over the client's connection. */
async function runSlot(options: ClientOptions, connection: Connection): Promise<void> {
  let counter = 0;
  while (!options.stop.aborted) {
    if (!(await connection.ready())) {
      await sleep(100, options.stop);
      continue;
    }
    const op = pickOp(options.random, options.weights);
    const key = itemAt(options.keys, pickIndex(options.random, options.keys.length));
    counter += 1;
    await runOp({ options, connection, op, key, value: `c${options.client}.${counter}` });
    await sleep(options.random() * options.thinkMs, options.stop);
  }
}

interface OpContext {
  options: ClientOptions;
  connection: Connection;
  op: WorkloadOp;
  key: string;
  /** A value unique to this call. */
  value: string;
}

async function runOp(context: OpContext): Promise<void> {
  switch (context.op) {
    case 'read':
      await readOnce(context, 'read');
      return;
    case 'write':
      await storeCall(context, 'write', `set ${context.key} 0 0 ${context.value.length}\r\n${context.value}\r\n`, context.value);
      return;
    case 'append': {
      const suffix = `+${context.value}`;
      await storeCall(context, 'append', `append ${context.key} 0 0 ${suffix.length}\r\n${suffix}\r\n`, suffix);
      return;
    }
    case 'delete':
      await deleteCall(context);
      return;
    case 'cas':
      await casCall(context);
      return;
    default: {
      const unreachable: never = context.op;
      throw new Error(`unknown op ${String(unreachable)}`);
    }
  }
}

/** Records one call around `exchange`; `interpret` turns a reply into the completion. */
async function recordCall(
  context: OpContext,
  call: { f: WorkloadOp; reportAs?: CallRecord['f']; value: unknown; raw: string; verb: string },
  interpret: (reply: TextReply, handle: RecordHandle) => CallOutcome,
): Promise<TextReply | null> {
  const { options } = context;
  const startMs = options.clockMs();
  // Sent right after, on the connection named: the invokes of a connection are in its send order.
  const handle = options.recorder.invoke(options.client, call.f, context.key, call.value, context.connection.id);
  const result = await context.connection.send(call.raw, call.verb);
  let outcome: CallOutcome;
  let error: string | undefined;
  if (result.kind === 'lost') {
    options.recorder.info(handle, null, { node: options.node, error: result.error });
    outcome = 'info';
    error = result.error;
  } else {
    outcome = interpret(result.reply, handle);
    if (outcome === 'info') context.connection.drop(result.client);
    if (outcome !== 'ok') error = result.reply.lines.find((line) => errorReply.test(line)) ?? `unexpected reply ${result.reply.lines[0] ?? ''}`;
  }
  const record: CallRecord = {
    client: options.client, node: options.node, f: call.reportAs ?? call.f, startMs, endMs: options.clockMs(), outcome,
  };
  if (error !== undefined) record.error = error;
  options.calls.push(record);
  return result.kind === 'reply' && outcome === 'ok' ? result.reply : null;
}

/** Completes a call whose reply was an error line; returns the outcome recorded. */
function recordError(context: OpContext, handle: RecordHandle, line: string, isRead: boolean): CallOutcome {
  const { recorder, node } = context.options;
  const serverError = /^SERVER_ERROR ?(.*)$/.exec(line)?.[1];
  // CLIENT_ERROR and ERROR: the request was rejected as malformed, so it did not happen.
  const outcome = serverError !== undefined ? classifyServerError(serverError, isRead) : 'fail';
  if (outcome === 'fail') recorder.fail(handle, null, { node, error: line });
  else recorder.info(handle, null, { node, error: line });
  return outcome;
}

const errorReply = /^(ERROR|CLIENT_ERROR|SERVER_ERROR)/;

/** A `get` (or `gets` before a cas); returns the reply when it succeeded. */
function readOnce(context: OpContext, reportAs: CallRecord['f'], verb: 'get' | 'gets' = 'get'): Promise<TextReply | null> {
  return recordCall(context, { f: 'read', reportAs, value: null, raw: `${verb} ${context.key}\r\n`, verb }, (reply, handle) => {
    const last = reply.lines[reply.lines.length - 1] ?? '';
    if (errorReply.test(last)) return recordError(context, handle, last, true);
    const found = reply.values.find((value) => value.key === context.key);
    context.options.recorder.ok(handle, found ? found.value.toString('latin1') : null, { node: context.options.node });
    return 'ok';
  });
}

/** set / append: STORED is success; NOT_STORED (append to an absent key) returned false. */
async function storeCall(context: OpContext, f: 'write' | 'append', raw: string, value: string): Promise<void> {
  await recordCall(context, { f, value, raw, verb: f === 'write' ? 'set' : 'append' }, (reply, handle) => {
    return completeStore(context, handle, reply.lines[0] ?? '', f === 'write' ? value : null);
  });
}

function completeStore(context: OpContext, handle: RecordHandle, line: string, written: string | null): CallOutcome {
  const { recorder, node } = context.options;
  if (line === 'STORED') recorder.ok(handle, written, { node, result: true });
  else if (line === 'NOT_STORED' || line === 'EXISTS' || line === 'NOT_FOUND') recorder.ok(handle, written, { node, result: false });
  else if (errorReply.test(line)) return recordError(context, handle, line, false);
  else {
    recorder.info(handle, null, { node, error: `unexpected reply ${line}` });
    return 'info';
  }
  return 'ok';
}

async function deleteCall(context: OpContext): Promise<void> {
  await recordCall(context, { f: 'delete', value: null, raw: `delete ${context.key}\r\n`, verb: 'delete' }, (reply, handle) => {
    const line = reply.lines[0] ?? '';
    const { recorder, node } = context.options;
    if (line === 'DELETED' || line === 'NOT_FOUND') {
      recorder.ok(handle, null, { node, result: line === 'DELETED' });
      return 'ok';
    }
    if (errorReply.test(line)) return recordError(context, handle, line, false);
    recorder.info(handle, null, { node, error: `unexpected reply ${line}` });
    return 'info';
  });
}

/**
 * A cas: `gets` the key (recorded as a read), then `cas` with the token, or `add` when the key
 * was absent; recorded as cas [old, new]. EXISTS / NOT_FOUND / NOT_STORED mean the register no
 * longer held `old` (values are unique, so a changed version means a changed value).
 */
async function casCall(context: OpContext): Promise<void> {
  const read = await readOnce(context, 'read-before-cas', 'gets');
  if (read === null || context.options.stop.aborted) return;
  const found = read.values.find((value) => value.key === context.key);
  const old = found ? found.value.toString('latin1') : null;
  const value = context.value;
  const raw = found && found.cas !== null
    ? `cas ${context.key} 0 0 ${value.length} ${found.cas}\r\n${value}\r\n`
    : `add ${context.key} 0 0 ${value.length}\r\n${value}\r\n`;
  await recordCall(context, { f: 'cas', value: [old, value], raw, verb: found ? 'cas' : 'add' }, (reply, handle) =>
    completeStore(context, handle, reply.lines[0] ?? '', null),
  );
}

/** What a run's clients do: all the mixed workload, or some of them bulk loads. */
export const JEPSEN_WORKLOADS = ['mixed', 'bulk'] as const;
export type JepsenWorkload = (typeof JEPSEN_WORKLOADS)[number];
/** Most sets a bulk loader keeps in flight (the runner numbers each one's processes in a range of its own). */
export const BULK_DEPTH_MAX = 1024;

/** What the runner gives a bulk loader: a client's options without the mixed workload's choices. */
export interface BulkClientOptions extends Omit<ClientOptions, 'keys' | 'weights' | 'pipeline'> {
  /** Sets in flight at once: one burst. */
  depth: number;
  /** Slot s of the loader records as process `processBase + s` (a process has one call open at a time). */
  processBase: number;
}

/** The key slot `slot` of bulk loader `client` writes, burst after burst. */
export function bulkKeyName(client: number, slot: number): string {
  return `jepsen-bulk-c${client}-${slot}`;
}

/**
 * Runs one bulk loader until `stop` aborts: bursts of `depth` pipelined sets, each to its slot's
 * key with a value unique to the burst. Resolves once the last burst has completed.
 */
export async function runBulkClient(options: BulkClientOptions): Promise<void> {
  const connection = new Connection({ ...options, keys: [], weights: DEFAULT_OP_WEIGHTS });
  const slots = Array.from({ length: Math.max(1, Math.floor(options.depth)) }, (_, slot) => slot);
  try {
    for (let burst = 1; !options.stop.aborted; burst += 1) {
      if (!(await connection.ready())) {
        await sleep(100, options.stop);
        continue;
      }
      await Promise.all(slots.map((slot) => {
        const slotOptions: ClientOptions = { ...options, client: options.processBase + slot, keys: [], weights: DEFAULT_OP_WEIGHTS };
        const key = bulkKeyName(options.client, slot);
        const value = `b${options.client}.${burst}.${slot}`;
        return storeCall({ options: slotOptions, connection, op: 'write', key, value }, 'write', `set ${key} 0 0 ${value.length}\r\n${value}\r\n`, value);
      }));
      await sleep(options.random() * options.thinkMs, options.stop);
    }
  } finally {
    connection.drop();
  }
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted || ms <= 0) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}
