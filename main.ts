/**
 * mckv's one entry point.
 *
 *   tsx main.ts -c config.ini -p 8000 [-kvh HOST -kvp PORT] [--kvtype memcache|memory] [-cons MODE]
 *   tsx main.ts -cli -i 127.0.0.1 -p 8000 [-e "get k"]
 *   tsx main.ts check HISTORY --model linearizability|sequential|session
 *
 * A bad flag or config is one line on stderr naming the problem and exit code 1.
 */

import './scripts/require-node.mjs'; // first: an older Node.js stops here, with one clear line
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { runCheck } from './src/check/cli.ts';
import { runClient } from './src/client/repl.ts';
import { ConfigError, findNode, loadConfig, parseMode } from './src/config.ts';
import { Controller } from './src/controller.ts';
import { FSYNC_DELAY_FILE_ENV } from './src/controller/wal-background.ts';
import { PeerCredentialsError } from './src/peer/credentials.ts';
import { createLogger } from './src/log.ts';
import { scheduleAsBatch } from './src/scheduling.ts';
import { MemcachedBackend } from './src/store/memcached.ts';
import { MemoryBackend } from './src/store/memory.ts';

async function main(argv: string[]): Promise<number> {
  if (argv[0] === 'check') return checkCommand(argv.slice(1));
  const args = await yargs(argv)
    .scriptName('mckv')
    .parserConfiguration({ 'short-option-groups': false })
    .usage('$0 -c config.ini -p PORT [options]   run a controller\n$0 -cli -i HOST -p PORT   interactive client\n$0 check HISTORY --model MODEL   check a history')
    .option('c', { alias: 'config', type: 'string', default: 'config.ini', describe: 'cluster config file' })
    .option('p', { alias: 'port', type: 'number', describe: 'client port: selects this controller in config.ini (client mode: port to connect to)' })
    .option('kvh', { type: 'string', describe: 'memcached host (default: from config.ini)' })
    .option('kvp', { type: 'number', describe: 'memcached port (default: from config.ini)' })
    .option('kvtype', { choices: ['memcache', 'memory'] as const, default: 'memcache' as const, describe: 'replica store' })
    .option('cons', { type: 'string', describe: 'consistency: linearizability | sequential | eventual (default: config.ini)' })
    .option('unsafe-no-replication', {
      type: 'boolean',
      default: false,
      hidden: true,
      describe: 'testing only: serve every op locally without replicating (a deliberately broken cluster)',
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
    return runClient({ host: args.i, port: args.p ?? 8000, commands: args.e });
  }
  if (args.p === undefined) throw new ConfigError('missing -p PORT: the client port of the controller to run (see config.ini)');
  const config = loadConfig(args.c);
  const node = findNode(config, args.p);
  const mode = args.cons === undefined ? config.consistency : parseMode(args.cons, '-cons');
  const log = createLogger({ logDir: config.logDir, fileName: `${node.id}.log`, meta: { node: node.id } });
  if (config.cpuScheduling === 'batch') {
    const refused = scheduleAsBatch();
    if (refused !== null) log.warn('cpu_scheduling = batch not applied; running with the default policy', { reason: refused });
  }
  const backendAddress =
    args.kvtype === 'memory' ? 'embedded' : `${args.kvh ?? node.memcached.host}:${args.kvp ?? node.memcached.port}`;
  const backend =
    args.kvtype === 'memory'
      ? new MemoryBackend()
      : new MemcachedBackend({ host: args.kvh ?? node.memcached.host, port: args.kvp ?? node.memcached.port });
  const replication = !args['unsafe-no-replication'];
  if (!replication) log.warn('replication is OFF (--unsafe-no-replication): this controller keeps no promise');
  // Set only by the test harness (the disk-stall fault): fsyncs then wait as long as the file says.
  const fsyncDelayFile = process.env[FSYNC_DELAY_FILE_ENV] ?? null;
  if (fsyncDelayFile !== null) log.warn('write-ahead fsyncs are delayed by a test file', { file: fsyncDelayFile });
  const controller = await Controller.start({ config, node, mode, backend, backendAddress, log, replication, fsyncDelayFile });
  await new Promise<void>((resolve) => {
    const stop = (signal: string): void => {
      log.info('stopping', { signal });
      controller.stop().then(resolve, resolve);
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  return 0;
}

async function checkCommand(argv: string[]): Promise<number> {
  const args = await yargs(argv)
    .scriptName('mckv check')
    .usage('$0 HISTORY --model linearizability|sequential|session')
    .command('$0 <history>', 'check a recorded history')
    .positional('history', { type: 'string', demandOption: true })
    .option('model', {
      choices: ['linearizability', 'sequential', 'session'] as const,
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
  return runCheck({
    file: String(args.history),
    model: args.model,
    timeoutMs: args.timeout * 1000,
    failedCasIsFalse: args['failed-cas-is-false'],
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

function describeStartupError(error: unknown): string {
  if (error instanceof ConfigError || error instanceof PeerCredentialsError) return error.message;
  const nodeError = error as NodeJS.ErrnoException & { address?: string; port?: number };
  if (nodeError.code === 'EADDRINUSE') {
    return `port ${nodeError.port ?? ''} on ${nodeError.address ?? ''} is already in use`;
  }
  return error instanceof Error ? error.message : String(error);
}
