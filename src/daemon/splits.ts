// Runtime split weights (`lb split LISTENER/ROUTE POOL=W ...`), owned by the primary like runtime backend
// weights: set through the admin socket, pushed whole to every worker (`splits` message, and with every
// `config` and `commit`), kept in daemon.state_file, and kept across a reload for routes that still split
// across the pools named.

import type { LbConfig, RouteConfig } from '../../config/model.js';
import { routeName } from '../../config/model.js';
import { AdminError, type AdminRequest } from '../admin/server.js';
import type { SplitOverrides } from '../dataplane/route-match.js';
import type { SavedSplit } from './state-file.js';

/** Largest weight of a split entry (as the config's). */
export const MAX_SPLIT_WEIGHT = 10000;

export function findRoute(config: LbConfig, listener: string, route: string): RouteConfig | undefined {
  const l = config.listeners[listener];
  if (!l) return undefined;
  const i = l.routes.findIndex((r, j) => routeName(listener, j, r) === route);
  return i === -1 ? undefined : l.routes[i];
}

/** The weights in effect for a split route: the config's, with the runtime ones over them. */
export function effectiveWeights(r: RouteConfig, override: Readonly<Record<string, number>> | undefined): Array<{ pool: string; weight: number; configWeight: number }> {
  return (r.split ?? []).map((e) => ({ pool: e.pool, weight: override?.[e.pool] ?? e.weight, configWeight: e.weight }));
}

/**
 * Why an override no longer fits `config` (the route is gone, no longer splits, or lost a pool), or
 * undefined when it still applies.
 */
export function overrideProblem(config: LbConfig, listener: string, route: string, weights: Readonly<Record<string, number>>): string | undefined {
  const r = findRoute(config, listener, route);
  if (!r) return `no route ${listener}/${route}`;
  if (!r.split) return `route ${listener}/${route} does not split`;
  const pools = new Set(r.split.map((e) => e.pool));
  const missing = Object.keys(weights).filter((p) => !pools.has(p));
  if (missing.length > 0) return `route ${listener}/${route} no longer splits to ${missing.join(', ')}`;
  if (effectiveWeights(r, weights).every((e) => e.weight === 0)) return `route ${listener}/${route}: the weights would all be 0`;
  return undefined;
}

/** The overrides that still fit `config`, and why each other one was dropped. */
export function keepFitting(config: LbConfig, splits: SplitOverrides): { kept: SplitOverrides; dropped: string[] } {
  const kept: SplitOverrides = {};
  const dropped: string[] = [];
  for (const [l, routes] of Object.entries(splits)) {
    for (const [route, weights] of Object.entries(routes)) {
      const problem = overrideProblem(config, l, route, weights);
      if (problem) dropped.push(problem);
      else (kept[l] ??= {})[route] = weights;
    }
  }
  return { kept, dropped };
}

export function toSaved(splits: SplitOverrides): SavedSplit[] {
  const out: SavedSplit[] = [];
  for (const [listener, routes] of Object.entries(splits)) for (const [route, weights] of Object.entries(routes)) out.push({ listener, route, weights });
  return out;
}

export function fromSaved(saved: readonly SavedSplit[]): SplitOverrides {
  const out: SplitOverrides = {};
  for (const s of saved) (out[s.listener] ??= {})[s.route] = { ...s.weights };
  return out;
}

/**
 * The admin `split` command checked against `config` and the overrides in effect; returns the new overrides
 * (a fresh object) and what to report. Errors carry codes: MISSING_FIELD, INVALID_FIELD, UNKNOWN_LISTENER,
 * UNKNOWN_ROUTE, NOT_SPLIT, UNKNOWN_POOL, WEIGHTS_ZERO.
 */
export function applySplitCommand(config: LbConfig, current: SplitOverrides, req: AdminRequest): {
  next: SplitOverrides;
  listener: string;
  route: string;
  before: Array<{ pool: string; weight: number; configWeight: number }>;
  after: Array<{ pool: string; weight: number; configWeight: number }>;
} {
  const listener = req.listener;
  const route = req.route;
  if (typeof listener !== 'string' || listener === '') throw new AdminError('MISSING_FIELD', '"split" needs "listener" (a string)');
  if (typeof route !== 'string' || route === '') throw new AdminError('MISSING_FIELD', '"split" needs "route" (a string)');
  const l = config.listeners[listener];
  if (!l) throw new AdminError('UNKNOWN_LISTENER', `no listener ${listener}`);
  const r = findRoute(config, listener, route);
  if (!r) {
    const names = l.routes.map((x, j) => routeName(listener, j, x));
    throw new AdminError('UNKNOWN_ROUTE', `listener ${listener} has no route ${route}${names.length ? ` (routes: ${names.join(', ')})` : ' (it has no routes)'}`);
  }
  if (!r.split) throw new AdminError('NOT_SPLIT', `route ${listener}/${route} has no split (it sends to ${r.pool ?? (r.redirect ? 'a redirect' : 'a fixed response')})`);
  const reset = req.reset === true;
  if (req.reset !== undefined && typeof req.reset !== 'boolean') throw new AdminError('INVALID_FIELD', '"reset" must be true or false');
  const old = current[listener]?.[route];
  const before = effectiveWeights(r, old);
  const next: SplitOverrides = JSON.parse(JSON.stringify(current)) as SplitOverrides;
  if (reset) {
    if (req.weights !== undefined) throw new AdminError('INVALID_FIELD', '"weights" and "reset" exclude each other');
    if (next[listener]) {
      delete next[listener][route];
      if (Object.keys(next[listener]).length === 0) delete next[listener];
    }
    return { next, listener, route, before, after: effectiveWeights(r, undefined) };
  }
  const w = req.weights;
  if (w === undefined) throw new AdminError('MISSING_FIELD', '"split" needs "weights" ({"POOL": N, ...}) or "reset": true');
  if (typeof w !== 'object' || w === null || Array.isArray(w) || Object.keys(w).length === 0) {
    throw new AdminError('INVALID_FIELD', '"weights" must be an object of pool names to weights, e.g. {"app": 90, "app-canary": 10}');
  }
  const pools = r.split.map((e) => e.pool);
  const merged: Record<string, number> = { ...(old ?? {}) };
  for (const [pool, n] of Object.entries(w as Record<string, unknown>)) {
    if (!pools.includes(pool)) throw new AdminError('UNKNOWN_POOL', `route ${listener}/${route} does not split to pool ${pool} (its pools: ${pools.join(', ')})`);
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > MAX_SPLIT_WEIGHT) {
      throw new AdminError('INVALID_FIELD', `weight of ${pool} must be an integer from 0 to ${MAX_SPLIT_WEIGHT}, got ${JSON.stringify(n)}`);
    }
    merged[pool] = n;
  }
  const after = effectiveWeights(r, merged);
  if (after.every((e) => e.weight === 0)) throw new AdminError('WEIGHTS_ZERO', `route ${listener}/${route}: the weights would all be 0; at least one pool needs a weight above 0`);
  // Entries equal to the config's are not kept: the override holds only what differs.
  for (const e of after) if (e.weight === e.configWeight) delete merged[e.pool];
  if (Object.keys(merged).length === 0) {
    if (next[listener]) delete next[listener][route];
    if (next[listener] && Object.keys(next[listener]).length === 0) delete next[listener];
  } else (next[listener] ??= {})[route] = merged;
  return { next, listener, route, before, after };
}
