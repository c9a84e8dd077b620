// What the data plane needs of a listener of either protocol, and binding with errors that name the address.

import type { SplitOverrides } from './route-match.js';
import type net from 'node:net';
import type https from 'node:https';
import type tls from 'node:tls';
import type { Address, ListenerConfig, TlsConfig } from '../../config/model.js';
import type { BackendPool } from './pool.js';
import { setListenerNoDelay } from '../node-internals/handles.js';

export interface Listener {
  readonly name: string;
  readonly protocol: 'http' | 'tcp';
  cfg: ListenerConfig;
  /** Open client connections. */
  readonly connections: number;
  /** Binds; `accept` is daemon.accept ("reuseport" binds this process's own SO_REUSEPORT socket). */
  listen(accept?: AcceptMode): Promise<void>;
  /**
   * Checks a reloaded config for this listener (new TLS files are read, routes resolved against `pools`)
   * without changing anything; throws when it cannot be used. The function returned applies it in place
   * and cannot fail: the commit of a reload.
   */
  prepareUpdate(cfg: ListenerConfig, pools: ReadonlyMap<string, BackendPool>, splits?: SplitOverrides): () => void;
  /** Stops accepting new connections; resolves when every connection has closed. */
  stop(): Promise<void>;
  /** Ends every open connection now. */
  destroy(): void;
}

/** TLS settings for a listener (https or TLS-over-tcp), built by the caller from `listeners.NAME.tls`. */
export interface TlsMaterial {
  options: https.ServerOptions & tls.TlsOptions;
  /** The listener's client_auth mode now (follows reloads); undefined: no client certificates asked for. */
  clientAuth: 'required' | 'optional' | undefined;
  /** Hooks SNI and certificate reloads onto the server. */
  attach(server: tls.Server): void;
  /**
   * Re-reads the certificate files (lb reload); throws, changing nothing, when one cannot be used. The
   * function returned swaps them in (new handshakes only).
   */
  prepare(cfg: TlsConfig): () => void;
}

export class ListenError extends Error {
  readonly code = 'LISTEN_FAILED';
  constructor(
    readonly listener: string,
    readonly address: string,
    override readonly cause: Error & { code?: string },
  ) {
    super(`listener ${listener}: cannot listen on ${address}: ${cause.code ?? cause.message}`);
  }
}

export type AcceptMode = 'round-robin' | 'shared' | 'reuseport';

export interface ListenResult {
  /** Accepted sockets get TCP_NODELAY from the listening socket (else each gets it on 'connection'). */
  noDelayInherited: boolean;
}

/**
 * Binds `server` and gives its accepted sockets TCP_NODELAY: set once on the listening socket, which Linux
 * copies to every socket accept(2) returns, so that they need no setsockopt(2) each (create the server with
 * `noDelay: false`). Where that cannot be done (not Linux, or cluster round-robin, where the primary accepts
 * and the worker's server has no socket of its own), each accepted socket gets it on 'connection'.
 */
export function listenServer(server: net.Server, addr: Address, accept: AcceptMode = 'round-robin'): Promise<ListenResult> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    // "reuseport": each worker binds its own socket (exclusive: not through the cluster primary) with
    // SO_REUSEPORT, so the kernel spreads connections; Node >= 22.12 (config validation checks the version).
    const reuse = accept === 'reuseport';
    server.listen({ host: addr.host, port: addr.port, backlog: 4096, exclusive: reuse, ...(reuse ? { reusePort: true } : {}) }, () => {
      server.removeListener('error', onError);
      const inherited = process.platform === 'linux' && setListenerNoDelay(server);
      if (!inherited) server.prependListener('connection', (s: net.Socket) => s.setNoDelay(true));
      resolve({ noDelayInherited: inherited });
    });
  });
}
