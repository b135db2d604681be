/**
 * A compact, self-describing binary encoding for the values peers send each other: the payload
 * of a peer frame (frame.ts) and of a write-ahead record (wal.ts). This is the module to import;
 * the encoder is value-encoder.ts, the decoder's two passes value-check.ts and value-decoder.ts.
 *
 * Intuition: each value is one tag byte and its body (layout in value-tags.ts), written in one
 * walk into a reused scratch buffer; small integers, strings and containers carry their size in
 * the tag (as MessagePack). Decoding walks twice: value-check.ts proves the payload canonical and
 * within DecodeLimits building nothing, then the value is built with only duplicate keys to find.
 *
 * Round-trips as JSON would, and also -0, NaN, ±Infinity, bigints up to BIGINT_BITS_MAX bits and
 * Buffers (any Uint8Array decodes as a Buffer). As JSON.stringify: undefined, function and symbol
 * fields are left out (such elements become null), `toJSON` is used, lone surrogates become U+FFFD.
 *
 * Invariants: `decodeValue` never throws; it refuses, as a value, what `encode` would not write,
 * and what it accepts re-encodes to the same bytes.
 */

export { BIGINT_BITS_MAX, VALUE_DEPTH_MAX } from './value-tags.ts';
export { DECODE_LIMITS_DEFAULT, type DecodeLimits, type ValueDecodeFailure, type ValueDecodeReason } from './value-check.ts';
export { ValueEncoder, encodeValue, encodeValueAfter } from './value-encoder.ts';
export { decodeValue, type ValueDecodeOptions, type ValueDecodeResult } from './value-decoder.ts';
