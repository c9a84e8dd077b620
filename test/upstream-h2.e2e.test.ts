// HTTP/2 to backends (pools.NAME.protocol = "h2c" / "h2") through the real daemon, HTTP/1.1 clients in
// front and node:http2 servers behind: fields mapped (Host -> :authority, te: trailers, connection-specific
// fields dropped), bodies both ways (32 MiB up, 64 MiB down) with request and response trailers, a slow
// client that does not make lb buffer a 64 MiB response (the worker's RSS from /proc), h2 over TLS with ALPN
// and session resumption, a TLS backend without h2 refused with a clear error, the h2_max_connections bound
// counted at the server, REFUSED_STREAM retried on another backend, GOAWAY mid-traffic (NGINX as the h2c
// backend, keepalive_requests 25) losing no request,
// an http health check over h2c, and config errors naming file, line and key.

import t, { type Test } from 'tap';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import https from 'node:https';
import { spawn } from 'node:child_process';
import { admin, cli, connectOnce, freePort, get, startLb, startLoad, tmpdir, waitFor, type Lb } from './helpers/lb.js';
import { findBinary } from './helpers/differential.js';
import { makeCa, makeLeaf } from './helpers/pki.js';

interface H2Backend {
  port: number;
  server: http2.Http2Server | http2.Http2SecureServer;
  /** Sessions accepted, in order. */
  sessions: http2.ServerHttp2Session[];
  /** TLS sessions resumed, per accepted TLS connection. */
  resumed: boolean[];
  close(): Promise<void>;
}

type StreamHandler = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void;

async function startH2(handler: StreamHandler, opts: { tls?: { cert: Buffer; key: Buffer }; settings?: http2.Settings } = {}): Promise<H2Backend> {
  const sessions: http2.ServerHttp2Session[] = [];
  const resumed: boolean[] = [];
  const server = opts.tls
    ? http2.createSecureServer({ ...opts.tls, settings: opts.settings ?? {} })
    : http2.createServer({ settings: opts.settings ?? {} });
  server.on('session', (s) => {
    sessions.push(s);
    s.on('error', () => {});
  });
  if (opts.tls) (server as http2.Http2SecureServer).on('secureConnection', (s: tls.TLSSocket) => resumed.push(s.isSessionReused()));
  server.on('stream', (stream, headers) => {
    stream.on('error', () => {});
    handler(stream, headers);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    server,
    sessions,
    resumed,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sessions) s.destroy();
        server.close(() => r());
      }),
  };
}

/** Reads a stream's whole body. */
function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => resolve(Buffer.concat(chunks)));
    stream.on('error', reject);
  });
}

/** Echo: answers JSON about the request (fields, body size and digest, trailers) with trailers of its own. */
const echo: StreamHandler = (stream, headers) => {
  const hash = crypto.createHash('sha256');
  let size = 0;
  let reqTrailers: http2.IncomingHttpHeaders | undefined;
  stream.on('trailers', (tr) => (reqTrailers = tr));
  stream.on('data', (c: Buffer) => {
    size += c.length;
    hash.update(c);
  });
  stream.on('end', () => {
    if (stream.destroyed) return;
    stream.respond({ ':status': 200, 'content-type': 'application/json', 'x-multi': ['a', 'b'] }, { waitForTrailers: true });
    stream.on('wantTrailers', () => stream.sendTrailers({ 'x-checksum': 'done', 'grpc-status': '0' }));
    stream.end(JSON.stringify({ headers, size, sha: hash.digest('hex'), trailers: reqTrailers ?? null }));
  });
};

/** A raw HTTP/1.1 exchange: writes `text`, reads until the peer closes (the request says Connection: close). */
function raw(port: number, text: string | Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    s.on('data', (c) => chunks.push(c));
    s.on('end', () => resolve(Buffer.concat(chunks).toString('latin1')));
    s.on('error', reject);
    s.write(text);
  });
}

/** Metrics listener ports, by lb daemon port. */
const metricsPorts = new Map<number, number>();

function config(port: number, pool: string, extra = '', mport = 0): string {
  if (mport) metricsPorts.set(port, mport);
  return `
[daemon]
workers = 1
grace_period = "2s"
[admin]
socket = "{{socket}}"
[log]
level = "warn"
${mport ? `[metrics]\nlisten = "127.0.0.1:${mport}"` : ''}
[listeners.web]
protocol = "http"
listen = "127.0.0.1:${port}"
pool = "app"
${extra}
[pools.app]
${pool}
`;
}

