// L7 forwarding of one HTTP request to a pool, over the backends' keep-alive connection pools
// (upstream.ts), with the body streamed both ways: back-pressure by returning false from onData and
// calling `resume`; the request body is the client request's body stream, read as the upstream accepts it.
//
// Contract with docs/SPEC.md: 503 when the pool has no usable backend (or its queue is full, or a request
// waited `queue_timeout`: queue.ts), 502 when the backend failed and retries ran out, 504 when no response
// head arrived within `response_timeout` (or `per_try_timeout` on the last attempt). Retries go to another
// backend, up to `retries` and within `retry_budget` (retry-budget.ts), for the conditions in `retry_on`
// (Envoy's names): connect-failure (any method: nothing was sent), and, for idempotent requests without a
// body (nothing of them is lost, and sending them twice is allowed: RFC 9110 §9.2.2), reset (failed before a
// response byte), a timed-out attempt (per_try_timeout; with reset, 504 or gateway-error) and the listed
// 5xx statuses (the response is discarded and its connection closed, as Envoy does).

import type { Backend } from './backend.js';
import type { RequestQueue, ShedReason, Waiter } from './queue.js';
import type { RetryBudget } from './retry-budget.js';
import type { DataPlaneEvents, FailureReason } from './events.js';
import type { HttpRequest, HttpResponse } from './exchange.js';
import type net from 'node:net';
import type { BackendPool } from './pool.js';
import { requestKey } from './request-key.js';
import { UPSTREAM_CODES, type UpstreamHandler } from './upstream.js';
import { CHUNKED, NO_BODY } from './http-server.js';
import { passFin, splice } from './connect.js';
import { forwardableTrailers, validHost } from './fields.js';
import { CLIENT_CERT_FIELDS, knownClientCert } from './client-cert.js';
import { applyRewrite, type RewriteContext } from './rewrite.js';
import type { CompiledRoute } from './route-match.js';
import { withRequestId, type RequestTags } from './request-id.js';

/**
 * Hop-by-hop headers (RFC 9110 §7.6.1), the framing ones (lb frames what it forwards from what its parser
 * used: req.framing) and the ones the proxy sets itself; never forwarded upstream as the client sent them.
 */
const REQUEST_DROP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'content-length',
  'te',
  'upgrade',
  'x-forwarded-proto',
  'x-forwarded-host',
  // Expect: 100-continue is answered to the client by lb's server (http-server.ts), which then gets the body.
  'expect',
  // Set by lb from the client certificate (client-cert.ts); a client's own are forgeries.
  ...CLIENT_CERT_FIELDS,
]);
/** Not forwarded to the client: hop-by-hop (Transfer-Encoding is rebuilt from the codings it names). */
const RESPONSE_DROP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'upgrade']);
/**
 * Fields that a `Connection` header may not name: each carries framing or routing meaning that lb acts on
 * itself (RFC 9110 §7.6.1 would have it removed; a forwarder that drops Content-Length but still frames the
 * body by it, or routes by a Host it then drops, desyncs). A request naming one is refused with 400.
 */
const CONNECTION_FORBIDDEN = new Set(['content-length', 'transfer-encoding', 'host']);
/** The abort reason of an attempt whose response status retry_on lists (onHeaders → onError). */
const RETRY_STATUS = 'RETRY_ON_STATUS';
/** How many times one request is sent again after landing on a kept-alive connection the backend had closed. */
const MAX_STALE_RETRIES = 3;
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);
const CONNECT_ERRORS = new Set([
  'ECONNREFUSED',
  UPSTREAM_CODES.connectTimeout,
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EADDRNOTAVAIL',
]);
export interface ListenerInfo {
  readonly name: string;
  readonly tls: boolean;
  readonly events: DataPlaneEvents;
  /** client_body_timeout in ms; 0 = never. */
  readonly bodyTimeoutMs: number;
}

