// The one backend state record of a worker: the data plane, the IPC state updates from the primary and the
// in-flight reports all read and write this object. Admin state, health and runtime weight are decided by
// the primary and pushed here; `inflight` is this process's own count.

import type { Candidate } from '../../algorithms/types.js';
import type { Address, BackendConfig, PoolConfig } from '../../config/model.js';
import type net from 'node:net';
import type { BackendTls } from './backend-tls.js';
import { buildProxyHeader, clientEndpoints } from './proxy-protocol.js';
import { UpstreamPool, type Upstream, type UpstreamOptions } from './upstream.js';
import { H2UpstreamPool } from './upstream-h2.js';

/**
 * send_proxy on http: a connection that began with one client's PROXY header must not carry another
 * client's requests (HAProxy marks such connections private). Each client connection gets its own
 * keep-alive pool per backend, reused by its later requests and closed with it.
 */
const privatePools = new WeakMap<net.Socket, Map<Backend, { pool: UpstreamPool; cfg: PoolConfig }>>();
import type { RequestQueue } from './queue.js';

/** `maint` (lb maint): out of traffic like `drain`, and the primary runs no health checks on it. */
export type AdminState = 'ready' | 'drain' | 'maint';
export type HealthState = 'up' | 'down' | 'unchecked';

/** What the primary decides about a backend; pushed to every worker. */
export interface BackendControl {
  admin: AdminState;
  health: HealthState;
  /** Effective weight (runtime override and slow start applied). */
  weight: number;
  /**
   * Present while slow start ramps (0 < ramp < 1): the fraction of the window passed (at least 0.05), and
   * the weight after the ramp. Pools whose algorithm hashes a key build their table with `fullWeight` and
   * admit a share `ramp` of the backend's keys instead (see BackendPool.pick); the others use `weight`.
   */
  ramp?: number;
  fullWeight?: number;
}

/**
 * What a pool shares with its backends: its in-flight total, its Picker.inflightChanged hook, and its queue
 * (max_queue), if any.
 */
export interface PoolLoad {
  inflight: number;
  changed: ((b: Backend) => void) | undefined;
  queue: RequestQueue | undefined;
}

export class Backend implements Candidate {
  readonly name: string;
  address: Address;
  /** Effective weight; the pool rebuilds its picker when this changes. */
  weight: number;
  admin: AdminState = 'ready';
  health: HealthState = 'unchecked';
  /** admin = ready, health != down and weight > 0: may receive new traffic. */
  usable = true;
  /** Requests (http) and connections (tcp, websocket) in flight from this process. Never negative. */
  inflight = 0;
  /**
   * Slow start of a backend in a pool whose algorithm hashes a key: the share of its keys admitted
   * (BackendControl.ramp), 1 when not ramping.
   */
  ramp = 1;
  /** The in-flight total of the pool serving this backend (PickContext.inflightTotal); set by the pool. */
  poolLoad: PoolLoad = { inflight: 0, changed: undefined, queue: undefined };
  /** max_connections: `inflight` at most (0 = no cap); a backend at its cap is not picked. */
  maxConnections: number;
  /** Priority tier (lower preferred); the pool groups its backends by it. */
  priority: number;
  /** Consecutive failures seen by this process since the last success (passive checks report these). */
  failStreak = 0;
  /**
   * Attempts ended and those that succeeded (no failure, status < 500) since the worker last reported them,
   * for success-rate outlier detection; undefined unless the pool's passive.success_rate is set.
   */
  outcomes: { total: number; ok: number } | undefined = undefined;
  /** True once the pool has dropped this backend (reload, runtime removal): no new traffic, in-flight finishes. */
  retired = false;
  /** The pool's TLS to backends (pools.NAME.tls); set by the pool, undefined for plain text. */
  tls: BackendTls | undefined;
  private http?: Upstream;

  constructor(cfg: BackendConfig) {
    this.name = cfg.name;
    this.address = cfg.address;
    this.weight = cfg.weight;
    this.maxConnections = cfg.maxConnections;
    this.priority = cfg.priority;
    this.refresh();
  }

