// An `http` listener: lb's HTTP/1.1 server in front (http-server.ts: llhttp in strict mode, the lenient
// parser is never enabled), routes to a pool and forwards with ProxyCall. An HTTP/1.1 Upgrade (WebSocket,
// h2c) is forwarded as a request; only a 101 from the backend turns the connection into a tunnel.

import net from 'node:net';
import { STATUS_CODES } from 'node:http';
import { createServer as createTlsServer } from 'node:tls';
import type { Duplex } from 'node:stream';
import type { ListenerConfig } from '../../config/model.js';
import type { DataPlaneEvents } from './events.js';
import { ProxyCall, replyError, scanRequest, type ListenerInfo, type ScannedRequest } from './http-proxy.js';
import { validHost } from './fields.js';
import { FrontServer, type ClientError, type FrontResponse } from './http-server.js';
import type { HttpRequest, HttpResponse } from './exchange.js';
import type { BackendPool } from './pool.js';
import { Router } from './router.js';
import type { CompiledRoute, SplitOverrides } from './route-match.js';
import { applyRewrite, redirectLocation, rewritePath, writeRedirect, writeRespond, type RewriteContext } from './rewrite.js';
import { admit, policyFor, type LocalExtra, type RequestPolicy } from './request-policy.js';
import type { RequestTags } from './request-id.js';
import { listenServer, type AcceptMode, type Listener, type TlsMaterial } from './listener.js';
import { OpenSet } from './open-set.js';
import { adoptFromParent, readProxyHeader } from './proxy-protocol.js';
import { addClientCertFields, clientCertOf, clientCertRefused } from './client-cert.js';
import { H2Front, H2Request, sniffPreface, type H2Response } from './h2-front.js';

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
  private router: Router;
  /** Rate limit and request IDs of the listener (request-policy.ts); undefined when it has neither. */
  private policy: RequestPolicy | undefined;
  private readonly server: net.Server;
  /** proxy_protocol with tls: the TLS server connections are handed to once their PROXY header is read. */
  private readonly tlsServer: net.Server | undefined;
  private readonly front: FrontServer;
  /** http2 = true: the HTTP/2 front (h2-front.ts); undefined otherwise, and nothing of it is on the path. */
  private readonly h2: H2Front | undefined;
  private readonly sockets = new OpenSet<net.Socket>();
  private readonly material: TlsMaterial | undefined;

  constructor(
    cfg: ListenerConfig,
    pools: ReadonlyMap<string, BackendPool>,
    readonly events: DataPlaneEvents,
    tls?: TlsMaterial,
    splits?: SplitOverrides,
  ) {
    this.name = cfg.name;
    this.cfg = cfg;
    this.tls = !!tls;
    this.material = tls;
    this.router = new Router(cfg, pools, splits);
    this.policy = policyFor(cfg);
    this.front = new FrontServer(
      { maxHeaderSize: cfg.maxHeaderSize, headersTimeoutMs: cfg.clientHeaderTimeoutMs, keepAliveTimeoutMs: cfg.idleTimeoutMs },
      {
        request: this.onRequest,
        connect: (req, socket) => {
          rejectRaw(socket, 501, 'Not Implemented', 'CONNECT is not supported');
          this.local(501, 'CONNECT is not supported', req);
        },
        clientError: this.onClientError,
      },
    );
    // allowHalfOpen: a client's FIN after its requests does not end the connection before their responses.
    // TCP_NODELAY: see listenServer.
    // proxy_protocol: the PROXY header is read from the plain socket first (proxy-protocol.ts), within
    // client_header_timeout; then the TLS handshake, if any, and the requests. These connections take the
    // net.Socket's stream until the header is read, then the parser reads the handle as usual.
    const pp = cfg.proxyProtocol;
    this.h2 = cfg.http2
      ? new H2Front(
          { ...cfg.http2, maxHeaderListSize: cfg.maxHeaderSize, idleTimeoutMs: cfg.idleTimeoutMs },
          { request: this.onH2Request, flood: this.onH2Flood, malformed: this.onH2Malformed },
        )
      : undefined;
    if (tls) {
      // A TLS handshake must finish within client_header_timeout too (node's default is 120 s).
      // ALPN: http/1.1, as node:https advertises (a client offering h2 too is told to speak HTTP/1.1); with
      // http2, h2 first (RFC 7301: the server picks; a client offering both gets h2).
      const alpn = cfg.http2 ? ['h2', 'http/1.1'] : ['http/1.1'];
      const server = createTlsServer({ ALPNProtocols: alpn, ...tls.options, allowHalfOpen: true, noDelay: false, handshakeTimeout: cfg.clientHeaderTimeoutMs });
      // Without a listener here, node leaves a socket whose handshake timed out (or failed) open.
      server.on('tlsClientError', (err: Error, socket: net.Socket) => {
        if (tls.clientAuth) clientCertRefused(this.name, err, socket);
        socket.destroy();
      });
      tls.attach(server);
      server.on('secureConnection', pp ? this.onProxiedTls : this.acceptTls);
      this.tlsServer = pp ? server : undefined;
      this.server = pp ? net.createServer({ allowHalfOpen: true, noDelay: false }) : server;
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
    if (pp) this.server.on('connection', this.onProxyConnection);
    else if (!tls) this.server.on('connection', this.h2 ? this.onPlainConnection : this.front.accept);
  }

  private readonly onProxyConnection = (raw: net.Socket): void => {
    if (raw.destroyed) return;
    readProxyHeader(raw, this.cfg.clientHeaderTimeoutMs, (err) => {
      if (err) {
        const peer = raw.remoteAddress ?? '';
        raw.destroy();
        this.events.proxyRefused?.(this.name, err.reason, peer, err.detail);
        return;
      }
      if (this.tlsServer) this.tlsServer.emit('connection', raw);
      else if (this.h2) this.onPlainConnection(raw);
      else this.front.acceptRead(raw);
    });
  };

  /** A TLS connection whose handshake is done. client_auth: the verification is read (and counted) once per connection, at its start. */
  private readonly acceptTls = (socket: net.Socket): void => {
    if (this.material?.clientAuth) clientCertOf(socket, this.name);
    if (this.h2 !== undefined && (socket as net.Socket & { alpnProtocol?: string | false }).alpnProtocol === 'h2') this.h2.accept(socket);
    else this.front.accept(socket);
  };

  /** http2 on a plain listener: h2c with prior knowledge when the connection starts with the preface, else HTTP/1.1. */
  private readonly onPlainConnection = (socket: net.Socket): void => {
    if (socket.destroyed) return;
    sniffPreface(socket, this.cfg.clientHeaderTimeoutMs, (h2) => {
      if (h2) this.h2!.accept(socket);
      else this.front.acceptRead(socket);
    });
  };

  /** An HTTP/2 stream: the path of an HTTP/1.1 request, once what only HTTP/2 can get wrong is checked. */
  private readonly onH2Request = (req: H2Request, res: H2Response): void => {
    if (req.conflictingHost) {
      this.refuse(req, res, 400, 'Host disagrees with :authority');
      return;
    }
    this.onRequest(req, res);
  };

  /** A stream refused before it became a request (malformed: reset PROTOCOL_ERROR; too large: 431). */
  private readonly onH2Malformed = (socket: net.Socket, status: number, reason: string): void => {
    this.local(status, status === 400 ? `malformed HTTP/2 request (${reason}); stream reset` : reason, undefined, socket, undefined, 'h2');
  };

  /** A client flooding stream resets (rapid reset, CVE-2023-44487): its connection got GOAWAY and was closed. */
  private readonly onH2Flood = (socket: net.Socket, resets: number): void => {
    this.events.h2Flood?.(this.name, socket.remoteAddress ?? '', resets);
  };

  private readonly onProxiedTls = (socket: net.Socket): void => {
    if (adoptFromParent(socket)) {
      this.acceptTls(socket);
      return;
    }
    const peer = socket.remoteAddress ?? '';
    socket.destroy();
    this.events.proxyRefused?.(this.name, 'invalid', peer, 'TLS connection without its PROXY header');
  };

  get connections(): number {
    return this.sockets.size;
  }

  get bodyTimeoutMs(): number {
    return this.cfg.clientBodyTimeoutMs;
  }

  /** A reloaded listener config (routes, default pool, timeouts, re-read certificates), applied in place. */
  prepareUpdate(cfg: ListenerConfig, pools: ReadonlyMap<string, BackendPool>, splits?: SplitOverrides): () => void {
    const router = new Router(cfg, pools, splits);
    const policy = policyFor(cfg);
    const certificates = this.material && cfg.tls ? this.material.prepare(cfg.tls) : undefined;
    return () => {
      this.cfg = cfg;
      this.router = router;
      this.policy = policy;
      // Open connections take the new durations at their next wait for a head or a request.
      this.front.options.headersTimeoutMs = cfg.clientHeaderTimeoutMs;
      this.front.options.keepAliveTimeoutMs = cfg.idleTimeoutMs;
      if (this.h2 && cfg.http2) this.h2.update({ ...cfg.http2, maxHeaderListSize: cfg.maxHeaderSize, idleTimeoutMs: cfg.idleTimeoutMs });
      certificates?.();
    };
  }

  /** Runtime split weights (`lb split`), for this listener's routes. */
  applySplits(splits: SplitOverrides): void {
    this.router.applySplits(splits[this.name]);
  }

  async listen(accept?: AcceptMode): Promise<void> {
    await listenServer(this.server, this.cfg.listen, accept);
  }

  // A refusal says "Connection: close": the server parses no request after it (http-server.ts).
  private readonly onRequest = (req: HttpRequest, res: HttpResponse): void => {
    let target = req.url;
    let authority: string | undefined;
    if (target.charCodeAt(0) !== 47 /* "/" */ && target !== '*') {
      // RFC 9112 §3.2.2: a server MUST accept absolute-form; its authority replaces Host.
      const abs = absoluteForm(target);
      if (!abs) {
        this.refuse(req, res, 400, 'request target must be origin-form or an http(s) absolute-form');
        return;
      }
      authority = abs.authority;
      target = abs.path;
    }
    const scan = scanRequest(req, this.tls, authority);
    // Before routing, so that routes could match on them; the client's own X-Client-* were dropped by the scan.
    if (this.material?.clientAuth) addClientCertFields(scan.headers, clientCertOf(req.socket, this.name));
    const refused = refuse(req, scan);
    if (refused) {
      this.refuse(req, res, refused[0], refused[1]);
      return;
    }
    if (target === '*') {
      // "the server in general": lb answers it itself rather than asking one backend.
      if (req.method !== 'OPTIONS') this.refuse(req, res, 400, 'asterisk-form is for OPTIONS only');
      else {
        res.writeHead(200, { 'content-length': 0 }).end();
        this.local(200, 'OPTIONS *', req);
      }
      return;
    }
    const route = this.router.route(scan.host, target, req);
    if (this.policy !== undefined || route?.limit !== undefined) {
      admit(this, this.policy, route, req, res, scan, target);
      return;
    }
    this.forward(route, req, res, scan, target);
  };

  /**
   * Proxies a request as `route` says (undefined: the listener's pool); `tags` are its request ID and trace
   * ID when the listener sets them.
   */
  forward(route: CompiledRoute | undefined, req: HttpRequest, res: HttpResponse, scan: ScannedRequest, target: string, tags?: RequestTags): void {
    // req.body: a stream when the head announces a body (Content-Length > 0 or Transfer-Encoding).
    if (!req.body) {
      this.dispatch(route, req, res, scan, target, tags);
      return;
    }
    // The request is handed over from inside the parser, before it has parsed the body bytes that came in
    // the same read: let it finish them, so that a body with bad framing (a bad chunk size, more data than
    // a chunk's size) is refused with 400 before anything is sent upstream. Framing errors in bytes that
    // arrive later cut the upstream request before it is complete.
    setImmediate(() => {
      if (res.ended || res.destroyed || !req.socket.writable) return;
      this.dispatch(route, req, res, scan, target, tags);
    });
  }

  /** Serves one routed request: the listener's pool, a plain route's pool, or what a route with more asks for. */
  private dispatch(route: CompiledRoute | undefined, req: HttpRequest, res: HttpResponse, scan: ScannedRequest, target: string, tags?: RequestTags): void {
    if (route === undefined) new ProxyCall(this, this.router.fallback, req, res, scan, target, undefined, undefined, tags).start();
    else if (route.plain) new ProxyCall(this, route.pool!, req, res, scan, target, route, undefined, tags).start();
    else this.dispatchRoute(route, req, res, scan, target, tags);
  }

  private dispatchRoute(route: CompiledRoute, req: HttpRequest, res: HttpResponse, scan: ScannedRequest, target: string, tags: RequestTags | undefined): void {
    const ids = tags !== undefined ? { requestId: tags.requestId, traceId: tags.traceId } : undefined;
    if (route.redirect) {
      const location = redirectLocation(route.redirect, target, scan.host, this.tls);
      if (location === undefined) {
        this.refuse(req, res, 400, `route ${route.name} redirects to the request's host, and the request has none`, { route: route.name, ...ids });
        return;
      }
      writeRedirect(res, route.redirect.code, location, req.body !== null);
      this.local(route.redirect.code, undefined, req, undefined, { route: route.name, ...ids });
      return;
    }
    if (route.respond) {
      writeRespond(res, route.respond, req.body !== null);
      this.local(route.respond.status, undefined, req, undefined, { route: route.name, ...ids });
      return;
    }
    const pool = route.split ? route.split.pick(req) : route.pool!;
    const path = route.stripPrefix !== undefined || route.addPrefix !== undefined ? rewritePath(target, route.stripPrefix, route.addPrefix) : target;
    let ctx: RewriteContext | undefined;
    if (route.requestRewrite || route.responseRewrite) {
      ctx = { req, headers: scan.headers, host: scan.host, tls: this.tls, route: route.name };
      if (route.requestRewrite) scan.headers = applyRewrite(scan.headers, route.requestRewrite, ctx);
    }
    new ProxyCall(this, pool, req, res, scan, path, route, ctx, tags).start();
  }

  /** Refuses a request lb will not forward: answered with `Connection: close`, counted and logged. */
  private refuse(req: HttpRequest, res: HttpResponse, status: number, reason: string, extra?: LocalExtra): void {
    replyError(res, status, `${status} ${STATUS_CODES[status] ?? 'Error'}: ${reason}`, true, req);
    this.local(status, reason, req, undefined, extra);
  }

  /**
   * Counts and logs a response lb produced itself (no pool, no backend): refusals, malformed requests,
   * timeouts. `req` is undefined when no request head could be parsed.
   */
  local(status: number, reason: string | undefined, req: HttpRequest | undefined, socket?: net.Socket, extra?: LocalExtra, proto?: 'h2'): void {
    this.events.done({
      kind: 'http',
      listener: this.name,
      pool: '',
      backend: '',
      status,
      method: req?.method ?? '',
      path: req?.url ?? '',
      client: (req?.socket ?? socket)?.remoteAddress ?? '',
      bytesIn: 0,
      bytesOut: 0,
      seconds: 0,
      retries: 0,
      error: reason,
      route: extra?.route,
      limited: extra?.limited,
      requestId: extra?.requestId,
      traceId: extra?.traceId,
      proto: req?.httpVersionMajor === 2 ? 'h2' : proto,
    });
  }

  /**
   * A malformed request or a head timeout. The server parses nothing more on the connection and calls
   * this once the responses owed to earlier requests are out (`active` undefined): the error is answered
   * (400, 408, 431) and the connection closed. `active` is a request being answered whose own body turned
   * out malformed: it gets that answer, unless its response has begun, and its exchange is aborted.
   */
  private readonly onClientError = (err: ClientError, socket: net.Socket, active: FrontResponse | undefined): void => {
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const [status, text] = REASONS[err.code ?? ''] ?? [400, 'Bad Request'];
    const message = status === 400 ? 'malformed request' : text.toLowerCase();
    this.local(status, `${message} (${err.code ?? err.message})`, active?.req, socket);
    if (!active) {
      rejectRaw(socket, status, text, message);
      return;
    }
    // The request being answered had a malformed body: its exchange is cut and it gets the answer.
    if (!active.headersSent) replyError(active, status, `${status} ${text}: ${message}`, true);
    active.aborted();
    setTimeout(() => socket.destroy(), 1000).unref();
  };

  /**
   * Stops accepting; every request that reached lb is answered (with `Connection: close`), and a kept-alive
   * connection between requests closes after DRAIN_IDLE_MS without one (http-server.ts, drain). Only the
   * server decides which response says `Connection: close` (the last of the requests it has parsed): a
   * pipelined request already received behind it is answered, not dropped.
   */
  async stop(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.front.drain();
    this.h2?.drain();
    await closed;
  }

  /** Whether requests or upgraded connections are still open on this listener. */
  get busy(): boolean {
    return this.sockets.size > 0;
  }

  /** Ends every connection at once (grace period over, or a second stop signal). */
  destroy(): void {
    this.front.closeAllConnections();
    this.h2?.closeAllConnections();
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
function refuse(req: HttpRequest, scan: ScannedRequest): [number, string] | undefined {
  if (req.httpVersionMajor !== 1 && !(req instanceof H2Request)) return [400, 'HTTP/1.0 or HTTP/1.1 only'];
  if (req.rawHeaders.length > MAX_HEADER_FIELDS * 2) return [431, `more than ${MAX_HEADER_FIELDS} header fields`];
  if (scan.hosts === 0 && req.httpVersionMinor === 1) return [400, 'an HTTP/1.1 request needs a Host header'];
  if (scan.hosts > 1) return [400, 'more than one Host header'];
  if (scan.badHost !== undefined) return [400, 'Host is not a valid authority'];
  if (scan.foldedName !== undefined) return [400, `header ${scan.foldedName} reads as a framing header where "_" is taken for "-"`];
  if (scan.forbiddenConnection !== undefined) return [400, `Connection names ${scan.forbiddenConnection}, which frames or routes the request`];
  const te = scan.transferEncoding;
  if (te !== undefined) {
    if (req.httpVersionMinor === 0) return [400, 'Transfer-Encoding in an HTTP/1.0 request'];
    if (te.trim().toLowerCase() !== 'chunked') return [501, `Transfer-Encoding ${JSON.stringify(te)}; only "chunked" is supported`];
  }
  return undefined;
}

/**
 * An absolute-form target (RFC 9112 §3.2.2) split into its authority and an origin-form path; undefined
 * for another scheme, userinfo (RFC 9110 §4.2.4), or an empty or malformed authority.
 */
export function absoluteForm(target: string): { authority: string; path: string } | undefined {
  const m = /^https?:\/\/([^/?#]*)([^#]*)$/i.exec(target);
  if (!m) return undefined;
  const authority = m[1]!;
  if (authority === '' || !validHost(authority)) return undefined;
  const rest = m[2]!;
  return { authority, path: rest === '' ? '/' : rest.charCodeAt(0) === 63 /* "?" */ ? `/${rest}` : rest };
}

function rejectRaw(socket: Duplex, status: number, text: string, message: string): void {
  const body = `${status} ${text}: ${message}\n`;
  if (socket.writable) {
    socket.end(`HTTP/1.1 ${status} ${text}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  }
  setTimeout(() => socket.destroy(), 1000).unref();
}
