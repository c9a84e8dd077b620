// HTTP/2 from clients (RFC 9113) on an http listener with `http2 = true`: node:http2 (nghttp2) does the
// framing, HPACK, flow control and the protocol's own checks; each stream becomes an HttpRequest and
// HttpResponse (exchange.ts) that the listener routes, limits and forwards exactly as an HTTP/1.1 request.
//
// Connections come from the listener, never from a socket of this server's own: a TLS connection whose
// ALPN chose "h2" once lb's handshake is done, or a plain one whose first bytes are the connection preface
// (h2c with prior knowledge, RFC 9113 §3.3; `sniffPreface`), read after a PROXY header if the listener takes
// one. node:http2 reads what is already buffered on the socket before its handle.
//
// Mapping (RFC 9113 §8.3): :method, :path and :authority become the method, target and Host (a Host field
// that disagrees with :authority makes the request malformed: §8.3.1, answered 400); cookie crumbs are
// joined with "; " (§8.2.3). nghttp2 refuses connection-specific fields, upper-case names, a TE other than
// "trailers", bad pseudo-header sets and a Content-Length the DATA frames contradict (stream error
// PROTOCOL_ERROR) before a stream reaches lb. Responses: names lower-cased, connection-specific fields
// dropped (§8.2.2); a response without Content-Length may end with the backend's trailers.
//
// Limits: SETTINGS_MAX_CONCURRENT_STREAMS, SETTINGS_INITIAL_WINDOW_SIZE (stream and connection) from the
// listener; SETTINGS_MAX_HEADER_LIST_SIZE is its max_header_size (the HTTP/1.1 head bound). Rapid reset
// (CVE-2023-44487): nghttp2 limits RST_STREAM frames (a burst of 1000, then 33/s); on top, a connection
// whose client has reset more streams that lb had not finished answering than resetLimit(), and more than
// lb answered to the end on it, gets GOAWAY ENHANCE_YOUR_CALM and is closed, counted and logged by the
// listener. Counts, not rates, as HAProxy's glitch counter: a worker slowed down by the flood itself still
// stops it; a long-lived connection whose client cancels some of its streams (a browser) stays.

import http2, { constants as H2 } from 'node:http2';
import type net from 'node:net';
import { Readable } from 'node:stream';
import { EventEmitter } from 'node:events';
import type { HttpRequest, HttpResponse } from './exchange.js';
import { CHUNKED, NO_BODY } from './http-server.js';
import type { Http2Config } from '../../config/model.js';

/** The client connection preface (RFC 9113 §3.4). */
export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
/** A client that reset more unfinished streams than this, and than it was answered, is flooding. */
export function resetLimit(maxConcurrentStreams: number): number {
  return Math.max(200, 2 * maxConcurrentStreams);
}

/** Fields that are connection-specific in HTTP/2 (RFC 9113 §8.2.2), never sent to an h2 client. */
const RESPONSE_DROP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'http2-settings']);
/** node:http2 takes one value only for these (lib/internal/http2/util.js kSingleValueHeaders): the first is sent. */
const SINGLE = new Set([
  'access-control-allow-credentials', 'access-control-max-age', 'access-control-request-method', 'age', 'authorization',
  'content-encoding', 'content-language', 'content-length', 'content-location', 'content-md5', 'content-range',
  'content-type', 'date', 'dnt', 'etag', 'expires', 'from', 'host', 'if-match', 'if-modified-since', 'if-none-match',
  'if-range', 'if-unmodified-since', 'last-modified', 'location', 'max-forwards', 'proxy-authorization', 'range',
  'referer', 'retry-after', 'tk', 'upgrade-insecure-requests', 'user-agent', 'x-content-type-options',
]);

export interface H2Handlers {
  request(req: H2Request, res: H2Response): void;
  /** A client's connection closed for flooding resets (GOAWAY ENHANCE_YOUR_CALM). */
  flood(socket: net.Socket, resets: number): void;
}

