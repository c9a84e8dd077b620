// TLS to a pool's backends (`pools.NAME.tls`): the client context built from the pool's files, the options
// of each connection, a session cache per backend, and why a handshake failed.
//
// - Name: `server_name` when set, else the backend's host when it is a DNS name. An IP backend gets no SNI
//   (RFC 6066 section 3: "Literal IPv4 and IPv6 addresses are not permitted in HostName") and its certificate
//   must name that IP (an iPAddress subjectAltName; node's checkServerIdentity).
// - verify = true (the default): the chain must lead to `ca` (else node's root store) and the name must match;
//   either failing is a connect failure of that backend. verify = false accepts any certificate: insecure.
// - Sessions: the last session (TLS 1.2 session or TLS 1.3 ticket, node's 'session' event) of each
//   backend address and name is offered on the next connection to it (tls.connect `session`), so a new
//   connection resumes instead of doing a full handshake (isSessionReused()). The cache belongs to one
//   context: when a reload changes the files or settings the context is rebuilt with an empty cache, so
//   no connection resumes a session that was verified under the old CA.
// - Reload: files are re-read on every reload; an unchanged pool (same settings, same file bytes) keeps its
//   context and sessions. A changed one: new connections use the new context at once, and idle kept-alive
//   connections are closed (requests in flight on them finish), so no request after the reload goes out on
//   a connection verified with the old settings. HAProxy keeps such connections; lb prefers that a CA
//   rotation meant to stop trusting a backend takes effect at once, at the cost of new handshakes.

import net from 'node:net';
import tls from 'node:tls';
import type { BackendTlsConfig } from '../../config/model.js';
import type { Dialer } from './connect.js';
import { readPem } from './tls.js';

/** A file of `pools.NAME.tls` that cannot be used; `key` is the config key that names it. */
export class BackendTlsFileError extends Error {
  constructor(
    readonly key: 'ca' | 'cert' | 'key',
    message: string,
  ) {
    super(message);
  }
}

/** Handshake failure reasons (lb_backend_tls_errors_total's `reason`): a fixed set. */
export type TlsFailure = 'untrusted' | 'name_mismatch' | 'expired' | 'peer_alert' | 'handshake';

/** TLS handshake failures to backends: pool -> backend -> reason -> count (this process's). */
export const backendTlsErrors = new Map<string, Map<string, Map<TlsFailure, number>>>();

export function countTlsError(pool: string, backend: string, reason: TlsFailure): void {
  let byBackend = backendTlsErrors.get(pool);
  if (!byBackend) backendTlsErrors.set(pool, (byBackend = new Map()));
  let byReason = byBackend.get(backend);
  if (!byReason) byBackend.set(backend, (byReason = new Map()));
  byReason.set(reason, (byReason.get(reason) ?? 0) + 1);
}

const UNTRUSTED = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'INVALID_CA',
  'CERT_REVOKED',
]);

/**
 * The reason of a handshake failure, from node's error code: certificate verification (untrusted,
 * name_mismatch, expired), an alert the backend sent (e.g. it wanted a client certificate: peer_alert), or
 * anything else that broke the handshake. undefined when `err` is not a TLS failure (a refused connect...).
 */