/** What one pass over the client's raw headers yields. */
export interface ScannedRequest {
  /** The header list sent upstream (flat name, value pairs). */
  headers: string[];
  /** The Host lb routes by and forwards: the request target's authority when absolute-form, else Host. */
  host: string | undefined;
  /** How many Host fields the request has (the listener refuses more than one). */
  hosts: number;
  /** Transfer-Encoding values joined with ", "; undefined when absent. */
  transferEncoding: string | undefined;
  /** A field named in `Connection` that may not be (CONNECTION_FORBIDDEN); the listener refuses it. */
  forbiddenConnection: string | undefined;
  /** A Host header value with bad syntax (also when an absolute-form target replaces it). */
  badHost: string | undefined;
  /**
   * A field name that reads as Content-Length or Transfer-Encoding once `_` is taken for `-`: CGI-style
   * backends (WSGI, PHP-FPM) fold both spellings into one variable, so it could frame the body there.
   */
  foldedName: string | undefined;
}

/**
 * One pass over the client's raw headers, lower-casing only names whose length matches a header the proxy
 * acts on: hop-by-hop headers and those named in `Connection` are removed, `X-Forwarded-For` is appended
 * to, `X-Forwarded-Proto` and `X-Forwarded-Host` are set by lb (client values are not trusted). The Host
 * header is passed through as the client sent it (HAProxy's default), unless `authority` (from an
 * absolute-form target, RFC 9112 §3.2.2) replaces it. An Upgrade request keeps `Upgrade` and is sent
 * `Connection: upgrade`. Content-Length and Transfer-Encoding never pass: the upstream client frames the
 * body from req.framing.
 */
export function scanRequest(req: HttpRequest, tls: boolean, authority?: string): ScannedRequest {
  const raw = req.rawHeaders;
  const out: string[] = [];
  let xff: string | undefined;
  let host: string | undefined;
  let named: string[] | undefined;
  let hosts = 0;
  let transferEncoding: string | undefined;
  let forbiddenConnection: string | undefined;
  let badHost: string | undefined;
  let foldedName: string | undefined;
  const keepUpgrade = req.upgrade;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const value = raw[i + 1]!;
    const len = name.length;
    if (len !== 2 && len !== 4 && len !== 6 && len !== 7 && len !== 10 && len !== 14 && len !== 15 && len !== 16 && len !== 17 && len !== 21 && len !== 25) {
      out.push(name, value);
      continue;
    }
    const lower = name.toLowerCase();
    if (lower === 'host') {
      hosts++;
      if (!validHost(value)) badHost = value;
      if (authority !== undefined) continue;
      host = value;
    } else if (lower === 'transfer-encoding') {
      transferEncoding = transferEncoding === undefined ? value : `${transferEncoding}, ${value}`;
      continue;
    } else if (lower === 'connection') {
      const v = value.toLowerCase();
      if (v !== 'keep-alive' && v !== 'close' && v !== 'upgrade') {
        for (const token of v.split(',')) {
          const t = token.trim();
          if (!t || t === 'keep-alive' || t === 'close' || t === 'upgrade') continue;
          if (CONNECTION_FORBIDDEN.has(t)) forbiddenConnection ??= t;
          (named ??= []).push(t);
        }
      }
      continue;
    } else if (lower === 'upgrade') {
      if (keepUpgrade) out.push(name, value);
      continue;
    } else if (lower === 'x-forwarded-for') {
      xff = xff === undefined ? value : `${xff}, ${value}`;
      continue;
    } else if (REQUEST_DROP.has(lower)) {
      continue;
    } else if (lower.includes('_')) {
      const dashed = lower.replaceAll('_', '-');
      if (dashed === 'content-length' || dashed === 'transfer-encoding') foldedName = name;
      // X_Client_Verify reads as X-Client-Verify to a CGI-style backend: dropped as the real one is.
      else if (CLIENT_CERT_FIELDS.has(dashed)) continue;
    }
    out.push(name, value);
  }
  if (named) dropNamed(out, named);
  if (authority !== undefined) {
    host = authority;
    out.unshift('host', authority);
  }
  if (keepUpgrade) out.push('connection', 'upgrade');
  const client = req.socket.remoteAddress ?? '';
  out.push('x-forwarded-for', xff === undefined || named?.includes('x-forwarded-for') ? client : `${xff}, ${client}`);
  out.push('x-forwarded-proto', tls ? 'https' : 'http');
  if (host !== undefined) out.push('x-forwarded-host', host);
  return { headers: out, host, hosts, transferEncoding, forbiddenConnection, badHost, foldedName };
}

