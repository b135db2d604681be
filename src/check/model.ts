/**
 * The register model every checker uses: a pure `step(state, input, output)` in the style of
 * Porcupine's models, for one key.
 *
 * Intuition: the state is the key's value (a canonical string, or `null` when absent). Applying an
 * operation to a state either explains what the client was told (`ok: true`, with the next state)
 * or contradicts it (`ok: false`). A checker searches for an order of operations in which every
 * step is ok.
 *
 * Invariants: `step` is pure and total; the state is a primitive, so states compare with `===`
 * and hash cheaply. An indeterminate output is explained by any state: the operation takes
 * effect if its precondition holds (a cas that matches, an append to a present key). That it
 * might instead never take effect is the checker's business (it may leave the operation out).
 */

import type { OpInput, OpOutput, RegisterValue } from './history.ts';

export interface StepResult {
  ok: boolean;
  state: RegisterValue;
}

/** Every key starts absent. */
export const INITIAL_STATE: RegisterValue = null;

/** Apply one operation to a register state; see the file header. */
export function step(state: RegisterValue, input: OpInput, output: OpOutput): StepResult {
  switch (input.f) {
    case 'read':
      return { ok: output.kind !== 'read' || output.value === state, state };
    case 'write':
      return { ok: true, state: input.value };
    case 'cas':
      return stepCompareAndSet(state, input.expected, input.value, resultOf(output));
    case 'delete':
      return stepDelete(state, resultOf(output));
    case 'append':
      return stepAppend(state, input.value, resultOf(output));
    default: {
      const unreachable: never = input;
      throw new Error(`unknown operation ${JSON.stringify(unreachable)}`);
    }
  }
}

/** The reported boolean result; `undefined` when indeterminate or not reported. */
function resultOf(output: OpOutput): boolean | undefined {
  return output.kind === 'done' ? output.result : undefined;
}

function stepCompareAndSet(
  state: RegisterValue, expected: RegisterValue, value: string, result: boolean | undefined,
): StepResult {
  const matches = state === expected;
  if (result === false) return { ok: !matches, state };
  if (result === true) return { ok: matches, state: matches ? value : state };
  return { ok: true, state: matches ? value : state };
}

function stepDelete(state: RegisterValue, result: boolean | undefined): StepResult {
  if (result === undefined) return { ok: true, state: null };
  return { ok: result === (state !== null), state: null };
}

function stepAppend(state: RegisterValue, suffix: string, result: boolean | undefined): StepResult {
  const present = state !== null;
  const next = present ? state + suffix : state;
  if (result === undefined) return { ok: true, state: next };
  return { ok: result === present, state: next };
}
