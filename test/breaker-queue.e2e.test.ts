// Pool request cap with a bounded queue (max_requests, max_queue, queue_timeout; HAProxy maxconn, maxqueue,
// timeout queue) through the real daemon: an overloaded pool of slow backends queues up to max_queue and
// sheds the rest with 503 at once, admitted requests never wait longer than queue_timeout by lb's own
// account, the backends never hold more than max_requests, and every count adds up; the same arrival
// pattern through HAProxy (servers' maxconn, timeout queue) is measured alongside. A client that goes away
// while queued leaves the queue and never reaches a backend. Per-backend max_connections queues too.

import t from 'tap';
import fs from 'node:fs';
import { admin, freePort, get, startLb, waitFor, withStateFile } from './helpers/lb.js';
import { countingUpstream, hangingRequest, openLoop, percentile, scrape, startHaproxy, sum, type CountingUpstream, type Shot } from './helpers/breaker.js';

const SERVICE_MS = 100;

function config(port: number, metricsPort: number, pools: string, opts: { access?: boolean } = {}): string {
  return `
[daemon]
workers = 1
grace_period = "2s"
[admin]
socket = "{{socket}}"
[metrics]
listen = "127.0.0.1:${metricsPort}"
[log]
level = "${opts.access ? 'info' : 'warn'}"
access = ${opts.access ? 'true' : 'false'}
[listeners.web]
protocol = "http"
listen = "127.0.0.1:${port}"
pool = "app"
${pools}
`;
}

const addr = (us: CountingUpstream[]): string => `[${us.map((u) => `{ name = "${u.name}", address = "127.0.0.1:${u.port}" }`).join(', ')}]`;

function summary(shots: Shot[]): { ok: number; shed: number; other: number; p50: number; p99: number; max: number; shedP99: number } {
  const ok = shots.filter((s) => s.status === 200);
  const shed = shots.filter((s) => s.status === 503);
  const lat = ok.map((s) => s.ms);
  return {
    ok: ok.length,
    shed: shed.length,
    other: shots.length - ok.length - shed.length,
    p50: Math.round(percentile(lat, 50)),
    p99: Math.round(percentile(lat, 99)),
    max: Math.round(Math.max(...lat)),
    shedP99: Math.round(percentile(shed.map((s) => s.ms), 99)),
  };
}

