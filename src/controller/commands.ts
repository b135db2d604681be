/**
 * From a client's command to the op every mode replicates.
 *
 * The one thing decided here is time: memcached's exptime (0 never, up to 30 days relative, else
 * an absolute Unix time, negative already expired) becomes an absolute `expiresAtMs` at the
 * controller that took the command, so every replica expires the item at the same moment.
 */

import type { Command } from '../protocol/types.ts';
import type { Op } from '../store/types.ts';

/** memcached treats an exptime up to this many seconds as relative to now. */
const relativeExptimeSecondsMax = 60 * 60 * 24 * 30;

/** An instant long past: an item that expires then is already gone. */
const alreadyExpiredMs = 1;

/** Absolute expiry in ms since the epoch (0 = never) for a memcached exptime received at nowMs. */
export function absoluteExpiryMs(exptime: number, nowMs: number): number {
  if (exptime === 0) return 0;
  if (exptime < 0) return alreadyExpiredMs;
  if (exptime <= relativeExptimeSecondsMax) return nowMs + exptime * 1000;
  const absoluteMs = exptime * 1000;
  return absoluteMs <= nowMs ? alreadyExpiredMs : absoluteMs;
}

/** The replicated op for a data command; null for commands a controller answers itself. */
export function toOp(command: Command, nowMs: number): Op | null {
  switch (command.kind) {
    case 'get':
      return { kind: 'get', keys: command.keys };
    case 'gat':
      return { kind: 'gat', keys: command.keys, expiresAtMs: absoluteExpiryMs(command.exptime, nowMs) };
    case 'store':
      return {
        kind: 'store',
        verb: command.verb,
        key: command.key,
        flags: command.flags,
        expiresAtMs: absoluteExpiryMs(command.exptime, nowMs),
        value: command.value,
        casUnique: command.casUnique,
      };
    case 'arith':
      return {
        kind: 'arith',
        verb: command.verb,
        key: command.key,
        delta: command.delta,
        initial: command.initial,
        expiresAtMs: absoluteExpiryMs(command.exptime, nowMs),
        casUnique: command.casUnique,
      };
    case 'delete':
      return { kind: 'delete', key: command.key, casUnique: command.casUnique };
    case 'touch':
      return { kind: 'touch', key: command.key, expiresAtMs: absoluteExpiryMs(command.exptime, nowMs) };
    case 'flush_all':
      return { kind: 'flush_all', delayMs: Math.max(0, command.delaySeconds) * 1000 };
    case 'version':
    case 'verbosity':
    case 'stats':
    case 'quit':
    case 'noop':
    case 'show':
    case 'causal_token':
    case 'causal_wait':
      return null;
    default: {
      const unreachable: never = command;
      throw new Error(`unknown command ${JSON.stringify(unreachable)}`);
    }
  }
}

/** Whether a command answers with nothing on success (text `noreply`). */
export function isNoreply(command: Command): boolean {
  return 'noreply' in command && command.noreply;
}
