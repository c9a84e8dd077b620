// A `tcp` (L4) listener: each client connection is spliced to one backend connection, with back-pressure and
// half-close; a failed connect is retried on another backend, and what the client sent meanwhile goes to the
// backend that accepts. With `tls`, lb terminates TLS (the handshake must finish within 10 s,
// client_header_timeout's default) and the backend gets the plain byte stream; the connection counts toward
// max_connections once the handshake is done.
//
// Plain connections to a pool whose backends are all IP addresses are spliced on bare TCP handles
// (raw-tunnel.ts): accepted without a net.Socket, dialed without one. TLS listeners, pools with host names
// (net.connect resolves them), pools with `tls` (TLS origination: backend-tls.ts tlsDialer),
// proxy_protocol listeners (the header is read from a net.Socket before anything else) and Node versions
// whose handle binding differs use net.Socket and splice().
//
// proxy_protocol: the PROXY header is read first (proxy-protocol.ts; before the TLS handshake on a tls
// listener), within client_header_timeout; until then the connection counts toward max_connections.
// send_proxy: the backend connection starts with a PROXY header carrying the client's two ends.

import net from 'node:net';
import tls from 'node:tls';
import type { ListenerConfig } from '../../config/model.js';
import { connectUpstream, netDialer, passFin, splice, type ConnectFailure, type Dialer } from './connect.js';
import type { DataPlaneEvents } from './events.js';
import { clientCertOf, clientCertRefused } from './client-cert.js';
import { listenServer, type AcceptMode, type Listener, type TlsMaterial } from './listener.js';
import { OpenSet } from './open-set.js';
import type { BackendPool } from './pool.js';
import { adoptFromParent, buildProxyHeader, clientEndpoints, readProxyHeader, type ProxyError } from './proxy-protocol.js';
import { HOLD_BYTES, RawTunnel, rawDialer } from './raw-tunnel.js';
import { takeAcceptedHandles } from '../node-internals/handles.js';
import { tcpWrap, type TcpHandle } from '../node-internals/tcp-wrap.js';

const dialRaw: Dialer<TcpHandle> | undefined = tcpWrap && rawDialer(tcpWrap);

export class TcpListener implements Listener {
  readonly name: string;
  readonly protocol = 'tcp';
  cfg: ListenerConfig;
  private pool: BackendPool;
  private readonly server: net.Server;
  /** proxy_protocol with tls: the TLS server connections are handed to once their PROXY header is read. */
  private readonly tlsServer: tls.Server | undefined;
  private readonly sockets = new OpenSet<{ destroy(): void }>();
  private stopped: (() => void) | undefined;
  private closed = false;

  constructor(
    cfg: ListenerConfig,
    pools: ReadonlyMap<string, BackendPool>,
    private readonly events: DataPlaneEvents,
    private readonly material?: TlsMaterial,
  ) {
    this.name = cfg.name;
    this.cfg = cfg;
    this.pool = pools.get(cfg.pool)!;
    const pp = cfg.proxyProtocol;
    if (material) {
      const server = tls.createServer({ ...material.options, allowHalfOpen: true, handshakeTimeout: cfg.clientHeaderTimeoutMs });
      server.on('secureConnection', pp ? this.onProxiedTls : this.acceptTls);
      // Without a listener here, node leaves a socket whose handshake timed out (or failed) open.
      server.on('tlsClientError', (err: Error, socket: tls.TLSSocket) => {
        if (material.clientAuth) clientCertRefused(this.name, err, socket);
        socket.destroy();
      });
      material.attach(server);
      this.tlsServer = pp ? server : undefined;
      this.server = pp ? net.createServer({ allowHalfOpen: true }, this.onProxyConnection) : server;
    } else {
      this.server = net.createServer({ allowHalfOpen: true }, pp ? this.onProxyConnection : this.onConnection);
    }
  }

  get connections(): number {
    return this.sockets.size;
  }

  prepareUpdate(cfg: ListenerConfig, pools: ReadonlyMap<string, BackendPool>): () => void {
    const pool = pools.get(cfg.pool);
    if (!pool) throw new Error(`listener ${cfg.name}: pool ${cfg.pool} does not exist`);
    const certificates = this.material && cfg.tls ? this.material.prepare(cfg.tls) : undefined;
    return () => {
      this.cfg = cfg;
      this.pool = pool;
      certificates?.();
    };
  }

