// What an http listener does to a request before proxying it when the listener or the matched route has a
// rate limit, or the listener gives requests IDs (request_id, trace). A listener with none of these never
// comes here: http-listener.ts checks one field and one route property.
//
// Order: request ID and traceparent first (so a refusal carries and logs them), then the listener's limit,
// then the route's. A request refused by a limit gets 429 with Retry-After and the RateLimit fields of
// draft-ietf-httpapi-ratelimit-headers-06 (RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset,
// RateLimit-Policy); it is counted in lb_rate_limited_total and the access log like lb's other own answers.
// A token taken for the listener's limit is spent even when the route's limit then refuses the request.

import type { ListenerConfig } from '../../config/model.js';
import type { HttpRequest, HttpResponse } from './exchange.js';
import { isGrpcRequest, replyGrpcError, type ScannedRequest } from './http-proxy.js';
import { ADMIT, DENY, rateLimiters, type RateLimiter } from './rate-limit.js';
import { RequestIds, type RequestTags } from './request-id.js';
import type { CompiledRoute } from './route-match.js';

export interface PolicyListener {
  readonly name: string;
  forward(route: CompiledRoute | undefined, req: HttpRequest, res: HttpResponse, scan: ScannedRequest, target: string, tags?: RequestTags): void;
  local(status: number, reason: string | undefined, req: HttpRequest | undefined, socket?: undefined, extra?: LocalExtra): void;
}

/** Extra fields of a local answer's record. */
export interface LocalExtra {
  /** The route that matched (routes with a name or conditions; redirects and fixed responses). */
  route?: string | undefined;
  limited?: string | undefined;
  requestId?: string | undefined;
  traceId?: string | undefined;
}

export interface RequestPolicy {
  limit: RateLimiter | undefined;
  ids: RequestIds | undefined;
}

/** The listener's policy; undefined when it has no rate limit and no request IDs (the common, free case). */
export function policyFor(cfg: ListenerConfig): RequestPolicy | undefined {
  if (cfg.rateLimit === undefined && cfg.requestId === undefined && cfg.trace === undefined) return undefined;
  return {
    limit: rateLimiters.get(cfg.rateLimit),
    ids: cfg.requestId || cfg.trace ? new RequestIds(cfg.requestId, cfg.trace) : undefined,
  };
}

export function admit(
  l: PolicyListener,
  policy: RequestPolicy | undefined,
  route: CompiledRoute | undefined,
  req: HttpRequest,
  res: HttpResponse,
  scan: ScannedRequest,
  target: string,
): void {
  const tags = policy?.ids?.apply(scan.headers);
  const forward = (): void => l.forward(route, req, res, scan, target, tags);
  const first = policy?.limit;
  const second = route?.limit;
  if (first === undefined && second === undefined) return forward();
  const limited = (lim: RateLimiter, then: () => void): void => {
    const r = lim.take(lim.key(req, l.name, route?.id ?? 'default'), (ok, retryMs) => {
      if (res.destroyed || res.ended) {
        l.local(499, 'client closed while waiting for the rate limiter', req, undefined, tags);
        return;
      }
      if (ok) then();
      else refuse(l, lim, retryMs, req, res, tags, route?.name);
    });
    if (r === ADMIT) then();
    else if (r === DENY) refuse(l, lim, lim.retryMs, req, res, tags, route?.name);
  };
  if (first === undefined) return limited(second!, forward);
  limited(first, second === undefined ? forward : () => limited(second, forward));
}

function refuse(
  l: PolicyListener,
  lim: RateLimiter,
  retryMs: number,
  req: HttpRequest,
  res: HttpResponse,
  tags: RequestTags | undefined,
  route: string | undefined,
): void {
  const seconds = String(Math.max(1, Math.ceil(retryMs / 1000)));
  const body = `429 Too Many Requests: rate limit ${lim.name}\n`;
  const headers: Record<string, string | number> = {
    'content-type': 'text/plain; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'retry-after': seconds,
    'ratelimit-limit': lim.quota,
    'ratelimit-remaining': 0,
    'ratelimit-reset': seconds,
    'ratelimit-policy': lim.policy,
  };
  if (tags?.responseHeader !== undefined && tags.requestId !== undefined) headers[tags.responseHeader] = tags.requestId;
  if (!res.headersSent && !res.destroyed) {
    if (isGrpcRequest(req)) {
      // RESOURCE_EXHAUSTED, with the same Retry-After and RateLimit fields.
      const { 'content-type': _t, 'content-length': _l, ...rest } = headers;
      replyGrpcError(res, 429, body.trimEnd(), false, rest);
    } else {
      res.writeHead(429, headers).end(body);
    }
  }
  l.local(429, `rate limited (${lim.name})`, req, undefined, { limited: lim.name, requestId: tags?.requestId, traceId: tags?.traceId, route });
}
