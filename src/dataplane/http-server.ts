// lb's HTTP/1.1 server side: requests parsed by Node's llhttp binding in strict mode (the parser and mode
// node:http's server uses), reading the socket's handle directly; responses written as one head string
// plus body chunks, in one writev where they are ready together.
//
// Why not node:http's server: it builds an IncomingMessage stream, a ServerResponse stream and their events
// for every request, and validates again response heads that llhttp has already checked. On the proxy
// rig's load (wrk -c64, /proc), lb with node:http in front forwarded 36-37k req/s at 13-14 µs of user CPU
// per request; with this server, 47-49k at 8 µs (README, Benchmarks).
//
// What it keeps from node:http (and what the listener relies on):
// - limits: the head is bounded by `maxHeaderSize` (llhttp: HPE_HEADER_OVERFLOW); HTTP/1.1 without Host
//   and Expect other than 100-continue are the listener's to refuse;
// - client_header_timeout from the connection's start or a request's first byte to the end of its head,
//   then an error with code ERR_HTTP_REQUEST_TIMEOUT to `clientError`; idle_timeout between requests
//   (the connection is closed silently);
// - pipelining: requests are parsed ahead (reading pauses at 32 unanswered, and past 128 the connection
//   takes no more) but handed over one at a time: a request is handed over only once the response to the
//   one before it is complete, so that it never reaches a backend ahead of an earlier unsafe request
//   (RFC 9112 §9.3.2; HAProxy and NGINX do the same);
// - `Expect: 100-continue` (HTTP/1.1) answered with 100 Continue when the request's response is next;
// - response framing: Content-Length as given; otherwise chunked to HTTP/1.1 clients and close-delimited
//   to HTTP/1.0 ones; no body for HEAD, 204 and 304; `Connection: keep-alive` and `Keep-Alive:
//   timeout=N` on persistent responses, `Connection: close` on the last one;
// - Upgrade: an Upgrade request is a request like any other (`req.upgrade`); parsing stops after it, and
//   the connection becomes a tunnel only if its response is a 101 (`res.switchProtocols`); any other
//   response is a normal one, after which the bytes held back are parsed as the next request;
// - CONNECT: the head is parsed, the parser lets go of the socket (the listener refuses it);
// - framing: `req.framing` is how the parser delimited the body (its Content-Length, or chunked), the
//   one fact a forwarder may frame the body it sends with; request trailers come as `body.trailers`;
// - 1xx responses (writeInformational) to HTTP/1.1 clients; response trailers on chunked responses;
// - an early response (the request body not read to its end): `Connection: close`, then a lingering
//   close (RFC 9112 §9.6): the rest of the body is read and dropped for up to LINGER_MS before closing;
// - drain (a listener stopping): no new connection is idle forever; each response carries
//   `Connection: close`, and a connection between requests gets DRAIN_IDLE_MS to send one more;
// - a client half-close (FIN) after complete requests: their responses are still sent, then the
//   connection closes (HAProxy's default; node:http's default aborts them).
// Differences: `res` emits 'close' only when the connection closes before the response is finished, and
// `req.body` is a Readable only when the request has a body (Content-Length > 0 or Transfer-Encoding).

import net from 'node:net';
import { Readable } from 'node:stream';
import { STATUS_CODES } from 'node:http';
import { Deadline } from './deadline.js';
import { OnceEvents } from './exchange.js';
import { writeLatin1 } from '../node-internals/socket-write.js';
import {
  consumeSocket,
  HTTPParser,
  K_BODY,
  K_EXECUTE,
  K_HEADERS,
  K_HEADERS_COMPLETE,
  K_MESSAGE_BEGIN,
  K_MESSAGE_COMPLETE,
  METHODS,
  startReading,
  stopReading,
  type ParserInstance,
  type StreamHandle,
} from '../node-internals/llhttp.js';

export interface FrontOptions {
  /** bytes of request head (llhttp's limit) */
  maxHeaderSize: number;
  /** client_header_timeout in ms; 0: none */
  headersTimeoutMs: number;
  /** idle_timeout in ms between requests on a connection; 0: none */
  keepAliveTimeoutMs: number;
}

export type ClientError = Error & { code?: string };

export interface FrontHandlers {
  /** A request, Upgrade requests included (`req.upgrade`); called for one request at a time per connection. */
  request(req: FrontRequest, res: FrontResponse): void;
  connect(req: FrontRequest, socket: net.Socket): void;
  /** A malformed request or a head timeout; `active` is the response being written, if any. */
  clientError(err: ClientError, socket: net.Socket, active: FrontResponse | undefined): void;
}

