// HTTP/2 from clients (RFC 9113) on an http listener with `http2 = true`: h2-session.ts does the framing,
// HPACK, flow control and the protocol's own checks; each stream becomes an HttpRequest and HttpResponse
// (exchange.ts) that the listener routes, limits and forwards exactly as an HTTP/1.1 request.
//
// Connections come from the listener, never from a socket of this server's own: a TLS connection whose
// ALPN chose "h2" once lb's handshake is done, or a plain one whose first bytes are the connection preface
// (h2c with prior knowledge, RFC 9113 §3.3; `sniffPreface`), read after a PROXY header if the listener takes
// one. The session reads what is already buffered on the socket first.
//
// Mapping (RFC 9113 §8.3): :method, :path and :authority become the method, target and Host (a Host field
// that disagrees with :authority makes the request malformed: §8.3.1, answered 400); cookie crumbs are
// joined with "; " (§8.2.3). The session refuses upper-case or non-token names, NUL/CR/LF in values,
// connection-specific fields, a TE other than "trailers", bad pseudo-header sets and a Content-Length the
// DATA frames contradict (stream error PROTOCOL_ERROR, counted and logged as 400) before a stream reaches
// lb. Responses: names lower-cased, connection-specific fields dropped (§8.2.2); a response may end with the
// backend's trailers.
//
// Limits: SETTINGS_MAX_CONCURRENT_STREAMS, SETTINGS_INITIAL_WINDOW_SIZE (stream and connection) from the
// listener; SETTINGS_MAX_HEADER_LIST_SIZE is its max_header_size (the HTTP/1.1 head bound; a larger list is
// answered 431). Rapid reset (CVE-2023-44487): a connection whose client has reset more streams that lb had
// not finished answering than resetLimit(), and more than lb answered to the end on it, gets GOAWAY
// ENHANCE_YOUR_CALM and is closed, counted and logged by the listener. Counts, not rates, as HAProxy's glitch
// counter: a worker slowed down by the flood itself still stops it; a long-lived connection whose client
// cancels some of its streams (a browser) stays. h2-session.ts bounds the other floods.

import type net from 'node:net';
import { Readable } from 'node:stream';
import { OnceEvents, type HttpRequest, type HttpResponse } from './exchange.js';
import { CHUNKED, NO_BODY } from './http-server.js';
import { ERR, H2Session, PREFACE, type H2Stream, type RequestHead } from './h2-session.js';
import type { Http2Config } from '../../config/model.js';

/** A client that reset more unfinished streams than this, and than it was answered, is flooding. */
export function resetLimit(maxConcurrentStreams: number): number {
  return Math.max(200, 2 * maxConcurrentStreams);
}

const ignore = (): void => {};

/** Fields that are connection-specific in HTTP/2 (RFC 9113 §8.2.2), never sent to an h2 client. */
const RESPONSE_DROP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'http2-settings']);

export interface H2Handlers {
  request(req: H2Request, res: H2Response): void;
  /** A client's connection closed for flooding resets (GOAWAY ENHANCE_YOUR_CALM). */
  flood(socket: net.Socket, resets: number): void;
  /** A request refused before it became one: malformed (400, the stream reset) or too large (431). */
  malformed(socket: net.Socket, status: number, reason: string): void;
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
  /** When `open` last went to 0 (idle_timeout). */
  idleSince = Date.now();
  timer: NodeJS.Timeout | undefined;
  session!: H2Session;
  constructor(readonly socket: net.Socket) {}
}

export class H2Front {
  private readonly conns = new Set<H2Conn>();
  draining = false;

  constructor(
    private limits: H2Limits,
    private readonly handlers: H2Handlers,
  ) {}

