/**
 * `mckv check HISTORY --model M`: read a recorded history, run one checker, print the verdict.
 *
 * Intuition: users check mckv's guarantees themselves, the way Jepsen checks databases. The exit
 * code is the verdict: 0 the history satisfies the model, 1 it does not (the key and the
 * operations around the point where the search got stuck are printed), 2 the checker could not
 * decide (the search ran out of time, or the file could not be read or parsed; the reason is
 * printed). A history in Jepsen's etcd log format is recognised by its first line.
 */

import { readFile } from 'node:fs/promises';
import { itemAt } from '../runtime/item-at.ts';
import { parseHistory, type CheckResult, type History } from './history.ts';
import { convertJepsenEtcd, isJepsenEtcdLine } from './jepsen-etcd.ts';
import { checkLinearizability } from './linearizability.ts';
import { checkSequential } from './sequential.ts';
import { checkSession } from './session.ts';
import { checkCausal } from './causal.ts';

export type CheckModel = 'linearizability' | 'sequential' | 'session' | 'causal';
export const CHECK_MODELS: readonly CheckModel[] = ['linearizability', 'sequential', 'session', 'causal'];
export type HistoryFormat = 'jsonl' | 'jepsen-etcd';

export interface RunCheckOptions {
  file: string;
  model: CheckModel;
  /** Search budget for the whole history. */
  timeoutMs: number;
  /** Default: detected from the first line. */
  format?: HistoryFormat;
  /** Read a `fail` of a cas as "compare failed" (JSON-lines histories recorded like Jepsen's etcd ones). */
  failedCasIsFalse?: boolean;
  /** Where the report goes, one line at a time. */
  out: (line: string) => void;
}

/** Exit codes: 0 ok, 1 violation, 2 undecided (timeout, unreadable or malformed history). */
export type CheckExitCode = 0 | 1 | 2;

/** Run one check and print its report; see the file header for the exit codes. */
export async function runCheck(options: RunCheckOptions): Promise<CheckExitCode> {
  let text: string;
  try {
    text = await readFile(options.file, 'utf8');
  } catch (error) {
    options.out(`error: cannot read ${options.file}: ${(error as Error).message}`);
    return 2;
  }
  const loaded = loadHistory(text, options.format ?? detectFormat(text), options.failedCasIsFalse ?? false);
  if (!loaded.ok) {
    options.out(`error: ${options.file}:${loaded.line}: ${loaded.error}`);
    return 2;
  }
  const result = checkHistory(loaded.history, options.model, options.timeoutMs);
  for (const line of formatResult(options.model, result)) options.out(line);
  return exitCodeOf(result);
}

/** Run the checker for `model` on a parsed history. */
export function checkHistory(history: History, model: CheckModel, timeoutMs: number): CheckResult {
  switch (model) {
    case 'linearizability': return checkLinearizability(history, { timeoutMs });
    case 'sequential': return checkSequential(history, { timeoutMs });
    case 'session': return checkSession(history);
    case 'causal': return checkCausal(history);
    default: {
      const unreachable: never = model;
      throw new Error(`unknown model ${String(unreachable)}`);
    }
  }
}

/** `jepsen-etcd` if the first non-blank line is a jepsen.util log line, else `jsonl`. */
export function detectFormat(text: string): HistoryFormat {
  const first = text.split('\n').find((line) => line.trim() !== '') ?? '';
  return isJepsenEtcdLine(first) ? 'jepsen-etcd' : 'jsonl';
}

type Loaded = { ok: true; history: History } | { ok: false; error: string; line: number };

/** Parse a history in either format (a converted etcd log keeps its line numbers' order). */
export function loadHistory(text: string, format: HistoryFormat, failedCasIsFalse: boolean): Loaded {
  if (format === 'jsonl') return parseHistory(text, { failedCasIsFalse });
  const converted = convertJepsenEtcd(text);
  if (!converted.ok) return converted;
  return parseHistory(converted.lines.join('\n'), { failedCasIsFalse: true });
}

function formatResult(model: CheckModel, result: CheckResult): string[] {
  const head = { ok: 'OK', violation: 'VIOLATION', unknown: 'UNKNOWN' }[result.verdict];
  const lines = [`${head}: ${model}${result.key === undefined ? '' : ` (key ${JSON.stringify(result.key)})`}`];
  if (result.detail !== undefined) lines.push(...result.detail.split('\n'));
  return lines;
}

function exitCodeOf(result: CheckResult): CheckExitCode {
  switch (result.verdict) {
    case 'ok': return 0;
    case 'violation': return 1;
    case 'unknown': return 2;
    default: {
      const unreachable: never = result.verdict;
      throw new Error(`unknown verdict ${String(unreachable)}`);
    }
  }
}

export type ParsedCheckArgs = { ok: true; options: Omit<RunCheckOptions, 'out'> } | { ok: false; error: string };

/**
 * A small yargs-free parser for `HISTORY [--model M] [--timeout-ms N] [--format F]
 * [--failed-cas-is-false]`, for scripts that do not go through main.ts.
 */
export function parseCheckArgs(argv: readonly string[]): ParsedCheckArgs {
  let file: string | undefined;
  let model: CheckModel = 'linearizability';
  let timeoutMs = 60_000;
  let format: HistoryFormat | undefined;
  let failedCasIsFalse = false;
  for (let index = 0; index < argv.length; index++) {
    const arg = itemAt(argv, index);
    const value = argv[index + 1];
    if (arg === '--failed-cas-is-false') failedCasIsFalse = true;
    else if (arg === '--model') {
      if (!CHECK_MODELS.includes(value as CheckModel)) return { ok: false, error: `--model must be one of ${CHECK_MODELS.join(', ')}` };
      model = value as CheckModel;
      index++;
    } else if (arg === '--timeout-ms') {
      if (!/^\d+$/.test(value ?? '')) return { ok: false, error: '--timeout-ms needs a whole number of milliseconds' };
      timeoutMs = Number(value);
      index++;
    } else if (arg === '--format') {
      if (value !== 'jsonl' && value !== 'jepsen-etcd') return { ok: false, error: '--format must be jsonl or jepsen-etcd' };
      format = value;
      index++;
    } else if (arg.startsWith('-')) return { ok: false, error: `unknown option ${arg}` };
    else if (file === undefined) file = arg;
    else return { ok: false, error: `unexpected argument ${arg}` };
  }
  if (file === undefined) return { ok: false, error: 'missing HISTORY file' };
  return { ok: true, options: { file, model, timeoutMs, format, failedCasIsFalse } };
}
