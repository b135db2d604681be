/**
 * Converts Jepsen's etcd register logs (Porcupine's `test_data/jepsen/etcd_*.log`) into the
 * JSON-lines history format, so the checker can be validated on histories with known verdicts.
 *
 * Each log line reads `INFO  jepsen.util - <process>\t:<type>\t:<f>\t<value>`, in real-time
 * order; there are no timestamps, so line order is time. The register is one key, `etcd`.
 *
 * Invariants of the output: one JSON event per input line, same order; `:fail :cas` becomes a
 * `fail` with `"result": false` (etcd's compare failed, which constrains the history);
 * `:timed-out` values are dropped (an `info` is indeterminate, a failed read constrains nothing).
 */

/** The key the converted events use. */
export const JEPSEN_ETCD_KEY = 'etcd';

const LINE_PATTERN = /^INFO\s+jepsen\.util\s+-\s+(\d+)\s+:(\w+)\s+:(\w+)\s*(.*?)\s*$/;

export type ConvertResult =
  | { ok: true; lines: string[] }
  | { ok: false; error: string; line: number };

/** Whether a line looks like the jepsen.util log format (used to auto-detect it). */
export function isJepsenEtcdLine(line: string): boolean {
  return /^INFO\s+jepsen\.util\s+-/.test(line.trim());
}

/** Convert a whole log; blank lines are skipped, anything unrecognised is an error. */
export function convertJepsenEtcd(text: string): ConvertResult {
  const lines: string[] = [];
  const sourceLines = text.split('\n');
  for (const [index, line] of sourceLines.entries()) {
    const source = line.trim();
    if (source === '') continue;
    const converted = convertLine(source);
    if ('error' in converted) return { ok: false, error: converted.error, line: index + 1 };
    lines.push(converted.json);
  }
  return { ok: true, lines };
}

/** One log line to one JSON event, or what is wrong with it. */
function convertLine(source: string): { json: string } | { error: string } {
  const [, process, type, f, rawValue] = LINE_PATTERN.exec(source) ?? [];
  if (rawValue === undefined) return { error: `not a jepsen.util operation line: ${source.slice(0, 80)}` };
  if (type !== 'invoke' && type !== 'ok' && type !== 'fail' && type !== 'info') return { error: `unknown type :${type}` };
  if (f !== 'read' && f !== 'write' && f !== 'cas') return { error: `unknown operation :${f}` };
  const value = parseValue(rawValue);
  if (value === undefined) return { error: `cannot read the value ${JSON.stringify(rawValue)}` };
  const event: Record<string, unknown> = { process: Number(process), type, f, key: JEPSEN_ETCD_KEY };
  if (value !== 'timed-out') event.value = value;
  if (type === 'fail' && f === 'cas') event.result = false;
  return { json: JSON.stringify(event) };
}

type EdnValue = number | string | null;

/** `nil`, an integer, `[A B]`, or `:timed-out`; `undefined` if none of those. */
function parseValue(raw: string): EdnValue | EdnValue[] | 'timed-out' | undefined {
  if (raw === ':timed-out') return 'timed-out';
  const [, vector] = /^\[(.*)\]$/.exec(raw) ?? [];
  if (vector !== undefined) {
    const items = vector.trim().split(/\s+/).filter((item) => item !== '').map(parseScalar);
    return items.every((item) => item !== undefined) ? (items as EdnValue[]) : undefined;
  }
  return parseScalar(raw);
}

function parseScalar(raw: string): EdnValue | undefined {
  if (raw === 'nil' || raw === '') return null;
  if (/^-?\d+$/.test(raw)) return Number(raw);
  if (/^"[^"]*"$/.test(raw)) return raw.slice(1, -1);
  return undefined;
}