export interface H2Limits extends Http2Config {
  /** SETTINGS_MAX_HEADER_LIST_SIZE: the listener's max_header_size. */
  maxHeaderListSize: number;
  /** idle_timeout: a connection without open streams for this long gets GOAWAY; 0: never. */
  idleTimeoutMs: number;
}

/** One client connection's state. */
export class H2Conn {
  /** Streams handed to the listener and not closed. */
  open = 0;
  /** Streams the client reset before lb finished answering them. */
  resets = 0;
  /** Streams answered to the end. */
  completed = 0;
  /** Sent GOAWAY ENHANCE_YOUR_CALM; closing. */
  flooded = false;
  constructor(
    readonly socket: net.Socket,
    readonly session: http2.ServerHttp2Session,
  ) {}
}

const CONN = Symbol('lb.h2conn');
type Tagged = http2.ServerHttp2Session & { [CONN]?: H2Conn };
const RES = Symbol('lb.h2res');
type Carrier = http2.ServerHttp2Stream & { [RES]?: H2Response };
const ignore = (): void => {};

export class H2Front {
  private readonly server: http2.Http2Server;
  private readonly conns = new Set<H2Conn>();
  private pending: net.Socket | undefined;
  draining = false;

  constructor(
    private limits: H2Limits,
    private readonly handlers: H2Handlers,
  ) {
    // Never listens: connections are handed over (accept). No timeout of node's own: idle_timeout is lb's.
    this.server = http2.createServer({
      settings: {
        maxConcurrentStreams: limits.maxConcurrentStreams,
        initialWindowSize: limits.initialWindowSize,
        maxHeaderListSize: limits.maxHeaderListSize,
      },
      // Header fields, pseudo-header fields included; HTTP/1.1 allows MAX_HEADER_FIELDS (1000).
      maxHeaderListPairs: 1004,
    });
    (this.server as unknown as { timeout: number }).timeout = 0;
    this.server.on('session', this.onSession);
    this.server.on('stream', this.onStream);
    // A session error destroys the session (and its streams); nothing more to do here.
    this.server.on('sessionError', () => {});
  }

  /** A connection that speaks HTTP/2: TLS with ALPN h2, or plain with the preface (possibly buffered). */
  readonly accept = (socket: net.Socket): void => {
    if (socket.destroyed) return;
    this.pending = socket;
    try {
      this.server.emit('connection', socket);
    } finally {
      this.pending = undefined;
    }
  };

  private readonly onSession = (session: http2.ServerHttp2Session): void => {
    const socket = this.pending;
    if (!socket) {
      session.destroy();
      return;
    }
    const conn = new H2Conn(socket, session);
    (session as Tagged)[CONN] = conn;
    this.conns.add(conn);
    session.on('error', () => {});
    session.once('close', () => this.conns.delete(conn));
    if (this.limits.idleTimeoutMs > 0) {
      session.setTimeout(this.limits.idleTimeoutMs, () => {
        if (conn.open === 0) session.close();
      });
    }
    // The connection window as large as a stream's (node leaves it at 65535).
    const extra = this.limits.initialWindowSize - 65535;
    if (extra > 0) session.once('connect', () => session.setLocalWindowSize(this.limits.initialWindowSize));
    if (this.draining) session.close();
  };

  private readonly onStream = (
    stream: http2.ServerHttp2Stream,
    headers: http2.IncomingHttpHeaders,
    flags: number,
    rawHeaders: string[],
  ): void => {
    // First, before anything can return: a stream's error (a reset, a protocol error) with no listener is an
    // uncaught exception that ends the worker. A stream may already be closed when 'stream' is emitted (its
    // HEADERS and a DATA frame that breaks it came in one read: Content-Length against the DATA, say);
    // its session is then gone, and there is nothing to answer.
    stream.on('error', ignore);
    if (stream.destroyed) return;
    const conn = (stream.session as Tagged | undefined)?.[CONN];
    if (!conn) {
      stream.close(H2.NGHTTP2_INTERNAL_ERROR);
      return;
    }
    const ended = (flags & H2.NGHTTP2_FLAG_END_STREAM) !== 0 || stream.endAfterHeaders;
    const req = new H2Request(conn.socket, stream, headers, rawHeaders, ended);
    const res = new H2Response(stream, req, conn);
    (stream as Carrier)[RES] = res;
    conn.open++;
    stream.once('close', this.onStreamClose);
    this.handlers.request(req, res);
  };