/** Responses held behind an earlier one (pipelining) make write() return false past this many bytes. */
const HELD_HIGH_WATER = 64 * 1024;
/**
 * A body chunk up to this size goes out in one string with the head (or chunk-size line) around it: one
 * write of a latin1 string (Node copies it into a 16 KiB stack buffer and tries the write at once), rather
 * than cork, three buffered writes and a writev built from them. Latin1 maps each byte to one character
 * and back, so the bytes sent are the body's.
 */
const JOIN_MAX = 8 * 1024;
/** Reading stops while this many requests on a connection are unanswered (resumes as they are answered). */
const PIPELINE_PAUSE = 32;
/**
 * More unanswered requests than this (parsed from reads already made) are not taken: the connection
 * closes after answering these, and the client retries the rest (RFC 9112 §9.3.2). Bounds the memory and
 * backend work one connection can ask for at once.
 */
const PIPELINE_MAX = 128;
const CONTINUE = /(?:^|\W)100-continue(?:$|\W)/i;
/** A lingering close reads and drops what the client still sends for this long (NGINX: lingering_timeout 5s). */
const LINGER_MS = 2000;
/** While draining, a connection between requests is closed after this long without a new one. */
export const DRAIN_IDLE_MS = 1000;
/** `req.framing` values besides a Content-Length (>= 0). */
export const NO_BODY = -1;
export const CHUNKED = -2;

/** Raised by the head timer: the listener answers 408, as it did to node:http's error of the same code. */
function headTimeout(): ClientError {
  return Object.assign(new Error('request head timeout'), { code: 'ERR_HTTP_REQUEST_TIMEOUT' });
}

export class FrontServer {
  private readonly connections = new Set<FrontConnection>();

  constructor(
    readonly options: FrontOptions,
    readonly handlers: FrontHandlers,
  ) {}

  /** A new client connection (plain, or TLS once its handshake is done). */
  readonly accept = (socket: net.Socket): void => {
    if (socket.destroyed) return;
    this.connections.add(new FrontConnection(this, socket));
  };

  /**
   * A connection whose first bytes someone else has read (a PROXY protocol header): the socket is paused
   * and holds, unshifted, what came after them.
   */
  readonly acceptRead = (socket: net.Socket): void => {
    if (socket.destroyed) return;
    const c = new FrontConnection(this, socket);
    this.connections.add(c);
    c.takeBuffered();
  };

  /** Set by drain(): every response says `Connection: close`; idle connections close after DRAIN_IDLE_MS. */
  draining = false;

  forget(conn: FrontConnection): void {
    this.connections.delete(conn);
  }

  /**
   * Stops keeping connections alive without dropping a request: a request already received (or still in
   * the kernel's buffer) is answered with `Connection: close`; a connection between requests is closed
   * only after DRAIN_IDLE_MS (or its idle_timeout, if shorter) without a new request.
   */
  drain(): void {
    this.draining = true;
    for (const c of this.connections) c.drain();
  }

  closeAllConnections(): void {
    for (const c of this.connections) c.socket.destroy();
  }
}

export class FrontRequest {
  private lower: Record<string, string> | undefined;

  constructor(
    readonly socket: net.Socket,
    readonly method: string,
    readonly url: string,
    readonly httpVersionMajor: number,
    readonly httpVersionMinor: number,
    /** flat name, value list as received */
    readonly rawHeaders: string[],
    /** the body as a stream; null when the head announces none */
    readonly body: RequestBody | null,
    /** how the parser delimits the body: its Content-Length (>= 0), CHUNKED, or NO_BODY */
    readonly framing: number,
    /** an Upgrade request (Connection: upgrade): a tunnel if, and only if, it is answered 101 */
    readonly upgrade: boolean,
  ) {}

  /** Header values by lower-cased name; repeated fields joined with ", " (Cookie with "; "). */
  get headers(): Record<string, string> {
    if (this.lower) return this.lower;
    const out: Record<string, string> = Object.create(null) as Record<string, string>;
    const raw = this.rawHeaders;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i]!.toLowerCase();
      const prev = out[name];
      out[name] = prev === undefined ? raw[i + 1]! : `${prev}${name === 'cookie' ? '; ' : ', '}${raw[i + 1]!}`;
    }
    return (this.lower = out);
  }

  /** Whether any of the body has been read (false for a request without one). */
  get readableDidRead(): boolean {
    return this.body ? this.body.readableDidRead : false;
  }
}

/** A request body: chunks as llhttp parses them; reading the socket stops while the stream is full. */
export class RequestBody extends Readable {
  /** Trailer fields of a chunked body (flat name, value list), set before the end of the stream. */
  trailers: string[] | undefined;

