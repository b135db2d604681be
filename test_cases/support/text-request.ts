/**
 * One text-protocol request over a connection of its own (our TextClient), for tests that only
 * care about the final line of the reply (STORED, DELETED, a SERVER_ERROR, …).
 */

import { TextClient } from '../../src/client/text-client.ts';

/** Sends `raw` (a whole request, CRLFs included) to 127.0.0.1:port; the reply's last line. */
export async function lastLine(port: number, raw: string, verb: string): Promise<string> {
  const client = await TextClient.connect('127.0.0.1', port);
  try {
    const reply = await client.request(raw, verb);
    return reply.lines[reply.lines.length - 1];
  } finally {
    client.close();
  }
}
