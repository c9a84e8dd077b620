// Accepting the PROXY protocol (listeners with proxy_protocol = true) behind a real HAProxy 2.6 sending it
// (`send-proxy`, `send-proxy-v2`), and against raw sockets sending broken headers. Clients connect from
// their own loopback addresses (127.0.0.5, ...; ::1) so that the client, HAProxy (127.0.0.1) and lb can be
// told apart in what the backend sees (X-Forwarded-For), in client-ip hashing and in the access log.

import fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import https from 'node:https';
import tls from 'node:tls';
import t from 'tap';
import { freePort, startLb, startUpstream, tmpdir, waitFor, type Upstream } from './helpers/lb.js';
import { bodyOf, echoHandler, getFrom, metricValue, rawExchange, rawRequest, startHaproxy, v2Header, type Seen } from './helpers/proxy-protocol.js';

/** A tcp backend that answers with the first line it read (the PROXY header lb sent), then closes. */
async function firstLineServer(): Promise<{ port: number; close: () => Promise<void> }> {
  const server = net.createServer((s) => {
    let b = '';
    s.on('data', (d: Buffer) => {
      b += d.toString('latin1');
      const i = b.indexOf('\r\n');
      if (i >= 0) s.end(`SEEN ${b.slice(0, i)}\n`);
    });
    s.on('error', () => {});
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as net.AddressInfo).port, close: () => new Promise((r) => server.close(() => r())) };
}

/** Through a tcp path: sends a line from `localAddress`, resolves with what came back and the local port used. */
function tcpLine(port: number, localAddress: string, host = '127.0.0.1'): Promise<{ text: string; localPort: number }> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port, localAddress });
    let text = '';
    let localPort = 0;
    s.on('connect', () => {
      localPort = s.localPort ?? 0;
      s.write('hello\r\n');
    });
    s.on('data', (d: Buffer) => (text += d.toString('latin1')));
    s.on('error', reject);
    s.on('close', () => resolve({ text, localPort }));
    s.setTimeout(20_000, () => s.destroy(new Error('no answer in 20 s')));
  });
}