t.test('an overloaded pool queues up to max_queue, then sheds with 503; compared with HAProxy', async (t) => {
  const ups = [await countingUpstream('a', { delayMs: SERVICE_MS }), await countingUpstream('b', { delayMs: SERVICE_MS })];
  t.teardown(() => Promise.all(ups.map((u) => u.close())));
  const [port, mport] = [await freePort(), await freePort()];
  const MAX_REQUESTS = 4;
  const MAX_QUEUE = 8;
  const QUEUE_TIMEOUT_MS = 400;
  const lb = await startLb(
    config(
      port,
      mport,
      `
[pools.app]
max_requests = ${MAX_REQUESTS}
max_queue = ${MAX_QUEUE}
queue_timeout = "${QUEUE_TIMEOUT_MS}ms"
backends = ${addr(ups)}
`,
      { access: true },
    ),
    [port, mport],
  );
  t.teardown(() => lb.stop());

  // Capacity: 4 slots x 10 req/s = 40 req/s; offered: 100 req/s for 3 s.
  const RATE = 100;
  const DURATION_MS = 3000;
  const shots = await openLoop(port, { rate: RATE, durationMs: DURATION_MS });
  const s = summary(shots);
  t.comment(`lb: ${JSON.stringify(s)}`);

  t.equal(s.other, 0, 'every answer is 200 or 503');
  t.equal(s.ok + s.shed, shots.length, 'counts add up');
  t.ok(s.shed > 0 && s.ok > 0, 'some admitted, some shed');
  t.ok(ups.every((u) => u.maxActive <= MAX_REQUESTS), `backends never held more than max_requests together (max per backend ${ups.map((u) => u.maxActive)})`);
  t.equal(ups[0]!.hits + ups[1]!.hits, s.ok, 'every admitted request reached a backend once, no shed one did');

  const m = await scrape(mport);
  const full = sum(m, 'lb_requests_shed_total', { pool: 'app', reason: 'queue_full' });
  const timedOut = sum(m, 'lb_requests_shed_total', { pool: 'app', reason: 'queue_timeout' });
  t.equal(full + timedOut, s.shed, 'lb_requests_shed_total counts every 503');
  t.equal(sum(m, 'lb_requests_total', { pool: 'app', code: '503' }), s.shed, 'lb_requests_total agrees');
  const waited = sum(m, 'lb_queue_wait_seconds_count', { pool: 'app' });
  t.ok(waited > 0, `some requests waited in the queue (${waited})`);
  // lb's own account: no request was sent after waiting queue_timeout (the 0.5 s bucket holds them all).
  t.equal(sum(m, 'lb_queue_wait_seconds_bucket', { pool: 'app', le: '0.5' }), waited, 'no admitted request waited longer than queue_timeout');
  t.equal(sum(m, 'lb_pool_queue_length', { pool: 'app' }), 0, 'queue empty afterwards');

  // Requests shed because the queue was full were answered without waiting (lb's own duration).
  await waitFor(() => lb.logs().filter((l) => l.msg === 'access').length >= shots.length, 10_000, 'access lines');
  const access = lb.logs().filter((l) => l.msg === 'access');
  const fullLines = access.filter((l) => l.error === 'queue_full');
  t.equal(fullLines.length, full, 'access log names queue_full sheds');
  // They never waited: by lb's own clock their median is a small fraction of queue_timeout (a median, since
  // a loaded machine can preempt the process for a while in the middle of any one answer).
  const fullMedian = percentile(fullLines.map((l) => l.duration_ms as number), 50);
  t.ok(fullMedian < QUEUE_TIMEOUT_MS / 4, `queue_full answered without waiting (median ${fullMedian} ms by lb's clock)`);
  const okLines = access.filter((l) => l.status === 200).map((l) => l.duration_ms as number);
  t.comment(`lb's own durations of admitted requests: p50 ${Math.round(percentile(okLines, 50))} ms, p99 ${Math.round(percentile(okLines, 99))} ms; queue_full ${full}, queue_timeout ${timedOut}`);
  const timeoutLines = access.filter((l) => l.error === 'queue_timeout');
  t.ok(timeoutLines.every((l) => (l.duration_ms as number) >= QUEUE_TIMEOUT_MS - 1), 'queue_timeout sheds waited queue_timeout');

  // HAProxy on the same backends: 2 servers with maxconn 2 each (4 in flight), timeout queue 400ms; its
  // backend queue has no length cap (maxqueue is per server and redispatches), so it sheds by time only.
  const hport = await freePort();
  const ha = await startHaproxy(
    hport,
    `global
  maxconn 2000
defaults
  mode http
  timeout connect 2s
  timeout client 10s
  timeout server 10s
  timeout queue ${QUEUE_TIMEOUT_MS}ms
frontend fe
  bind 127.0.0.1:{{port}}
  default_backend be
backend be
  balance roundrobin
${ups.map((u) => `  server ${u.name} 127.0.0.1:${u.port} maxconn 2`).join('\n')}
`,
  );
  t.teardown(() => ha.stop());
  for (const u of ups) u.maxActive = 0;
  const hshots = await openLoop(hport, { rate: RATE, durationMs: DURATION_MS });
  const h = summary(hshots);
  t.comment(`haproxy: ${JSON.stringify(h)}`);
  t.ok(h.ok > 0, 'haproxy admitted some');
  t.comment(`admitted p99: lb ${s.p99} ms, haproxy ${h.p99} ms; shed: lb ${s.shed}, haproxy ${h.shed} of ${shots.length}`);
});

t.test('queue_timeout sheds requests that waited too long; the queue drains in order', async (t) => {
  const ups = [await countingUpstream('a', { delayMs: SERVICE_MS })];
  t.teardown(() => Promise.all(ups.map((u) => u.close())));
  const [port, mport] = [await freePort(), await freePort()];
  const lb = await startLb(
    config(
      port,
      mport,
      `
[pools.app]
max_requests = 1
max_queue = 100
queue_timeout = "250ms"
backends = ${addr(ups)}
`,
    ),
    [port, mport],
  );
  t.teardown(() => lb.stop());
  // 10 at once to a pool that serves one per 100 ms: the first is sent, a few wait their turn, the rest
  // pass 250 ms in the queue and get 503.
  const shots = await Promise.all(Array.from({ length: 10 }, async (_, i) => {
    await new Promise((r) => setTimeout(r, i * 2));
    return get(port, `/${i}`);
  }));
  const ok = shots.filter((r) => r.status === 200).length;
  const shed = shots.filter((r) => r.status === 503);
  t.ok(ok >= 1 && ok < 10, `some served (${ok}), not all`);
  t.equal(ok + shed.length, 10, 'the rest got 503');
  t.ok(shed.every((r) => /waited 250ms in the queue/.test(r.body)), 'shed for queue_timeout');
  const m = await scrape(mport);
  t.equal(sum(m, 'lb_requests_shed_total', { pool: 'app', reason: 'queue_timeout' }), shed.length, 'counted as queue_timeout');
  t.equal(ups[0]!.maxActive, 1, 'the backend held one at a time');
});

