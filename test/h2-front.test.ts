// HTTP/2 from clients through the real daemon: h2c with prior knowledge on a plain listener (node:http2
// client and curl --http2-prior-knowledge), HTTP/1.1 on the same listener, ALPN h2 on a tls listener (curl
// --http2), and a tls listener without http2 still saying http/1.1. Each stream takes the HTTP/1.1 path:
// the backend (HTTP/1.1) sees Host from :authority, cookies joined, X-Forwarded-*; bodies both ways; many
// streams at once on one connection.

import t from 'tap';
import http from 'node:http';
import http2 from 'node:http2';
import fs from 'node:fs';
import path from 'node:path';
import { freePort, httpConfig, startLb, startUpstream, tmpdir } from './helpers/lb.js';
import { makeCa, makeLeaf } from './helpers/pki.js';
import { h2request, run } from './helpers/h2.js';

/** A backend that answers with what it saw: method, url, HTTP version, headers and body as JSON. */
async function echoUpstream() {
  return startUpstream('echo', (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (d: Buffer) => chunks.push(d));
    req.on('end', () => {
      const body = JSON.stringify({
        method: req.method,
        url: req.url,
        version: req.httpVersion,
        headers: req.headers,
        body: Buffer.concat(chunks).toString(),
        trailers: req.trailers,
      });
      res.writeHead(200, { 'content-type': 'application/json', 'x-seen': 'yes', connection: 'keep-alive' });
      res.end(body);
    });
  });
}

t.test('h2c with prior knowledge on a plain listener; HTTP/1.1 on the same listener', async (t) => {
  const up = await echoUpstream();
  t.teardown(() => up.close());
  const port = await freePort();
  const lb = await startLb(
    httpConfig(port, `http2 = true\n[pools.app]\nbackends = [{ address = "127.0.0.1:${up.port}" }]`),
    [port],
  );
  t.teardown(() => lb.stop());

  const session = http2.connect(`http://127.0.0.1:${port}`);
  t.teardown(() => session.close());
  const r = await h2request(session, { ':path': '/a?b=1', ':authority': 'site.test', cookie: ['x=1', 'y=2'], 'x-custom': 'v' });
  t.equal(r.status, 200, 'h2c GET answered');
  t.equal(r.headers['x-seen'], 'yes', 'backend response header passed on');
  t.notOk(r.headers.connection, 'no Connection header in an HTTP/2 response');
  const seen = JSON.parse(r.body);
  t.equal(seen.version, '1.1', 'the backend is spoken to in HTTP/1.1');
  t.equal(seen.url, '/a?b=1', ':path is the target');
  t.equal(seen.headers.host, 'site.test', ':authority becomes Host');
  t.equal(seen.headers.cookie, 'x=1; y=2', 'cookie crumbs joined with "; "');
  t.equal(seen.headers['x-custom'], 'v');
  t.equal(seen.headers['x-forwarded-for'], '127.0.0.1');
  t.equal(seen.headers['x-forwarded-proto'], 'http');
  t.equal(seen.headers['x-forwarded-host'], 'site.test');

  // A body with and without Content-Length (the second goes chunked to the backend).
  const post = await h2request(session, { ':method': 'POST', ':path': '/up', 'content-length': '5' }, 'hello');
  t.equal(JSON.parse(post.body).body, 'hello', 'body with content-length forwarded');
  t.equal(JSON.parse(post.body).headers['content-length'], '5');
  const post2 = await h2request(session, { ':method': 'POST', ':path': '/up2' }, Buffer.alloc(100_000, 97));
  const seen2 = JSON.parse(post2.body);
  t.equal(seen2.body.length, 100_000, 'body without content-length forwarded whole');
  t.equal(seen2.headers['transfer-encoding'], 'chunked', 'and chunked to the backend');

  // Many streams at once on one connection.
  const many = await Promise.all(Array.from({ length: 50 }, (_, i) => h2request(session, { ':path': `/m${i}` })));
  t.ok(many.every((m, i) => m.status === 200 && JSON.parse(m.body).url === `/m${i}`), '50 concurrent streams each answered with its own response');

  // HTTP/1.1 on the same listener.
  const h1 = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    http.get({ port, host: '127.0.0.1', path: '/h1', agent: false }, (res) => {
      let b = '';
      res.on('data', (d) => (b += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: b }));
    }).on('error', reject);
  });
  t.equal(h1.status, 200, 'HTTP/1.1 still served on an http2 listener');
  t.equal(JSON.parse(h1.body).url, '/h1');

  const curl = await run('curl', ['-sS', '--max-time', '10', '--http2-prior-knowledge', '-w', '\n%{http_version}', `http://127.0.0.1:${port}/curl`]);
  t.equal(curl.code, 0, `curl exits 0 ${curl.err}`);
  const lines = curl.out.trim().split('\n');
  t.equal(lines.at(-1), '2', 'curl --http2-prior-knowledge spoke HTTP/2');
  t.equal(JSON.parse(lines[0]!).url, '/curl');
});

t.test('ALPN h2 on a tls listener with http2; http/1.1 only without', async (t) => {
  const dir = tmpdir('lb-h2tls-');
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  makeCa(dir, 'ca');
  makeLeaf(dir, 'ca', 'server', '/CN=h2.test', ['DNS:h2.test']);
  const up = await echoUpstream();
  t.teardown(() => up.close());
  const [port, port1] = [await freePort(), await freePort()];
  const lb = await startLb(
    httpConfig(
      port,
      `http2 = true
[listeners.web.tls]
cert = "server.pem"
key = "server.key"
[listeners.h1]
protocol = "http"
listen = "127.0.0.1:${port1}"
pool = "app"
[listeners.h1.tls]
cert = "server.pem"
key = "server.key"
[pools.app]
backends = [{ address = "127.0.0.1:${up.port}" }]`,
    ),
    [port, port1],
    { dir },
  );
  t.teardown(() => lb.stop());
  const ca = path.join(dir, 'ca.pem');
  const curl = (p: number) =>
    run('curl', ['-sS', '--max-time', '10', '--http2', '--cacert', ca, '--resolve', `h2.test:${p}:127.0.0.1`, '-w', '\n%{http_version}', `https://h2.test:${p}/tls`]);
  const a = await curl(port);
  t.equal(a.code, 0, `curl exits 0 ${a.err}`);
  const la = a.out.trim().split('\n');
  t.equal(la.at(-1), '2', 'curl --http2 negotiated h2 by ALPN');
  const seen = JSON.parse(la[0]!);
  t.equal(seen.headers['x-forwarded-proto'], 'https');
  t.equal(seen.headers.host, `h2.test:${port}`);
  const b = await curl(port1);
  t.equal(b.code, 0, `curl exits 0 ${b.err}`);
  t.equal(b.out.trim().split('\n').at(-1), '1.1', 'a tls listener without http2 still answers http/1.1');
});
