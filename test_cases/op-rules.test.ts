/**
 * Every op a client can make passes the rules a peer's op is held to: were one refused, the
 * follower would drop the forward or the append carrying it, and replication would stall.
 */

import { describe, expect, it } from 'vitest';
import { toOp } from '../src/controller/commands.ts';
import { TextRequestDecoder } from '../src/protocol/text.ts';
import { DEFAULT_LIMITS, type Command } from '../src/protocol/types.ts';
import { opProblem } from '../src/store/op-rules.ts';

const NOW_MS = 1_700_000_000_000;

/** Client lines at the edges of what the text decoder takes. */
const LINES = [
  'get k\r\n', 'get k k k\r\n', 'gets a b c\r\n', 'gat 3600 k\r\n', 'gat 3600\r\n', 'gats -1 k\r\n', 'gat 2147483647 k\r\n',
  'set k 0 0 0\r\n\r\n', 'set k 4294967295 -1 1\r\n1\r\n', 'set k 0 1800000000 1\r\n1\r\n', 'add k 0 2592000 3\r\na b\r\n',
  'replace k 0 0 1 noreply\r\nx\r\n', 'append k 0 0 1\r\nx\r\n', 'prepend k 0 0 1\r\nx\r\n',
  'cas k 0 0 1 18446744073709551615\r\n1\r\n', 'cas k 0 0 1 0\r\n1\r\n',
  'incr k 18446744073709551615\r\n', 'incr k 0\r\n', 'decr k 1 noreply\r\n',
  'delete k\r\n', 'delete k 0\r\n', 'touch k -1\r\n', 'touch k 0\r\n',
  'flush_all\r\n', 'flush_all 0\r\n', 'flush_all 2147483647\r\n', 'flush_all -5\r\n',
  `get ${'k'.repeat(250)}\r\n`, `set ${'\xff'.repeat(250)} 0 0 1\r\n1\r\n`,
];

function commandsOf(text: string): Command[] {
  const decoder = new TextRequestDecoder(DEFAULT_LIMITS);
  return decoder.push(Buffer.from(text, 'latin1')).flatMap((decoded) => ('command' in decoded && decoded.command ? [decoded.command as Command] : []));
}

describe('op rules', () => {
  it.each(LINES)('a client op of %j passes them', (line) => {
    const commands = commandsOf(line);
    expect(commands.length).toBe(1);
    for (const command of commands) {
      const op = toOp(command, NOW_MS);
      if (op !== null) expect(opProblem(op)).toBeNull();
    }
  });

  it('refuses what no client can make', () => {
    expect(opProblem({ kind: 'store', verb: 'set', key: 'a b', flags: 0, expiresAtMs: 0, value: Buffer.from('x'), casUnique: 0n })).toBe('bad key');
    expect(opProblem({ kind: 'arith', verb: 'incr', key: 'k', delta: 1n << 64n, initial: null, expiresAtMs: 0 })).toBe('bad arith fields');
    expect(opProblem({ kind: 'evil', key: 'k' })).toBe('unknown op kind');
    expect(opProblem(null)).toBe('op not an object');
  });
});