  private readonly onStreamClose = ((front: H2Front) =>
    function (this: Carrier): void {
      const res = this[RES]!;
      const conn = res.conn;
      conn.open--;
      if (res.ended) conn.completed++;
      else if (!res.cut && this.rstCode !== H2.NGHTTP2_NO_ERROR) front.clientReset(conn);
      res.closed();
    })(this);

  /** A stream the client reset before lb finished answering it (see the header: rapid reset). */
  clientReset(conn: H2Conn): void {
    if (conn.flooded || conn.session.destroyed || conn.session.closed) return;
    if (++conn.resets <= resetLimit(this.limits.maxConcurrentStreams) || conn.resets <= conn.completed) return;
    const resets = conn.resets;
    conn.flooded = true;
    conn.session.goaway(H2.NGHTTP2_ENHANCE_YOUR_CALM);
    // The GOAWAY is written before the socket closes (destroy flushes what nghttp2 has queued).
    setImmediate(() => conn.session.destroy());
    this.handlers.flood(conn.socket, resets);
  }

  /** Reloaded limits: new connections get the new SETTINGS, open ones keep theirs. */
  update(limits: H2Limits): void {
    this.limits = limits;
    this.server.updateSettings({
      maxConcurrentStreams: limits.maxConcurrentStreams,
      initialWindowSize: limits.initialWindowSize,
      maxHeaderListSize: limits.maxHeaderListSize,
    });
  }

  /** GOAWAY to every connection: streams already open are answered, then the connection closes. */
  drain(): void {
    this.draining = true;
    for (const c of this.conns) c.session.close();
  }

  closeAllConnections(): void {
    for (const c of this.conns) c.session.destroy();
  }
}

/** An HTTP/2 request body: the stream's DATA, read as the backend accepts it (flow control does the rest). */
export class H2Body extends Readable {
  trailers: string[] | undefined;
  /** DATA bytes received (the access log's bytes in). */
  bytes = 0;

  constructor(private readonly stream: http2.ServerHttp2Stream) {
    super();
    stream.on('data', this.onData);
    stream.once('trailers', this.onTrailers);
    stream.once('end', this.onEnd);
  }

  private readonly onData = (chunk: Buffer): void => {
    this.bytes += chunk.length;
    if (!this.push(chunk)) this.stream.pause();
  };

  private readonly onTrailers = (_h: unknown, _f: unknown, raw: string[]): void => {
    const out: string[] = [];
    for (let i = 0; i < raw.length; i += 2) if (raw[i]!.charCodeAt(0) !== 58 /* ":" */) out.push(raw[i]!, raw[i + 1]!);
    if (out.length > 0) this.trailers = out;
  };

  private readonly onEnd = (): void => {
    this.push(null);
  };

  override _read(): void {
    this.stream.resume();
  }
}

export class H2Request implements HttpRequest {
  readonly method: string;
  readonly url: string;
  readonly httpVersionMajor = 2;
  readonly httpVersionMinor = 0;
  readonly rawHeaders: string[];
  readonly body: H2Body | null;
  readonly framing: number;
  readonly upgrade = false;
  /** A Host field that disagrees with :authority (RFC 9113 §8.3.1): the listener answers 400. */
  readonly conflictingHost: boolean;
  private lower: Record<string, string> | undefined;

