/**
 * Helpers for the real-process fault tests (faults-ordered, faults-eventual): bounded polling,
 * recorded clients that talk the text protocol to one controller, a concurrent workload over all
 * three controllers, leader lookup through `show`, time-to-serve probes, and the judgements the
 * tests make on what was recorded (checker verdicts, lost writes, stale minority reads).
 *
 * Intuition: every call is recorded twice — in the HistoryRecorder (for the checkers) and as an
 * `OpRecord` with wall-clock times in ms and the node that answered (for the direct checks, which
 * need to know which side of a partition a call went to and when). Written values are unique, so
 * a value read names the write that produced it.
 *
 * Invariants:
 * - Every loop here is bounded in count and in time; every socket opened is closed.
 * - A call with no reply (timeout, lost connection) is `info` and its client reconnects, so a
 *   late reply can never be taken for the answer to a later request.
 * - A write is `fail` only on an explicit refusal (`classifyServerError`); a refused read is `fail`.
 */

import { checkLinearizability } from '../../src/check/linearizability.ts';
import { checkSequential } from '../../src/check/sequential.ts';
import { HistoryRecorder, parseHistory, type CheckResult, type RecordHandle } from '../../src/check/history.ts';
import { TextClient, type TextReply } from '../../src/client/text-client.ts';
import type { Mode } from '../../src/consistency/types.ts';
import type { Cluster } from '../../src/jepsen/cluster.ts';
import { classifyServerError } from '../../src/jepsen/workload.ts';
import { itemAt } from '../../src/runtime/item-at.ts';

/** Milliseconds on one monotonic clock shared by every record of a test. */
export const nowMs = (): number => performance.now();

/** Resolves after `ms`. */
export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** What `eventually` saw: whether `accept` held, the last value probed, and how long it took. */
export interface Eventually<T> {
  ok: boolean;
  value: T;
  elapsedMs: number;
}

/** Probes until `accept` holds or `timeoutMs` passes (probes are awaited, never overlapped). */
export async function eventually<T>(
  probe: () => Promise<T>,
  accept: (value: T) => boolean,
  options: { timeoutMs: number; intervalMs?: number },
): Promise<Eventually<T>> {
  const startMs = nowMs();
  const intervalMs = options.intervalMs ?? 50;
  let value = await probe();
  while (!accept(value)) {
    if (nowMs() - startMs > options.timeoutMs) return { ok: false, value, elapsedMs: nowMs() - startMs };
    await sleep(intervalMs);
    value = await probe();
  }
  return { ok: true, value, elapsedMs: nowMs() - startMs };
}

// ------------------------------------------------------------------ recorded calls

/** One call as the direct checks see it. `value` is what was written, or what a read returned. */
export interface OpRecord {
  client: number;
  node: string;
  f: 'read' | 'write';
  key: string;
  value: string | null;
  startMs: number;
  endMs: number;
  outcome: 'ok' | 'fail' | 'info';
  /** The error line or the reason there was no reply. */
  error: string | null;
}

/** What a `RecordingClient` needs. */
export interface RecordingClientOptions {
  recorder: HistoryRecorder;
  records: OpRecord[];
  client: number;
  node: string;
  port: number;
  callTimeoutMs: number;
}

type Exchange = { kind: 'reply'; reply: TextReply } | { kind: 'lost'; error: string };

/** A client of one controller whose every call lands in the history and in `records`. */
export class RecordingClient {
  private connection: TextClient | null = null;

  constructor(private readonly options: RecordingClientOptions) {}

  get node(): string {
    return this.options.node;
  }

  /** `get key`: ok with the value (null when absent), fail on an error reply, info when lost. */
  async read(key: string): Promise<OpRecord> {
    const handle = this.options.recorder.invoke(this.options.client, 'read', key, null);
    const startMs = nowMs();
    const result = await this.send(`get ${key}\r\n`, 'get');
    if (result.kind === 'lost') return this.lost(handle, { f: 'read', key, value: null, startMs }, result.error);
    const last = result.reply.lines[result.reply.lines.length - 1] ?? '';
    if (last !== 'END') return this.errorReply(handle, { f: 'read', key, value: null, startMs }, last);
    const found = result.reply.values.find((entry) => entry.key === key);
    const value = found ? found.value.toString('latin1') : null;
    this.options.recorder.ok(handle, value, { node: this.node });
    return this.push({ f: 'read', key, value, startMs }, 'ok', null);
  }

