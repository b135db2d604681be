/**
 * The fault runner's command-line flags (`npm run jepsen -- …`, see cli.ts) parsed into runner
 * options, or a one-line error: kept apart from cli.ts, which runs on import, so tests can call it.
 */

import yargs from 'yargs';
import { parseMode, parseWalSync, WAL_SYNCS } from '../config.ts';
import { NEMESIS_KINDS, parseNemesisKinds } from './nemesis.ts';
import type { JepsenOptions } from './runner.ts';
import { BULK_DEPTH_MAX, JEPSEN_WORKLOADS } from './workload.ts';

/**
 * The default `--keys`: about CALLS_PER_KEY calls in flight per key, never fewer than KEYS_MIN keys.
 * Each key is checked alone, and the linearizability search grows with the calls in flight on one
 * key (with kills, the indeterminate ones pile up on it): 32 calls on 3 keys for a minute of faults
 * ran it out of room, while the same contention per key that 6 or 8 plain clients put on 3 keys is
 * decided in seconds.
 */
const CALLS_PER_KEY = 3;
const KEYS_MIN = 3;
/**
 * The default `--check-timeout-ms` is the run's length, and at least this: a 240 s run under every
 * fault needed about 115 s to be judged sequentially consistent, and got unknown in 60.
 */
const CHECK_TIMEOUT_MS_MIN = 60_000;

function defaultKeys(clients: number, pipeline: number): number {
  return Math.max(KEYS_MIN, Math.ceil((clients * pipeline) / CALLS_PER_KEY));
}

/** Parses the flags into runner options, or a one-line error. */
export async function parseArguments(argv: string[]): Promise<{ ok: true; options: JepsenOptions } | { ok: false; error: string }> {
  try {
    const args = await yargs(argv)
      .scriptName('npm run jepsen --')
      // An option given twice takes its last value, as in most commands (not an array, refused as no number).
      .parserConfiguration({ 'duplicate-arguments-array': false })
      .option('cons', { type: 'string', demandOption: true, describe: 'linearizability | sequential | causal | eventual' })
      .option('nemesis', { type: 'string', default: 'none', describe: `comma list of ${NEMESIS_KINDS.join(', ')} (or none)` })
      .option('time', { type: 'number', default: 10, describe: 'seconds the clients run' })
      .option('clients', { type: 'number', default: 6, describe: 'concurrent clients, spread over the three controllers' })
      .option('keys', { type: 'number', describe: `keys the clients share (default: one per ${CALLS_PER_KEY} calls in flight, at least ${KEYS_MIN})` })
      .option('pipeline', { type: 'number', default: 1, describe: 'calls each client keeps in flight on its connection' })
      .option('workload', { choices: JEPSEN_WORKLOADS, default: 'mixed' as const, describe: 'mixed, or bulk: some clients pipeline bursts of sets instead (see --bulk-clients, --bulk-depth)' })
      .option('bulk-clients', { type: 'number', describe: 'with --workload bulk: how many of the clients are bulk loaders (default half, rounded up)' })
      .option('bulk-depth', { type: 'number', default: 256, describe: `with --workload bulk: sets each bulk loader keeps in flight, 1 to ${BULK_DEPTH_MAX}` })
      .option('report', { type: 'string', describe: 'report folder (default reports/<mode>-<timestamp>/)' })
      .option('seed', { type: 'number', describe: 'seed of the workload and the fault schedule' })
      .option('backend', { choices: ['memcache', 'memory'] as const, default: 'memcache' as const, describe: 'replica store' })
      .option('fault-ms', { type: 'number', default: 3000, describe: 'mean length of a fault window' })
      .option('heal-ms', { type: 'number', default: 2000, describe: 'mean length of a heal window' })
      .option('compact-after', { type: 'number', default: 10_000, describe: 'compact each log once this many applied entries follow its snapshot (small: rebuilds need state transfers)' })
      .option('wal-sync', { choices: WAL_SYNCS, default: 'write' as const, describe: 'how far a write-ahead record goes before what depends on it leaves a controller (config.ini wal_sync)' })
      .option('read-leases', { type: 'boolean', default: true, describe: 'config.ini read_leases (--no-read-leases: off): linearizable reads served locally under read leases' })
      .option('call-timeout-ms', { type: 'number', default: 1000, describe: 'a call with no reply after this long is indeterminate' })
      .option('check-timeout-ms', { type: 'number', describe: 'checker budget; past it the verdict is unknown (default: the run\'s length, at least 60 s)' })
      .option('unsafe-no-replication', { type: 'boolean', default: false, hidden: true, describe: 'run the deliberately broken cluster' })
      .strict()
      .fail((message, error) => {
        throw new Error(message ?? String(error));
      })
      .parseAsync();
    const kinds = parseNemesisKinds(args.nemesis);
    if (!kinds.ok) return { ok: false, error: kinds.error };
    const positive = (name: string, value: number): string | null => (Number.isFinite(value) && value > 0 ? null : `--${name} must be a positive number`);
    const keys = args.keys ?? defaultKeys(Math.floor(args.clients), Math.floor(args.pipeline));
    const problem = positive('time', args.time) ?? positive('clients', args.clients) ?? positive('keys', keys) ?? positive('pipeline', args.pipeline) ?? positive('compact-after', args['compact-after']);
    if (problem !== null) return { ok: false, error: problem };
    const bulkClients = args['bulk-clients'];
    if (bulkClients !== undefined && !(Number.isInteger(bulkClients) && bulkClients >= 1 && bulkClients <= args.clients)) {
      return { ok: false, error: '--bulk-clients must be an integer from 1 to --clients' };
    }
    const bulkDepth = args['bulk-depth'];
    if (!(Number.isInteger(bulkDepth) && bulkDepth >= 1 && bulkDepth <= BULK_DEPTH_MAX)) {
      return { ok: false, error: `--bulk-depth must be an integer from 1 to ${BULK_DEPTH_MAX}` };
    }
    return {
      ok: true,
      options: {
        mode: parseMode(args.cons, '--cons'), nemesis: kinds.kinds, timeMs: args.time * 1000,
        clients: Math.floor(args.clients), keys: Math.floor(keys), pipeline: Math.floor(args.pipeline),
        reportDir: args.report, seed: args.seed, workload: args.workload, bulkClients, bulkDepth,
        backend: args.backend, callTimeoutMs: args['call-timeout-ms'], checkTimeoutMs: args['check-timeout-ms'] ?? Math.max(CHECK_TIMEOUT_MS_MIN, args.time * 1000),
        replication: !args['unsafe-no-replication'], faultMs: args['fault-ms'], healMs: args['heal-ms'],
        compactAfterEntries: Math.floor(args['compact-after']), walSync: parseWalSync(args['wal-sync'], '--wal-sync'),
        readLeases: args['read-leases'],
      },
    };
  } catch (error) {
    // One line: yargs puts what it refused on the lines after its first ("Invalid values:").
    const message = error instanceof Error ? error.message : String(error);
    return { ok: false, error: message.split('\n').map((line) => line.trim()).filter((line) => line !== '').join(' ') };
  }
}
