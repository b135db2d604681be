/**
 * The CI matrix of the fault runner, sequential under each fault kind alone: one short run per
 * kind, so that a failure names the fault (support/fault-matrix.ts). A file per mode, so that the
 * test runner's two workers share the matrix.
 */

import { describeSingleFaults } from './support/fault-matrix.ts';

describeSingleFaults('sequential');