/**
 * Response headers for the client: hop-by-hop ones and those the response's `Connection` names are
 * dropped (names lower-cased only when the length fits); `codings` are the transfer codings other than
 * chunked, which the client must still be told of.
 */
function responseHeaders(raw: string[]): { headers: string[]; codings: string | undefined } {
  const out: string[] = [];
  let named: string[] | undefined;
  let codings: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const len = name.length;
    const lower = len === 2 || len === 7 || len === 10 || len === 16 || len === 17 ? name.toLowerCase() : undefined;
    if (lower !== undefined && RESPONSE_DROP.has(lower)) {
      if (lower === 'connection') {
        const value = raw[i + 1]!;
        // The usual values name no field: nothing to split.
        if (value === 'keep-alive' || value === 'close') continue;
        for (const token of value.toLowerCase().split(',')) {
          const t = token.trim();
          // Content-Length frames what lb forwards: kept whatever Connection says (framing is lb's own).
          if (t && t !== 'close' && t !== 'keep-alive' && t !== 'content-length') (named ??= []).push(t);
        }
      } else if (lower === 'transfer-encoding') {
        for (const token of raw[i + 1]!.split(',')) {
          const t = token.trim();
          if (t && t.toLowerCase() !== 'chunked') codings = codings === undefined ? t : `${codings}, ${t}`;
        }
      }
      continue;
    }
    out.push(name, raw[i + 1]!);
  }
  if (named) dropNamed(out, named);
  return { headers: out, codings };
}

/** Removes from a flat name, value list the fields a `Connection` header named (RFC 9110 §7.6.1). */
function dropNamed(out: string[], named: readonly string[]): void {
  for (let i = out.length - 2; i >= 0; i -= 2) if (named.includes(out[i]!.toLowerCase())) out.splice(i, 2);
}

function classify(err: Error & { code?: string; tls?: string; unprocessed?: boolean }, connected: boolean): FailureReason {
  const code = err.code ?? '';
  // A request the backend did not process (HTTP/2 REFUSED_STREAM, GOAWAY): as a refused connection.
  if (err.unprocessed === true) return 'connect';
  // (`tls`: a failed TLS handshake to the backend, upstream.ts; nothing was sent.)
  if (!connected && (CONNECT_ERRORS.has(code) || code === 'ECONNRESET' || code === UPSTREAM_CODES.closed || err.tls !== undefined)) return 'connect';
  if (code === UPSTREAM_CODES.responseTimeout || code === UPSTREAM_CODES.readTimeout) return 'timeout';
  if (code === UPSTREAM_CODES.closed || code === 'ECONNRESET' || code === 'EPIPE' || code === UPSTREAM_CODES.streamReset) return 'reset';
  if (CONNECT_ERRORS.has(code)) return 'connect';
  return 'protocol';
}
/**
 * The gRPC status of lb's own error responses to gRPC requests, as Envoy's local replies give them: 502 and
 * 503 UNAVAILABLE (14), 504 and 408 DEADLINE_EXCEEDED (4), 429 RESOURCE_EXHAUSTED (8); the rest as
 * grpc/doc/http-grpc-status-mapping.md maps HTTP statuses (400 INTERNAL, 401 UNAUTHENTICATED, 403
 * PERMISSION_DENIED, 404 UNIMPLEMENTED), else UNKNOWN (2).
 */
const GRPC_STATUS: Record<number, number> = { 400: 13, 401: 16, 403: 7, 404: 12, 408: 4, 429: 8, 502: 14, 503: 14, 504: 4 };

/** A gRPC request: its content-type is application/grpc or application/grpc+<codec> (gRPC over HTTP/2 spec). */
export function isGrpcRequest(req: HttpRequest): boolean {
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i]!.length === 12 && raw[i]!.toLowerCase() === 'content-type') return /^application\/grpc(?:[+;]|$)/i.test(raw[i + 1]!);
  }
  return false;
}

