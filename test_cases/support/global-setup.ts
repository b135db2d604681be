/**
 * Runs once before the suite: bundles the controller (see src/jepsen/controller-bundle.ts) and
 * names the bundle in the environment, so that every test file's clusters start the same build of
 * the sources as they are now, without each file building its own.
 */

import { buildControllerBundle, CONTROLLER_BUNDLE_ENV } from '../../src/jepsen/controller-bundle.ts';
import { repoRoot } from '../../src/jepsen/cluster.ts';

export default function setup(): void {
  process.env[CONTROLLER_BUNDLE_ENV] = buildControllerBundle(repoRoot);
}
