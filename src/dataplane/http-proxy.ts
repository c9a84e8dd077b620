// L7 forwarding of one HTTP request to a pool, over the backends' keep-alive connection pools
// (upstream.ts), with the body streamed both ways: back-pressure by returning false from onData and
// calling `resume`; the request body is the client request's body stream, read as the upstream accepts it.
//
// Contract with docs/SPEC.md: 503 when the pool has no usable backend, 502 when the backend failed and retries
// ran out, 504 when no response head arrived within `response_timeout`. Retries go to another backend when
// connecting failed (for any method: nothing was sent), and for idempotent requests without a body whose
// backend failed before a response byte.

import type { Backend } from './backend.js';
import type { DataPlaneEvents, FailureReason } from './events.js';
import type { FrontRequest, FrontResponse } from './http-server.js';
import type { BackendPool } from './pool.js';
import { requestKey } from './request-key.js';
import { UPSTREAM_CODES, type UpstreamHandler } from './upstream.js';

/** Hop-by-hop headers (RFC 9110 §7.6.1) and the ones the proxy sets itself; never forwarded upstream. */
const REQUEST_DROP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'te',
  'trailer',
  'upgrade',
  'x-forwarded-proto',
  'x-forwarded-host',
  // Expect: 100-continue is answered to the client by lb's server (http-server.ts), which then gets the body.
  'expect',
]);
const RESPONSE_DROP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade']);
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
  /** Set while the listener is stopping: responses carry `Connection: close`. */
  readonly stopping: boolean;
  /** client_body_timeout in ms; 0 = never. */
  readonly bodyTimeoutMs: number;
}

/** What one pass over the client's raw headers yields. */
export interface ScannedRequest {
  /** The header list sent upstream (flat name, value pairs). */
  headers: string[];
  host: string | undefined;
  /** The declared body size (Content-Length), when there is one. */
  contentLength: number | undefined;
  /** How many Host fields the request has (the listener refuses more than one). */
  hosts: number;
  /** Transfer-Encoding values joined with ", "; undefined when absent. */
  transferEncoding: string | undefined;
}

/**
 * One pass over the client's raw headers, lower-casing only names whose length matches a header the proxy
 * acts on: hop-by-hop headers and those named in `Connection` are removed, `X-Forwarded-For` is appended
 * to, `X-Forwarded-Proto` and `X-Forwarded-Host` are set by lb (client values are not trusted). The Host
 * header is passed through as the client sent it (HAProxy's default). `keepUpgrade` keeps `Connection` and
 * `Upgrade` for websocket tunnels.
 */
export function scanRequest(req: FrontRequest, tls: boolean, keepUpgrade: boolean): ScannedRequest {
  const raw = req.rawHeaders;
  const out: string[] = [];
  let xff: string | undefined;
  let host: string | undefined;
  let named: string[] | undefined;
  let contentLength: number | undefined;
  let hosts = 0;
  let transferEncoding: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const value = raw[i + 1]!;
    const len = name.length;
    if (len !== 2 && len !== 4 && len !== 6 && len !== 7 && len !== 10 && len !== 14 && len !== 15 && len !== 16 && len !== 17) {
      out.push(name, value);
      continue;
    }
    const lower = name.toLowerCase();
    if (lower === 'host') {
      host = value;
      hosts++;
    } else if (lower === 'content-length') {
      contentLength = Number(value);
    } else if (lower === 'transfer-encoding') {
      transferEncoding = transferEncoding === undefined ? value : `${transferEncoding}, ${value}`;
      continue;
    } else if (lower === 'connection') {
      const v = value.toLowerCase();
      if (v !== 'keep-alive' && v !== 'close') {
        for (const token of v.split(',')) {
          const t = token.trim();
          if (t && t !== 'keep-alive' && t !== 'close' && t !== 'upgrade') (named ??= []).push(t);
        }
      }
      if (keepUpgrade) out.push(name, value);
      continue;
    } else if (lower === 'upgrade') {
      if (keepUpgrade) out.push(name, value);
      continue;
    } else if (lower === 'x-forwarded-for') {
      xff = xff === undefined ? value : `${xff}, ${value}`;
      continue;
    } else if (REQUEST_DROP.has(lower)) {
      continue;
    }
    out.push(name, value);
  }
  if (named) {
    for (let i = out.length - 2; i >= 0; i -= 2) if (named.includes(out[i]!.toLowerCase())) out.splice(i, 2);
  }
  const client = req.socket.remoteAddress ?? '';
  out.push('x-forwarded-for', xff === undefined ? client : `${xff}, ${client}`);
  out.push('x-forwarded-proto', tls ? 'https' : 'http');
  if (host !== undefined) out.push('x-forwarded-host', host);
  return { headers: out, host, contentLength, hosts, transferEncoding };
}

