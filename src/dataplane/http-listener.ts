// An `http` listener: node:http's strict parser in front (llhttp; the lenient parser is never enabled),
// routes to a pool, forwards with ProxyCall, and tunnels HTTP/1.1 Upgrade (WebSocket) connections as raw
// byte streams once the upstream connection is open.

import http from 'node:http';
import https from 'node:https';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import type { ListenerConfig } from '../../config/model.js';
import { connectUpstream, splice } from './connect.js';
import type { DataPlaneEvents } from './events.js';
import { ProxyCall, replyError, scanRequest, type ListenerInfo, type ScannedRequest } from './http-proxy.js';
import type { BackendPool } from './pool.js';
import { requestKey } from './request-key.js';
import { Router } from './router.js';
import { listenServer, type AcceptMode, type Listener, type TlsMaterial } from './listener.js';
import { OpenSet } from './open-set.js';

/** More header fields than this get 431 (node:http would silently drop the ones past its maxHeadersCount). */
export const MAX_HEADER_FIELDS = 1000;

const REASONS: Record<string, [number, string]> = {
  HPE_HEADER_OVERFLOW: [431, 'Request Header Fields Too Large'],
  ERR_HTTP_REQUEST_TIMEOUT: [408, 'Request Timeout'],
  HPE_HEADERS_TIMEOUT: [408, 'Request Timeout'],
};

export class HttpListener implements Listener, ListenerInfo {
  readonly name: string;
  readonly protocol = 'http';
  cfg: ListenerConfig;
  readonly tls: boolean;
  stopping = false;
  private router: Router;
  private readonly server: http.Server;
  private readonly sockets = new OpenSet<net.Socket>();
  private upgrades = 0;
  private readonly material: TlsMaterial | undefined;

