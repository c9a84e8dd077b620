// HTTP (L7) proxying through the real daemon: distribution per algorithm, retries, 502/503/504, routes,
// forwarding headers, 10 MB bodies both ways, websockets, malformed requests.

import t from 'tap';
import crypto from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { WebSocket, WebSocketServer } from 'ws';
import { backends, freePort, get, httpConfig, startLb, startUpstream, type Upstream } from './helpers/lb.js';

const base = (port: number, pools: string, extra = ''): string => httpConfig(port, `${extra}\n${pools}`);

async function upstreams(n: number): Promise<Upstream[]> {
  return Promise.all(Array.from({ length: n }, (_, i) => startUpstream(`u${i + 1}`)));
}

async function tally(port: number, n: number, headers?: (i: number) => Record<string, string>): Promise<Record<string, number>> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const seen: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const r = await get(port, '/', { agent, headers: headers?.(i) });
    seen[r.body] = (seen[r.body] ?? 0) + 1;
  }
  agent.destroy();
  return seen;
}

t.test('distribution per algorithm (1 worker, sequential requests)', async (t) => {
  const ups = await upstreams(3);
  t.teardown(() => Promise.all(ups.map((u) => u.close())));
  const cases: Array<[string, string, (seen: Record<string, number>) => void]> = [
    ['round-robin', backends(ups.map((u) => ({ port: u.port }))), (s) => t.same(s, { u1: 20, u2: 20, u3: 20 }, 'round-robin: equal shares')],
    [
      'weighted-round-robin',
      backends(ups.map((u, i) => ({ port: u.port, weight: [3, 1, 1][i]! }))),
      (s) => t.same(s, { u1: 36, u2: 12, u3: 12 }, 'smooth WRR 3:1:1 exact over whole cycles'),
    ],
    ['least-connections', backends(ups.map((u) => ({ port: u.port }))), (s) => t.same(s, { u1: 20, u2: 20, u3: 20 }, 'least-connections: idle backends alternate')],
  ];
  for (const [algo, list, check] of cases) {
    const port = await freePort();
    const lb = await startLb(base(port, `[pools.app]\nalgorithm = "${algo}"\nbackends = ${list}\n`), [port]);
    check(await tally(port, 60));
    await lb.stop();
  }
});

t.test('consistent-hash: one key, one backend; keys spread', async (t) => {
  const ups = await upstreams(3);
  t.teardown(() => Promise.all(ups.map((u) => u.close())));
  const port = await freePort();
  const lb = await startLb(
    base(port, `[pools.app]\nalgorithm = "consistent-hash"\nhash_key = "header:x-user"\nbackends = ${backends(ups.map((u) => ({ port: u.port })))}\n`),
    [port],
  );
  t.teardown(() => lb.stop());
  const same = await tally(port, 30, () => ({ 'x-user': 'alice' }));
  t.equal(Object.keys(same).length, 1, 'every request with the same key went to one backend');
  const spread = await tally(port, 300, (i) => ({ 'x-user': `user-${i}` }));
  t.equal(Object.keys(spread).length, 3, 'different keys reach every backend');
  for (const n of Object.values(spread)) t.ok(n > 50, `share ${n}/300 is not starved`);
});

t.test('retries when a backend is down; 502 without retries; 503 when nothing is usable; 504 on response_timeout', async (t) => {
  const [u1] = await upstreams(1);
  const slow = await startUpstream('slow', (req, res) => {
    setTimeout(() => res.end('late'), 1500);
  });
  t.teardown(() => Promise.all([u1!.close(), slow.close()]));
  const dead = await freePort();
  const port = await freePort();
  const lb = await startLb(
    base(
      port,
      `[pools.app]
algorithm = "round-robin"
retries = 2
backends = ${backends([{ port: dead }, { port: u1!.port }])}
[pools.noretry]
retries = 0
backends = ${backends([{ port: dead }])}
[pools.none]
backends = ${backends([{ port: u1!.port, weight: 0 }])}
[pools.slow]
response_timeout = "300ms"
backends = ${backends([{ port: slow.port }])}
`,
      `[[listeners.web.routes]]
path_prefix = "/noretry"
pool = "noretry"
[[listeners.web.routes]]
path_prefix = "/none"
pool = "none"
[[listeners.web.routes]]
path_prefix = "/slow"
pool = "slow"`,
    ),
    [port],
  );
  t.teardown(() => lb.stop());
  for (let i = 0; i < 10; i++) {
    const r = await get(port, '/');
    t.equal(r.status, 200, `request ${i} succeeded through the retry`);
  }
  const post = await get(port, '/', { method: 'POST', body: 'x'.repeat(1000), headers: { 'content-type': 'text/plain' } });
  t.equal(post.status, 200, 'a POST whose first backend refused the connection is retried (nothing was sent)');
  const r502 = await get(port, '/noretry');
  t.equal(r502.status, 502);
  t.match(r502.body, /502 Bad Gateway: backend .* failed \(ECONNREFUSED\)/);
  const r503 = await get(port, '/none');
  t.equal(r503.status, 503);
  t.match(r503.body, /no usable backend in pool none/);
  const t0 = Date.now();
  const r504 = await get(port, '/slow');
  t.equal(r504.status, 504);
  t.match(r504.body, /504 Gateway Timeout/);
  t.ok(Date.now() - t0 < 1400, 'the 504 came at response_timeout, not when the backend answered');
});

