// The proxy's HTTP/1.1 client: keep-alive connections to one backend, one request at a time on each
// (no pipelining), the request head written in one write, request bodies streamed with back-pressure and
// responses parsed by Node's own binding of llhttp (the parser node:http's client uses, in strict mode).
//
// Why not undici: on the proxy rig (bench/proxy.sh) node:http in with undici's Pool out spent about 17 µs
// of user CPU per forwarded request, this client about 11 µs; the requests it sends were already parsed
// by the strict parser in front (http-server.ts) and re-checked by the listener, so a general client's
// validation and request model are work done twice.
//
// Contract with the handler (shaped after undici's dispatch handler, which this replaced): `onConnect`
// right before the request is written, with `abort` (which ends the exchange: `onError` follows);
// `onInformational` per 1xx response; `onHeaders` once per final response, returning false to pause until
// `resume` is called; `onData` per body chunk, same back-pressure; then exactly one of `onComplete` (with
// the response's trailers), `onUpgrade` (a 101 to an Upgrade request: the socket is the handler's) or
// `onError`. The last chunk read before the response ends comes with `onComplete` instead of `onData`, so
// that a small response is passed on in one call (the client side then writes head and body at once); no chunk
// is held past the read it arrived in. Errors carry a `code`: Node's socket codes (ECONNREFUSED, ECONNRESET, EPIPE, ...), llhttp's
// (HPE_*) for a malformed response, or one of UPSTREAM_CODES.

import net from 'node:net';
import type { Readable } from 'node:stream';
import { countTlsError, tlsFailure, type BackendTls } from './backend-tls.js';
import { Deadline } from './deadline.js';
import { writeLatin1 } from '../node-internals/socket-write.js';
import { CHUNKED } from './http-server.js';
import { forwardableTrailers } from './fields.js';
import { consumeSocket, HTTPParser, K_BODY, K_EXECUTE, K_HEADERS, K_HEADERS_COMPLETE, K_MESSAGE_COMPLETE, startReading, stopReading, type ParserInstance, type StreamHandle } from '../node-internals/llhttp.js';

/** Error codes this client sets itself. */
export const UPSTREAM_CODES = {
  connectTimeout: 'CONNECT_TIMEOUT',
  responseTimeout: 'RESPONSE_TIMEOUT',
  /** No response body byte within read_timeout while lb was reading. */
  readTimeout: 'READ_TIMEOUT',
  /** The backend closed the connection before the response was complete. */
  closed: 'UPSTREAM_CLOSED',
  /** A response that cannot belong to the request: 101 without an upgrade, or one nobody asked for. */
  badResponse: 'BAD_RESPONSE',
  /** HTTP/2 (upstream-h2.ts): the backend reset the stream (RST_STREAM other than REFUSED_STREAM). */
  streamReset: 'STREAM_RESET',
} as const;

/**
 * An error ending an exchange. `stale`: it came on a kept-alive connection before any byte of a response,
 * as when the backend closed the connection while it was idle; the request may not have been read at all.
 * `unprocessed`: the backend said it did not process the request (HTTP/2 REFUSED_STREAM, or a stream above a
 * GOAWAY's last-stream-id: RFC 9113 section 8.7), so it may be sent again whatever its method.
 */
export type UpstreamError = Error & { code?: string; stale?: boolean; unprocessed?: boolean };

/** What the proxy dispatches requests to: the HTTP/1.1 client below, or the HTTP/2 one (upstream-h2.ts). */
export interface Upstream {
  dispatch(req: UpstreamRequest, handler: UpstreamHandler): void;
  close(): void;
  readonly connections: number;
}

export interface UpstreamHandler {
  onConnect(abort: (err?: Error) => void): void;
  onInformational(statusCode: number, statusText: string, headers: string[]): void;
  /** `keepAlive`: the backend keeps the connection after this response. */
  onHeaders(statusCode: number, headers: string[], statusText: string, resume: () => void, keepAlive: boolean): boolean;
  onData(chunk: Buffer): boolean;
  onComplete(last: Buffer | undefined, trailers: string[] | undefined): void;
  /** A 101 to an Upgrade request: `socket` (reading, half-open allowed) and the bytes after the 101 head. */
  onUpgrade(statusText: string, headers: string[], socket: net.Socket, head: Buffer): void;
  onError(err: UpstreamError): void;
}