/** grpc-message: percent-encoded UTF-8, bytes outside 0x20-0x7E and "%" escaped (gRPC over HTTP/2 spec). */
function grpcMessage(text: string): string {
  let out = '';
  for (const byte of Buffer.from(text, 'utf8')) out += byte < 0x20 || byte > 0x7e || byte === 0x25 ? `%${byte.toString(16).toUpperCase().padStart(2, '0')}` : String.fromCharCode(byte);
  return out;
}

/**
 * lb's own error answer to a gRPC request: a Trailers-Only response (HTTP 200, grpc-status and grpc-message
 * in the head, no body), which gRPC clients read as the call's status; `extra` adds fields (Retry-After...).
 */
export function replyGrpcError(res: HttpResponse, status: number, message: string, close = false, extra?: Record<string, string | number>): void {
  const headers: Record<string, string | number> = {
    'content-type': 'application/grpc',
    'grpc-status': GRPC_STATUS[status] ?? 2,
    'grpc-message': grpcMessage(message),
    'content-length': 0,
    ...extra,
  };
  if (close) headers.connection = 'close';
  res.writeHead(200, headers);
  res.end();
}

/**
 * Writes a short plain-text error response (503/502/504/400), unless a response has started; to a gRPC
 * request `req`, the same as a gRPC status (replyGrpcError).
 */
export function replyError(res: HttpResponse, status: number, message: string, close = false, req?: HttpRequest): void {
  if (res.headersSent || res.destroyed) return;
  if (req !== undefined && isGrpcRequest(req)) {
    replyGrpcError(res, status, message, close);
    return;
  }
  const body = `${message}\n`;
  const headers: Record<string, string | number> = {
    'content-type': 'text/plain; charset=utf-8',
    'content-length': Buffer.byteLength(body),
  };
  if (close) headers.connection = 'close';
  res.writeHead(status, headers);
  res.end(body);
}

/** One client request on its way through a pool; the upstream handler of its current attempt. */
export class ProxyCall implements UpstreamHandler, Waiter {
  private backend: Backend | undefined;
  // Waiter (queue.ts): set only while the request waits in its pool's queue.
  qPrev: Waiter | undefined = undefined;
  qNext: Waiter | undefined = undefined;
  queuedAt = 0;
  queue: RequestQueue | undefined = undefined;
  /** The retry-budget slot held by the retry attempt in flight, if any. */
  private budget: RetryBudget | undefined;
  /** The backend the next attempt goes to, chosen when a response's status is retried (onHeaders). */
  private retryTo: Backend | undefined;
  private tried: Backend[] | undefined;
  private readonly t0 = performance.now();
  /** When the current attempt was sent (Picker.done's latency). */
  private sentAt = 0;
  /**
   * Bytes read on the client connection before this request (keep-alive connections carry several); read
   * only for what bytesIn counts from the connection: a chunked body, or an Upgrade that may become a tunnel.
   */
  private readonly bytesReadAtStart: number;
  /** The client connection. */
  private readonly socket: HttpRequest['socket'];
  readonly key: string | undefined;
  private readonly hasHost: boolean;
  private readonly headers: string[];
  private abortUpstream: ((err?: Error) => void) | undefined;
  private connected = false;
  private finished = false;
  private status = 0;
  private bytesOut = 0;
  private error: string | undefined;
  private resumeUpstream: (() => void) | undefined;
  private awaitingDrain = false;
  /** client_body_timeout: armed while the body is being read, refreshed by each chunk. */
  private bodyTimer: NodeJS.Timeout | undefined;
  private bodyTimedOut = false;
  /** Attempts sent again on a new connection after a kept-alive one turned out closed (see onError). */
  private staleRetries = 0;
  /** Set when the exchange became a tunnel (101): its record is written when the tunnel closes. */
  private tunnel = false;

