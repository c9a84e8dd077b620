// An `http` listener: lb's HTTP/1.1 server in front (http-server.ts: llhttp in strict mode, the lenient
// parser is never enabled), routes to a pool, forwards with ProxyCall, and tunnels HTTP/1.1 Upgrade
// (WebSocket) connections as raw byte streams once the upstream connection is open.

import net from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import type { Duplex } from 'node:stream';
import type { ListenerConfig } from '../../config/model.js';
import { connectUpstream, netDialer, passFin, splice } from './connect.js';
import type { DataPlaneEvents } from './events.js';
import { ProxyCall, replyError, scanRequest, type ListenerInfo, type ScannedRequest } from './http-proxy.js';
import { FrontServer, type ClientError, type FrontRequest, type FrontResponse } from './http-server.js';
import type { BackendPool } from './pool.js';
import { requestKey } from './request-key.js';
import { Router } from './router.js';
import { listenServer, type AcceptMode, type Listener, type TlsMaterial } from './listener.js';
import { OpenSet } from './open-set.js';

/** More header fields than this get 431. */
export const MAX_HEADER_FIELDS = 1000;

const REASONS: Record<string, [number, string]> = {
  HPE_HEADER_OVERFLOW: [431, 'Request Header Fields Too Large'],
  ERR_HTTP_REQUEST_TIMEOUT: [408, 'Request Timeout'],
};