  constructor(private readonly conn: FrontConnection) {
    super();
  }

  override _read(): void {
    this.conn.resumeReading();
  }
}

/** One response (its 'drain' and 'close' listeners in OnceEvents). */
export class FrontResponse extends OnceEvents {
  headersSent = false;
  destroyed = false;
  /** end() was called */
  ended = false;
  /** false: the connection closes after this response (`Connection: close`) */
  shouldKeepAlive: boolean;
  /** 100 Continue is owed to the client (sent when this response is next, unless its head went first) */
  continueOwed = false;
  /** A 100 Continue went out for this request (a backend's own 100 is then not passed on again). */
  continueSent = false;
  /** Transfer codings other than chunked that the body carries (a backend's `gzip`), kept in front of it. */
  transferCodings: string | undefined;
  /** Handed to the listener (one request at a time per connection). */
  dispatched = false;
  private head: string | undefined;
  private chunked = false;
  private noBody = false;
  /** Output held while an earlier response on the connection is unfinished. */
  private held: (string | Buffer)[] | undefined;
  private heldBytes = 0;
  needDrain = false;

  constructor(
    private readonly conn: FrontConnection,
    readonly req: FrontRequest,
    keepAlive: boolean,
  ) {
    super();
    this.shouldKeepAlive = keepAlive;
  }

  /** writeHead(status, reason, [name, value, ...]) or writeHead(status, { name: value }). */
  writeHead(status: number, reason?: string | Record<string, string | number>, list?: string[]): this {
    if (this.headersSent) return this;
    this.headersSent = true;
    let text: string;
    let headers: string[];
    if (typeof reason === 'string') {
      text = reason;
      headers = list ?? [];
    } else {
      text = STATUS_CODES[status] ?? 'Unknown';
      headers = [];
      if (reason) for (const k of Object.keys(reason)) headers.push(k, String(reason[k]));
    }
    let head = `HTTP/1.1 ${status} ${text}\r\n`;
    let length = false;
    for (let i = 0; i < headers.length; i += 2) {
      const name = headers[i]!;
      const value = headers[i + 1]!;
      const n = name.length;
      if (n === 14 && name.toLowerCase() === 'content-length') length = true;
      else if (n === 10 && name.toLowerCase() === 'connection') {
        if (value.toLowerCase() === 'close') this.shouldKeepAlive = false;
        continue;
      }
      head += `${name}: ${value}\r\n`;
    }
    const req = this.req;
    this.noBody = req.method === 'HEAD' || status === 204 || status === 304 || (status >= 100 && status < 200);
    if (!this.noBody && !length) {
      if (req.httpVersionMinor >= 1) {
        this.chunked = true;
        head += this.transferCodings ? `Transfer-Encoding: ${this.transferCodings}, chunked\r\n` : 'Transfer-Encoding: chunked\r\n';
      } else {
        this.shouldKeepAlive = false; // the body ends with the connection
      }
    }
    const conn = this.conn;
    if (conn.server.draining) conn.stopRequests();
    if (!this.shouldKeepAlive || (conn.noMoreRequests && conn.isLast(this))) {
      this.shouldKeepAlive = false;
      conn.stopRequests();
      head += 'Connection: close\r\n\r\n';
    } else {
      const idle = conn.server.options.keepAliveTimeoutMs;
      head += idle > 0 ? `Connection: keep-alive\r\nKeep-Alive: timeout=${Math.floor(idle / 1000)}\r\n\r\n` : 'Connection: keep-alive\r\n\r\n';
    }
    this.continueOwed = false;
    this.head = head;
    return this;
  }

  /**
   * An interim (1xx) response, written at once; before the final head only, and only to HTTP/1.1 clients
   * (RFC 9110 §15.2: a proxy MUST forward 1xx unless the client is HTTP/1.0). A 100 after lb's own is dropped.
   */
  writeInformational(status: number, text: string, headers: string[]): void {
    if (this.headersSent || this.destroyed || this.req.httpVersionMinor < 1) return;
    if (status === 100) {
      if (this.continueSent) return;
      this.continueSent = true;
      this.continueOwed = false;
    }
    let head = `HTTP/1.1 ${status} ${text}\r\n`;
    for (let i = 0; i < headers.length; i += 2) head += `${headers[i]}: ${headers[i + 1]}\r\n`;
    this.out(`${head}\r\n`, undefined);
  }

  write(chunk: Buffer): boolean {
    if (this.ended || this.destroyed) return false;
    if (!this.headersSent) this.writeHead(200, {});
    if (this.noBody || chunk.length === 0) return this.out(undefined, undefined);
    if (this.chunked) return this.out(`${chunk.length.toString(16)}\r\n`, chunk, '\r\n');
    return this.out(undefined, chunk);
  }

