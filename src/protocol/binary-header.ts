/**
 * memcached's binary protocol packet header (protocol_binary.h), the one place its layout,
 * magic bytes, opcodes and status codes are written down: the server's codec (./binary.ts,
 * ./binary-response.ts), the backend client (../store/memcached.ts) and the load generator
 * (bench/loadgen.ts) all read and write headers through it.
 *
 *   byte  0      magic (0x80 request, 0x81 response)     byte  5     data type (0)
 *   byte  1      opcode                                  bytes 6-7   vbucket (request) / status (response)
 *   bytes 2-3    key length                              bytes 8-11  body length: extras + key + value
 *   byte  4      extras length                           bytes 12-15 opaque (echoed in the response)
 *                                                        bytes 16-23 cas
 * Multi-byte fields are big-endian. The body follows: extras, key, value.
 */

export const REQUEST_MAGIC = 0x80;
export const RESPONSE_MAGIC = 0x81;
export const HEADER_BYTES = 24;

/** Opcodes (memcached protocol_binary.h). */
export const OPCODE = Object.freeze({
  get: 0x00, set: 0x01, add: 0x02, replace: 0x03, delete: 0x04, increment: 0x05, decrement: 0x06,
  quit: 0x07, flush: 0x08, getq: 0x09, noop: 0x0a, version: 0x0b, getk: 0x0c, getkq: 0x0d,
  append: 0x0e, prepend: 0x0f, stat: 0x10, setq: 0x11, addq: 0x12, replaceq: 0x13, deleteq: 0x14,
  incrementq: 0x15, decrementq: 0x16, quitq: 0x17, flushq: 0x18, appendq: 0x19, prependq: 0x1a,
  verbosity: 0x1b, touch: 0x1c, gat: 0x1d, gatq: 0x1e, gatk: 0x23, gatkq: 0x24,
  saslListMechs: 0x20, saslAuth: 0x21, saslStep: 0x22,
});

/** Response status codes (memcached protocol_binary.h). */
export const BINARY_STATUS = Object.freeze({
  ok: 0x00,
  keyNotFound: 0x01,
  keyExists: 0x02,
  valueTooLarge: 0x03,
  invalidArguments: 0x04,
  notStored: 0x05,
  nonNumeric: 0x06,
  /** SASL failed, or a command came before SASL succeeded; also memcached -F's answer to flush. */
  authError: 0x20,
  /** SASL wants another step (PLAIN sent without its initial response). */
  authContinue: 0x21,
  unknownCommand: 0x81,
  outOfMemory: 0x82,
  notSupported: 0x83,
  internalError: 0x84,
  busy: 0x85,
  temporaryFailure: 0x86,
});

export type BinaryStatus = (typeof BINARY_STATUS)[keyof typeof BINARY_STATUS];

/**
 * A packet header's fields but its cas (read apart by `casAt`: a BigInt read that a reader of
 * replies mostly does not need). `status` is a request's vbucket (0 from every client we know).
 */
export interface PacketHeader {
  magic: number;
  opcode: number;
  keyBytes: number;
  extrasBytes: number;
  status: number;
  /** extras + key + value. */
  bodyBytes: number;
  opaque: number;
}

const OPCODE_AT = 1;
const KEY_BYTES_AT = 2;
const EXTRAS_BYTES_AT = 4;
const DATA_TYPE_AT = 5;
const STATUS_AT = 6;
const BODY_BYTES_AT = 8;
const OPAQUE_AT = 12;
const CAS_AT = 16;

/** The header at `offset`, but its cas (HEADER_BYTES of it must be there). */
export function readHeader(bytes: Buffer, offset = 0): PacketHeader {
  return {
    magic: bytes.readUInt8(offset),
    opcode: bytes.readUInt8(offset + OPCODE_AT),
    keyBytes: bytes.readUInt16BE(offset + KEY_BYTES_AT),
    extrasBytes: bytes.readUInt8(offset + EXTRAS_BYTES_AT),
    status: bytes.readUInt16BE(offset + STATUS_AT),
    bodyBytes: bytes.readUInt32BE(offset + BODY_BYTES_AT),
    opaque: bytes.readUInt32BE(offset + OPAQUE_AT),
  };
}

/** The cas of the header at `offset`. */
export function casAt(bytes: Buffer, offset: number): bigint {
  return bytes.readBigUInt64BE(offset + CAS_AT);
}

/** The body length of the header at `offset`: how far a framing loop must read. */
export function bodyBytesAt(bytes: Buffer, offset: number): number {
  return bytes.readUInt32BE(offset + BODY_BYTES_AT);
}

/** Writes a header at the start of `target` (data type 0; status, opaque and cas 0 unless given). */
export function writeHeader(
  target: Buffer,
  header: Pick<PacketHeader, 'magic' | 'opcode' | 'keyBytes' | 'extrasBytes' | 'bodyBytes'> & Partial<Pick<PacketHeader, 'status' | 'opaque'>> & { cas?: bigint },
): void {
  target[0] = header.magic;
  target[OPCODE_AT] = header.opcode;
  target.writeUInt16BE(header.keyBytes, KEY_BYTES_AT);
  target[EXTRAS_BYTES_AT] = header.extrasBytes;
  target[DATA_TYPE_AT] = 0;
  target.writeUInt16BE(header.status ?? 0, STATUS_AT);
  target.writeUInt32BE(header.bodyBytes, BODY_BYTES_AT);
  target.writeUInt32BE(header.opaque ?? 0, OPAQUE_AT);
  target.writeBigUInt64BE(header.cas ?? 0n, CAS_AT);
}

/** Sets the opcode of the packet that starts `frame` (a request sent again as another command). */
export function setOpcode(frame: Buffer, opcode: number): void {
  frame[OPCODE_AT] = opcode;
}

/** Sets the opaque of the packet that starts `frame` (a client numbers a request when it sends it). */
export function setOpaque(frame: Buffer, opaque: number): void {
  frame.writeUInt32BE(opaque, OPAQUE_AT);
}
