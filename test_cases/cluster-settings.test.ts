/**
 * The settings line peers compare at the handshake: it tells apart every mode, read leases on and
 * off and each of their timings (and, with them, followers that commit between themselves, which
 * a node without it must not join), and value_bytes_max; it leaves out what a mode does not use; and
 * the longest a config can make fits a handshake message.
 */

import { describe, expect, it } from 'vitest';
import { clusterSettings } from '../src/controller/cluster-settings.ts';
import { MODES } from '../src/consistency/types.ts';
import { HANDSHAKE_SETTINGS_CHARS_MAX } from '../src/peer/handshake.ts';

const leases = { leaseMs: 500, clockDriftPpmMax: 10_000, marginMs: 10 };
const MiB = 1024 * 1024;

describe('the cluster settings line', () => {
  it('differs wherever a difference could break the promise', () => {
    const lines = [
      ...MODES.map((mode) => clusterSettings(mode, leases, MiB)),
      clusterSettings('linearizability', null, MiB),
      clusterSettings('linearizability', { ...leases, leaseMs: 600 }, MiB),
      clusterSettings('linearizability', { ...leases, clockDriftPpmMax: 20_000 }, MiB),
      clusterSettings('linearizability', { ...leases, marginMs: 20 }, MiB),
      clusterSettings('linearizability', leases, 2 * MiB),
    ];
    expect(new Set(lines).size).toBe(lines.length);
    expect(clusterSettings('linearizability', leases, MiB)).toBe(
      'mode=linearizability read_leases=on read_lease_ms=500 clock_drift_ppm_max=10000 read_lease_margin_ms=10 holds=on value_bytes_max=1048576',
    );
  });

  it('leaves out the read leases where the mode does not use them', () => {
    for (const mode of MODES.filter((each) => each !== 'linearizability')) {
      expect(clusterSettings(mode, leases, MiB)).toBe(clusterSettings(mode, null, MiB));
      expect(clusterSettings(mode, leases, MiB)).toBe(`mode=${mode} value_bytes_max=1048576`);
    }
  });

  it('fits a handshake message at the largest values config.ini accepts', () => {
    const longest = clusterSettings('linearizability', { leaseMs: 60_000, clockDriftPpmMax: 100_000, marginMs: 60_000 }, 128 * MiB);
    expect(longest.length).toBeLessThanOrEqual(HANDSHAKE_SETTINGS_CHARS_MAX);
  });
});
