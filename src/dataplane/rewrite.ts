// Per-route rewrites and local answers (config: route request_headers, response_headers, strip_prefix,
// add_prefix, redirect, respond). Everything is compiled once at load; a route without any of it costs
// nothing (route-match.ts keeps such a route "plain").
//
// Header values are templates: literal text plus ${variable}; "$$" is a literal "$". Variables:
//   client_ip   the client's address (the TCP peer)
//   host        the request's Host (or the absolute-form target's authority), as forwarded
//   path        the request path as received, without the query (before strip_prefix/add_prefix)
//   method      the request method
//   scheme      "https" on a TLS listener, else "http"
//   route       the matched route's name
//   request_id  the X-Request-Id of the forwarded request (the client's, or one lb added before the
//               rewrites run), else empty
//
// Injection (RFC 9110 §5.5: a field value has no CR, LF or NUL): literal text is checked at load; a value
// built from variables is checked when built, and a header whose value would hold CR, LF or NUL is not
// written at all (the rest of the request goes on). Framing and hop-by-hop fields cannot be rewritten
// (FORBIDDEN_*): lb frames bodies itself, and a rewrite of Host would route on one value and forward another.

import type { HeaderRewrite, RedirectConfig, RespondConfig } from '../../config/model.js';
import { STATUS_CODES } from 'node:http';
import type { HttpRequest, HttpResponse } from './exchange.js';

export const VARIABLES = ['client_ip', 'host', 'path', 'method', 'scheme', 'route', 'request_id'] as const;
export type Variable = (typeof VARIABLES)[number];

/** Request fields no rewrite may touch: framing (lb frames from its parser), hop-by-hop, and Host. */
export const FORBIDDEN_REQUEST = new Set([
  'content-length', 'transfer-encoding', 'connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade', 'host', 'expect',
]);
/** Response fields no rewrite may touch: framing and hop-by-hop (HttpResponse writes its own). */
export const FORBIDDEN_RESPONSE = new Set([
  'content-length', 'transfer-encoding', 'connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade',
]);

/** CTLs other than HTAB, and DEL: never in a field value (RFC 9110 §5.5). */
const BAD_VALUE = /[\x00-\x08\x0a-\x1f\x7f]/;
const BAD_RUNTIME = /[\0\r\n]/;

/** What a template can read: built lazily, at most once per request, only by routes that use variables. */
export interface RewriteContext {
  readonly req: HttpRequest;
  /** The forwarded header list (request_id is read from it). */
  readonly headers: string[];
  readonly host: string | undefined;
  readonly tls: boolean;
  readonly route: string;
}

/** A literal run, or a variable. */
type Part = { lit: string } | { v: Variable };
/** A compiled template: a constant string, or parts to join. */
export type Template = string | { parts: Part[] };

/** Parses a header value template; an error names the problem. */
export function parseTemplate(text: string): { ok: true; template: Template } | { ok: false; error: string } {
  if (BAD_VALUE.test(text)) return { ok: false, error: `header value ${JSON.stringify(text)} holds a control character (CR, LF, NUL...)` };
  const parts: Part[] = [];
  let lit = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c !== '$' || (text[i + 1] !== '$' && text[i + 1] !== '{')) {
      lit += c;
      continue;
    }
    if (text[i + 1] === '$') {
      lit += '$';
      i++;
      continue;
    }
    const end = text.indexOf('}', i + 2);
    if (end === -1) return { ok: false, error: `unclosed "\${" in ${JSON.stringify(text)}` };
    const name = text.slice(i + 2, end);
    if (!(VARIABLES as readonly string[]).includes(name)) {
      return { ok: false, error: `unknown variable \${${name}} (variables: ${VARIABLES.join(', ')})` };
    }
    if (lit) parts.push({ lit });
    lit = '';
    parts.push({ v: name as Variable });
    i = end;
  }
  if (parts.length === 0) return { ok: true, template: lit };
  if (lit) parts.push({ lit });
  return { ok: true, template: { parts } };
}

function variable(v: Variable, ctx: RewriteContext): string {
  switch (v) {
    case 'client_ip':
      return ctx.req.socket.remoteAddress ?? '';
    case 'host':
      return ctx.host ?? '';
    case 'path': {
      const url = ctx.req.url;
      const q = url.indexOf('?');
      return q === -1 ? url : url.slice(0, q);
    }
    case 'method':
      return ctx.req.method;
    case 'scheme':
      return ctx.tls ? 'https' : 'http';
    case 'route':
      return ctx.route;
    case 'request_id': {
      const h = ctx.headers;
      for (let i = 0; i < h.length; i += 2) if (h[i]!.length === 12 && h[i]!.toLowerCase() === 'x-request-id') return h[i + 1]!;
      return '';
    }
  }
}

/** The value of a template for one request; undefined when it would hold CR, LF or NUL. */
export function render(t: Template, ctx: RewriteContext): string | undefined {
  if (typeof t === 'string') return t;
  let out = '';
  for (const p of t.parts) out += 'lit' in p ? p.lit : variable(p.v, ctx);
  return BAD_RUNTIME.test(out) ? undefined : out;
}

