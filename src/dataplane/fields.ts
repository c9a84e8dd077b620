// Field rules shared by the two sides of the HTTP proxy (http-proxy.ts, upstream.ts): what a Host value may
// be, and which trailer fields may be forwarded.

/**
 * A Host value (RFC 9110 §7.2, RFC 3986 §3.2.2): reg-name (unreserved, pct-encoded, sub-delims) or an
 * IP-literal, then an optional port. Empty is allowed (RFC 9112 §3.2). No userinfo, spaces or slashes.
 */
const HOST_SYNTAX = /^(?:\[[0-9A-Za-z:._~!$&'()*+,;=-]+\]|(?:[0-9A-Za-z._~!$&'()*+,;=-]|%[0-9A-Fa-f]{2})*)(?::[0-9]*)?$/;

/** The last value found valid: a connection's requests repeat their Host, and the check is a pure function of it. */
let lastValidHost = '';

export function validHost(value: string): boolean {
  if (value === lastValidHost) return true;
  if (!HOST_SYNTAX.test(value)) return false;
  lastValidHost = value;
  return true;
}

/**
 * Trailer fields never forwarded (RFC 9110 §6.5.1: a sender MUST NOT put framing, routing, request
 * modifier, authentication, response control or payload processing fields in trailers; a recipient that
 * merged them into the header section could be made to act on them).
 */
const TRAILER_DROP = new Set([
  'content-length',
  'transfer-encoding',
  'host',
  'connection',
  'keep-alive',
  'te',
  'trailer',
  'upgrade',
  'expect',
  'content-type',
  'content-encoding',
  'content-range',
  'authorization',
  'proxy-authorization',
  'set-cookie',
  'cookie',
  'cache-control',
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
]);

/** Trailer fields that may be forwarded (TRAILER_DROP removed); undefined when none is left. */
export function forwardableTrailers(raw: string[] | undefined): string[] | undefined {
  if (!raw) return undefined;
  let out: string[] | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    if (TRAILER_DROP.has(raw[i]!.toLowerCase())) continue;
    (out ??= []).push(raw[i]!, raw[i + 1]!);
  }
  return out;
}
