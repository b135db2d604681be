/**
 * The phases of a run: faults and client traffic for `faultMs`; the heal; convergence, checked
 * every 25 ms for up to `settleMsMax`; then collection of every dead entry, with the replicas
 * agreeing again, by `collectMsMax` after the heal. The report is made here.
 */

import { COUNTER_KEY, defaultConfig, START_MS, type SimConfig, type SimReport } from './options.ts';
import { SimWorld } from './world.ts';

/** Run one seeded simulation and report; `problem` names the first failed check. */
export function runEventualSim(overrides: Partial<SimConfig> & { seed: number }): SimReport {
  const config = { ...defaultConfig(overrides.seed), ...overrides };
  const world = new SimWorld(config);
  for (const node of world.nodes) world.lifecycle.start(node);
  world.clients.schedule();
  world.faults.schedule();
  const healAtMs = START_MS + config.faultMs;
  world.runUntil(healAtMs);
  world.faults.heal();
  let convergedAfterMs: number | null = null;
  const checkEveryMs = 25;
  for (let t = healAtMs; t <= healAtMs + config.settleMsMax && world.problem === null; t += checkEveryMs) {
    world.runUntil(t);
    if (world.checks.divergence() === null) {
      convergedAfterMs = t - healAtMs;
      break;
    }
  }
  if (world.problem === null && convergedAfterMs === null) {
    world.fail(`no convergence within ${config.settleMsMax} ms: ${world.checks.divergence()}`);
  }
  collectPhase(world, healAtMs + config.collectMsMax);
  const counterReads = config.countersOnly === true ? world.nodes.map((node) => node.replica.get(COUNTER_KEY)?.value.toString('latin1').trim()) : undefined;
  return { seed: config.seed, problem: world.problem, convergedAfterMs, stats: world.stats, counterReads };
}

/**
 * Dead entries must all be collected, and the replicas must agree again, by `untilMs`. (Again: a
 * push queued for a peer that was down may still bring it a write another replica lost when
 * emptied; anti-entropy then spreads it.)
 */
function collectPhase(world: SimWorld, untilMs: number): void {
  const checks = world.checks;
  for (let t = world.nowMs; t <= untilMs && world.problem === null; t += 100) {
    world.runUntil(t);
    if (checks.uncollected() === 0 && checks.divergence() === null) break;
  }
  if (world.problem !== null) return;
  if (checks.uncollected() !== 0) world.fail(`${checks.uncollected()} dead entries never collected`);
  const divergence = checks.divergence();
  if (divergence !== null) world.fail(`diverged again after collection: ${divergence}`);
}