async function workerPid(lb: Lb): Promise<number> {
  const st = await admin(lb.socket, { cmd: 'status' });
  return st.result.workers.pids[0] as number;
}

function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m![1]);
}

async function metrics(port: number): Promise<string> {
  return (await get(metricsPorts.get(port)!, '/metrics')).body;
}

t.test('h2c: fields, bodies both ways, trailers, back-pressure', async (t) => {
  const SIZE = 64 * 1024 * 1024;
  let bigWritten = 0;
  let bigDone: Promise<void> | undefined;
  const backend = await startH2((stream, headers) => {
    if (headers[':path'] === '/big') {
      // 64 MiB written under the stream's flow control; `bigWritten` counts what http2 took.
      stream.respond({ ':status': 200, 'content-type': 'application/octet-stream' });
      const chunk = Buffer.alloc(64 * 1024, 0x61);
      bigDone = new Promise<void>((resolve) => {
        const pump = (): void => {
          while (bigWritten < SIZE) {
            bigWritten += chunk.length;
            if (!stream.write(chunk)) {
              stream.once('drain', pump);
              return;
            }
          }
          stream.end();
          resolve();
        };
        pump();
      });
      return;
    }
    echo(stream, headers);
  });
  t.teardown(() => backend.close());
  const port = await freePort();
  const lb = await startLb(config(port, `protocol = "h2c"\nbackends = [ { name = "h2", address = "127.0.0.1:${backend.port}" } ]`, '', await freePort()), [port]);
  t.teardown(() => lb.stop());

  // Fields: Host -> :authority, connection-specific fields dropped, te: trailers, lists kept.
  const r = await get(port, '/fields?x=1', { headers: { host: 'app.example', 'keep-alive': 'timeout=5', 'x-one': 'v1' } });
  t.equal(r.status, 200, r.body);
  const seen = JSON.parse(r.body) as { headers: http2.IncomingHttpHeaders };
  t.equal(seen.headers[':authority'], 'app.example');
  t.equal(seen.headers[':path'], '/fields?x=1');
  t.equal(seen.headers[':scheme'], 'http');
  t.equal(seen.headers['te'], 'trailers');
  t.equal(seen.headers['x-one'], 'v1');
  t.equal(seen.headers['keep-alive'], undefined);
  t.equal(seen.headers['host'], undefined);
  t.equal(seen.headers['x-forwarded-proto'], 'http');
  t.same(r.headers['x-multi'], 'a, b');

  // Response trailers reach an HTTP/1.1 client that said TE: trailers, on a chunked response; request
  // trailers reach the backend.
  const text = await raw(
    port,
    'POST /trailers HTTP/1.1\r\nHost: a\r\nTE: trailers\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n' +
      '5\r\nhello\r\n0\r\nx-req-trailer: yes\r\n\r\n',
  );
  t.match(text, /^HTTP\/1\.1 200 /);
  t.match(text, /transfer-encoding: chunked/i);
  t.match(text, /\r\n0\r\n(?:.*\r\n)*x-checksum: done\r\n/i, 'response trailer forwarded');
  t.match(text, /grpc-status: 0\r\n/i);
  const bodyJson = JSON.parse(/\{.*\}/s.exec(text)![0]) as { size: number; trailers: Record<string, string> | null };
  t.equal(bodyJson.size, 5);
  t.equal(bodyJson.trailers?.['x-req-trailer'], 'yes', 'request trailer forwarded');

  // 32 MiB up, checked by digest.
  const up = crypto.randomBytes(32 * 1024 * 1024);
  const upReply = await new Promise<string>((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: '/up', method: 'POST', agent: false, headers: { 'content-length': up.length } }, (res) => {
      res.setEncoding('utf8');
      let b = '';
      res.on('data', (d: string) => (b += d));
      res.on('end', () => resolve(b));
    });
    req.on('error', reject);
    req.end(up);
  });
  const upSeen = JSON.parse(upReply) as { size: number; sha: string };
  t.equal(upSeen.size, up.length);
  t.equal(upSeen.sha, crypto.createHash('sha256').update(up).digest('hex'));

  // A slow client: reads nothing of a 64 MiB response. lb must stop reading from the backend (flow
  // control): what the backend got written stops well short of 64 MiB and the worker's RSS stays bounded.
  const pid = await workerPid(lb);
  const before = rssKiB(pid);
  const slow = net.connect(port, '127.0.0.1');
  slow.pause();
  slow.write('GET /big HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
  let last = -1;
  await waitFor(
    async () => {
      // Stalled: no progress between two polls 300 ms apart.
      const now = bigWritten;
      if (now > 0 && now === last) return true;
      last = now;
      await new Promise((r) => setTimeout(r, 300));
      return false;
    },
    60_000,
    'the backend to stall behind the slow client',
  );
  const stalledAt = bigWritten;
  const grown = rssKiB(pid) - before;
  t.ok(stalledAt < 24 * 1024 * 1024, `backend stalled after ${stalledAt} bytes of ${SIZE}`);
  t.ok(grown < 40 * 1024, `worker RSS grew ${grown} KiB while the client did not read`);
  // Then the client reads it all.
  let got = 0;
  const ended = new Promise<void>((resolve) => slow.on('end', resolve));
  slow.on('data', (c: Buffer) => (got += c.length));
  slow.resume();
  await ended;
  await bigDone;
  t.ok(got > SIZE, `client read ${got} bytes (64 MiB body and head)`);
  t.ok(/lb_backend_h2_sessions\{pool="app",backend="h2"\} 1/.test(await metrics(port)), 'one open h2 session counted');
});