  /** May take one more request or connection now: usable and under its max_connections. */
  get available(): boolean {
    return this.usable && (this.maxConnections === 0 || this.inflight < this.maxConnections);
  }

  /**
   * Applies the primary's decision; returns true when the weight changed (the pool must rebuild).
   * `keyRamp`: the pool's algorithm hashes a key, so slow start is a key admission share, not a weight.
   */
  control(c: BackendControl, keyRamp = false): boolean {
    const ramping = keyRamp && c.ramp !== undefined && c.fullWeight !== undefined;
    const weight = ramping ? c.fullWeight! : c.weight;
    const weightChanged = weight !== this.weight;
    this.admin = c.admin;
    this.health = c.health;
    this.weight = weight;
    this.ramp = ramping ? c.ramp! : 1;
    this.refresh();
    return weightChanged;
  }

  private refresh(): void {
    this.usable = !this.retired && this.admin === 'ready' && this.health !== 'down' && this.weight > 0;
  }

  retire(): void {
    this.retired = true;
    this.refresh();
    const http = this.http;
    this.http = undefined;
    // close() lets in-flight requests finish, then closes the kept-alive connections.
    if (http) http.close();
  }

  /** The keep-alive connection pool to this backend for http listeners, created on first use. */
  upstream(pool: PoolConfig): Upstream {
    if (this.http) return this.http;
    const protocol = pool.protocol;
    this.http =
      protocol === undefined || protocol === 'http1'
        ? new UpstreamPool(this.upstreamOptions(pool))
        : new H2UpstreamPool({ ...this.upstreamOptions(pool), protocol, maxSessions: pool.h2MaxConnections ?? 4, pool: pool.name, name: this.name });
    return this.http;
  }

  /**
   * send_proxy (http): the connections to this backend that serve `client` only, each starting with a
   * PROXY header of `pool.sendProxy` for that client; closed when the client connection closes.
   */
  privateUpstream(pool: PoolConfig, client: net.Socket): UpstreamPool {
    let mine = privatePools.get(client);
    if (!mine) {
      const m = (mine = new Map());
      privatePools.set(client, m);
      client.once('close', () => {
        for (const p of m.values()) p.pool.close();
        m.clear();
      });
    }
    const had = mine.get(this);
    // A reload that changed the pool (timeouts, version) or this backend's address: new connections.
    if (had && had.cfg === pool && had.pool.options.host === this.address.host && had.pool.options.port === this.address.port && !had.pool.closed) return had.pool;
    had?.pool.close();
    const up = new UpstreamPool({ ...this.upstreamOptions(pool), proxyHeader: buildProxyHeader(pool.sendProxy ?? 'v2', clientEndpoints(client)) });
    mine.set(this, { pool: up, cfg: pool });
    return up;
  }

  private upstreamOptions(pool: PoolConfig): UpstreamOptions {
    return {
      host: this.address.host,
      port: this.address.port,
      connectTimeoutMs: pool.connectTimeoutMs,
      // per_try_timeout, when set, bounds each attempt's wait for a response head (http-proxy.ts).
      responseTimeoutMs: pool.perTryTimeoutMs || pool.responseTimeoutMs,
      readTimeoutMs: pool.readTimeoutMs,
      idleTimeoutMs: 4_000,
      // The proxy forwards the backend's head as it is; the parser's limit must not reject it first.
      maxHeaderSize: 1024 * 1024,
      ...(this.tls ? { tls: this.tls, name: this.name } : {}),
    };
  }

  /** Timeouts or TLS settings changed on reload: the next request builds a new connection pool with them. */
  resetUpstream(): void {
    const http = this.http;
    this.http = undefined;
    if (http) http.close();
  }

  begin(): void {
    this.inflight++;
    const load = this.poolLoad;
    load.inflight++;
    if (load.changed !== undefined) load.changed(this);
  }

  end(): void {
    if (this.inflight > 0) {
      this.inflight--;
      const load = this.poolLoad;
      load.inflight--;
      if (load.changed !== undefined) load.changed(this);
      if (load.queue !== undefined) load.queue.freed();
    }
  }
}
