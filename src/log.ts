// JSON lines on stdout (journald-friendly), one logger per process, pino underneath. Every line carries
// `role` (primary | worker) and, in workers, `worker` (the cluster worker id).

import { pino, type Logger } from 'pino';
import type { LogLevel } from '../config/model.js';

export type { Logger };

let root: Logger | undefined;

export function createLogger(level: LogLevel, base: Record<string, unknown>): Logger {
  root = pino({
    level,
    base: { pid: process.pid, ...base },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
  });
  return root;
}

/** The process logger; a default one at `info` until createLogger is called. */
export function log(): Logger {
  return (root ??= createLogger('info', {}));
}