/**
 * Which connection a request may go out on: `any` kept-alive one (it can be sent again if that one turns
 * out closed), only a `recent` one (idle for less than the backend has been seen to keep connections: a
 * request that must not be sent twice), or a `new` one.
 */
export type Reuse = 'any' | 'recent' | 'new';

export interface UpstreamRequest {
  method: string;
  /** origin-form target, as the client sent it */
  path: string;
  /** flat name, value list, written as is; must not hold Transfer-Encoding or Connection */
  headers: string[];
  /** the headers include Host; when not, Host is set to the backend's address */
  hasHost: boolean;
  /** the request body, read as the backend accepts it; null when there is none; trailers in `body.trailers` */
  body: (Readable & { trailers?: string[] }) | null;
  /** how the body is framed, as the client's was: its Content-Length (>= 0), CHUNKED, or NO_BODY */
  framing: number;
  /** an Upgrade request: a 101 hands the connection over (onUpgrade) */
  upgrade: boolean;
  reuse: Reuse;
}

export interface UpstreamOptions {
  host: string;
  port: number;
  connectTimeoutMs: number;
  /** from the whole request written to the response head received; 0: none */
  responseTimeoutMs: number;
  /** longest wait between reads of a response body while lb is reading; 0: none */
  readTimeoutMs?: number;
  /** how long an idle connection is kept; a backend's shorter `Keep-Alive: timeout` hint wins */
  idleTimeoutMs: number;
  /** response head size limit (llhttp's) */
  maxHeaderSize: number;
  /** send_proxy: written first on every connection (a PROXY protocol header; proxy-protocol.ts) */
  proxyHeader?: Buffer;
  /** The pool's TLS to backends (backend-tls.ts): connections are TLS, `connect_timeout` covers the handshake. */
  tls?: BackendTls;
  /** The backend's name, for lb_backend_tls_errors_total. */
  name?: string;
}

/** Idle connections are closed this long before the backend's own Keep-Alive timeout (undici's margin). */
const KEEP_ALIVE_MARGIN_MS = 1000;

function upstreamError(code: string, message: string): Error & { code: string } {
  return Object.assign(new Error(message), { code });
}

/** The keep-alive connections of one backend. Connections are opened as requests need them (no limit). */
export class UpstreamPool {
  /** Idle connections, the most recently used last (reused first: it is the least likely to be stale). */
  private readonly idle: Connection[] = [];
  private readonly open = new Set<Connection>();
  closed = false;
  /**
   * The shortest idle time after which this backend was seen closing a kept-alive connection (learned; a
   * `Keep-Alive: timeout` hint is used before it). `recent` reuse takes connections idle for less than half.
   */
  idleCloseMs = Infinity;
  /** The Host header for requests that came without one. */
  readonly authority: string;

  constructor(readonly options: UpstreamOptions) {
    const h = options.host.includes(':') ? `[${options.host}]` : options.host;
    this.authority = `${h}:${options.port}`;
  }

  /** Connections open to the backend (busy and idle). */
  get connections(): number {
    return this.open.size;
  }

  dispatch(req: UpstreamRequest, handler: UpstreamHandler): void {
    const idle = this.idle;
    let conn: Connection | undefined;
    if (req.reuse === 'any') conn = idle.pop();
    else if (req.reuse === 'recent' && idle.length > 0 && performance.now() - idle[idle.length - 1]!.idleSince < this.idleCloseMs / 2) conn = idle.pop();
    if (conn) conn.start(req, handler);
    else this.open.add(new Connection(this, req, handler));
  }

  /** A kept-alive connection was closed by the backend after `ms` idle (or found closed when reused). */
  sawIdleClose(ms: number): void {
    if (ms < this.idleCloseMs) this.idleCloseMs = ms;
  }

