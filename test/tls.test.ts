// TLS termination with real handshakes (node:tls and curl): default certificate and two SNI certificates
// (exact and wildcard), X-Forwarded-Proto: https, TLS 1.2+ by default (a TLS 1.1 client is refused; a
// control server shows the same client can speak TLS 1.1), min_version = "TLSv1.3", certificates re-read by
// `lb reload` without dropping open connections, a broken certificate on reload keeps the old one, and TLS
// termination on a tcp listener. Certificates are generated per run with openssl into a temp dir (a
// throwaway CA, ECDSA P-256, valid two days): no private key is committed.

import t from 'tap';
import { execFileSync, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { answerWhatWasSeen, startRecordingUpstream } from './helpers/hardening.js';
import { admin, cli, freePort, httpConfig, startLb, tmpdir, waitFor } from './helpers/lb.js';

const NAMES = { default: 'default.test', a: 'a.test', wild: '*.wild.test' } as const;
type Which = keyof typeof NAMES;

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

/** A CA and one leaf per name in `dir`: ca.pem, and for each leaf NAME.pem / NAME.key (serial = gen*100+i). */
function makeCerts(dir: string, gen: number): void {
  if (!fs.existsSync(path.join(dir, 'ca.pem'))) {
    openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=lb test CA'], dir);
  }
  Object.entries(NAMES).forEach(([which, name], i) => {
    fs.writeFileSync(path.join(dir, `${which}.ext`), `subjectAltName=DNS:${name}\nbasicConstraints=CA:FALSE\n`);
    openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${which}.key.new`, '-out', `${which}.csr`, '-subj', `/CN=${name}`], dir);
    openssl(['x509', '-req', '-in', `${which}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-set_serial', String(gen * 100 + i), '-days', '2', '-out', `${which}.pem.new`, '-extfile', `${which}.ext`], dir);
    // Replace each file atomically, key and certificate, as a certificate manager does.
    fs.renameSync(path.join(dir, `${which}.key.new`), path.join(dir, `${which}.key`));
    fs.renameSync(path.join(dir, `${which}.pem.new`), path.join(dir, `${which}.pem`));
  });
}

function fingerprint(dir: string, which: Which): string {
  return new crypto.X509Certificate(fs.readFileSync(path.join(dir, `${which}.pem`))).fingerprint256;
}

interface Hello {
  fingerprint: string;
  serial: string;
  protocol: string | null;
  socket: tls.TLSSocket;
}

/** A TLS handshake to 127.0.0.1:port with SNI `servername`, verified against the test CA. */
function handshake(port: number, servername: string | undefined, ca: Buffer, extra: tls.ConnectionOptions = {}): Promise<Hello> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ca, ...(servername ? { servername } : {}), checkServerIdentity: () => undefined, ...extra });
    socket.setTimeout(5000, () => socket.destroy(new Error('handshake timeout')));
    socket.once('secureConnect', () => {
      socket.setTimeout(0);
      const c = socket.getPeerCertificate();
      resolve({ fingerprint: c.fingerprint256, serial: c.serialNumber, protocol: socket.getProtocol(), socket });
    });
    socket.once('error', reject);
  });
}

/** One HTTP/1.1 request on an open TLS socket; resolves the raw response once its body (Content-Length) is in. */
function requestOn(socket: tls.TLSSocket, pathname: string, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => done(new Error(`no response on the kept connection within ${timeoutMs}ms: ${JSON.stringify(buf)}`)), timeoutMs);
    const onData = (d: Buffer): void => {
      buf += d.toString('latin1');
      const end = buf.indexOf('\r\n\r\n');
      const len = /content-length: (\d+)/i.exec(buf);
      if (end !== -1 && len && buf.length >= end + 4 + Number(len[1])) done();
    };
    const onClose = (): void => done(new Error(`connection closed: ${JSON.stringify(buf)}`));
    const done = (err?: Error): void => {
      clearTimeout(timer);
      socket.removeListener('data', onData);
      socket.removeListener('close', onClose);
      if (err) reject(err);
      else resolve(buf);
    };
    socket.on('data', onData);
    socket.once('close', onClose);
    socket.write(`GET ${pathname} HTTP/1.1\r\nHost: default.test\r\n\r\n`);
  });
}

/** curl against the test CA (asynchronous: the upstream lives in this process). */
function curl(port: number, host: string, dir: string, extra: string[] = []): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const p = spawn('curl', ['-sS', '--max-time', '5', '--cacert', path.join(dir, 'ca.pem'), '--resolve', `${host}:${port}:127.0.0.1`, '-w', '\\n%{http_code} %{ssl_verify_result}', ...extra, `https://${host}:${port}/curl`]);
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.once('close', (code) => resolve({ code, out, err }));
  });
}