t.test('h2c: a backend that does not read makes lb stop reading a 64 MiB upload', async (t) => {
  const SIZE = 64 * 1024 * 1024;
  let held: http2.ServerHttp2Stream | undefined;
  let read = 0;
  const backend = await startH2((stream) => {
    // Reads nothing until told to: HTTP/2 flow control holds lb back.
    stream.pause();
    held = stream;
    stream.on('data', (c: Buffer) => (read += c.length));
    stream.on('end', () => {
      stream.respond({ ':status': 200 });
      stream.end(String(read));
    });
  });
  t.teardown(() => backend.close());
  const port = await freePort();
  const lb = await startLb(config(port, `protocol = "h2c"\nbackends = [ { address = "127.0.0.1:${backend.port}" } ]`), [port]);
  t.teardown(() => lb.stop());
  const pid = await workerPid(lb);
  const before = rssKiB(pid);
  const client = net.connect(port, '127.0.0.1');
  const chunk = Buffer.alloc(256 * 1024, 0x62);
  let offered = 0;
  let reply = '';
  client.on('data', (d: Buffer) => (reply += d.toString('latin1')));
  const closed = new Promise<void>((resolve) => client.on('close', () => resolve()));
  client.write(`POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: ${SIZE}\r\nConnection: close\r\n\r\n`);
  const pump = (): void => {
    while (offered < SIZE) {
      offered += chunk.length;
      if (!client.write(chunk)) {
        client.once('drain', pump);
        return;
      }
    }
  };
  pump();
  let last = -1;
  await waitFor(
    async () => {
      const now = client.bytesWritten;
      if (held && now === last) return true;
      last = now;
      await new Promise((r) => setTimeout(r, 300));
      return false;
    },
    60_000,
    'the upload to stall behind the backend',
  );
  const stalledAt = client.bytesWritten;
  const grown = rssKiB(pid) - before;
  t.ok(stalledAt < 24 * 1024 * 1024, `the client could write ${stalledAt} bytes of ${SIZE} while the backend read nothing`);
  t.ok(grown < 40 * 1024, `worker RSS grew ${grown} KiB`);
  held!.resume();
  await closed;
  t.match(reply, /^HTTP\/1\.1 200 /);
  t.match(reply, new RegExp(`\\r\\n${SIZE}\\r\\n0\\r\\n`), 'the backend got all 64 MiB');
});

