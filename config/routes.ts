// The semantic checks and model of one `[[listeners.NAME.routes]]` entry beyond what the schema checks:
// which keys go together, regexes, header templates and the fields a rewrite may not touch. Every problem
// is reported at its own key (file, line and key, as the rest of load.ts).

import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { PathSegment } from './locate.js';
import type { HashKey, HeaderRewrite, RedirectConfig, RespondConfig, RouteConfig, SplitEntry, ValueMatch } from './model.js';
import { regexProblem } from '../src/dataplane/route-match.js';
import { FORBIDDEN_REQUEST, FORBIDDEN_RESPONSE, parseTemplate } from '../src/dataplane/rewrite.js';

type Table = Record<string, unknown>;

export interface RouteContext {
  report(at: PathSegment[], message: string): void;
  /** Checks `t.pool` names a pool (reports it otherwise) and returns it. */
  checkPool(t: Table, path: PathSegment[]): string;
  /** Checks `t.rate_limit` names a [rate_limits] table (reports it otherwise) and returns it. */
  checkLimit(t: Table, path: PathSegment[]): string | undefined;
  parseHashKey(text: string): { ok: true; key: HashKey } | { ok: false; error: string };
  /** The config file's directory (body_file is relative to it). */
  dir: string;
}

const isTable = (v: unknown): v is Table => typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const CTL = /[\x00-\x08\x0a-\x1f\x7f]/;
const ACTIONS = ['pool', 'split', 'redirect', 'respond'] as const;

