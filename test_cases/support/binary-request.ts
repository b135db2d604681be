/**
 * Builders of memcached binary-protocol request packets for tests, written from protocol_binary.h
 * rather than from our codec, so tests that use them check the codec against the wire format.
 */

/** A request packet's parts; `magic` and `keyBytes` can be set wrong on purpose. */
export interface BinaryRequestSpec {
  opcode: number;
  key?: string;
  extras?: Buffer;
  value?: Buffer | string;
  opaque?: number;
  cas?: bigint;
  magic?: number;
  keyBytes?: number;
}

/** One request packet: the 24-byte header, then extras, key and value. */
export function binaryRequest(spec: BinaryRequestSpec): Buffer {
  const key = Buffer.from(spec.key ?? '', 'latin1');
  const extras = spec.extras ?? Buffer.alloc(0);
  const value = typeof spec.value === 'string' ? Buffer.from(spec.value, 'latin1') : spec.value ?? Buffer.alloc(0);
  const head = Buffer.alloc(24);
  head.writeUInt8(spec.magic ?? 0x80, 0);
  head.writeUInt8(spec.opcode, 1);
  head.writeUInt16BE(spec.keyBytes ?? key.length, 2);
  head.writeUInt8(extras.length, 4);
  head.writeUInt32BE(extras.length + key.length + value.length, 8);
  head.writeUInt32BE(spec.opaque ?? 0, 12);
  head.writeBigUInt64BE(spec.cas ?? 0n, 16);
  return Buffer.concat([head, extras, key, value]);
}

/** incr/decr extras: the delta, the initial value, and the expiration (0xffffffff: do not create). */
export function arithExtras(delta: bigint, initial: bigint, expiration: number): Buffer {
  const extras = Buffer.alloc(20);
  extras.writeBigUInt64BE(delta, 0);
  extras.writeBigUInt64BE(initial, 8);
  extras.writeUInt32BE(expiration, 16);
  return extras;
}
