// The proxy's HTTP/2 client (pools with protocol = "h2" or "h2c"): node:http2 (nghttp2) sessions to one
// backend, requests multiplexed as streams. Same dispatch(UpstreamRequest, UpstreamHandler) contract as the
// HTTP/1.1 client (upstream.ts), so retries, timeouts and limits in http-proxy.ts work unchanged.
//
// - Sessions: at most `maxSessions` usable ones per backend (h2_max_connections). A request goes on the usable
//   session with the fewest streams under the backend's SETTINGS_MAX_CONCURRENT_STREAMS; only when every one
//   is at that limit is another opened, up to the bound; past it the request goes on the least loaded
//   session and nghttp2 holds its HEADERS until a stream slot frees (RFC 9113 section 5.1.2). A session
//   that received GOAWAY takes no new streams, finishes its own and does not count against the bound.
// - h2: TLS with ALPN "h2" (RFC 9113 section 3.2), the pool's TLS context and session resumption
//   (backend-tls.ts); a backend that selects anything else fails the connect. h2c: prior knowledge over TCP
//   (RFC 9113 section 3.3). A session is ready once the backend's SETTINGS arrive (its preface); requests
//   wait for that, and connect_timeout covers TCP, TLS and the preface.
// - Requests: the HTTP/1.1 head is mapped to HTTP/2 fields (RFC 9113 section 8.2.2: connection-specific
//   fields are dropped; Host becomes :authority), `te: trailers` is always sent (lb takes response trailers
//   whatever the client does: gRPC servers require it), the body is streamed under HTTP/2 flow control,
//   and request trailers (chunked bodies) are sent as a trailing HEADERS frame. Upgrade requests go out as
//   plain requests (no extended CONNECT, RFC 8441): a backend answers them as such.
// - Responses: 1xx to onInformational, the head to onHeaders, DATA to onData (false pauses the stream:
//   nghttp2 then stops extending the flow-control window, so a slow client bounds what lb holds), trailers
//   to onComplete.
// - Errors: a stream the backend refused (RST_STREAM REFUSED_STREAM) was not processed (RFC 9113 section
//   8.7): `unprocessed`, so the proxy may send it elsewhere whatever its method. A stream above a GOAWAY's
//   last-stream-id (nghttp2 closes those with REFUSED_STREAM too; section 6.8) is sent again here, on
//   another session of the same backend, when nothing of its body was read (MAX_GOAWAY_RESENDS). Other
//   resets are UPSTREAM_CODES.streamReset; a session that dies under a stream that had no response byte, on
//   a session used before, is `stale`.

import http2 from 'node:http2';
import net from 'node:net';
import { STATUS_CODES } from 'node:http';
import type tls from 'node:tls';
import { countTlsError, tlsFailure } from './backend-tls.js';
import { Deadline } from './deadline.js';
import { CHUNKED } from './http-server.js';
import { forwardableTrailers } from './fields.js';
import { UPSTREAM_CODES, type UpstreamError, type UpstreamHandler, type UpstreamOptions, type UpstreamRequest } from './upstream.js';

const { NGHTTP2_REFUSED_STREAM, NGHTTP2_CANCEL, NGHTTP2_NO_ERROR } = http2.constants;

/** Options of an HTTP/2 upstream: the HTTP/1.1 client's, plus the protocol and the session bound. */
export interface H2UpstreamOptions extends UpstreamOptions {
  protocol: 'h2' | 'h2c';
  /** h2_max_connections */
  maxSessions: number;
  /** The pool's name, for the metrics below. */
  pool: string;
}

/** Open HTTP/2 sessions per pool and backend (lb_backend_h2_sessions), this process's. */
export const h2Sessions = new Map<string, Map<string, number>>();
/** Streams the backends did not process, per pool, backend and reason (lb_backend_h2_refused_streams_total). */
export const h2Refused = new Map<string, Map<string, Map<'refused_stream' | 'goaway', number>>>();