  constructor(
    cfg: ListenerConfig,
    pools: ReadonlyMap<string, BackendPool>,
    readonly events: DataPlaneEvents,
    tls?: TlsMaterial,
  ) {
    this.name = cfg.name;
    this.cfg = cfg;
    this.tls = !!tls;
    this.material = tls;
    this.router = new Router(cfg, pools);
    const options: http.ServerOptions = {
      maxHeaderSize: cfg.maxHeaderSize,
      requestTimeout: 0,
      headersTimeout: cfg.clientHeaderTimeoutMs,
      keepAliveTimeout: cfg.idleTimeoutMs,
      // TCP_NODELAY: see listenServer.
      noDelay: false,
      insecureHTTPParser: false,
      // node:http checks client_header_timeout only this often (its default is every 30 s).
      connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(cfg.clientHeaderTimeoutMs / 4))),
    };
    // A TLS handshake must finish within client_header_timeout too (node's default is 120 s).
    this.server = tls ? https.createServer({ ...options, ...tls.options, handshakeTimeout: cfg.clientHeaderTimeoutMs }) : http.createServer(options);
    // One field more than the limit is stored, so that a request over it can be told apart and refused.
    this.server.maxHeadersCount = MAX_HEADER_FIELDS + 1;
    if (tls) tls.attach(this.server as https.Server);
    this.server.on('request', this.onRequest);
    this.server.on('upgrade', this.onUpgrade);
    this.server.on('connect', (req: http.IncomingMessage, socket: Duplex) => rejectRaw(socket, 501, 'Not Implemented', 'CONNECT is not supported'));
    this.server.on('clientError', this.onClientError);
    this.server.on('connection', (s: net.Socket) => {
      if (this.cfg.maxConnections > 0 && this.sockets.size >= this.cfg.maxConnections) {
        s.destroy();
        return;
      }
      const node = this.sockets.add(s);
      s.once('close', () => this.sockets.delete(node));
    });
  }

  get connections(): number {
    return this.sockets.size;
  }

  get bodyTimeoutMs(): number {
    return this.cfg.clientBodyTimeoutMs;
  }

  /** Applies a reloaded listener config (routes, default pool, timeouts, re-read certificates) in place. */
  update(cfg: ListenerConfig, pools: ReadonlyMap<string, BackendPool>): void {
    this.cfg = cfg;
    this.router = new Router(cfg, pools);
    this.server.headersTimeout = cfg.clientHeaderTimeoutMs;
    this.server.keepAliveTimeout = cfg.idleTimeoutMs;
    if (this.material && cfg.tls) this.material.reload(cfg.tls);
  }

  listen(accept?: AcceptMode): Promise<void> {
    return listenServer(this.server, this.cfg.listen, accept);
  }

  private readonly onRequest = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    // A request pipelined behind one refused on this connection is not served: the refusal said
    // "Connection: close", and node:http closes the connection once that response is out.
    if (closing.has(req.socket)) return;
    const url = req.url ?? '/';
    const scan = scanRequest(req, this.tls, false);
    const refused = refuse(req, scan);
    if (refused) {
      closing.add(req.socket);
      replyError(res, refused[0], refused[1], true);
      return;
    }
    if (url === '*' && req.method === 'OPTIONS') {
      // "the server in general": lb answers it itself rather than asking one backend.
      res.writeHead(200, { 'content-length': 0 }).end();
      return;
    }
    if (url.charCodeAt(0) !== 47 /* "/" */) {
      // absolute-form and authority-form: lb is a reverse proxy, not a forward proxy.
      closing.add(req.socket);
      replyError(res, 400, '400 Bad Request: request target must be origin-form', true);
      return;
    }
    if (!scan.hasBody) {
      new ProxyCall(this, this.router.route(scan.host, url), req, res, scan).start();
      return;
    }
    // node:http emits 'request' from inside the parser, before it has parsed the body bytes that came in
    // the same read: let it finish them, so that a body with bad framing (a bad chunk size, more data than
    // a chunk's size) is refused with 400 before anything is sent upstream. Framing errors in bytes that
    // arrive later cut the upstream request before it is complete.
    setImmediate(() => {
      if (req.destroyed || !req.socket.writable) return;
      new ProxyCall(this, this.router.route(scan.host, url), req, res, scan).start();
    });
  };

  private readonly onUpgrade = (req: http.IncomingMessage, client: Duplex, head: Buffer): void => {
    const socket = client as net.Socket;
    const url = req.url ?? '/';
    if (url.charCodeAt(0) !== 47) {
      rejectRaw(socket, 400, 'Bad Request', 'request target must be origin-form');
      return;
    }
    const scan = scanRequest(req, this.tls, true);
    const refused = refuse(req, scan);
    if (refused) {
      rejectRaw(socket, refused[0], refused[0] === 431 ? 'Request Header Fields Too Large' : refused[0] === 501 ? 'Not Implemented' : 'Bad Request', refused[1]);
      return;
    }
    const pool = this.router.route(scan.host, url);
    const key = pool.hashKey ? requestKey(pool.hashKey, req) : undefined;
    const t0 = performance.now();
    socket.pause();
    const cancel = connectUpstream(pool, key, this.events, (err, ok) => {
      socket.removeListener('close', cancel);
      if (err || !ok) {
        const status = err?.backend ? 502 : 503;
        rejectRaw(socket, status, status === 502 ? 'Bad Gateway' : 'Service Unavailable', err?.backend ? `backend failed (${err.error})` : `no usable backend in pool ${pool.name}`);
        this.record(pool, err?.backend?.name ?? '', status, req, t0, 0, 0, err?.retries ?? 0, err?.error);
        return;
      }
      const { backend, socket: up } = ok;
      this.upgrades++;
      up.setNoDelay(true);
      const headers = scan.headers;
      let headText = `${req.method} ${url} HTTP/1.1\r\n`;
      for (let i = 0; i < headers.length; i += 2) headText += `${headers[i]}: ${headers[i + 1]}\r\n`;
      up.write(headText + '\r\n');
      if (head.length > 0) up.write(head);
      splice(socket, up, () => {
        this.upgrades--;
        backend.end();
        this.record(pool, backend.name, 101, req, t0, socket.bytesRead, socket.bytesWritten, ok.retries);
      });
      socket.resume();
    });
    socket.once('close', cancel);
  };

  private record(pool: BackendPool, backend: string, status: number, req: http.IncomingMessage, t0: number, bytesIn: number, bytesOut: number, retries: number, error?: string): void {
    this.events.done({
      kind: 'websocket',
      listener: this.name,
      pool: pool.name,
      backend,
      status,
      method: req.method ?? '',
      path: req.url ?? '',
      client: req.socket.remoteAddress ?? '',
      bytesIn,
      bytesOut,
      seconds: (performance.now() - t0) / 1000,
      retries,
      error,
    });
  }

  private readonly onClientError = (err: Error & { code?: string }, socket: Duplex): void => {
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const current = (socket as { _httpMessage?: http.ServerResponse | null })._httpMessage;
    if (current && current.headersSent) {
      // Bad bytes after a request whose response is already under way (pipelining): a second response
      // would be taken as the answer to the bad bytes' successor; end the connection after this one.
      if (current.writableFinished) socket.end();
      else current.once('close', () => socket.end());
      return;
    }
    const [status, text] = REASONS[err.code ?? ''] ?? [400, 'Bad Request'];
    rejectRaw(socket, status, text, status === 400 ? 'malformed request' : text.toLowerCase());
  };

  /** Stops accepting; idle keep-alive connections close now, busy ones after their current response. */
  async stop(): Promise<void> {
    this.stopping = true;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeIdleConnections();
    const tick = setInterval(() => this.server.closeIdleConnections(), 50);
    await closed;
    clearInterval(tick);
  }

  /** Whether requests or upgraded connections are still open on this listener. */
  get busy(): boolean {
    return this.sockets.size > 0;
  }

  /** Ends every connection at once (grace period over, or a second stop signal). */
  destroy(): void {
    this.server.closeAllConnections();
    for (const s of this.sockets.values()) s.destroy();
  }
}