  /** Ends the response; `trailers` (flat name, value list) go out when the body is chunked, else are dropped. */
  end(chunk?: Buffer | string, trailers?: string[]): this {
    if (this.ended || this.destroyed) return this;
    if (!this.headersSent) this.writeHead(200, {});
    this.ended = true;
    const data = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    let last: string | undefined;
    if (this.chunked && !this.noBody) {
      last = '0\r\n';
      if (trailers) for (let i = 0; i < trailers.length; i += 2) last += `${trailers[i]}: ${trailers[i + 1]}\r\n`;
      last += '\r\n';
    }
    if (this.noBody || !data || data.length === 0) this.out(last, undefined);
    else if (this.chunked) this.out(`${data.length.toString(16)}\r\n`, data, `\r\n${last!}`);
    else this.out(undefined, data);
    if (this.conn.active === this) this.conn.responseEnded(this);
    return this;
  }

  /**
   * A 101 to this Upgrade request: writes the head as given (no framing, no Connection rewriting) and
   * hands the client socket over, with the bytes the client sent after the request. Undefined when the
   * connection cannot switch (not an Upgrade request, its message not complete, or not the active one).
   */
  switchProtocols(text: string, headers: string[]): { socket: net.Socket; head: Buffer } | undefined {
    const conn = this.conn;
    if (!this.req.upgrade || this.headersSent || this.destroyed || conn.active !== this || !conn.isHeldBy(this.req)) return undefined;
    this.headersSent = true;
    this.ended = true;
    let head = `HTTP/1.1 101 ${text}\r\n`;
    for (let i = 0; i < headers.length; i += 2) head += `${headers[i]}: ${headers[i + 1]}\r\n`;
    const socket = conn.socket;
    socket.write(`${head}\r\n`, 'latin1');
    return { socket, head: conn.handOver() };
  }

  /** Ends the client connection now (a response cut short must not look complete). */
  destroy(err?: Error): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.conn.socket.destroy(err);
  }

  /** Writes the head (if not out yet), then `pre`, `data` and `post`, as one write where possible. */
  private out(pre: string | undefined, data: Buffer | undefined, post?: string): boolean {
    const head = this.head;
    this.head = undefined;
    const first = head === undefined ? pre : pre === undefined ? head : head + pre;
    if (this.conn.active !== this) {
      const held = (this.held ??= []);
      if (first !== undefined) held.push(first);
      if (data) held.push(data);
      if (post !== undefined) held.push(post);
      this.heldBytes += (first?.length ?? 0) + (data?.length ?? 0);
      if (this.heldBytes < HELD_HIGH_WATER) return true;
      this.needDrain = true;
      return false;
    }
    const s = this.conn.socket;
    if (!s.writable) return false;
    let ok: boolean;
    if (data === undefined) {
      ok = first === undefined ? true : writeLatin1(s, first);
    } else if (first === undefined && post === undefined) {
      ok = s.write(data);
    } else if (data.length <= JOIN_MAX) {
      const body = data.toString('latin1');
      ok = writeLatin1(s, first === undefined ? body + post! : post === undefined ? first + body : first + body + post);
    } else {
      s.cork();
      if (first !== undefined) s.write(first, 'latin1');
      s.write(data);
      if (post !== undefined) s.write(post, 'latin1');
      s.uncork();
      ok = s.writableLength < s.writableHighWaterMark;
    }
    if (!ok) this.needDrain = true;
    return ok;
  }

  /** This response's turn on the connection: what it held goes out (and 'drain' if its writer waits). */
  activate(): void {
    const s = this.conn.socket;
    if (this.continueOwed && !this.headersSent) {
      s.write('HTTP/1.1 100 Continue\r\n\r\n', 'latin1');
      this.continueSent = true;
    }
    this.continueOwed = false;
    const held = this.held;
    if (held) {
      this.held = undefined;
      this.heldBytes = 0;
      if (s.writable) {
        s.cork();
        for (const part of held) typeof part === 'string' ? s.write(part, 'latin1') : s.write(part);
        s.uncork();
      }
    }
    if (this.ended) this.conn.responseEnded(this);
    else if (this.needDrain && s.writableLength < s.writableHighWaterMark) this.drained();
  }

  drained(): void {
    if (!this.needDrain) return;
    this.needDrain = false;
    this.fire('drain');
  }

  /** The connection closed before this response was finished. */
  aborted(): void {
    this.destroyed = true;
    this.fire('close');
  }
}