function countSession(pool: string, backend: string, delta: number): void {
  let m = h2Sessions.get(pool);
  if (!m) h2Sessions.set(pool, (m = new Map()));
  m.set(backend, (m.get(backend) ?? 0) + delta);
}

function countRefused(pool: string, backend: string, reason: 'refused_stream' | 'goaway'): void {
  let m = h2Refused.get(pool);
  if (!m) h2Refused.set(pool, (m = new Map()));
  let r = m.get(backend);
  if (!r) m.set(backend, (r = new Map()));
  r.set(reason, (r.get(reason) ?? 0) + 1);
}

/** Error codes of this client beyond UPSTREAM_CODES. */
export const H2_CODES = {
  /** The backend did not select h2 in ALPN. */
  alpn: 'ALPN_NOT_H2',
  /** RST_STREAM REFUSED_STREAM, or a stream above a GOAWAY's last-stream-id. */
  refused: 'REFUSED_STREAM',
} as const;

/**
 * RFC 9113 section 8.2.2: fields a proxy must not send in HTTP/2 (node:http2 refuses them too). `te` is
 * sent as "trailers" only; `host` becomes :authority.
 */
const H2_DROP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'host', 'http2-settings']);
/** Streams assumed allowed before the backend's SETTINGS arrive (nghttp2's own assumption is 100). */
const DEFAULT_MAX_STREAMS = 100;
/** How many times a request above a GOAWAY's last-stream-id is sent again to the same backend. */
const MAX_GOAWAY_RESENDS = 3;
/** An HTTP/2 session with no streams is closed after this long. */
const SESSION_IDLE_MS = 30_000;
/** Flow-control windows lb offers (RFC 9113 section 6.9.2: default 65,535): per stream, and per session. */
const STREAM_WINDOW = 256 * 1024;
const SESSION_WINDOW = 4 * 1024 * 1024;

function upstreamError(code: string, message: string, extra?: Partial<UpstreamError>): UpstreamError {
  return Object.assign(new Error(message), { code }, extra);
}

/** The HTTP/2 connections of one backend; dispatch() as UpstreamPool.dispatch. */
export class H2UpstreamPool {
  private readonly sessions: Session[] = [];
  closed = false;
  readonly authority: string;
  readonly scheme: string;

  constructor(readonly options: H2UpstreamOptions) {
    const h = options.host.includes(':') ? `[${options.host}]` : options.host;
    this.authority = `${h}:${options.port}`;
    this.scheme = options.protocol === 'h2' ? 'https' : 'http';
  }

  /** HTTP/2 connections open to the backend. */
  get connections(): number {
    return this.sessions.length;
  }

  dispatch(req: UpstreamRequest, handler: UpstreamHandler): void {
    this.session().enqueue(new Exchange(this, req, handler, 0));
  }

  /** A request a GOAWAY sent back unprocessed, once more (`attempt`: how many times so far). */
  resend(req: UpstreamRequest, handler: UpstreamHandler, attempt: number): void {
    this.session().enqueue(new Exchange(this, req, handler, attempt));
  }

  /** The session a new stream goes on (see the header comment). */
  private session(): Session {
    let best: Session | undefined;
    let least: Session | undefined;
    let usable = 0;
    for (const s of this.sessions) {
      if (!s.usable) continue;
      usable++;
      if (least === undefined || s.active < least.active) least = s;
      if (s.active < s.maxStreams && (best === undefined || s.active < best.active)) best = s;
    }
    if (best) return best;
    if (usable < this.options.maxSessions || least === undefined) {
      const s = new Session(this);
      this.sessions.push(s);
      return s;
    }
    return least;
  }

  /** Re-sends requests a session could not start (it got GOAWAY or closed before it connected). */
  redispatch(exchanges: Exchange[]): void {
    for (const x of exchanges) this.session().enqueue(x);
  }

  forget(s: Session): void {
    const i = this.sessions.indexOf(s);
    if (i >= 0) this.sessions.splice(i, 1);
  }