export function buildRoute(r: Table, path: PathSegment[], ctx: RouteContext): RouteConfig {
  const str = (t: Table, k: string): string | undefined => (typeof t[k] === 'string' ? (t[k] as string) : undefined);
  const out: RouteConfig = {};
  const name = str(r, 'name');
  if (name !== undefined) out.name = name;
  const host = str(r, 'host');
  if (host !== undefined) out.host = host.toLowerCase().replace(/\.$/, '');
  const pathPrefix = str(r, 'path_prefix');
  if (pathPrefix !== undefined) out.pathPrefix = pathPrefix;
  const rateLimit = ctx.checkLimit(r, path);
  if (rateLimit !== undefined) out.rateLimit = rateLimit;
  if (Array.isArray(r['methods'])) out.methods = (r['methods'] as unknown[]).filter((m): m is string => typeof m === 'string');

  for (const [key, kind] of [['headers', 'header'], ['cookies', 'cookie'], ['query', 'query']] as const) {
    if (!Array.isArray(r[key])) continue;
    const list: ValueMatch[] = [];
    (r[key] as unknown[]).forEach((m, i) => {
      if (!isTable(m)) return;
      const mpath = [...path, key, i];
      const given = (['exact', 'prefix', 'regex', 'present'] as const).filter((k) => m[k] !== undefined);
      if (given.length !== 1) {
        ctx.report(given.length === 0 ? mpath : [...mpath, given[1]!], given.length === 0
          ? 'give one of exact, prefix, regex or present'
          : `${given.join(' and ')} exclude each other: give one of exact, prefix, regex or present`);
        return;
      }
      let mname = str(m, 'name') ?? '';
      if (kind !== 'query' && !TOKEN.test(mname)) {
        ctx.report([...mpath, 'name'], `invalid ${kind} name ${JSON.stringify(mname)}: use an HTTP token (RFC 9110 §5.6.2)`);
        return;
      }
      if (kind === 'header') mname = mname.toLowerCase();
      const regex = str(m, 'regex');
      if (regex !== undefined) {
        const problem = regexProblem(regex);
        if (problem) {
          ctx.report([...mpath, 'regex'], problem);
          return;
        }
      }
      const vm: ValueMatch = { name: mname };
      for (const k of ['exact', 'prefix', 'regex'] as const) if (typeof m[k] === 'string') vm[k] = m[k] as string;
      if (typeof m['present'] === 'boolean') vm.present = m['present'] as boolean;
      list.push(vm);
    });
    out[key] = list;
  }

  const actions = ACTIONS.filter((k) => r[k] !== undefined);
  if (actions.length === 0) ctx.report(path, 'a route needs one of pool, split, redirect or respond');
  else if (actions.length > 1) ctx.report([...path, actions[1]!], `${actions.join(' and ')} exclude each other: a route has one of pool, split, redirect or respond`);

  if (r['pool'] !== undefined) out.pool = ctx.checkPool(r, path);
  if (Array.isArray(r['split'])) {
    const split: SplitEntry[] = [];
    const seen = new Set<string>();
    (r['split'] as unknown[]).forEach((e, i) => {
      if (!isTable(e)) return;
      const pool = ctx.checkPool(e, [...path, 'split', i]);
      if (seen.has(pool)) ctx.report([...path, 'split', i, 'pool'], `pool ${JSON.stringify(pool)} is in the split twice`);
      seen.add(pool);
      split.push({ pool, weight: typeof e['weight'] === 'number' ? e['weight'] : 0 });
    });
    if (split.length > 0 && split.every((e) => e.weight === 0)) ctx.report([...path, 'split'], 'the weights must not all be 0');
    out.split = split;
  }
  const sticky = str(r, 'sticky');
  if (sticky !== undefined) {
    if (r['split'] === undefined) ctx.report([...path, 'sticky'], 'sticky applies to a split only');
    const k = ctx.parseHashKey(sticky);
    if (!k.ok) ctx.report([...path, 'sticky'], k.error.replace('hash_key', 'sticky'));
    else out.sticky = k.key;
  }

  const forwards = r['pool'] !== undefined || r['split'] !== undefined;
  for (const [key, field, forbidden] of [
    ['request_headers', 'requestHeaders', FORBIDDEN_REQUEST],
    ['response_headers', 'responseHeaders', FORBIDDEN_RESPONSE],
  ] as const) {
    const t = r[key];
    if (!isTable(t)) continue;
    if (!forwards) ctx.report([...path, key], `${key} applies to routes that forward (pool or split); a redirect or respond route answers itself`);
    const rw: HeaderRewrite = { remove: [], set: [], add: [] };
    const refuseName = (n: string, at: PathSegment[]): boolean => {
      if (!forbidden.has(n.toLowerCase())) return false;
      ctx.report(at, `${n} cannot be rewritten: lb ${n.toLowerCase() === 'host' ? 'routes by it' : 'sets the framing and hop-by-hop fields itself'}`);
      return true;
    };
    if (Array.isArray(t['remove'])) {
      (t['remove'] as unknown[]).forEach((n, i) => {
        if (typeof n === 'string' && !refuseName(n, [...path, key, 'remove', i])) rw.remove.push(n);
      });
    }
    for (const op of ['set', 'add'] as const) {
      const values = t[op];
      if (!isTable(values)) continue;
      for (const [n, v] of Object.entries(values)) {
        if (typeof v !== 'string' || refuseName(n, [...path, key, op, n])) continue;
        const p = parseTemplate(v);
        if (!p.ok) ctx.report([...path, key, op, n], p.error);
        else rw[op].push([n, v]);
      }
    }
    out[field] = rw;
  }
  for (const [key, field] of [['strip_prefix', 'stripPrefix'], ['add_prefix', 'addPrefix']] as const) {
    const v = str(r, key);
    if (v === undefined) continue;
    if (!forwards) ctx.report([...path, key], `${key} applies to routes that forward (pool or split)`);
    out[field] = v;
  }

  const red = r['redirect'];
  if (isTable(red)) {
    const rd: RedirectConfig = { stripQuery: red['strip_query'] === true, code: (typeof red['code'] === 'number' ? red['code'] : 302) as RedirectConfig['code'] };
    const scheme = str(red, 'scheme');
    if (scheme === 'http' || scheme === 'https') rd.scheme = scheme;
    const h = str(red, 'host');
    if (h !== undefined) rd.host = h.toLowerCase().replace(/\.$/, '');
    if (typeof red['port'] === 'number') rd.port = red['port'];
    const p = str(red, 'path');
    if (p !== undefined) {
      if (CTL.test(p) || /[\s#?]/.test(p)) ctx.report([...path, 'redirect', 'path'], `invalid redirect path ${JSON.stringify(p)}: no spaces, control characters, "?" or "#"`);
      rd.path = p;
    }
    if (rd.scheme === undefined && rd.host === undefined && rd.port === undefined && rd.path === undefined && !rd.stripQuery) {
      ctx.report([...path, 'redirect'], 'a redirect needs at least one of scheme, host, port or path (else it would redirect to itself)');
    }
    out.redirect = rd;
  }

  const resp = r['respond'];
  if (isTable(resp)) {
    const rpath = [...path, 'respond'];
    let body = str(resp, 'body') ?? '';
    const bodyFile = str(resp, 'body_file');
    if (bodyFile !== undefined) {
      if (resp['body'] !== undefined) ctx.report([...rpath, 'body_file'], 'body and body_file exclude each other');
      try {
        body = readFileSync(resolve(ctx.dir, bodyFile), 'utf8');
      } catch (err) {
        ctx.report([...rpath, 'body_file'], `cannot read ${resolve(ctx.dir, bodyFile)}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
    }
    const contentType = str(resp, 'content_type') ?? 'text/plain; charset=utf-8';
    if (CTL.test(contentType)) ctx.report([...rpath, 'content_type'], 'holds a control character');
    const headers: Array<[string, string]> = [];
    if (isTable(resp['headers'])) {
      for (const [n, v] of Object.entries(resp['headers'])) {
        if (typeof v !== 'string') continue;
        const lower = n.toLowerCase();
        if (FORBIDDEN_RESPONSE.has(lower) || lower === 'content-type') {
          ctx.report([...rpath, 'headers', n], lower === 'content-type' ? 'set it with content_type' : `${n} is set by lb (framing and hop-by-hop fields)`);
        } else if (CTL.test(v)) ctx.report([...rpath, 'headers', n], `header value ${JSON.stringify(v)} holds a control character (CR, LF, NUL...)`);
        else headers.push([n, v]);
      }
    }
    const status = typeof resp['status'] === 'number' ? resp['status'] : 200;
    if ((status === 204 || status === 304) && body !== '') {
      ctx.report([...rpath, resp['body_file'] !== undefined ? 'body_file' : 'body'], `a ${status} response has no body (RFC 9110 §15.3.5, §15.4.5)`);
    }
    const rc: RespondConfig = { status, body, contentType, headers };
    out.respond = rc;
  }
  return out;
}
