// HTTP/2 streams take the HTTP/1.1 request path through the real daemon: routes on headers and cookies,
// fixed responses, rate limits (429), the access log (with proto "h2"), trailers both ways. Malformed
// HTTP/2 (an upper-case field name, a connection-specific field, Host against :authority) is refused per
// stream while the connection's other streams are served. A rapid-reset flood (CVE-2023-44487) gets
// GOAWAY ENHANCE_YOUR_CALM, is counted and logged, while another client's requests all succeed.

import t from 'tap';
import http from 'node:http';
import http2 from 'node:http2';
import { freePort, get, startLb, startUpstream, waitFor } from './helpers/lb.js';
import { RawH2 } from './helpers/h2raw.js';
import { h2request } from './helpers/h2.js';

async function named(name: string) {
  return startUpstream(name, (req: http.IncomingMessage, res: http.ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (d: Buffer) => chunks.push(d));
    req.on('end', () => {
      if (req.url === '/trailers') {
        // Chunked with trailers, as a backend that computes a digest while streaming.
        res.writeHead(200, { 'content-type': 'text/plain', trailer: 'x-digest' });
        res.write('part1-');
        res.addTrailers({ 'x-digest': 'abc123' });
        res.end('part2');
        return;
      }
      const body = JSON.stringify({ name, url: req.url, trailers: req.trailers, body: Buffer.concat(chunks).toString() });
      res.writeHead(200, { 'content-type': 'application/json', 'x-upstream': name });
      res.end(body);
    });
  });
}

function config(port: number, metricsPort: number, a: number, b: number): string {
  return `
[daemon]
workers = 1
grace_period = "2s"
[admin]
socket = "{{socket}}"
[metrics]
listen = "127.0.0.1:${metricsPort}"
[log]
level = "info"
access = true
[rate_limits.tiny]
rate = 3
per = "1m"
burst = 3
key = "header:x-user"
[listeners.web]
protocol = "http"
listen = "127.0.0.1:${port}"
pool = "a"
http2 = true
http2_max_concurrent_streams = 50
[[listeners.web.routes]]
name = "admin"
path_prefix = "/admin"
respond = { status = 403, body = "forbidden\\n" }
[[listeners.web.routes]]
name = "canary"
headers = [{ name = "X-Canary", exact = "1" }]
pool = "b"
[[listeners.web.routes]]
name = "beta"
cookies = [{ name = "beta", exact = "yes" }]
pool = "b"
[[listeners.web.routes]]
name = "limited"
path_prefix = "/limited"
pool = "a"
rate_limit = "tiny"
[pools.a]
backends = [{ address = "127.0.0.1:${a}" }]
[pools.b]
backends = [{ address = "127.0.0.1:${b}" }]
`;
}