  /** No new exchanges: idle sessions close now, busy ones once their streams are done. */
  close(): void {
    this.closed = true;
    for (const s of [...this.sessions]) s.closeWhenIdle();
  }
}

class Session {
  readonly session: http2.ClientHttp2Session;
  /** Streams on this session (started or waiting for it to connect). */
  active = 0;
  /** Ready: connected and the backend's SETTINGS received. */
  private connected = false;
  /** GOAWAY received, or closing: takes no new streams. */
  private goaway = false;
  /** A stream completed on it: a later failure of the whole session is `stale` for its streams. */
  used = false;
  private waiting: Exchange[] = [];
  private connectTimer: NodeJS.Timeout | undefined;
  private idleTimer: NodeJS.Timeout | undefined;
  private error: Error | undefined;
  private counted = false;

  constructor(readonly pool: H2UpstreamPool) {
    const o = pool.options;
    const t = o.tls;
    const settings: http2.Settings = { enablePush: false, initialWindowSize: STREAM_WINDOW };
    this.session = http2.connect(`${pool.scheme}://${pool.authority}`, {
      settings,
      maxSessionMemory: 64,
      createConnection: () => {
        if (!t) return net.connect({ host: o.host, port: o.port, noDelay: true });
        const socket = t.connect(o.host, o.port, { ALPNProtocols: ['h2'] } as tls.ConnectionOptions);
        socket.setNoDelay(true);
        socket.once('secureConnect', () => {
          if (socket.alpnProtocol !== 'h2') {
            const e = upstreamError(H2_CODES.alpn, `backend did not select h2 in ALPN (selected ${socket.alpnProtocol || 'none'}): set protocol = "http1" for it`);
            (e as { tls?: string }).tls = 'handshake';
            countTlsError(t.pool, o.name ?? o.host, 'handshake');
            this.session.destroy(e);
          }
        });
        socket.once('error', (err: Error & { code?: string; tls?: string }) => {
          if (this.connected) return;
          if (err.code === 'ERR_SSL_TLSV1_ALERT_NO_APPLICATION_PROTOCOL') {
            // The backend has no protocol in common with ALPN ["h2"] (RFC 7301 section 3.2).
            err.message = `backend refused ALPN h2 (no_application_protocol alert): set protocol = "http1" for it`;
            err.code = H2_CODES.alpn;
            err.tls = 'handshake';
            countTlsError(t.pool, o.name ?? o.host, 'handshake');
            return;
          }
          const reason = tlsFailure(err);
          if (reason) {
            err.tls = reason;
            t.forget(o.host, o.port);
            countTlsError(t.pool, o.name ?? o.host, reason);
          }
        });
        return socket;
      },
    });
    const s = this.session;
    s.on('connect', this.onConnect);
    s.on('error', this.onError);
    s.on('goaway', this.onGoaway);
    s.on('remoteSettings', this.onRemoteSettings);
    s.on('close', this.onClose);
    if (o.connectTimeoutMs > 0) {
      this.connectTimer = setTimeout(() => {
        s.destroy(upstreamError(UPSTREAM_CODES.connectTimeout, `connect timeout after ${o.connectTimeoutMs}ms`));
      }, o.connectTimeoutMs);
    }
  }

  get usable(): boolean {
    return !this.goaway && !this.session.destroyed && !this.session.closed;
  }

  /** SETTINGS_MAX_CONCURRENT_STREAMS of the backend (before its SETTINGS: DEFAULT_MAX_STREAMS). */
  get maxStreams(): number {
    // Before the backend's SETTINGS, node:http2 reports the protocol's default (unlimited).
    if (!this.connected) return DEFAULT_MAX_STREAMS;
    return this.session.remoteSettings.maxConcurrentStreams ?? DEFAULT_MAX_STREAMS;
  }

  enqueue(x: Exchange): void {
    this.active++;
    clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    if (this.connected) x.start(this);
    else this.waiting.push(x);
  }

