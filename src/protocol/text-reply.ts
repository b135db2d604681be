/**
 * The memcached text protocol's replies: pure encoders from a `Command` and its `Reply` to Buffers,
 * and from the reply the decoder (./text.ts) attached to malformed input (`encodeTextInvalid`).
 *
 * Invariants:
 * - A command sent with `noreply` gets no bytes at all, errors included (as in memcached); `quit`
 *   and `none` are empty.
 * - A values reply over FLAT_REPLY_BYTES_MAX is handed out part by part, each item's value Buffer
 *   itself (never copied), so the server writes it at the client's reading pace.
 */

import type { Command, Item, Reply } from './types.ts';
import { refusalText } from './refusals.ts';

const NEWLINE = 0x0a;
const CARRIAGE_RETURN = 0x0d;

const END = Buffer.from('END\r\n');

function line(text: string): Buffer {
  return Buffer.from(`${text}\r\n`, 'latin1');
}

/** True when the command asked for no reply. */
function isSilenced(command: Command): boolean {
  return 'noreply' in command && command.noreply;
}

/** Whether a values reply for this command carries cas tokens (gets, gats). */
function wantsCas(command: Command): boolean {
  return (command.kind === 'get' || command.kind === 'gat') && command.cas;
}

/** Value replies up to this many bytes are encoded as one Buffer; larger ones part by part. */
export const FLAT_REPLY_BYTES_MAX = 64 * 1024;
const CRLF = Buffer.from('\r\n');

/** The `VALUE` header line of each item (keys are latin1: one byte per char) and the reply's size. */
function valueHeaders(items: Item[], withCas: boolean): { headers: string[]; bytes: number } {
  const headers: string[] = [];
  let bytes = END.length;
  for (const item of items) {
    const header = withCas
      ? `VALUE ${item.key} ${item.flags} ${item.value.length} ${item.cas}\r\n`
      : `VALUE ${item.key} ${item.flags} ${item.value.length}\r\n`;
    headers.push(header);
    bytes += header.length + item.value.length + 2;
  }
  return { headers, bytes };
}

function encodeValues(items: Item[], headers: string[], bytes: number): Buffer {
  const reply = Buffer.allocUnsafe(bytes);
  let offset = 0;
  for (let index = 0; index < items.length; index += 1) {
    const item = items[index];
    const header = headers[index];
    if (item === undefined || header === undefined) throw new Error(`values reply: no item or header ${index}`);
    offset += reply.write(header, offset, 'latin1');
    offset += item.value.copy(reply, offset);
    reply[offset] = CARRIAGE_RETURN;
    reply[offset + 1] = NEWLINE;
    offset += 2;
  }
  END.copy(reply, offset);
  return reply;
}

/**
 * A values reply as parts to write in order: one Buffer when small, else each item's header line,
 * its value Buffer itself (never copied) and CRLF, then END.
 */
function valuesParts(items: Item[], withCas: boolean): Buffer[] {
  const { headers, bytes } = valueHeaders(items, withCas);
  if (bytes <= FLAT_REPLY_BYTES_MAX) return [encodeValues(items, headers, bytes)];
  const parts: Buffer[] = [];
  for (let index = 0; index < items.length; index += 1) {
    const item = items[index];
    const header = headers[index];
    if (item === undefined || header === undefined) throw new Error(`values reply: no item or header ${index}`);
    parts.push(Buffer.from(header, 'latin1'), item.value, CRLF);
  }
  parts.push(END);
  return parts;
}

/**
 * `encodeTextReply` as parts to write in order, so that a reply of many large values is never
 * copied into one Buffer: the server writes it value by value, minding the client's reading pace.
 */
export function encodeTextReplyParts(command: Command, reply: Reply): Buffer[] {
  if (reply.kind === 'values' && !isSilenced(command)) return valuesParts(reply.items, wantsCas(command));
  const bytes = encodeTextReply(command, reply);
  return bytes.length === 0 ? [] : [bytes];
}

/**
 * Encodes `reply` to `command` as memcached's text protocol does. A command sent with `noreply`
 * gets no bytes at all, errors included (as in memcached); `quit` and `none` are empty.
 */
export function encodeTextReply(command: Command, reply: Reply): Buffer {
  if (isSilenced(command) || command.kind === 'quit') return Buffer.alloc(0);
  switch (reply.kind) {
    case 'stored': return line('STORED');
    case 'not_stored': return line('NOT_STORED');
    case 'exists': return line('EXISTS');
    case 'not_found': return line('NOT_FOUND');
    case 'deleted': return line('DELETED');
    case 'touched': return line('TOUCHED');
    case 'ok': return line('OK');
    case 'values': {
      const { headers, bytes } = valueHeaders(reply.items, wantsCas(command));
      return encodeValues(reply.items, headers, bytes);
    }
    case 'number': return line(reply.value.toString());
    case 'version': return line(`VERSION ${reply.version}`);
    case 'stats': return Buffer.concat([...reply.stats.map(([name, value]) => line(`STAT ${name} ${value}`)), END]);
    case 'reset': return line('RESET');
    case 'text': return Buffer.concat([...reply.lines.map(line), END]);
    case 'error': return line('ERROR');
    case 'client_error': return line(`CLIENT_ERROR ${reply.message}`);
    case 'refused': return line(`SERVER_ERROR ${refusalText(reply)}`);
    case 'none': return Buffer.alloc(0);
    default: {
      const unreachable: never = reply;
      return unreachable;
    }
  }
}

/** Encodes a reply that no command produced (a decoder's `invalid` item). */
export function encodeTextInvalid(reply: Reply): Buffer {
  return encodeTextReply({ kind: 'version' }, reply);
}
