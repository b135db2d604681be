/**
 * The controller's side of causal tokens (mckv extensions to the text protocol, causal mode):
 * `causal_token` answers `TOKEN <token>` naming what this controller has made visible — a
 * superset of the connection's causal past — and `causal_wait <token> [timeout_ms]` answers OK
 * once this controller has made all of it visible, or SERVER_ERROR at the bound. The command is
 * alone on its connection (the server runs nothing after it until it answers), so every later
 * command of that connection sees what the token names.
 *
 * The mode decides (Machine.coversToken); this only polls it with a timer, which is the shell's
 * business: a pure machine never waits.
 */

import { refused } from '../protocol/refusals.ts';
import type { Machine } from '../consistency/types.ts';
import type { Command, Reply } from '../protocol/types.ts';

/** How often a waiting connection asks the mode again. */
const POLL_INTERVAL_MS = 10;

type CausalCommand = Extract<Command, { kind: 'causal_token' | 'causal_wait' }>;

/** The reply to a causal token command, at once or when the wait ends. */
export function causalCommand(machine: Machine<unknown>, command: CausalCommand): Reply | Promise<Reply> {
  if (machine.contextToken === undefined || machine.coversToken === undefined) {
    return { kind: 'client_error', message: 'causal tokens need causal mode (-cons causal)' };
  }
  if (command.kind === 'causal_token') return { kind: 'text', lines: [`TOKEN ${machine.contextToken()}`] };
  const covers = (): boolean | null => machine.coversToken?.(command.token) ?? null;
  const first = covers();
  if (first === null) return { kind: 'client_error', message: 'bad causal token' };
  if (first) return { kind: 'ok' };
  const startedMs = Date.now();
  return new Promise<Reply>((resolve) => {
    const timer = setInterval(() => {
      if (covers() === true) {
        clearInterval(timer);
        resolve({ kind: 'ok' });
      } else if (Date.now() - startedMs >= command.timeoutMs) {
        clearInterval(timer);
        resolve(refused('timeout', `causal wait of ${command.timeoutMs} ms: this controller has not caught up with the token`));
      }
    }, POLL_INTERVAL_MS);
  });
}