  async listen(accept?: AcceptMode): Promise<void> {
    const { noDelayInherited } = await listenServer(this.server, this.cfg.listen, accept);
    // Plain listeners take accepted handles before net.Server wraps them in a net.Socket (its handle's
    // onconnection, which node:cluster's round-robin handle calls too).
    if (!this.material && dialRaw && !this.cfg.proxyProtocol) {
      takeAcceptedHandles(this.server, (client) => {
        if (!noDelayInherited) client.setNoDelay(true);
        this.onHandle(client);
      });
    }
  }

  private onHandle(handle: TcpHandle): void {
    const pool = this.pool;
    if (!pool.ipOnly || pool.tls) {
      // As net.Server would have made it.
      this.onConnection(new net.Socket({ handle, allowHalfOpen: true, readable: true, writable: true } as net.SocketConstructorOpts));
      return;
    }
    if (!this.admits()) {
      handle.close();
      return;
    }
    const t0 = performance.now();
    let node: ReturnType<typeof this.sockets.add> | undefined;
    let cancel: (() => void) | undefined;
    let retries = 0;
    const tunnel = new RawTunnel(tcpWrap!, handle, () => this.cfg.idleTimeoutMs, (t) => {
      if (t.backend) {
        t.backend.end();
        this.record(pool.name, t.backend.name, remote, t0, t.bytesIn, t.bytesOut, retries);
      } else {
        cancel?.();
      }
      this.release(node!);
    });
    node = this.sockets.add(tunnel);
    // getpeername(2) only when something uses the address.
    const remote = pool.hashKey || this.events.needsClient ? tunnel.remoteAddress() : '';
    const sendProxy = pool.config.sendProxy;
    cancel = connectUpstream(
      pool,
      pool.hashKey ? remote : undefined,
      this.events,
      // (A tunnel closed before this cancels the attempts in onClose: no call comes after it.)
      (err, ok) => {
        if (err || !ok) {
          tunnel.destroy();
          this.failed(pool.name, remote, t0, err);
          return;
        }
        retries = ok.retries;
        tunnel.splice(ok.socket, ok.backend, sendProxy && buildProxyHeader(sendProxy, tunnel.endpoints()));
      },
      dialRaw!,
    );
  }

  /** proxy_protocol: a new connection's PROXY header is read before anything else happens to it. */
  private readonly onProxyConnection = (raw: net.Socket): void => {
    if (!this.admits()) {
      raw.destroy();
      return;
    }
    const node = this.sockets.add(raw);
    const release = (): void => this.release(node);
    raw.once('close', release);
    readProxyHeader(raw, this.cfg.clientHeaderTimeoutMs, (err) => {
      raw.removeListener('close', release);
      release();
      if (err) {
        this.proxyRefused(raw, err);
        return;
      }
      if (this.tlsServer) {
        // The TLS handshake follows the header (counted once it is done, as without proxy_protocol).
        this.tlsServer.emit('connection', raw);
        return;
      }
      this.onConnection(raw);
      // readProxyHeader left it paused; onConnection has its listeners on.
      raw.resume();
    });
  };

  /** A TLS connection whose handshake is done. client_auth: counted once per connection (the bytes are not HTTP: no fields to pass on). */
  private readonly acceptTls = (client: tls.TLSSocket): void => {
    if (this.material?.clientAuth) clientCertOf(client, this.name);
    this.onConnection(client);
  };

  private readonly onProxiedTls = (client: tls.TLSSocket): void => {
    if (!adoptFromParent(client)) {
      this.proxyRefused(client, { reason: 'invalid', detail: 'TLS connection without its PROXY header' });
      return;
    }
    this.acceptTls(client);
  };

  private proxyRefused(socket: net.Socket, err: ProxyError): void {
    const peer = socket.remoteAddress ?? '';
    socket.destroy();
    this.events.proxyRefused?.(this.name, err.reason, peer, err.detail);
  }