t.test('routes by host and path prefix, forwarding headers, hop-by-hop removed', async (t) => {
  let seen: http.IncomingHttpHeaders = {};
  const echo = await startUpstream('echo', (req, res) => {
    seen = req.headers;
    res.writeHead(200, { connection: 'keep-alive', 'keep-alive': 'timeout=5', 'x-from': 'echo' });
    res.end('echo');
  });
  const api = await startUpstream('api');
  const wild = await startUpstream('wild');
  t.teardown(() => Promise.all([echo.close(), api.close(), wild.close()]));
  const port = await freePort();
  const lb = await startLb(
    base(
      port,
      `[pools.app]\nbackends = ${backends([{ port: echo.port }])}\n[pools.api]\nbackends = ${backends([{ port: api.port }])}\n[pools.wild]\nbackends = ${backends([{ port: wild.port }])}\n`,
      `[[listeners.web.routes]]
host = "api.example.com"
path_prefix = "/v1/"
pool = "api"
[[listeners.web.routes]]
host = "*.example.com"
pool = "wild"`,
    ),
    [port],
  );
  t.teardown(() => lb.stop());
  t.equal((await get(port, '/v1/x', { headers: { host: 'api.example.com' } })).body, 'api', 'host + prefix route');
  t.equal((await get(port, '/v2/x', { headers: { host: 'api.example.com:8080' } })).body, 'wild', 'prefix mismatch falls to the next route');
  t.equal((await get(port, '/', { headers: { host: 'a.b.example.com' } })).body, 'wild', 'wildcard host');
  t.equal((await get(port, '/', { headers: { host: 'example.com' } })).body, 'echo', 'no route matches: default pool');
  const r = await get(port, '/h', {
    headers: { host: 'site.test', 'x-forwarded-for': '10.1.1.1', 'x-forwarded-proto': 'gopher', connection: 'x-secret, keep-alive', 'x-secret': 's', te: 'trailers', 'proxy-connection': 'keep-alive' },
  });
  t.equal(r.body, 'echo');
  t.equal(seen['x-forwarded-for'], '10.1.1.1, 127.0.0.1', 'X-Forwarded-For appended');
  t.equal(seen['x-forwarded-proto'], 'http', 'X-Forwarded-Proto set by lb, not taken from the client');
  t.equal(seen['x-forwarded-host'], 'site.test');
  t.equal(seen.host, 'site.test', 'Host passed through');
  t.equal(seen['x-secret'], undefined, 'header named in Connection removed');
  t.equal(seen.te, undefined, 'TE removed');
  t.equal(seen['proxy-connection'], undefined, 'Proxy-Connection removed');
  t.not(r.headers['keep-alive'], 'timeout=5', "the backend's Keep-Alive is not passed to the client (lb sends its own)");
  t.equal(r.headers['x-from'], 'echo');
});