  constructor(
    private readonly listener: ListenerInfo,
    /** The pool serving the request; a request waiting in a queue through a reload moves to the new one. */
    private pool: BackendPool,
    private readonly req: HttpRequest,
    private readonly res: HttpResponse,
    scan: ScannedRequest,
    /** origin-form target sent upstream (absolute-form targets are reduced to it) */
    private readonly target: string = req.url,
    /** The route that matched (undefined: the listener's pool), and the context of its rewrites. */
    private readonly route?: CompiledRoute,
    private readonly rewriteContext?: RewriteContext,
    /** Request and trace IDs (request-id.ts), when the listener sets them. */
    private readonly tags?: RequestTags,
  ) {
    this.hasHost = scan.host !== undefined;
    this.socket = req.socket;
    this.bytesReadAtStart = req.upgrade || req.framing === CHUNKED ? req.socket.bytesRead : 0;
    this.headers = scan.headers;
    this.key = pool.hashKey ? requestKey(pool.hashKey, req) : undefined;
    res.once('close', this.onClientClose);
  }

  start(): void {
    const queue = this.pool.queue;
    if (queue !== undefined) {
      queue.enter(this);
      // Queued: a client that closes its side now has given up (HAProxy `option abortonclose`, applied here
      // to queued requests only: nothing of them was sent). Its request leaves the queue.
      // (HTTP/1.x only: an HTTP/2 client gives up a stream by resetting it, which closes the response.)
      if (this.queue !== undefined && this.req.httpVersionMajor === 1) this.socket.once('end', this.onQueuedEnd);
      return;
    }
    const b = this.pool.pick({ key: this.key });
    if (!b) {
      this.status = 503;
      this.error = 'no usable backend';
      replyError(this.res, 503, `503 Service Unavailable: no usable backend in pool ${this.pool.name}`, false, this.req);
      this.finish();
      return;
    }
    // Sent in the same turn as the call began: its start time is the attempt's (one clock read fewer).
    this.send(b, false, this.t0);
  }

  /** Waiter: capacity freed for the request while it waited (or at once). */
  dispatch(pool: BackendPool, b: Backend): void {
    this.pool = pool;
    this.socket.removeListener('end', this.onQueuedEnd);
    this.send(b, false);
  }

  /** Waiter: refused by the pool's admission (queue.ts). */
  shed(reason: ShedReason, why: string): void {
    this.socket.removeListener('end', this.onQueuedEnd);
    this.status = 503;
    this.error = reason === 'no_backend' ? 'no usable backend' : reason;
    replyError(this.res, 503, why, false, this.req);
    this.finish();
  }

  /** Whether the request can be sent again after a failure with no response byte: nothing of it is lost. */
  private get replayable(): boolean {
    return this.req.body === null && IDEMPOTENT.has(this.req.method);
  }

  private send(b: Backend, fresh: boolean, now = performance.now()): void {
    this.backend = b;
    this.connected = false;
    b.begin();
    this.sentAt = now;
    const req = this.req;
    const cfg = this.pool.config;
    (cfg.sendProxy ? b.privateUpstream(cfg, this.socket) : b.upstream(cfg)).dispatch(
      {
        path: this.target,
        method: req.method,
        headers: this.headers,
        hasHost: this.hasHost,
        body: req.body,
        framing: req.framing,
        upgrade: req.upgrade,
        // An Upgrade takes a connection of its own (it may become a tunnel) rather than a kept-alive one.
        reuse: fresh || req.upgrade ? 'new' : this.replayable ? 'any' : 'recent',
      },
      this,
    );
  }

  onConnect(abort: (err?: Error) => void): void {
    this.connected = true;
    this.abortUpstream = abort;
    if (this.res.destroyed) {
      abort(new Error('client closed'));
      return;
    }
    // The body is read from here on (the upstream client starts reading it now): from now, a client that
    // stops sending it is waited for client_body_timeout at most.
    const body = this.req.body;
    if (body && !this.bodyTimer && this.listener.bodyTimeoutMs > 0 && !body.readableEnded) {
      this.bodyTimer = setTimeout(this.onBodyTimeout, this.listener.bodyTimeoutMs);
      body.on('data', this.onBodyProgress);
      body.once('end', this.stopBodyTimer);
    }
  }

  private readonly onBodyProgress = (): void => {
    this.bodyTimer?.refresh();
  };

  private readonly stopBodyTimer = (): void => {
    if (!this.bodyTimer) return;
    clearTimeout(this.bodyTimer);
    this.bodyTimer = undefined;
    this.req.body?.removeListener('data', this.onBodyProgress);
    this.req.body?.removeListener('end', this.stopBodyTimer);
  };

