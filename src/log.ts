// JSON lines on stdout (journald-friendly), one logger per process, pino underneath. Every line carries
// `level` (a label: debug | info | warn | error | fatal), `time` (ISO 8601), `pid`, `role` (primary | worker)
// and, in workers, `worker` (the cluster worker id), then `msg`.
//
// What is logged (README "Logs"):
//   primary  'lb started' (config, workers, listeners, admin socket, metrics address), 'stopping', 'lb stopped',
//            'worker started' / 'worker exited' / 'worker died unexpectedly; respawning',
//            'config reloaded' (source, by, changes) / 'reload refused' (source, by, issues),
//            'admin: drain' | 'admin: ready' | 'admin: weight' (pool, backend, by),
//            'backend state changed' (pool, backend, state, health, reason)
//   worker   'access' lines when log.access = true (accessLog below), 'worker stopped'
// `by` is the admin socket peer, { uid, pid } from src/admin/peer.ts, or { uid: null, pid: null } when Linux
// would not tell (see that file for when).

import { pino, type Logger } from 'pino';
import type { LogLevel } from '../config/model.js';
import type { RequestRecord } from './dataplane/events.js';

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

/** The `by` field of admin action lines: who sent the command over the admin socket. */
export function who(peer: { uid: number; pid: number } | undefined): { uid: number | null; pid: number | null } {
  return peer ? { uid: peer.uid, pid: peer.pid } : { uid: null, pid: null };
}

/**
 * One access line per finished HTTP request, TCP connection or websocket tunnel (log.access = true), flat:
 *   {"level":"info","time":"…","pid":…,"role":"worker","worker":1,"kind":"http","listener":"web",
 *    "pool":"app","backend":"app-1","status":200,"method":"GET","path":"/x","client":"10.0.0.5",
 *    "bytes_in":78,"bytes_out":153,"duration_ms":1.234,"retries":0,"msg":"access"}
 * `backend` is "" when none was usable (503); `status` is 0 and method/path are absent for tcp; `status`
 * 499 when the client went away first; `error` only when something failed ("ECONNREFUSED", "client closed").
 * `bytes_in`/`bytes_out` are bytes read from / written to the client socket for this request.
 *
 * Cost: one object literal of fixed shape (one hidden class, so pino's serializer stays monomorphic) and
 * pino's synchronous write of one line. That write is most of the cost: see README "Logs" for numbers.
 */
export function accessLog(logger: Logger, r: RequestRecord): void {
  const http = r.kind !== 'tcp';
  logger.info(
    {
      kind: r.kind,
      listener: r.listener,
      pool: r.pool,
      backend: r.backend,
      status: r.status,
      method: http ? r.method : undefined,
      path: http ? r.path : undefined,
      client: r.client,
      bytes_in: r.bytesIn,
      bytes_out: r.bytesOut,
      duration_ms: Math.round(r.seconds * 1e6) / 1e3,
      retries: r.retries,
      error: r.error,
    },
    'access',
  );
}