/** Connections on which a request was refused: nothing more is read from them. */
const closing = new WeakSet<Duplex>();

/**
 * What llhttp's strict mode lets through but lb refuses before routing (so the upstream sees nothing):
 * HTTP/0.9, more than one Host (lb routes on one value, a backend might use another), a Transfer-Encoding
 * other than exactly "chunked" (501, as NGINX: lb would drop the other coding while re-framing the body) or
 * on an HTTP/1.0 request (RFC 9112 §6.1: faulty framing), and more than MAX_HEADER_FIELDS header fields.
 */
function refuse(req: http.IncomingMessage, scan: ScannedRequest): [number, string] | undefined {
  if (req.httpVersionMajor !== 1) return [400, '400 Bad Request: HTTP/1.0 or HTTP/1.1 only'];
  if (req.rawHeaders.length > MAX_HEADER_FIELDS * 2) return [431, `431 Request Header Fields Too Large: more than ${MAX_HEADER_FIELDS} header fields`];
  if (scan.hosts > 1) return [400, '400 Bad Request: more than one Host header'];
  const te = scan.transferEncoding;
  if (te !== undefined) {
    if (req.httpVersionMinor === 0) return [400, '400 Bad Request: Transfer-Encoding in an HTTP/1.0 request'];
    if (te.trim().toLowerCase() !== 'chunked') return [501, `501 Not Implemented: Transfer-Encoding ${JSON.stringify(te)}; only "chunked" is supported`];
  }
  return undefined;
}

function rejectRaw(socket: Duplex, status: number, text: string, message: string): void {
  const body = `${status} ${text}: ${message}\n`;
  if (socket.writable) {
    socket.end(`HTTP/1.1 ${status} ${text}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  }
  setTimeout(() => socket.destroy(), 1000).unref();
}
