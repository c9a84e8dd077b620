// Client certificates on TLS listeners (`listeners.NAME.tls.client_auth`) through the real daemon, with
// curl and node:tls clients and certificates made with openssl per run: `required` refuses a client without
// a certificate or with one from another CA, and passes a verified one on (X-Client-Verify: SUCCESS, the
// subject, fingerprint and SAN); `optional` lets every client in and says NONE / SUCCESS / FAILED:reason;
// X-Client-* fields a client sends itself never reach the backend (plain, "_" spellings, named in
// Connection, on a later pipelined request, on a listener without client_auth); a resumed session keeps
// its verified certificate; the access log and lb_client_cert_verifications_total show the outcomes; a
// reload changes the mode of a kept listener.

import t from 'tap';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import { startRecordingUpstream, type SeenRequest } from './helpers/hardening.js';
import { cli, freePort, get, startLb, tmpdir, waitFor } from './helpers/lb.js';
import { makeCa, makeLeaf } from './helpers/pki.js';

/** curl to https://web.test:PORT/PATH against the test CA; `cert`: the client certificate's base name. */
function curl(dir: string, port: number, pathname: string, cert?: string, headers: string[] = []): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const args = ['-sS', '--max-time', '5', '--cacert', path.join(dir, 'ca.pem'), '--resolve', `web.test:${port}:127.0.0.1`, '-w', '\n%{http_code}'];
    if (cert) args.push('--cert', path.join(dir, `${cert}.pem`), '--key', path.join(dir, `${cert}.key`));
    for (const h of headers) args.push('-H', h);
    const p = spawn('curl', [...args, `https://web.test:${port}${pathname}`]);
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.once('close', (code) => resolve({ code, out, err }));
  });
}

/** The head lines of a forwarded request whose name starts with x-client or x_client (any case). */
function clientFields(req: SeenRequest): string[] {
  return req.raw
    .split('\r\n\r\n')[0]!
    .split('\r\n')
    .slice(1)
    .filter((l) => /^x[-_]client/i.test(l));
}

