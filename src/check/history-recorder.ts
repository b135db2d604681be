/**
 * Writing a history while a test runs: `HistoryRecorder` emits the JSON-lines events of
 * docs/history-format.md that history-parse.ts reads back.
 *
 * It owns the rule that keeps a recorded history parseable: a client whose operation ended in
 * `info` records under a fresh process id from then on, so no process invokes after an
 * indeterminate operation.
 */

import { createWriteStream, type WriteStream } from 'node:fs';

/** Names one invoked operation for `HistoryRecorder.ok/fail/info`. */
export interface RecordHandle {
  readonly process: number;
  readonly client: number;
  readonly f: string;
  readonly key: string;
  completed: boolean;
}

export interface HistoryRecorderOptions {
  /** File to write JSON lines to as events happen; omit to keep them in memory only. */
  file?: string;
  /** Process ids given to clients after an `info` start here; client numbers must stay below. */
  freshProcessBase?: number;
}

/**
 * Records a history while clients run, in the JSON-lines format.
 *
 * A client's process id is its own number until one of its operations ends in `info`; from then
 * on it records under a fresh id (`freshProcessBase`, +1, ...), as Jepsen does, so a recorded
 * history always satisfies "no operation after an indeterminate one". Every event also carries
 * `client`. Times are `process.hrtime.bigint()` nanoseconds relative to the recorder's creation
 * (so they stay exact as JSON numbers).
 */
export class HistoryRecorder {
  private readonly startNs = process.hrtime.bigint();
  private readonly stream: WriteStream | null;
  private readonly recorded: string[] = [];
  private readonly processOfClient = new Map<number, number>();
  private readonly freshProcessBase: number;
  private nextFreshProcess: number;

  constructor(options: HistoryRecorderOptions = {}) {
    this.stream = options.file === undefined ? null : createWriteStream(options.file, { flags: 'w' });
    this.freshProcessBase = options.freshProcessBase ?? 1000;
    this.nextFreshProcess = this.freshProcessBase;
  }

  /**
   * Record an invoke; `value` is the written value, `[old, new]` for a cas, `null` for a read.
   * `connection` names the client connection it is sent on, when several processes share one.
   */
  invoke(client: number, f: string, key: string, value: unknown = null, connection?: string): RecordHandle {
    if (!Number.isSafeInteger(client) || client < 0 || client >= this.freshProcessBase) {
      throw new Error(`client ${client} must be an integer in [0, ${this.freshProcessBase})`);
    }
    const processId = this.processOfClient.get(client) ?? client;
    const handle: RecordHandle = { process: processId, client, f, key, completed: false };
    this.write({ process: processId, type: 'invoke', f, key, value, client, ...(connection === undefined ? {} : { connection }) });
    return handle;
  }

  /** The operation succeeded; `value` is what a read returned (or the written value). */
  ok(handle: RecordHandle, value: unknown = null, extra: Record<string, unknown> = {}): void {
    this.completeWith(handle, 'ok', value, extra);
  }

  /** The operation certainly did not happen (or, with `{ result: false }`, returned false). */
  fail(handle: RecordHandle, value: unknown = null, extra: Record<string, unknown> = {}): void {
    this.completeWith(handle, 'fail', value, extra);
  }

  /** The outcome is unknown (timeout, connection lost); the client gets a new process id. */
  info(handle: RecordHandle, value: unknown = null, extra: Record<string, unknown> = {}): void {
    this.completeWith(handle, 'info', value, extra);
    this.processOfClient.set(handle.client, this.nextFreshProcess++);
  }

  /**
   * Record an event that is not an operation (a fault starting or ending): written as
   * `{"process": "nemesis", "type": "info", "f": "nemesis", "value": event, "time": ...}`, the
   * Jepsen shape the parser ignores. Takes no client number and changes no process id.
   */
  note(event: Record<string, unknown>): void {
    this.write({ process: 'nemesis', type: 'info', f: 'nemesis', value: event });
  }

  /** The lines recorded so far. */
  lines(): readonly string[] {
    return this.recorded;
  }

  /** Flush and close the file, if any. */
  close(): Promise<void> {
    const stream = this.stream;
    if (stream === null) return Promise.resolve();
    return new Promise((resolve, reject) => {
      stream.once('error', reject);
      stream.end(() => resolve());
    });
  }

  private completeWith(handle: RecordHandle, type: 'ok' | 'fail' | 'info', value: unknown, extra: Record<string, unknown>): void {
    if (handle.completed) throw new Error(`operation of process ${handle.process} completed twice`);
    handle.completed = true;
    this.write({ ...extra, process: handle.process, type, f: handle.f, key: handle.key, value, client: handle.client });
  }

  private write(event: Record<string, unknown>): void {
    const time = Number(process.hrtime.bigint() - this.startNs);
    const line = JSON.stringify({ ...event, time });
    this.recorded.push(line);
    this.stream?.write(`${line}\n`);
  }
}