t.test('routes, rate limits, access log and trailers over HTTP/2', async (t) => {
  const a = await named('a');
  const b = await named('b');
  t.teardown(() => a.close());
  t.teardown(() => b.close());
  const [port, metricsPort] = [await freePort(), await freePort()];
  const lb = await startLb(config(port, metricsPort, a.port, b.port), [port]);
  t.teardown(() => lb.stop());
  const s = http2.connect(`http://127.0.0.1:${port}`);
  t.teardown(() => s.close());

  const plain = await h2request(s, { ':path': '/x' });
  t.equal(JSON.parse(plain.body).name, 'a', 'no route: the listener pool');
  const canary = await h2request(s, { ':path': '/x', 'x-canary': '1' });
  t.equal(JSON.parse(canary.body).name, 'b', 'header route');
  const beta = await h2request(s, { ':path': '/x', cookie: ['other=1', 'beta=yes'] });
  t.equal(JSON.parse(beta.body).name, 'b', 'cookie route over joined cookie crumbs');
  const admin = await h2request(s, { ':path': '/admin/x' });
  t.equal(admin.status, 403, 'fixed response');
  t.equal(admin.body, 'forbidden\n');

  const statuses: number[] = [];
  let retryAfter: string | undefined;
  for (let i = 0; i < 5; i++) {
    const r = await h2request(s, { ':path': '/limited', 'x-user': 'u1' });
    statuses.push(r.status);
    if (r.status === 429) retryAfter = r.headers['retry-after'] as string;
  }
  t.same(statuses, [200, 200, 200, 429, 429], 'the route rate limit refuses the 4th and 5th with 429');
  t.ok(retryAfter && Number(retryAfter) > 0, 'with Retry-After');
  t.equal((await h2request(s, { ':path': '/limited', 'x-user': 'u2' })).status, 200, 'another key is not limited');

  const tr = await h2request(s, { ':path': '/trailers' });
  t.equal(tr.body, 'part1-part2', 'chunked body');
  t.equal(tr.trailers?.['x-digest'], 'abc123', 'backend trailers reach the HTTP/2 client');

  // Request trailers from the HTTP/2 client go to the backend (chunked).
  const withTrailers = await new Promise<string>((resolve, reject) => {
    const st = s.request({ ':method': 'POST', ':path': '/rt' }, { waitForTrailers: true });
    st.on('wantTrailers', () => st.sendTrailers({ 'x-sum': '42' }));
    let body = '';
    st.on('data', (d) => (body += d));
    st.on('end', () => resolve(body));
    st.on('error', reject);
    st.end('payload');
  });
  const seen = JSON.parse(withTrailers);
  t.equal(seen.body, 'payload');
  t.equal(seen.trailers['x-sum'], '42', 'request trailers reach the HTTP/1.1 backend');

  const access = await waitFor(
    () => {
      const lines = lb.logs().filter((l) => l.msg === 'access');
      return lines.length >= 12 ? lines : undefined;
    },
    10_000,
    'access lines',
  );
  t.ok(access.every((l) => l.proto === 'h2'), 'every access line of a stream says proto "h2"');
  t.ok(access.some((l) => l.status === 429 && l.path === '/limited'), 'the 429 is logged');
  // HTTP/1.1 requests keep their lines without the field.
  await get(port, '/h1');
  const h1 = await waitFor(() => lb.logs().find((l) => l.msg === 'access' && l.path === '/h1'), 10_000, 'HTTP/1.1 access line');
  t.equal(h1.proto, undefined, 'an HTTP/1.1 line has no proto field');
  const m = await get(metricsPort, '/metrics');
  t.match(m.body, /lb_rate_limited_total\{listener="web",limit="tiny"\} 2/, 'the 429s are counted as for HTTP/1.1');
  t.match(m.body, /lb_requests_total\{listener="web",pool="b",backend="127\.0\.0\.1:\d+",code="200"\} 2/, 'requests counted in lb_requests_total');
});