  /** A connection that speaks HTTP/2: TLS with ALPN h2, or plain with the preface (possibly buffered). */
  readonly accept = (socket: net.Socket): void => {
    if (socket.destroyed) return;
    const limits = this.limits;
    const conn = new H2Conn(socket);
    const front = this;
    conn.session = new H2Session(
      socket,
      { maxConcurrentStreams: limits.maxConcurrentStreams, initialWindowSize: limits.initialWindowSize, maxHeaderListSize: limits.maxHeaderListSize },
      {
        stream(s, head) {
          front.onStream(conn, s, head);
        },
        malformed(reason, status) {
          front.handlers.malformed(socket, status, reason);
        },
        close() {
          front.conns.delete(conn);
          if (conn.timer) clearTimeout(conn.timer);
        },
      },
    );
    this.conns.add(conn);
    const idle = limits.idleTimeoutMs;
    if (idle > 0) {
      const check = (): void => {
        if (conn.session.destroyed) return;
        const left = conn.open === 0 ? idle - (Date.now() - conn.idleSince) : idle;
        if (left <= 0) conn.session.close();
        else conn.timer = setTimeout(check, left);
      };
      conn.timer = setTimeout(check, idle);
    }
    conn.session.start();
    if (this.draining) conn.session.close();
  };

  private onStream(conn: H2Conn, s: H2Stream, head: RequestHead): void {
    const req = new H2Request(conn.socket, s, head);
    const res = new H2Response(s, req, conn);
    s.user = res;
    s.onClose = this.onStreamClose;
    conn.open++;
    this.handlers.request(req, res);
  }

  private readonly onStreamClose = (s: H2Stream): void => {
    const res = s.user as H2Response;
    const conn = res.conn;
    if (--conn.open === 0) conn.idleSince = Date.now();
    if (res.ended && !res.destroyed) conn.completed++;
    else if (!res.cut && s.resetByPeer) this.clientReset(conn);
    res.req.body?.streamClosed(s.code);
    res.closed();
  };

  /** A stream the client reset before lb finished answering it (see the header: rapid reset). */
  clientReset(conn: H2Conn): void {
    const session = conn.session;
    if (conn.flooded || session.destroyed || session.goingAway) return;
    if (++conn.resets <= resetLimit(this.limits.maxConcurrentStreams) || conn.resets <= conn.completed) return;
    conn.flooded = true;
    session.connectionError(ERR.ENHANCE_YOUR_CALM);
    this.handlers.flood(conn.socket, conn.resets);
  }

  /** Reloaded limits: new connections get the new SETTINGS, open ones keep theirs. */
  update(limits: H2Limits): void {
    this.limits = limits;
  }

  /** GOAWAY to every connection: streams already open are answered, then the connection closes. */
  drain(): void {
    this.draining = true;
    for (const c of this.conns) c.session.close();
  }

  closeAllConnections(): void {
    for (const c of [...this.conns]) {
      c.session.destroy();
      c.socket.destroy();
    }
  }
}

/**
 * An HTTP/2 request body: the stream's DATA, read as the backend accepts it; the stream's window is given
 * back as it is read (h2-session.ts `consumed`), so a slow backend holds the client at the window.
 */
export class H2Body extends Readable {
  trailers: string[] | undefined;
  /** DATA bytes received (the access log's bytes in). */
  bytes = 0;
  /** Bytes pushed while the reader wanted no more: given back when it reads again. */
  private held = 0;

  constructor(private readonly stream: H2Stream) {
    super();
    stream.onData = this.onData;
    stream.onEnd = this.onEnd;
    // A stream can close before the proxy reads its body (its HEADERS and a DATA frame that breaks it came
    // in one read): the body's error must not be an uncaught exception. The response's 'close' tells the proxy.
    this.on('error', ignore);
  }

  private readonly onData = (chunk: Buffer): void => {
    this.bytes += chunk.length;
    if (this.push(chunk)) this.stream.session.consumed(this.stream, chunk.length);
    else this.held += chunk.length;
  };

  private readonly onEnd = (trailers: string[] | undefined): void => {
    if (trailers !== undefined && trailers.length > 0) this.trailers = trailers;
    this.push(null);
  };

  override _read(): void {
    if (this.held === 0) return;
    const n = this.held;
    this.held = 0;
    this.stream.session.consumed(this.stream, n);
  }