  private readonly onBodyTimeout = (): void => {
    const body = this.req.body;
    if (this.finished || !body || body.readableEnded) return;
    // Paused: lb stopped reading because the backend is not taking the body as fast; not the client's wait.
    if (body.isPaused()) {
      this.bodyTimer!.refresh();
      return;
    }
    this.bodyTimedOut = true;
    this.abortUpstream?.(Object.assign(new Error('client body timeout'), { code: 'CLIENT_BODY_TIMEOUT' }));
  };

  onInformational(statusCode: number, statusText: string, rawHeaders: string[]): void {
    this.res.writeInformational(statusCode, statusText, responseHeaders(rawHeaders).headers);
  }

  onHeaders(statusCode: number, rawHeaders: string[], statusText: string, resume: () => void, keepAlive: boolean): boolean {
    const res = this.res;
    if (res.destroyed) {
      this.abortUpstream?.(new Error('client closed'));
      return false;
    }
    const { headers: fromBackend, codings } = responseHeaders(rawHeaders);
    const rw = this.route?.responseRewrite;
    const headers = rw === undefined ? fromBackend : applyRewrite(fromBackend, rw, this.rewriteContext!);
    if (codings !== undefined && this.req.httpVersionMinor === 0 && this.req.method !== 'HEAD' && statusCode !== 204 && statusCode !== 304) {
      // An HTTP/1.0 client cannot be told of a transfer coding (RFC 9112 §6.1): the body cannot reach it as is.
      this.abortUpstream?.(Object.assign(new Error(`backend sent Transfer-Encoding ${codings} to an HTTP/1.0 client`), { code: UPSTREAM_CODES.badResponse }));
      return false;
    }
    const retried = this.pool.retryStatuses;
    if (retried !== undefined && statusCode >= 500 && retried.includes(statusCode) && this.replayable) {
      const next = this.nextAttempt(String(statusCode), this.backend!);
      if (next) {
        // Discarded: the attempt ends in onError (RETRY_STATUS), which sends the request to `next`.
        this.status = statusCode;
        this.retryTo = next;
        this.abortUpstream?.(Object.assign(new Error(`backend answered ${statusCode}`), { code: RETRY_STATUS }));
        return false;
      }
    }
    this.status = statusCode;
    this.resumeUpstream = resume;
    // The backend closes while the request body is still coming (an early 413...): so does lb, and says so.
    const body = this.req.body;
    if (!keepAlive && body && !body.readableEnded) res.shouldKeepAlive = false;
    res.transferCodings = codings;
    res.writeHead(statusCode, statusText, this.tags === undefined ? headers : withRequestId(headers, this.tags));
    this.noteSuccess();
    return true;
  }

  private noteSuccess(): void {
    const b = this.backend!;
    if (this.status >= 500 && this.pool.config.passive?.report5xx) {
      this.noteFailure(b, '5xx', this.status);
    } else if (b.failStreak > 0) {
      b.failStreak = 0;
      this.listener.events.recovered(this.pool.name, b.name);
    }
  }

  onUpgrade(statusText: string, rawHeaders: string[], upstream: net.Socket, upstreamHead: Buffer): void {
    const client = this.res.switchProtocols(statusText, rawHeaders);
    if (!client) {
      upstream.destroy();
      this.onError(Object.assign(new Error('backend answered 101 before the request was complete'), { code: UPSTREAM_CODES.badResponse }));
      return;
    }
    this.status = 101;
    this.tunnel = true;
    this.noteSuccess();
    const { socket, head } = client;
    if (head.length > 0) upstream.write(head);
    if (upstreamHead.length > 0) socket.write(upstreamHead);
    splice(socket, upstream, () => {
      this.bytesOut = socket.bytesWritten;
      this.finish();
    });
    // A FIN the client sent before the splice: splice's own 'end' listener missed it.
    if (socket.readableEnded) passFin(upstream);
  }

  onData(chunk: Buffer): boolean {
    this.bytesOut += chunk.length;
    if (this.res.write(chunk)) return true;
    if (!this.awaitingDrain) {
      this.awaitingDrain = true;
      this.res.once('drain', this.onClientDrain);
    }
    return false;
  }