t.test('h2 over TLS: ALPN, resumption, and a backend without h2 refused', async (t) => {
  const dir = tmpdir();
  makeCa(dir, 'ca');
  makeLeaf(dir, 'ca', 'srv', '/CN=app.internal', ['DNS:app.internal', 'IP:127.0.0.1']);
  const creds = { cert: fs.readFileSync(path.join(dir, 'srv.pem')), key: fs.readFileSync(path.join(dir, 'srv.key')) };
  const backend = await startH2((stream, headers) => {
    if (headers[':path'] === '/bye') {
      // The backend ends the session after this response: the next request needs a new TLS connection.
      stream.respond({ ':status': 200 });
      stream.end('bye');
      // Deferred: node 20's http2 server corrupts its heap when a session is closed inside its 'stream' event.
      const session = stream.session;
      if (session) setImmediate(() => session.close());
      return;
    }
    echo(stream, headers);
  }, { tls: creds });
  t.teardown(() => backend.close());
  // An HTTPS server that speaks HTTP/1.1 only (no ALPN h2).
  const h1 = https.createServer(creds, (_req, res) => res.end('h1'));
  await new Promise<void>((r) => h1.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => h1.close(() => r())));
  const h1Port = (h1.address() as net.AddressInfo).port;

  const port = await freePort();
  const toml = config(
    port,
    `protocol = "h2"
tls = { ca = "ca.pem", server_name = "app.internal" }
backends = [ { name = "tls-h2", address = "127.0.0.1:${backend.port}" } ]
[pools.h1only]
protocol = "h2"
retries = 0
tls = { ca = "ca.pem", server_name = "app.internal" }
backends = [ { name = "h1", address = "127.0.0.1:${h1Port}" } ]
[[listeners.web.routes]]
path_prefix = "/h1only"
pool = "h1only"
`,
    '',
    await freePort(),
  );
  const lb = await startLb(toml, [port], { dir });
  t.teardown(() => lb.stop());

  const a = await get(port, '/one');
  t.equal(a.status, 200, a.body);
  t.equal((JSON.parse(a.body) as { headers: Record<string, string> }).headers[':scheme'], 'https');
  t.equal((await get(port, '/bye')).status, 200);
  await waitFor(() => backend.sessions[0]?.closed || backend.sessions[0]?.destroyed, 10_000, 'the first session to close');
  const b = await get(port, '/two');
  t.equal(b.status, 200, b.body);
  t.equal(backend.resumed.length, 2, 'two TLS connections');
  t.same(backend.resumed, [false, true], 'the second TLS connection resumed the first one\'s session');

  const bad = await get(port, '/h1only');
  t.equal(bad.status, 502);
  t.match(bad.body, /ALPN_NOT_H2/);
  t.match(await metrics(port), /lb_backend_tls_errors_total\{pool="h1only",backend="h1",reason="handshake"\} [1-9]/);
});

t.test('h2_max_connections and SETTINGS_MAX_CONCURRENT_STREAMS bound the streams', async (t) => {
  let inflight = 0;
  let maxInflight = 0;
  const held: Array<() => void> = [];
  let release = false;
  const backend = await startH2(
    (stream) => {
      inflight++;
      maxInflight = Math.max(maxInflight, inflight);
      const answer = (): void => {
        inflight--;
        if (!stream.destroyed) {
          stream.respond({ ':status': 200 });
          stream.end('ok');
        }
      };
      if (release) answer();
      else held.push(answer);
    },
    { settings: { maxConcurrentStreams: 2 } },
  );
  t.teardown(() => backend.close());
  const port = await freePort();
  const lb = await startLb(config(port, `protocol = "h2c"\nh2_max_connections = 2\nbackends = [ { address = "127.0.0.1:${backend.port}" } ]`), [port]);
  t.teardown(() => lb.stop());
  // 12 concurrent requests (separate client connections).
  const replies = Array.from({ length: 12 }, (_, i) => get(port, `/r${i}`));
  // 2 connections x 2 streams: four reach the backend; the rest wait in lb.
  await waitFor(() => inflight === 4, 20_000, 'four streams at the backend');
  t.equal(backend.sessions.length, 2, 'two HTTP/2 connections, no more');
  release = true;
  for (const a of held.splice(0)) a();
  const all = await Promise.all(replies);
  t.same(all.map((r) => r.status), Array(12).fill(200));
  t.equal(maxInflight, 4, 'never more than 2 x 2 streams at once');
  t.equal(backend.sessions.length, 2, 'still two connections after all 12');
});

/**
 * NGINX as an h2c backend (`listen ... http2` without TLS: prior knowledge) that ends each connection with
 * GOAWAY after 25 requests (keepalive_requests); it answers with its connection's serial number.
 */
