/** A check of a long multi-get reply as it streams in, without holding it (the 1024-copy get tests). */

import type net from 'node:net';

/**
 * Checks a reply of `copies` times `record`, then END, as it streams in, without keeping it:
 * resolves with the bytes received once they are all there and all correct.
 */
export function checkStreamedReply(socket: net.Socket, record: Buffer, copies: number, timeoutMs: number): Promise<number> {
  const recordsBytes = record.length * copies;
  const end = Buffer.from('END\r\n');
  const totalBytes = recordsBytes + end.length;
  let position = 0;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`reply incomplete after ${timeoutMs} ms: ${position} of ${totalBytes} bytes`)), timeoutMs);
    socket.on('data', (chunk: Buffer) => {
      let offset = 0;
      while (offset < chunk.length) {
        const expected = position < recordsBytes ? record.subarray(position % record.length) : end.subarray(position - recordsBytes);
        const length = Math.min(expected.length, chunk.length - offset);
        if (length === 0 || !chunk.subarray(offset, offset + length).equals(expected.subarray(0, length))) {
          clearTimeout(timer);
          reject(new Error(`reply differs at byte ${position}`));
          return;
        }
        offset += length;
        position += length;
      }
      if (position === totalBytes) {
        clearTimeout(timer);
        resolve(position);
      }
    });
  });
}