export interface CompiledRewrite {
  /** Lower-cased names removed (remove, and set: set replaces). */
  drop: Set<string>;
  set: Array<[string, Template]>;
  add: Array<[string, Template]>;
}

export function compileRewrite(r: HeaderRewrite): CompiledRewrite | undefined {
  if (r.remove.length === 0 && r.set.length === 0 && r.add.length === 0) return undefined;
  const tpl = ([n, v]: [string, string]): [string, Template] => {
    const p = parseTemplate(v);
    if (!p.ok) throw new Error(`header ${n}: ${p.error}`);
    return [n, p.template];
  };
  return {
    drop: new Set([...r.remove, ...r.set.map(([n]) => n)].map((n) => n.toLowerCase())),
    set: r.set.map(tpl),
    add: r.add.map(tpl),
  };
}

/** The header list with `rw` applied (remove, set, add); a new list, `list` is not changed. */
export function applyRewrite(list: string[], rw: CompiledRewrite, ctx: RewriteContext): string[] {
  const out: string[] = [];
  const drop = rw.drop;
  for (let i = 0; i < list.length; i += 2) {
    if (!drop.has(list[i]!.toLowerCase())) out.push(list[i]!, list[i + 1]!);
  }
  for (const [n, t] of rw.set) {
    const v = render(t, ctx);
    if (v !== undefined) out.push(n, v);
  }
  for (const [n, t] of rw.add) {
    const v = render(t, ctx);
    if (v !== undefined) out.push(n, v);
  }
  return out;
}

/** strip_prefix then add_prefix on an origin-form target (the query is kept). */
export function rewritePath(target: string, strip: string | undefined, add: string | undefined): string {
  let t = target;
  if (strip !== undefined && t.startsWith(strip)) {
    t = t.slice(strip.length);
    // "/api" stripped from "/api" or "/api?x" leaves no path: "/" (RFC 9112 §3.2.1: origin-form is never empty).
    if (t === '' || t.charCodeAt(0) === 63 /* ? */) t = `/${t}`;
    else if (t.charCodeAt(0) !== 47 /* / */) t = target; // "/api" does not strip "/apix": not a path segment boundary
  }
  if (add !== undefined) t = add.endsWith('/') && t.charCodeAt(0) === 47 ? add + t.slice(1) : add + t;
  return t;
}

/** A Host value without its port ("[::1]:80" -> "[::1]"). */
export function stripPort(host: string): string {
  if (host.startsWith('[')) {
    const end = host.indexOf(']');
    return end === -1 ? host : host.slice(0, end + 1);
  }
  const colon = host.indexOf(':');
  return colon === -1 ? host : host.slice(0, colon);
}

/**
 * The Location of a redirect, or undefined when the request has no host to redirect to. The request's Host
 * has passed lb's syntax check (fields.ts validHost: a reg-name or IP literal and a port, no userinfo, "/",
 * "@", space or control character), so it names a host and nothing else: the Location can point only at
 * the host the client itself asked for, and cannot carry a second header.
 */
export function redirectLocation(r: RedirectConfig, target: string, host: string | undefined, tls: boolean): string | undefined {
  const scheme = r.scheme ?? (tls ? 'https' : 'http');
  let authority: string;
  if (r.host !== undefined) authority = r.host;
  else {
    if (!host) return undefined;
    authority = r.scheme !== undefined || r.port !== undefined ? stripPort(host) : host;
  }
  if (r.port !== undefined) authority = `${stripPort(authority)}:${r.port}`;
  const q = target.indexOf('?');
  const path = r.path ?? (q === -1 ? target : target.slice(0, q));
  const query = r.stripQuery || q === -1 ? '' : target.slice(q);
  return `${scheme}://${authority}${path}${query}`;
}

/** Writes a redirect. A request with a body is answered with Connection: close (its body is not read). */
export function writeRedirect(res: HttpResponse, code: number, location: string, hasBody: boolean): void {
  const headers = ['Location', location, 'Content-Length', '0'];
  if (hasBody) headers.push('Connection', 'close');
  res.writeHead(code, statusText(code), headers).end();
}

export interface CompiledRespond {
  status: number;
  headers: string[];
  body: Buffer;
}

export function compileRespond(r: RespondConfig): CompiledRespond {
  const body = Buffer.from(r.body);
  // 204 and 304 carry no body and no Content-Length (RFC 9110 §8.6); load refuses a body for them.
  const headers = r.status === 204 || r.status === 304 ? [] : ['Content-Type', r.contentType, 'Content-Length', String(body.length)];
  for (const [n, v] of r.headers) headers.push(n, v);
  return { status: r.status, headers, body };
}

export function writeRespond(res: HttpResponse, c: CompiledRespond, hasBody: boolean): void {
  const headers = hasBody ? [...c.headers, 'Connection', 'close'] : c.headers;
  res.writeHead(c.status, statusText(c.status), headers).end(c.body);
}

const TEXTS: Record<number, string> = { 301: 'Moved Permanently', 302: 'Found', 303: 'See Other', 307: 'Temporary Redirect', 308: 'Permanent Redirect' };

function statusText(code: number): string {
  return TEXTS[code] ?? STATUS_CODES[code] ?? 'Unknown';
}