async function startNginxH2c(t: Test): Promise<number> {
  const dir = tmpdir('lb-h2-nginx-');
  const port = await freePort();
  fs.writeFileSync(
    path.join(dir, 'nginx.conf'),
    `daemon off;
master_process off;
worker_processes 1;
user root;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  server {
    listen 127.0.0.1:${port} http2;
    keepalive_requests 25;
    location / { return 200 "conn=$connection\n"; }
  }
}
`,
  );
  const nginx = spawn(findBinary('nginx'), ['-p', dir, '-e', path.join(dir, 'error.log'), '-c', path.join(dir, 'nginx.conf')], { stdio: 'ignore' });
  const exited = new Promise<void>((r) => nginx.once('exit', () => r()));
  t.teardown(async () => {
    nginx.kill('SIGTERM');
    await exited;
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await waitFor(() => connectOnce(port).then(() => true), 15_000, 'nginx to listen');
  return port;
}

t.test('REFUSED_STREAM is retried on another backend (any method); GOAWAY mid-traffic loses nothing', async (t) => {
  let refusedCount = 0;
  const refusing = await startH2((stream) => {
    refusedCount++;
    setImmediate(() => stream.close(http2.constants.NGHTTP2_REFUSED_STREAM));
  });
  t.teardown(() => refusing.close());
  const nginxPort = await startNginxH2c(t);
  const port = await freePort();
  const lb = await startLb(
    config(port, `protocol = "h2c"\nretries = 1\nbackends = [ { name = "refuser", address = "127.0.0.1:${refusing.port}" }, { name = "ok", address = "127.0.0.1:${nginxPort}" } ]`, '', await freePort()),
    [port],
  );
  t.teardown(() => lb.stop());
  for (let i = 0; i < 6; i++) {
    const r = await get(port, `/post${i}`, { method: 'POST' });
    t.equal(r.status, 200, `POST ${i}: ${r.body}`);
  }
  t.ok(refusedCount >= 3, `the refusing backend saw ${refusedCount} streams`);
  t.match(await metrics(port), /lb_backend_h2_refused_streams_total\{pool="app",backend="refuser",reason="refused_stream"\} [1-9]/);

  // Load against NGINX, which sends GOAWAY after every 25 requests on a connection (the refuser drained).
  await cli(['drain', 'app/refuser', '-s', lb.socket]);
  const load = startLoad(port, { concurrency: 16, keepAlive: true, limitMs: 60_000 });
  await waitFor(() => load.result.ok >= 1500, 90_000, '1500 requests');
  const res = await load.stop();
  t.equal(res.failed, 0, `no request lost: ${res.errors.slice(0, 3).join('; ')}`);
  // 60 requests one after another went over at least 3 NGINX connections: GOAWAY did rotate them.
  const conns = new Set<string>();
  for (let i = 0; i < 60; i++) conns.add((await get(port, `/seq${i}`)).body.trim());
  t.ok(conns.size >= 3, `60 sequential requests over ${conns.size} backend connections`);
  const m = /lb_backend_h2_refused_streams_total\{pool="app",backend="ok",reason="goaway"\} (\d+)/.exec(await metrics(port));
  t.comment(`streams above a GOAWAY's last-stream-id, sent again: ${m?.[1] ?? 0}`);
});

t.test('http health check over h2c', async (t) => {
  let up = true;
  const backend = await startH2((stream, headers) => {
    if (headers[':path'] === '/healthz') {
      stream.respond({ ':status': up ? 200 : 503 });
      stream.end();
      return;
    }
    echo(stream, headers);
  });
  t.teardown(() => backend.close());
  const port = await freePort();
  const lb = await startLb(
    config(port, `protocol = "h2c"\nbackends = [ { name = "b", address = "127.0.0.1:${backend.port}" } ]\nhealth_check = { path = "/healthz", interval = "200ms", timeout = "150ms", rise = 1, fall = 1 }`),
    [port],
  );
  t.teardown(() => lb.stop());
  const health = async (): Promise<string> => {
    const r = await cli(['status', '--json', '-s', lb.socket]);
    const st = JSON.parse(r.stdout) as { pools: Array<{ backends: Array<{ name: string; state: string }> }> };
    return st.pools[0]!.backends[0]!.state;
  };
  await waitFor(async () => (await health()) === 'up', 20_000, 'backend up over h2c');
  up = false;
  await waitFor(async () => (await health()) === 'down', 20_000, 'backend down (503 over h2c)');
});

t.test('timeouts: connect (no HTTP/2 preface) retried elsewhere, read_timeout cuts a stalled body', async (t) => {
  // Accepts TCP and never speaks HTTP/2: the session never becomes ready.
  const held: net.Socket[] = [];
  const silent = net.createServer((s) => {
    held.push(s);
    s.on('error', () => {});
  });
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    for (const s of held) s.destroy();
    silent.close();
  });
  const silentPort = (silent.address() as net.AddressInfo).port;
  const backend = await startH2((stream, headers) => {
    if (headers[':path'] === '/stall') {
      stream.respond({ ':status': 200 });
      stream.write('part');
      return; // and nothing more
    }
    echo(stream, headers);
  });
  t.teardown(() => backend.close());
  const port = await freePort();
  const lb = await startLb(
    config(
      port,
      `protocol = "h2c"\nconnect_timeout = "300ms"\nread_timeout = "300ms"\nretries = 1
backends = [ { name = "silent", address = "127.0.0.1:${silentPort}" }, { name = "ok", address = "127.0.0.1:${backend.port}" } ]`,
      '',
      await freePort(),
    ),
    [port],
  );
  t.teardown(() => lb.stop());
  // Round robin puts some of these on the silent backend first: a connect failure, retried (any method).
  for (let i = 0; i < 4; i++) {
    const r = await get(port, `/p${i}`, { method: 'POST' });
    t.equal(r.status, 200, `POST ${i}: ${r.body}`);
  }
  t.match(await metrics(port), /lb_backend_failures_total\{pool="app",backend="silent",reason="connect"\} [1-9]/, 'connect timeouts counted as connect failures');
  // A body that stops: the client gets a cut response, not a complete one.
  const cut = await new Promise<string>((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/stall', agent: false }, (res) => {
      res.on('data', () => {});
      res.on('end', () => resolve('complete'));
      res.on('error', () => resolve('cut'));
      res.on('aborted', () => resolve('cut'));
    });
    req.on('error', () => resolve('cut'));
  });
  t.equal(cut, 'cut', 'read_timeout ended the stalled response');
  t.match(await metrics(port), /lb_backend_failures_total\{pool="app",backend="ok",reason="timeout"\} 1/, 'counted as a timeout');
});

