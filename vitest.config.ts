import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test_cases/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Integration and fault tests start real processes; two cores cannot run many at once.
    maxWorkers: 2,
    minWorkers: 1,
    reporters: ['default', './test_cases/support/summary-reporter.ts'],
  },
});