  /** A stream of this session ended (any way). */
  done(completed: boolean): void {
    if (completed) this.used = true;
    this.active--;
    if (this.active > 0) return;
    if (this.pool.closed || this.goaway) {
      // Not from inside the stream's own event (node:http2 is called back from nghttp2 here).
      setImmediate(() => this.session.close());
      return;
    }
    if (this.idleTimer) this.idleTimer.refresh();
    else this.idleTimer = setTimeout(this.onIdle, SESSION_IDLE_MS).unref();
  }

  private readonly onIdle = (): void => {
    if (this.active === 0) this.closeWhenIdle();
  };

  closeWhenIdle(): void {
    this.goaway = true;
    this.pool.forget(this);
    if (this.active === 0) this.session.close();
  }

  /** The transport is up (TCP, TLS): the session's own SETTINGS go out; requests wait for the backend's. */
  private readonly onConnect = (): void => {
    this.counted = true;
    const o = this.pool.options;
    countSession(o.pool, o.name ?? o.host, 1);
    try {
      this.session.setLocalWindowSize(SESSION_WINDOW);
    } catch {
      // a session already closing: its streams fail on their own
    }
  };

  /**
   * The backend's SETTINGS arrived (RFC 9113 section 3.4: its preface): the session is ready. The requests
   * that waited for it start, up to its SETTINGS_MAX_CONCURRENT_STREAMS; the rest go back to the pool, which
   * may open another session for them (within h2_max_connections).
   */
  private readonly onRemoteSettings = (): void => {
    if (this.connected) return;
    clearTimeout(this.connectTimer);
    this.connected = true;
    const waiting = this.waiting;
    this.waiting = [];
    const max = this.maxStreams;
    let i = 0;
    for (; i < waiting.length && i < max; i++) waiting[i]!.start(this);
    if (i < waiting.length) {
      const rest = waiting.slice(i);
      this.active -= rest.length;
      this.pool.redispatch(rest);
    }
  };

  private readonly onError = (err: Error): void => {
    this.error ??= err;
  };

  private readonly onGoaway = (code: number, lastStreamID: number): void => {
    // Streams above lastStreamID are closed by nghttp2 with REFUSED_STREAM (Exchange.onClose); the rest finish.
    this.goaway = true;
    this.pool.forget(this);
    void code;
    void lastStreamID;
    if (!this.connected) this.moveWaiting();
  };

  /** Requests that never started here go to another session. */
  private moveWaiting(): void {
    const waiting = this.waiting;
    this.waiting = [];
    this.active -= waiting.length;
    if (waiting.length > 0 && !this.pool.closed) this.pool.redispatch(waiting);
    else for (const x of waiting) x.failBeforeStart(this.failure());
  }

  private failure(): UpstreamError {
    const e = this.error as UpstreamError | undefined;
    if (e) return e;
    return upstreamError(UPSTREAM_CODES.closed, 'backend closed the HTTP/2 connection');
  }

  private readonly onClose = (): void => {
    clearTimeout(this.connectTimer);
    clearTimeout(this.idleTimer);
    this.goaway = true;
    this.pool.forget(this);
    if (this.counted) {
      this.counted = false;
      const o = this.pool.options;
      countSession(o.pool, o.name ?? o.host, -1);
    }
    // Requests that waited for a connection that failed: a connect failure, as on HTTP/1.1.
    const waiting = this.waiting;
    this.waiting = [];
    this.active -= waiting.length;
    const err = this.failure();
    for (const x of waiting) x.failBeforeStart(err);
  };

  /** The reason the session ended, for streams it took down; `stale` when it had served streams before. */
  sessionError(answered: boolean): UpstreamError {
    const base = this.error as UpstreamError | undefined;
    const err = upstreamError(base?.code ?? UPSTREAM_CODES.closed, base?.message ?? 'backend closed the HTTP/2 connection before the response was complete');
    if (this.used && !answered) err.stale = true;
    return err;
  }
}

