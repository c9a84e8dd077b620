// Route conditions beyond host and path prefix (method, header, cookie, query parameter), weighted splits
// across pools, and each route compiled once at load into what the router checks per request.
//
// What a condition sees (README, "Routes: matching, splits, rewrites" has the comparison with HAProxy and
// NGINX):
// - Path (path_prefix): the request target as received, not percent-decoded and not normalized: "/%61dmin"
//   and "//admin" do not start with "/admin", and "/admin/../x" does. HAProxy's path_beg sees the same raw
//   path; NGINX's location matches the decoded, normalized path.
// - Header: all field lines of that name joined with ", " (RFC 9110 §5.3, how a recipient may combine a
//   list field; Cookie lines with "; "), compared as one string. A field named in the request's Connection
//   header is not forwarded (http-proxy.ts), so conditions treat it as absent: the route decision is made on
//   what the backend receives.
// - Cookie: the first cookie of that name in the (joined) Cookie header, its value as sent.
// - Query: the first parameter of that name, decoded as application/x-www-form-urlencoded (URLSearchParams:
//   "%xx" and "+"), as hash_key = "query:NAME" reads it.
// - Method: the request method, case-sensitive (RFC 9110 §9.1).
//
// Regexes are JavaScript RegExps (backtracking; RE2 is not available to lb), compiled once at load and
// searched for, unanchored. To keep a request from costing exponential time, regexProblem() refuses
// backreferences, lookarounds and a repeated group that holds a quantifier or an alternation (the shapes of
// catastrophic backtracking: (a+)+, (a|aa)*). Patterns with several overlapping unbounded quantifiers
// (".*.*.*x") remain polynomial in the value's length, which max_header_size bounds.

import type { HashKey, ListenerConfig, RouteConfig, SplitEntry, ValueMatch } from '../../config/model.js';
import { routeName } from '../../config/model.js';
import { murmur3_32 } from '../../algorithms/hash.js';
import type { HttpRequest } from './exchange.js';
import type { BackendPool } from './pool.js';
import { rateLimiters, type RateLimiter } from './rate-limit.js';
import { cookieValue, requestKey } from './request-key.js';
import { compileRespond, compileRewrite, type CompiledRespond, type CompiledRewrite } from './rewrite.js';
import type { RedirectConfig } from '../../config/model.js';

/** Runtime split weights (`lb split`): listener -> route name -> pool -> weight. */
export type SplitOverrides = Record<string, Record<string, Record<string, number>>>;

/** Why `source` is refused as a route regex, or undefined when it is accepted. */
export function regexProblem(source: string): string | undefined {
  try {
    new RegExp(source);
  } catch (err) {
    return `invalid regular expression: ${(err as Error).message}`;
  }
  // One frame per open group: whether it holds a quantifier or an alternation.
  const stack: Array<{ risky: boolean }> = [{ risky: false }];
  let lastGroupRisky = false;
  for (let i = 0; i < source.length; i++) {
    const c = source[i]!;
    let closed = false;
    if (c === '\\') {
      const n = source[i + 1] ?? '';
      if (/[1-9]/.test(n) || n === 'k') return 'backreferences are not allowed in route regexes (their matching can take exponential time)';
      i++;
    } else if (c === '[') {
      // A character class: its contents are not operators.
      for (i++; i < source.length && source[i] !== ']'; i++) if (source[i] === '\\') i++;
    } else if (c === '(') {
      if (source.startsWith('(?=', i) || source.startsWith('(?!', i) || source.startsWith('(?<=', i) || source.startsWith('(?<!', i)) {
        return 'lookarounds are not allowed in route regexes';
      }
      stack.push({ risky: false });
    } else if (c === ')') {
      const g = stack.pop()!;
      lastGroupRisky = g.risky;
      closed = true;
      // A group's risk is its parent's too ((x(a+))* repeats a+ as well).
      if (g.risky) stack[stack.length - 1]!.risky = true;
    } else if (c === '|') {
      stack[stack.length - 1]!.risky = true;
    }
    const next = source[i + 1];
    const quantified = next === '*' || next === '+' || next === '{';
    if (quantified) {
      if (closed && lastGroupRisky) {
        return `a repeated group that holds a quantifier or "|" (as in (a+)+ or (a|b)*) can take exponential time: rewrite ${JSON.stringify(source)} without it`;
      }
      stack[stack.length - 1]!.risky = true;
    }
  }
  return undefined;
}

type Test = (value: string) => boolean;

function valueTest(m: ValueMatch): Test | undefined {
  if (m.exact !== undefined) {
    const x = m.exact;
    return (v) => v === x;
  }
  if (m.prefix !== undefined) {
    const p = m.prefix;
    return (v) => v.startsWith(p);
  }
  if (m.regex !== undefined) {
    const re = new RegExp(m.regex);
    return (v) => re.test(v);
  }
  return undefined;
}