export class FrontConnection {
  private readonly parser: ParserInstance;
  private readonly handle: StreamHandle | undefined;
  /** Responses in request order; the first is the one being written (and the only one handed over). */
  private readonly queue: FrontResponse[] = [];
  /** The request whose body is being parsed. */
  private current: FrontRequest | null = null;
  /** A message has begun and its head is not complete. */
  private inHead = false;
  private slowHeaders: string[] | undefined;
  private slowUrl = '';
  private connectReq: FrontRequest | undefined;
  /** The Upgrade request whose end stops the parser (llhttp pauses after an upgrade message). */
  private upgradeReq: FrontRequest | undefined;
  /** The parser stopped after an Upgrade request: nothing more is parsed until its response is known. */
  private holding = false;
  /** The request whose end stopped the parser (its response decides: tunnel, or parse on). */
  private heldBy: FrontRequest | undefined;
  /** The bytes read after the Upgrade request, not parsed (the tunnel's, or the next request's). */
  private rest: Buffer | undefined;
  /** client_header_timeout, armed when a head is awaited; when it fires with none awaited, nothing happens. */
  private readonly headTimer = new Deadline(() => this.onHeadTimeout());
  private awaitingHead = true;
  /** idle_timeout, the same way: armed when the connection falls idle. */
  private readonly idleTimer = new Deadline(() => this.onIdleTimeout());
  private awaitingRequest = false;
  private paused = false;
  /** No more requests are taken on this connection (a `Connection: close` exchange, a FIN, an error). */
  noMoreRequests = false;
  private failed = false;
  /** A malformed request behind complete ones: answered (400...) once their responses are out. */
  private pendingError: ClientError | undefined;
  private detached = false;
  /** Reading and dropping what the client still sends, before closing (see lingerClose). */
  private lingering = false;

  constructor(
    readonly server: FrontServer,
    readonly socket: net.Socket,
  ) {
    const p = (this.parser = new HTTPParser());
    p.initialize(HTTPParser.REQUEST, {}, server.options.maxHeaderSize, HTTPParser.kLenientNone);
    p[K_MESSAGE_BEGIN] = this.onMessageBegin;
    p[K_HEADERS] = this.onParserHeaders;
    p[K_HEADERS_COMPLETE] = this.onHeadersComplete;
    p[K_BODY] = this.onBody;
    p[K_MESSAGE_COMPLETE] = this.onMessageComplete;
    p[K_EXECUTE] = this.onExecute;
    socket.on('error', this.onSocketError);
    socket.on('close', this.onSocketClose);
    socket.on('end', this.onSocketEnd);
    socket.on('drain', this.onSocketDrain);
    this.handle = consumeSocket(p, socket);
    if (!this.handle) socket.on('data', this.onSocketData);
    this.headTimer.arm(server.options.headersTimeoutMs);
    if (server.draining) this.drain();
  }

  get active(): FrontResponse | undefined {
    return this.queue[0];
  }

  /** Parses what the paused socket's stream already holds (see FrontServer.acceptRead), then reads on. */
  takeBuffered(): void {
    const s = this.socket;
    // Without a consumed handle the 'data' listener is fed by resuming the stream.
    if (!this.handle) {
      s.resume();
      return;
    }
    // One read: what the stream holds comes as one buffer, parsed whole (as a read of the handle would be).
    const b = s.read() as Buffer | null;
    if (b !== null) this.onSocketData(b);
    if (!this.paused && !s.destroyed) startReading(s, this.handle);
  }

  /** Between requests: nothing being received, nothing being answered. */
  get idle(): boolean {
    return !this.detached && this.queue.length === 0 && this.current === null && !this.inHead;
  }

  isLast(res: FrontResponse): boolean {
    return this.queue[this.queue.length - 1] === res;
  }

  /** Parses no further request (the current body, if any, is still read). */
  stopRequests(): void {
    this.noMoreRequests = true;
    if (this.current === null) this.pauseReading();
  }

  /** The server drains: an idle connection gets DRAIN_IDLE_MS for one more request (see FrontServer.drain). */
  drain(): void {
    if (this.awaitingRequest && this.idle) this.idleTimer.arm(this.idleMs());
  }

  private idleMs(): number {
    const ms = this.server.options.keepAliveTimeoutMs;
    if (!this.server.draining) return ms;
    return ms > 0 ? Math.min(ms, DRAIN_IDLE_MS) : DRAIN_IDLE_MS;
  }

  private onHeadTimeout(): void {
    if (this.awaitingHead && !this.socket.destroyed && !this.detached) this.fail(headTimeout());
  }

