/**
 * `npm run jepsen -- --cons MODE --nemesis kill,pause,partition,backend-restart --time S
 * --clients N [--keys K] [--workload bulk [--bulk-clients N] [--bulk-depth D]] [--report DIR] [--seed N]
 * [--compact-after N]`: the fault runner from the
 * command line (flags: args.ts).
 *
 * Exit codes: 0 the mode's promise held, 1 a violation (the checker's explanation is printed),
 * 2 the checker gave up, 3 the run itself failed (bad flags, the cluster did not start), 130 on
 * Ctrl-C. A first Ctrl-C stops the run and cleans up; a second one kills what it started at once.
 */

import { hideBin } from 'yargs/helpers';
import { parseArguments } from './args.ts';
import { formatVerdict } from './report.ts';
import { runJepsen } from './runner.ts';

async function main(argv: string[]): Promise<number> {
  const parsed = await parseArguments(argv);
  if (!parsed.ok) {
    process.stderr.write(`jepsen: ${parsed.error}\n`);
    return 3;
  }
  const abort = new AbortController();
  let interrupts = 0;
  const onInterrupt = (): void => {
    interrupts += 1;
    if (interrupts === 1) {
      process.stderr.write('jepsen: stopping (Ctrl-C again to kill at once)\n');
      abort.abort();
    } else {
      process.exit(130); // the harness's exit hook kills what it started (owned-children.ts)
    }
  };
  process.on('SIGINT', onInterrupt);
  process.on('SIGTERM', onInterrupt);
  try {
    const result = await runJepsen({ ...parsed.options, signal: abort.signal, log: (line) => process.stdout.write(`${line}\n`) });
    process.stdout.write(`\n${formatVerdict(result.summary)}report: ${result.reportDir}\n`);
    return result.exitCode;
  } catch (error) {
    if (abort.signal.aborted) return 130;
    process.stderr.write(`jepsen: ${error instanceof Error ? error.message : String(error)}\n`);
    return 3;
  }
}

main(hideBin(process.argv)).then((code) => process.exit(code));