  private readonly onConnection = (client: net.Socket): void => {
    // (A TLS handshake that finishes after stop() has been called must not start a new upstream exchange.)
    if (!this.admits()) {
      client.destroy();
      return;
    }
    const node = this.sockets.add(client);
    const pool = this.pool;
    const t0 = performance.now();
    // getpeername(2) only when something uses the address.
    const remote = pool.hashKey || this.events.needsClient ? (client.remoteAddress ?? '') : '';
    const idle = this.cfg.idleTimeoutMs;
    // Until a backend accepts, what the client sends is held (up to HOLD_BYTES, then reading pauses) for
    // whichever backend does: reading overlaps the connect, and a retry loses nothing.
    const held: Buffer[] = [];
    let heldBytes = 0;
    const hold = (chunk: Buffer): void => {
      held.push(chunk);
      heldBytes += chunk.length;
      if (heldBytes >= HOLD_BYTES) client.pause();
    };
    // Until spliced, an error (reset) only needs the socket gone; 'close' cancels the connect attempts.
    const early = (): void => {
      client.destroy();
    };
    client.on('data', hold);
    client.on('error', early);
    let spliced = false;
    let cancel: (() => void) | undefined;
    client.on('close', () => {
      if (!spliced) cancel?.();
      this.release(node);
    });
    cancel = connectUpstream(pool, pool.hashKey ? remote : undefined, this.events, (err, ok) => {
      if (err || !ok) {
        client.destroy();
        this.failed(pool.name, remote, t0, err);
        return;
      }
      if (client.destroyed) {
        ok.socket.destroy();
        ok.backend.end();
        return;
      }
      spliced = true;
      client.removeListener('data', hold);
      client.removeListener('error', early);
      const up = ok.socket;
      if (idle > 0) {
        const onIdle = (): void => {
          client.destroy();
          up.destroy();
        };
        client.setTimeout(idle, onIdle);
        up.setTimeout(idle, onIdle);
      }
      const sendProxy = pool.config.sendProxy;
      if (sendProxy) up.write(buildProxyHeader(sendProxy, clientEndpoints(client)));
      for (const chunk of held) up.write(chunk);
      held.length = 0;
      splice(client, up, () => {
        ok.backend.end();
        this.record(pool.name, ok.backend.name, remote, t0, client.bytesRead, client.bytesWritten, ok.retries);
      });
      // A FIN the client sent while connecting ('end' already emitted): splice's own 'end' listener missed it.
      if (client.readableEnded) passFin(up);
      if (client.isPaused()) client.resume();
    }, pool.tls ? pool.tls.dialer : netDialer);
  };

  /** A new connection may be taken: not stopped, and under the listener's max_connections. */
  private admits(): boolean {
    return !this.closed && !(this.cfg.maxConnections > 0 && this.sockets.size >= this.cfg.maxConnections);
  }

  /** Forgets a closed connection; the last one to close after stop() resolves it. */
  private release(node: ReturnType<typeof this.sockets.add>): void {
    this.sockets.delete(node);
    if (this.stopped && this.sockets.size === 0) this.stopped();
  }

  /** Records a connection no backend accepted. */
  private failed(pool: string, client: string, t0: number, err: ConnectFailure | null): void {
    this.record(pool, err?.backend?.name ?? '', client, t0, 0, 0, err?.retries ?? 0, err?.error ?? 'failed');
  }

  private record(pool: string, backend: string, client: string, t0: number, bytesIn: number, bytesOut: number, retries: number, error?: string): void {
    this.events.done({
      kind: 'tcp',
      listener: this.name,
      pool,
      backend,
      status: 0,
      method: '',
      path: '',
      client,
      bytesIn,
      bytesOut,
      seconds: (performance.now() - t0) / 1000,
      retries,
      error,
    });
  }

  /** Stops accepting; open connections carry on until they end (the caller bounds this by the grace period). */
  stop(): Promise<void> {
    this.closed = true;
    return new Promise((resolve) => {
      this.server.close();
      if (this.sockets.size === 0) resolve();
      else this.stopped = resolve;
    });
  }

  destroy(): void {
    for (const s of this.sockets.values()) s.destroy();
  }
}
