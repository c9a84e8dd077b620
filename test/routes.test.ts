// Route conditions, rewrites, redirects and fixed responses through the real daemon, as clients and
// backends see them; the attacker's cases (repeated and Connection-named headers, encoded paths, CR/LF from
// variables, a malformed Host) and config errors located by `lb validate`.

import t from 'tap';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { cli, freePort, get, startLb, startUpstream, tmpdir, waitFor, type Upstream } from './helpers/lb.js';

/** A backend that answers JSON: its pool name, the target it got and the raw headers. */
function echo(name: string): Promise<Upstream> {
  return startUpstream(name, (req, res) => {
    const body = JSON.stringify({ pool: name, url: req.url, headers: req.rawHeaders });
    res.writeHead(200, { 'content-type': 'application/json', 'x-upstream': name, 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
}

const ROUTES = `
[[listeners.web.routes]]
name = "admin"
path_prefix = "/admin"
respond = { status = 403, body = "forbidden\\n" }
[[listeners.web.routes]]
name = "post"
methods = ["POST", "PUT"]
pool = "b"
[[listeners.web.routes]]
name = "hdr-exact"
headers = [{ name = "X-Canary", exact = "1" }]
pool = "b"
[[listeners.web.routes]]
name = "hdr-prefix"
headers = [{ name = "x-ver", prefix = "v2" }]
pool = "b"
[[listeners.web.routes]]
name = "hdr-regex"
headers = [{ name = "x-id", regex = "^[0-9]{3}$" }]
pool = "b"
[[listeners.web.routes]]
name = "present"
path_prefix = "/p"
headers = [{ name = "x-beta", present = true }, { name = "x-gamma", present = false }]
pool = "b"
[[listeners.web.routes]]
name = "cookie"
cookies = [{ name = "beta", exact = "yes" }]
pool = "b"
[[listeners.web.routes]]
name = "query"
path_prefix = "/q"
query = [{ name = "v", prefix = "2" }]
pool = "b"
[[listeners.web.routes]]
name = "rw"
path_prefix = "/api/"
strip_prefix = "/api"
add_prefix = "/v2"
pool = "b"
request_headers = { set = { "x-client" = "\${client_ip}", "x-rid" = "\${request_id}", "x-info" = "\${route} \${method} \${host} \${path} \${scheme} $$5" }, add = { "x-added" = "a" }, remove = ["x-secret"] }
response_headers = { set = { "x-served-by" = "\${route}" }, remove = ["x-upstream"] }
[[listeners.web.routes]]
name = "r301"
path_prefix = "/r301"
redirect = { scheme = "https", code = 301 }
[[listeners.web.routes]]
name = "r302"
path_prefix = "/r302"
redirect = { scheme = "https" }
[[listeners.web.routes]]
name = "r303"
path_prefix = "/r303"
redirect = { port = 8443, code = 303 }
[[listeners.web.routes]]
name = "r307"
path_prefix = "/r307"
redirect = { path = "/elsewhere", code = 307 }
[[listeners.web.routes]]
name = "r308"
path_prefix = "/r308"
redirect = { scheme = "https", host = "new.example", path = "/landing", strip_query = true, code = 308 }
[[listeners.web.routes]]
name = "maint"
path_prefix = "/maint"
respond = { status = 503, body_file = "maint.html", content_type = "text/html; charset=utf-8", headers = { "Retry-After" = "120" } }
`;

function config(port: number, metrics: number, ups: Record<string, number>): string {
  return `
[daemon]
workers = 1
grace_period = "2s"
[admin]
socket = "{{socket}}"
[metrics]
listen = "127.0.0.1:${metrics}"
[log]
level = "info"
access = true
[listeners.web]
protocol = "http"
listen = "127.0.0.1:${port}"
pool = "a"
${ROUTES}
${Object.entries(ups).map(([n, p]) => `[pools.${n}]\nbackends = [{ address = "127.0.0.1:${p}" }]\n`).join('')}`;
}

/** Raw bytes to lb on one connection; resolves with everything it sent back until it closed or went quiet. */
function raw(port: number, bytes: string, until: (got: string) => boolean): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => s.write(bytes));
    let got = '';
    s.setEncoding('latin1');
    s.on('data', (d: string) => {
      got += d;
      if (until(got)) {
        s.destroy();
        resolve(got);
      }
    });
    s.on('close', () => resolve(got));
    s.on('error', reject);
    s.setTimeout(20_000, () => s.destroy(new Error(`no complete answer in 20 s: ${JSON.stringify(got)}`)));
  });
}