t.test('proxy_protocol: HAProxy send-proxy / send-proxy-v2 in front; hashing, access log, tcp and tls listeners, broken headers', async (t) => {
  const dir = tmpdir('lb-pp-');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'key.pem', '-out', 'cert.pem', '-days', '2', '-subj', '/CN=pp.test'], { cwd: dir, stdio: 'ignore' });
  const echo = await startUpstream('echo', echoHandler('echo'));
  const hashed: Upstream[] = [];
  for (let i = 0; i < 4; i++) hashed.push(await startUpstream(`h${i}`, echoHandler(`h${i}`)));
  const firstLine = await firstLineServer();
  t.teardown(async () => {
    await echo.close();
    for (const u of hashed) await u.close();
    await firstLine.close();
  });

  const [pp, direct, pphash, tcppp, tlspp, tcptls, metrics] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort(), freePort(), freePort()]);
  const lb = await startLb(
    `
[daemon]
workers = 1
grace_period = "1s"
[admin]
socket = "{{socket}}"
[log]
level = "info"
access = true
[metrics]
listen = "127.0.0.1:${metrics}"
[listeners.pp]
protocol = "http"
listen = "127.0.0.1:${pp}"
pool = "echo"
proxy_protocol = true
client_header_timeout = "1s"
[listeners.direct]
protocol = "http"
listen = "127.0.0.1:${direct}"
pool = "hash"
[listeners.pphash]
protocol = "http"
listen = "127.0.0.1:${pphash}"
pool = "hash"
proxy_protocol = true
[listeners.tcppp]
protocol = "tcp"
listen = "127.0.0.1:${tcppp}"
pool = "first"
proxy_protocol = true
client_header_timeout = "2s"
[listeners.tlspp]
protocol = "http"
listen = "127.0.0.1:${tlspp}"
pool = "echo"
proxy_protocol = true
tls = { cert = "${path.join(dir, 'cert.pem')}", key = "${path.join(dir, 'key.pem')}" }
[listeners.tcptls]
protocol = "tcp"
listen = "127.0.0.1:${tcptls}"
pool = "first"
proxy_protocol = true
tls = { cert = "${path.join(dir, 'cert.pem')}", key = "${path.join(dir, 'key.pem')}" }
[pools.echo]
backends = [ { address = "127.0.0.1:${echo.port}" } ]
[pools.hash]
algorithm = "consistent-hash"
hash_key = "client-ip"
backends = [ ${hashed.map((u) => `{ name = "${u.name}", address = "127.0.0.1:${u.port}" }`).join(', ')} ]
[pools.first]
send_proxy = "v1"
backends = [ { address = "127.0.0.1:${firstLine.port}" } ]
`,
    [direct, metrics],
  );
  t.teardown(() => lb.stop());

  // HAProxy in front: v1 and v2 to each lb listener, each frontend on 127.0.0.1 and ::1.
  const [hv1, hv2, hhash, htcp, htls, htcptls] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort(), freePort()]);
  const fe = (name: string, port: number, target: number, send: string): string => `
frontend ${name}
  bind 127.0.0.1:${port}
  bind [::1]:${port}
  default_backend ${name}_b
backend ${name}_b
  server lb 127.0.0.1:${target} ${send}
`;
  const haproxy = await startHaproxy(
    `
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
${fe('v1', hv1, pp, 'send-proxy')}
${fe('v2', hv2, pp, 'send-proxy-v2')}
${fe('hash', hhash, pphash, 'send-proxy-v2')}
${fe('tcp', htcp, tcppp, 'send-proxy')}
${fe('tls', htls, tlspp, 'send-proxy-v2')}
${fe('tcptls', htcptls, tcptls, 'send-proxy-v2')}
`,
    [hv1, hv2, hhash, htcp, htls, htcptls].map((p) => ['127.0.0.1', p] as [string, number]),
  );
  t.teardown(() => haproxy.stop());

  await t.test('X-Forwarded-For is the client HAProxy saw, v1 and v2, IPv4 and IPv6', async (t) => {
    for (const [version, port] of [['v1', hv1], ['v2', hv2]] as const) {
      const r4 = await getFrom('127.0.0.1', port, '127.0.0.5');
      t.equal(r4.status, 200, `${version}: 200`);
      t.equal(r4.seen.xff, '127.0.0.5', `${version}: X-Forwarded-For is the client, not HAProxy (127.0.0.1)`);
      const r6 = await getFrom('::1', port, '::1');
      t.equal(r6.status, 200, `${version} over IPv6: 200`);
      t.equal(r6.seen.xff, '::1', `${version}: an IPv6 client's address came through (TCP6)`);
    }
  });

  await t.test('client-ip hashing uses the address from the header', async (t) => {
    const picks = new Set<string>();
    for (let i = 10; i < 30; i++) {
      const src = `127.0.0.${i}`;
      const via = await getFrom('127.0.0.1', hhash, src);
      const straight = await getFrom('127.0.0.1', direct, src);
      t.equal(via.seen.upstream, straight.seen.upstream, `${src}: the same backend through HAProxy + PROXY as when connecting directly`);
      picks.add(via.seen.upstream);
    }
    t.ok(picks.size >= 2, `20 client addresses spread over ${picks.size} backends (all on one would mean HAProxy's address was hashed)`);
  });

  await t.test('the access log shows the client', async (t) => {
    await getFrom('127.0.0.1', hv2, '127.0.0.6');
    const line = await waitFor(() => lb.logs().find((l) => l.msg === 'access' && l.listener === 'pp' && l.client === '127.0.0.6'), 10_000, 'an access line with client 127.0.0.6');
    t.equal(line.status, 200);
  });

  await t.test('tcp listener: the accepted address goes on in the backend connection\'s own PROXY header (send_proxy)', async (t) => {
    const { text, localPort } = await tcpLine(htcp, '127.0.0.8');
    t.equal(text, `SEEN PROXY TCP4 127.0.0.8 127.0.0.1 ${localPort} ${htcp}\n`, 'the header names the client and the address it connected to');
    const line = await waitFor(() => lb.logs().find((l) => l.msg === 'access' && l.listener === 'tcppp' && l.client === '127.0.0.8'), 10_000, 'a tcp access line with client 127.0.0.8');
    t.equal(line.kind, 'tcp');
    const v6 = await tcpLine(htcp, '::1', '::1');
    t.equal(v6.text, `SEEN PROXY TCP6 ::1 ::1 ${v6.localPort} ${htcp}\n`, 'IPv6 client: TCP6');
  });

  await t.test('tls listener: the PROXY header comes before the handshake', async (t) => {
    const seen = await new Promise<Seen>((resolve, reject) => {
      https
        .get({ host: '127.0.0.1', port: htls, path: '/', localAddress: '127.0.0.9', rejectUnauthorized: false, agent: false }, (res) => {
          let b = '';
          res.on('data', (d: Buffer) => (b += d.toString()));
          res.on('end', () => resolve(JSON.parse(b) as Seen));
        })
        .on('error', reject);
    });
    t.equal(seen.xff, '127.0.0.9', 'X-Forwarded-For is the TLS client');
    // A tcp listener with TLS: the backend's own PROXY header (send_proxy) names the TLS client.
    const line = await new Promise<{ text: string; localPort: number }>((resolve, reject) => {
      const raw = net.connect({ host: '127.0.0.1', port: htcptls, localAddress: '127.0.0.10' });
      const s = tls.connect({ socket: raw, rejectUnauthorized: false }, () => s.write('hello\r\n'));
      let text = '';
      s.on('data', (d: Buffer) => (text += d.toString('latin1')));
      s.on('error', reject);
      s.on('close', () => resolve({ text, localPort: s.localPort ?? 0 }));
    });
    t.match(line.text, new RegExp(`^SEEN PROXY TCP4 127\\.0\\.0\\.10 127\\.0\\.0\\.1 \\d+ ${htcptls}\n$`), 'tcp + tls: the TLS client in the backend\'s header');
  });

  await t.test('broken, partial, over-long and missing headers are closed and counted; LOCAL, UNSPEC and TLVs are understood; other clients are not disturbed', async (t) => {
    const reasons = ['invalid', 'too_long', 'timeout', 'closed'] as const;
    const before: Record<string, number> = {};
    for (const r of reasons) before[r] = await metricValue(metrics, 'lb_proxy_protocol_errors_total', { listener: 'pp', reason: r });

    // Meanwhile: a well-behaved client of the same listener, one request after another.
    let good = 0;
    let bad = 0;
    let running = true;
    const steady = (async () => {
      while (running) {
        const text = await rawRequest(pp, 'PROXY TCP4 198.51.100.1 127.0.0.1 4000 80\r\n').catch((e: Error) => e.message);
        if (text.startsWith('HTTP/1.1 200') && bodyOf(text).xff === '198.51.100.1') good++;
        else bad++;
      }
    })();

    // Headers cut by the client's FIN (closed at once, not by the timeout).
    const cutByFin = (text: string): Promise<void> =>
      new Promise((resolve) => {
        const s = net.connect({ port: pp, host: '127.0.0.1' }, () => s.end(text));
        s.on('close', () => resolve());
        s.on('error', () => {});
      });
    const [garbage, partial, longV1, hugeV2, silent] = await Promise.all([
      rawExchange(pp, ['GET / HTTP/1.1\r\nHost: x\r\n\r\n']),
      rawExchange(pp, ['PROXY TCP4 1.2.3.4']),
      rawExchange(pp, [`PROXY TCP4 ${'1'.repeat(200)}`]),
      rawExchange(pp, [v2Header(0x21, 0x11, Buffer.alloc(0)).subarray(0, 14), Buffer.from([0xff, 0xff])]),
      rawExchange(pp, []),
      cutByFin('PROXY TCP6 ::1'),
      cutByFin('PROXY TCP4'),
    ]);
    for (const [what, r] of [['garbage', garbage], ['partial', partial], ['too-long v1 line', longV1], ['v2 announcing 65535 bytes', hugeV2], ['nothing sent', silent]] as const) {
      t.equal(r.data.length, 0, `${what}: closed without a byte of answer`);
    }
    t.ok(partial.closedAfterMs >= 900, `partial header: closed by client_header_timeout (1s), after ${Math.round(partial.closedAfterMs)} ms`);
    t.ok(silent.closedAfterMs >= 900, `nothing sent: closed by client_header_timeout, after ${Math.round(silent.closedAfterMs)} ms`);

    // v2 LOCAL (an L4 balancer's own health check): the real peer is the client.
    const local = bodyOf(await rawRequest(pp, v2Header(0x20, 0x00, Buffer.alloc(0)), { localAddress: '127.0.0.7' }));
    t.equal(local.xff, '127.0.0.7', 'v2 LOCAL: X-Forwarded-For is the real peer');
    // v2 PROXY with family UNSPEC: the real peer as well.
    const unspec = bodyOf(await rawRequest(pp, v2Header(0x21, 0x00, Buffer.from('ignored')), { localAddress: '127.0.0.7' }));
    t.equal(unspec.xff, '127.0.0.7', 'v2 UNSPEC: the real peer');
    // v2 TCP4 with a TLV after the addresses (PP2_TYPE_NOOP, 5 bytes): skipped by its length.
    const tcp4 = Buffer.from([192, 0, 2, 44, 127, 0, 0, 1, 0x13, 0x88, 0x00, 0x50, 0x04, 0x00, 0x05, 1, 2, 3, 4, 5]);
    t.equal(bodyOf(await rawRequest(pp, v2Header(0x21, 0x11, tcp4))).xff, '192.0.2.44', 'v2 TCP4 with a TLV');
    // IPv6 in both versions, from the wire.
    t.equal(bodyOf(await rawRequest(pp, 'PROXY TCP6 2001:db8::44 ::1 5000 80\r\n')).xff, '2001:db8::44', 'v1 TCP6');
    const a6 = Buffer.alloc(36);
    Buffer.from('20010db8000000000000000000000045', 'hex').copy(a6, 0);
    a6[31] = 1;
    a6.writeUInt16BE(5001, 32);
    a6.writeUInt16BE(80, 34);
    t.equal(bodyOf(await rawRequest(pp, v2Header(0x21, 0x21, a6))).xff, '2001:db8::45', 'v2 TCP6');
    // v1 UNKNOWN: the real peer.
    t.equal(bodyOf(await rawRequest(pp, 'PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n', { localAddress: '127.0.0.7' })).xff, '127.0.0.7', 'v1 UNKNOWN');
    // A header arriving in pieces, the request in the same write as its end.
    const split = await rawExchange(pp, ['PRO', 50, 'XY TCP4 203.0.113.9 127.0', 50, '.0.1 1 2\r\nGET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n']);
    t.equal(bodyOf(split.data.toString('latin1')).xff, '203.0.113.9', 'a header in three writes');

    running = false;
    await steady;
    t.ok(good > 0, `${good} requests of another client of the listener meanwhile`);
    t.equal(bad, 0, 'none of them failed');

    const delta = async (r: string): Promise<number> => (await metricValue(metrics, 'lb_proxy_protocol_errors_total', { listener: 'pp', reason: r })) - before[r]!;
    await waitFor(async () => (await delta('timeout')) >= 2, 10_000, 'the timeouts to be counted');
    t.equal(await delta('invalid'), 1, 'invalid: the garbage');
    t.equal(await delta('too_long'), 2, 'too_long: the v1 line and the v2 length');
    t.equal(await delta('timeout'), 2, 'timeout: the partial header and the silent client');
    t.equal(await delta('closed'), 2, 'closed: two headers cut by a FIN');
    const logged = await waitFor(() => lb.logs().find((l) => l.msg === 'proxy protocol: connection refused' && l.reason === 'invalid'), 10_000, 'the refusal logged');
    t.equal(logged.listener, 'pp');
    t.equal(logged.client, '127.0.0.1', 'logged with the real peer');
  });
});