  /**
   * Closes a connection idle for its idle_timeout (DRAIN_IDLE_MS while draining). Not at once: timers run
   * before the event loop polls sockets, so a request that arrived while the process was busy (a loaded
   * machine, a long GC) would still be in the kernel's buffer and be lost with the connection. setImmediate
   * runs after this iteration's poll, which reads it; a request begun by then keeps the connection.
   */
  private onIdleTimeout(): void {
    if (this.awaitingRequest && this.idle) setImmediate(this.closeIfIdle);
  }

  private readonly closeIfIdle = (): void => {
    if (this.awaitingRequest && this.idle) this.socket.destroy();
  };

  private clearTimers(): void {
    this.headTimer.clear();
    this.idleTimer.clear();
    this.awaitingHead = false;
    this.awaitingRequest = false;
  }

  private readonly onMessageBegin = (): number => {
    if (this.noMoreRequests) return 0;
    this.inHead = true;
    this.awaitingRequest = false;
    this.awaitingHead = true;
    this.headTimer.arm(this.server.options.headersTimeoutMs);
    return 0;
  };

  private readonly onParserHeaders = (headers: string[], url: string): void => {
    (this.slowHeaders ??= []).push(...headers);
    // Trailers come with the request's url again (node's binding): only a head's url is the target.
    if (url && this.inHead) this.slowUrl += url;
  };

  private readonly onHeadersComplete = (
    major: number,
    minor: number,
    headers: string[] | undefined,
    method: number,
    url: string | undefined,
    _status: unknown,
    _reason: unknown,
    upgrade: boolean,
    keepAlive: boolean,
  ): number => {
    if (headers === undefined) {
      headers = this.slowHeaders ?? [];
      this.slowHeaders = undefined;
    }
    if (!url) {
      url = this.slowUrl;
      this.slowUrl = '';
    }
    this.inHead = false;
    this.awaitingHead = false;
    if (this.queue.length >= PIPELINE_MAX) this.stopRequests();
    // Not taken: its body (if any) is parsed and dropped, so that its bytes are not read as a request.
    if (this.noMoreRequests) return 0;
    const name = METHODS[method] ?? '';
    // The framing llhttp (strict) delimits this body with: one valid Content-Length, or Transfer-Encoding
    // ending in chunked (it refuses both together, and a request Transfer-Encoding not ending in chunked).
    let framing = NO_BODY;
    let expect: string | undefined;
    for (let i = 0; i < headers.length; i += 2) {
      const n = headers[i]!;
      const len = n.length;
      if (len === 14) {
        if (framing === NO_BODY && n.toLowerCase() === 'content-length') framing = Number(headers[i + 1]);
      } else if (len === 17) {
        if (n.toLowerCase() === 'transfer-encoding') framing = CHUNKED;
      } else if (len === 6 && n.toLowerCase() === 'expect') {
        expect = headers[i + 1];
      }
    }
    const socket = this.socket;
    if (upgrade && name === 'CONNECT') {
      this.connectReq = new FrontRequest(socket, name, url, major, minor, headers, null, NO_BODY, false);
      return 2; // no body: the bytes after the head belong to the tunnel asked for
    }
    const body = framing === CHUNKED || framing > 0 ? new RequestBody(this) : null;
    // RFC 9110 §7.8: a server MUST ignore Upgrade in an HTTP/1.0 request (llhttp still stops after it).
    const req = new FrontRequest(socket, name, url, major, minor, headers, body, framing, upgrade && minor >= 1);
    if (body) this.current = req;
    if (upgrade) this.upgradeReq = req;
    if (!keepAlive) this.noMoreRequests = true;
    const res = new FrontResponse(this, req, keepAlive);
    this.queue.push(res);
    if (this.queue.length >= PIPELINE_PAUSE) this.pauseReading();
    if (expect !== undefined && major === 1 && minor === 1) {
      if (!CONTINUE.test(expect)) {
        // RFC 9110 §10.1.1: an expectation the server cannot meet gets 417 (node:http does the same).
        res.dispatched = true;
        res.writeHead(417, { 'content-length': 0, connection: 'close' }).end();
        return 0;
      }
      if (body) res.continueOwed = true;
    }
    if (this.queue.length === 1) this.dispatch(res);
    return 0;
  };

  /** Hands a request over: the response before it is complete (one request at a time per connection). */
  private dispatch(res: FrontResponse): void {
    if (res.dispatched || res.destroyed) return;
    res.dispatched = true;
    if (res.continueOwed) res.activate();
    this.server.handlers.request(res.req, res);
  }

  private readonly onBody = (chunk: Buffer): void => {
    const body = this.current?.body;
    if (!body) return;
    if (!body.push(chunk)) this.pauseReading();
  };