t.test('a reload that changes protocol takes effect for the same backend address', async (t) => {
  const backend = await startH2(echo);
  t.teardown(() => backend.close());
  const port = await freePort();
  const pool = (proto: string): string => `${proto}retries = 0\nbackends = [ { name = "b", address = "127.0.0.1:${backend.port}" } ]`;
  const lb = await startLb(config(port, pool('')), [port]);
  t.teardown(() => lb.stop());
  // HTTP/1.1 to an HTTP/2-only server: it cannot answer.
  const before = await get(port, '/x');
  t.equal(before.status, 502, `http1 to an h2c-only backend: ${before.body.trim()}`);
  fs.writeFileSync(lb.configFile, fs.readFileSync(lb.configFile, 'utf8').replace('retries = 0', 'protocol = "h2c"\nretries = 0'));
  const rl = await cli(['reload', '-s', lb.socket]);
  t.equal(rl.code, 0, `reload: ${rl.stdout}${rl.stderr}`);
  const after = await get(port, '/x');
  t.equal(after.status, 200, after.body);
  t.equal((JSON.parse(after.body) as { headers: Record<string, string> }).headers[':path'], '/x');
});

t.test('config errors name file, line and key', async (t) => {
  const dir = tmpdir();
  const file = path.join(dir, 'lb.toml');
  fs.writeFileSync(
    file,
    `[admin]\nsocket = "${dir}/a.sock"\n[listeners.web]\nprotocol = "http"\nlisten = "127.0.0.1:1"\npool = "app"\n[pools.app]\nprotocol = "h2"\nbackends = [ { address = "127.0.0.1:2" } ]\n[pools.b]\nh2_max_connections = 3\nbackends = [ { address = "127.0.0.1:2" } ]\n[pools.c]\nprotocol = "h3"\nbackends = [ { address = "127.0.0.1:2" } ]\n` +
      `[pools.d]\nprotocol = "h2c"\nsend_proxy = "v2"\ntls = {}\nbackends = [ { address = "127.0.0.1:2" } ]\nhealth_check = { type = "http", service = "x" }\n` +
      `[listeners.db]\nprotocol = "tcp"\nlisten = "127.0.0.1:3"\npool = "d"\n`,
  );
  const r = await cli(['validate', '-c', file]);
  t.not(r.code, 0);
  const out = r.stdout + r.stderr;
  t.match(out, /lb\.toml:8:\d+.*pools\.app\.protocol.*needs a tls table/);
  t.match(out, /lb\.toml:11:\d+.*pools\.b\.h2_max_connections.*applies to protocol "h2" or "h2c"/);
  t.match(out, /lb\.toml:14:\d+.*pools\.c\.protocol/);
  t.match(out, /lb\.toml:17:\d+.*pools\.d\.protocol.*"h2c" is HTTP\/2 over plain TCP, but the pool has a tls table/);
  t.match(out, /lb\.toml:18:\d+.*pools\.d\.send_proxy.*applies to protocol "http1" pools only/);
  t.match(out, /lb\.toml:21:\d+.*pools\.d\.health_check\.service.*grpc health checks only/);
  t.match(out, /lb\.toml:25:\d+.*listeners\.db\.pool.*speaks h2c to its backends, which a tcp listener cannot carry/);
});

