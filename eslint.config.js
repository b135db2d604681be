// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/** Node modules that do I/O: a deterministic machine imports none of them. */
const IO_MODULES = ['net', 'fs', 'fs/promises', 'dgram', 'tls', 'http', 'https', 'child_process', 'timers', 'timers/promises', 'worker_threads']
  .flatMap((name) => [name, `node:${name}`]);

export default tseslint.config(
  { ignores: ['node_modules/**', 'dist/**', 'logs/**', 'data/**', 'reports/**', '.run/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-constant-condition': ['error', { checkLoops: false }],
    },
  },
  // Lines of at most 140 columns; a line made long by one string, template, regular expression or
  // URL (a message, a config example) may stay whole rather than be cut mid-text.
  {
    rules: {
      'max-len': ['error', { code: 140, ignoreStrings: true, ignoreTemplateLiterals: true, ignoreRegExpLiterals: true, ignoreUrls: true }],
    },
  },
  // Layers: the store and the wire protocol know nothing of the consistency modes above them.
  {
    files: ['src/store/**/*.ts', 'src/protocol/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', {
        patterns: [{ group: ['**/consistency/**', '**/consistency'], message: 'store/ and protocol/ import nothing from consistency/ (it sits above them).' }],
      }],
    },
  },
  // The machines are pure: time rides on events, randomness is a seeded generator passed in, and
  // effects (not calls) reach the network, the disk and the timers.
  {
    files: ['src/consistency/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', {
        paths: IO_MODULES.map((name) => ({ name, message: 'A consistency machine does no I/O: return an effect instead.' })),
        patterns: [{
          group: ['**/store/replica*', '**/store/memcached*', '**/store/memory.ts', '**/peer/network*', '**/controller*', '**/wal*'],
          message: 'A consistency machine does no I/O: the controller carries out its effects.',
        }],
      }],
      'no-restricted-globals': ['error',
        ...['setTimeout', 'setInterval', 'setImmediate', 'clearTimeout', 'clearInterval', 'clearImmediate', 'queueMicrotask']
          .map((name) => ({ name, message: 'A consistency machine sets no timers: it is told the time by tick events.' })),
        { name: 'performance', message: 'A consistency machine reads no clock: nowMs rides on every event.' },
        { name: 'process', message: 'A consistency machine reads nothing of the process it runs in.' },
      ],
      'no-restricted-properties': ['error',
        { object: 'Date', property: 'now', message: 'A consistency machine reads no clock: nowMs rides on every event.' },
        { object: 'Math', property: 'random', message: 'A consistency machine takes a seeded random generator (MachineOptions.random).' },
      ],
      'no-restricted-syntax': ['error',
        { selector: "NewExpression[callee.name='Date'][arguments.length=0]", message: 'A consistency machine reads no clock: nowMs rides on every event.' },
      ],
    },
  },
);