  /** Takes a connection back after a complete exchange; false when it must not be reused. */
  release(conn: Connection): boolean {
    if (this.closed) return false;
    this.idle.push(conn);
    return true;
  }

  forget(conn: Connection): void {
    this.open.delete(conn);
    const i = this.idle.lastIndexOf(conn);
    if (i >= 0) this.idle.splice(i, 1);
  }

  /** No new exchanges: idle connections close now, busy ones once their exchange is over. */
  close(): void {
    this.closed = true;
    for (const c of this.idle.splice(0)) c.destroy();
  }
}

class Connection {
  private readonly socket: net.Socket;
  private readonly parser: ParserInstance;
  private handler: UpstreamHandler | undefined;
  /** The exchange's number on this connection; an `abort` of an earlier exchange does nothing. */
  private exchange = 0;
  private pending: UpstreamRequest | undefined;
  private connectTimer: NodeJS.Timeout | undefined;
  /** response_timeout: armed when the request is written; firing once the head came does nothing. */
  private readonly responseDeadline = new Deadline(() => this.onResponseTimeout());
  /** The idle connection's timeout: armed when it is released; firing while it is busy does nothing. */
  private readonly idleDeadline = new Deadline(() => this.onIdleTimeout());
  private idleMs: number;
  /** read_timeout: armed from the response head on, refreshed per read; firing with no body awaited does nothing. */
  private readonly readDeadline = new Deadline(() => this.onReadTimeout());
  private awaitingBody = false;
  /** Reading is stopped for back-pressure (the client is not taking the response as fast). */
  private paused = false;
  private headersSeen = false;
  private informational = false;
  /** When the connection last became idle (performance.now()). */
  idleSince = 0;
  /** Exchanges started on this connection. */
  private exchanges = 0;
  /** A response byte came during the current exchange. */
  private answered = false;
  /** The current exchange is an Upgrade request. */
  private upgrade = false;
  /** A 101 to it was parsed: the connection is handed over after this read. */
  private switching: { text: string; headers: string[] } | undefined;
  private head = false;
  private keepAlive = true;
  private body: (Readable & { trailers?: string[] }) | null = null;
  private chunked = false;
  /** The request, body included, is fully written. */
  private sent = false;
  private written = false;
  private slowHeaders: string[] | undefined;
  /** The body chunk parsed last in the current read (see the contract above). */
  private held: Buffer | undefined;
  /** The parser reads the socket's handle itself (see onSocketConnect). */
  private handle: StreamHandle | undefined;

  constructor(
    private readonly pool: UpstreamPool,
    req: UpstreamRequest,
    handler: UpstreamHandler,
  ) {
    const o = pool.options;
    this.idleMs = o.idleTimeoutMs;
    this.handler = handler;
    this.pending = req;
    // send_proxy: the PROXY header goes first, in the clear (before a TLS handshake), queued until connected.
    let raw: net.Socket | undefined;
    if (o.proxyHeader) {
      raw = net.connect({ host: o.host, port: o.port, noDelay: true });
      raw.write(o.proxyHeader);
    }
    const socket = (this.socket = o.tls ? o.tls.connect(o.host, o.port, raw ? { socket: raw } : {}) : (raw ?? net.connect({ host: o.host, port: o.port, noDelay: true })));
    // A failed write must not destroy the socket before what the backend sent is read: an early response
    // (413 and close during an upload) makes the next write fail while the response waits unread
    // (onSocketError). Every other end of the socket is an explicit destroy() here.
    setAutoDestroy(socket, false);
    const p = (this.parser = new HTTPParser());
    p.initialize(HTTPParser.RESPONSE, {}, o.maxHeaderSize, HTTPParser.kLenientNone);
    p[K_HEADERS] = this.onParserHeaders;
    p[K_HEADERS_COMPLETE] = this.onHeadersComplete;
    p[K_BODY] = this.onBody;
    p[K_MESSAGE_COMPLETE] = this.onMessageComplete;
    p[K_EXECUTE] = this.onExecute;
    socket.on('data', this.onSocketData);
    socket.on('end', this.onSocketEnd);
    socket.on('error', this.onSocketError);
    socket.on('close', this.onSocketClose);
    socket.once(o.tls ? 'secureConnect' : 'connect', this.onSocketConnect);
    if (o.connectTimeoutMs > 0) this.connectTimer = setTimeout(this.onConnectTimeout, o.connectTimeoutMs);
  }

