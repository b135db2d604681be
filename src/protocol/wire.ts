/**
 * The client server's view of the wire: decoded requests of either protocol as one type, the
 * reply's bytes in the request's protocol, which commands may be in flight together, and the few
 * replies the server gives itself. Pure functions; the connection loop is ./connection.ts.
 */

import type { Command, DecoderOptions, ProtocolLimits, Reply } from './types.ts';
import { TextRequestDecoder, encodeTextInvalid, encodeTextReplyParts } from './text.ts';
import {
  BinaryRequestDecoder, encodeBinaryError, encodeBinaryPacket, encodeBinaryReplyParts, type BinaryHeader,
} from './binary.ts';

/** What the server itself answers to `version`. */
export const PROTOCOL_SERVER_VERSION = '1.6.18-mckv';

/** Longest handler error message passed on to a client. */
const ERROR_MESSAGE_CHARS_MAX = 200;

/** A decoded request as the connection loop sees it, whatever the protocol. */
export type WireRequest =
  /** `header`: the binary request's header (its reply echoes it); null for a text request. */
  | { kind: 'command'; command: Command; header: BinaryHeader | null; weightBytes: number }
  /** The decoder answered it (malformed input, a login): its reply's bytes; close after them if `close`. */
  | { kind: 'answer'; bytes: Buffer; close: boolean };

export type CommandRequest = Extract<WireRequest, { kind: 'command' }>;

export interface WireDecoder {
  push(chunk: Buffer): WireRequest[];
}

/** What a request weighs in the bounds on bytes held: its value and key, or a nominal 64 bytes. */
function commandWeightBytes(command: Command): number {
  return command.kind === 'store' ? command.value.length + command.key.length : 64;
}

/** A protocol's request decoder, its items mapped to WireRequests one for one. */
function wireDecoder<Item>(decoder: { push(chunk: Buffer): Item[] }, toRequest: (item: Item) => WireRequest): WireDecoder {
  return { push: (chunk) => decoder.push(chunk).map(toRequest) };
}

type TextItem = ReturnType<TextRequestDecoder['push']>[number];
type BinaryItem = ReturnType<BinaryRequestDecoder['push']>[number];

export function textWireDecoder(limits: ProtocolLimits, options: DecoderOptions): WireDecoder {
  return wireDecoder(new TextRequestDecoder(limits, options), (item: TextItem): WireRequest => {
    switch (item.kind) {
      case 'command':
        return { kind: 'command', command: item.command, header: null, weightBytes: commandWeightBytes(item.command) };
      case 'invalid':
        return { kind: 'answer', bytes: encodeTextInvalid(item.reply), close: item.close };
      case 'answered':
        return { kind: 'answer', bytes: encodeTextInvalid(item.reply), close: false };
      default: {
        const unreachable: never = item;
        return unreachable;
      }
    }
  });
}

export function binaryWireDecoder(limits: ProtocolLimits, options: DecoderOptions): WireDecoder {
  return wireDecoder(new BinaryRequestDecoder(limits, options), (item: BinaryItem): WireRequest => {
    switch (item.kind) {
      case 'command':
        return { kind: 'command', command: item.command, header: item.header, weightBytes: commandWeightBytes(item.command) };
      case 'invalid': {
        const bytes = item.header === null ? Buffer.alloc(0) : encodeBinaryError(item.header, item.status, item.message);
        return { kind: 'answer', bytes, close: item.close };
      }
      case 'answered': {
        const bytes = encodeBinaryPacket(item.header, { status: item.status, value: Buffer.from(item.body, 'latin1') });
        return { kind: 'answer', bytes, close: false };
      }
      default: {
        const unreachable: never = item;
        return unreachable;
      }
    }
  });
}

/** The reply's bytes in the request's protocol, as parts to write in order. */
export function encodeReplyParts(request: CommandRequest, reply: Reply): Buffer[] {
  return request.header === null
    ? encodeTextReplyParts(request.command, reply)
    : encodeBinaryReplyParts(request.header, request.command, reply);
}

/** The message of a handler failure, one line, bounded, without a stack. */
export function failureMessage(error: unknown): string {
  const raw = error instanceof Error ? error.message : String(error);
  const firstLine = raw.split(/\r?\n/, 1)[0] ?? '';
  const message = firstLine.length > 0 ? firstLine : 'internal error';
  return message.slice(0, ERROR_MESSAGE_CHARS_MAX);
}

/**
 * Which commands may be in flight together: a run of reads, or a run of writes, or (when the
 * handler keeps the connection's order) a run of both.
 */
export type CommandClass = 'read' | 'write' | 'alone';

export function commandClass(command: Command, handlerKeepsOrder: boolean): CommandClass {
  switch (command.kind) {
    case 'get':
      return 'read';
    case 'store':
    case 'arith':
    case 'delete':
    case 'touch':
    case 'gat':
      return handlerKeepsOrder ? 'read' : 'write';
    default:
      return 'alone';
  }
}

/** Replies the server gives itself; null means "ask the handler". */
export function ownReply(command: Command): Reply | null {
  switch (command.kind) {
    case 'version': return { kind: 'version', version: PROTOCOL_SERVER_VERSION };
    case 'verbosity': return { kind: 'ok' };
    case 'noop': return { kind: 'ok' };
    // The text encoder writes nothing for quit; the binary one answers a (non-quiet) quit.
    case 'quit': return { kind: 'ok' };
    default: return null;
  }
}

/** Runs `then` after a write: at once when it was not held back, else once it is done. */
export function afterWrite(pending: Promise<void> | undefined, then: () => void): Promise<void> | undefined {
  if (pending === undefined) {
    then();
    return undefined;
  }
  return pending.then(then);
}

/** A get or gat naming a key more than once, with each key once; null when no key repeats. */
export function withUniqueKeys(command: Command): Command | null {
  if ((command.kind !== 'get' && command.kind !== 'gat') || command.keys.length < 2) return null;
  const keys = [...new Set(command.keys)];
  return keys.length === command.keys.length ? null : { ...command, keys };
}

/** The reply to the unique keys, as the reply to every key asked: an item once per time asked. */
export function expandItems(command: Command, reply: Reply): Reply {
  if (reply.kind !== 'values' || (command.kind !== 'get' && command.kind !== 'gat')) return reply;
  const byKey = new Map(reply.items.map((item) => [item.key, item]));
  return { kind: 'values', items: command.keys.flatMap((key) => byKey.get(key) ?? []) };
}