/**
 * Header value as conditions see it (see the head of this file); undefined when absent. Scans the raw list
 * (no map of every header is built): names are compared lower-cased only when their length fits.
 */
export function headerValue(req: HttpRequest, name: string, joiner = ', '): string | undefined {
  const raw = req.rawHeaders;
  const len = name.length;
  let v: string | undefined;
  let conn: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const n = raw[i]!;
    if (n.length === len && n.toLowerCase() === name) v = v === undefined ? raw[i + 1]! : `${v}${joiner}${raw[i + 1]!}`;
    else if (n.length === 10 && n.toLowerCase() === 'connection') conn = conn === undefined ? raw[i + 1]! : `${conn},${raw[i + 1]!}`;
  }
  if (v === undefined || conn === undefined || conn.length <= 5) return v;
  for (const token of conn.toLowerCase().split(',')) if (token.trim() === name) return undefined;
  return v;
}

/**
 * The first query parameter named `name`, decoded as application/x-www-form-urlencoded ("+" is a space,
 * %XX a byte; the same value URLSearchParams.get gives, without building one); undefined when absent.
 */
export function firstQueryValue(url: string, name: string): string | undefined {
  const q = url.indexOf('?');
  if (q === -1) return undefined;
  let start = q + 1;
  while (start <= url.length) {
    let end = url.indexOf('&', start);
    if (end === -1) end = url.length;
    const eq = url.indexOf('=', start);
    const keyEnd = eq !== -1 && eq < end ? eq : end;
    const key = url.slice(start, keyEnd);
    if (key === name || ((key.includes('%') || key.includes('+')) && formDecode(key) === name)) {
      return keyEnd === end ? '' : formDecode(url.slice(keyEnd + 1, end));
    }
    start = end + 1;
  }
  return undefined;
}

function formDecode(s: string): string {
  if (!s.includes('%') && !s.includes('+')) return s;
  return new URLSearchParams(`a=${s}`).get('a') ?? '';
}

type Predicate = (req: HttpRequest) => boolean;

function condition(m: ValueMatch, read: (req: HttpRequest, name: string) => string | undefined): Predicate {
  const name = m.name;
  const test = valueTest(m);
  if (test === undefined) {
    const want = m.present !== false;
    return (req) => (read(req, name) !== undefined) === want;
  }
  return (req) => {
    const v = read(req, name);
    return v !== undefined && test(v);
  };
}

const readCookie = (req: HttpRequest, name: string): string | undefined => cookieValue(headerValue(req, 'cookie', '; '), name);
const readQuery = (req: HttpRequest, name: string): string | undefined => firstQueryValue(req.url, name);

/**
 * A weighted split across pools. Not sticky (or no key in the request): NGINX's smooth weighted round robin
 * over the entries, per worker, so every window of sum(weights) requests a worker routes has each entry
 * exactly `weight` times: 5 of 100 is 5 of every 100, not 5 on average. Sticky: the key's MurmurHash3
 * (the hash of hash_key) as a point in [0, 1), and the entries as consecutive ranges of [0, 1) in config
 * order, each as wide as its share. A client stays on its entry while the weights stay; when they change, only
 * clients whose point the boundary crosses move: raising the second entry of a two-way split takes clients
 * from the first only, never the reverse.
 */
export class Split {
  readonly pools: BackendPool[];
  readonly names: string[];
  readonly configWeights: number[];
  private weights: Float64Array;
  private current: Float64Array;
  /** Upper ends of each entry's range in [0, 1). */
  private bounds: Float64Array;

  constructor(entries: readonly SplitEntry[], pool: (name: string) => BackendPool, private readonly sticky: HashKey | undefined) {
    this.pools = entries.map((e) => pool(e.pool));
    this.names = entries.map((e) => e.pool);
    this.configWeights = entries.map((e) => e.weight);
    this.weights = new Float64Array(this.configWeights);
    this.current = new Float64Array(entries.length);
    this.bounds = new Float64Array(entries.length);
    this.setWeights(undefined);
  }

  /** Runtime weights by pool name (missing pools keep their config weight); undefined: the config's. */
  setWeights(w: Readonly<Record<string, number>> | undefined): void {
    const n = this.names.length;
    for (let i = 0; i < n; i++) this.weights[i] = w?.[this.names[i]!] ?? this.configWeights[i]!;
    this.current.fill(0);
    let total = 0;
    for (let i = 0; i < n; i++) total += this.weights[i]!;
    let acc = 0;
    for (let i = 0; i < n; i++) {
      acc += this.weights[i]!;
      this.bounds[i] = total > 0 ? acc / total : 0;
    }
    // Rounding must not leave a point in [0, 1) past the last range with any weight.
    for (let i = n - 1; i >= 0; i--) {
      if (this.weights[i]! > 0) {
        this.bounds[i] = 1;
        break;
      }
    }
  }

