// Route matching for http listeners: routes are checked in order, first match wins, else the listener's
// default pool. Host matching is exact or a leading "*." wildcard ("*.example.com" matches
// "a.example.com" and "a.b.example.com", not "example.com"), case-insensitive, port ignored.

import type { ListenerConfig } from '../../config/model.js';
import type { BackendPool } from './pool.js';
import { rateLimiters, type RateLimiter } from './rate-limit.js';

export interface CompiledRoute {
  host?: string;
  hostSuffix?: string;
  pathPrefix?: string;
  pool: BackendPool;
  /** The route's `rate_limit`; undefined for none (and for the listener's default pool). */
  limit?: RateLimiter | undefined;
  /** The key of a rate limit with key = "route": the route's index, "default" when none matched. */
  id: string;
}

export class Router {
  private readonly routes: CompiledRoute[];
  readonly fallback: BackendPool;
  private readonly fallbackRoute: CompiledRoute;

  constructor(cfg: ListenerConfig, pools: ReadonlyMap<string, BackendPool>) {
    const pool = (name: string): BackendPool => {
      const p = pools.get(name);
      if (!p) throw new Error(`listener ${cfg.name}: pool ${name} does not exist`);
      return p;
    };
    this.fallback = pool(cfg.pool);
    this.fallbackRoute = { pool: this.fallback, id: 'default' };
    this.routes = cfg.routes.map((r, i) => {
      const c: CompiledRoute = { pool: pool(r.pool), limit: rateLimiters.get(r.rateLimit), id: String(i) };
      if (r.host?.startsWith('*.')) c.hostSuffix = r.host.slice(1).toLowerCase();
      else if (r.host) c.host = r.host.toLowerCase();
      if (r.pathPrefix) c.pathPrefix = r.pathPrefix;
      return c;
    });
  }

  route(hostHeader: string | undefined, url: string): BackendPool {
    return this.match(hostHeader, url).pool;
  }

  match(hostHeader: string | undefined, url: string): CompiledRoute {
    const routes = this.routes;
    if (routes.length === 0) return this.fallbackRoute;
    const host = hostHeader ? stripPort(hostHeader).toLowerCase() : '';
    for (let i = 0; i < routes.length; i++) {
      const r = routes[i]!;
      if (r.host !== undefined && r.host !== host) continue;
      if (r.hostSuffix !== undefined && !(host.endsWith(r.hostSuffix) && host.length > r.hostSuffix.length)) continue;
      if (r.pathPrefix !== undefined && !url.startsWith(r.pathPrefix)) continue;
      return r;
    }
    return this.fallbackRoute;
  }
}

function stripPort(host: string): string {
  if (host.startsWith('[')) {
    const end = host.indexOf(']');
    return end === -1 ? host : host.slice(0, end + 1);
  }
  const colon = host.indexOf(':');
  return colon === -1 ? host : host.slice(0, colon);
}
