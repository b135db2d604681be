/**
 * The tag bytes of the peer value codec (value-encoder.ts writes them, value-check.ts and
 * value-decoder.ts read them). Layout, multi-byte numbers little-endian, lengths u32:
 *
 *   0x00-0x7f  integer 0..127                  0xc0  null
 *   0x80-0x9f  string of 0..31 utf8 bytes      0xc1  false          0xc2  true
 *   0xa0-0xaf  array of 0..15 values           0xc3  int32          0xc4  float64
 *   0xb0-0xbf  object of 0..15 fields          0xc5  string: u32 byte length, utf8 bytes
 *   0xe0-0xff  integer -32..-1                 0xc6  bytes: u32 length, raw bytes (a Buffer)
 *                                              0xc7  array: u32 count, values
 *                                              0xc8  object: u32 count, (string key, value)*
 *                                              0xc9  bigint 0..2^64-1: u64
 *                                              0xca  bigint -(2^64-1)..-1: u64 magnitude
 *                                              0xcb  bigint beyond ±(2^64-1): sign byte (0 or 1),
 *                                                    u32 length, magnitude big-endian
 */

export const FIXINT_MAX = 0x7f;
export const FIXSTR = 0x80;
export const FIXSTR_BYTES_MAX = 31;
export const FIXARRAY = 0xa0;
export const FIXOBJECT = 0xb0;
export const FIXCOUNT_MAX = 15;
export const TAG_NULL = 0xc0;
export const TAG_FALSE = 0xc1;
export const TAG_TRUE = 0xc2;
export const TAG_INT32 = 0xc3;
export const TAG_FLOAT64 = 0xc4;
export const TAG_STRING = 0xc5;
export const TAG_BYTES = 0xc6;
export const TAG_ARRAY = 0xc7;
export const TAG_OBJECT = 0xc8;
export const TAG_BIGINT_U64 = 0xc9;
export const TAG_BIGINT_NEGATIVE_U64 = 0xca;
export const TAG_BIGINT_ANY = 0xcb;
export const NEGATIVE_FIXINT = 0xe0;
export const NEGATIVE_FIXINT_MIN = -32;

/** Deepest nesting written or read: a top-level scalar is depth 0, a top-level array's elements 1. */
export const VALUE_DEPTH_MAX = 32;
/** Largest bigint magnitude written or read, in bits: mckv's own never need more than 64. */
export const BIGINT_BITS_MAX = 128;