  /** `set key 0 0 n`: ok on STORED, fail on an explicit refusal, info otherwise. */
  async write(key: string, value: string): Promise<OpRecord> {
    const handle = this.options.recorder.invoke(this.options.client, 'write', key, value);
    const startMs = nowMs();
    const call = { f: 'write' as const, key, value, startMs };
    const result = await this.send(`set ${key} 0 0 ${Buffer.byteLength(value)}\r\n${value}\r\n`, 'set');
    if (result.kind === 'lost') return this.lost(handle, call, result.error);
    const line = result.reply.lines[0] ?? '';
    if (line !== 'STORED') return this.errorReply(handle, call, line);
    this.options.recorder.ok(handle, value, { node: this.node, result: true });
    return this.push(call, 'ok', null);
  }

  close(): void {
    this.connection?.close();
    this.connection = null;
  }

  private async send(raw: string, verb: string): Promise<Exchange> {
    try {
      this.connection ??= await TextClient.connect('127.0.0.1', this.options.port, this.options.callTimeoutMs);
      return { kind: 'reply', reply: await this.connection.request(raw, verb, this.options.callTimeoutMs) };
    } catch (error) {
      this.close();
      return { kind: 'lost', error: error instanceof Error ? error.message : String(error) };
    }
  }

  private lost(handle: RecordHandle, call: CallStart, error: string): OpRecord {
    this.options.recorder.info(handle, null, { node: this.node, error });
    return this.push(call, 'info', error);
  }

  private errorReply(handle: RecordHandle, call: CallStart, line: string): OpRecord {
    const serverError = /^SERVER_ERROR ?(.*)$/.exec(line)?.[1];
    const outcome = serverError === undefined ? 'info' : classifyServerError(serverError, call.f === 'read');
    if (outcome === 'fail') this.options.recorder.fail(handle, null, { node: this.node, error: line });
    else {
      this.options.recorder.info(handle, null, { node: this.node, error: line });
      this.close();
    }
    return this.push(call, outcome, line || 'empty reply');
  }

  private push(call: CallStart, outcome: OpRecord['outcome'], error: string | null): OpRecord {
    const record: OpRecord = { client: this.options.client, node: this.node, ...call, endMs: nowMs(), outcome, error };
    this.options.records.push(record);
    return record;
  }
}

interface CallStart {
  f: 'read' | 'write';
  key: string;
  value: string | null;
  startMs: number;
}

// ------------------------------------------------------------------ workload

/** Options of `startWorkload`. */
export interface WorkloadOptions {
  cluster: Cluster;
  recorder: HistoryRecorder;
  records: OpRecord[];
  keys: readonly string[];
  clientsPerNode: number;
  /** Fraction of calls that are writes, in [0, 1]. */
  writeShare: number;
  callTimeoutMs: number;
  /** Pause after each call, in ms. */
  thinkMs: number;
  /** Hard bound on calls per client, whatever the time. */
  callsPerClientMax: number;
}

/** A running workload; `stop()` resolves once every client's last call has completed. */
export interface Workload {
  stop(): Promise<void>;
}

/**
 * Starts `clientsPerNode` recorded clients on every controller (client numbers 0, 1, ...). Each
 * writes unique values (`c<client>.<n>`) and reads, round-robin over `keys`.
 */
export function startWorkload(options: WorkloadOptions): Workload {
  const stop = new AbortController();
  const runs: Promise<void>[] = [];
  options.cluster.nodes.forEach((node, nodeIndex) => {
    for (let slot = 0; slot < options.clientsPerNode; slot++) {
      const client = nodeIndex * options.clientsPerNode + slot;
      const recording = new RecordingClient({ ...options, client, node: node.id, port: node.clientPort });
      runs.push(runWorkloadClient(recording, client, options, stop.signal));
    }
  });
  return {
    stop: async () => {
      stop.abort();
      await Promise.all(runs);
    },
  };
}

async function runWorkloadClient(recording: RecordingClient, client: number, options: WorkloadOptions, stop: AbortSignal): Promise<void> {
  try {
    for (let counter = 1; counter <= options.callsPerClientMax && !stop.aborted; counter++) {
      const key = itemAt(options.keys, (client + counter) % options.keys.length);
      // A deterministic spread of writes and reads: write when the running share falls behind.
      const write = Math.floor(counter * options.writeShare) > Math.floor((counter - 1) * options.writeShare);
      const record = write ? await recording.write(key, `c${client}.${counter}`) : await recording.read(key);
      // A refused or lost call backs off a little, so a dead node is not hammered.
      await sleep(record.outcome === 'ok' ? options.thinkMs : Math.max(options.thinkMs, 50));
    }
  } finally {
    recording.close();
  }
}

// ------------------------------------------------------------------ cluster status