  private readonly onMessageComplete = (): void => {
    const req = this.current;
    this.current = null;
    const trailers = this.slowHeaders;
    this.slowHeaders = undefined;
    // Node's binding passes the message's URL again with the trailers (node:http resets it here too).
    this.slowUrl = '';
    if (req?.body) {
      if (trailers && trailers.length > 0) req.body.trailers = trailers;
      req.body.push(null);
    }
    const up = this.upgradeReq;
    if (up !== undefined && (req === up || (req === null && up.body === null))) {
      // llhttp pauses here (HPE_PAUSED_UPGRADE): the bytes after this message are not parsed by it.
      this.upgradeReq = undefined;
      this.holding = true;
      this.heldBy = up;
    }
    if (this.noMoreRequests) this.pauseReading();
  };

  private readonly onExecute = (ret: number | Error): void => {
    this.afterExecute(ret, undefined);
  };

  private readonly onSocketData = (data: Buffer): void => {
    this.afterExecute(this.parser.execute(data), data);
  };

  /** After the parser took a read (`data`, or the handle's current buffer when it reads the handle itself). */
  private afterExecute(ret: number | Error, data: Buffer | undefined): void {
    if (ret instanceof Error) this.fail(ret);
    else if (this.connectReq) this.connectNow();
    else if (this.holding && this.rest === undefined) {
      this.rest = Buffer.from((data ?? this.parser.getCurrentBuffer()).subarray(ret));
      this.pauseReading();
    }
  }

  /** A CONNECT request: the parser lets go of the socket; the listener gets it. */
  private connectNow(): void {
    const req = this.connectReq!;
    this.connectReq = undefined;
    if (this.queue.length > 0) {
      // Pipelined behind unanswered requests: not served; the connection ends after them.
      this.stopRequests();
      return;
    }
    this.detach();
    this.server.handlers.connect(req, this.socket);
  }

  /** Whether the parser stopped after `req` (an Upgrade request whose message is complete). */
  isHeldBy(req: FrontRequest): boolean {
    return this.holding && this.heldBy === req;
  }

  /** The Upgrade request was answered 101: the socket leaves HTTP; returns the bytes held after the request. */
  handOver(): Buffer {
    const rest = this.rest ?? Buffer.alloc(0);
    this.rest = undefined;
    this.holding = false;
    this.queue.length = 0;
    this.detach();
    return rest;
  }

  /** Hands the socket back to plain stream reading (tunnels) and forgets it. */
  private detach(): void {
    this.detached = true;
    this.clearTimers();
    const s = this.socket;
    s.removeListener('error', this.onSocketError);
    s.removeListener('close', this.onSocketClose);
    s.removeListener('end', this.onSocketEnd);
    s.removeListener('drain', this.onSocketDrain);
    s.removeListener('data', this.onSocketData);
    if (this.handle) {
      this.parser.unconsume();
      this.handle._consumed = false;
    }
    // Stopped reading (the parser held back what followed): read again; the stream buffers until the
    // tunnel's reader takes it.
    if (this.paused) {
      this.paused = false;
      startReading(s, this.handle);
    }
    // Called from inside the parser's own callback: closing it now would free it under its caller (SIGSEGV).
    const parser = this.parser;
    setImmediate(() => parser.close());
    this.server.forget(this);
  }

  /**
   * A malformed request or a head timeout: no more requests. A request whose body turned out malformed
   * gets the answer itself if it is the one being answered (the listener aborts its exchange); otherwise
   * the complete requests before it are answered first, as announced, and the error's answer follows them.
   */
  private fail(err: ClientError): void {
    if (this.detached || this.failed) return;
    this.failed = true;
    this.clearTimers();
    this.pauseReading();
    if (this.lingering) {
      this.socket.destroy();
      return;
    }
    if (err.code === 'HPE_CLOSED_CONNECTION') {
      // Bytes after a `Connection: close` request: RFC 9112 §9.6, not processed; not an error either.
      this.noMoreRequests = true;
      if (this.queue.length === 0) this.socket.destroySoon();
      return;
    }
    const cur = this.current;
    if (cur !== null) {
      this.current = null;
      const i = this.queue.findIndex((r) => r.req === cur);
      if (i === 0) {
        this.noMoreRequests = true;
        this.server.handlers.clientError(err, this.socket, this.queue[0]);
        return;
      }
      // Parsed ahead and never handed over: dropped with its body.
      if (i > 0) for (const r of this.queue.splice(i)) r.dispatched = true;
      cur.body?.destroy();
    }
    if (this.queue.length > 0) {
      this.pendingError = err;
      return;
    }
    this.noMoreRequests = true;
    this.server.handlers.clientError(err, this.socket, undefined);
  }

