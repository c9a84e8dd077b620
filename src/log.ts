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

import { pino, symbols as pinoSymbols, type Logger } from 'pino';
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
 *    "bytes_in":0,"bytes_out":153,"duration_ms":1.234,"retries":0,"msg":"access"}
 * `kind` is http | tcp | websocket. `backend` is "" when none was usable (503). `status` is 0 and
 * method/path are absent for tcp; 499 when the client went away first; 101 for a websocket. `error` only
 * when something failed ("connect: ECONNREFUSED", "client closed"). For http, bytes_in is what was read
 * from the client after the request head (the body) and bytes_out the response body; for tcp and
 * websocket, all bytes read from / written to the client socket. duration_ms: from the request head (or
 * the accept) to the end of the response (or of the connection), in ms with µs resolution. `retries`:
 * backends tried before the one that answered. On listeners with tls.client_auth: `client_verify` (SUCCESS,
 * NONE, FAILED:reason) and, when verified, `client_subject` (RFC 4514).
 *
 * Strings are JSON-escaped, and anything outside printable ASCII becomes \uXXXX.
 *
 * Cost: the line is built by hand (the shape is fixed): ~1 µs against ~3 µs for logger.info(object). Lines
 * are written in batches (see batch() below) through the logger's own destination (pino's sonic-boom on
 * fd 1). Measured in the daemon (1 worker, wrk -c64, nginx upstreams, quiet machine): ~+3 µs CPU per
 * request with access lines on, against ~+6 µs for the former logger.info({ access: r }). Access lines
 * are `info` lines: a logger at warn or above drops them. They can be up to FLUSH_MS later than other
 * lines of the same worker.
 */
export function accessLog(logger: Logger, r: RequestRecord): void {
  if (!logger.isLevelEnabled('info')) return;
  let s = prefixOf(logger) + isoNow() + '",' + bindingsOf(logger) + ',"kind":"' + r.kind + '","listener":' + q(r.listener) + ',"pool":' + q(r.pool) + ',"backend":' + q(r.backend) + ',"status":' + r.status;
  if (r.kind !== 'tcp') s += ',"method":' + q(r.method) + ',"path":' + q(r.path);
  s +=
    ',"client":' + q(r.client) +
    ',"bytes_in":' + num(r.bytesIn) +
    ',"bytes_out":' + num(r.bytesOut) +
    ',"duration_ms":' + num(Math.round(r.seconds * 1e6) / 1e3) +
    ',"retries":' + num(r.retries);
  if (r.route !== undefined) s += ',"route":' + q(r.route);
  if (r.proto !== undefined) s += ',"proto":"' + r.proto + '"';
  if (r.error !== undefined) s += ',"error":' + q(r.error);
  const cc = r.clientCert;
  if (cc !== undefined) {
    s += ',"client_verify":' + q(cc.verify);
    if (cc.subject !== undefined) s += ',"client_subject":' + q(cc.subject);
  }
  if (r.requestId !== undefined) s += ',"request_id":' + q(r.requestId);
  if (r.traceId !== undefined) s += ',"trace_id":' + q(r.traceId);
  batch(streamOf(logger), s + ',"msg":"access"}\n');
}

// Access lines are buffered, as NGINX's `access_log … buffer=4k flush=100ms`: appended to `pending` and
// written when the buffer would pass BATCH_BYTES or FLUSH_MS after its first line, whole lines only, and
// on process exit. Writing each line on its own was most of an access line's cost (CPU profile of the
// daemon under wrk: ~7 of the ~9 µs per request spent in sonic-boom's fs.write path); a 4 KiB batch holds
// ~13 lines. A batch never exceeds PIPE_BUF (4096) unless a single line does, so batches from different
// workers sharing stdout never interleave mid-line (pipes, and unix stream sockets to journald, keep
// writes of this size whole). Lines are ASCII (q() escapes anything else), so string length is byte
// length. What a SIGKILLed worker had buffered (< FLUSH_MS old) is lost.
export const BATCH_BYTES = 4096;
export const FLUSH_MS = 100;
let pending = '';
let pendingStream: Cached['stream'] | undefined;
let timer: NodeJS.Timeout | undefined;
function batch(stream: Cached['stream'], line: string): void {
  if (pending !== '' && (pendingStream !== stream || pending.length + line.length > BATCH_BYTES)) flushAccess();
  pendingStream = stream;
  pending += line;
  if (timer === undefined) {
    timer = setTimeout(flushAccess, FLUSH_MS);
    timer.unref();
  }
}
/** Writes the access lines not written yet. */
export function flushAccess(): void {
  if (timer !== undefined) {
    clearTimeout(timer);
    timer = undefined;
  }
  if (pending === '' || !pendingStream) return;
  const s = pending;
  pending = '';
  pendingStream.write(s);
}
process.on('exit', flushAccess);

/** Printable ASCII without `"` and `\`: the common case, emitted as is; anything else via JSON.stringify. */
const PLAIN = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;
function q(v: string): string {
  return v.length <= 256 && PLAIN.test(v) ? '"' + v + '"' : JSON.stringify(v).replace(NON_ASCII, uEscape);
}
const NON_ASCII = /[\u007f-\uffff]/g;
const uEscape = (c: string): string => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0');
function num(n: number): string {
  return Number.isFinite(n) ? String(n) : '0';
}

/** The ISO time of the current millisecond, computed once per millisecond. */
let isoAt = 0;
let isoText = '';
function isoNow(): string {
  const now = Date.now();
  if (now !== isoAt) {
    isoAt = now;
    isoText = new Date(now).toISOString();
  }
  return isoText;
}

interface Cached {
  prefix: string;
  bindings: string;
  stream: { write(s: string): unknown };
}
const cache = new WeakMap<Logger, Cached>();
function cached(logger: Logger): Cached {
  let c = cache.get(logger);
  if (!c) {
    // pino's own serialised bindings (`,"pid":…,"role":…,"worker":…`): the same fields, in the same order,
    // as every other line of this logger. (logger.bindings() would drop pid.)
    const l = logger as unknown as Record<symbol, unknown>;
    const chindings = String(l[pinoSymbols.chindingsSym] ?? '');
    c = {
      prefix: '{"level":"info","time":"',
      bindings: chindings.startsWith(',') ? chindings.slice(1) : '"pid":' + process.pid,
      stream: l[pinoSymbols.streamSym] as Cached['stream'],
    };
    cache.set(logger, c);
  }
  return c;
}
const prefixOf = (l: Logger): string => cached(l).prefix;
const bindingsOf = (l: Logger): string => cached(l).bindings;
const streamOf = (l: Logger): Cached['stream'] => cached(l).stream;
