// Sending the PROXY protocol (pools with send_proxy = "v1" | "v2") to a real HAProxy 2.6 that requires it
// (`bind ... accept-proxy`) and tells its backend, an echo server, the source it learned
// (`option forwardfor header X-Real-Src`). Clients connect to lb from their own loopback addresses
// (127.0.0.5, 127.0.0.6, ::1), so HAProxy's idea of the source shows whether the header carried it.

import type http from 'node:http';
import { Agent } from 'node:http';
import t from 'tap';
import { admin, freePort, startLb, startUpstream, waitFor } from './helpers/lb.js';
import { echoHandler, getFrom, startHaproxy } from './helpers/proxy-protocol.js';

interface BackendStatus {
  name: string;
  health: string;
  lastCheck: { ok: boolean; detail: string } | null;
}

async function backendStatus(socket: string, pool: string): Promise<BackendStatus> {
  const r = await admin(socket, { cmd: 'status' });
  const p = (r.result.pools as Array<{ name: string; backends: BackendStatus[] }>).find((x) => x.name === pool);
  return p!.backends[0]!;
}

t.test('send_proxy: HAProxy with accept-proxy sees the client, on tcp and http listeners, v1 and v2, IPv4 and IPv6', async (t) => {
  const echo = await startUpstream('echo', echoHandler('echo'));
  t.teardown(() => echo.close());
  const hp = await freePort();
  const haproxy = await startHaproxy(
    `
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  timeout http-keep-alive 30s
frontend pp
  bind 127.0.0.1:${hp} accept-proxy
  bind [::1]:${hp} accept-proxy
  option forwardfor header X-Real-Src
  default_backend echo
backend echo
  server e 127.0.0.1:${echo.port}
`,
    [['127.0.0.1', hp]],
  );
  t.teardown(() => haproxy.stop());

  const [h1, h2, h6, h7, t1, t2, t6, tn] = (await Promise.all(Array.from({ length: 8 }, () => freePort()))) as [number, number, number, number, number, number, number, number];
  const check = 'health_check = { type = "http", path = "/healthz", interval = "500ms", timeout = "500ms", rise = 1, fall = 1 }';
  const lb = await startLb(
    `
[daemon]
workers = 1
grace_period = "1s"
[admin]
socket = "{{socket}}"
[log]
level = "warn"
[listeners.h1]
protocol = "http"
listen = "127.0.0.1:${h1}"
pool = "v1"
[listeners.h2]
protocol = "http"
listen = "127.0.0.1:${h2}"
pool = "v2"
[listeners.h6]
protocol = "http"
listen = "[::1]:${h6}"
pool = "v2"
[listeners.h7]
protocol = "http"
listen = "[::1]:${h7}"
pool = "v1"
[listeners.t1]
protocol = "tcp"
listen = "127.0.0.1:${t1}"
pool = "tv1"
[listeners.t2]
protocol = "tcp"
listen = "127.0.0.1:${t2}"
pool = "tv2"
[listeners.t6]
protocol = "tcp"
listen = "[::1]:${t6}"
pool = "tv1"
[listeners.tn]
protocol = "tcp"
listen = "127.0.0.1:${tn}"
pool = "named"
[pools.v1]
send_proxy = "v1"
backends = [ { address = "127.0.0.1:${hp}" } ]
${check}
[pools.v2]
send_proxy = "v2"
backends = [ { address = "127.0.0.1:${hp}" } ]
${check}
[pools.tv1]
send_proxy = "v1"
backends = [ { address = "127.0.0.1:${hp}" } ]
health_check = { type = "tcp", interval = "500ms", timeout = "500ms", rise = 1, fall = 1 }
[pools.tv2]
send_proxy = "v2"
backends = [ { address = "127.0.0.1:${hp}" } ]
[pools.named]
send_proxy = "v2"
backends = [ { address = "localhost:${hp}" } ]
[pools.plain]
backends = [ { address = "127.0.0.1:${hp}" } ]
${check}
`,
    [h1, h2, t1, t2, tn],
  );
  t.teardown(() => lb.stop());

  await t.test('http listeners', async (t) => {
    for (const [what, port] of [['v1', h1], ['v2', h2]] as const) {
      const r = await getFrom('127.0.0.1', port, '127.0.0.5');
      t.equal(r.status, 200, `${what}: 200 through HAProxy`);
      t.equal(r.seen.realSrc, '127.0.0.5', `${what}: HAProxy's source is the client, not lb (127.0.0.1)`);
      t.equal(r.seen.xff, '127.0.0.5', `${what}: lb's X-Forwarded-For as well`);
    }
    for (const [what, port] of [['v2', h6], ['v1', h7]] as const) {
      const r = await getFrom('::1', port, '::1');
      t.equal(r.seen.realSrc, '::1', `${what}: an IPv6 client (TCP6)`);
    }
  });

  await t.test('tcp listeners (bare handles, net.Socket for a host name)', async (t) => {
    for (const [what, port] of [['v1', t1], ['v2', t2], ['v2, backend by host name', tn]] as const) {
      const r = await getFrom('127.0.0.1', port, '127.0.0.6');
      t.equal(r.status, 200, `${what}: 200`);
      t.equal(r.seen.realSrc, '127.0.0.6', `${what}: HAProxy's source is the client`);
    }
    const r6 = await getFrom('::1', t6, '::1');
    t.equal(r6.seen.realSrc, '::1', 'v1 over IPv6 (TCP6)');
  });

  await t.test('http: an upstream connection serves one client connection only', async (t) => {
    for (const port of [h1, h2]) {
      const a = new Agent({ keepAlive: true, maxSockets: 1 });
      const b = new Agent({ keepAlive: true, maxSockets: 1 });
      const wrong: string[] = [];
      // Alternating: with one shared pool, each request would go out on the connection the other client's
      // request has just left idle.
      for (let i = 0; i < 10; i++) {
        for (const [agent, src] of [[a, '127.0.0.5'], [b, '127.0.0.6']] as Array<[http.Agent, string]>) {
          const r = await getFrom('127.0.0.1', port, src, '/', agent);
          if (r.seen.realSrc !== src) wrong.push(`${src} seen as ${r.seen.realSrc}`);
        }
      }
      a.destroy();
      b.destroy();
      t.same(wrong, [], `${port === h1 ? 'v1' : 'v2'}: 20 alternating kept-alive requests each seen from their own client`);
    }
  });

  await t.test('health checks send a header naming no client (v2 LOCAL / v1 UNKNOWN); without one HAProxy refuses them', async (t) => {
    for (const pool of ['v1', 'v2', 'tv1']) {
      const st = await waitFor(async () => {
        const s = await backendStatus(lb.socket, pool);
        return s.lastCheck?.ok ? s : undefined;
      }, 10_000, `a passing check in pool ${pool}`);
      t.equal(st.health, 'up', `${pool}: up`);
    }
    const plain = await waitFor(async () => {
      const s = await backendStatus(lb.socket, 'plain');
      return s.lastCheck && !s.lastCheck.ok ? s : undefined;
    }, 10_000, 'a failed check in pool plain');
    t.equal(plain.health, 'down', `without send_proxy the same HAProxy fails the check (${plain.lastCheck?.detail})`);
  });
});