  weightsNow(): number[] {
    return [...this.weights];
  }

  pick(req: HttpRequest): BackendPool {
    if (this.sticky !== undefined) {
      const key = stickyKey(this.sticky, req);
      if (key !== undefined) {
        const point = murmur3_32(key) / 4294967296;
        const b = this.bounds;
        for (let i = 0; i < b.length; i++) if (point < b[i]! && this.weights[i]! > 0) return this.pools[i]!;
      }
    }
    const { weights, current } = this;
    let best = 0;
    let total = 0;
    for (let j = 0; j < weights.length; j++) {
      const w = weights[j]!;
      current[j] = current[j]! + w;
      total += w;
      if (current[j]! > current[best]!) best = j;
    }
    current[best] = current[best]! - total;
    return this.pools[best]!;
  }
}

/** A sticky key read as route conditions read fields (hash_key's syntax and meaning, without building req.headers). */
function stickyKey(k: HashKey, req: HttpRequest): string | undefined {
  switch (k.kind) {
    case 'header':
      return headerValue(req, k.name);
    case 'cookie':
      return cookieValue(headerValue(req, 'cookie', '; '), k.name);
    case 'query':
      return firstQueryValue(req.url, k.name);
    default:
      return requestKey(k, req);
  }
}

/**
 * One route compiled for the router. A class with every field always set (undefined when unused), so that
 * every route has one shape and the router's loop stays monomorphic (object spreads gave each route its own
 * hidden class, measured at +90 ns per request on a plain route).
 */
export class CompiledRoute {
  readonly name: string;
  readonly host: string | undefined;
  readonly hostSuffix: string | undefined;
  readonly pathPrefix: string | undefined;
  /** Conditions beyond host and path prefix; undefined when there are none. */
  readonly match: Predicate | undefined;
  /** The pool, unless the route splits or answers locally. */
  readonly pool: BackendPool | undefined;
  readonly split: Split | undefined;
  /**
   * Nothing but conditions and a pool: the listener forwards exactly as without this module. A route that is
   * not plain has a rewrite, a split or a local answer.
   */
  readonly plain: boolean;
  readonly requestRewrite: CompiledRewrite | undefined;
  readonly responseRewrite: CompiledRewrite | undefined;
  readonly stripPrefix: string | undefined;
  readonly addPrefix: string | undefined;
  readonly redirect: RedirectConfig | undefined;
  readonly respond: CompiledRespond | undefined;
  /** The route's `rate_limit` (rate-limit.ts); undefined for none. */
  readonly limit: RateLimiter | undefined;
  /** The key of a rate limit with key = "route": the route's index in the listener's routes. */
  readonly id: string;

  constructor(listener: ListenerConfig, index: number, r: RouteConfig, pool: (name: string) => BackendPool) {
    const predicates: Predicate[] = [];
    if (r.methods) {
      const methods = new Set(r.methods);
      predicates.push((req) => methods.has(req.method));
    }
    for (const m of r.headers ?? []) predicates.push(condition(m, headerValue));
    for (const m of r.cookies ?? []) predicates.push(condition(m, readCookie));
    for (const m of r.query ?? []) predicates.push(condition(m, readQuery));
    this.name = routeName(listener.name, index, r);
    this.host = r.host && !r.host.startsWith('*.') ? r.host.toLowerCase() : undefined;
    this.hostSuffix = r.host?.startsWith('*.') ? r.host.slice(1).toLowerCase() : undefined;
    this.pathPrefix = r.pathPrefix || undefined;
    this.match =
      predicates.length === 0
        ? undefined
        : predicates.length === 1
          ? predicates[0]
          : (req) => {
              for (let i = 0; i < predicates.length; i++) if (!predicates[i]!(req)) return false;
              return true;
            };
    this.pool = r.pool !== undefined ? pool(r.pool) : undefined;
    this.split = r.split ? new Split(r.split, pool, r.sticky) : undefined;
    this.requestRewrite = r.requestHeaders ? compileRewrite(r.requestHeaders) : undefined;
    this.responseRewrite = r.responseHeaders ? compileRewrite(r.responseHeaders) : undefined;
    this.stripPrefix = r.stripPrefix;
    this.addPrefix = r.addPrefix;
    this.redirect = r.redirect;
    this.respond = r.respond ? compileRespond(r.respond) : undefined;
    this.limit = rateLimiters.get(r.rateLimit);
    this.id = String(index);
    this.plain =
      this.pool !== undefined && !this.split && !this.requestRewrite && !this.responseRewrite &&
      this.stripPrefix === undefined && this.addPrefix === undefined && !this.redirect && !this.respond;
  }
}