  /** The stream closed: a body not ended by then never will be. */
  streamClosed(code: number): void {
    if (this.readableEnded || this.destroyed || this.stream.remoteEnded) return;
    this.destroy(new Error(`HTTP/2 stream closed (error code ${code})`));
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
    readonly stream: H2Stream,
    head: RequestHead,
  ) {
    this.method = head.method;
    this.url = head.path;
    const authority = head.authority;
    const raw = head.fields;
    const out: string[] = authority !== undefined ? ['host', authority] : [];
    let cookie: string | undefined;
    let conflict = false;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i]!;
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
      out.push(name, value);
    }
    if (cookie !== undefined) out.push('cookie', cookie);
    this.rawHeaders = out;
    this.conflictingHost = conflict;
    // The session checked Content-Length's syntax and checks it against the DATA frames.
    const declared = head.contentLength;
    if (stream.remoteEnded) {
      this.framing = NO_BODY;
      this.body = null;
    } else if (declared === 0) {
      this.framing = 0;
      this.body = null;
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

/** One stream's response (its 'drain' and 'close' listeners in OnceEvents). */
export class H2Response extends OnceEvents implements HttpResponse {
  headersSent = false;
  destroyed = false;
  ended = false;
  shouldKeepAlive = true;
  transferCodings: string | undefined;
  /** lb reset the stream itself (a response cut short): not the client's reset. */
  cut = false;
  private status = 200;
  private fields: string[] = [];
  private responded = false;
  private noBody = false;

  constructor(
    readonly stream: H2Stream,
    readonly req: H2Request,
    /** The connection's state (h2-front's own; open streams, resets). */
    readonly conn: H2Conn,
  ) {
    super();
    stream.onDrain = this.onDrain;
  }

  writeHead(status: number, reason?: string | Record<string, string | number>, list?: string[]): this {
    if (this.headersSent) return this;
    this.headersSent = true;
    this.status = status;
    const out = this.fields;
    if (typeof reason === 'string') {
      if (list) for (let i = 0; i < list.length; i += 2) field(out, list[i]!, list[i + 1]!);
    } else if (reason) {
      for (const k of Object.keys(reason)) field(out, k, String(reason[k]));
    }
    this.noBody = this.req.method === 'HEAD' || status === 204 || status === 304 || status < 200;
    return this;
  }

  /** Sends the head; `endStream`: nothing follows it. */
  private respond(endStream: boolean): boolean {
    this.responded = true;
    const s = this.stream;
    if (s.closed) return false;
    s.session.respond(s, this.status, this.fields, endStream);
    return true;
  }

  writeInformational(status: number, _text: string, headers: string[]): void {
    if (this.headersSent || this.destroyed || status === 101) return;
    const out: string[] = [];
    for (let i = 0; i < headers.length; i += 2) field(out, headers[i]!, headers[i + 1]!);
    this.stream.session.informational(this.stream, status, out);
  }

  write(chunk: Buffer): boolean {
    if (this.ended || this.destroyed) return false;
    if (!this.headersSent) this.writeHead(200, {});
    if (!this.responded && !this.respond(false)) return false;
    if (this.noBody || chunk.length === 0) return true;
    return this.stream.session.write(this.stream, chunk, false);
  }

  private readonly onDrain = (): void => {
    this.fire('drain');
  };

  end(chunk?: Buffer | string, trailers?: string[]): this {
    if (this.ended || this.destroyed) return this;
    if (!this.headersSent) this.writeHead(200, {});
    this.ended = true;
    const data = chunk === undefined || chunk.length === 0 || this.noBody ? undefined : typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    const t = trailers && trailers.length > 0 && !this.noBody ? trailers : undefined;
    const s = this.stream;
    if (!this.responded) {
      const last = data === undefined && t === undefined;
      if (!this.respond(last) || last) return this;
    }
    if (t === undefined) {
      s.session.write(s, data, true);
      return this;
    }
    if (data !== undefined) s.session.write(s, data, false);
    const out: string[] = [];
    for (let i = 0; i < t.length; i += 2) field(out, t[i]!, t[i + 1]!);
    s.session.trailers(s, out);
    return this;
  }

  switchProtocols(): undefined {
    return undefined;
  }

  destroy(_err?: Error): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.cut = true;
    if (!this.stream.closed) this.stream.session.resetStream(this.stream.id, ERR.INTERNAL_ERROR);
  }

  /** The stream closed: a response not ended by then never will be ('close' for the proxy). */
  closed(): void {
    if (this.ended) return;
    this.destroyed = true;
    this.fire('close');
  }
}

/** A response field for an HTTP/2 head: lower-cased, connection-specific ones dropped (RFC 9113 §8.2.2). */
function field(out: string[], name: string, value: string): void {
  const lower = name.toLowerCase();
  if (RESPONSE_DROP.has(lower)) return;
  out.push(lower, value);
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
