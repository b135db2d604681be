/**
 * `stats <group>`: what a controller answers for each group, as memcached 1.6 answers it.
 *
 * Intuition: memcached picks the group by the first word and ignores words it does not need.
 * With no group a controller gives its own counters; `reset` zeroes them. The groups about
 * memcached's memory and connections (`items`, `slabs`, `settings`, `conns`, `extstore`,
 * `cachedump`) describe the controller's memcached, not the controller: they answer empty (`show`
 * has how full each memcached is). `detail` (per-prefix counters, which a controller does not
 * keep) and `sizes` answer as a memcached with them turned off. Any other group is an error, as in
 * memcached: a client that sends `stats noreply` expecting silence learns that stats has no
 * noreply.
 */

import type { Reply } from '../protocol/types.ts';

/** The controller's own counters, zeroing them, or a reply that needs nothing of the controller. */
export type StatsGroup = { kind: 'counters' } | { kind: 'reset' } | { kind: 'reply'; reply: Reply };

const EMPTY: StatsGroup = { kind: 'reply', reply: { kind: 'stats', stats: [] } };

export function statsGroup(group: string): StatsGroup {
  const [name = '', ...args] = group.split(' ').filter((word) => word !== '');
  switch (name) {
    case '':
      return { kind: 'counters' };
    case 'reset':
      return { kind: 'reset' };
    case 'items': case 'slabs': case 'settings': case 'conns': case 'extstore':
      return EMPTY;
    case 'sizes':
      return { kind: 'reply', reply: { kind: 'stats', stats: [['sizes_status', 'disabled']] } };
    case 'detail':
      if (args[0] === 'on' || args[0] === 'off') return { kind: 'reply', reply: { kind: 'ok' } };
      if (args[0] === 'dump') return EMPTY;
      return { kind: 'reply', reply: { kind: 'client_error', message: 'usage: stats detail on|off|dump' } };
    case 'cachedump':
      if (args.length < 2) return { kind: 'reply', reply: { kind: 'client_error', message: 'bad command line' } };
      if (!args.slice(0, 2).every((arg) => /^\d+$/.test(arg))) {
        return { kind: 'reply', reply: { kind: 'client_error', message: 'bad command line format' } };
      }
      return EMPTY;
    default:
      return { kind: 'reply', reply: { kind: 'error' } };
  }
}