/** The `show` reply's lines from one controller, or null when it does not answer. */
export async function show(port: number, timeoutMs = 1000): Promise<string[] | null> {
  return TextClient.requestOnce('127.0.0.1', port, 'show\r\n', 'show', timeoutMs).then(
    (reply) => reply.lines,
    () => null,
  );
}

/** The self row of `show`: this controller's role, term and the leader it follows ('-' becomes null). */
export async function selfStatus(port: number): Promise<{ role: string; term: number; leader: string | null } | null> {
  const lines = await show(port);
  const row = lines?.map((line) => line.split(/\s+/)).find((cells) => cells[1] === 'self');
  // Columns: node state heard role term leader ...
  const [, , , role, term, leader] = row ?? [];
  if (role === undefined || term === undefined || leader === undefined) return null;
  return { role, term: Number(term), leader: leader === '-' ? null : leader };
}

/**
 * The sequencer every one of `nodeIds` agrees on, waiting up to `timeoutMs`; throws naming what
 * each node said when they never agree.
 */
export async function findLeader(cluster: Cluster, nodeIds: readonly string[], timeoutMs: number): Promise<string> {
  const views = (): Promise<Array<string | null>> =>
    Promise.all(nodeIds.map(async (id) => (await selfStatus(cluster.node(id).clientPort))?.leader ?? null));
  const seen = await eventually(views, (leaders) => leaders[0] !== null && leaders.every((leader) => leader === leaders[0]), { timeoutMs });
  if (!seen.ok) throw new Error(`no agreed leader within ${timeoutMs} ms: ${nodeIds.map((id, index) => `${id}→${seen.value[index]}`).join(', ')}`);
  return seen.value[0] as string;
}

// ------------------------------------------------------------------ time to serve

/**
 * Writes probe keys on one controller until a write is STORED; returns the ms from `sinceMs` to
 * that reply, or null if none was stored by `sinceMs + timeoutMs`. The probes are recorded.
 */
export async function timeToServeWriteMs(
  recording: RecordingClient,
  options: { sinceMs: number; timeoutMs: number; key: string },
): Promise<number | null> {
  for (let attempt = 1; attempt <= 10_000 && nowMs() - options.sinceMs < options.timeoutMs; attempt++) {
    const record = await recording.write(options.key, `probe.${recording.node}.${attempt}.${Math.round(nowMs())}`);
    if (record.outcome === 'ok') return record.endMs - options.sinceMs;
    await sleep(20);
  }
  return null;
}

// ------------------------------------------------------------------ judgements

/** Runs the mode's checker (linearizability, or sequential consistency) on the recorded history. */
export function checkRecorded(mode: Exclude<Mode, 'eventual'>, recorder: HistoryRecorder, timeoutMs: number): CheckResult & { operations: number } {
  const parsed = parseHistory(recorder.lines().join('\n'));
  if (!parsed.ok) return { verdict: 'unknown', detail: `history does not parse at line ${parsed.line}: ${parsed.error}`, operations: 0 };
  const check = mode === 'sequential'
    ? checkSequential(parsed.history, { timeoutMs })
    : checkLinearizability(parsed.history, { timeoutMs });
  return { ...check, operations: parsed.history.operations.length };
}

/**
 * The values a read of `key` may return once every call in `records` is over: a value written by
 * a write (acknowledged or indeterminate) that no acknowledged write started after in real time.
 * `null` is allowed only when no write of the key was acknowledged.
 */
export function acceptableFinalValues(records: readonly OpRecord[], key: string): Set<string | null> {
  const writes = records.filter((record) => record.f === 'write' && record.key === key && record.outcome !== 'fail');
  const acknowledged = writes.filter((record) => record.outcome === 'ok');
  const acceptable = new Set<string | null>();
  for (const write of writes) {
    const overwritten = acknowledged.some((later) => later.startMs > write.endMs && write.outcome === 'ok');
    // An indeterminate write has no end: it may have taken effect after every other write.
    if (!overwritten) acceptable.add(write.value);
  }
  if (acknowledged.length === 0) acceptable.add(null);
  return acceptable;
}

/** Ok writes on `node` that started and completed inside [fromMs, toMs): proof of split brain. */
export function writesAcknowledgedWithin(records: readonly OpRecord[], node: string, fromMs: number, toMs: number): OpRecord[] {
  return records.filter((record) => record.node === node && record.f === 'write' && record.outcome === 'ok'
    && record.startMs >= fromMs && record.endMs < toMs);
}

/**
 * Reads on the `minority` node, invoked during [cutMs, healMs), that returned a value although
 * an acknowledged write on the majority had started after the cut and completed before the read
 * was invoked: the isolated node cannot have that write, so the read was stale.
 */