/** One request on one stream. */
class Exchange {
  private session: Session | undefined;
  private stream: http2.ClientHttp2Stream | undefined;
  private finished = false;
  private headersSeen = false;
  /** A response byte (head, 1xx or data) came. */
  private answered = false;
  /** The request, body included, is written. */
  private sent = false;
  private paused = false;
  private awaitingBody = false;
  private trailers: string[] | undefined;
  private responseTimer: NodeJS.Timeout | undefined;
  private readonly readDeadline = new Deadline(() => this.onReadTimeout());
  private abortError: Error | undefined;
  private bodyWaiting = false;

  constructor(
    private readonly pool: H2UpstreamPool,
    private readonly req: UpstreamRequest,
    private readonly handler: UpstreamHandler,
    /** Times this request was sent before and came back unprocessed from a GOAWAY. */
    private readonly attempt: number,
  ) {}

  /** The session is connected: the stream is opened and the request written. */
  start(session: Session): void {
    this.session = session;
    const h = this.handler;
    h.onConnect(this.abort);
    if (this.finished) return;
    const req = this.req;
    const fields: http2.OutgoingHttpHeaders = {
      ':method': req.method,
      ':scheme': this.pool.scheme,
      ':path': req.path,
      ':authority': this.pool.authority,
    };
    const raw = req.headers;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i]!.toLowerCase();
      const value = raw[i + 1]!;
      if (H2_DROP.has(name)) {
        if (name === 'host') fields[':authority'] = value;
        continue;
      }
      const had = fields[name];
      if (had === undefined) fields[name] = value;
      else if (Array.isArray(had)) had.push(value);
      else fields[name] = [had as string, value];
    }
    fields['te'] = 'trailers';
    const framing = req.framing;
    if (framing >= 0) fields['content-length'] = String(framing);
    const body = req.body;
    let stream: http2.ClientHttp2Stream;
    try {
      stream = session.session.request(fields, { endStream: body === null, waitForTrailers: body !== null && framing === CHUNKED });
    } catch (err) {
      const code = (err as { code?: string }).code;
      if ((code === 'ERR_HTTP2_GOAWAY_SESSION' || code === 'ERR_HTTP2_INVALID_SESSION') && this.attempt < MAX_GOAWAY_RESENDS && !this.pool.closed) {
        // The session closed between its choice and this request: nothing was sent; another one takes it.
        this.finished = true;
        session.done(false);
        this.pool.resend(this.req, this.handler, this.attempt + 1);
        return;
      }
      // A field node:http2 refuses (a value with characters HTTP/2 forbids...): the request cannot go out.
      this.fail(Object.assign(err as Error, { code: code ?? UPSTREAM_CODES.badResponse }));
      return;
    }
    this.stream = stream;
    stream.on('response', this.onResponse);
    stream.on('headers', this.onInformational);
    stream.on('trailers', this.onTrailers);
    stream.on('data', this.onData);
    stream.on('end', this.onEnd);
    stream.on('error', this.onStreamError);
    stream.on('close', this.onClose);
    if (body) {
      stream.on('wantTrailers', this.onWantTrailers);
      body.on('data', this.onBodyData);
      body.once('end', this.onBodyEnd);
    } else {
      this.sent = true;
      this.armResponseTimer();
    }
  }

  /** The session failed before this request could start (connect failure): nothing was sent. */
  failBeforeStart(err: UpstreamError): void {
    if (this.finished) return;
    this.finished = true;
    this.handler.onError(err);
  }

  private readonly abort = (err?: Error): void => {
    if (this.finished) return;
    this.abortError = err ?? new Error('aborted');
    const s = this.stream;
    if (s && !s.destroyed) s.close(NGHTTP2_CANCEL);
    this.fail(this.abortError);
  };

  private readonly onBodyData = (chunk: Buffer): void => {
    const s = this.stream!;
    if (!s.write(chunk) && !this.bodyWaiting) {
      this.bodyWaiting = true;
      this.req.body!.pause();
      s.once('drain', this.onDrain);
    }
  };

  private readonly onDrain = (): void => {
    this.bodyWaiting = false;
    if (!this.finished) this.req.body?.resume();
  };

  private readonly onBodyEnd = (): void => {
    this.detachBody();
    this.sent = true;
    const s = this.stream!;
    if (!s.destroyed) s.end();
    if (!this.headersSeen) this.armResponseTimer();
  };

  private readonly onWantTrailers = (): void => {
    const list = forwardableTrailers(this.req.body?.trailers);
    const out: http2.OutgoingHttpHeaders = {};
    if (list) for (let i = 0; i < list.length; i += 2) out[list[i]!.toLowerCase()] = list[i + 1]!;
    // No trailers: an empty DATA frame with END_STREAM (node:http2).
    this.stream!.sendTrailers(out);
  };

  private detachBody(): void {
    const b = this.req.body;
    if (!b) return;
    b.removeListener('data', this.onBodyData);
    b.removeListener('end', this.onBodyEnd);
    this.stream?.removeListener('drain', this.onDrain);
  }

  private armResponseTimer(): void {
    const ms = this.pool.options.responseTimeoutMs;
    if (ms <= 0 || this.headersSeen || this.finished) return;
    this.responseTimer = setTimeout(this.onResponseTimeout, ms).unref();
  }

  private readonly onResponseTimeout = (): void => {
    if (this.finished || this.headersSeen) return;
    this.stream?.close(NGHTTP2_CANCEL);
    this.fail(upstreamError(UPSTREAM_CODES.responseTimeout, `no response head within ${this.pool.options.responseTimeoutMs}ms`));
  };

  private onReadTimeout(): void {
    if (this.finished || !this.awaitingBody) return;
    if (this.paused) {
      this.readDeadline.arm(this.pool.options.readTimeoutMs ?? 0);
      return;
    }
    this.stream?.close(NGHTTP2_CANCEL);
    this.fail(upstreamError(UPSTREAM_CODES.readTimeout, `no response body data within ${this.pool.options.readTimeoutMs ?? 0}ms`));
  }

  private readonly onInformational = (headers: http2.IncomingHttpHeaders): void => {
    const status = Number(headers[':status']);
    this.answered = true;
    if (this.finished || !(status >= 100 && status < 200)) return;
    try {
      this.handler.onInformational(status, STATUS_CODES[status] ?? '', flatten(headers));
    } catch (err) {
      this.fail(err as Error);
    }
  };

  private readonly onResponse = (headers: http2.IncomingHttpHeaders, flags: number): void => {
    this.answered = true;
    if (this.finished) return;
    clearTimeout(this.responseTimer);
    this.headersSeen = true;
    const status = Number(headers[':status']);
    const endStream = (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0;
    const bodiless = endStream || this.req.method === 'HEAD' || status === 204 || status === 304;
    if (!bodiless) {
      this.awaitingBody = true;
      this.readDeadline.arm(this.pool.options.readTimeoutMs ?? 0);
    }
    const h = this.handler;
    try {
      if (!h.onHeaders(status, flatten(headers), STATUS_CODES[status] ?? '', this.resume, true) && !this.finished) this.pause();
    } catch (err) {
      this.fail(err as Error);
    }
  };

  private pause(): void {
    this.paused = true;
    this.stream?.pause();
  }

  private readonly resume = (): void => {
    if (this.finished) return;
    this.paused = false;
    if (this.awaitingBody) this.readDeadline.arm(this.pool.options.readTimeoutMs ?? 0);
    this.stream?.resume();
  };

  private readonly onData = (chunk: Buffer): void => {
    this.answered = true;
    if (this.finished || !this.headersSeen) return;
    if (this.awaitingBody) this.readDeadline.arm(this.pool.options.readTimeoutMs ?? 0);
    try {
      if (!this.handler.onData(chunk) && !this.finished) this.pause();
    } catch (err) {
      this.fail(err as Error);
    }
  };

  private readonly onTrailers = (headers: http2.IncomingHttpHeaders): void => {
    this.trailers = flatten(headers);
  };

  private readonly onEnd = (): void => {
    if (this.finished || !this.headersSeen) return;
    this.finished = true;
    this.cleanup();
    const s = this.stream!;
    // The response is complete; a request body still being sent is not needed any more (RFC 9113 section 8.1).
    if (!this.sent && !s.destroyed) s.close(NGHTTP2_NO_ERROR);
    this.session!.done(true);
    this.handler.onComplete(undefined, this.trailers);
  };

  private streamError: Error | undefined;

  private readonly onStreamError = (err: Error): void => {
    this.streamError ??= err;
  };

  private readonly onClose = (): void => {
    if (this.finished) return;
    const s = this.stream!;
    const session = this.session!;
    const code = s.rstCode;
    if (code === NGHTTP2_REFUSED_STREAM) {
      // Not processed (RFC 9113 section 8.7): safe to send elsewhere.
      const o = this.pool.options;
      const goaway = !session.usable;
      countRefused(o.pool, o.name ?? o.host, goaway ? 'goaway' : 'refused_stream');
      const body = this.req.body;
      if (goaway && !this.answered && (body === null || !body.readableDidRead) && this.attempt < MAX_GOAWAY_RESENDS && !this.pool.closed) {
        // The backend is closing this connection, not refusing work: the same request on another of its
        // connections (nothing of it was processed, nor of its body read).
        this.finished = true;
        this.cleanup();
        session.done(false);
        this.pool.resend(this.req, this.handler, this.attempt + 1);
        return;
      }
      this.fail(upstreamError(H2_CODES.refused, goaway ? 'backend sent GOAWAY before processing the stream' : 'backend refused the stream (REFUSED_STREAM)', { unprocessed: true }));
      return;
    }
    if (session.session.destroyed && (!this.streamError || (this.streamError as { code?: string }).code !== 'ERR_HTTP2_STREAM_ERROR')) {
      this.fail(session.sessionError(this.answered));
      return;
    }
    if (code !== undefined && code !== NGHTTP2_NO_ERROR) {
      this.fail(upstreamError(UPSTREAM_CODES.streamReset, `backend reset the stream (HTTP/2 error ${h2ErrorName(code)})`));
      return;
    }
    const e = this.streamError as UpstreamError | undefined;
    this.fail(e ?? upstreamError(UPSTREAM_CODES.closed, 'backend closed the stream before the response was complete'));
  };

  private cleanup(): void {
    clearTimeout(this.responseTimer);
    this.readDeadline.clear();
    this.detachBody();
  }

  private fail(err: UpstreamError): void {
    if (this.finished) return;
    this.finished = true;
    this.cleanup();
    const s = this.stream;
    if (s && !s.destroyed) s.close(NGHTTP2_CANCEL);
    this.session?.done(false);
    this.handler.onError(err);
  }
}

