// TLS to backends (`pools.NAME.tls`) through the real daemon, against real TLS servers (node:https and
// node:tls in this process, certificates made with openssl per run): verification against a CA, SNI and
// the name checked (IP backends: no SNI, the IP verified), a wrong CA and a wrong name refused (502, counted
// in lb_backend_tls_errors_total) and a backend with a bad certificate marked down by its health check,
// verify = false, a client certificate to a backend that requires one (and its refusal without),
// session resumption over new connections, a reload that picks up a rotated CA and client certificate,
// TLS origination on a tcp listener, config errors naming file, line and key, and NGINX as the HTTPS
// backend (ssl_verify_client on).

import t from 'tap';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { findBinary } from './helpers/differential.js';
import { admin, cli, connectOnce, freePort, get, startLb, tmpdir, waitFor } from './helpers/lb.js';
import { makeCa, makeLeaf } from './helpers/pki.js';

interface Echo {
  path: string;
  sni: string | null;
  reused: boolean;
  client: string | null;
}

interface TlsBackend {
  port: number;
  /** Per TLS connection: whether its session was resumed. */
  sessions: boolean[];
  close(): Promise<void>;
}

/**
 * An HTTPS backend answering JSON about the connection (SNI, resumed, client certificate CN); `/close`
 * answers with Connection: close, so that each such request comes on a new connection. `clientCa`: a
 * client certificate signed by it is required (requestCert + rejectUnauthorized).
 */
async function startHttps(dir: string, leaf: string, clientCa?: string, port = 0): Promise<TlsBackend> {
  const sessions: boolean[] = [];
  const server = https.createServer(
    {
      cert: fs.readFileSync(path.join(dir, `${leaf}.pem`)),
      key: fs.readFileSync(path.join(dir, `${leaf}.key`)),
      ...(clientCa ? { ca: fs.readFileSync(path.join(dir, `${clientCa}.pem`)), requestCert: true, rejectUnauthorized: true } : {}),
    },
    (req, res) => {
      const s = req.socket as tls.TLSSocket;
      const peer = s.getPeerCertificate();
      const body: Echo = { path: req.url ?? '', sni: (s as unknown as { servername: string | false }).servername || null, reused: s.isSessionReused(), client: (peer?.subject?.CN as string | undefined) ?? null };
      res.writeHead(200, { 'content-type': 'application/json', ...(req.url?.startsWith('/close') ? { connection: 'close' } : {}) });
      res.end(JSON.stringify(body));
    },
  );
  server.on('secureConnection', (s: tls.TLSSocket) => sessions.push(s.isSessionReused()));
  server.on('tlsClientError', () => {});
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    sessions,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** A TLS echo server requiring a client certificate: answers "<client CN> <what it read>" per chunk. */
async function startTlsEcho(dir: string, leaf: string, clientCa: string): Promise<{ port: number; close: () => Promise<void> }> {
  const server = tls.createServer(
    {
      cert: fs.readFileSync(path.join(dir, `${leaf}.pem`)),
      key: fs.readFileSync(path.join(dir, `${leaf}.key`)),
      ca: fs.readFileSync(path.join(dir, `${clientCa}.pem`)),
      requestCert: true,
      rejectUnauthorized: true,
    },
    (s) => {
      const cn = s.getPeerCertificate()?.subject?.CN ?? '-';
      s.on('data', (d: Buffer) => s.write(`${cn} ${d.toString()}`));
      s.on('end', () => s.end());
      s.on('error', () => {});
    },
  );
  server.on('tlsClientError', () => {});
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as net.AddressInfo).port, close: () => new Promise<void>((r) => server.close(() => r())) };
}