export function staleMinorityReads(
  records: readonly OpRecord[],
  window: { minority: string; cutMs: number; healMs: number },
): Array<{ read: OpRecord; newer: OpRecord }> {
  const newerWrites = records.filter((record) => record.node !== window.minority && record.f === 'write'
    && record.outcome === 'ok' && record.startMs >= window.cutMs);
  const stale: Array<{ read: OpRecord; newer: OpRecord }> = [];
  for (const read of records) {
    if (read.node !== window.minority || read.f !== 'read' || read.outcome !== 'ok') continue;
    if (read.startMs < window.cutMs || read.startMs >= window.healMs) continue;
    const newer = newerWrites.find((write) => write.key === read.key && write.endMs < read.startMs && write.value !== read.value);
    if (newer) stale.push({ read, newer });
  }
  return stale;
}

/** One line per record, for failure messages. */
export function describeRecords(records: readonly OpRecord[], limit = 8): string {
  const shown = records.slice(0, limit).map((record) =>
    `${record.node} c${record.client} ${record.f} ${record.key}=${JSON.stringify(record.value)} ${record.outcome}` +
    ` [${Math.round(record.startMs)}..${Math.round(record.endMs)} ms]${record.error ? ` (${record.error})` : ''}`);
  return shown.join('\n') + (records.length > limit ? `\n… and ${records.length - limit} more` : '');
}

/** One `get` of every key on one controller; a value, null for absent, or the error. */
export async function readKeys(
  port: number,
  keys: readonly string[],
  timeoutMs: number,
): Promise<Array<{ ok: true; value: string | null } | { ok: false; error: string }>> {
  let client: TextClient | null = null;
  try {
    client = await TextClient.connect('127.0.0.1', port, timeoutMs);
    const answers: Array<{ ok: true; value: string | null } | { ok: false; error: string }> = [];
    for (const key of keys) {
      const reply = await client.request(`get ${key}\r\n`, 'get', timeoutMs);
      const last = reply.lines[reply.lines.length - 1] ?? '';
      if (last !== 'END') answers.push({ ok: false, error: last });
      else answers.push({ ok: true, value: reply.values.find((entry) => entry.key === key)?.value.toString('latin1') ?? null });
    }
    return answers;
  } catch (error) {
    return keys.map(() => ({ ok: false as const, error: error instanceof Error ? error.message : String(error) }));
  } finally {
    client?.close();
  }
}

/**
 * Reads every key from every controller until all controllers answer every key with the same
 * value (and, when `acceptable` is given, one it allows), or `timeoutMs` passes. Returns the
 * time it took and, when it never happened, one line per disagreeing key.
 */
export async function waitForAgreement(
  cluster: Cluster,
  keys: readonly string[],
  options: { timeoutMs: number; callTimeoutMs: number; acceptable?: (key: string) => Set<string | null> },
): Promise<{ ok: boolean; elapsedMs: number; differences: string[] }> {
  const probe = async (): Promise<string[]> => {
    const answers = await Promise.all(
      cluster.nodes.map(async (node) => ({ node: node.id, values: await readKeys(node.clientPort, keys, options.callTimeoutMs) })),
    );
    return keys.flatMap((key, keyIndex) => {
      const atKey = answers.map(({ node, values }) => ({ node, answer: itemAt(values, keyIndex) }));
      return describeDisagreement(key, atKey, options.acceptable?.(key));
    });
  };
  const seen = await eventually(probe, (differences) => differences.length === 0, { timeoutMs: options.timeoutMs, intervalMs: 100 });
  return { ok: seen.ok, elapsedMs: seen.elapsedMs, differences: seen.value };
}

function describeDisagreement(
  key: string,
  answers: Array<{ node: string; answer: { ok: true; value: string | null } | { ok: false; error: string } }>,
  acceptable: Set<string | null> | undefined,
): string[] {
  const shown = answers.map(({ node, answer }) => `${node}=${answer.ok ? JSON.stringify(answer.value) : `error(${answer.error})`}`).join(', ');
  const values = new Set(answers.map(({ answer }) => (answer.ok ? `v:${answer.value}` : 'error')));
  if (values.size !== 1 || values.has('error')) return [`${key}: ${shown}`];
  const first = answers[0]?.answer;
  if (acceptable && first?.ok && !acceptable.has(first.value)) {
    return [`${key}: ${shown}, but the last acknowledged value or a later one is one of ${[...acceptable].map((value) => JSON.stringify(value)).join(', ')}`];
  }
  return [];
}
