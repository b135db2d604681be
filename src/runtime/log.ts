/**
 * Logging. The only file that imports winston: everything else takes the narrow `Logger` below,
 * with child loggers that carry the node id, the component and the peer.
 *
 * A controller logs JSON lines to `<log_dir>/<node>.log` and readable lines to the console.
 * Long string values are truncated so a huge key or value never floods a log. The log file is
 * the owner's alone (0600): it names keys.
 */

import { closeSync } from 'node:fs';
import path from 'node:path';
import winston from 'winston';
import { makePrivateDirectory, openPrivateFile, PRIVATE_FILE_MODE } from './private-files.ts';

export type LogMeta = Record<string, unknown>;

export interface Logger {
  debug(message: string, meta?: LogMeta): void;
  info(message: string, meta?: LogMeta): void;
  warn(message: string, meta?: LogMeta): void;
  error(message: string, meta?: LogMeta): void;
  child(meta: LogMeta): Logger;
}

/** The process's root logger: it also closes, so that nothing written before the exit is lost. */
export interface RootLogger extends Logger {
  /** Ends the logger and waits (at most `timeoutMs`) until its file holds every line written. */
  close(timeoutMs: number): Promise<void>;
}

export interface LoggerOptions {
  /** Folder for the JSON-lines file; none = console only. */
  logDir?: string;
  /** File name inside logDir, e.g. "n1.log". */
  fileName?: string;
  level?: 'debug' | 'info' | 'warn' | 'error';
  console?: boolean;
  meta?: LogMeta;
}

const valueCharsMax = 200;

const truncateLongValues = winston.format((info) => {
  for (const [key, value] of Object.entries(info)) {
    if (typeof value === 'string' && value.length > valueCharsMax && key !== 'message') {
      info[key] = `${value.slice(0, valueCharsMax)}…(${value.length} chars)`;
    }
  }
  return info;
});

/** Creates the process's root logger. */
export function createLogger(options: LoggerOptions): RootLogger {
  const transports: winston.transport[] = [];
  if (options.logDir && options.fileName) {
    // The folder may be shared (log_dir = /var/log): created 0700, but never tightened.
    makePrivateDirectory(options.logDir, { tighten: false });
    const file = path.join(options.logDir, options.fileName);
    closeSync(openPrivateFile(file, 'a')); // 0600 even if it was there with a wider mode
    transports.push(
      new winston.transports.File({
        filename: file,
        options: { flags: 'a', mode: PRIVATE_FILE_MODE },
        format: winston.format.combine(truncateLongValues(), winston.format.timestamp(), winston.format.json()),
      }),
    );
  }
  if (options.console !== false) {
    transports.push(
      new winston.transports.Console({
        stderrLevels: ['error', 'warn', 'info', 'debug'],
        format: winston.format.combine(
          truncateLongValues(),
          winston.format.timestamp({ format: 'HH:mm:ss.SSS' }),
          winston.format.printf(({ timestamp, level, message, ...meta }) => {
            const fields = Object.entries(meta)
              .map(([key, value]) => `${key}=${typeof value === 'string' ? value : JSON.stringify(value)}`)
              .join(' ');
            return `${String(timestamp)} ${level.padEnd(5)} ${String(message)}${fields ? ` ${fields}` : ''}`;
          }),
        ),
      }),
    );
  }
  if (transports.length === 0) transports.push(new winston.transports.Console({ silent: true }));
  const root = winston.createLogger({ level: options.level ?? 'info', transports, defaultMeta: options.meta });
  const state = { closed: false };
  const close = (timeoutMs: number): Promise<void> => {
    if (state.closed) return Promise.resolve();
    state.closed = true;
    return closeLogger(root, timeoutMs);
  };
  return { ...wrap(root, state), close };
}

/**
 * A file transport emits `finish` once its file is written (winston ≥ 3.19); a process that exits
 * at once after its last lines, without this, loses them.
 */
async function closeLogger(logger: winston.Logger, timeoutMs: number): Promise<void> {
  const files = logger.transports.filter((transport) => transport instanceof winston.transports.File);
  const written = Promise.all(files.map((file) => new Promise((resolve) => file.once('finish', resolve))));
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise((resolve) => {
    timer = setTimeout(resolve, timeoutMs);
  });
  logger.end();
  await Promise.race([written, late]);
  clearTimeout(timer);
}

/** A logger that drops everything: for tests and tools. */
export const silentLogger: Logger = {
  debug: () => {},
  info: () => {},
  warn: () => {},
  error: () => {},
  child: () => silentLogger,
};

/** `state.closed`: the root logger was closed; what is logged after (a late callback's line) is dropped, not thrown. */
function wrap(logger: winston.Logger, state: { closed: boolean }): Logger {
  return {
    debug: (message, meta) => {
      if (!state.closed) logger.debug(message, meta);
    },
    info: (message, meta) => {
      if (!state.closed) logger.info(message, meta);
    },
    warn: (message, meta) => {
      if (!state.closed) logger.warn(message, meta);
    },
    error: (message, meta) => {
      if (!state.closed) logger.error(message, meta);
    },
    child: (meta) => wrap(logger.child(meta), state),
  };
}
