#!/usr/bin/env -S node --no-memory-reducer
/**
 * mckv's one entry point, compiled by `npm run build` to dist/main.js, which the `mckv` bin
 * (bin/mckv.mjs) runs.
 *
 *   mckv -c config.ini -p 8000 [-kvh HOST -kvp PORT] [--kvtype memcache|memory] [-cons MODE]
 *   mckv -cli -i 127.0.0.1 -p 8000 [-e "get k"]
 *   mckv check HISTORY --model linearizability|sequential|session|causal
 *   mckv status -c config.ini [--json] [--wait S]   every controller's status, one table
 *
 * Each command imports what it runs only once chosen, so the checker and the client start without
 * loading the controller, winston or the store drivers. A bad flag or config is one line on
 * stderr naming the problem and exit code 1.
 */

import './scripts/require-node.mjs'; // first: an older Node.js stops here, with one clear line
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { ConfigError } from './src/config.ts';

async function main(argv: string[]): Promise<number> {
  if (argv[0] === 'check') return checkCommand(argv.slice(1));
  if (argv[0] === 'status') return statusCommand(argv.slice(1));
  const args = await yargs(argv)
    .scriptName('mckv')
    .parserConfiguration({ 'short-option-groups': false })
    .usage('$0 -c config.ini -p PORT [options]   run a controller\n$0 -cli -i HOST -p PORT   interactive client\n$0 check HISTORY --model MODEL   check a history\n$0 status -c config.ini   every controller\'s status')
    .option('c', { alias: 'config', type: 'string', default: 'config.ini', describe: 'cluster config file' })
    .option('p', { alias: 'port', type: 'number', describe: 'client port: selects this controller in config.ini (client mode: port to connect to)' })
    .option('kvh', { type: 'string', describe: 'memcached host (default: from config.ini)' })
    .option('kvp', { type: 'number', describe: 'memcached port (default: from config.ini)' })
    .option('kvtype', { choices: ['memcache', 'memory'] as const, default: 'memcache' as const, describe: 'replica store' })
    .option('cons', { type: 'string', describe: 'consistency: linearizability | sequential | causal | eventual (default: config.ini)' })
    .option('unsafe-no-replication', {
      type: 'boolean',
      default: false,
      hidden: true,
      describe: 'testing only: serve every op locally without replicating (a deliberately broken cluster)',
    })
    .option('rejoin', {
      type: 'boolean',
      default: false,
      describe: 'ordered modes: recover the log from the peers before taking part even with files here, and take the memcached keys a node without files finds as this cluster\'s (it lost its data_dir)',
    })
    .option('cli', { type: 'boolean', default: false, describe: 'run the interactive client' })
    .option('i', { alias: 'host', type: 'string', default: '127.0.0.1', describe: 'client mode: controller host' })
    .option('e', { alias: 'execute', type: 'string', array: true, describe: 'client mode: run these commands and exit' })
    .strict()
    .help()
    .fail((message, error) => {
      throw new ConfigError(message ?? String(error));
    })
    .parseAsync();

  if (args.cli) {
    const { runClient } = await import('./src/client/repl.ts');
    return runClient({ host: args.i, port: args.p ?? 8000, commands: args.e });
  }
  if (args.p === undefined) throw new ConfigError('missing -p PORT: the client port of the controller to run (see config.ini)');
  const { runController } = await import('./src/controller/main.ts');
  return runController({
    configFile: args.c,
    clientPort: args.p,
    memcachedHost: args.kvh,
    memcachedPort: args.kvp,
    store: args.kvtype,
    mode: args.cons,
    replication: !args['unsafe-no-replication'],
    rejoin: args.rejoin,
  });
}

async function checkCommand(argv: string[]): Promise<number> {
  const args = await yargs(argv)
    .scriptName('mckv check')
    .usage('$0 HISTORY --model linearizability|sequential|session|causal')
    .command('$0 <history>', 'check a recorded history')
    .positional('history', { type: 'string', demandOption: true })
    .option('model', {
      choices: ['linearizability', 'sequential', 'session', 'causal'] as const,
      default: 'linearizability' as const,
    })
    .option('timeout', { type: 'number', default: 60, describe: 'search budget, seconds' })
    .option('failed-cas-is-false', {
      type: 'boolean',
      default: false,
      describe: 'read a failed cas as "compare failed" (Jepsen etcd histories)',
    })
    .strict()
    .help()
    .fail((message, error) => {
      throw new ConfigError(message ?? String(error));
    })
    .parseAsync();
  const { runCheck } = await import('./src/check/cli.ts');
  return runCheck({
    file: String(args.history),
    model: args.model,
    timeoutMs: args.timeout * 1000,
    failedCasIsFalse: args['failed-cas-is-false'],
    out: (line) => process.stdout.write(`${line}\n`),
  });
}

async function statusCommand(argv: string[]): Promise<number> {
  const args = await yargs(argv)
    .scriptName('mckv status')
    .usage('$0 -c config.ini [--json] [--wait SECONDS]   ask every controller in the config for its status; exit 1 if any does not answer')
    .option('c', { alias: 'config', type: 'string', default: 'config.ini', describe: 'cluster config file' })
    .option('timeout', { type: 'number', default: 2, describe: 'seconds to wait for each controller' })
    .option('json', { type: 'boolean', default: false, describe: 'print JSON instead of a table' })
    .option('wait', {
      type: 'number',
      default: 0,
      describe: 'ask again until every controller answers, is caught up, sees the others, follows one leader and has applied what it had committed a poll before, for at most this many seconds; exit 1 if not by then',
    })
    .strict()
    .help()
    .fail((message, error) => {
      throw new ConfigError(message ?? String(error));
    })
    .parseAsync();
  if (!(args.timeout > 0 && args.timeout <= 600)) throw new ConfigError('--timeout must be more than 0 and at most 600 seconds');
  if (!(args.wait === 0 || (args.wait >= 1 && args.wait <= 3600))) throw new ConfigError('--wait must be 0 or from 1 to 3600 seconds');
  const [{ runStatus }, { loadConfig }] = await Promise.all([import('./src/client/status.ts'), import('./src/config.ts')]);
  return runStatus({
    config: loadConfig(args.c),
    timeoutMs: args.timeout * 1000,
    json: args.json,
    waitMs: args.wait * 1000,
    out: (line) => process.stdout.write(`${line}\n`),
  });
}

main(hideBin(process.argv)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`mckv: ${describeStartupError(error)}\n`);
    process.exit(1);
  },
);

/** A startup failure as one line: a typed error (a bad config or secret file) by its message. */
function describeStartupError(error: unknown): string {
  const nodeError = error as NodeJS.ErrnoException & { address?: string; port?: number };
  if (nodeError.code === 'EADDRINUSE') {
    return `port ${nodeError.port ?? ''} on ${nodeError.address ?? ''} is already in use`;
  }
  return error instanceof Error ? error.message : String(error);
}
