// Route matching for http listeners: routes are checked in order, first match wins, else the listener's
// default pool. Host matching is exact or a leading "*." wildcard ("*.example.com" matches
// "a.example.com" and "a.b.example.com", not "example.com"), case-insensitive, port ignored. Conditions
// beyond host and path prefix, splits and rewrites are compiled by route-match.ts; a route without them
// costs what it did before (one undefined check).

import type { ListenerConfig } from '../../config/model.js';
import type { HttpRequest } from './exchange.js';
import type { BackendPool } from './pool.js';
import { CompiledRoute, type SplitOverrides } from './route-match.js';
import { stripPort } from './rewrite.js';

export class Router {
  readonly routes: CompiledRoute[];
  readonly fallback: BackendPool;

  constructor(cfg: ListenerConfig, pools: ReadonlyMap<string, BackendPool>, splits?: SplitOverrides) {
    const pool = (name: string): BackendPool => {
      const p = pools.get(name);
      if (!p) throw new Error(`listener ${cfg.name}: pool ${name} does not exist`);
      return p;
    };
    this.fallback = pool(cfg.pool);
    this.routes = cfg.routes.map((r, i) => new CompiledRoute(cfg, i, r, pool));
    this.applySplits(splits?.[cfg.name]);
  }

  /** Runtime split weights for this listener's routes (route name -> pool -> weight); absent routes: the config's. */
  applySplits(byRoute: Readonly<Record<string, Record<string, number>>> | undefined): void {
    for (const r of this.routes) r.split?.setWeights(byRoute?.[r.name]);
  }

  /** The first route that matches, or undefined (the listener's pool serves). */
  route(hostHeader: string | undefined, url: string, req: HttpRequest): CompiledRoute | undefined {
    const routes = this.routes;
    if (routes.length === 0) return undefined;
    const host = hostHeader ? stripPort(hostHeader).toLowerCase() : '';
    for (let i = 0; i < routes.length; i++) {
      const r = routes[i]!;
      if (r.host !== undefined && r.host !== host) continue;
      if (r.hostSuffix !== undefined && !(host.endsWith(r.hostSuffix) && host.length > r.hostSuffix.length)) continue;
      if (r.pathPrefix !== undefined && !url.startsWith(r.pathPrefix)) continue;
      if (r.match !== undefined && !r.match(req)) continue;
      return r;
    }
    return undefined;
  }
}
