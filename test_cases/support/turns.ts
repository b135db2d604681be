/** Counting turns of the event loop, for tests that a long piece of work lets others run. */

/** Counts turns of the event loop (a setImmediate chain) until `stop`, which returns the count. */
export function countTurns(): { stop: () => number } {
  let turns = 0;
  let turning = true;
  const turn = (): void => {
    turns += 1;
    if (turning) setImmediate(turn);
  };
  setImmediate(turn);
  return {
    stop: () => {
      turning = false;
      return turns;
    },
  };
}