t.test("lb's own errors to gRPC requests are gRPC statuses (Trailers-Only, HTTP 200)", async (t) => {
  // A backend that never answers /slow, and a port nothing listens on.
  const backend = await startH2((stream, headers) => {
    if (headers[':path'] === '/slow') return;
    echo(stream, headers);
  });
  t.teardown(() => backend.close());
  const dead = await freePort();
  const port = await freePort();
  const lb = await startLb(
    config(
      port,
      `protocol = "h2c"\nresponse_timeout = "300ms"\nbackends = [ { address = "127.0.0.1:${backend.port}" } ]
[pools.dead]
protocol = "h2c"
retries = 0
backends = [ { address = "127.0.0.1:${dead}" } ]
[[listeners.web.routes]]
path_prefix = "/dead"
pool = "dead"
[[listeners.web.routes]]
path_prefix = "/limited"
pool = "app"
rate_limit = "one"
[rate_limits.one]
rate = 1
per = "1h"
`,
    ),
    [port],
  );
  t.teardown(() => lb.stop());
  const grpcHeaders = { 'content-type': 'application/grpc+proto', te: 'trailers' };
  const bad = await get(port, '/dead/svc.M/Call', { method: 'POST', headers: grpcHeaders, body: '\0\0\0\0\0' });
  t.equal(bad.status, 200);
  t.equal(bad.headers['grpc-status'], '14', 'UNAVAILABLE for a 502');
  t.match(decodeURIComponent(String(bad.headers['grpc-message'])), /502 Bad Gateway: backend .* failed \(ECONNREFUSED\)/);
  t.equal(bad.headers['content-type'], 'application/grpc');
  const slow = await get(port, '/slow', { method: 'POST', headers: grpcHeaders, body: '\0\0\0\0\0' });
  t.equal(slow.status, 200);
  t.equal(slow.headers['grpc-status'], '4', 'DEADLINE_EXCEEDED for a 504');
  // grpc-timeout passes through to the backend; a plain request still gets a plain 502.
  const ok = await get(port, '/fields', { method: 'POST', headers: { ...grpcHeaders, 'grpc-timeout': '5S' }, body: '\0\0\0\0\0' });
  t.equal((JSON.parse(ok.body) as { headers: Record<string, string> }).headers['grpc-timeout'], '5S');
  // A rate limit's 429: RESOURCE_EXHAUSTED, with Retry-After kept.
  t.equal((await get(port, '/limited/a', { method: 'POST', headers: grpcHeaders, body: '\0\0\0\0\0' })).status, 200);
  const limited = await get(port, '/limited/b', { method: 'POST', headers: grpcHeaders, body: '\0\0\0\0\0' });
  t.equal(limited.status, 200);
  t.equal(limited.headers['grpc-status'], '8', 'RESOURCE_EXHAUSTED for a 429');
  t.ok(Number(limited.headers['retry-after']) > 0, 'Retry-After kept');
  const plain = await get(port, '/dead/x');
  t.equal(plain.status, 502);
  t.equal(plain.headers['grpc-status'], undefined);
});
