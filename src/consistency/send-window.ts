/**
 * The send window shared by the modes' whole-replica copies (a state transfer's chunks, a causal
 * snapshot's parts): at most SEND_WINDOW_BYTES of parts sent and not acknowledged, so a replica of
 * any size passes through a peer connection's bounded send queue (which drops what it cannot hold)
 * instead of overflowing it. The receiver acks how many parts it holds; parts go in order.
 */

/** Bytes of parts sent and not yet acknowledged (beyond one part, which may be larger). */
export const SEND_WINDOW_BYTES = 4 * 1024 * 1024;

/**
 * How many parts may have been sent once the window is full again: from `sent`, parts of
 * `partBytes` go while those after `acked` stay within SEND_WINDOW_BYTES; one at least when
 * nothing is unacknowledged.
 */
export function sendableThrough(partBytes: readonly number[], acked: number, sent: number): number {
  let unackedBytes = 0;
  for (let part = acked; part < sent; part += 1) unackedBytes += partBytes[part] ?? 0;
  let through = sent;
  while (through < partBytes.length) {
    const bytes = partBytes[through] ?? 0;
    if (through > acked && unackedBytes + bytes > SEND_WINDOW_BYTES) break;
    unackedBytes += bytes;
    through += 1;
  }
  return through;
}