/** Sum of a metric's samples whose labels include `labels`, from the metrics listener. */
async function metric(port: number, name: string, labels: Record<string, string> = {}): Promise<number> {
  const r = await get(port, '/metrics');
  let sum = 0;
  for (const line of r.body.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

async function backendStatus(socket: string, pool: string): Promise<{ health: string; lastCheck: { ok: boolean; detail: string } | null }> {
  const r = await admin(socket, { cmd: 'status' });
  const p = (r.result.pools as Array<{ name: string; backends: Array<{ health: string; lastCheck: { ok: boolean; detail: string } | null }> }>).find((x) => x.name === pool);
  return p!.backends[0]!;
}

function pki(dir: string): void {
  makeCa(dir, 'ca');
  makeCa(dir, 'other-ca');
  makeCa(dir, 'client-ca');
  makeLeaf(dir, 'ca', 'srv', '/CN=app.internal', ['DNS:app.internal', 'DNS:localhost', 'IP:127.0.0.1']);
  makeLeaf(dir, 'client-ca', 'client', '/CN=lb-client/O=lb test', [], true);
}

t.test('TLS to backends: verification, names, verify=false, mTLS, resumption, health checks, tcp origination', async (t) => {
  const dir = tmpdir('lb-btls-');
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  pki(dir);
  const plain = await startHttps(dir, 'srv');
  t.teardown(() => plain.close());
  const mtls = await startHttps(dir, 'srv', 'client-ca');
  t.teardown(() => mtls.close());
  const echo = await startTlsEcho(dir, 'srv', 'client-ca');
  t.teardown(() => echo.close());
  const [port, tcpPort, mport] = [await freePort(), await freePort(), await freePort()];
  const b = (p: number): string => `backends = [{ name = "b", address = "127.0.0.1:${p}" }]`;
  const config = `
[daemon]
workers = 1
grace_period = "2s"
[admin]
socket = "{{socket}}"
[log]
level = "warn"
[metrics]
listen = "127.0.0.1:${mport}"
[listeners.web]
protocol = "http"
listen = "127.0.0.1:${port}"
pool = "ok"
routes = [
  { path_prefix = "/sni", pool = "sni" },
  { path_prefix = "/byname", pool = "byname" },
  { path_prefix = "/wrongca", pool = "wrongca" },
  { path_prefix = "/badname", pool = "badname" },
  { path_prefix = "/noverify", pool = "noverify" },
  { path_prefix = "/mtls", pool = "mtls" },
  { path_prefix = "/nocert", pool = "nocert" },
]
[listeners.tcp]
protocol = "tcp"
listen = "127.0.0.1:${tcpPort}"
pool = "tcpt"
[pools.ok]
${b(plain.port)}
tls = { ca = "ca.pem" }
[pools.sni]
${b(plain.port)}
tls = { ca = "ca.pem", server_name = "app.internal" }
[pools.byname]
backends = [{ name = "b", address = "localhost:${plain.port}" }]
tls = { ca = "ca.pem" }
[pools.wrongca]
retries = 0
${b(plain.port)}
tls = { ca = "other-ca.pem" }
[pools.wrongca-hc]
${b(plain.port)}
tls = { ca = "other-ca.pem" }
health_check = { type = "http", path = "/health", interval = "300ms", timeout = "300ms", fall = 1, rise = 1 }
[pools.goodca-hc]
${b(plain.port)}
tls = { ca = "ca.pem" }
health_check = { type = "tcp", interval = "300ms", timeout = "300ms", fall = 1, rise = 1 }
[pools.badname]
retries = 0
${b(plain.port)}
tls = { ca = "ca.pem", server_name = "wrong.internal" }
[pools.noverify]
${b(plain.port)}
tls = { verify = false }
[pools.mtls]
${b(mtls.port)}
tls = { ca = "ca.pem", cert = "client.pem", key = "client.key" }
[pools.nocert]
retries = 0
${b(mtls.port)}
tls = { ca = "ca.pem" }
[pools.tcpt]
${b(echo.port)}
tls = { ca = "ca.pem", server_name = "app.internal", cert = "client.pem", key = "client.key", min_version = "TLSv1.3" }
`;
  const lb = await startLb(config, [port, tcpPort], { dir });
  t.teardown(() => lb.stop());

  // Verified against ca.pem; an IP backend gets no SNI (RFC 6066), its certificate names the IP.
  let r = await get(port, '/x');
  t.equal(r.status, 200, `verified backend: ${r.body}`);
  t.same(JSON.parse(r.body), { path: '/x', sni: null, reused: false, client: null }, 'no SNI to an IP backend');
  r = await get(port, '/sni');
  t.equal(JSON.parse(r.body).sni, 'app.internal', 'server_name is sent as SNI');
  r = await get(port, '/byname');
  t.equal(r.status, 200, `host-name backend: ${r.body}`);
  t.equal(JSON.parse(r.body).sni, 'localhost', "a host-name backend's host is the SNI and the name verified");

  // A CA that did not sign the backend's certificate, a name it does not carry: refused, counted.
  r = await get(port, '/wrongca');
  t.equal(r.status, 502, 'wrong CA: 502');
  t.match(r.body, /UNABLE_TO_VERIFY_LEAF_SIGNATURE|unable to verify/i, `the reason is in the 502: ${r.body.trim()}`);
  r = await get(port, '/badname');
  t.equal(r.status, 502, 'server_name mismatch: 502');
  t.match(r.body, /ERR_TLS_CERT_ALTNAME_INVALID/, r.body.trim());
  await waitFor(async () => (await metric(mport, 'lb_backend_tls_errors_total', { pool: 'wrongca', reason: 'untrusted' })) === 1, 5000, 'untrusted counted');
  t.equal(await metric(mport, 'lb_backend_tls_errors_total', { pool: 'badname', backend: 'b', reason: 'name_mismatch' }), 1, 'name mismatch counted');
  t.equal(await metric(mport, 'lb_backend_failures_total', { pool: 'wrongca', reason: 'connect' }), 1, 'a failed handshake is a connect failure');

  // verify = false: the same certificate no CA of this lb trusts is accepted (insecure, as documented).
  r = await get(port, '/noverify');
  t.equal(r.status, 200, `verify = false: ${r.body}`);

  // mTLS to a backend that requires a client certificate; without one, the backend's alert is a 502.
  r = await get(port, '/mtls');
  t.equal(r.status, 200, `client certificate accepted: ${r.body}`);
  t.equal(JSON.parse(r.body).client, 'lb-client', 'the backend verified lb\'s client certificate');
  r = await get(port, '/nocert');
  t.equal(r.status, 502, `no client certificate: 502 (${r.body.trim()})`);
  await waitFor(async () => (await metric(mport, 'lb_backend_tls_errors_total', { pool: 'nocert', reason: 'peer_alert' })) === 1, 5000, 'peer alert counted');

  // Health checks do the handshake: the wrong CA marks the backend down, the right one up.
  await waitFor(async () => (await backendStatus(lb.socket, 'wrongca-hc')).health === 'down', 10_000, 'wrongca-hc down');
  const down = await backendStatus(lb.socket, 'wrongca-hc');
  t.match(down.lastCheck?.detail, /^tls: /, `the check says why: ${down.lastCheck?.detail}`);
  await waitFor(async () => (await backendStatus(lb.socket, 'goodca-hc')).health === 'up', 10_000, 'goodca-hc up');
  t.equal((await backendStatus(lb.socket, 'goodca-hc')).lastCheck?.detail, 'connected (TLS)');

  // Session resumption: each /close request comes on a new connection (the first one closes the kept-alive
  // connection of the requests above, whose session lb keeps); every new one resumes.
  t.equal((await get(port, '/close/first')).status, 200);
  const before = plain.sessions.length;
  for (let i = 0; i < 6; i++) {
    r = await get(port, `/close/${i}`);
    t.equal(r.status, 200);
  }
  const fresh = plain.sessions.slice(before);
  t.equal(fresh.length, 6, 'six new TLS connections');
  t.ok(fresh.every(Boolean), `every new connection resumed a session: ${JSON.stringify(fresh)}`);

  // Kept-alive TLS connections are reused: ten requests, at most one new connection.
  const n0 = plain.sessions.length;
  for (let i = 0; i < 10; i++) t.equal((await get(port, `/ka/${i}`)).status, 200);
  t.ok(plain.sessions.length - n0 <= 1, `keep-alive over TLS (${plain.sessions.length - n0} new connections for 10 requests)`);

  // TLS origination on a tcp listener: plain bytes in, TLS 1.3 with a client certificate to the backend.
  const reply = await new Promise<string>((resolve, reject) => {
    const c = net.connect(tcpPort, '127.0.0.1');
    let got = '';
    c.on('data', (d: Buffer) => {
      got += d.toString();
      if (got.includes('hello')) {
        c.end();
        resolve(got);
      }
    });
    c.on('error', reject);
    c.write('hello');
    c.setTimeout(5000, () => reject(new Error(`tcp: no reply, got ${JSON.stringify(got)}`)));
  });
  t.equal(reply, 'lb-client hello', 'tcp pool: TLS with the client certificate, bytes spliced');
});

t.test('reload picks up a rotated CA and client certificate; unreadable files refuse the reload', async (t) => {
  const dir = tmpdir('lb-btls-rot-');
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  pki(dir);
  let backend = await startHttps(dir, 'srv', 'client-ca');
  t.teardown(() => backend.close());
  const port = await freePort();
  const config = (extra = ''): string => `
[daemon]
workers = 1
grace_period = "2s"
[admin]
socket = "{{socket}}"
[log]
level = "warn"
[listeners.web]
protocol = "http"
listen = "127.0.0.1:${port}"
pool = "app"
[pools.app]
retries = 0
backends = [{ name = "b", address = "127.0.0.1:${backend.port}" }]
tls = { ca = "ca.pem", cert = "client.pem", key = "client.key"${extra} }
`;
  const lb = await startLb(config(), [port], { dir });
  t.teardown(() => lb.stop());
  let r = await get(port, '/close/1');
  t.equal(r.status, 200, r.body);
  t.equal(JSON.parse(r.body).client, 'lb-client');

  // The backend moves to a certificate from a new CA and requires client certificates from a new CA too.
  const oldPort = backend.port;
  await backend.close();
  makeCa(dir, 'ca2');
  makeCa(dir, 'client-ca2');
  makeLeaf(dir, 'ca2', 'srv2', '/CN=app.internal', ['IP:127.0.0.1']);
  backend = await startHttps(dir, 'srv2', 'client-ca2', oldPort);
  r = await get(port, '/close/2');
  t.equal(r.status, 502, `before the reload lb does not trust the new certificate (${r.body.trim()})`);

  // Rotate lb's files in place (same names), then reload.
  fs.copyFileSync(path.join(dir, 'ca2.pem'), path.join(dir, 'ca.pem'));
  makeLeaf(dir, 'client-ca2', 'client', '/CN=lb-client-2', [], true);
  let rl = await cli(['reload', '-s', lb.socket]);
  t.equal(rl.code, 0, `reload: ${rl.stdout}${rl.stderr}`);
  r = await get(port, '/close/3');
  t.equal(r.status, 200, `after the reload: ${r.body}`);
  t.equal(JSON.parse(r.body).client, 'lb-client-2', 'the new client certificate is presented');

  // A CA file that holds no certificate, a missing key: the reload is refused with file, line and key.
  fs.writeFileSync(path.join(dir, 'ca.pem'), 'not a certificate\n');
  rl = await cli(['reload', '-s', lb.socket]);
  t.equal(rl.code, 1, 'reload refused');
  t.match(rl.stdout + rl.stderr, /lb\.toml:\d+:\d+: pools\.app\.tls\.ca: tls: ca .*ca\.pem holds no PEM certificate/, rl.stdout + rl.stderr);
  r = await get(port, '/close/4');
  t.equal(r.status, 200, 'the running config keeps serving');
  fs.copyFileSync(path.join(dir, 'ca2.pem'), path.join(dir, 'ca.pem'));
  fs.writeFileSync(lb.configFile, fs.readFileSync(lb.configFile, 'utf8').replace('key = "client.key"', 'key = "missing.key"'));
  const v = await cli(['validate', '-c', lb.configFile]);
  t.equal(v.code, 1);
  t.match(v.stdout + v.stderr, /lb\.toml:\d+:\d+: pools\.app\.tls\.key: tls: cannot read key .*missing\.key: ENOENT/, v.stdout + v.stderr);
  fs.writeFileSync(lb.configFile, fs.readFileSync(lb.configFile, 'utf8').replace('tls = { ca = "ca.pem"', 'tls = { server_name = "10.0.0.1", ca = "ca.pem"').replace('missing.key', 'client.key'));
  const v2 = await cli(['validate', '-c', lb.configFile]);
  t.equal(v2.code, 1);
  t.match(v2.stdout + v2.stderr, /pools\.app\.tls\.server_name: server_name "10\.0\.0\.1" is an IP address/, v2.stdout + v2.stderr);
});

t.test('NGINX as the HTTPS backend: ssl_verify_client on, sessions resumed', async (t) => {
  const dir = tmpdir('lb-btls-nginx-');
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  pki(dir);
  const [nport, port] = [await freePort(), await freePort()];
  fs.writeFileSync(
    path.join(dir, 'nginx.conf'),
    `daemon off;
master_process off;
worker_processes 1;
user root;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  server {
    listen 127.0.0.1:${nport} ssl;
    ssl_certificate ${dir}/srv.pem;
    ssl_certificate_key ${dir}/srv.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_tickets on;
    ssl_verify_client on;
    ssl_client_certificate ${dir}/client-ca.pem;
    keepalive_requests 1;
    location / { return 200 "$ssl_client_verify $ssl_client_s_dn reused=$ssl_session_reused $ssl_protocol\\n"; }
  }
}
`,
  );
  const nginx = spawn(findBinary('nginx'), ['-p', dir, '-e', path.join(dir, 'error.log'), '-c', path.join(dir, 'nginx.conf')], { stdio: 'ignore' });
  const nginxExited = new Promise<void>((r) => nginx.once('exit', () => r()));
  t.teardown(async () => {
    nginx.kill('SIGTERM');
    await nginxExited;
  });
  await waitFor(() => connectOnce(nport).then(() => true), 15_000, 'nginx to listen');
  const lb = await startLb(
    `
[daemon]
workers = 1
grace_period = "2s"
[admin]
socket = "{{socket}}"
[log]
level = "warn"
[listeners.web]
protocol = "http"
listen = "127.0.0.1:${port}"
pool = "app"
routes = [{ path_prefix = "/nocert", pool = "nocert" }]
[pools.app]
backends = [{ address = "127.0.0.1:${nport}" }]
tls = { ca = "ca.pem", cert = "client.pem", key = "client.key" }
[pools.nocert]
backends = [{ address = "127.0.0.1:${nport}" }]
tls = { ca = "ca.pem" }
`,
    [port],
    { dir },
  );
  t.teardown(() => lb.stop());
  const bodies: string[] = [];
  for (let i = 0; i < 4; i++) {
    const r = await get(port, `/${i}`);
    t.equal(r.status, 200, r.body);
    bodies.push(r.body.trim());
  }
  t.match(bodies[0], /^SUCCESS (CN=lb-client,O=lb test|O=lb test,CN=lb-client) reused=\. TLSv1\.3$/, `nginx verified lb's client certificate: ${bodies[0]}`);
  t.ok(bodies.slice(1).every((b) => b.includes('reused=r')), `nginx saw the next connections resume: ${JSON.stringify(bodies)}`);
  // NGINX answers 400 ("No required SSL certificate was sent") rather than failing the handshake.
  const r = await get(port, '/nocert');
  t.equal(r.status, 400, 'without a client certificate nginx refuses the request');
});