  private readonly onClientDrain = (): void => {
    this.awaitingDrain = false;
    this.resumeUpstream!();
  };

  onComplete(last: Buffer | undefined, trailers: string[] | undefined): void {
    if (last) this.bytesOut += last.length;
    this.res.end(last, forwardableTrailers(trailers));
    this.finish();
  }

  onError(err: Error & { code?: string; stale?: boolean; unprocessed?: boolean }): void {
    if (this.finished) return;
    const b = this.backend!;
    b.end();
    const res = this.res;
    const retryTo = this.retryTo;
    if (retryTo !== undefined && err.code === RETRY_STATUS) {
      // A response retry_on lists, discarded (onHeaders): counted against the backend as its status.
      this.retryTo = undefined;
      const status = this.status;
      this.status = 0;
      if (this.pool.config.passive?.report5xx) this.noteFailure(b, '5xx', status);
      this.pool.done(b, this.sentAt, false, status);
      (this.tried ??= []).push(b);
      if (res.destroyed) {
        this.backend = undefined;
        this.status = 499;
        this.error ??= 'client closed';
        this.finish(b);
        return;
      }
      this.send(retryTo, false);
      return;
    }
    if (this.bodyTimedOut) {
      // The client's fault, not the backend's: no failure is counted, no retry.
      this.backend = undefined;
      this.status = 408;
      this.error = 'client body timeout';
      if (res.headersSent) res.destroy();
      else replyError(res, 408, `408 Request Timeout: no request body bytes for ${this.listener.bodyTimeoutMs}ms`, true, this.req);
      this.finish(b);
      return;
    }
    if (res.destroyed || (res.headersSent && this.status === 0)) {
      // The client went away first; not the backend's fault: 499 (NGINX's code), with the backend kept.
      this.backend = undefined;
      this.status = 499;
      this.error ??= 'client closed';
      this.finish(b);
      return;
    }
    if (err.stale && !res.headersSent && this.replayable && this.staleRetries < MAX_STALE_RETRIES) {
      // A kept-alive connection the backend had closed while idle: no response byte came, nothing of the
      // request is lost, and the backend is not at fault. Sent again on a new connection to the same backend
      // (NGINX does the same for idempotent requests), not counted as a retry or a failure.
      this.staleRetries++;
      this.send(b, true);
      return;
    }
    const reason = classify(err, this.connected);
    this.noteFailure(b, reason);
    this.pool.done(b, this.sentAt, false);
    this.error = `${reason}: ${err.code ?? err.message}`;
    if (res.headersSent) {
      // The response was under way: the client must see it cut, not a truncated body taken as whole.
      this.backend = undefined;
      res.destroy(err);
      this.finish();
      return;
    }
    if (this.retryable(reason)) {
      const next = this.nextAttempt(reason === 'connect' ? 'connect-failure' : reason, b);
      if (next) {
        (this.tried ??= []).push(b);
        this.send(next, false);
        return;
      }
    }
    this.backend = undefined;
    if (reason === 'timeout') {
      this.status = 504;
      const cfg = this.pool.config;
      replyError(res, 504, `504 Gateway Timeout: backend ${b.name} sent no response within ${cfg.perTryTimeoutMs || cfg.responseTimeoutMs}ms`, false, this.req);
    } else {
      this.status = 502;
      replyError(res, 502, `502 Bad Gateway: backend ${b.name} failed (${err.code ?? err.message})`, false, this.req);
    }
    this.finish(b);
  }

  /** Whether retry_on (and the idempotency rule) allows another attempt after a failure of this kind. */
  private retryable(reason: FailureReason): boolean {
    const cfg = this.pool.config;
    const on = cfg.retryOn;
    if (reason === 'connect') return on.connectFailure && !this.req.readableDidRead;
    if (reason === 'reset') return on.reset && this.replayable;
    if (reason === 'timeout') {
      // Only a per-try timeout leaves time for another attempt: response_timeout bounds the whole request.
      return (
        cfg.perTryTimeoutMs > 0 &&
        (on.reset || on.statuses.includes(504)) &&
        this.replayable &&
        performance.now() - this.t0 < cfg.responseTimeoutMs
      );
    }
    return false;
  }