export function tlsFailure(err: Error & { code?: string }): TlsFailure | undefined {
  const code = err.code ?? '';
  if (UNTRUSTED.has(code)) return 'untrusted';
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') return 'name_mismatch';
  if (code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID') return 'expired';
  if (/^ERR_SSL_.*ALERT/.test(code)) return 'peer_alert';
  if (code.startsWith('ERR_SSL_') || code === 'ERR_TLS_HANDSHAKE_TIMEOUT' || code === 'ECONNRESET_TLS') return 'handshake';
  return undefined;
}

/** The usable TLS settings of one pool: built at start and on each reload (in every process that connects). */
export class BackendTls {
  readonly context: tls.SecureContext;
  /** Settings and file bytes: an equal signature means nothing changed. */
  readonly signature: string;
  /** Last session per backend "host:port servername". */
  private readonly sessions = new Map<string, Buffer>();
  /** tcp pools: connectUpstream's dialer over this context. */
  readonly dialer: Dialer<net.Socket> = tlsDialer(this);

  constructor(
    readonly pool: string,
    readonly cfg: BackendTlsConfig,
    files: { ca?: Buffer; cert?: Buffer; key?: Buffer },
  ) {
    this.signature = JSON.stringify(cfg) + [files.ca, files.cert, files.key].map((b) => b?.toString('base64') ?? '').join('|');
    try {
      this.context = tls.createSecureContext({
        ...(files.ca ? { ca: files.ca } : {}),
        ...(files.cert && files.key ? { cert: files.cert, key: files.key } : {}),
        minVersion: cfg.minVersion,
      });
    } catch (err) {
      throw new BackendTlsFileError(files.cert ? 'cert' : 'ca', `tls: bad certificate, key or CA: ${(err as Error).message}`);
    }
  }

  /** SNI for a backend host: server_name, else the host when it is not an IP literal (RFC 6066 section 3). */
  serverName(host: string): string | undefined {
    return this.cfg.serverName ?? (net.isIP(host) === 0 ? host : undefined);
  }

  /**
   * tls.connect options for a backend: the pool's context, SNI, verification, and (`resume`) the cached
   * session. The caller adds its own socket options and calls `keepSessions` on the socket.
   */
  options(host: string, port: number, resume = true): tls.ConnectionOptions {
    const servername = this.serverName(host);
    const session = resume ? this.sessions.get(sessionKey(host, port, servername)) : undefined;
    const verify = this.cfg.verify;
    return {
      host,
      port,
      secureContext: this.context,
      // '' sends no SNI (and keeps node:https's agent from deriving one from the Host header).
      servername: servername ?? '',
      rejectUnauthorized: verify,
      // The name checked: server_name when set, else the host (a DNS name or an IP address).
      checkServerIdentity: verify ? (_h, cert) => tls.checkServerIdentity(servername ?? host, cert) : () => undefined,
      ...(session ? { session } : {}),
    };
  }

  /** Keeps the sessions the backend issues on `socket` for the next connection to it. */
  keepSessions(socket: tls.TLSSocket, host: string, port: number): void {
    const key = sessionKey(host, port, this.serverName(host));
    const verify = this.cfg.verify;
    // Only sessions of a verified connection are kept (a ticket may come before node has checked the
    // certificate: it waits for secureConnect).
    let early: Buffer | undefined;
    socket.on('session', (session: Buffer) => {
      if (!verify || socket.authorized) this.sessions.set(key, session);
      else early = session;
    });
    socket.once('secureConnect', () => {
      if (early && socket.authorized) this.sessions.set(key, early);
      early = undefined;
    });
  }

  /** A connection to `host:port` over this pool's TLS, with its sessions kept. */
  connect(host: string, port: number, extra: tls.ConnectionOptions = {}): tls.TLSSocket {
    const socket = tls.connect({ ...this.options(host, port), ...extra });
    this.keepSessions(socket, host, port);
    return socket;
  }

  /** Drops the session of a backend whose handshake failed (a resumption must not mask a new verdict). */
  forget(host: string, port: number): void {
    this.sessions.delete(sessionKey(host, port, this.serverName(host)));
  }
}

function sessionKey(host: string, port: number, servername: string | undefined): string {
  return `${host}:${port} ${servername ?? ''}`;
}

function readFile(key: 'ca' | 'cert' | 'key', file: string, certificates: boolean): Buffer {
  try {
    return readPem(key, file, certificates);
  } catch (err) {
    throw new BackendTlsFileError(key, (err as Error).message);
  }
}

/**
 * Reads a pool's TLS files and builds its context; returns `previous` when nothing changed (its sessions
 * kept). Throws BackendTlsFileError naming the key of the file that cannot be used.
 */
export function loadBackendTls(pool: string, cfg: BackendTlsConfig, previous?: BackendTls): BackendTls {
  const files = {
    ...(cfg.ca ? { ca: readFile('ca', cfg.ca, true) } : {}),
    ...(cfg.cert ? { cert: readFile('cert', cfg.cert, true) } : {}),
    ...(cfg.key ? { key: readFile('key', cfg.key, false) } : {}),
  };
  const next = new BackendTls(pool, cfg, files);
  return previous && previous.signature === next.signature ? previous : next;
}

/**
 * connectUpstream's dialer for a tcp pool with TLS (TLS origination): a backend is connected once the
 * handshake is done and verified; a failed handshake is a connect failure (counted by reason).
 */
export function tlsDialer(t: BackendTls): Dialer<net.Socket> {
  return {
    dial(b, cb) {
      const { host, port } = b.address;
      // (tls.connect passes allowHalfOpen on to the TLSSocket; @types/node does not list it.)
      const socket = t.connect(host, port, { allowHalfOpen: true } as tls.ConnectionOptions);
      socket.setNoDelay(true);
      const failed = (err: Error & { code?: string }): void => {
        socket.removeListener('secureConnect', connected);
        const reason = tlsFailure(err);
        if (reason) {
          t.forget(host, port);
          countTlsError(t.pool, b.name, reason);
        }
        cb(err);
      };
      const connected = (): void => {
        socket.removeListener('error', failed);
        cb(null);
      };
      socket.once('error', failed);
      socket.once('secureConnect', connected);
      return socket;
    },
    abort(socket) {
      socket.destroy();
    },
  };
}