  pauseReading(): void {
    if (this.paused || this.socket.destroyed) return;
    this.paused = true;
    stopReading(this.socket, this.handle);
  }

  resumeReading(): void {
    if (!this.paused || this.socket.destroyed || this.failed || this.holding) return;
    if (this.noMoreRequests && this.current === null && !this.lingering) return;
    this.paused = false;
    startReading(this.socket, this.handle);
  }

  /** The active response is complete: the next one goes out, or the connection waits or closes. */
  responseEnded(res: FrontResponse): void {
    if (this.queue[0] !== res) return;
    this.queue.shift();
    const body = res.req.body;
    if (body && !body.readableEnded) {
      // Answered before its body was read to the end (an early 413, a backend that stopped reading):
      // nothing more can be parsed from here.
      this.lingerClose();
      return;
    }
    if (!res.shouldKeepAlive) {
      this.noMoreRequests = true;
      this.current = null;
      this.pauseReading();
      this.socket.destroySoon();
      return;
    }
    if (this.holding && res.req === this.heldBy) {
      // An Upgrade request answered without 101: the connection stays HTTP; what followed it is parsed now.
      setImmediate(this.parseHeld);
      return;
    }
    if (this.paused && this.queue.length < PIPELINE_PAUSE && this.current === null) this.resumeReading();
    const next = this.queue[0];
    if (next) {
      next.activate();
      // Not from inside a backend's parser callback (the one that completed `res`).
      setImmediate(() => this.dispatch(next));
      return;
    }
    const err = this.pendingError;
    if (err) {
      this.pendingError = undefined;
      this.noMoreRequests = true;
      this.server.handlers.clientError(err, this.socket, undefined);
      return;
    }
    if (this.noMoreRequests) {
      this.socket.destroySoon();
      return;
    }
    if (this.current === null && !this.inHead) {
      this.awaitingRequest = true;
      this.idleTimer.arm(this.idleMs());
    }
  }

  /** Parses the bytes held back after a declined Upgrade request, then reads the socket again. */
  private readonly parseHeld = (): void => {
    if (this.socket.destroyed || this.detached) return;
    this.holding = false;
    this.heldBy = undefined;
    const rest = this.rest;
    this.rest = undefined;
    if (this.queue.length === 0 && !this.noMoreRequests) {
      this.awaitingRequest = true;
      this.idleTimer.arm(this.idleMs());
    }
    // llhttp treats whatever follows an upgrade message as the new protocol's, even after resuming (it
    // consumed a CL.TE request without an error in a check): a fresh parser state is the only safe one.
    this.parser.initialize(HTTPParser.REQUEST, {}, this.server.options.maxHeaderSize, HTTPParser.kLenientNone);
    if (rest && rest.length > 0) {
      const ret = this.parser.execute(rest);
      if (ret instanceof Error) {
        this.fail(ret);
        return;
      }
      if (this.holding) {
        // Another Upgrade request in what was held: hold what follows it in turn.
        this.rest = rest.subarray(ret);
        return;
      }
    }
    this.resumeReading();
  };

  /**
   * RFC 9112 §9.6: after a response that the client may not have read yet, closing with unread input would
   * send a reset that can destroy that response in the client's buffers. So: FIN after the response, then
   * read and drop what the client still sends, until it closes or LINGER_MS pass.
   */
  private lingerClose(): void {
    this.noMoreRequests = true;
    this.lingering = true;
    const req = this.current;
    this.current = null;
    if (req?.body && !req.body.destroyed) req.body.destroy();
    this.clearTimers();
    this.socket.end();
    setTimeout(() => this.socket.destroy(), LINGER_MS).unref();
    this.resumeReading();
  }

  private readonly onSocketDrain = (): void => {
    this.queue[0]?.drained();
  };

  private readonly onSocketEnd = (): void => {
    if (this.lingering) {
      this.socket.destroy();
      return;
    }
    // The client will send no more: a partial request is an error; complete ones are still answered.
    if (this.current !== null || this.inHead) {
      let r: number | Error | undefined;
      try {
        r = this.parser.finish();
      } catch (err) {
        r = err as Error;
      }
      if (r instanceof Error) {
        this.fail(r);
        return;
      }
    }
    this.noMoreRequests = true;
    if (this.queue.length === 0) this.socket.end();
  };

  private readonly onSocketError = (): void => {
    this.socket.destroy();
  };

  private readonly onSocketClose = (): void => {
    this.clearTimers();
    this.server.forget(this);
    const body = this.current?.body;
    this.current = null;
    if (body && !body.readableEnded) body.destroy();
    for (const res of this.queue.splice(0)) res.aborted();
    if (this.handle) this.parser.unconsume();
    this.parser.close();
  };
}
