// The one backend state record of a worker: the data plane, the IPC state updates from the primary and the
// in-flight reports all read and write this object. Admin state, health and runtime weight are decided by
// the primary and pushed here; `inflight` is this process's own count.

import type { Candidate } from '../../algorithms/types.js';
import type { Address, BackendConfig, PoolConfig } from '../../config/model.js';
import { UpstreamPool } from './upstream.js';

/** `maint` (lb maint): out of traffic like `drain`, and the primary runs no health checks on it. */
export type AdminState = 'ready' | 'drain' | 'maint';
export type HealthState = 'up' | 'down' | 'unchecked';

/** What the primary decides about a backend; pushed to every worker. */
export interface BackendControl {
  admin: AdminState;
  health: HealthState;
  /** Effective weight (runtime override and slow start applied). */
  weight: number;
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
  /** The in-flight total of the pool serving this backend (PickContext.inflightTotal); set by the pool. */
  poolLoad: { inflight: number } = { inflight: 0 };
  /** max_connections: `inflight` at most (0 = no cap); a backend at its cap is not picked. */
  maxConnections: number;
  /** Priority tier (lower preferred); the pool groups its backends by it. */
  priority: number;
  /** Consecutive failures seen by this process since the last success (passive checks report these). */
  failStreak = 0;
  /** True once the pool has dropped this backend (reload, runtime removal): no new traffic, in-flight finishes. */
  retired = false;
  private http?: UpstreamPool;

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

  /** Applies the primary's decision; returns true when the weight changed (the pool must rebuild). */
  control(c: BackendControl): boolean {
    const weightChanged = c.weight !== this.weight;
    this.admin = c.admin;
    this.health = c.health;
    this.weight = c.weight;
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
  upstream(pool: PoolConfig): UpstreamPool {
    if (this.http) return this.http;
    this.http = new UpstreamPool({
      host: this.address.host,
      port: this.address.port,
      connectTimeoutMs: pool.connectTimeoutMs,
      responseTimeoutMs: pool.responseTimeoutMs,
      readTimeoutMs: pool.readTimeoutMs,
      idleTimeoutMs: 4_000,
      // The proxy forwards the backend's head as it is; the parser's limit must not reject it first.
      maxHeaderSize: 1024 * 1024,
    });
    return this.http;
  }

  /** Timeouts changed on reload: the next request builds a new connection pool with them. */
  resetUpstream(): void {
    const http = this.http;
    this.http = undefined;
    if (http) http.close();
  }

  begin(): void {
    this.inflight++;
    this.poolLoad.inflight++;
  }

  end(): void {
    if (this.inflight > 0) {
      this.inflight--;
      this.poolLoad.inflight--;
    }
  }
}