  private readonly onSocketConnect = (): void => {
    clearTimeout(this.connectTimer);
    this.connectTimer = undefined;
    const socket = this.socket;
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 60_000);
    // The parser reads the handle itself (on the proxy rig, about 1 µs less per request); the socket's
    // 'data' listener stays as the path when there is no handle to consume.
    this.handle = consumeSocket(this.parser, socket);
    const req = this.pending;
    const h = this.handler;
    this.pending = undefined;
    if (req && h) this.start(req, h);
  };

  private readonly onConnectTimeout = (): void => {
    this.fail(upstreamError(UPSTREAM_CODES.connectTimeout, `connect timeout after ${this.pool.options.connectTimeoutMs}ms`));
  };

  /** Writes a request on this (connected, idle) connection. */
  start(req: UpstreamRequest, handler: UpstreamHandler): void {
    const n = ++this.exchange;
    this.handler = handler;
    this.headersSeen = false;
    this.informational = false;
    this.written = false;
    this.answered = false;
    this.exchanges++;
    this.upgrade = req.upgrade;
    this.head = req.method === 'HEAD';
    handler.onConnect((err) => {
      if (this.exchange === n && this.handler === handler) this.fail(err ?? new Error('aborted'));
    });
    if (this.handler !== handler || this.exchange !== n) return; // aborted from onConnect
    let text = `${req.method} ${req.path} HTTP/1.1\r\n`;
    const headers = req.headers;
    for (let i = 0; i < headers.length; i += 2) text += `${headers[i]}: ${headers[i + 1]}\r\n`;
    if (!req.hasHost) text += `host: ${this.pool.authority}\r\n`;
    // Framed as the client's request was framed by lb's parser (never from the forwarded header list).
    const framing = req.framing;
    if (framing >= 0) text += `content-length: ${framing}\r\n`;
    else if (framing === CHUNKED) text += 'transfer-encoding: chunked\r\n';
    writeLatin1(this.socket, `${text}\r\n`);
    this.written = true;
    if (req.body) {
      this.sent = false;
      this.body = req.body;
      this.chunked = framing === CHUNKED;
      req.body.on('data', this.onBodyData);
      req.body.once('end', this.onBodyEnd);
    } else {
      this.sent = true;
      this.armResponseTimer();
    }
  }

  /** response_timeout runs from the moment the whole request is written (as undici's headersTimeout and
   * NGINX's proxy_read_timeout): a long upload is not cut by it. */
  private armResponseTimer(): void {
    const ms = this.pool.options.responseTimeoutMs;
    if (ms <= 0) return;
    this.responseDeadline.arm(ms);
  }

  private readonly onBodyData = (chunk: Buffer): void => {
    const s = this.socket;
    let ok: boolean;
    if (this.chunked) {
      if (chunk.length === 0) return;
      s.cork();
      s.write(`${chunk.length.toString(16)}\r\n`, 'latin1');
      s.write(chunk);
      ok = s.write('\r\n', 'latin1');
      s.uncork();
    } else {
      ok = s.write(chunk);
    }
    if (!ok) {
      this.body!.pause();
      s.once('drain', this.onDrain);
    }
  };

  private readonly onDrain = (): void => {
    this.body?.resume();
  };

  private readonly onBodyEnd = (): void => {
    if (this.chunked) {
      let last = '0\r\n';
      const trailers = forwardableTrailers(this.body?.trailers);
      if (trailers) for (let i = 0; i < trailers.length; i += 2) last += `${trailers[i]}: ${trailers[i + 1]}\r\n`;
      this.socket.write(`${last}\r\n`, 'latin1');
    }
    this.detachBody();
    this.sent = true;
    if (!this.headersSeen) this.armResponseTimer();
  };

  private detachBody(): void {
    const b = this.body;
    if (!b) return;
    this.body = null;
    b.removeListener('data', this.onBodyData);
    b.removeListener('end', this.onBodyEnd);
    this.socket.removeListener('drain', this.onDrain);
  }

  private readonly onResponseTimeout = (): void => {
    if (this.handler && this.sent && !this.headersSeen) {
      this.fail(upstreamError(UPSTREAM_CODES.responseTimeout, `no response head within ${this.pool.options.responseTimeoutMs}ms`));
    }
  };

  /** (Re)starts the read_timeout wait. */
  private armRead(): void {
    this.readDeadline.arm(this.pool.options.readTimeoutMs ?? 0);
  }

  private onReadTimeout(): void {
    if (!this.awaitingBody || !this.handler) return;
    if (this.paused) {
      // Not the backend's wait: lb stopped reading because the client is slow.
      this.armRead();
      return;
    }
    this.fail(upstreamError(UPSTREAM_CODES.readTimeout, `no response body data within ${this.pool.options.readTimeoutMs ?? 0}ms`));
  }

  private readonly onIdleTimeout = (): void => {
    if (!this.handler) this.destroy();
  };

  /** The connection ended while idle: the backend closes kept-alive connections after that long. */
  private idleEnded(): void {
    if (this.exchanges > 0 && !this.handler) this.pool.sawIdleClose(performance.now() - this.idleSince);
  }

  private readonly onSocketData = (data: Buffer): void => {
    let r: number | Error;
    try {
      r = this.parser.execute(data);
    } catch (err) {
      // A handler threw inside a parser callback (the client side refused what the backend sent).
      this.fail(err as Error);
      return;
    }
    this.afterExecute(r, data);
  };

  /** After each read the parser consumed from the handle itself. */
  private readonly onExecute = (r: number | Error): void => {
    this.afterExecute(r, undefined);
  };

  /** After the parser took a read; a response head in it has already set `answered` (onHeadersComplete). */
  private afterExecute(r: number | Error, data: Buffer | undefined): void {
    this.answered = true;
    if (this.awaitingBody) this.armRead();
    if (r instanceof Error) this.onParseError(r);
    else if (this.switching) this.handOver(Buffer.from((data ?? this.parser.getCurrentBuffer()).subarray(r)));
    else if (this.held) this.deliverHeld();
  }

  /**
   * A 101 to the Upgrade request: the socket leaves this pool and HTTP; the handler gets it with what the
   * backend sent after the 101 head (llhttp stops there).
   */
  private handOver(rest: Buffer): void {
    const { text, headers } = this.switching!;
    this.switching = undefined;
    const h = this.handler!;
    this.handler = undefined;
    this.responseDeadline.clear();
    this.idleDeadline.clear();
    this.readDeadline.clear();
    this.detachBody();
    const socket = this.socket;
    socket.removeListener('data', this.onSocketData);
    socket.removeListener('end', this.onSocketEnd);
    socket.removeListener('error', this.onSocketError);
    socket.removeListener('close', this.onSocketClose);
    if (this.handle) {
      this.parser.unconsume();
      this.handle._consumed = false;
    }
    const parser = this.parser;
    // Called from inside the parser's own callback (onExecute): closing it now would free it under its caller.
    setImmediate(() => parser.close());
    this.pool.forget(this);
    setAutoDestroy(socket, true);
    socket.allowHalfOpen = true;
    if (this.paused) {
      this.paused = false;
      if (!this.handle) socket.resume();
    }
    h.onUpgrade(text, headers, socket, rest);
  }

  private deliverHeld(): void {
    const chunk = this.held!;
    this.held = undefined;
    const h = this.handler;
    if (!h) return;
    try {
      if (!h.onData(chunk) && this.handler === h) this.pause();
    } catch (err) {
      this.fail(err as Error);
    }
  }

  private onParseError(err: Error): void {
    if (this.handler) this.fail(err);
    else this.destroy();
  }

  /** Stops reading from the backend until `resume` (the client is not taking the response as fast). */
  private pause(): void {
    this.paused = true;
    stopReading(this.socket, this.handle);
  }

  private readonly onParserHeaders = (headers: string[]): void => {
    this.answered = true;
    (this.slowHeaders ??= []).push(...headers);
  };

  private readonly onHeadersComplete = (
    _major: number,
    _minor: number,
    headers: string[] | undefined,
    _method: unknown,
    _url: unknown,
    statusCode: number,
    statusText: string,
    upgrade: boolean,
    shouldKeepAlive: boolean,
  ): number => {
    this.answered = true;
    const h = this.handler;
    if (!h || !this.written) {
      // Bytes the backend sent while no request was outstanding: the connection cannot be trusted.
      this.destroy();
      return 1;
    }
    if (headers === undefined) {
      headers = this.slowHeaders ?? [];
      this.slowHeaders = undefined;
    }
    if (statusCode < 200 && statusCode !== 101) {
      // 100 Continue, 103 Early Hints...: passed on (RFC 9110 §15.2); the final response follows.
      this.informational = true;
      try {
        h.onInformational(statusCode, statusText, headers);
      } catch (err) {
        this.fail(err as Error);
      }
      return 1;
    }
    if (statusCode === 101 && this.upgrade && this.sent) {
      // llhttp ends the message here and stops (HPE_PAUSED_UPGRADE): afterExecute hands the socket over.
      this.switching = { text: statusText, headers };
      return 1;
    }
    if (upgrade || statusCode === 101) {
      this.fail(upstreamError(UPSTREAM_CODES.badResponse, `backend answered ${statusCode} to a request that asked for no upgrade, or before its body was sent`));
      return 1;
    }
    this.headersSeen = true;
    this.keepAlive = shouldKeepAlive;
    const bodiless = this.head || statusCode === 204 || statusCode === 304;
    if (!bodiless) {
      this.awaitingBody = true;
      this.armRead();
    }
    if (shouldKeepAlive) this.keepAliveHint(headers);
    // The parser calls back from C++ when it reads the handle itself: a throw here would be uncaught.
    try {
      const more = h.onHeaders(statusCode, headers, statusText, this.resume, shouldKeepAlive);
      if (!more && this.handler === h) this.pause();
    } catch (err) {
      this.fail(err as Error);
      return 1;
    }
    return this.head || statusCode === 204 || statusCode === 304 ? 1 : 0;
  };

  /** `Keep-Alive: timeout=N` from the backend: close idle connections before it does. */
  private keepAliveHint(headers: string[]): void {
    for (let i = 0; i < headers.length; i += 2) {
      const name = headers[i]!;
      // (Connection has the same length: the first letter tells them apart without lower-casing.)
      if (name.length !== 10 || (name.charCodeAt(0) | 0x20) !== 0x6b /* k */ || name.toLowerCase() !== 'keep-alive') continue;
      const m = /timeout\s*=\s*(\d+)/i.exec(headers[i + 1]!);
      if (!m) continue;
      const ms = Number(m[1]) * 1000 - KEEP_ALIVE_MARGIN_MS;
      if (ms <= 0) this.keepAlive = false;
      else if (ms < this.idleMs) {
        this.idleMs = ms;
      }
    }
  }

  private readonly resume = (): void => {
    this.paused = false;
    if (this.awaitingBody) this.armRead();
    startReading(this.socket, this.handle);
  };

  private readonly onBody = (chunk: Buffer): void => {
    if (!this.handler || this.informational) return;
    if (this.held) this.deliverHeld();
    this.held = chunk;
  };

  private readonly onMessageComplete = (): void => {
    if (this.informational) {
      this.informational = false;
      return;
    }
    if (this.switching) return;
    const trailers = this.slowHeaders;
    this.slowHeaders = undefined;
    const h = this.handler;
    if (!h || !this.headersSeen) return;
    this.awaitingBody = false;
    this.paused = false;
    this.handler = undefined;
    const last = this.held;
    this.held = undefined;
    // Reusable only when both messages are complete: a request body still being sent, or a backend
    // that asked to close, ends the connection.
    const reuse = this.keepAlive && this.sent;
    this.detachBody();
    if (reuse && this.pool.release(this)) {
      const now = performance.now();
      this.idleSince = now;
      this.idleDeadline.arm(this.idleMs, now);
    } else {
      this.destroy();
    }
    try {
      h.onComplete(last, trailers);
    } catch (err) {
      // Not the backend's: rethrown outside the parser's C++ callback, as any uncaught error.
      process.nextTick(() => {
        throw err;
      });
    }
  };

  private readonly onSocketEnd = (): void => {
    if (this.handler && this.headersSeen) {
      // A response delimited by the end of the connection ends here (finish() completes it), any other
      // is cut short (finish() reports the framing error).
      let r: number | Error | undefined;
      try {
        r = this.parser.finish();
      } catch (err) {
        r = err as Error;
      }
      if (r instanceof Error) this.fail(r);
    }
    if (this.handler) this.fail(upstreamError(UPSTREAM_CODES.closed, 'backend closed the connection before the response was complete'));
    else {
      this.idleEnded();
      this.destroy();
    }
  };

  private readonly onSocketError = (err: Error & { code?: string; syscall?: string; tls?: string }): void => {
    const o = this.pool.options;
    if (o.tls && (this.pending || (this.exchanges === 1 && !this.headersSeen))) {
      // Before secureConnect: a failed handshake is a connect failure of this backend (nothing was sent).
      // In TLS 1.3 a backend refuses lb's client certificate after lb's side of the handshake is done:
      // that alert comes during the first exchange.
      const reason = tlsFailure(err);
      if (reason) {
        err.tls = reason;
        o.tls.forget(o.host, o.port);
        countTlsError(o.tls.pool, o.name ?? o.host, reason);
      }
    }
    if (this.handler && !this.sent && !this.headersSeen && err.syscall === 'write' && (err.code === 'EPIPE' || err.code === 'ECONNRESET')) {
      // The backend stopped reading the body, maybe after sending a response: stop sending, read on. What
      // it sent (or its close) ends the exchange.
      this.detachBody();
      return;
    }
    if (this.handler) this.fail(err);
    else {
      this.idleEnded();
      this.destroy();
    }
  };

  private readonly onSocketClose = (): void => {
    this.pool.forget(this);
    clearTimeout(this.connectTimer);
    this.responseDeadline.clear();
    this.idleDeadline.clear();
    this.readDeadline.clear();
    if (this.handler) this.fail(upstreamError(UPSTREAM_CODES.closed, 'backend closed the connection before the response was complete'));
    if (this.handle) this.parser.unconsume();
    this.parser.close();
  };

  /** Ends the current exchange with an error and the connection with it. */
  private fail(err: UpstreamError): void {
    const h = this.handler;
    if (h && this.exchanges > 1 && !this.answered && this.written) {
      err.stale = true;
      this.pool.sawIdleClose(performance.now() - this.idleSince);
    }
    this.handler = undefined;
    this.pending = undefined;
    this.held = undefined;
    this.awaitingBody = false;
    this.detachBody();
    this.destroy();
    if (h) h.onError(err);
  }

  destroy(): void {
    this.pool.forget(this);
    if (!this.socket.destroyed) this.socket.destroy();
  }
}

/** Sets a socket's autoDestroy (net.Socket forces it on at construction). */
function setAutoDestroy(socket: net.Socket, on: boolean): void {
  const st = socket as unknown as { _readableState: { autoDestroy: boolean }; _writableState: { autoDestroy: boolean } };
  st._readableState.autoDestroy = on;
  st._writableState.autoDestroy = on;
}