t.test('malformed HTTP/2 is refused per stream; the connection and other streams are served', async (t) => {
  const a = await named('a');
  t.teardown(() => a.close());
  const [port, metricsPort] = [await freePort(), await freePort()];
  const lb = await startLb(config(port, metricsPort, a.port, a.port), [port]);
  t.teardown(() => lb.stop());
  const raw = await RawH2.connect(port);
  t.teardown(() => raw.close());
  const base: Array<[string, string]> = [[':method', 'GET'], [':scheme', 'http'], [':path', '/'], [':authority', 'site.test']];
  raw.headers(1, [...base, ['X-Upper', '1']]);
  raw.headers(3, [...base, ['connection', 'keep-alive']]);
  raw.headers(5, [...base, ['te', 'gzip']]);
  raw.headers(7, base);
  raw.headers(9, [...base, ['host', 'other.test']]);
  const PROTOCOL_ERROR = 1;
  t.equal(await raw.resetOf(1), PROTOCOL_ERROR, 'an upper-case field name: RST_STREAM PROTOCOL_ERROR');
  t.equal(await raw.resetOf(3), PROTOCOL_ERROR, 'a connection-specific field: RST_STREAM PROTOCOL_ERROR');
  t.equal(await raw.resetOf(5), PROTOCOL_ERROR, 'TE other than trailers: RST_STREAM PROTOCOL_ERROR');
  await raw.responseOn(7);
  t.pass('a well-formed stream on the same connection is answered');
  await raw.responseOn(9);
  t.notOk(raw.frames.some((f) => f.type === 7), 'no GOAWAY: the connection lives on');
  t.notOk(raw.closed, 'and stays open');
  t.equal(a.hits, 1, 'only the well-formed stream reached the backend (Host against :authority is refused)');
  const refused = await waitFor(() => {
    const lines = lb.logs().filter((l) => l.msg === 'access' && l.status === 400);
    return lines.length >= 4 ? lines : undefined;
  }, 10_000, 'four 400s in the access log');
  const errors = refused.map((l) => String(l.error));
  t.ok(errors.some((e) => /Host disagrees with :authority/.test(e)), 'a Host that disagrees with :authority: 400, logged');
  t.ok(errors.some((e) => /malformed HTTP\/2 request \(field name "X-Upper".*stream reset/.test(e)), 'the upper-case name: logged as a malformed request');
  t.ok(errors.some((e) => /connection-specific field connection/.test(e)), 'the connection-specific field: logged');
  t.ok(errors.some((e) => /TE other than "trailers"/.test(e)), 'the TE: logged');
  t.ok(refused.every((l) => l.proto === 'h2'), 'each logged as HTTP/2');
  const m = await get(metricsPort, '/metrics');
  t.match(m.body, /lb_requests_total\{listener="web",pool="",backend="",code="400"\} 4/, 'and counted');
});

t.test('rapid reset flood: GOAWAY ENHANCE_YOUR_CALM to the flooder, other clients unaffected', async (t) => {
  // A backend that answers after a while, so that flooded streams are still unanswered when reset.
  const slow = await startUpstream('slow', (req, res) => {
    const ms = req.url === '/slow' ? 200 : 0;
    setTimeout(() => res.end('ok'), ms);
  });
  t.teardown(() => slow.close());
  const [port, metricsPort] = [await freePort(), await freePort()];
  const lb = await startLb(config(port, metricsPort, slow.port, slow.port), [port]);
  t.teardown(() => lb.stop());

  const good = http2.connect(`http://127.0.0.1:${port}`);
  t.teardown(() => good.close());
  let goodOk = 0;
  let goodFailed = 0;
  let flooding = true;
  // Ends by itself once the flood is over (and 20 requests went through), or when the test ends.
  t.teardown(() => {
    flooding = false;
    goodOk = Math.max(goodOk, 20);
  });
  const goodLoop = (async () => {
    while (flooding || goodOk < 20) {
      try {
        const r = await h2request(good, { ':path': '/x' });
        if (r.status === 200 && r.body === 'ok') goodOk++;
        else goodFailed++;
      } catch {
        goodFailed++;
      }
    }
  })();

  // Frames written by hand: HEADERS then RST_STREAM(CANCEL) for each stream, in bounded rounds until the
  // server's GOAWAY (at most 2000 streams).
  const flooder = await RawH2.connect(port);
  t.teardown(() => flooder.close());
  const req: Array<[string, string]> = [[':method', 'GET'], [':scheme', 'http'], [':path', '/slow'], [':authority', 'site.test']];
  const goawayFrame = () => flooder.frames.find((f) => f.type === 7);
  let sent = 0;
  let id = 1;
  while (!goawayFrame() && !flooder.closed && sent < 2000) {
    for (let i = 0; i < 10; i++, id += 2, sent++) {
      flooder.headers(id, req);
      flooder.rst(id);
    }
    // A pace the server keeps up with: node:http2 has a bound of its own (streams refused past its session
    // memory, then INTERNAL_ERROR) that a flood far faster than the server reads can reach first.
    await new Promise((r) => setTimeout(r, 5));
  }
  // The server reads the flood as fast as it can; on a loaded machine that can take a while.
  const g = await waitFor(() => goawayFrame(), 60_000, 'the flooder to get GOAWAY').finally(() => (flooding = false));
  await goodLoop;
  t.equal(g.payload.readUInt32BE(4), http2.constants.NGHTTP2_ENHANCE_YOUR_CALM, `the flooder got GOAWAY ENHANCE_YOUR_CALM after ${sent} reset streams (last stream ${g.payload.readUInt32BE(0)})`);
  t.ok(sent <= 2000, 'within the bound of the test');
  t.equal(goodFailed, 0, `the other client's ${goodOk} requests all succeeded`);
  const m = await get(metricsPort, '/metrics');
  t.match(m.body, /lb_http2_reset_floods_total\{listener="web"\} 1/, 'counted in lb_http2_reset_floods_total');
  const warn = lb.logs().find((l) => typeof l.msg === 'string' && (l.msg as string).includes('resetting too many streams'));
  t.ok(warn, 'logged');
  t.equal(warn?.listener, 'web');
});