/** Response headers for the client: hop-by-hop ones dropped (names lower-cased only when the length fits). */
function responseHeaders(raw: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const len = name.length;
    if ((len === 2 || len === 7 || len === 10 || len === 16 || len === 17) && RESPONSE_DROP.has(name.toLowerCase())) continue;
    out.push(name, raw[i + 1]!);
  }
  return out;
}

function classify(err: Error & { code?: string }, connected: boolean): FailureReason {
  const code = err.code ?? '';
  if (!connected && (CONNECT_ERRORS.has(code) || code === 'ECONNRESET' || code === UPSTREAM_CODES.closed)) return 'connect';
  if (code === UPSTREAM_CODES.responseTimeout || code === UPSTREAM_CODES.readTimeout) return 'timeout';
  if (code === UPSTREAM_CODES.closed || code === 'ECONNRESET' || code === 'EPIPE') return 'reset';
  if (CONNECT_ERRORS.has(code)) return 'connect';
  return 'protocol';
}

/** Writes a short plain-text error response (503/502/504/400), unless a response has started. */
export function replyError(res: FrontResponse, status: number, message: string, close = false): void {
  if (res.headersSent || res.destroyed) return;
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
export class ProxyCall implements UpstreamHandler {
  private backend: Backend | undefined;
  private tried: Backend[] | undefined;
  private readonly t0 = performance.now();
  /** Bytes read on the client connection before this request (keep-alive connections carry several). */
  private readonly bytesReadAtStart: number;
  /** The client connection. */
  private readonly socket: FrontRequest['socket'];
  private readonly contentLength: number | undefined;
  private readonly key: string | undefined;
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

  constructor(
    private readonly listener: ListenerInfo,
    private readonly pool: BackendPool,
    private readonly req: FrontRequest,
    private readonly res: FrontResponse,
    scan: ScannedRequest,
  ) {
    this.hasHost = scan.host !== undefined;
    this.socket = req.socket;
    this.bytesReadAtStart = req.socket.bytesRead;
    this.contentLength = scan.contentLength;
    this.headers = scan.headers;
    this.key = pool.hashKey ? requestKey(pool.hashKey, req) : undefined;
    res.once('close', this.onClientClose);
  }

  start(): void {
    const b = this.pool.pick({ key: this.key });
    if (!b) {
      this.status = 503;
      this.error = 'no usable backend';
      replyError(this.res, 503, `503 Service Unavailable: no usable backend in pool ${this.pool.name}`);
      this.finish();
      return;
    }
    this.send(b);
  }

  private send(b: Backend): void {
    this.backend = b;
    this.connected = false;
    b.begin();
    const req = this.req;
    if (this.listener.stopping) this.res.shouldKeepAlive = false;
    b.upstream(this.pool.config).dispatch(
      {
        path: req.url,
        method: req.method,
        headers: this.headers,
        hasHost: this.hasHost,
        body: req.body,
        chunked: req.body !== null && this.contentLength === undefined,
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

  onHeaders(statusCode: number, rawHeaders: string[], statusText: string, resume: () => void): boolean {
    const res = this.res;
    if (res.destroyed) {
      this.abortUpstream?.(new Error('client closed'));
      return false;
    }
    this.status = statusCode;
    this.resumeUpstream = resume;
    if (this.listener.stopping) res.shouldKeepAlive = false;
    res.writeHead(statusCode, statusText, responseHeaders(rawHeaders));
    const b = this.backend!;
    if (statusCode >= 500 && this.pool.config.passive?.on5xx) {
      this.noteFailure(b, '5xx');
    } else if (b.failStreak > 0) {
      b.failStreak = 0;
      this.listener.events.recovered(this.pool.name, b.name);
    }
    return true;
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

  onComplete(last: Buffer | undefined): void {
    if (last) {
      this.bytesOut += last.length;
      this.res.end(last);
    } else {
      this.res.end();
    }
    this.finish();
  }

  onError(err: Error & { code?: string }): void {
    if (this.finished) return;
    const b = this.backend!;
    b.end();
    const res = this.res;
    if (this.bodyTimedOut) {
      // The client's fault, not the backend's: no failure is counted, no retry.
      this.backend = undefined;
      this.status = 408;
      this.error = 'client body timeout';
      if (res.headersSent) res.destroy();
      else replyError(res, 408, `408 Request Timeout: no request body bytes for ${this.listener.bodyTimeoutMs}ms`, true);
      this.finish(b);
      return;
    }
    if (res.destroyed || (res.headersSent && this.status === 0)) {
      // The client went away first; not the backend's fault.
      this.backend = undefined;
      this.finish();
      return;
    }
    const reason = classify(err, this.connected);
    this.noteFailure(b, reason);
    this.error = `${reason}: ${err.code ?? err.message}`;
    if (res.headersSent) {
      // The response was under way: the client must see it cut, not a truncated body taken as whole.
      this.backend = undefined;
      res.destroy(err);
      this.finish();
      return;
    }
    const attempts = this.tried ? this.tried.length : 0;
    if (attempts < this.pool.config.retries && this.retryable(reason)) {
      (this.tried ??= []).push(b);
      const next = this.pool.pickRetry({ key: this.key }, this.tried);
      if (next) {
        this.send(next);
        return;
      }
    }
    this.backend = undefined;
    if (reason === 'timeout') {
      this.status = 504;
      replyError(res, 504, `504 Gateway Timeout: backend ${b.name} sent no response within ${this.pool.config.responseTimeoutMs}ms`);
    } else {
      this.status = 502;
      replyError(res, 502, `502 Bad Gateway: backend ${b.name} failed (${err.code ?? err.message})`);
    }
    this.finish(b);
  }

  private retryable(reason: FailureReason): boolean {
    if (reason === 'connect') return !this.req.readableDidRead;
    if (reason === 'reset') return this.req.body === null && IDEMPOTENT.has(this.req.method);
    return false;
  }

  private noteFailure(b: Backend, reason: FailureReason): void {
    b.failStreak++;
    this.listener.events.failure(this.pool.name, b.name, reason);
  }

  private readonly onClientClose = (): void => {
    if (this.finished) return;
    // Client disconnected before the response completed: stop the upstream exchange too.
    this.status = this.status || 499;
    this.error ??= 'client closed';
    // Still connecting (no abort yet): nothing is written; onConnect sees the closed response and aborts.
    this.abortUpstream?.(new Error('client closed'));
  };

  private finish(failed?: Backend): void {
    if (this.finished) return;
    this.finished = true;
    if (this.bodyTimer) this.stopBodyTimer();
    const b = this.backend;
    if (b) b.end();
    const retries = this.tried ? this.tried.length : 0;
    this.listener.events.done({
      kind: 'http',
      listener: this.listener.name,
      pool: this.pool.name,
      backend: (b ?? failed)?.name ?? '',
      status: this.status,
      method: this.req.method,
      path: this.req.url,
      client: this.socket.remoteAddress ?? '',
      // The declared body size; for chunked bodies, what the connection read after the head (approximate).
      bytesIn: this.contentLength ?? this.socket.bytesRead - this.bytesReadAtStart,
      bytesOut: this.bytesOut,
      seconds: (performance.now() - this.t0) / 1000,
      retries,
      error: this.error,
    });
  }
}