t.test('TLS termination: SNI, versions, curl, X-Forwarded-Proto, cert reload without dropping connections, tcp+tls', async (t) => {
  const dir = tmpdir('lb-tls-');
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  makeCerts(dir, 1);
  const ca = fs.readFileSync(path.join(dir, 'ca.pem'));
  // An Upgrade request to /ws is answered 101 (lb tunnels only after a 101); everything else with what was seen.
  const up = await startRecordingUpstream((req, s) => {
    if (req.path === '/ws') s.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n');
    else answerWhatWasSeen(req, s);
  });
  t.teardown(() => up.close());
  const echo = net.createServer((s) => s.pipe(s));
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => echo.close(() => r())));
  const echoPort = (echo.address() as net.AddressInfo).port;
  const [port, port13, tcpPort] = [await freePort(), await freePort(), await freePort()];
  const tlsTable = (minVersion?: string): string => `cert = "default.pem"
key = "default.key"
${minVersion ? `min_version = "${minVersion}"\n` : ''}sni = [
  { server_name = "a.test", cert = "a.pem", key = "a.key" },
  { server_name = "*.wild.test", cert = "wild.pem", key = "wild.key" },
]`;
  const config = httpConfig(
    port,
    `client_header_timeout = "1s"
[listeners.web.tls]
${tlsTable()}
[listeners.web13]
protocol = "http"
listen = "127.0.0.1:${port13}"
pool = "app"
[listeners.web13.tls]
${tlsTable('TLSv1.3')}
[listeners.tcp]
protocol = "tcp"
listen = "127.0.0.1:${tcpPort}"
pool = "echo"
[listeners.tcp.tls]
${tlsTable()}
[pools.app]
algorithm = "round-robin"
backends = [{ address = "127.0.0.1:${up.port}" }]
[pools.echo]
algorithm = "round-robin"
backends = [{ address = "127.0.0.1:${echoPort}" }]`,
    2,
  );
  const lb = await startLb(config, [port, port13, tcpPort], { dir });
  t.teardown(() => lb.stop());
  // Opened now, checked at the end: a tcp+tls connection that never starts its handshake (10 s allowed).
  const tcpSilent = { opened: performance.now(), closed: 0 };
  const tcpSilentSocket = net.connect(tcpPort, '127.0.0.1');
  tcpSilentSocket.on('error', () => {});
  tcpSilentSocket.once('close', () => (tcpSilent.closed = performance.now()));
  t.teardown(() => tcpSilentSocket.destroy());

  // --- SNI: exact, wildcard, unknown and absent names -----------------------------------------------
  const gen1 = { default: fingerprint(dir, 'default'), a: fingerprint(dir, 'a'), wild: fingerprint(dir, 'wild') };
  for (const [servername, which] of [['a.test', 'a'], ['x.wild.test', 'wild'], ['other.test', 'default'], [undefined, 'default'], ['A.TEST', 'a']] as const) {
    const h = await handshake(port, servername, ca);
    t.equal(h.fingerprint, gen1[which], `SNI ${servername ?? '(none)'} gets the ${which} certificate`);
    h.socket.destroy();
  }
  const deep = await handshake(port, 'x.y.wild.test', ca);
  t.equal(deep.fingerprint, gen1.default, 'a wildcard covers one label only: x.y.wild.test gets the default certificate');
  deep.socket.destroy();

  // --- curl, with verification against the test CA ----------------------------------------------------
  for (const host of ['default.test', 'a.test', 'x.wild.test']) {
    const r = await curl(port, host, dir);
    t.equal(r.code, 0, `curl https://${host}: handshake verified (${r.err.trim()})`);
    const [body = '', tail = ''] = r.out.split('\n');
    t.equal(tail, '200 0', `curl https://${host}: 200, certificate verified`);
    t.equal(JSON.parse(body || '{}').proto, 'https', `curl https://${host}: upstream saw X-Forwarded-Proto: https`);
  }
  const c12 = await curl(port, 'a.test', dir, ['--tlsv1.2', '--tls-max', '1.2']);
  t.match(c12.out, /\n200 0$/, 'curl with TLS 1.2 exactly: served');

  // --- versions --------------------------------------------------------------------------------------
  const v13 = await handshake(port, 'a.test', ca);
  t.equal(v13.protocol, 'TLSv1.3', 'a modern client negotiates TLS 1.3');
  v13.socket.destroy();
  const alpn = await handshake(port, 'a.test', ca, { ALPNProtocols: ['h2', 'http/1.1'] });
  t.equal(alpn.socket.alpnProtocol, 'http/1.1', 'ALPN: a client offering h2 and http/1.1 is told http/1.1');
  alpn.socket.destroy();

  // --- an Upgrade over TLS: after the head, bytes flow both ways through the tunnel ---------------------
  const upg = await handshake(port, 'a.test', ca);
  let upgGot = '';
  upg.socket.on('data', (d: Buffer) => (upgGot += d.toString('latin1')));
  const upConns = up.connections.length;
  upg.socket.write('GET /ws HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\nfirst-bytes');
  const tunnel = (): string => up.connections.slice(upConns).map((l) => Buffer.concat(l).toString('latin1')).join('');
  await waitFor(() => tunnel().includes('first-bytes'), 3000, 'the bytes after the Upgrade head at the upstream');
  await waitFor(() => upgGot.startsWith('HTTP/1.1 101'), 3000, "the upstream's 101 back to the client");
  upg.socket.write('second-bytes');
  await waitFor(() => tunnel().includes('second-bytes'), 3000, 'bytes sent later through the TLS tunnel');
  t.pass('Upgrade over TLS: the head, the bytes after it and later bytes reached the upstream; its answer came back');
  upg.socket.destroy();
  const old = { minVersion: 'TLSv1.1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' } as const;
  const control = tls.createServer({ cert: fs.readFileSync(path.join(dir, 'default.pem')), key: fs.readFileSync(path.join(dir, 'default.key')), minVersion: 'TLSv1', ciphers: 'DEFAULT@SECLEVEL=0' });
  await new Promise<void>((r) => control.listen(0, '127.0.0.1', r));
  const controlHello = await handshake((control.address() as net.AddressInfo).port, 'default.test', ca, old);
  t.equal(controlHello.protocol, 'TLSv1.1', 'control: this TLS 1.1 client completes a handshake with a server that allows TLS 1.1');
  controlHello.socket.destroy();
  control.close();
  const refused11 = await handshake(port, 'default.test', ca, old).then(
    (h) => (h.socket.destroy(), `accepted ${h.protocol}`),
    (err: Error & { code?: string }) => err.code ?? err.message,
  );
  t.match(refused11, /UNSUPPORTED_PROTOCOL|PROTOCOL_VERSION|WRONG_VERSION|NO_PROTOCOLS/, `lb refuses the TLS 1.1 client (${refused11})`);
  const refused12 = await handshake(port13, 'default.test', ca, { maxVersion: 'TLSv1.2' }).then(
    (h) => (h.socket.destroy(), `accepted ${h.protocol}`),
    (err: Error & { code?: string }) => err.code ?? err.message,
  );
  t.match(refused12, /PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL|WRONG_VERSION/, `min_version = "TLSv1.3" refuses a TLS 1.2 client (${refused12})`);
  const ok13 = await handshake(port13, 'a.test', ca);
  t.equal(ok13.protocol, 'TLSv1.3', 'min_version = "TLSv1.3" serves TLS 1.3');
  ok13.socket.destroy();

  // --- a client that connects and never starts the handshake: closed at client_header_timeout -----------
  const silent = await new Promise<number>((resolve) => {
    const t0 = performance.now();
    const s = net.connect(port, '127.0.0.1');
    s.on('error', () => {});
    s.once('close', () => resolve(performance.now() - t0));
    s.setTimeout(10_000, () => s.destroy());
  });
  t.ok(silent >= 900 && silent < 3000, `a connection that never sends a ClientHello is closed after ${Math.round(silent)}ms (client_header_timeout 1s; node's default would be 120 s)`);

  // --- tcp listener with TLS -------------------------------------------------------------------------
  const tcpHello = await handshake(tcpPort, 'x.wild.test', ca);
  t.equal(tcpHello.fingerprint, gen1.wild, 'tcp+tls: SNI picks the wildcard certificate');
  const echoed = await new Promise<string>((resolve, reject) => {
    let got = '';
    tcpHello.socket.on('data', (d: Buffer) => {
      got += d.toString();
      if (got.length >= 9) resolve(got);
    });
    tcpHello.socket.once('error', reject);
    tcpHello.socket.write('ping-pong');
  });
  t.equal(echoed, 'ping-pong', 'tcp+tls: bytes reach the backend in clear and come back');

  // --- reload: new certificates for new handshakes, open connections untouched -----------------------
  const kept = await handshake(port, 'a.test', ca);
  t.match(await requestOn(kept.socket, '/before'), /^HTTP\/1\.1 200 [\s\S]*"proto":"https"/, 'kept connection: served before the reload');
  makeCerts(dir, 2);
  const gen2 = { default: fingerprint(dir, 'default'), a: fingerprint(dir, 'a'), wild: fingerprint(dir, 'wild') };
  t.not(gen2.a, gen1.a, 'new certificates were written');
  const reload = await cli(['reload', '-s', lb.socket]);
  t.equal(reload.code, 0, `lb reload applied (${reload.stdout.trim()} ${reload.stderr.trim()})`);
  // Several new handshakes: connections alternate between the two workers, each must have re-read.
  for (let i = 0; i < 4; i++) {
    for (const [servername, which] of [['a.test', 'a'], ['x.wild.test', 'wild'], ['default.test', 'default']] as const) {
      const h = await handshake(port, servername, ca);
      t.equal(h.fingerprint, gen2[which], `after reload, handshake ${i + 1} for ${servername}: the new ${which} certificate (serial ${h.serial})`);
      h.socket.destroy();
    }
  }
  const tcpAfter = await handshake(tcpPort, 'default.test', ca);
  t.equal(tcpAfter.fingerprint, gen2.default, 'after reload, tcp+tls: the new certificate');
  tcpAfter.socket.destroy();
  t.match(await requestOn(kept.socket, '/after'), /^HTTP\/1\.1 200 /, 'kept connection: still served after the reload');
  t.equal(kept.socket.getPeerCertificate().fingerprint256, gen1.a, 'kept connection: still the session it negotiated before');
  const again = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no echo within 5 s')), 5000);
    tcpHello.socket.once('data', (d: Buffer) => (clearTimeout(timer), resolve(d.toString())));
    tcpHello.socket.write('still-on');
  });
  t.equal(again, 'still-on', 'tcp+tls connection opened before the reload still carries bytes');
  const viaCurl = await curl(port, 'a.test', dir);
  t.match(viaCurl.out, /\n200 0$/, 'curl verifies the new certificate after the reload');

  // --- reload with an unusable key: refused for TLS, old certificates keep serving ----------------------
  fs.writeFileSync(path.join(dir, 'a.key'), '-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n');
  const bad = await cli(['reload', '-s', lb.socket]);
  t.equal(bad.code, 1, 'lb reload with a broken key exits 1');
  t.match(bad.stderr, /CONFIG_INVALID: reload refused; the running config keeps serving/);
  t.match(bad.stderr, /:\d+:\d+: listeners\.web\.tls\.sni\[\d\]: tls: bad certificate or key for a\.test/, `and says which listener and certificate (${bad.stderr.trim().split('\n')[1]})`);
  const stillA = await handshake(port, 'a.test', ca);
  t.equal(stillA.fingerprint, gen2.a, 'a.test still gets the last good certificate');
  stillA.socket.destroy();
  t.match(await requestOn(kept.socket, '/after-bad'), /^HTTP\/1\.1 200 /, 'kept connection: still served');
  kept.socket.destroy();
  tcpHello.socket.destroy();
  const st = await admin(lb.socket, { cmd: 'status' });
  t.equal(st.ok, true, 'status answers');
  await waitFor(() => tcpSilent.closed, 15_000, 'the silent tcp+tls connection to be closed');
  const lived = tcpSilent.closed - tcpSilent.opened;
  t.ok(lived >= 9500 && lived < 12_500, `tcp+tls: a connection that never sends a ClientHello is closed after ${Math.round(lived)}ms (handshake limit 10 s)`);
});

t.test('a listener whose certificate cannot be read: lb run exits 78 naming the listener and the file', async (t) => {
  const dir = tmpdir('lb-tls-missing-');
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const port = await freePort();
  fs.writeFileSync(
    path.join(dir, 'lb.toml'),
    `[daemon]\nworkers = 1\n[admin]\nsocket = "${path.join(dir, 'admin.sock')}"\n[log]\nlevel = "warn"\n[listeners.web]\nprotocol = "http"\nlisten = "127.0.0.1:${port}"\npool = "app"\n[listeners.web.tls]\ncert = "missing.pem"\nkey = "missing.key"\n[pools.app]\nalgorithm = "round-robin"\nbackends = [{ address = "127.0.0.1:1" }]\n`,
  );
  const r = await cli(['run', '-c', path.join(dir, 'lb.toml')], {}, 20_000);
  t.equal(r.code, 78, 'exit 78 (EX_CONFIG)');
  t.match(r.stderr, /lb\.toml:\d+:\d+: listeners\.web\.tls: tls: cannot read cert .*missing\.pem: ENOENT/, `message names the listener and the file (${r.stderr.trim().split('\n')[0]})`);
});
