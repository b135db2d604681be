/**
 * One text-protocol request over a connection of its own (our TextClient), for tests that only
 * care about the final line of the reply (STORED, DELETED, a SERVER_ERROR, …).
 */

import { TextClient } from '../../src/client/text-client.ts';
import { must } from './must.ts';

/** Sends `raw` (a whole request, CRLFs included) to 127.0.0.1:port; the reply's last line. */
export async function lastLine(port: number, raw: string, verb: string): Promise<string> {
  const client = await TextClient.connect('127.0.0.1', port);
  try {
    const reply = await client.request(raw, verb);
    return lastLineOf(reply);
  } finally {
    client.close();
  }
}

/** The last line of a reply (every complete text reply has at least one). */
export function lastLineOf(reply: { readonly lines: readonly string[] }): string {
  return must(reply.lines.at(-1), 'a last line in the reply');
}