/** node:http2's header object as a flat name, value list without pseudo-headers. */
function flatten(headers: http2.IncomingHttpHeaders): string[] {
  const out: string[] = [];
  for (const name in headers) {
    if (name.charCodeAt(0) === 58 /* : */) continue;
    const v = headers[name];
    if (v === undefined) continue;
    if (Array.isArray(v)) for (const x of v) out.push(name, x);
    else out.push(name, String(v));
  }
  return out;
}

const H2_ERRORS: Record<number, string> = {
  0: 'NO_ERROR',
  1: 'PROTOCOL_ERROR',
  2: 'INTERNAL_ERROR',
  3: 'FLOW_CONTROL_ERROR',
  4: 'SETTINGS_TIMEOUT',
  5: 'STREAM_CLOSED',
  6: 'FRAME_SIZE_ERROR',
  7: 'REFUSED_STREAM',
  8: 'CANCEL',
  9: 'COMPRESSION_ERROR',
  10: 'CONNECT_ERROR',
  11: 'ENHANCE_YOUR_CALM',
  12: 'INADEQUATE_SECURITY',
  13: 'HTTP_1_1_REQUIRED',
};

function h2ErrorName(code: number): string {
  return H2_ERRORS[code] ?? `0x${code.toString(16)}`;
}
