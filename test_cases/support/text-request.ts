/**
 * One text-protocol request over a connection of its own (our TextClient), for tests that only
 * care about the final line of the reply (STORED, DELETED, a SERVER_ERROR, …), or about its lines
 * and values once the cluster serves.
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

/** The reply's lines, and its values as key=value. */
export interface PlainReply {
  lines: string[];
  values: string[];
}

/** `raw` once to 127.0.0.1:port, on a connection of its own. */
export async function requestOnce(port: number, raw: string, verb: string): Promise<PlainReply> {
  const client = await TextClient.connect('127.0.0.1', port);
  try {
    const reply = await client.request(raw, verb);
    return { lines: reply.lines, values: reply.values.map((item) => `${item.key}=${item.value.toString()}`) };
  } finally {
    client.close();
  }
}

/** `raw` to `port` again until it is not refused (a node recovering, electing or rebuilding), for at most `timeoutMs`. */
export async function requestUntilServed(port: number, raw: string, verb: string, timeoutMs = 20_000): Promise<PlainReply> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const reply = await requestOnce(port, raw, verb);
    if (!reply.lines.some((line) => line.startsWith('SERVER_ERROR')) || Date.now() > deadline) return reply;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
