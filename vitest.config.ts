import { BaseSequencer, type TestSpecification } from 'vitest/node';
import { defineConfig } from 'vitest/config';

/**
 * The files that run for minutes start first, so that neither worker ends the suite alone on one
 * of them (without a results cache, as in CI, the runner would order files by size instead).
 */
const LONG_FIRST = [/jepsen-matrix-/, /memory-full/, /faults-ordered/, /jepsen-bulk/, /differential-controller/];

class LongFirstSequencer extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    const rank = (file: TestSpecification): number => {
      const index = LONG_FIRST.findIndex((pattern) => pattern.test(file.moduleId));
      return index === -1 ? LONG_FIRST.length : index;
    };
    const ranked = sorted.map((file, order) => ({ file, order, rank: rank(file) }));
    return ranked.sort((a, b) => a.rank - b.rank || a.order - b.order).map(({ file }) => file);
  }
}

export default defineConfig({
  test: {
    include: ['test_cases/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Integration and fault tests start real processes; two cores cannot run many at once.
    maxWorkers: 2,
    minWorkers: 1,
    sequence: { sequencer: LongFirstSequencer },
    // A default import of a package that is not ESM (node:assert, say) is then the package itself,
    // as under Node, not wrapped in a Proxy that every call through it crosses: with the sources'
    // asserts going through one, a simulation took about 1.6 times as long under test.
    deps: { interopDefault: false },
    globalSetup: ['./test_cases/support/global-setup.ts'],
    setupFiles: ['./test_cases/support/yield-between-tests.ts'],
    reporters: ['default', './test_cases/support/summary-reporter.ts'],
  },
});
