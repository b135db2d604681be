/**
 * What each memcached binary opcode means to mckv: the shape its body must have, the header fields
 * its response needs (quiet, with key), and the `Command` a well-shaped packet maps to. The
 * streaming decoder (./binary.ts) checks shapes and frames bodies; the response encoder
 * (./binary-response.ts) reads the same opcode families.
 *
 * Invariant: cas as memcached 1.6 uses it: a request's header cas makes set/add/replace a cas, and
 * makes append/prepend, incr/decr and delete conditional (`casUnique`).
 */

import type { Command } from './types.ts';
import { OPCODE, type PacketHeader } from './binary-header.ts';

/** What the response to a request needs from its header. */
export interface BinaryHeader {
  opcode: number;
  opaque: number;
  /** A quiet opcode: no response on success (on a miss, for the get family). */
  quiet: boolean;
  /** The response carries the key (getk, getkq, gatk, gatkq). */
  withKey: boolean;
}

/** A request's header (its `status` is the vbucket, unused). */
export type RequestHeader = PacketHeader & { cas: bigint };

/** The shape each opcode's body must have. `key`: 'required' | 'none' | 'optional'. */
export interface OpcodeShape {
  extras: readonly number[];
  key: 'required' | 'none' | 'optional';
  value: boolean;
}

/** The body shape of every opcode served as a command (SASL's are checked by the decoder). */
export const SHAPES: ReadonlyMap<number, OpcodeShape> = new Map(
  [
    [[OPCODE.get, OPCODE.getq, OPCODE.getk, OPCODE.getkq, OPCODE.delete, OPCODE.deleteq], { extras: [0], key: 'required', value: false }],
    [[OPCODE.set, OPCODE.setq, OPCODE.add, OPCODE.addq, OPCODE.replace, OPCODE.replaceq], { extras: [8], key: 'required', value: true }],
    [[OPCODE.append, OPCODE.appendq, OPCODE.prepend, OPCODE.prependq], { extras: [0], key: 'required', value: true }],
    [[OPCODE.increment, OPCODE.incrementq, OPCODE.decrement, OPCODE.decrementq], { extras: [20], key: 'required', value: false }],
    [[OPCODE.touch, OPCODE.gat, OPCODE.gatq, OPCODE.gatk, OPCODE.gatkq], { extras: [4], key: 'required', value: false }],
    [[OPCODE.quit, OPCODE.quitq, OPCODE.noop, OPCODE.version], { extras: [0], key: 'none', value: false }],
    [[OPCODE.flush, OPCODE.flushq], { extras: [0, 4], key: 'none', value: false }],
    [[OPCODE.verbosity], { extras: [4], key: 'none', value: false }],
    [[OPCODE.stat], { extras: [0], key: 'optional', value: false }],
  ].flatMap(([opcodes, shape]) => (opcodes as number[]).map((opcode) => [opcode, shape as OpcodeShape] as const)),
);

const QUIET_OPCODES: ReadonlySet<number> = new Set([
  OPCODE.getq, OPCODE.getkq, OPCODE.setq, OPCODE.addq, OPCODE.replaceq, OPCODE.deleteq, OPCODE.incrementq,
  OPCODE.decrementq, OPCODE.quitq, OPCODE.flushq, OPCODE.appendq, OPCODE.prependq, OPCODE.gatq, OPCODE.gatkq,
]);
const WITH_KEY_OPCODES: ReadonlySet<number> = new Set([OPCODE.getk, OPCODE.getkq, OPCODE.gatk, OPCODE.gatkq]);
/** get and gat in all their forms: a quiet one is silent on a miss. */
export const GET_FAMILY: ReadonlySet<number> = new Set([
  OPCODE.get, OPCODE.getq, OPCODE.getk, OPCODE.getkq, OPCODE.gat, OPCODE.gatq, OPCODE.gatk, OPCODE.gatkq,
]);
const STORE_WITH_EXTRAS: ReadonlySet<number> = new Set([
  OPCODE.set, OPCODE.setq, OPCODE.add, OPCODE.addq, OPCODE.replace, OPCODE.replaceq,
]);
/** Expiration extras value that makes incr/decr fail on a missing key instead of creating it. */
const ARITH_NO_CREATE = 0xffffffff;