  constructor(
    readonly socket: net.Socket,
    readonly stream: http2.ServerHttp2Stream,
    headers: http2.IncomingHttpHeaders,
    raw: string[],
    ended: boolean,
  ) {
    this.method = headers[':method'] ?? '';
    this.url = headers[':path'] ?? '';
    const authority = headers[':authority'];
    const out: string[] = authority !== undefined ? ['host', authority] : [];
    let cookie: string | undefined;
    let conflict = false;
    let length: string | undefined;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i]!;
      if (name.charCodeAt(0) === 58 /* ":" */) continue;
      const value = raw[i + 1]!;
      const n = name.length;
      if (n === 6 && name === 'cookie') {
        cookie = cookie === undefined ? value : `${cookie}; ${value}`;
        continue;
      }
      if (n === 4 && name === 'host') {
        if (authority === undefined) out.push(name, value);
        else if (value !== authority) conflict = true;
        continue;
      }
      if (n === 14 && name === 'content-length') length = value;
      out.push(name, value);
    }
    if (cookie !== undefined) out.push('cookie', cookie);
    this.rawHeaders = out;
    this.conflictingHost = conflict;
    // nghttp2 checked Content-Length's syntax and checks it against the DATA frames.
    const declared = length === undefined ? NaN : Number(length);
    if (ended) {
      this.framing = NO_BODY;
      this.body = null;
    } else if (declared === 0) {
      this.framing = 0;
      this.body = null;
      stream.resume();
    } else {
      this.framing = declared > 0 ? declared : CHUNKED;
      this.body = new H2Body(stream);
    }
  }

  get headers(): Record<string, string> {
    if (this.lower) return this.lower;
    const out: Record<string, string> = Object.create(null) as Record<string, string>;
    const raw = this.rawHeaders;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i]!;
      const prev = out[name];
      out[name] = prev === undefined ? raw[i + 1]! : `${prev}, ${raw[i + 1]!}`;
    }
    return (this.lower = out);
  }

  get readableDidRead(): boolean {
    return this.body ? this.body.readableDidRead : false;
  }
}

export class H2Response extends EventEmitter implements HttpResponse {
  headersSent = false;
  destroyed = false;
  ended = false;
  shouldKeepAlive = true;
  transferCodings: string | undefined;
  /** lb reset the stream itself (a response cut short): not the client's reset. */
  cut = false;
  private head: http2.OutgoingHttpHeaders | undefined;
  private responded = false;
  private noBody = false;
  private hasLength = false;
  private trailers: string[] | undefined;
  private awaitingDrain = false;

  constructor(
    readonly stream: http2.ServerHttp2Stream,
    readonly req: H2Request,
    /** The connection's state (h2-front's own; open streams, resets). */
    readonly conn: H2Conn,
  ) {
    super();
  }

  writeHead(status: number, reason?: string | Record<string, string | number>, list?: string[]): this {
    if (this.headersSent) return this;
    this.headersSent = true;
    const head: http2.OutgoingHttpHeaders = { ':status': status };
    if (typeof reason === 'string') {
      if (list) for (let i = 0; i < list.length; i += 2) this.field(head, list[i]!, list[i + 1]!);
    } else if (reason) {
      for (const k of Object.keys(reason)) this.field(head, k, String(reason[k]));
    }
    this.noBody = this.req.method === 'HEAD' || status === 204 || status === 304 || status < 200;
    this.head = head;
    return this;
  }

  private field(head: http2.OutgoingHttpHeaders, name: string, value: string): void {
    const lower = name.toLowerCase();
    if (RESPONSE_DROP.has(lower)) return;
    if (lower === 'content-length') this.hasLength = true;
    const prev = head[lower];
    if (prev === undefined) head[lower] = value;
    else if (SINGLE.has(lower)) return;
    else if (Array.isArray(prev)) prev.push(value);
    else head[lower] = [String(prev), value];
  }

  /** Sends the head; `endStream`: nothing follows it. */
  private respond(endStream: boolean, wantTrailers: boolean): boolean {
    this.responded = true;
    const stream = this.stream;
    if (stream.destroyed || stream.closed) return false;
    try {
      stream.respond(this.head, { endStream, waitForTrailers: wantTrailers && !endStream });
    } catch {
      this.destroy();
      return false;
    }
    this.head = undefined;
    if (wantTrailers && !endStream) stream.once('wantTrailers', this.sendTrailers);
    return true;
  }