t.test('a client that disconnects while queued leaves the queue and reaches no backend', async (t) => {
  const held: Array<() => void> = [];
  const paths: string[] = [];
  const up = await countingUpstream('a');
  // Holds every request until released.
  up.server.removeAllListeners('request');
  up.server.on('request', (req, res) => {
    paths.push(req.url ?? '');
    held.push(() => res.writeHead(200).end('ok'));
  });
  t.teardown(() => up.close());
  const [port, mport] = [await freePort(), await freePort()];
  const lb = await startLb(
    config(
      port,
      mport,
      `
[pools.app]
max_requests = 1
max_queue = 5
queue_timeout = "30s"
backends = ${addr([up])}
`,
    ),
    [port, mport],
  );
  t.teardown(() => lb.stop());
  const first = hangingRequest(port, '/first');
  await waitFor(() => held.length === 1, 10_000, 'first request at the backend');
  const gone = hangingRequest(port, '/gone');
  const third = hangingRequest(port, '/third');
  await waitFor(async () => sum(await scrape(mport), 'lb_pool_queue_length', { pool: 'app' }) === 2, 10_000, 'two queued');
  gone.abort();
  await waitFor(async () => sum(await scrape(mport), 'lb_pool_queue_length', { pool: 'app' }) === 1, 10_000, 'the aborted one left the queue');
  held.shift()!();
  t.equal(await first.done, 200);
  await waitFor(() => held.length === 1, 10_000, 'third request at the backend');
  held.shift()!();
  t.equal(await third.done, 200);
  t.same(paths, ['/first', '/third'], 'the request whose client left was never sent');
  const m = await scrape(mport);
  t.equal(sum(m, 'lb_requests_total', { pool: 'app', code: '499' }), 1, 'counted as 499');
});

t.test('backends at max_connections queue requests too; no usable backend sheds at once', async (t) => {
  const up = await countingUpstream('a', { delayMs: 150 });
  t.teardown(() => up.close());
  const [port, mport] = [await freePort(), await freePort()];
  const lb = await startLb(
    config(
      port,
      mport,
      `
[pools.app]
max_queue = 10
queue_timeout = "5s"
backends = [ { name = "a", address = "127.0.0.1:${up.port}", max_connections = 2 } ]
`,
    ),
    [port, mport],
  );
  t.teardown(() => lb.stop());
  const shots = await Promise.all(Array.from({ length: 6 }, () => get(port, '/')));
  t.same(shots.map((r) => r.status), [200, 200, 200, 200, 200, 200], 'all six served (queued, not refused)');
  t.equal(up.maxActive, 2, 'never more than max_connections at the backend');
  const m = await scrape(mport);
  t.ok(sum(m, 'lb_queue_wait_seconds_count', { pool: 'app' }) >= 4, 'four or more waited');
});

t.test('requests waiting in the queue keep their place over a reload', async (t) => {
  const held: Array<() => void> = [];
  const paths: string[] = [];
  const up = await countingUpstream('a');
  up.server.removeAllListeners('request');
  up.server.on('request', (req, res) => {
    paths.push(req.url ?? '');
    held.push(() => res.writeHead(200).end('ok'));
  });
  t.teardown(() => up.close());
  const [port, mport] = [await freePort(), await freePort()];
  const pool = (timeout: string): string => `
[pools.app]
max_requests = 1
max_queue = 5
queue_timeout = "${timeout}"
backends = ${addr([up])}
`;
  const lb = await startLb(config(port, mport, pool('30s')), [port, mport]);
  t.teardown(() => lb.stop());
  const first = hangingRequest(port, '/first');
  await waitFor(() => held.length === 1, 10_000, 'first request at the backend');
  const second = hangingRequest(port, '/second');
  const third = hangingRequest(port, '/third');
  await waitFor(async () => sum(await scrape(mport), 'lb_pool_queue_length', { pool: 'app' }) === 2, 10_000, 'two queued');
  fs.writeFileSync(lb.configFile, withStateFile(config(port, mport, pool('20s')).replaceAll('{{socket}}', lb.socket), lb.dir));
  const r = await admin(lb.socket, { cmd: 'reload' });
  t.ok(r.ok, 'reload applied');
  t.equal(sum(await scrape(mport), 'lb_pool_queue_length', { pool: 'app' }), 2, 'still two queued in the new pool');
  held.shift()!();
  t.equal(await first.done, 200);
  await waitFor(() => held.length === 1, 10_000, 'second request at the backend');
  held.shift()!();
  t.equal(await second.done, 200);
  await waitFor(() => held.length === 1, 10_000, 'third request at the backend');
  held.shift()!();
  t.equal(await third.done, 200);
  t.same(paths, ['/first', '/second', '/third'], 'sent in arrival order');
});
