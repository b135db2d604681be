/**
 * A seeded simulator for eventual mode (in the spirit of TigerBeetle's VOPR): three machines
 * over a simulated network that drops, delays, duplicates and reorders messages, cuts links and
 * crashes and restarts controllers (and, optionally, empties a replica or fills its memcached, which
 * then refuses writes for a while), each machine's effects
 * carried out on a model replica (a Map of Entry with the real Replica's semantics), with random
 * client operations on every node.
 *
 * Phases: faults for `faultMs`, then everything heals (links restored, nodes restarted, no more
 * drops) and client traffic stops; the replicas must then converge within `settleMsMax`, and
 * every dead entry (tombstone, long expired) must be collected within `collectMsMax`.
 *
 * Invariants checked at every step: a machine's HLC never goes back; a local write's version is
 * greater than the version its replica holds for the key (last writer wins relies on it).
 * Checked at the end: all replicas read alike, and each key reads as the accepted write with the
 * greatest version (without emptied replicas) or as some accepted write (with them).
 *
 * Everything comes from the seed: a failing seed replays the run exactly.
 *
 * The parts live in ./eventual-sim/: options.ts (what a run is asked and reports), simulation.ts
 * (its phases), world.ts (what the parts share: time, the agenda, the random streams) and
 * task-queue.ts, node.ts, controller.ts (stepping a machine, carrying out its effects), replica.ts
 * (the model replica), network.ts, clients.ts, faults.ts and checks.ts. This file is the entry
 * point the tests import.
 */

export { mulberry32 } from '../../src/runtime/random.ts';
export { COUNTER_KEY, type SimConfig, type SimReport } from './eventual-sim/options.ts';
export { codecRoundTrip } from './eventual-sim/network.ts';
export { runEventualSim } from './eventual-sim/simulation.ts';