  /**
   * The backend for one more attempt after `current` (not yet in `tried`), when `retries` and the retry
   * budget allow one (its slot is then held until that attempt ends); undefined otherwise. Counts the
   * retry, or the budget's refusal, for /metrics.
   */
  private nextAttempt(why: string, current: Backend): Backend | undefined {
    const pool = this.pool;
    const tried = this.tried;
    if ((tried ? tried.length : 0) >= pool.config.retries) return undefined;
    const budget = pool.retryBudget;
    if (this.budget) {
      this.budget.release();
      this.budget = undefined;
    }
    if (budget !== undefined) {
      if (!budget.acquire(pool.inflight + 1)) {
        pool.retryStats.budgetExhausted++;
        return undefined;
      }
      this.budget = budget;
    }
    const next = pool.pickRetry({ key: this.key }, tried ? [...tried, current] : [current]);
    if (!next) {
      this.budget?.release();
      this.budget = undefined;
      return undefined;
    }
    pool.retryStats.count(why);
    return next;
  }

  private noteFailure(b: Backend, reason: FailureReason, status?: number): void {
    b.failStreak++;
    this.listener.events.failure(this.pool.name, b.name, reason, status);
  }

  private readonly onQueuedEnd = (): void => {
    if (this.queue === undefined || this.finished) return;
    this.onClientClose();
    this.res.destroy();
  };

  private readonly onClientClose = (): void => {
    if (this.finished || this.tunnel) return;
    const queue = this.queue;
    if (queue !== undefined) {
      // Waiting for capacity: it leaves the queue and nothing is sent.
      this.socket.removeListener('end', this.onQueuedEnd);
      queue.remove(this);
      this.status = 499;
      this.error = 'client closed while queued';
      this.finish();
      return;
    }
    // Client disconnected before the response completed (a reset, or a close with the response unsent;
    // a half-close after the request is not this): 499 whatever the backend had answered so far.
    this.status = 499;
    this.error ??= 'client closed';
    // Still connecting (no abort yet): nothing is written; onConnect sees the closed response and aborts.
    this.abortUpstream?.(new Error('client closed'));
  };

  private finish(failed?: Backend): void {
    if (this.finished) return;
    this.finished = true;
    if (this.bodyTimer) this.stopBodyTimer();
    if (this.budget !== undefined) {
      this.budget.release();
      this.budget = undefined;
    }
    const b = this.backend;
    if (b) {
      b.end();
      // A response that completed (a tunnel's lifetime is no latency).
      if (!this.tunnel) this.pool.done(b, this.sentAt, this.status < 500, this.status);
    }
    const retries = this.tried ? this.tried.length : 0;
    const framing = this.req.framing;
    this.listener.events.done({
      kind: this.tunnel ? 'websocket' : 'http',
      listener: this.listener.name,
      pool: this.pool.name,
      backend: (b ?? failed)?.name ?? '',
      status: this.status,
      method: this.req.method,
      path: this.req.url,
      // Only the access log reads it (events.needsClient).
      client: this.listener.events.needsClient ? this.socket.remoteAddress ?? '' : '',
      // The declared body size (0 without a body); for chunked bodies and tunnels, what the connection read
      // after the head. (HTTP/2: the stream's own DATA bytes; the connection carries other streams.)
      bytesIn: this.tunnel ? this.socket.bytesRead - this.bytesReadAtStart : framing >= 0 ? framing : framing === NO_BODY ? 0 : this.req.httpVersionMajor === 2 ? (this.req.body as { bytes?: number } | null)?.bytes ?? 0 : this.socket.bytesRead - this.bytesReadAtStart,
      bytesOut: this.bytesOut,
      seconds: (performance.now() - this.t0) / 1000,
      retries,
      error: this.error,
      clientCert: knownClientCert(this.socket),
      route: this.route?.name,
      limited: undefined,
      requestId: this.tags?.requestId,
      traceId: this.tags?.traceId,
      proto: this.req.httpVersionMajor === 2 ? 'h2' : undefined,
    });
  }
}