/** The fields of `request` its response echoes or obeys. */
export function responseHeaderOf(request: RequestHeader): BinaryHeader {
  return {
    opcode: request.opcode,
    opaque: request.opaque,
    quiet: QUIET_OPCODES.has(request.opcode),
    withKey: WITH_KEY_OPCODES.has(request.opcode),
  };
}

interface PacketParts {
  request: RequestHeader;
  extras: Buffer;
  key: string;
  value: Buffer;
}

/** Maps a well-shaped packet to its command. */
export function commandOf(packet: PacketParts): Command {
  const { request, extras, key, value } = packet;
  const opcode = request.opcode;
  if (GET_FAMILY.has(opcode)) {
    const cas = true;
    if (opcode === OPCODE.get || opcode === OPCODE.getq || opcode === OPCODE.getk || opcode === OPCODE.getkq) {
      return { kind: 'get', keys: [key], cas };
    }
    return { kind: 'gat', keys: [key], cas, exptime: extras.readInt32BE(0) };
  }
  if (STORE_WITH_EXTRAS.has(opcode)) return storeCommandOf(packet);
  switch (opcode) {
    case OPCODE.append: case OPCODE.appendq: case OPCODE.prepend: case OPCODE.prependq: {
      const verb = opcode === OPCODE.append || opcode === OPCODE.appendq ? 'append' : 'prepend';
      return { kind: 'store', verb, key, flags: 0, exptime: 0, value, casUnique: request.cas, noreply: false };
    }
    case OPCODE.delete: case OPCODE.deleteq:
      return { kind: 'delete', key, noreply: false, casUnique: request.cas };
    case OPCODE.increment: case OPCODE.incrementq: case OPCODE.decrement: case OPCODE.decrementq: {
      const verb = opcode === OPCODE.increment || opcode === OPCODE.incrementq ? 'incr' : 'decr';
      const expiration = extras.readUInt32BE(16);
      const initial = expiration === ARITH_NO_CREATE ? null : extras.readBigUInt64BE(8);
      const exptime = expiration === ARITH_NO_CREATE ? 0 : extras.readInt32BE(16);
      return {
        kind: 'arith', verb, key, delta: extras.readBigUInt64BE(0), initial, exptime, noreply: false, casUnique: request.cas,
      };
    }
    case OPCODE.touch:
      return { kind: 'touch', key, exptime: extras.readInt32BE(0), noreply: false };
    case OPCODE.flush: case OPCODE.flushq:
      return { kind: 'flush_all', delaySeconds: extras.length === 4 ? extras.readInt32BE(0) : 0, noreply: false };
    case OPCODE.verbosity:
      return { kind: 'verbosity', level: extras.readUInt32BE(0), noreply: false };
    case OPCODE.stat:
      return { kind: 'stats', group: key };
    case OPCODE.version:
      return { kind: 'version' };
    case OPCODE.noop:
      return { kind: 'noop' };
    default:
      // quit, quitq: the only shaped opcodes left.
      return { kind: 'quit' };
  }
}

/** set/add/replace; a non-zero cas in the header makes any of them a cas (as memcached does). */
function storeCommandOf({ request, extras, key, value }: PacketParts): Command {
  const opcode = request.opcode;
  const baseVerb = opcode === OPCODE.set || opcode === OPCODE.setq ? 'set'
    : opcode === OPCODE.add || opcode === OPCODE.addq ? 'add' : 'replace';
  const verb = request.cas !== 0n ? 'cas' : baseVerb;
  return {
    kind: 'store', verb, key, flags: extras.readUInt32BE(0), exptime: extras.readInt32BE(4), value,
    casUnique: request.cas, noreply: false,
  };
}