  private readonly sendTrailers = (): void => {
    const t = this.trailers;
    const out: http2.OutgoingHttpHeaders = {};
    if (t) for (let i = 0; i < t.length; i += 2) this.field(out, t[i]!, t[i + 1]!);
    try {
      this.stream.sendTrailers(out);
    } catch {
      this.stream.close(H2.NGHTTP2_INTERNAL_ERROR);
    }
  };

  writeInformational(status: number, _text: string, headers: string[]): void {
    if (this.headersSent || this.destroyed || status === 101) return;
    const head: http2.OutgoingHttpHeaders = { ':status': status };
    for (let i = 0; i < headers.length; i += 2) this.field(head, headers[i]!, headers[i + 1]!);
    try {
      this.stream.additionalHeaders(head);
    } catch {
      // a closed stream: its 'close' tells the proxy
    }
  }

  write(chunk: Buffer): boolean {
    if (this.ended || this.destroyed) return false;
    if (!this.headersSent) this.writeHead(200, {});
    if (!this.responded && !this.respond(false, !this.hasLength && !this.noBody)) return false;
    if (this.noBody || chunk.length === 0) return true;
    const ok = this.stream.write(chunk);
    if (!ok && !this.awaitingDrain) {
      this.awaitingDrain = true;
      this.stream.once('drain', this.onDrain);
    }
    return ok;
  }

  private readonly onDrain = (): void => {
    this.awaitingDrain = false;
    this.emit('drain');
  };

  end(chunk?: Buffer | string, trailers?: string[]): this {
    if (this.ended || this.destroyed) return this;
    if (!this.headersSent) this.writeHead(200, {});
    this.ended = true;
    const data = chunk === undefined || chunk.length === 0 || this.noBody ? undefined : chunk;
    if (trailers && trailers.length > 0 && !this.noBody) this.trailers = trailers;
    if (!this.responded) {
      const last = data === undefined && this.trailers === undefined;
      if (!this.respond(last, this.trailers !== undefined)) return this;
      if (last) return this;
    }
    if (this.stream.writableEnded) return this;
    if (data === undefined) this.stream.end();
    else this.stream.end(data);
    return this;
  }

  switchProtocols(): undefined {
    return undefined;
  }

  destroy(_err?: Error): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.cut = true;
    if (!this.stream.closed) this.stream.close(H2.NGHTTP2_INTERNAL_ERROR);
  }

  /** The stream closed: a response not ended by then never will be ('close' for the proxy). */
  closed(): void {
    if (this.ended) return;
    this.destroyed = true;
    this.emit('close');
  }
}

/**
 * Reads a plain connection's first bytes until they are, or cannot be, the HTTP/2 preface; then gives the
 * socket back paused with those bytes unshifted: `then(true)` for h2c, `then(false)` for HTTP/1.1. A
 * connection that sends nothing within `timeoutMs` (client_header_timeout), or closes first, is closed.
 */
export function sniffPreface(socket: net.Socket, timeoutMs: number, then: (h2: boolean) => void): void {
  let got: Buffer | undefined;
  const timer = timeoutMs > 0 ? setTimeout(() => socket.destroy(), timeoutMs) : undefined;
  const done = (): void => {
    if (timer) clearTimeout(timer);
    socket.removeListener('data', onData);
    socket.removeListener('end', onEnd);
    socket.removeListener('error', onError);
  };
  // Until the connection is handed on, nobody else listens for its errors: a client's reset (ECONNRESET)
  // with no listener would be an uncaught exception that ends the worker.
  const onError = (): void => {
    done();
    socket.destroy();
  };
  const onData = (chunk: Buffer): void => {
    got = got === undefined ? chunk : Buffer.concat([got, chunk]);
    const n = Math.min(got.length, PREFACE.length);
    const match = got.compare(PREFACE, 0, n, 0, n) === 0;
    if (match && got.length < PREFACE.length) return;
    done();
    socket.pause();
    socket.unshift(got);
    then(match);
  };
  const onEnd = (): void => {
    done();
    socket.destroy();
  };
  socket.on('data', onData);
  socket.once('end', onEnd);
  socket.on('error', onError);
  socket.once('close', () => timer && clearTimeout(timer));
  socket.resume();
}
