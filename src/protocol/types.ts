/**
 * The memcached commands and replies as typed values, shared by the text and binary codecs, the
 * client-facing server and the controller. Nothing here knows about wire bytes or replication.
 *
 * Keys are byte strings: decoders turn key bytes into a JS string with `latin1`, one char per byte,
 * so `Buffer.from(key, 'latin1')` gives the exact bytes back and `key.length` is the byte length.
 */

import type { Login } from './auth.ts';
import type { Refusal } from './refusals.ts';

export type StoreVerb = 'set' | 'add' | 'replace' | 'append' | 'prepend' | 'cas';
export type ArithVerb = 'incr' | 'decr';

/** One request from a client, as decoded from either protocol. */
export type Command =
  /** get / gets: `cas` is true for gets. */
  | { kind: 'get'; keys: string[]; cas: boolean }
  /** gat / gats: get and touch. `exptime` is as the client sent it (relative, absolute or < 0). */
  | { kind: 'gat'; keys: string[]; cas: boolean; exptime: number }
  /**
   * set/add/replace/append/prepend/cas. `casUnique` is 0n unless verb is 'cas', or the binary
   * protocol's header cas on append/prepend (non-zero: the append happens only if it matches).
   */
  | {
      kind: 'store';
      verb: StoreVerb;
      key: string;
      flags: number;
      exptime: number;
      value: Buffer;
      casUnique: bigint;
      noreply: boolean;
    }
  /**
   * incr/decr. `initial` is null for the text protocol (a missing key is NOT_FOUND); the binary
   * protocol may ask to create a missing key with `initial` and `exptime`, and may set `casUnique`
   * (its header cas: a non-zero one must match an existing item's).
   */
  | {
      kind: 'arith';
      verb: ArithVerb;
      key: string;
      delta: bigint;
      initial: bigint | null;
      exptime: number;
      noreply: boolean;
      casUnique?: bigint;
    }
  /** delete. `casUnique`: the binary protocol's header cas; a non-zero one must match the item's. */
  | { kind: 'delete'; key: string; noreply: boolean; casUnique?: bigint }
  | { kind: 'touch'; key: string; exptime: number; noreply: boolean }
  | { kind: 'flush_all'; delaySeconds: number; noreply: boolean }
  | { kind: 'version' }
  | { kind: 'verbosity'; level: number; noreply: boolean }
  /** stats with an optional group name ('' for the general stats). */
  | { kind: 'stats'; group: string }
  | { kind: 'quit' }
  | { kind: 'noop' }
  /** mckv's extension: the cluster status as this controller sees it; `show json` as one line of JSON. */
  | { kind: 'show'; json?: true }
  /** mckv's extension (causal mode): a token naming this connection's causal context. */
  | { kind: 'causal_token' }
  /** mckv's extension (causal mode): wait until this controller has caught up with `token`. */
  | { kind: 'causal_wait'; token: string; timeoutMs: number };

export type CommandKind = Command['kind'];

/** One item of a get reply. */
export interface Item {
  key: string;
  flags: number;
  value: Buffer;
  cas: bigint;
}

/**
 * The outcome of a command, before encoding. `cas` on stored/touched/number is the item's new cas
 * token, which the binary protocol returns in the response header (the text protocol has no place
 * for it); `flags` on touched are the item's flags, the binary touch response's extras.
 */
export type Reply =
  | { kind: 'stored'; cas?: bigint }
  | { kind: 'not_stored' }
  | { kind: 'exists' }
  | { kind: 'not_found' }
  | { kind: 'deleted' }
  | { kind: 'touched'; cas?: bigint; flags?: number }
  | { kind: 'ok' }
  /** get/gets/gat/gats: the items found, in the order the keys were asked. */
  | { kind: 'values'; items: Item[] }
  /** incr/decr: the new value. */
  | { kind: 'number'; value: bigint; cas?: bigint }
  | { kind: 'version'; version: string }
  | { kind: 'stats'; stats: Array<[string, string]> }
  /** `stats reset`: memcached's `RESET`, in the binary protocol an empty stats answer. */
  | { kind: 'reset' }
  /** show: lines of text (no CRLF); encoded as the lines then END. */
  | { kind: 'text'; lines: string[] }
  /** Unknown command, or stats group: memcached's bare `ERROR` (binary: unknown command; for a stats group, not found). */
  | { kind: 'error' }
  | { kind: 'client_error'; message: string }
  /** Not served: `SERVER_ERROR …` (binary: a status), rendered by the table of refusals.ts. */
  | Refusal
  /** Nothing is written back (noreply, quit). */
  | { kind: 'none' };

export type ReplyKind = Reply['kind'];

/** Limits on what a client controls. Defaults in `DEFAULT_LIMITS`. */
export interface ProtocolLimits {
  /** Longest key, in bytes (memcached: 250). */
  keyBytesMax: number;
  /** Largest value, in bytes (memcached's default item size: 1 MiB). */
  valueBytesMax: number;
  /** Longest command line without its data block, in bytes. */
  lineBytesMax: number;
  /** Most keys in one get. */
  keysPerGetMax: number;
  /** Unsent reply bytes of a connection past which it is not read until they drain (as memcached). */
  outputBytesMax: number;
  /** Requests of a connection decoded and not yet answered past which it is not read. */
  requestsInFlightMax: number;
  /**
   * Requests of all connections decoded and not yet answered past which no connection is read
   * (until half of them are answered): the controller's own bound, below its mode's queue, so a
   * flood of clients waits instead of being refused.
   */
  serverRequestsInFlightMax: number;
  /**
   * Bytes (values and keys) of the requests the handler holds unanswered past which it is handed
   * no more (one request is always taken, however large): what a bulk load of large values keeps
   * in the controller at once, so it is slowed to what replication carries instead of timing out.
   */
  serverRequestBytesInFlightMax: number;
  /** Open client connections; one more is told so and closed (memcached's -c, default 1024). */
  connectionsMax: number;
}

export const DEFAULT_LIMITS: Readonly<ProtocolLimits> = Object.freeze({
  keyBytesMax: 250,
  valueBytesMax: 1024 * 1024,
  lineBytesMax: 8192,
  keysPerGetMax: 1024,
  outputBytesMax: 4 * 1024 * 1024,
  requestsInFlightMax: 1024,
  serverRequestsInFlightMax: 8192,
  serverRequestBytesInFlightMax: 16 * 1024 * 1024,
  connectionsMax: 1024,
});

/** What a connection may do, beyond the limits; read by both decoders. */
export interface DecoderOptions {
  /** flush_all is served; when false it is refused as memcached -F refuses it. Default true. */
  flushAllEnabled?: boolean;
  /** Checks logins; null (default) serves every connection without one. */
  login?: Login | null;
}