t.test('routes through the daemon', async (t) => {
  const ups = { a: await echo('a'), b: await echo('b') };
  t.teardown(() => Promise.all(Object.values(ups).map((u) => u.close())));
  const port = await freePort();
  const metrics = await freePort();
  const dir = tmpdir();
  fs.writeFileSync(path.join(dir, 'maint.html'), '<h1>Back soon</h1>\n');
  const lb = await startLb(config(port, metrics, { a: ups.a.port, b: ups.b.port }), [port], { dir });
  t.teardown(() => lb.stop());

  const pool = async (p: string, opts: Parameters<typeof get>[2] = {}): Promise<string> => {
    const r = await get(port, p, opts);
    t.equal(r.status, 200, `${p}: ${r.body}`);
    return (JSON.parse(r.body) as { pool: string }).pool;
  };

  t.test('method', async (t) => {
    t.equal(await pool('/', { method: 'POST', body: 'x' }), 'b');
    t.equal(await pool('/', { method: 'PUT', body: 'x' }), 'b');
    t.equal(await pool('/'), 'a');
  });

  t.test('headers: exact, prefix, regex, present, absent', async (t) => {
    t.equal(await pool('/', { headers: { 'x-canary': '1' } }), 'b', 'exact (names are case-insensitive)');
    t.equal(await pool('/', { headers: { 'x-canary': '10' } }), 'a');
    t.equal(await pool('/', { headers: { 'x-ver': 'v2.3' } }), 'b', 'prefix');
    t.equal(await pool('/', { headers: { 'x-ver': 'v1' } }), 'a');
    t.equal(await pool('/', { headers: { 'x-id': '123' } }), 'b', 'regex');
    t.equal(await pool('/', { headers: { 'x-id': '1234' } }), 'a');
    t.equal(await pool('/p', { headers: { 'x-beta': '' } }), 'b', 'present (even empty), and x-gamma absent');
    t.equal(await pool('/p', { headers: { 'x-beta': '1', 'x-gamma': '1' } }), 'a', 'x-gamma present: no match');
    t.equal(await pool('/p'), 'a');
  });

  t.test('a repeated header is matched as its field lines joined with ", "', async (t) => {
    const r = await raw(port, 'GET / HTTP/1.1\r\nHost: x\r\nX-Canary: 1\r\nX-Canary: 1\r\nConnection: close\r\n\r\n', () => false);
    t.match(r, '"pool":"a"', '"1, 1" is not exactly "1"');
    const ok = await raw(port, 'GET / HTTP/1.1\r\nHost: x\r\nx-ver: v2\r\nx-ver: v1\r\nConnection: close\r\n\r\n', () => false);
    t.match(ok, '"pool":"b"', '"v2, v1" starts with "v2"');
  });

  t.test('a header named in Connection is neither matched nor forwarded', async (t) => {
    const r = await raw(port, 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close, x-canary\r\nX-Canary: 1\r\n\r\n', () => false);
    t.match(r, '"pool":"a"', 'routed as if absent');
    t.notMatch(r, /x-canary/i, 'and not forwarded');
  });

  t.test('cookie and query', async (t) => {
    t.equal(await pool('/', { headers: { cookie: 'a=1; beta=yes' } }), 'b');
    t.equal(await pool('/', { headers: { cookie: 'beta=yess' } }), 'a');
    t.equal(await pool('/q?v=2.1'), 'b');
    t.equal(await pool('/q?x=1&v=%32'), 'b', 'query values are percent-decoded');
    t.equal(await pool('/q?v=1&v=2'), 'a', 'the first parameter of the name counts');
  });

  t.test('the path is matched as received: no decoding, no normalization', async (t) => {
    t.equal((await get(port, '/admin/x')).status, 403);
    t.equal((await get(port, '/admin/../x')).status, 403, '"/admin/../x" starts with "/admin"');
    t.equal(await pool('/%61dmin'), 'a', '"/%61dmin" does not');
    t.equal(await pool('//admin'), 'a', '"//admin" does not');
  });

  t.test('pipelined requests are routed each on its own head', async (t) => {
    const r = await raw(
      port,
      'GET / HTTP/1.1\r\nHost: x\r\nX-Canary: 1\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\nGET /maint HTTP/1.1\r\nHost: x\r\n\r\nGET /q?v=2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
      () => false,
    );
    const order = [...r.matchAll(/"pool":"([ab])"|Back soon/g)].map((m) => m[1] ?? 'maint');
    t.same(order, ['b', 'a', 'maint', 'b']);
  });

  t.test('rewrites are visible at the backend and the client', async (t) => {
    const r = await get(port, '/api/items?x=1', { headers: { 'x-request-id': 'rid-7', 'x-secret': 's', host: 'shop.test:8080' } });
    t.equal(r.status, 200);
    const seen = JSON.parse(r.body) as { url: string; headers: string[] };
    t.equal(seen.url, '/v2/items?x=1', 'strip_prefix then add_prefix, query kept');
    const h = new Map<string, string[]>();
    for (let i = 0; i < seen.headers.length; i += 2) h.set(seen.headers[i]!.toLowerCase(), [...(h.get(seen.headers[i]!.toLowerCase()) ?? []), seen.headers[i + 1]!]);
    t.same(h.get('x-client'), ['127.0.0.1']);
    t.same(h.get('x-rid'), ['rid-7']);
    t.same(h.get('x-info'), ['rw GET shop.test:8080 /api/items http $5']);
    t.same(h.get('x-added'), ['a']);
    t.notOk(h.has('x-secret'), 'removed');
    t.equal(r.headers['x-served-by'], 'rw');
    t.notOk('x-upstream' in r.headers, 'response header removed');
  });

  t.test('redirects', async (t) => {
    const cases: Array<[string, number, string]> = [
      ['/r301/a?b=1', 301, 'https://lb.test/r301/a?b=1'],
      ['/r302', 302, 'https://lb.test/r302'],
      ['/r303/x', 303, 'http://lb.test:8443/r303/x'],
      ['/r307?q=1', 307, 'http://lb.test:81/elsewhere?q=1'],
      ['/r308/a?b=1', 308, 'https://new.example/landing'],
    ];
    for (const [p, code, location] of cases) {
      const r = await get(port, p, { headers: { host: 'lb.test:81' } });
      t.equal(r.status, code, p);
      t.equal(r.headers.location, location, `${p} -> ${location}`);
    }
    const bad = await raw(port, 'GET /r301 HTTP/1.1\r\nHost: evil.example/x\r\n\r\n', (g) => g.includes('\r\n\r\n'));
    t.match(bad, /^HTTP\/1\.1 400 /, 'a Host that is not an authority is refused before any redirect');
    const noHost = await raw(port, 'GET /r301 HTTP/1.0\r\n\r\n', (g) => g.includes('\r\n\r\n'));
    t.match(noHost, /^HTTP\/1\.1 400 /, 'no Host to redirect to: 400');
  });

  t.test('fixed response with Retry-After, for GET and HEAD', async (t) => {
    const r = await get(port, '/maint');
    t.equal(r.status, 503);
    t.equal(r.headers['retry-after'], '120');
    t.equal(r.headers['content-type'], 'text/html; charset=utf-8');
    t.equal(r.body, '<h1>Back soon</h1>\n');
    const head = await get(port, '/maint', { method: 'HEAD' });
    t.equal(head.status, 503);
    t.equal(head.body, '');
  });

  t.test('route metrics and access log', async (t) => {
    const text = (await get(metrics, '/metrics')).body;
    t.match(text, /lb_route_requests_total\{listener="web",route="maint",pool=""\} [3-9]/);
    t.match(text, /lb_route_requests_total\{listener="web",route="hdr-exact",pool="b"\} [1-9]/);
    t.match(text, /lb_route_requests_total\{listener="web",route="r308",pool=""\} 1/);
    const access = () => lb.logs().filter((l) => l.msg === 'access');
    // The access log is buffered (flushed every 100 ms).
    await waitFor(() => access().some((l) => l.route === 'r301' && l.status === 301), 10_000, 'a redirect logged with its route');
    t.ok(access().some((l) => l.route === 'rw' && l.pool === 'b'), 'forwarded requests too');
  });
});

t.test('config errors are located', async (t) => {
  const dir = tmpdir();
  const file = path.join(dir, 'lb.toml');
  fs.writeFileSync(
    file,
    `[listeners.web]
protocol = "http"
listen = "127.0.0.1:0"
pool = "app"
[[listeners.web.routes]]
headers = [{ name = "x", regex = "(a+)+$" }, { name = "y", regex = "^(a)\\\\1" }, { name = "z", regex = "(?=a)" }, { name = "w", exact = "1", prefix = "2" }]
pool = "app"
request_headers = { set = { "Host" = "x", "x-a" = "\${nope}" }, remove = ["Transfer-Encoding"] }
response_headers = { add = { "Content-Length" = "1" } }
[[listeners.web.routes]]
redirect = { scheme = "https" }
pool = "app"
[[listeners.web.routes]]
split = [{ pool = "app", weight = 0 }]
sticky = "header:"
[[listeners.web.routes]]
respond = { status = 503, headers = { "Retry-After" = "1\\r\\nSet-Cookie: x=1" } }
[[listeners.web.routes]]
respond = { status = 204, body = "x" }
[[listeners.web.routes]]
pool = "app"
strip_prefix = "/a"
name = "web#0"
[pools.app]
backends = [{ address = "127.0.0.1:1" }]
`,
  );
  const r = await cli(['validate', '-c', file]);
  t.equal(r.code, 1);
  const lines = r.stdout + r.stderr;
  for (const want of [
    /lb\.toml:6:\d+: listeners\.web\.routes\[0\]\.headers\[0\]\.regex: a repeated group/,
    /lb\.toml:6:\d+: listeners\.web\.routes\[0\]\.headers\[1\]\.regex: backreferences are not allowed/,
    /lb\.toml:6:\d+: listeners\.web\.routes\[0\]\.headers\[2\]\.regex: lookarounds are not allowed/,
    /lb\.toml:6:\d+: listeners\.web\.routes\[0\]\.headers\[3\]\.prefix: exact and prefix exclude each other/,
    /lb\.toml:8:\d+: listeners\.web\.routes\[0\]\.request_headers\.set\.Host: Host cannot be rewritten/,
    /lb\.toml:8:\d+: listeners\.web\.routes\[0\]\.request_headers\.set\.x-a: unknown variable \$\{nope\}/,
    /lb\.toml:8:\d+: listeners\.web\.routes\[0\]\.request_headers\.remove\[0\]: Transfer-Encoding cannot be rewritten/,
    /lb\.toml:9:\d+: listeners\.web\.routes\[0\]\.response_headers\.add\.Content-Length: Content-Length cannot be rewritten/,
    /lb\.toml:\d+:\d+: listeners\.web\.routes\[1\]\.redirect: pool and redirect exclude each other/,
    /lb\.toml:\d+:\d+: listeners\.web\.routes\[2\]\.split: the weights must not all be 0/,
    /lb\.toml:\d+:\d+: listeners\.web\.routes\[2\]\.sticky: invalid/,
    /lb\.toml:\d+:\d+: listeners\.web\.routes\[3\]\.respond\.headers\.Retry-After: header value .* holds a control character/,
    /lb\.toml:\d+:\d+: listeners\.web\.routes\[4\]\.respond\.body: a 204 response has no body/,
    /lb\.toml:\d+:\d+: listeners\.web\.routes\[5\]\.name: invalid name "web#0": use letters/,
  ]) {
    t.match(lines, want);
  }
});