export class HttpListener implements Listener, ListenerInfo {
  readonly name: string;
  readonly protocol = 'http';
  cfg: ListenerConfig;
  readonly tls: boolean;
  stopping = false;
  private router: Router;
  private readonly server: net.Server;
  private readonly front: FrontServer;
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
    this.front = new FrontServer(
      { maxHeaderSize: cfg.maxHeaderSize, headersTimeoutMs: cfg.clientHeaderTimeoutMs, keepAliveTimeoutMs: cfg.idleTimeoutMs },
      {
        request: this.onRequest,
        upgrade: this.onUpgrade,
        connect: (_req, socket) => rejectRaw(socket, 501, 'Not Implemented', 'CONNECT is not supported'),
        clientError: this.onClientError,
      },
    );
    // allowHalfOpen: a client's FIN after its requests does not end the connection before their responses.
    // TCP_NODELAY: see listenServer.
    if (tls) {
      // A TLS handshake must finish within client_header_timeout too (node's default is 120 s).
      // ALPN: http/1.1, as node:https advertises (a client offering h2 too is told to speak HTTP/1.1).
      const server = createTlsServer({ ALPNProtocols: ['http/1.1'], ...tls.options, allowHalfOpen: true, noDelay: false, handshakeTimeout: cfg.clientHeaderTimeoutMs });
      // Without a listener here, node leaves a socket whose handshake timed out (or failed) open.
      server.on('tlsClientError', (_err: Error, socket: net.Socket) => socket.destroy());
      tls.attach(server);
      server.on('secureConnection', this.front.accept);
      this.server = server;
    } else {
      this.server = net.createServer({ allowHalfOpen: true, noDelay: false });
    }
    // Counted (and refused over max_connections) as TCP connections, before any TLS handshake.
    this.server.prependListener('connection', (s: net.Socket) => {
      if (this.cfg.maxConnections > 0 && this.sockets.size >= this.cfg.maxConnections) {
        s.destroy();
        return;
      }
      const node = this.sockets.add(s);
      s.once('close', () => this.sockets.delete(node));
    });
    if (!tls) this.server.on('connection', this.front.accept);
  }

  get connections(): number {
    return this.sockets.size;
  }

  get bodyTimeoutMs(): number {
    return this.cfg.clientBodyTimeoutMs;
  }

  /** A reloaded listener config (routes, default pool, timeouts, re-read certificates), applied in place. */
  prepareUpdate(cfg: ListenerConfig, pools: ReadonlyMap<string, BackendPool>): () => void {
    const router = new Router(cfg, pools);
    const certificates = this.material && cfg.tls ? this.material.prepare(cfg.tls) : undefined;
    return () => {
      this.cfg = cfg;
      this.router = router;
      // Open connections take the new durations at their next wait for a head or a request.
      this.front.options.headersTimeoutMs = cfg.clientHeaderTimeoutMs;
      this.front.options.keepAliveTimeoutMs = cfg.idleTimeoutMs;
      certificates?.();
    };
  }

  async listen(accept?: AcceptMode): Promise<void> {
    await listenServer(this.server, this.cfg.listen, accept);
  }

  // A refusal says "Connection: close": the server parses no request after it (http-server.ts).
  private readonly onRequest = (req: FrontRequest, res: FrontResponse): void => {
    const url = req.url;
    const scan = scanRequest(req, this.tls, false);
    const refused = refuse(req, scan);
    if (refused) {
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
      replyError(res, 400, '400 Bad Request: request target must be origin-form', true);
      return;
    }
    // req.body: a stream when the head announces a body (Content-Length > 0 or Transfer-Encoding).
    if (!req.body) {
      new ProxyCall(this, this.router.route(scan.host, url), req, res, scan).start();
      return;
    }
    // The request is handed over from inside the parser, before it has parsed the body bytes that came in
    // the same read: let it finish them, so that a body with bad framing (a bad chunk size, more data than
    // a chunk's size) is refused with 400 before anything is sent upstream. Framing errors in bytes that
    // arrive later cut the upstream request before it is complete.
    setImmediate(() => {
      if (res.ended || res.destroyed || !req.socket.writable) return;
      new ProxyCall(this, this.router.route(scan.host, url), req, res, scan).start();
    });
  };

  private readonly onUpgrade = (req: FrontRequest, socket: net.Socket, head: Buffer): void => {
    const url = req.url;
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
      // A FIN the client sent while connecting ('end' already emitted): splice's own 'end' listener missed it.
      if (socket.readableEnded) passFin(up);
      socket.resume();
    }, netDialer);
    socket.once('close', cancel);
  };

  private record(pool: BackendPool, backend: string, status: number, req: FrontRequest, t0: number, bytesIn: number, bytesOut: number, retries: number, error?: string): void {
    this.events.done({
      kind: 'websocket',
      listener: this.name,
      pool: pool.name,
      backend,
      status,
      method: req.method,
      path: req.url,
      client: req.socket.remoteAddress ?? '',
      bytesIn,
      bytesOut,
      seconds: (performance.now() - t0) / 1000,
      retries,
      error,
    });
  }

  /**
   * A malformed request or a head timeout. The server parses nothing more on the connection. With no
   * response pending the error is answered (400, 408, 431) and the connection closed; a request whose
   * body turned out malformed gets that answer itself, unless its response has begun, and its exchange is
   * aborted; responses already owed to earlier (pipelined) requests go out first, then the connection
   * closes: an error answer then would be taken for theirs.
   */
  private readonly onClientError = (err: ClientError, socket: net.Socket, active: FrontResponse | undefined): void => {
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const [status, text] = REASONS[err.code ?? ''] ?? [400, 'Bad Request'];
    const message = status === 400 ? 'malformed request' : text.toLowerCase();
    if (!active) {
      rejectRaw(socket, status, text, message);
      return;
    }
    if (active.req.body && !active.req.body.readableEnded) {
      if (!active.headersSent) replyError(active, status, `${status} ${text}: ${message}`, true);
      active.aborted();
      setTimeout(() => socket.destroy(), 1000).unref();
    }
  };

  /** Stops accepting; idle keep-alive connections close now, busy ones after their current response. */
  async stop(): Promise<void> {
    this.stopping = true;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.front.closeIdleConnections();
    const tick = setInterval(() => this.front.closeIdleConnections(), 50);
    await closed;
    clearInterval(tick);
  }

  /** Whether requests or upgraded connections are still open on this listener. */
  get busy(): boolean {
    return this.sockets.size > 0;
  }

  /** Ends every connection at once (grace period over, or a second stop signal). */
  destroy(): void {
    this.front.closeAllConnections();
    for (const s of this.sockets.values()) s.destroy();
  }
}

/**
 * What llhttp's strict mode lets through but lb refuses before routing (so the upstream sees nothing):
 * HTTP/0.9, an HTTP/1.1 request without Host (RFC 9112 §3.2, as node:http's requireHostHeader), more
 * than one Host (lb routes on one value, a backend might use another), a Transfer-Encoding
 * other than exactly "chunked" (501, as NGINX: lb would drop the other coding while re-framing the body) or
 * on an HTTP/1.0 request (RFC 9112 §6.1: faulty framing), and more than MAX_HEADER_FIELDS header fields.
 */
function refuse(req: FrontRequest, scan: ScannedRequest): [number, string] | undefined {
  if (req.httpVersionMajor !== 1) return [400, '400 Bad Request: HTTP/1.0 or HTTP/1.1 only'];
  if (req.rawHeaders.length > MAX_HEADER_FIELDS * 2) return [431, `431 Request Header Fields Too Large: more than ${MAX_HEADER_FIELDS} header fields`];
  if (scan.hosts === 0 && req.httpVersionMinor === 1) return [400, '400 Bad Request: an HTTP/1.1 request needs a Host header'];
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
