// The per-request CPU cost of routing decisions and rewrites, in isolation: the router and rewrite code
// of lb's data plane run in a loop on parsed requests (no sockets), so that the numbers hold on a machine
// busy with other work, where an end-to-end req/s comparison (bench/routes-cost.sh) is too noisy.
//
//   node dist/bench/routes-micro.js [--iterations N]
//
// Each variant is timed over N requests (default 2,000,000), after a warm-up of N/4, in interleaved rounds
// (3); the best round is reported as ns per request. Variants: the listener's pool (no routes), a plain
// host + path_prefix route, a route with method + 3 header (exact, prefix, regex) + cookie + query
// conditions behind two routes whose conditions fail, a 95/5 split, a sticky split, and a route whose
// request and response header rewrites use variables, with strip_prefix. Every variant includes the
// req.headers map the router builds on first use (lb's server builds it lazily, once per request).

import { parseConfigText } from '../config/load.js';
import { loadAlgorithm } from '../algorithms/registry.js';
import { FrontRequest } from '../src/dataplane/http-server.js';
import { BackendPool } from '../src/dataplane/pool.js';
import { Router } from '../src/dataplane/router.js';
import { applyRewrite, rewritePath, type RewriteContext } from '../src/dataplane/rewrite.js';
import type net from 'node:net';

const ROUTES: Record<string, string> = {
  none: '',
  plain: '[[listeners.web.routes]]\nhost = "bench.test"\npath_prefix = "/api/"\npool = "app"\n',
  match: `[[listeners.web.routes]]
headers = [{ name = "x-nope", exact = "1" }]
pool = "app"
[[listeners.web.routes]]
headers = [{ name = "x-canary", regex = "^no$" }]
pool = "app"
[[listeners.web.routes]]
methods = ["GET", "HEAD"]
headers = [{ name = "x-canary", exact = "1" }, { name = "x-ver", prefix = "v2" }, { name = "x-id", regex = "^[0-9a-f]{8}$" }]
cookies = [{ name = "beta", exact = "yes" }]
query = [{ name = "v", prefix = "2" }]
pool = "app"
`,
  split: '[[listeners.web.routes]]\nsplit = [{ pool = "app", weight = 95 }, { pool = "app2", weight = 5 }]\n',
  sticky: '[[listeners.web.routes]]\nsplit = [{ pool = "app", weight = 95 }, { pool = "app2", weight = 5 }]\nsticky = "cookie:session"\n',
  rewrite: `[[listeners.web.routes]]
path_prefix = "/api/"
strip_prefix = "/api"
pool = "app"
request_headers = { set = { "x-client" = "\${client_ip}", "x-route" = "\${route} \${host}" }, add = { "x-env" = "bench" }, remove = ["x-id"] }
response_headers = { set = { "x-served-by" = "\${route}" } }
`,
};

const RAW = ['Host', 'bench.test', 'User-Agent', 'wrk', 'Accept', '*/*', 'x-canary', '1', 'x-ver', 'v2.1', 'x-id', '0a1b2c3d', 'Cookie', 'session=abc; beta=yes'];
const RESPONSE = ['Content-Type', 'text/plain', 'Content-Length', '12', 'Date', 'Thu, 01 Jan 2026 00:00:00 GMT'];
const socket = { remoteAddress: '127.0.0.1' } as unknown as net.Socket;

async function variant(name: string): Promise<() => unknown> {
  const text = `[listeners.web]\nprotocol = "http"\nlisten = "127.0.0.1:0"\npool = "app"\n${ROUTES[name]}\n[pools.app]\nbackends = [{ address = "127.0.0.1:1" }]\n[pools.app2]\nbackends = [{ address = "127.0.0.1:2" }]\n`;
  const { config, issues } = parseConfigText(text, 'bench.toml');
  if (!config) throw new Error(issues.map((i) => i.message).join('\n'));
  const pools = new Map<string, BackendPool>();
  for (const p of Object.values(config.pools)) pools.set(p.name, new BackendPool(p, await loadAlgorithm(p.algorithm, '.')));
  const router = new Router(config.listeners['web']!, pools);
  const url = '/api/items?v=2.0&x=1';
  return () => {
    // A new request each time, as the server makes one per request (headers map built lazily).
    const req = new FrontRequest(socket, 'GET', url, 1, 1, RAW, null, -1, false);
    const route = router.route('bench.test', url, req);
    if (route === undefined || route.plain) return route?.pool ?? router.fallback;
    const pool = route.split ? route.split.pick(req) : route.pool;
    if (route.requestRewrite || route.responseRewrite) {
      const headers = RAW.slice();
      const ctx: RewriteContext = { req, headers, host: 'bench.test', tls: false, route: route.name };
      const path = rewritePath(url, route.stripPrefix, route.addPrefix);
      const out = route.requestRewrite ? applyRewrite(headers, route.requestRewrite, ctx) : headers;
      const res = route.responseRewrite ? applyRewrite(RESPONSE, route.responseRewrite, ctx) : RESPONSE;
      return [pool, path, out, res];
    }
    return pool;
  };
}

const argIndex = process.argv.indexOf('--iterations');
const N = argIndex > 0 ? Number(process.argv[argIndex + 1]) : 2_000_000;
const names = Object.keys(ROUTES);
const fns = new Map<string, () => unknown>();
for (const n of names) fns.set(n, await variant(n));
let sink: unknown;
for (const n of names) for (let i = 0; i < N / 4; i++) sink = fns.get(n)!();
const best = new Map<string, number>();
for (let round = 0; round < 3; round++) {
  for (const n of names) {
    const f = fns.get(n)!;
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < N; i++) sink = f();
    const ns = Number(process.hrtime.bigint() - t0) / N;
    best.set(n, Math.min(best.get(n) ?? Infinity, ns));
  }
}
void sink;
const base = best.get('none')!;
console.log(`node ${process.version}, ${N} requests per variant and round, best of 3 rounds`);
console.log('variant   ns/request   extra ns vs none');
for (const n of names) console.log(`${n.padEnd(9)} ${best.get(n)!.toFixed(1).padStart(10)}   ${(best.get(n)! - base).toFixed(1).padStart(8)}`);
