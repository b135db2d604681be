/**
 * The fault runner's flags: defaults, what each flag sets, and a one-line error for bad input.
 */

import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { parseArguments } from '../src/jepsen/args.ts';
import { repoRoot } from '../src/jepsen/cluster.ts';
import { NEMESIS_KINDS } from '../src/jepsen/nemesis.ts';

describe('fault runner flags', () => {
  it('fills the runner options from the flags', async () => {
    const parsed = await parseArguments(['--cons', 'sequential', '--nemesis', 'kill,backend-restart', '--time', '45', '--compact-after', '50', '--pipeline', '8']);
    expect(parsed).toMatchObject({
      ok: true,
      options: { mode: 'sequential', nemesis: ['kill', 'backend-restart'], timeMs: 45_000, compactAfterEntries: 50, clients: 6, keys: 16, pipeline: 8 },
    });
  });

  it('compacts every 10,000 entries and writes records without fsync (the product\'s default) unless told otherwise', async () => {
    const parsed = await parseArguments(['--cons', 'linearizability']);
    expect(parsed).toMatchObject({ ok: true, options: { compactAfterEntries: 10_000, nemesis: [], walSync: 'write' } });
    expect(await parseArguments(['--cons', 'linearizability', '--wal-sync', 'fsync'])).toMatchObject({ ok: true, options: { walSync: 'fsync' } });
    expect(await parseArguments(['--cons', 'linearizability', '--wal-sync', 'never'])).toMatchObject({ ok: false, error: expect.stringMatching(/wal-sync/) });
  });

  it('shares out the keys by the calls in flight unless told: about three calls a key, at least three keys', async () => {
    expect(await parseArguments(['--cons', 'linearizability'])).toMatchObject({ ok: true, options: { clients: 6, pipeline: 1, keys: 3 } });
    expect(await parseArguments(['--cons', 'linearizability', '--clients', '8', '--pipeline', '4'])).toMatchObject({ ok: true, options: { keys: 11 } });
    expect(await parseArguments(['--cons', 'linearizability', '--clients', '8', '--pipeline', '4', '--keys', '2'])).toMatchObject({ ok: true, options: { keys: 2 } });
    expect(await parseArguments(['--cons', 'linearizability', '--keys', '0'])).toEqual({ ok: false, error: '--keys must be a positive number' });
  });

  it('gives the checker as long as the run, at least 60 s, unless told', async () => {
    expect(await parseArguments(['--cons', 'sequential', '--time', '30'])).toMatchObject({ ok: true, options: { checkTimeoutMs: 60_000 } });
    expect(await parseArguments(['--cons', 'sequential', '--time', '240'])).toMatchObject({ ok: true, options: { checkTimeoutMs: 240_000 } });
    expect(await parseArguments(['--cons', 'sequential', '--time', '240', '--check-timeout-ms', '5000'])).toMatchObject({ ok: true, options: { checkTimeoutMs: 5000 } });
  });

  it('takes the last value of an option given twice', async () => {
    expect(await parseArguments(['--cons', 'causal', '--time', '30', '--seed', '5', '--time', '12'])).toMatchObject({ ok: true, options: { timeMs: 12_000 } });
  });

  it('refuses a bad value with a one-line error naming the flag', async () => {
    expect(await parseArguments(['--cons', 'sequential', '--compact-after', '0'])).toEqual({ ok: false, error: '--compact-after must be a positive number' });
    expect(await parseArguments(['--cons', 'sequential', '--time', '-1'])).toEqual({ ok: false, error: '--time must be a positive number' });
    expect(await parseArguments(['--cons', 'sequential', '--pipeline', '0'])).toEqual({ ok: false, error: '--pipeline must be a positive number' });
    const unknownNemesis = await parseArguments(['--cons', 'sequential', '--nemesis', 'meteor']);
    expect(unknownNemesis.ok).toBe(false);
    const unknownMode = await parseArguments(['--cons', 'causal-ish']);
    expect(unknownMode.ok).toBe(false);
  });

  it('names every fault it can inject in its --help', () => {
    const help = spawnSync(process.execPath, ['--import', 'tsx', 'src/jepsen/cli.ts', '--help'], { cwd: repoRoot, encoding: 'utf8', timeout: 30_000 });
    expect(help.status).toBe(0);
    // yargs wraps the description, even inside a word: compare without any white space.
    const text = help.stdout.replace(/\s+/g, '');
    expect(text).toContain(`commalistof${NEMESIS_KINDS.join(',')}(ornone)`);
  });
});