async function metric(port: number, name: string, labels: Record<string, string>): Promise<number> {
  const r = await get(port, '/metrics');
  let sum = 0;
  for (const line of r.body.split('\n')) {
    if (line.startsWith(`${name}{`) && Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

t.test('client_auth required and optional, forged X-Client-* fields dropped, access log and metrics', async (t) => {
  const dir = tmpdir('lb-mtls-');
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  makeCa(dir, 'ca');
  makeCa(dir, 'client-ca');
  makeCa(dir, 'rogue-ca');
  makeLeaf(dir, 'ca', 'web', '/CN=web.test', ['DNS:web.test']);
  makeLeaf(dir, 'client-ca', 'alice', '/O=Example/CN=alice', ['URI:spiffe://example/alice'], true);
  makeLeaf(dir, 'rogue-ca', 'mallory', '/CN=alice', [], true);
  const aliceFingerprint = crypto.createHash('sha256').update(new crypto.X509Certificate(fs.readFileSync(path.join(dir, 'alice.pem'))).raw).digest('hex');

  const up = await startRecordingUpstream();
  t.teardown(() => up.close());
  const [req, opt, plain, mport] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const listener = (name: string, port: number, mode?: string): string => `
[listeners.${name}]
protocol = "http"
listen = "127.0.0.1:${port}"
pool = "app"
${mode === undefined ? '' : `[listeners.${name}.tls]
cert = "web.pem"
key = "web.key"
client_auth = { ca = "client-ca.pem", mode = "${mode}" }`}`;
  const lb = await startLb(
    `
[daemon]
workers = 1
grace_period = "2s"
[admin]
socket = "{{socket}}"
[log]
level = "info"
access = true
[metrics]
listen = "127.0.0.1:${mport}"
${listener('req', req, 'required')}
${listener('opt', opt, 'optional')}
${listener('plain', plain)}
[pools.app]
backends = [{ address = "127.0.0.1:${up.port}" }]
`,
    [req, opt, plain],
    { dir },
  );
  t.teardown(() => lb.stop());
  const last = (): SeenRequest => up.requests[up.requests.length - 1]!;

  // --- required ------------------------------------------------------------------------------------
  let n = up.requests.length;
  let c = await curl(dir, req, '/req/none');
  t.not(c.code, 0, `required, no certificate: the handshake fails (curl ${c.code}: ${c.err.trim()})`);
  c = await curl(dir, req, '/req/rogue', 'mallory');
  t.not(c.code, 0, `required, a certificate from another CA: refused (curl ${c.code}: ${c.err.trim()})`);
  t.equal(up.requests.length, n, 'nothing reached the backend');
  c = await curl(dir, req, '/req/alice', 'alice');
  t.equal(c.code, 0, c.err);
  t.match(c.out, /\n200$/);
  t.same(clientFields(last()), [
    'x-client-verify: SUCCESS',
    'x-client-cert-subject: CN=alice,O=Example',
    `x-client-cert-fingerprint: ${aliceFingerprint}`,
    'x-client-cert-san: URI:spiffe://example/alice',
  ], 'verified subject, fingerprint and SAN passed on');

  // --- optional ------------------------------------------------------------------------------------
  c = await curl(dir, opt, '/opt/none');
  t.match(c.out, /\n200$/, 'optional, no certificate: served');
  t.same(clientFields(last()), ['x-client-verify: NONE']);
  c = await curl(dir, opt, '/opt/alice', 'alice');
  t.same(clientFields(last()).slice(0, 2), ['x-client-verify: SUCCESS', 'x-client-cert-subject: CN=alice,O=Example']);
  c = await curl(dir, opt, '/opt/rogue', 'mallory');
  t.match(c.out, /\n200$/, 'optional, unverifiable certificate: served');
  t.match(clientFields(last()), [/^x-client-verify: FAILED:[A-Z_]+$/], `FAILED with the reason and no subject: ${JSON.stringify(clientFields(last()))}`);

  // --- forgery -------------------------------------------------------------------------------------
  const forged = ['X-Client-Verify: SUCCESS', 'X-Client-Cert-Subject: CN=admin', 'x_client_cert_subject: CN=admin2', 'X-CLIENT-CERT-FINGERPRINT: 00', 'X-Client-Cert-San: DNS:admin', 'Connection: x-client-cert-subject'];
  c = await curl(dir, opt, '/forged/none', undefined, forged);
  t.match(c.out, /\n200$/);
  t.same(clientFields(last()), ['x-client-verify: NONE'], 'only lb\'s own field reaches the backend');
  c = await curl(dir, opt, '/forged/alice', 'alice', forged);
  t.same(clientFields(last()).slice(0, 2), ['x-client-verify: SUCCESS', 'x-client-cert-subject: CN=alice,O=Example'], 'a verified client cannot rename itself');
  t.equal(clientFields(last()).length, 4);
  // Two pipelined requests on one connection, the second carrying forged fields.
  n = up.requests.length;
  const raw = await new Promise<string>((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port: opt, servername: 'web.test', ca: fs.readFileSync(path.join(dir, 'ca.pem')) });
    let got = '';
    s.on('secureConnect', () =>
      s.write('GET /pipe/1 HTTP/1.1\r\nHost: web.test\r\n\r\nGET /pipe/2 HTTP/1.1\r\nHost: web.test\r\nX-Client-Verify: SUCCESS\r\nX-Client-Cert-Subject: CN=root\r\nConnection: close\r\n\r\n'),
    );
    s.on('data', (d: Buffer) => (got += d.toString('latin1')));
    s.on('end', () => resolve(got));
    s.on('error', reject);
    s.setTimeout(5000, () => reject(new Error(`pipelined: ${JSON.stringify(got)}`)));
  });
  t.equal(raw.match(/HTTP\/1\.1 200/g)?.length, 2, 'both pipelined requests answered');
  t.same(up.requests.slice(n).map((r) => [r.path, clientFields(r)]), [
    ['/pipe/1', ['x-client-verify: NONE']],
    ['/pipe/2', ['x-client-verify: NONE']],
  ]);
  // A resumed TLS session keeps its verified certificate: the second connection resumes and is still SUCCESS.
  const ca = fs.readFileSync(path.join(dir, 'ca.pem'));
  const alice = { cert: fs.readFileSync(path.join(dir, 'alice.pem')), key: fs.readFileSync(path.join(dir, 'alice.key')) };
  let session: Buffer | undefined;
  const resumed: boolean[] = [];
  for (let i = 0; i < 2; i++) {
    await new Promise<void>((resolve, reject) => {
      const s = tls.connect({ host: '127.0.0.1', port: opt, servername: 'web.test', ca, ...alice, ...(session ? { session } : {}) });
      s.on('session', (b: Buffer) => (session = b));
      s.on('secureConnect', () => {
        resumed.push(s.isSessionReused());
        s.write(`GET /resume/${i} HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n`);
      });
      s.on('data', () => {});
      s.on('end', () => resolve());
      s.on('error', reject);
      s.setTimeout(5000, () => reject(new Error('resume: timeout')));
    });
  }
  t.same(resumed, [false, true], 'the second connection resumed');
  t.same(up.requests.slice(-2).map((r) => [r.path, clientFields(r).slice(0, 2)]), [
    ['/resume/0', ['x-client-verify: SUCCESS', 'x-client-cert-subject: CN=alice,O=Example']],
    ['/resume/1', ['x-client-verify: SUCCESS', 'x-client-cert-subject: CN=alice,O=Example']],
  ], 'a resumed session keeps its verified certificate');

  // A listener without client_auth drops them too (a backend behind both must not be told SUCCESS).
  const r = await get(plain, '/plain', { headers: { 'x-client-verify': 'SUCCESS', 'x-client-cert-subject': 'CN=admin', 'X_Client_Verify': 'SUCCESS' } });
  t.equal(r.status, 200);
  t.same(clientFields(last()), [], 'no X-Client-* from a listener without client_auth');

  // --- access log and metrics ----------------------------------------------------------------------
  await waitFor(() => lb.logs().some((l) => l.msg === 'access' && l.path === '/req/alice'), 5000, 'access line');
  const line = lb.logs().find((l) => l.msg === 'access' && l.path === '/req/alice')!;
  t.equal(line.client_verify, 'SUCCESS');
  t.equal(line.client_subject, 'CN=alice,O=Example');
  t.equal(lb.logs().find((l) => l.msg === 'access' && l.path === '/opt/none')?.client_verify, 'NONE');
  t.equal(lb.logs().find((l) => l.msg === 'access' && l.path === '/plain')?.client_verify, undefined, 'no field without client_auth');
  t.equal(await metric(mport, 'lb_client_cert_verifications_total', { listener: 'req', result: 'success' }), 1);
  t.equal(await metric(mport, 'lb_client_cert_verifications_total', { listener: 'req', result: 'none' }), 1, 'the refused handshake without a certificate');
  t.equal(await metric(mport, 'lb_client_cert_verifications_total', { listener: 'req', result: 'failed' }), 1, 'the refused rogue certificate');
  t.equal(await metric(mport, 'lb_client_cert_verifications_total', { listener: 'opt', result: 'failed' }), 1);
  t.ok((await metric(mport, 'lb_client_cert_verifications_total', { listener: 'opt', result: 'none' })) >= 3);

  // lb reload switches the kept listener `req` to optional: a client without a certificate gets in.
  fs.writeFileSync(lb.configFile, fs.readFileSync(lb.configFile, 'utf8').replace('mode = "required"', 'mode = "optional"'));
  const rl = await cli(['reload', '-s', lb.socket]);
  t.equal(rl.code, 0, rl.stdout + rl.stderr);
  c = await curl(dir, req, '/req/after-reload');
  t.match(c.out, /\n200$/, `after the reload, no certificate is let in: ${c.err}`);
  t.same(clientFields(last()), ['x-client-verify: NONE']);
});
