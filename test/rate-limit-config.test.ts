// Config of rate limits, [redis], request_id and trace: defaults, and every mistake reported with file,
// line and key (lb validate's format), through the loader and through the real CLI.

import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { parseConfigText } from '../config/load.js';
import { formatIssue } from '../config/model.js';
import { cli, tmpdir } from './helpers/lb.js';

const BASE = `
[pools.app]
backends = [{ address = "127.0.0.1:3000" }]
`;

const issues = (text: string): string[] => parseConfigText(text, 'lb.toml').issues.map(formatIssue);

t.test('defaults and conversions', async (t) => {
  const r = parseConfigText(
    `
[redis]
address = "127.0.0.1:6379"
[rate_limits.a]
rate = 50
per = "100ms"
key = "header:X-User"
scope = "global"
[rate_limits.b]
rate = 10
key = "route"
[listeners.web]
protocol = "http"
listen = "127.0.0.1:8080"
pool = "app"
rate_limit = "a"
request_id = {}
trace = { traceparent = "create" }
[[listeners.web.routes]]
path_prefix = "/v1/"
pool = "app"
rate_limit = "b"
${BASE}`,
    'lb.toml',
  );
  t.same(r.issues, []);
  const c = r.config!;
  t.same(c.redis, { address: { host: '127.0.0.1', port: 6379, text: '127.0.0.1:6379' }, timeoutMs: 100, prefix: 'lb:' });
  t.same(c.rateLimits!.a, { name: 'a', rate: 50, perMs: 100, burst: 50, key: { kind: 'header', name: 'x-user' }, scope: 'global', maxKeys: 100000 });
  t.same(c.rateLimits!.b!.key, { kind: 'route' });
  t.equal(c.rateLimits!.b!.scope, 'local');
  const l = c.listeners.web!;
  t.equal(l.rateLimit, 'a');
  t.same(l.requestId, { header: 'x-request-id', trustIncoming: false, response: true });
  t.same(l.trace, { traceparent: 'create', sampled: true });
  t.equal(l.routes[0]!.rateLimit, 'b');
});

t.test('mistakes are reported with line and key', async (t) => {
  t.same(
    issues(`
[rate_limits.api]
rate = 0
key = "ip"
scope = "global"
per = "0s"
[listeners.web]
protocol = "http"
listen = "127.0.0.1:8080"
pool = "app"
rate_limit = "apii"
request_id = { header = "bad header" }
trace = { traceparent = "on" }
[[listeners.web.routes]]
pool = "app"
rate_limit = "nope"
[listeners.db]
protocol = "tcp"
listen = "127.0.0.1:8081"
pool = "app"
rate_limit = "api"
request_id = {}
${BASE}`),
    [
      'lb.toml:3:1: rate_limits.api.rate: must be >= 1 (got 0)',
      'lb.toml:4:1: rate_limits.api.key: invalid key "ip": use client-ip, route, listener, path, header:NAME, cookie:NAME or query:NAME',
      'lb.toml:5:1: rate_limits.api.scope: scope = "global" needs a [redis] table (address = "host:port")',
      'lb.toml:6:1: rate_limits.api.per: must be longer than 0 (got "0s")',
      'lb.toml:11:1: listeners.web.rate_limit: unknown rate limit "apii" (did you mean "api"?)',
      'lb.toml:12:16: listeners.web.request_id.header: invalid header name "bad header"',
      'lb.toml:13:11: listeners.web.trace.traceparent: must be one of: propagate, create (got "on")',
      'lb.toml:16:1: listeners.web.routes[0].rate_limit: unknown rate limit "nope" (defined rate limits: api)',
      'lb.toml:21:1: listeners.db.rate_limit: rate_limit applies to http listeners only (this one has protocol = "tcp")',
      'lb.toml:22:1: listeners.db.request_id: request_id applies to http listeners only (this one has protocol = "tcp")',
    ],
  );
  t.same(issues(`[redis]\ntimeout = "50ms"\n[listeners.web]\nprotocol = "http"\nlisten = "127.0.0.1:8080"\npool = "app"\n${BASE}`).length, 1, '[redis] needs an address');
});

t.test('lb validate prints them', async (t) => {
  const dir = tmpdir();
  const file = path.join(dir, 'lb.toml');
  fs.writeFileSync(file, `[listeners.web]\nprotocol = "http"\nlisten = "127.0.0.1:8080"\npool = "app"\nrate_limit = "missing"\n${BASE}`);
  const r = await cli(['validate', '-c', file]);
  t.equal(r.code, 1);
  t.match(r.stderr + r.stdout, `${file}:5:1: listeners.web.rate_limit: unknown rate limit "missing" (no [rate_limits] are defined)`);
});