t.test('10 MB upload and download streamed intact', async (t) => {
  const payload = crypto.randomBytes(10 * 1024 * 1024);
  const digest = crypto.createHash('sha256').update(payload).digest('hex');
  const up = await startUpstream('big', (req, res) => {
    if (req.method === 'POST') {
      const h = crypto.createHash('sha256');
      let n = 0;
      req.on('data', (d: Buffer) => {
        h.update(d);
        n += d.length;
      });
      req.on('end', () => res.end(JSON.stringify({ n, sha: h.digest('hex') })));
      return;
    }
    res.writeHead(200, { 'content-length': payload.length });
    // Written in 64 KiB slices so the proxy sees a stream, not one buffer.
    let off = 0;
    const pump = (): void => {
      while (off < payload.length) {
        const ok = res.write(payload.subarray(off, off + 65536));
        off += 65536;
        if (!ok) return void res.once('drain', pump);
      }
      res.end();
    };
    pump();
  });
  t.teardown(() => up.close());
  const port = await freePort();
  const lb = await startLb(base(port, `[pools.app]\nbackends = ${backends([{ port: up.port }])}\n`), [port]);
  t.teardown(() => lb.stop());

  const upload = await new Promise<string>((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/up', headers: { 'transfer-encoding': 'chunked' } }, (res) => {
      let b = '';
      res.on('data', (d) => (b += d));
      res.on('end', () => resolve(b));
    });
    req.on('error', reject);
    for (let off = 0; off < payload.length; off += 100_000) req.write(payload.subarray(off, off + 100_000));
    req.end();
  });
  t.same(JSON.parse(upload), { n: payload.length, sha: digest }, 'chunked 10 MB upload arrived whole');

  const down = await new Promise<{ n: number; sha: string }>((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: '/down' }, (res) => {
      const h = crypto.createHash('sha256');
      let n = 0;
      res.on('data', (d: Buffer) => {
        h.update(d);
        n += d.length;
      });
      res.on('end', () => resolve({ n, sha: h.digest('hex') }));
      res.on('error', reject);
    });
  });
  t.same(down, { n: payload.length, sha: digest }, '10 MB download arrived whole');
});

t.test('websocket echo through the proxy', async (t) => {
  const server = http.createServer();
  const wss = new WebSocketServer({ server });
  wss.on('connection', (ws, req) => {
    ws.send(`hello ${req.headers['x-forwarded-for']}`);
    ws.on('message', (m) => ws.send(`echo:${m.toString()}`));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    wss.close();
    server.closeAllConnections();
    server.close();
  });
  const up = (server.address() as net.AddressInfo).port;
  const port = await freePort();
  const lb = await startLb(base(port, `[pools.app]\nbackends = ${backends([{ port: up }])}\n`), [port]);
  t.teardown(() => lb.stop());
  const ws = new WebSocket(`ws://127.0.0.1:${port}/chat`);
  const got: string[] = [];
  await new Promise<void>((resolve, reject) => {
    ws.on('message', (m) => {
      got.push(m.toString());
      if (got.length === 1) ws.send('ping');
      if (got.length === 2) resolve();
    });
    ws.on('error', reject);
  });
  ws.close();
  t.same(got, ['hello 127.0.0.1', 'echo:ping']);
});

t.test('garbage and aborted clients end their own request only', async (t) => {
  let sawBody = '';
  const up = await startUpstream('ok', (req, res) => {
    let b = '';
    req.on('data', (d) => (b += d));
    req.on('end', () => {
      sawBody = b;
      res.end('ok');
    });
    req.on('error', () => {});
  });
  t.teardown(() => up.close());
  const port = await freePort();
  const lb = await startLb(base(port, `[pools.app]\nbackends = ${backends([{ port: up.port }])}\n`), [port]);
  t.teardown(() => lb.stop());
  const raw = (text: string): Promise<string> =>
    new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => s.write(text));
      let b = '';
      s.on('data', (d) => (b += d));
      s.on('close', () => resolve(b));
      s.on('error', () => resolve(b));
      s.setTimeout(3000, () => s.destroy());
    });
  const hits = up.hits;
  t.match(await raw('\x00\x01garbage\r\n\r\n'), /^HTTP\/1\.1 400 /, 'binary garbage: 400');
  t.match(await raw('GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'), /^HTTP\/1\.1 400 /, 'CL + TE: 400');
  t.equal(up.hits, hits, 'the upstream received nothing from the malformed requests');
  // A client that promises 1000 bytes, sends 10 and disconnects.
  await new Promise<void>((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => {
      s.write('POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789');
      setImmediate(() => {
        s.destroy();
        resolve();
      });
    });
  });
  const r = await get(port, '/after');
  t.equal(r.status, 200, 'the next client is served');
  t.not(sawBody, '0123456789', 'the truncated body was never delivered as complete');
});
